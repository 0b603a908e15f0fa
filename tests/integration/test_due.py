"""Work in proportion to what is due (issue 10), on real Redis and SQLite / PostgreSQL.

- ``admit_step`` puts a whole batch of new jobs in the slot line in one pass: the oldest
  ``limit`` take a slot and are sent on as ``t2v.submit``; the others wait in line (in
  creation order) with no message and their next look pushed back; a second copy of the
  batch sends nothing new for the waiters.
- reconcile's due queries read a bounded number of rows whatever the table holds: each is
  a range scan of an index on (status, next_check_at), in due order, stopped at its limit
  (the plan says so: ``EXPLAIN`` on SQLite, ``EXPLAIN ANALYZE`` row counts on PostgreSQL).
- a job still `submitting` whose lost-answer wait is not over is read once, then not
  again until it is due.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from sqlalchemy import text

from t2v_core.db import dispose_engines, make_engine
from t2v_core.names import TASK_SUBMIT
from t2v_core.states import JobStatus
from t2v_core.store import JobStore, utcnow
from worker.limiter import AccountLimiter
from worker.reconcile import reconcile
from worker.settings import WorkerSettings
from worker.steps import Runtime, admit_step
from worker.steps.slots import WAITING_RECHECK_SECONDS
from worker.storage import LocalStorage

LIMIT = 3


@pytest.fixture
def rt(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[Runtime]:
    settings = WorkerSettings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        storage_url=str(tmp_path / "videos"),
        modelslab_api_key="sk-due-test",
        account_slots=LIMIT,
        lost_submit_hold=120.0,
    )
    store = JobStore(make_engine(database_url))
    store.create_schema()
    client = redis.Redis.from_url(redis_url)
    limiter = AccountLimiter(client, LIMIT)
    limiter.rebuild([], [])  # the line as a running worker finds it: ready, empty
    sent: list[tuple[str, str, float]] = []
    runtime = Runtime(
        settings=settings,
        store=store,
        client=None,  # type: ignore[arg-type]  # no step here talks to the provider
        limiter=limiter,
        storage=LocalStorage(tmp_path / "videos"),
        http=requests.Session(),
        schedule=lambda task, job_id, countdown: sent.append((task, job_id, countdown)),
        rng=random.Random(0),
    )
    runtime.sent = sent  # type: ignore[attr-defined]
    yield runtime
    client.close()
    dispose_engines()
    store.engine.dispose()


def insert(rt: Runtime, n: int, **values: Any) -> list[str]:
    start = utcnow() - timedelta(hours=1)
    rows = []
    for i in range(n):
        row = rt.store.insert_values(
            request={"prompt": f"p{i}"},
            model_requested="wan2.2",
            model_effective="wan2.2",
            now=start + timedelta(milliseconds=i),
        )
        rows.append({**row, **values})
    rt.store.insert_many(rows)
    return [r["id"] for r in rows]


def test_admit_puts_a_batch_in_line_and_sends_only_the_jobs_that_got_a_slot(
    rt: Runtime,
) -> None:
    ids = insert(rt, 40)
    shuffled = random.Random(1).sample(ids, len(ids))
    admit_step(rt, shuffled)
    sent = rt.sent  # type: ignore[attr-defined]
    assert sent == [(TASK_SUBMIT, job_id, 0) for job_id in ids[:LIMIT]]  # the oldest
    assert rt.limiter.holders() and sorted(rt.limiter.holders()) == sorted(ids[:LIMIT])
    assert rt.limiter.waiting() == ids[LIMIT:]  # in creation order
    later = utcnow() + timedelta(seconds=WAITING_RECHECK_SECONDS - 60)
    for job_id in ids[LIMIT:]:
        rec = rt.store.get(job_id)
        assert rec is not None and rec.status is JobStatus.QUEUED
        assert rec.next_check_at is not None and rec.next_check_at > later
    sent.clear()
    admit_step(rt, ids)  # a second copy: the holders renew, nobody else is sent
    assert sorted(j for _, j, _ in sent) == sorted(ids[:LIMIT])
    assert rt.limiter.waiting() == ids[LIMIT:]


def test_admit_hands_jobs_that_moved_on_to_the_submit_step(rt: Runtime) -> None:
    (moved,) = insert(rt, 1, status=JobStatus.CANCELLED.value)
    (known,) = insert(rt, 1, provider_id="p-7")
    admit_step(rt, [moved, known, "no-such-job"])
    assert sorted(j for _, j, _ in rt.sent) == sorted([moved, known])  # type: ignore[attr-defined]
    assert rt.limiter.waiting() == [] and rt.limiter.holders() == []


def _plan(rt: Runtime, sql: str, params: dict[str, Any]) -> str:
    with rt.store.engine.connect() as conn:
        if rt.store.engine.dialect.name == "postgresql":
            conn.execute(text("ANALYZE t2v_jobs"))
            rows = conn.execute(text("EXPLAIN (ANALYZE, FORMAT TEXT) " + sql), params).all()
        else:
            rows = conn.execute(text("EXPLAIN QUERY PLAN " + sql), params).all()
    return "\n".join(" ".join(str(c) for c in row) for row in rows)


def test_due_queries_read_at_most_their_limit_through_the_index(rt: Runtime) -> None:
    now = utcnow()
    # A big table: finished rows with a stale next_check_at, a backlog not due, and many
    # more due rows than one call may read.
    insert(rt, 3000, status=JobStatus.SUCCEEDED.value, next_check_at=now - timedelta(hours=2))
    insert(rt, 3000, next_check_at=now + timedelta(hours=1))
    due = insert(rt, 400, next_check_at=now - timedelta(minutes=5))
    assert len(rt.store.overdue(now, limit=50, statuses=[JobStatus.QUEUED])) == 50
    assert rt.store.due_ids(JobStatus.QUEUED, now, 50) == due[:50]
    sql = (
        "SELECT id FROM t2v_jobs WHERE status = :s AND next_check_at IS NOT NULL"
        " AND next_check_at < :now ORDER BY next_check_at LIMIT 50"
    )
    plan = _plan(rt, sql, {"s": "queued", "now": now})
    assert "ix_t2v_jobs_active_due" in plan or "ix_t2v_jobs_status_next_check" in plan, plan
    if rt.store.engine.dialect.name == "postgresql":
        assert "Seq Scan" not in plan and "Sort" not in plan, plan
        scan = next(line for line in plan.splitlines() if "Index" in line and "Scan" in line)
        assert "actual" in scan and "rows=50 " in scan, plan  # stopped at the limit
    else:
        assert "TEMP B-TREE" not in plan, plan  # no sort of every due row


def test_a_submitting_job_not_yet_due_is_read_once_then_left_until_due(rt: Runtime) -> None:
    now = utcnow()
    (job,) = insert(
        rt,
        1,
        status=JobStatus.SUBMITTING.value,
        submitting_at=now - timedelta(seconds=5),
        next_check_at=now - timedelta(seconds=1),  # overdue, but the request may still run
    )
    reconcile(rt)
    rec = rt.store.get(job)
    assert rec is not None and rec.status is JobStatus.SUBMITTING
    assert rec.next_check_at is not None and rec.next_check_at > utcnow()
    assert rt.store.overdue(utcnow(), statuses=[JobStatus.SUBMITTING]) == []
