"""The job store's part for completion callbacks (``JobStore`` inherits ``CallbackRows``).

A notification is marked due by ``JobStore.transition`` in the same UPDATE that moves the
job to a final state or `parked` (``due_values``), so a crash between "the job ended" and
"tell the application" cannot lose it. Here are the other writes of a notification's
life, each a compare-and-set on ``callback_seq`` (a notification superseded by the job's
next final state is left alone): claim it for one sender, record what was sent, give it
back with a retry time, and the bounded reads reconcile uses (only due rows, by index).

Like ``store.py``, this module must never decide what happens next: the worker's
``worker.callbacks`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, DateTime, Engine, case, literal, null, or_, select, update

from t2v_core.db import one_statement, write_transaction
from t2v_core.records import JobRecord, JobRow, to_record
from t2v_core.states import JobStatus

_T = JobRow.__table__


def due_values(to: JobStatus, now: datetime | ColumnElement[Any]) -> dict[str, Any]:
    """Columns a move to ``to`` (a final state or `parked`) writes: a new notification,
    due now when the job has any callback, with its own sequence number. ``now``: a time,
    or the parameter a prebuilt statement takes it in (``t2v_core.store_templates``)."""
    has_callback = or_(JobRow.on_done.is_not(None), JobRow.callback_url.is_not(None))
    if isinstance(now, datetime):
        now = literal(now, type_=DateTime(timezone=True))
    return {
        "callback_status": to.value,
        "callback_seq": JobRow.callback_seq + 1,
        "callback_due_at": case((has_callback, now), else_=null()),
        "callback_delivered_at": None,
        "on_done_sent_at": None,
        "callback_attempts": 0,
        "callback_error": None,
    }


class CallbackRows:
    """Reads and writes of a job's pending notification."""

    engine: Engine
    now: Callable[[], datetime]

    def callbacks_due(self, before: datetime, limit: int = 500) -> list[JobRecord]:
        """Notifications due before ``before`` and not delivered, soonest first."""
        stmt = (
            select(_T)
            .where(JobRow.callback_due_at.is_not(None))
            .where(JobRow.callback_due_at < before)
            .order_by(JobRow.callback_due_at)
            .limit(limit)
        )
        with one_statement(self.engine, write=False) as conn:
            return [to_record(row) for row in conn.execute(stmt).all()]

    def claim_callback(self, job_id: str, seq: int, *, lease: float, slack: float = 5.0) -> bool:
        """Take notification ``seq`` of ``job_id`` for one send: only if it is still due.
        Pushes its due time ``lease`` seconds ahead so a second copy of the message drops."""
        now = self.now()
        stmt = (
            update(JobRow)
            .where(JobRow.id == job_id)
            .where(JobRow.callback_seq == seq)
            .where(JobRow.callback_due_at.is_not(None))
            .where(JobRow.callback_due_at <= now + timedelta(seconds=slack))
            .values(
                callback_due_at=now + timedelta(seconds=lease),
                callback_attempts=JobRow.callback_attempts + 1,
            )
        )
        with write_transaction(self.engine) as conn:
            return conn.execute(stmt).rowcount == 1

    def record_callback(self, job_id: str, seq: int, **values: Any) -> bool:
        """Write ``values`` on notification ``seq`` (no-op once superseded)."""
        stmt = (
            update(JobRow)
            .where(JobRow.id == job_id)
            .where(JobRow.callback_seq == seq)
            .values(**values)
        )
        with write_transaction(self.engine) as conn:
            return conn.execute(stmt).rowcount == 1

    def replay_on_done(self, since: datetime, until: datetime, limit: int = 1000) -> list[str]:
        """Mark due again the ``on_done`` tasks published in [``since``, ``until``) (Redis
        lost its data: they may never have reached the application's worker). Returns the
        ids, at most ``limit`` per call, oldest first; the caller repeats until none are
        left (a replayed one is published again after ``until``, so it is not seen twice)."""
        stmt = (
            select(JobRow.id)
            .where(JobRow.on_done_sent_at.is_not(None))
            .where(JobRow.on_done_sent_at >= since)
            .where(JobRow.on_done_sent_at < until)
            .order_by(JobRow.on_done_sent_at)
            .limit(limit)
        )
        now = self.now()
        with write_transaction(self.engine) as conn:
            ids = [row.id for row in conn.execute(stmt).all()]
            if ids:
                conn.execute(
                    update(JobRow)
                    .where(JobRow.id.in_(ids))
                    .values(on_done_sent_at=None, callback_due_at=now)
                )
        return ids
