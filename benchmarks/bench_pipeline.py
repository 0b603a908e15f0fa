"""Benchmark: the whole pipeline against the docs' naive loop, fetch calls per job.

Runs N jobs through a real worker, Redis, the simulator (over HTTP), SQLite and local
files, for a few levels of eta accuracy, and reads from the simulator's own counters how
many fetch calls each job cost. Beside it, what the docs' sample loop (one fetch every 5 s
until done) would have cost for the same render times. Writes
benchmarks/results/pipeline.json. Not a test: no timing is asserted anywhere.

    .venv/bin/python benchmarks/bench_pipeline.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from worker.devstack import processes  # noqa: E402

KEY = "bench-key-0123456789"


def run_once(jobs: int, render_mean: float, eta_noise: float, base: Path) -> dict[str, object]:
    logs = base
    logs.mkdir(parents=True)
    procs: list[processes.ManagedProcess] = []
    try:
        redis = processes.start_redis(logs)
        procs.append(redis)
        sim = processes.start_simulator(
            logs,
            keys=[KEY],
            args=[
                "--render-mean",
                str(render_mean),
                "--render-spread",
                "0.4",
                "--eta-noise",
                str(eta_noise),
                "--seed",
                "11",
            ],
        )
        procs.append(sim)
        env = {
            "T2V_BROKER_URL": redis.url,
            "T2V_DATABASE_URL": f"sqlite:///{logs / 't2v.sqlite3'}",
            "T2V_STORAGE_URL": str(logs / "videos"),
            "T2V_MODELSLAB_API_KEY": KEY,
            "T2V_MODELSLAB_BASE_URL": f"{sim.url}/api/v6",
            "T2V_DOWNLOAD_ALLOWED_HOSTS": "127.0.0.1",
        }
        os.environ.update(env)
        from t2v_core.settings import get_settings

        get_settings.cache_clear()
        import producer

        producer.configure()
        from t2v_core.db import get_engine
        from t2v_core.store import JobStore

        JobStore(get_engine(env["T2V_DATABASE_URL"])).create_schema()
        procs.append(processes.start_worker(logs, env=env, concurrency=2, loglevel="INFO"))
        started = time.monotonic()
        handles = producer.enqueue_many(
            [
                producer.Text2VideoRequest(
                    prompt=f"benchmark {i}: waves under a pier at dusk",
                    num_frames=16,
                    width=256,
                    height=256,
                )
                for i in range(jobs)
            ]
        )
        records = [h.wait(timeout=60 + jobs * render_mean * 3) for h in handles]
        elapsed = time.monotonic() - started
        stats = requests.get(f"{sim.url}/_sim/stats", timeout=5).json()
    finally:
        for proc in reversed(procs):
            proc.stop()
    fetches = [stats["fetches"]["by_track_id"].get(r.id, 0) for r in records]
    renders = [j["ready_at"] - j["submitted_at"] for j in stats["jobs"].values()]
    # The docs' sample fetches at once, then every 5 s until done: ceil(d / 5) + 1 calls.
    naive = [math.ceil(d / 5.0) + 1 for d in renders]
    return {
        "jobs": jobs,
        "render_mean_s": render_mean,
        "eta_noise": eta_noise,
        "succeeded": sum(r.status.value == "succeeded" for r in records),
        "elapsed_s": round(elapsed, 2),
        "fetches_per_job": {
            "median": statistics.median(fetches),
            "max": max(fetches),
            "mean": round(statistics.mean(fetches), 2),
            "total": sum(fetches),
        },
        "naive_5s_loop_fetches_per_job": {"median": statistics.median(naive), "total": sum(naive)},
        "submits_total": stats["submits"]["total"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="only the 8 s, exact-eta run")
    args = parser.parse_args()
    # (jobs, mean render seconds, eta noise): short renders with exact and noisy eta, and
    # a few minute-long renders where the docs' loop costs the most.
    plan = [(20, 8.0, 0.0)] if args.quick else [(20, 8.0, 0.0), (20, 8.0, 0.25), (5, 60.0, 0.1)]
    with tempfile.TemporaryDirectory(prefix="t2v-bench-") as tmp:
        runs = [run_once(j, r, n, Path(tmp) / f"run{i}") for i, (j, r, n) in enumerate(plan)]
    result = {
        "benchmark": "pipeline fetch calls per job vs the docs' 5 s loop",
        "command": "python benchmarks/bench_pipeline.py " + " ".join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "runs": runs,
        "documented_eta_960s_naive_fetches": math.ceil(960 / 5) + 1,
    }
    out = ROOT / "benchmarks" / "results" / "pipeline.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
