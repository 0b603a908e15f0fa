"""Benchmark (issue 11): ``wait_async`` at scale on one event loop, and the loop's latency.

A private Redis, the simulator over HTTP (queue limit 60, 1 s renders, half answered at
once), one real Celery worker with beat (SQLite file, local files, no probing, 60 account
slots). The application side is this process: one asyncio loop ``aenqueue_many``s N jobs
(default 500) and awaits ``job.wait_async()`` for all of them at once, while a ticker task
asks to wake every 10 ms and records how late it woke (the loop's latency: anything that
blocks the loop shows up here). For contrast the same ticker runs first on an idle loop,
then while N other jobs go through the same worker with no waits in this process (the
machine's own load: worker, simulator, Redis share its cores).

Reported: the ticker's lateness (p50/p95/p99/max, ms) idle and under the N waits, the
wall time until every wait returned, the threads the process had (peak over the start),
the poller's row queries and its largest batch (ids read in one query). Writes
benchmarks/results/async.json. Not a test: nothing is asserted.

    .venv/bin/python benchmarks/bench_async.py [--jobs 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from worker.devstack import processes  # noqa: E402

KEY = "bench-async-key-0123456789"
RESULT = ROOT / "benchmarks" / "results" / "async.json"
TICK = 0.010
SLOTS = 60


def summary(late_ms: list[float]) -> dict[str, float]:
    ordered = sorted(late_ms)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 2)

    return {
        "ticks": len(ordered),
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": round(ordered[-1], 2),
        "mean_ms": round(statistics.fmean(ordered), 2),
    }


async def ticker(stop: asyncio.Event, late_ms: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        asked = loop.time()
        await asyncio.sleep(TICK)
        late_ms.append((loop.time() - asked - TICK) * 1000)


async def idle_latency(seconds: float) -> dict[str, float]:
    stop, late = asyncio.Event(), []  # type: ignore[var-annotated]
    task = asyncio.ensure_future(ticker(stop, late))
    await asyncio.sleep(seconds)
    stop.set()
    await task
    return summary(late)


async def run(n: int) -> dict[str, Any]:
    import producer
    from producer import aio
    from producer.default import default_producer

    idle = await idle_latency(3.0)

    def reqs(tag: str) -> list[Any]:
        return [
            producer.Text2VideoRequest(
                prompt=f"async bench {tag} {i}: a snail on a leaf",
                num_frames=8,
                width=128,
                height=128,
            )
            for i in range(n)
        ]

    # Phase A: the same jobs and worker load, but no waits in this process (the ticker
    # alone; one status query a second, in the pool, to know when they are done).
    p = default_producer()
    ids = [job.id for job in await producer.aenqueue_many(reqs("a"))]
    stop, late_a = asyncio.Event(), []  # type: ignore[var-annotated]
    tick_task = asyncio.ensure_future(ticker(stop, late_a))
    start_a = time.perf_counter()
    while True:
        states = await aio._run(p, p.store.statuses, ids)
        if all(s.is_final for s in states.values()):
            break
        await asyncio.sleep(1.0)
    wall_a = time.perf_counter() - start_a
    stop.set()
    await tick_task

    # Phase B: N more jobs, every one awaited with wait_async at once.
    t_enqueue = time.perf_counter()
    jobs = await producer.aenqueue_many(reqs("b"))
    enqueue_s = time.perf_counter() - t_enqueue
    threads_before = threading.active_count()
    stop, late = asyncio.Event(), []  # type: ignore[var-annotated]
    tick_task = asyncio.ensure_future(ticker(stop, late))
    start = time.perf_counter()
    waits = [asyncio.ensure_future(job.wait_async(timeout=1800)) for job in jobs]
    peak = threads_before
    while not all(w.done() for w in waits):
        peak = max(peak, threading.active_count())
        await asyncio.sleep(0.05)
    wall = time.perf_counter() - start
    stop.set()
    await tick_task
    results = await asyncio.gather(*waits, return_exceptions=True)
    poller = aio.poller_for(default_producer())
    statuses: dict[str, int] = {}
    for r in results:
        key = r.status.value if hasattr(r, "status") else type(r).__name__
        statuses[key] = statuses.get(key, 0) + 1
    return {
        "jobs": n,
        "enqueue_many_s": round(enqueue_s, 3),
        "all_waits_returned_s": round(wall, 2),
        "outcomes": statuses,
        "loop_latency_idle": idle,
        "loop_latency_same_load_no_waits": summary(late_a),
        "phase_a_jobs_done_s": round(wall_a, 2),
        "loop_latency_during_waits": summary(late),
        "threads_before_waits": threads_before,
        "threads_peak_during_waits": peak,
        "aio_pool_threads": aio.AIO_THREADS,
        "poller_row_queries": poller.queries,
        "poller_largest_batch": poller.largest_batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="t2v-bench-async-"))
    redis_proc = processes.start_redis(base)
    sim = processes.start_simulator(
        base,
        keys=[KEY],
        args=["--render-mean", "1", "--queue-limit", str(SLOTS), "--instant-share", "0.5"],
    )
    env = {
        "T2V_BROKER_URL": redis_proc.url,
        "T2V_DATABASE_URL": f"sqlite:///{base / 't2v.sqlite3'}",
        "T2V_STORAGE_URL": str(base / "videos"),
        "T2V_MODELSLAB_API_KEY": KEY,
        "T2V_MODELSLAB_BASE_URL": f"{sim.url}/api/v6",
        "T2V_DOWNLOAD_ALLOWED_HOSTS": "127.0.0.1",
        "T2V_ACCOUNT_SLOTS": str(SLOTS),
        "T2V_PROBE_VIDEOS": "false",
        "T2V_POLL_MIN_DELAY": "0.3",
        "T2V_POLL_MAX_DELAY": "2",
    }
    worker = processes.start_worker(base, env=env, concurrency=4, beat=True)
    try:
        os.environ.update(env)
        import producer

        producer.configure()
        result = asyncio.run(run(args.jobs))
    finally:
        worker.stop()
        sim.stop()
        redis_proc.stop()
    result["machine"] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
    }
    result["command"] = f"benchmarks/bench_async.py --jobs {args.jobs}"
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
