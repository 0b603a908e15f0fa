"""Walk one job from enqueue to the stored file, in-process, and count the modules it
passes through: how much of the code a newcomer follows to read one job's path.

The job is enqueued through ``producer.api.Producer`` (a fake broker), then the worker's
steps run it: ``submit_step``, ``poll_step`` until the render is done, ``download_step``.
The real parts are the ones the unit tests use (tests/unit/test_steps_inprocess.py): a
SQLite file, the slot line on fakeredis, ``LocalStorage`` in a temporary directory; the
fakes are ModelsLab's HTTP API and its CDN (``requests`` adapters: the real
``ModelsLabClient`` and transfer code run), the broker and the clock. No
Celery, no network, no sleep; probing with ffprobe is off.

Under ``sys.setprofile`` every Python-level call into one of the project's own modules
(``t2v_core.*``, ``producer.*``, ``worker.*``) is recorded with its module; consecutive
calls in the same module collapse into one entry (not across steps: each step is entered
afresh from the broker). Printed: the module sequence (by step),
how many distinct modules the job passes through, and how many times it returns to a
module it had already left (entries of the sequence whose module came up before).
Module-level code (an import on first use) is not counted, and one warm-up job runs
unrecorded first so the figures are a running worker's, not a cold start's.

    PYTHONPATH=. .venv/bin/python scripts/walk.py [--calls] [--cold]

Another layout is measured by changing only the import block below. Before the split
into ``t2v_core`` and ``worker/steps/`` (commit 8ca7059), in a worktree of that commit:
``make_engine`` from ``producer.db``, the ``TASK_*`` names from ``producer.states``,
``Settings`` from ``producer.settings``, ``JobStore`` from ``producer.records``.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import fakeredis
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

# -- the project's layout: the only lines a walk of another layout changes -----------------
from producer.api import Producer
from t2v_core.db import make_engine
from t2v_core.names import TASK_DOWNLOAD, TASK_POLL, TASK_SUBMIT
from t2v_core.settings import Settings
from t2v_core.store import JobStore
from worker.limiter import AccountLimiter
from worker.modelslab import ModelsLabClient
from worker.settings import WorkerSettings
from worker.steps import Runtime, download_step, poll_step, submit_step
from worker.storage import LocalStorage

# -------------------------------------------------------------------------------------------

PROJECT = ("t2v_core", "producer", "worker")
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CDN = "cdn.walk.test"
API = "https://api.walk.test/api/v6"
ETA = 30.0
MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 4096
STEPS: dict[str, Callable[[Any, str], None]] = {
    TASK_SUBMIT: submit_step,
    TASK_POLL: poll_step,
    TASK_DOWNLOAD: download_step,
}


# -- the fakes -------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _response(
    request: requests.PreparedRequest, code: int, body: bytes, content_type: str
) -> requests.Response:
    resp = requests.Response()
    resp.status_code = code
    resp.headers = CaseInsensitiveDict(
        {"content-type": content_type, "content-length": str(len(body))}
    )
    resp.raw = io.BytesIO(body)
    resp.url, resp.request = str(request.url), request
    return resp


class Api(BaseAdapter):
    """ModelsLab's HTTP API behind a ``requests`` adapter, for the real ``ModelsLabClient``:
    takes every submit, renders it in ``ETA`` seconds, then serves it on the CDN."""

    def __init__(self, clock: Clock, cdn: Cdn) -> None:
        super().__init__()
        self.clock, self.cdn = clock, cdn
        self.done_at: dict[str, datetime] = {}

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        path = str(request.url).removeprefix(API)
        if path == "/video/text2video":
            provider_id = f"r{len(self.done_at) + 1}"
            self.done_at[provider_id] = self.clock() + timedelta(seconds=ETA)
            self.cdn.files[f"https://{CDN}/{provider_id}/0.mp4"] = MP4
            answer: dict[str, Any] = {"status": "processing", "id": provider_id, "eta": ETA}
        else:
            provider_id = path.rsplit("/", 1)[-1]
            answer = (
                {"status": "processing", "id": provider_id, "eta": ETA}
                if self.clock() < self.done_at[provider_id]
                else {
                    "status": "success",
                    "id": provider_id,
                    "output": [f"https://{CDN}/{provider_id}/0.mp4"],
                }
            )
        return _response(request, 200, json.dumps(answer).encode(), "application/json")

    def close(self) -> None:
        pass


class Cdn(BaseAdapter):
    def __init__(self) -> None:
        super().__init__()
        self.files: dict[str, bytes] = {}

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        body = self.files.get(str(request.url))
        if body is None:
            return _response(request, 404, b"not found", "text/plain")
        return _response(request, 200, body, "video/mp4")

    def close(self) -> None:
        pass


@dataclass
class Broker:
    """Both sides of the broker: what the producer sends and what the steps schedule."""

    clock: Clock
    messages: list[tuple[str, str, float]] = field(default_factory=list)

    def send_submit(self, job_ids: Any, priorities: Any = None) -> None:
        self.send(TASK_SUBMIT, job_ids)

    def send(self, task: str, job_ids: Any) -> None:
        self.messages += [(task, job_id, 0.0) for job_id in job_ids]

    def schedule(self, task: str, job_id: str, countdown: float) -> None:
        self.messages.append((task, job_id, countdown))

    def close(self) -> None:
        pass


# -- the recorder ----------------------------------------------------------------------------
@dataclass
class Walk:
    """The collapsed sequence of (step, module, first function entered there)."""

    entries: list[tuple[str, str, str]] = field(default_factory=list)
    step: str = "enqueue"
    calls: int = 0

    def profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if event != "call" or frame.f_code.co_name == "<module>":
            return
        module = str(frame.f_globals.get("__name__", ""))
        if module.split(".")[0] not in PROJECT:
            return
        self.calls += 1
        last = self.entries[-1] if self.entries else None
        # Each step is entered afresh from the broker: no collapse across a step boundary.
        if last is None or (last[0], last[1]) != (self.step, module):
            self.entries.append((self.step, module, frame.f_code.co_name))

    @property
    def modules(self) -> list[str]:
        return [module for _, module, _ in self.entries]

    @property
    def returns(self) -> int:
        return len(self.modules) - len(set(self.modules))


def walk_one(directory: Path, record: Walk | None) -> str:
    """Enqueue one job and run its messages until none is left; return its final status."""
    clock = Clock()
    engine = make_engine(f"sqlite:///{directory / 'walk.sqlite3'}")
    store = JobStore(engine, now=clock)
    store.create_schema()
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    settings = WorkerSettings(
        _env_file=None,
        database_url="sqlite:///:memory:",
        storage_url=str(directory),
        modelslab_api_key="sk-walk",
        download_allowed_hosts=[CDN],
        account_slots=5,
        poll_deadline_seconds=600.0,
        lost_submit_hold=120.0,
        probe_videos=False,
        webhook_url=None,
        auto_migrate=False,
    )
    limiter = AccountLimiter(redis, settings.account_slots, clock=lambda: clock().timestamp())
    limiter.rebuild([], [])  # the line as a running worker finds it
    cdn = Cdn()
    http = requests.Session()
    http.trust_env = False
    http.mount(f"https://{CDN}/", cdn)
    api = requests.Session()
    api.trust_env = False
    api.mount(API, Api(clock, cdn))
    client = ModelsLabClient(API, "sk-walk", session=api)
    broker = Broker(clock)
    rt = Runtime(
        settings=settings,
        store=store,
        client=client,
        limiter=limiter,
        storage=LocalStorage(directory / "videos"),
        http=http,
        schedule=broker.schedule,
        rng=random.Random(0),
        now=clock,
    )
    app = Producer(
        Settings(
            _env_file=None,
            database_url="sqlite:///:memory:",  # type: ignore[call-arg]
            auto_migrate=False,
        ),
        store=store,
        broker=broker,
    )  # type: ignore[arg-type]

    if record is not None:
        sys.setprofile(record.profile)
    try:
        job = app.enqueue({"prompt": "A cat walking across a sunny room", "model_id": "wan2.2"})
        while broker.messages:
            task, job_id, countdown = broker.messages.pop(0)
            clock.now += timedelta(seconds=countdown)
            if record is not None:
                record.step = task.rsplit(".", 1)[-1]
            STEPS[task](rt, job_id)
    finally:
        sys.setprofile(None)
    final = store.get(job.id)
    http.close()
    api.close()
    redis.close()
    engine.dispose()
    assert final is not None
    return f"{final.status.value}: {[o.storage_uri for o in final.outputs]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--calls", action="store_true", help="list each entry with the first function entered there"
    )
    parser.add_argument("--cold", action="store_true", help="no warm-up job first")
    args = parser.parse_args(argv)
    walk = Walk()
    with tempfile.TemporaryDirectory(prefix="t2v-walk-") as tmp:
        if not args.cold:
            (Path(tmp) / "warm").mkdir()
            walk_one(Path(tmp) / "warm", None)
        (Path(tmp) / "walk").mkdir()
        outcome = walk_one(Path(tmp) / "walk", walk)

    print(f"job: {outcome.split(':')[0]}")
    print("module sequence (consecutive repeats collapsed):")
    step = None
    for n, (entry_step, module, function) in enumerate(walk.entries, 1):
        if entry_step != step:
            step = entry_step
            print(f"  [{step}]")
        print(f"    {n:3d}  {module}" + (f"  ({function})" if args.calls else ""))
    visits = Counter(walk.modules)
    steps = dict.fromkeys(step for step, _, _ in walk.entries)
    print(
        "per step: "
        + ", ".join(
            f"{step} {len({m for s, m, _ in walk.entries if s == step})} modules / "
            f"{sum(1 for s, _, _ in walk.entries if s == step)} entries"
            for step in steps
        )
    )
    print("entries per module: " + ", ".join(f"{m} {n}" for m, n in visits.most_common()))
    print(f"python calls into project modules: {walk.calls}")
    print(f"sequence length: {len(walk.modules)}")
    print(f"distinct modules: {len(visits)}")
    print(f"returns to a module already left: {walk.returns}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
