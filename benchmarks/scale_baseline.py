"""The baseline of ``bench_scale.py``: bare Celery countdown reschedules at the same N.

N tasks, each re-sending itself with ``countdown`` s until the window ends: what a backlog
that retry-polls for a slot (or N renders polled on a fixed interval) costs in plain Celery
on Redis, with no database and no HTTP. One ``celery -A scale_baseline worker -c 4``
(prefork) on a private Redis; worker CPU and peak RSS of its process tree, Redis
``used_memory``, reschedules done. On Redis, a countdown message is held by the worker
(unacked, in its memory) until it is due: the RSS is that cost.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from celery import Celery

app = Celery("scale_baseline", broker=os.environ.get("BASELINE_BROKER", "redis://127.0.0.1/0"))
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    broker_transport_options={"visibility_timeout": 3600},
    worker_prefetch_multiplier=4,
)


@app.task(name="baseline.tick", ignore_result=True)
def tick(i: int, until: float, countdown: float) -> None:
    if time.time() + countdown < until:
        tick.apply_async((i, until, countdown), countdown=countdown)


def run_baseline(jobs: int, countdown: float, duration: float, logs: Path) -> dict[str, Any]:
    import redis as redis_lib

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench_scale import TreeMeter

    from worker.devstack import processes

    logs.mkdir(parents=True, exist_ok=True)
    red = processes.start_redis(logs)
    worker = None
    try:
        env = {"BASELINE_BROKER": red.url, "PYTHONPATH": str(Path(__file__).parent)}
        argv = [sys.executable, "-m", "celery", "-A", "scale_baseline", "worker", "-c", "4"]
        argv += ["--loglevel", "INFO", "--without-mingle", "--without-gossip"]
        worker = processes.spawn("baseline-worker", argv, env=env, log_dir=logs)
        deadline = time.monotonic() + 60
        while "ready." not in worker.tail(50) and time.monotonic() < deadline:
            time.sleep(0.2)
        meter = TreeMeter(worker.popen.pid)
        client = redis_lib.Redis.from_url(red.url)
        app.conf.broker_url = red.url
        cpu0, _ = meter.sample()
        t0 = time.time()
        until = t0 + duration
        with app.producer_or_acquire() as producer:
            for i in range(jobs):
                tick.apply_async((i, until, countdown), countdown=countdown, producer=producer)
        peak_rss = peak_mem = 0
        while time.time() < until + countdown:
            _cpu, rss = meter.sample()
            peak_rss = max(peak_rss, rss)
            peak_mem = max(peak_mem, int(client.info("memory")["used_memory"]))
            time.sleep(1.0)
        cpu, _ = meter.sample()
        used = cpu - cpu0
        reschedules = jobs * max(1, int(duration // countdown))
        return {
            "jobs": jobs,
            "countdown_s": countdown,
            "window_s": duration,
            "worker_cpu_s": round(used, 2),
            "reschedules_planned": reschedules,
            "cpu_per_reschedule_ms": round(1000 * used / reschedules, 3),
            "cpu_per_job_per_minute_waiting_ms": round(1000 * used / jobs * 60 / duration, 2),
            "worker_rss_peak_mb": round(peak_rss / 2**20, 1),
            "redis_used_memory_peak_mb": round(peak_mem / 2**20, 2),
        }
    finally:
        if worker is not None:
            worker.stop()
        red.stop()
