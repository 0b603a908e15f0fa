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
import threading
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
        peaks = {"rss": 0, "mem": 0}
        stop = threading.Event()

        def watch() -> None:  # sampled from the first message on (sending takes a while)
            while not stop.wait(1.0):
                peaks["rss"] = max(peaks["rss"], meter.sample()[1])
                peaks["mem"] = max(peaks["mem"], int(client.info("memory")["used_memory"]))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        cpu0, _ = meter.sample()
        sent_from = time.time()
        # The window starts once every task was sent (sending N takes a while here).
        until = sent_from + duration + jobs / 2000
        with app.producer_or_acquire() as producer:
            for i in range(jobs):
                tick.apply_async((i, until, countdown), countdown=countdown, producer=producer)
        send_s = time.time() - sent_from
        while time.time() < until + countdown:
            time.sleep(1.0)
        stop.set()
        watcher.join(5)
        cpu, _ = meter.sample()
        used = cpu - cpu0
        peak_rss, peak_mem = peaks["rss"], peaks["mem"]
        reschedules = jobs * max(1, int((until - sent_from) // countdown))
        return {
            "jobs": jobs,
            "countdown_s": countdown,
            "window_s": round(until - sent_from, 1),
            "send_s": round(send_s, 1),
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
