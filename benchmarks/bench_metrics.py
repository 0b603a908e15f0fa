"""Scrape time of the state exporter (``worker.metrics``) with 100,000 rows in the table.

A scrape must never read the whole table: jobs in flight are counted through the status
index, final states from a base counted once at start (timed apart: ``startup_recount_ms``)
plus the rows that got there since (``worker.state_counts``); the slot line's figures come
from Redis. ``full_count_plan`` is the plan of the GROUP BY the exporter no longer runs.
Measured on a SQLite file and on the machine's PostgreSQL (a throwaway schema, VACUUM ANALYZEd as
autovacuum would), with 1,000 jobs waiting for a slot in Redis (a private db, flushed).
Goal: a scrape under 50 ms. The query plan of the count is recorded beside the figures.

    .venv/bin/python benchmarks/bench_metrics.py [--rows 100000] [--scrapes 50]

Writes ``benchmarks/results/metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis
from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from t2v_core.db import make_engine  # noqa: E402
from t2v_core.states import JobStatus  # noqa: E402
from t2v_core.store import JobStore, utcnow  # noqa: E402
from worker.limiter import AccountLimiter  # noqa: E402
from worker.metrics import render_metrics, state_registry  # noqa: E402
from worker.state_counts import StateCounts  # noqa: E402

REDIS = os.environ.get("T2V_BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
PG = os.environ.get("T2V_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
RESULT = REPO / "benchmarks" / "results" / "metrics.json"
COUNT_SQL = "SELECT status, count(*) FROM t2v_jobs GROUP BY status"
# Mostly finished jobs, as a table that has run for a while looks.
MIX = [JobStatus.SUCCEEDED] * 90 + [JobStatus.FAILED] * 4 + [JobStatus.QUEUED] * 3
MIX += [JobStatus.PROCESSING] * 2 + [JobStatus.PARKED]


def fill(store: JobStore, rows: int) -> None:
    now = utcnow()
    batch: list[dict[str, Any]] = []
    for i in range(rows):
        row = store.insert_values(
            request={"prompt": f"bench {i}", "num_frames": 8},
            model_requested=None,
            model_effective="text2video",
            now=now - timedelta(seconds=rows - i),
        )
        status = MIX[i % len(MIX)]
        row["status"] = status.value
        row.update(succeeded_at=None, failed_at=None, cancelled_at=None)
        if status.is_final:  # stamped when it got there, as a transition does
            row[f"{status.value}_at"] = row["created_at"] + timedelta(seconds=60)
        batch.append(row)
        if len(batch) == 5000:
            store.insert_many(batch)
            batch = []
    store.insert_many(batch)


def measure(database_url: str, rows: int, scrapes: int, client: redis.Redis) -> dict[str, Any]:
    store = JobStore(make_engine(database_url))
    store.create_schema()
    fill(store, rows)
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if database_url.startswith("postgresql"):
            conn.execute(text("VACUUM ANALYZE t2v_jobs"))
            plan = [r[0] for r in conn.execute(text(f"EXPLAIN {COUNT_SQL}"))]
        else:
            conn.execute(text("ANALYZE"))
            plan = [str(r[-1]) for r in conn.execute(text(f"EXPLAIN QUERY PLAN {COUNT_SQL}"))]
    limiter = AccountLimiter(client, 10)
    client.flushdb()
    client.zadd(limiter.waiting_key, {f"w{i}": time.time() - 1000 + i for i in range(1000)})
    counts = StateCounts(store.engine)
    start = time.perf_counter()
    counts.recount()  # the exporter's start-up (and background) full count
    recount_ms = (time.perf_counter() - start) * 1000
    registry = state_registry(store, client, limiter, counts)
    body = render_metrics(registry)  # warm: connections, statement cache
    assert f't2v_jobs{{status="succeeded"}} {float(rows * 90 // 100)}' in body, body
    times = []
    for _ in range(scrapes):
        start = time.perf_counter()
        render_metrics(registry)
        times.append((time.perf_counter() - start) * 1000)
    store.engine.dispose()
    times.sort()
    return {
        "rows": rows,
        "scrapes": scrapes,
        "median_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[int(len(times) * 0.95) - 1], 2),
        "max_ms": round(times[-1], 2),
        "full_count_plan": plan,
        "startup_recount_ms": round(recount_ms, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--scrapes", type=int, default=50)
    args = parser.parse_args()
    client = redis.Redis.from_url(REDIS)
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "goal_ms": 50,
    }
    try:
        with tempfile.TemporaryDirectory() as tmp:
            results["sqlite"] = measure(
                f"sqlite:///{tmp}/bench.db", args.rows, args.scrapes, client
            )
        schema = "t2v_bench_" + uuid.uuid4().hex[:8]
        admin = create_engine(PG)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            url = f"{PG}?options={quote(f'-csearch_path={schema}')}"
            results["postgresql"] = measure(url, args.rows, args.scrapes, client)
        finally:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            admin.dispose()
    finally:
        client.flushdb()
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
