"""Jobs by state for the metrics exporter, without reading the whole table at a scrape.

Jobs in flight (queued … parked) are few: one ``GROUP BY`` over the ``(status, …)`` index
range of the active states. Jobs in a final state grow for ever, so they are counted once
(``recount``: at the exporter's start, then in the background every ``recount_every``
seconds) up to a watermark, and each scrape adds only the rows that reached that state
since the watermark (the ``(status, <state>_at)`` indexes of migration 0008). The watermark
moves forward, ``margin`` seconds behind the clock (a row stamped a little before it
commits is never missed), adding the rows it passes to the base.

A job that leaves a final state (``t2v retry`` of an old-style failed job) is still in the
base until the next recount: the count may be high by such jobs for at most
``recount_every`` seconds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, literal, select, union_all
from sqlalchemy.engine import Engine

from t2v_core.records import JobRow
from t2v_core.states import ACTIVE_STATES, FINAL_STATES, JobStatus
from t2v_core.store import utcnow

STAMPS: dict[JobStatus, Any] = {
    JobStatus.SUCCEEDED: JobRow.succeeded_at,
    JobStatus.FAILED: JobRow.failed_at,
    JobStatus.CANCELLED: JobRow.cancelled_at,
}
assert set(STAMPS) == set(FINAL_STATES)


class StateCounts:
    def __init__(
        self,
        engine: Engine,
        *,
        margin: float = 300.0,
        advance_every: float = 60.0,
        recount_every: float = 600.0,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.margin = timedelta(seconds=margin)
        self.advance_every = timedelta(seconds=advance_every)
        self.recount_every = recount_every
        self.now = now
        self._lock = threading.Lock()
        self._mark: datetime | None = None
        self._base: dict[JobStatus, int] = {}

    def recount(self) -> None:
        """Count the final states in full (an index-only read of each): start-up and the
        background refresh, never a scrape once this has run."""
        mark = self.now() - self.margin
        with self.engine.connect() as conn:
            base = {}
            for status, stamp in STAMPS.items():
                every = select(func.count()).where(JobRow.status == status.value)
                recent = every.where(stamp >= mark)
                base[status] = int(conn.execute(every).scalar_one()) - int(
                    conn.execute(recent).scalar_one()
                )
        with self._lock:
            self._mark, self._base = mark, base

    def _advance(self, conn: Any, mark: datetime, to: datetime) -> None:
        for status, stamp in STAMPS.items():
            passed = select(func.count()).where(
                JobRow.status == status.value, stamp >= mark, stamp < to
            )
            self._base[status] += int(conn.execute(passed).scalar_one())
        self._mark = to

    def counts(self) -> dict[str, int]:
        """Jobs by state (every state present), from bounded reads."""
        if self._mark is None:
            self.recount()
        with self._lock, self.engine.connect() as conn:
            assert self._mark is not None
            target = self.now() - self.margin
            if target - self._mark >= self.advance_every:
                self._advance(conn, self._mark, target)
            mark = self._mark
            # One statement: the active states' counts, and each final state's rows since
            # the watermark; every part is a range of one index.
            parts = [
                select(JobRow.status, func.count())
                .where(JobRow.status.in_([s.value for s in ACTIVE_STATES]))
                .group_by(JobRow.status),
                *(
                    select(literal(status.value), func.count()).where(
                        JobRow.status == status.value, stamp >= mark
                    )
                    for status, stamp in STAMPS.items()
                ),
            ]
            found = {str(s): int(n) for s, n in conn.execute(union_all(*parts)).all()}
            for status in STAMPS:
                found[status.value] = self._base[status] + found.get(status.value, 0)
        return {s.value: found.get(s.value, 0) for s in JobStatus}

    def refresh_forever(self, stop: threading.Event) -> None:
        """Recount every ``recount_every`` seconds until ``stop`` is set (a daemon thread
        of the exporter)."""
        while not stop.wait(self.recount_every):
            self.recount()
