"""The exporter's counts by state stay exact as jobs move, on SQLite and PostgreSQL,
while a scrape reads only jobs in flight and those that reached a final state since the
watermark (a test clock moves the watermark)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.pool import NullPool

from t2v_core.db import make_engine
from t2v_core.records import JobRow
from t2v_core.states import JobStatus
from t2v_core.store import JobStore, utcnow
from worker.state_counts import StateCounts


def test_counts_match_the_table_across_watermark_moves_and_recounts(database_url: str) -> None:
    clock = [utcnow()]

    def now() -> datetime:
        return clock[0]

    store = JobStore(make_engine(database_url, poolclass=NullPool), now=now)
    store.create_schema()
    counts = StateCounts(store.engine, margin=30, advance_every=10, recount_every=3600, now=now)

    def add(n: int) -> list[str]:
        rows = [
            store.insert_values(request={"prompt": "p"}, model_requested=None, model_effective="m")
            for _ in range(n)
        ]
        store.insert_many(rows)
        return [r["id"] for r in rows]

    def move(ids: list[str], to: JobStatus) -> None:
        # As a transition writes it: the state and its stamp (any move, for the test).
        stamp = {f"{to.value}_at": now()} if to.is_final else {}
        with store.engine.begin() as conn:
            for job_id in ids:
                conn.execute(
                    update(JobRow).where(JobRow.id == job_id).values(status=to.value, **stamp)
                )

    def check() -> None:
        want = {s.value: 0 for s in JobStatus} | store.count_by_status()
        assert counts.counts() == want

    early = add(6)
    move(early[:3], JobStatus.SUCCEEDED)
    move(early[3:4], JobStatus.FAILED)
    counts.recount()  # the exporter's start
    check()
    for step in range(6):  # the clock runs on past margin and advance_every
        clock[0] += timedelta(seconds=17)
        ids = add(3)
        move(ids[:1], JobStatus.SUCCEEDED)
        move(ids[1:2], JobStatus.CANCELLED)
        move(ids[2:], JobStatus.SUBMITTING)
        if step < 2:
            move(early[4 + step : 5 + step], JobStatus.SUBMITTING)
        check()
    assert counts._mark is not None and counts._mark > utcnow()  # it moved: bases grew
    assert counts.counts()["succeeded"] == 9 and counts.counts()["cancelled"] == 6
    counts.recount()
    check()
    store.engine.dispose()
