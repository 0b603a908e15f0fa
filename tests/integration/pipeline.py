"""A whole pipeline for integration tests: a real Celery worker process on real Redis,
talking to the simulator over HTTP, storing into local files or SeaweedFS, recording into
SQLite or PostgreSQL. The test process plays the application (it enqueues)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.pool import NullPool

from t2v_core.db import dispose_engines, make_engine
from t2v_core.records import JobRecord
from t2v_core.store import JobStore
from worker.devstack import processes

# Fast clocks for tests: polls, retries and re-drives in fractions of a second.
FAST = {
    "T2V_POLL_MIN_DELAY": "0.3",
    "T2V_POLL_MAX_DELAY": "2",
    "T2V_TRANSIENT_BASE_DELAY": "0.3",
    "T2V_RECONCILE_INTERVAL": "1",
    "T2V_RECONCILE_GRACE": "2",
    "T2V_CLAIM_LEASE": "10",
    "T2V_DOWNLOAD_CLAIM_LEASE": "10",
    "T2V_SUBMIT_UNKNOWN_WAIT": "4",
    "T2V_DOWNLOAD_NOT_FOUND_WINDOW": "30",
    "T2V_POLL_DEADLINE_SECONDS": "90",
    "T2V_READ_TIMEOUT": "5",
    "T2V_MAX_UNKNOWN_RESUBMITS": "3",
    "T2V_CONNECT_TIMEOUT": "2",
}


class Pipeline:
    def __init__(self, env: Mapping[str, str], log_dir: Path) -> None:
        self.env = dict(env)
        self.log_dir = log_dir
        self.worker: processes.ManagedProcess | None = None
        # No pool: the test reads rows from a process whose shared engines get disposed
        # between tests; an unpooled engine never leaves a connection open behind it.
        self.store = JobStore(make_engine(self.env["T2V_DATABASE_URL"], poolclass=NullPool))
        self.store.create_schema()

    def start_worker(self, concurrency: int = 3) -> processes.ManagedProcess:
        self.worker = processes.start_worker(
            self.log_dir, env=self.env, concurrency=concurrency, loglevel="DEBUG"
        )
        return self.worker

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()

    @contextmanager
    def as_application(self) -> Iterator[Any]:
        """Point the producer of this (test) process at this pipeline's settings."""
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("T2V_")})
        _reset_producer()
        try:
            import producer

            yield producer
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            _reset_producer()

    def wait_all(
        self,
        ids: list[str],
        timeout: float = 120.0,
        done: Callable[[JobRecord], bool] = lambda r: r.is_final or r.status == "parked",
    ) -> list[JobRecord]:
        deadline = time.monotonic() + timeout
        while True:
            records = [self.store.get(i) for i in ids]
            if all(r is not None and done(r) for r in records):
                return [r for r in records if r is not None]
            if time.monotonic() > deadline:
                states = {r.id: r.status.value for r in records if r is not None}
                tail = self.worker.tail(60) if self.worker else ""
                raise AssertionError(f"jobs not done after {timeout}s: {states}\n{tail}")
            time.sleep(0.2)

    def worker_log(self) -> str:
        return self.worker.log_path.read_text(errors="replace") if self.worker else ""


def _reset_producer() -> None:
    from t2v_core.settings import get_settings

    get_settings.cache_clear()
    dispose_engines()
    import producer

    producer.configure()  # rebuild the default producer from the environment


def enqueue_small(pipe: Pipeline, n: int, tag: str) -> list[str]:
    """Enqueue ``n`` small, fast videos (8 frames, 128x128) as the application would."""
    with pipe.as_application() as producer:
        return [
            str(
                producer.enqueue(
                    producer.Text2VideoRequest(
                        prompt=f"{tag} {i}: a paper boat drifting down a gutter",
                        num_frames=8,
                        width=128,
                        height=128,
                    )
                ).id
            )
            for i in range(n)
        ]
