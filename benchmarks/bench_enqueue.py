"""Enqueue throughput: ``enqueue`` and ``enqueue_many`` against a bare ``apply_async`` loop.

Real Redis (a private db, flushed before and after) with a SQLite file and with the
machine's PostgreSQL (a throwaway schema). Each producer figure includes validating the
request, writing the row and sending the message; the bare loop only sends.

    .venv/bin/python benchmarks/bench_enqueue.py [--jobs 10000]

Writes ``benchmarks/results/enqueue.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis
from celery import Celery
from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from producer.api import Producer  # noqa: E402
from t2v_core.db import dispose_engines  # noqa: E402
from t2v_core.names import QUEUE_SUBMIT, TASK_SUBMIT  # noqa: E402
from t2v_core.settings import Settings  # noqa: E402

REDIS = os.environ.get("T2V_BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
PG = os.environ.get("T2V_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
RESULT = REPO / "benchmarks" / "results" / "enqueue.json"


def rate(n: int, seconds: float) -> dict[str, float]:
    return {"jobs": n, "seconds": round(seconds, 3), "jobs_per_s": round(n / seconds, 1)}


def bare_apply_async(n: int, flush: redis.Redis) -> dict[str, float]:
    app = Celery("bench", broker=REDIS, set_as_current=False)

    @app.task(name=TASK_SUBMIT)
    def submit(job_id: str) -> None:  # never run here; only its signature is used
        del job_id

    ids = [uuid.uuid4().hex for _ in range(n)]
    submit.apply_async(args=["warm-up"], queue=QUEUE_SUBMIT)
    start = time.perf_counter()
    for job_id in ids:
        submit.apply_async(args=[job_id], queue=QUEUE_SUBMIT)
    result = rate(n, time.perf_counter() - start)
    assert flush.llen(QUEUE_SUBMIT) == n + 1
    flush.flushdb()
    app.close()
    return result


def producer_figures(database_url: str, n: int, flush: redis.Redis) -> dict[str, Any]:
    producer = Producer(Settings(database_url=database_url, broker_url=REDIS, _env_file=None))  # type: ignore[call-arg]
    producer.enqueue({"prompt": "warm-up"})  # migrations and connections out of the timing
    requests = [{"prompt": f"A cat walking across a sunny room, take {i}"} for i in range(n)]
    flush.flushdb()

    start = time.perf_counter()
    for request in requests:
        producer.enqueue(request)
    single = rate(n, time.perf_counter() - start)
    assert flush.llen(QUEUE_SUBMIT) == n
    flush.flushdb()

    start = time.perf_counter()
    jobs = producer.enqueue_many(requests)
    many = rate(n, time.perf_counter() - start)
    assert len(jobs) == n and flush.llen(QUEUE_SUBMIT) == n
    flush.flushdb()
    producer.close()
    dispose_engines()
    return {"enqueue": single, "enqueue_many": many}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    args = parser.parse_args()
    flush = redis.Redis.from_url(REDIS)
    flush.flushdb()
    results: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/bench_enqueue.py", *sys.argv[1:]]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "redis": REDIS,
        "targets": {"enqueue": 1000, "enqueue_many": 5000},
    }
    results["bare_apply_async"] = bare_apply_async(args.jobs, flush)
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = producer_figures(f"sqlite:///{tmp}/bench.sqlite3", args.jobs, flush)
    schema = "t2v_bench_" + uuid.uuid4().hex[:8]
    admin = create_engine(PG)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = f"{PG}?options={quote(f'-csearch_path={schema}')}"
        results["postgresql"] = producer_figures(url, args.jobs, flush)
    except Exception as exc:  # noqa: BLE001 - report, do not hide, a missing PostgreSQL
        results["postgresql"] = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()
        flush.flushdb()
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
