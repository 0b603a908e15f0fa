"""``JobStore``: the only code that reads or writes job rows.

The database is the source of truth: a broker message carries only a job id, and every
step loads the row, checks its state and moves it forward with ``JobStore.transition``,
an ``UPDATE ... WHERE id = :id AND status IN (:allowed)``. A message that arrives twice,
late, or for a finished job finds the row already moved and does nothing.

What a row holds (``JobRow``) and what a read returns (``JobRecord``) are defined in
``t2v_core.records``. This module must never decide what a job does next (the worker's
steps do; here a write either finds the row where it expects it or changes nothing), never
write outside ``write_transaction`` or ``one_statement`` (SQLite needs its write lock
taken up front), and never
hold or store the API key: the request payload saved here is the validated
``Text2VideoRequest`` (which has no ``key`` field).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Engine, Table, bindparam, func, insert, select, update

from t2v_core.callbacks import NOTIFY_STATES
from t2v_core.db import one_statement, write_transaction
from t2v_core.records import JobRecord, JobRow, to_record
from t2v_core.states import ALLOWED_FROM, JobStatus
from t2v_core.store_callbacks import CallbackRows
from t2v_core.store_due import DueRows
from t2v_core.store_templates import claim_sql, move_sql, update_if_sql

QUEUED_GRACE_SECONDS = 60
log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_job_id() -> str:
    return uuid.uuid4().hex


_T = cast(Table, JobRow.__table__)
_STAMP = {s: f"{s.value}_at" for s in JobStatus}
# Built once: every step reads its row first (building and keying it per call cost more CPU
# than running it).
_GET = select(_T).where(_T.c.id == bindparam("job_id"))


class JobStore(CallbackRows, DueRows):
    """All reads and writes of the job table go through here."""

    def __init__(
        self,
        engine: Engine,
        *,
        now: Callable[[], datetime] = utcnow,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.engine = engine
        # Every timestamp this store writes comes from here (a fake clock in model tests).
        self.now = now
        # Called with a job id after a committed move made its completion callback due
        # (sends ``t2v.callback``); if it fails or is None, reconcile sends it later.
        self.notify = notify

    def create_schema(self) -> None:
        """Bring the schema to the newest version (Alembic when available)."""
        from t2v_core.migrate import upgrade

        upgrade(self.engine)

    # -- reads ------------------------------------------------------------------------
    def get(self, job_id: str) -> JobRecord | None:
        with one_statement(self.engine, write=False) as conn:
            row = conn.execute(_GET, {"job_id": job_id}).first()
        return _row_to_record(row)

    def get_by_idempotency_key(self, key: str) -> JobRecord | None:
        with one_statement(self.engine, write=False) as conn:
            row = conn.execute(select(_T).where(JobRow.idempotency_key == key)).first()
        return _row_to_record(row)

    def list(
        self,
        *,
        status: JobStatus | str | Iterable[JobStatus | str] | None = None,
        since: datetime | None = None,
        limit: int | None = 100,
        oldest_first: bool = False,
        tenant: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> list[JobRecord]:
        stmt = select(_T)
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            stmt = stmt.where(JobRow.status.in_([str(JobStatus(s)) for s in statuses]))
        if tenant is not None:
            stmt = stmt.where(JobRow.tenant == tenant)
        for key, value in (labels or {}).items():
            # ``labels ->> key`` on PostgreSQL, ``json_extract(labels, '$."key"')`` on SQLite.
            stmt = stmt.where(JobRow.labels[key].as_string() == value)
        if since is not None:
            stmt = stmt.where(JobRow.created_at >= since)
        order = JobRow.created_at.asc() if oldest_first else JobRow.created_at.desc()
        stmt = stmt.order_by(order, JobRow.id)
        if limit is not None:
            stmt = stmt.limit(limit)
        with one_statement(self.engine, write=False) as conn:
            rows = conn.execute(stmt).all()
        return [r for r in (_row_to_record(row) for row in rows) if r is not None]

    def get_many(self, job_ids: Sequence[str]) -> dict[str, JobRecord]:
        """Records of ``job_ids`` that exist, by id (one query per 500 ids)."""
        found: dict[str, JobRecord] = {}
        ids = list(dict.fromkeys(job_ids))
        with one_statement(self.engine, write=False) as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                for row in conn.execute(select(_T).where(JobRow.id.in_(chunk))).all():
                    record = to_record(row)
                    found[record.id] = record
        return found

    def update_many_if(
        self, job_ids: Sequence[str], expect: Iterable[JobStatus], **values: Any
    ) -> int:
        """``update_if`` for many rows in one statement per 1000 ids; returns rows written."""
        statuses = [JobStatus(s).value for s in expect]
        written = 0
        with write_transaction(self.engine) as conn:
            for start in range(0, len(job_ids), 1000):
                stmt = (
                    update(_T)
                    .where(JobRow.id.in_(list(job_ids[start : start + 1000])))
                    .where(JobRow.status.in_(statuses))
                    .values(updated_at=self.now(), **_with_detail(values))
                )
                written += conn.execute(stmt).rowcount
        return written

    def count_by_status(self) -> dict[str, int]:
        stmt = select(JobRow.status, func.count()).group_by(JobRow.status)
        with one_statement(self.engine, write=False) as conn:
            return {status: n for status, n in conn.execute(stmt).all()}

    # -- writes -----------------------------------------------------------------------
    def insert_values(
        self,
        *,
        request: dict[str, Any],
        model_requested: str | None,
        model_effective: str,
        idempotency_key: str | None = None,
        job_id: str | None = None,
        now: datetime | None = None,
        priority: str = "normal",
        tenant: str | None = None,
        labels: dict[str, str] | None = None,
        callbacks: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Column values for a new `queued` row (insert them with ``insert_many``);
        ``callbacks``: the ``on_done``/``on_done_queue``/``callback_url`` columns."""
        now = now or self.now()
        return {
            **(callbacks or {}),
            "id": job_id or new_job_id(),
            "status": JobStatus.QUEUED.value,
            "idempotency_key": idempotency_key,
            "request": request,
            "model_requested": model_requested,
            "model_effective": model_effective,
            "outputs": [],
            "submit_count": 0,
            "poll_count": 0,
            "download_attempts": 0,
            "retry_count": 0,
            "unknown_submits": 0,
            "park_count": 0,
            "priority": priority,
            "tenant": tenant,
            "labels": dict(labels) if labels else None,
            "created_at": now,
            "updated_at": now,
            "queued_at": now,
            # A queued job should be picked up within a minute; if its message was lost
            # (broker down, Redis restarted) reconcile re-sends it after this.
            "next_check_at": now + timedelta(seconds=QUEUED_GRACE_SECONDS),
        }

    def insert_many(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert rows in one transaction: all of them or none."""
        if not rows:
            return
        with write_transaction(self.engine) as conn:
            conn.execute(insert(JobRow), list(rows))

    def insert_one(self, row: dict[str, Any]) -> None:
        """Insert one row: on PostgreSQL as a single autocommitted statement.

        One INSERT is atomic on its own; skipping BEGIN/COMMIT saves two round trips per
        ``enqueue`` (SQLite writes in its ``write_transaction``).
        """
        with one_statement(self.engine) as conn:
            conn.execute(insert(JobRow), [row])

    def transition(
        self,
        job_id: str,
        to: JobStatus,
        *,
        expect: Iterable[JobStatus] | None = None,
        **values: Any,
    ) -> bool:
        """Move ``job_id`` to ``to`` if its state is one ``to`` may be entered from.

        ``expect`` narrows the allowed source states. Extra ``values`` are written in
        the same statement (they may be SQL expressions such as ``JobRow.poll_count + 1``).
        Returns True if this call made the move, False if the row was elsewhere.
        """
        stmt, params, notifies = self._move_statement(job_id, to, expect, values, row=False)
        with one_statement(self.engine) as conn:
            if not notifies:
                return conn.execute(stmt, params).rowcount == 1
            moved = conn.execute(stmt, params).all()
        if moved and moved[0][0] is not None:
            self._notify(job_id)
        return bool(moved)

    def move_record(
        self,
        job_id: str,
        to: JobStatus,
        *,
        expect: Iterable[JobStatus] | None = None,
        **values: Any,
    ) -> JobRecord | None:
        """``transition``, returning the row as the move left it (None if not moved): one
        statement where a move and the next step's claim were two."""
        stmt, params, notifies = self._move_statement(job_id, to, expect, values, row=True)
        with one_statement(self.engine) as conn:
            row = conn.execute(stmt, params).first()
        rec = _row_to_record(row)
        if rec is not None and notifies and rec.callback_due_at is not None:
            self._notify(job_id)
        return rec

    def _move_statement(
        self,
        job_id: str,
        to: JobStatus,
        expect: Iterable[JobStatus] | None,
        values: dict[str, Any],
        *,
        row: bool,
    ) -> tuple[Any, dict[str, Any], bool]:
        """The move's statement and parameters (``store_templates``: prebuilt when its
        values allow), and whether it makes a callback due. It returns the row (``row``)
        or, when it makes a callback due, ``callback_due_at``."""
        allowed = set(ALLOWED_FROM[to])
        if expect is not None:
            allowed &= {JobStatus(s) for s in expect}
        now = self.now()
        values = {"status": to.value, _STAMP[to]: now, "updated_at": now, **_with_detail(values)}
        notifies = to in NOTIFY_STATES
        # A move to a final state or `parked` makes its callback due in the same statement:
        # never one without the other, whatever crashes next.
        stmt, params = move_sql(
            job_id,
            to,
            tuple(sorted(s.value for s in allowed)),
            values,
            now if notifies else None,
            "row" if row else "callback_due_at" if notifies else None,
        )
        return stmt, params, notifies

    def _notify(self, job_id: str) -> None:
        if self.notify is None:
            return
        try:
            self.notify(job_id)
        except Exception as exc:  # the row says it is due: reconcile sends it later
            log.warning("job %s: callback not sent now (%s); reconcile will", job_id, exc)

    def claim(
        self, job_id: str, status: JobStatus, *, lease: float, slack: float = 5.0, **values: Any
    ) -> bool:
        """Take the job's next step: only if it is in ``status`` and the step is due.

        Pushes ``next_check_at`` ``lease`` seconds ahead so a second copy of the same message
        (a redelivery, a re-drive racing a late countdown) finds the step taken and drops.
        """
        stmt, params = self._claim_statement(
            job_id, status, lease=lease, slack=slack, returning=False, **values
        )
        with one_statement(self.engine) as conn:
            return conn.execute(stmt, params).rowcount == 1

    def claim_record(
        self,
        job_id: str,
        status: JobStatus,
        *,
        lease: float,
        slack: float = 5.0,
        touch: bool = True,
        **values: Any,
    ) -> JobRecord | None:
        """``claim``, returning the row as the claim left it (None if not taken): one
        statement where a read and a claim were two (a poll's and a download's hot path).

        ``touch=False`` leaves ``updated_at`` as it was (the claim only leases the step),
        so the record returned still says when the row was last written: a poll's last
        look at its render."""
        stmt, params = self._claim_statement(
            job_id, status, lease=lease, slack=slack, touch=touch, returning=True, **values
        )
        with one_statement(self.engine) as conn:
            row = conn.execute(stmt, params).first()
        return _row_to_record(row)

    def _claim_statement(
        self,
        job_id: str,
        status: JobStatus,
        *,
        lease: float,
        slack: float,
        returning: bool,
        touch: bool = True,
        **values: Any,
    ) -> tuple[Any, dict[str, Any]]:
        now = self.now()
        values = {"next_check_at": now + timedelta(seconds=lease), **values}
        if touch:
            values = {"updated_at": now, **values}
        due_by = now + timedelta(seconds=slack)
        return claim_sql(job_id, JobStatus(status).value, values, due_by, returning)

    def set_provider_id(self, job_id: str, provider_id: str) -> bool:
        """Record the provider's id on a row that has none yet (in any state); False if the
        row already names one (or is gone). A paid render's id is never overwritten."""
        stmt = (
            update(_T)
            .where(JobRow.id == job_id)
            .where(JobRow.provider_id.is_(None))
            .values(provider_id=provider_id, updated_at=self.now())
        )
        with one_statement(self.engine) as conn:
            return conn.execute(stmt).rowcount == 1

    def update_if(self, job_id: str, expect: Iterable[JobStatus], **values: Any) -> bool:
        """Write ``values`` only while the row is still in one of ``expect`` (no move)."""
        statuses = [JobStatus(s).value for s in expect]
        values = {"updated_at": self.now(), **_with_detail(values)}
        stmt, params = update_if_sql(job_id, tuple(sorted(statuses)), values)
        with one_statement(self.engine) as conn:
            return conn.execute(stmt, params).rowcount == 1


def _with_detail(values: dict[str, Any]) -> dict[str, Any]:
    """A new ``error`` message without its own detail clears the old one's."""
    if "error" in values and "error_detail" not in values:
        return {**values, "error_detail": None}
    return values


def _row_to_record(row: Any) -> JobRecord | None:
    if row is None:
        return None
    return to_record(row)
