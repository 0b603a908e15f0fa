"""The asyncio forms under a real event loop: hundreds of ``wait_async`` at once against a
real Celery worker and the simulator, with no thread per waiting job and one row query per
tick for all of them; ``aenqueue``/``acancel``/``aget_job``/``alist_jobs`` never block."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from producer import aio
from producer.default import default_producer
from t2v_core.errors import JobFailed, JobTimeout
from t2v_core.states import JobStatus
from tests.conftest import TEST_API_KEY, SimControl
from tests.integration.pipeline import Pipeline
from tests.integration.test_pipeline import make_env
from worker.devstack import processes

pytestmark = pytest.mark.slow

N_WAITS = 200
SMALL = {"num_frames": 8, "width": 128, "height": 128}


@pytest.fixture(scope="module")
def wide_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimControl]:
    """A simulator with room for many renders at once, each answered done at once (no
    polling), so hundreds of real jobs end within the test's time on a shared machine."""
    proc = processes.start_simulator(
        tmp_path_factory.mktemp("wide-sim"),
        keys=[TEST_API_KEY],
        args=["--render-mean", "1", "--queue-limit", "60", "--instant-share", "1"],
    )
    try:
        yield SimControl(proc.url)
    finally:
        proc.stop()


# Hundreds of real jobs through one worker: past the default 300 s on a loaded machine.
@pytest.mark.timeout(900)
def test_hundreds_of_wait_async_on_one_loop(
    redis_url: str, database_url: str, wide_sim: SimControl, tmp_path: Path
) -> None:
    env = make_env(
        redis_url,
        database_url,
        wide_sim,
        {
            "T2V_STORAGE_URL": str(tmp_path / "v"),
            "T2V_PROBE_VIDEOS": "false",
            "T2V_ACCOUNT_SLOTS": "60",
        },
    )
    pipe = Pipeline(env, tmp_path / "logs")
    pipe.start_worker(concurrency=4)
    try:
        with pipe.as_application() as producer:

            async def main() -> tuple[list[object], int, int, int]:
                reqs = [
                    producer.Text2VideoRequest(prompt=f"async {i}: a snail on a leaf", **SMALL)
                    for i in range(N_WAITS)
                ]
                jobs = await producer.aenqueue_many(reqs)
                threads_before = threading.active_count()
                peak = threads_before
                waits = [asyncio.ensure_future(job.wait_async(timeout=600)) for job in jobs]
                while not all(w.done() for w in waits):
                    peak = max(peak, threading.active_count())
                    await asyncio.sleep(0.05)
                poller = aio.poller_for(default_producer())
                return await asyncio.gather(*waits), threads_before, peak, poller.largest_batch

            results, before, peak, largest = asyncio.run(main())
    finally:
        pipe.stop()
    assert len(results) == N_WAITS
    assert all(getattr(r, "status", None) is JobStatus.SUCCEEDED for r in results)
    # No thread per waiting job: at most the producer's small pool on top.
    assert peak - before <= aio.AIO_THREADS
    # One query per tick reads every waiter's row: the first one all of them at once.
    assert largest == N_WAITS


def test_async_errors_and_cancel(
    redis_url: str, sqlite_url: str, sim: SimControl, tmp_path: Path
) -> None:
    env = make_env(redis_url, sqlite_url, sim, {"T2V_STORAGE_URL": str(tmp_path / "v")})
    pipe = Pipeline(env, tmp_path / "logs")  # no worker: jobs stay queued
    with pipe.as_application() as producer:

        async def main() -> None:
            req = producer.Text2VideoRequest(prompt="a crane folding itself", **SMALL)
            job = await producer.aenqueue(req)
            with pytest.raises(JobTimeout) as timed_out:
                await job.wait_async(timeout=0.2)
            assert timed_out.value.record.status is JobStatus.QUEUED
            waiting = asyncio.ensure_future(job.wait_async(timeout=30))
            assert await producer.acancel(job.id)
            with pytest.raises(JobFailed) as failed:
                await waiting
            assert failed.value.record.status is JobStatus.CANCELLED
            again = await producer.aget_job(job.id)
            assert (await producer.alist_jobs(status="cancelled"))[0].id == again.id

        asyncio.run(main())
