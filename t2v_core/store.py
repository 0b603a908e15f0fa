"""``JobStore``: the only code that reads or writes job rows.

The database is the source of truth: a broker message carries only a job id, and every
step loads the row, checks its state and moves it forward with ``JobStore.transition``,
an ``UPDATE ... WHERE id = :id AND status IN (:allowed)``. A message that arrives twice,
late, or for a finished job finds the row already moved and does nothing.

What a row holds (``JobRow``) and what a read returns (``JobRecord``) are defined in
``t2v_core.records``. This module must never decide what a job does next (the worker's
steps do; here a write either finds the row where it expects it or changes nothing), never
write outside ``write_transaction`` (SQLite needs its write lock taken up front), and never
hold or store the API key: the request payload saved here is the validated
``Text2VideoRequest`` (which has no ``key`` field).
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, func, insert, or_, select, update

from t2v_core.db import write_transaction
from t2v_core.records import JobRecord, JobRow, LineMember, _as_aware, to_record
from t2v_core.states import ALLOWED_FROM, JobStatus

QUEUED_GRACE_SECONDS = 60


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_job_id() -> str:
    return uuid.uuid4().hex


_T = JobRow.__table__
_STAMP = {s: f"{s.value}_at" for s in JobStatus}


class JobStore:
    """All reads and writes of the job table go through here."""

    def __init__(self, engine: Engine, *, now: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        # Every timestamp this store writes comes from here (a fake clock in model tests).
        self.now = now

    def create_schema(self) -> None:
        """Bring the schema to the newest version (Alembic when available)."""
        from t2v_core.migrate import upgrade

        upgrade(self.engine)

    # -- reads ------------------------------------------------------------------------
    def get(self, job_id: str) -> JobRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(_T).where(JobRow.id == job_id)).first()
        return _row_to_record(row)

    def get_by_idempotency_key(self, key: str) -> JobRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(_T).where(JobRow.idempotency_key == key)).first()
        return _row_to_record(row)

    def list(
        self,
        *,
        status: JobStatus | str | Iterable[JobStatus | str] | None = None,
        since: datetime | None = None,
        limit: int | None = 100,
        oldest_first: bool = False,
    ) -> list[JobRecord]:
        stmt = select(_T)
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            stmt = stmt.where(JobRow.status.in_([str(JobStatus(s)) for s in statuses]))
        if since is not None:
            stmt = stmt.where(JobRow.created_at >= since)
        order = JobRow.created_at.asc() if oldest_first else JobRow.created_at.desc()
        stmt = stmt.order_by(order, JobRow.id)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [r for r in (_row_to_record(row) for row in rows) if r is not None]

    def overdue(
        self, now: datetime, limit: int = 500, statuses: Iterable[JobStatus] | None = None
    ) -> builtins.list[JobRecord]:
        """Active jobs (of ``statuses``) whose next step was due before ``now``."""
        wanted = ALLOWED_FROM[JobStatus.FAILED] if statuses is None else statuses
        # One query per state: each is a range scan of ``ix_t2v_jobs_active_due`` in due
        # order that stops at ``limit`` (an IN over states would read every due row of
        # them all and sort), so a call reads at most ``limit`` rows per state.
        found: builtins.list[JobRecord] = []
        for status in dict.fromkeys(JobStatus(s) for s in wanted):
            found += self._due(now, limit, JobRow.status == status.value)
        found.sort(key=lambda r: r.next_check_at or now)
        return found[:limit]

    def due_ids(self, status: JobStatus, now: datetime, limit: int) -> builtins.list[str]:
        """Ids (only) of ``status`` rows due before ``now``, soonest first, at most ``limit``."""
        stmt = (
            select(JobRow.id)
            .where(JobRow.status == JobStatus(status).value)
            .where(JobRow.next_check_at.is_not(None))
            .where(JobRow.next_check_at < now)
            .order_by(JobRow.next_check_at)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [row.id for row in conn.execute(stmt)]

    def _due(self, now: datetime, limit: int, *where: Any) -> builtins.list[JobRecord]:
        """Rows matching ``where`` whose ``next_check_at`` is before ``now``, soonest first."""
        stmt = (
            select(_T)
            .where(*where)
            .where(JobRow.next_check_at.is_not(None))
            .where(JobRow.next_check_at < now)
            .order_by(JobRow.next_check_at)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [r for r in (_row_to_record(row) for row in rows) if r is not None]

    def line_members(self, chunk: int = 5000) -> Iterator[LineMember]:
        """Jobs the account's slot line is rebuilt from after Redis lost it: those that may
        be at the provider (submitting, processing, cancelled or parked while rendering) and those
        waiting to be submitted (queued), oldest first. Narrow rows, read in chunks."""
        cols = (
            JobRow.id,
            JobRow.status,
            JobRow.created_at,
            JobRow.submitting_at,
            JobRow.deadline_at,
            JobRow.eta_seconds,
            JobRow.next_check_at,
        )
        at_provider = [
            JobStatus.QUEUED.value,
            JobStatus.SUBMITTING.value,
            JobStatus.PROCESSING.value,
        ]
        stmt = (
            select(*cols)
            .where(
                or_(
                    JobRow.status.in_(at_provider),
                    and_(
                        JobRow.status.in_([JobStatus.CANCELLED.value, JobStatus.PARKED.value]),
                        JobRow.provider_id.is_not(None),
                        JobRow.downloading_at.is_(None),
                        JobRow.next_check_at.is_not(None),
                    ),
                )
            )
            .order_by(JobRow.created_at, JobRow.id)
        )
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, max_row_buffer=chunk)
            for row in result.execute(stmt):
                yield LineMember(
                    id=row.id,
                    status=JobStatus(row.status),
                    created_at=_as_aware(row.created_at),  # type: ignore[arg-type]
                    submitting_at=_as_aware(row.submitting_at),
                    deadline_at=_as_aware(row.deadline_at),
                    eta_seconds=row.eta_seconds,
                    next_check_at=_as_aware(row.next_check_at),
                )

    def cancelled_rendering_due(self, now: datetime, limit: int = 500) -> builtins.list[JobRecord]:
        """Cancelled jobs the provider may still be rendering whose quiet poll is overdue."""
        return self._due(
            now,
            limit,
            JobRow.status == JobStatus.CANCELLED.value,
            JobRow.provider_id.is_not(None),
            JobRow.downloading_at.is_(None),
        )

    def get_many(self, job_ids: Sequence[str]) -> dict[str, JobRecord]:
        """Records of ``job_ids`` that exist, by id (one query per 500 ids)."""
        found: dict[str, JobRecord] = {}
        ids = list(dict.fromkeys(job_ids))
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                for row in conn.execute(select(_T).where(JobRow.id.in_(chunk))).all():
                    record = to_record(row)
                    found[record.id] = record
        return found

    def admission_rows(self, job_ids: Sequence[str]) -> builtins.list[Any]:
        """Narrow rows (id, status, created_at, provider_id, model_effective) of the
        ``job_ids`` that exist, oldest first: what admitting a batch into the slot line reads."""
        cols = (
            JobRow.id,
            JobRow.status,
            JobRow.created_at,
            JobRow.provider_id,
            JobRow.model_effective,
        )
        found: builtins.list[Any] = []
        ids = list(dict.fromkeys(job_ids))
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 1000):
                stmt = select(*cols).where(JobRow.id.in_(ids[start : start + 1000]))
                found += [
                    (r.id, JobStatus(r.status), _as_aware(r.created_at), *r[3:])
                    for r in conn.execute(stmt).all()
                ]
        found.sort(key=lambda r: (r[2], r[0]))
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
                    update(JobRow)
                    .where(JobRow.id.in_(list(job_ids[start : start + 1000])))
                    .where(JobRow.status.in_(statuses))
                    .values(updated_at=self.now(), **_with_detail(values))
                )
                written += conn.execute(stmt).rowcount
        return written

    def count_by_status(self) -> dict[str, int]:
        stmt = select(JobRow.status, func.count()).group_by(JobRow.status)
        with self.engine.connect() as conn:
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
    ) -> dict[str, Any]:
        """Column values for a new `queued` row (insert them with ``insert_many``)."""
        now = now or self.now()
        return {
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
        if self.engine.dialect.name != "postgresql":
            with write_transaction(self.engine) as conn:
                conn.execute(insert(JobRow), [row])
            return
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
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
        allowed = set(ALLOWED_FROM[to])
        if expect is not None:
            allowed &= {JobStatus(s) for s in expect}
        now = self.now()
        values = {"status": to.value, _STAMP[to]: now, "updated_at": now, **_with_detail(values)}
        stmt = (
            update(JobRow)
            .where(JobRow.id == job_id)
            .where(JobRow.status.in_([s.value for s in allowed]))
            .values(**values)
        )
        with write_transaction(self.engine) as conn:
            return conn.execute(stmt).rowcount == 1

    def claim(
        self, job_id: str, status: JobStatus, *, lease: float, slack: float = 5.0, **values: Any
    ) -> bool:
        """Take the job's next step: only if it is in ``status`` and the step is due.

        Pushes ``next_check_at`` ``lease`` seconds ahead so a second copy of the same message
        (a redelivery, a re-drive racing a late countdown) finds the step taken and drops.
        """
        now = self.now()
        stmt = (
            update(JobRow)
            .where(JobRow.id == job_id)
            .where(JobRow.status == JobStatus(status).value)
            .where(
                or_(
                    JobRow.next_check_at.is_(None),
                    JobRow.next_check_at <= now + timedelta(seconds=slack),
                )
            )
            .values(next_check_at=now + timedelta(seconds=lease), updated_at=now, **values)
        )
        with write_transaction(self.engine) as conn:
            return conn.execute(stmt).rowcount == 1

    def set_provider_id(self, job_id: str, provider_id: str) -> bool:
        """Record the provider's id on a row that has none yet (in any state); False if the
        row already names one (or is gone). A paid render's id is never overwritten."""
        stmt = (
            update(JobRow)
            .where(JobRow.id == job_id)
            .where(JobRow.provider_id.is_(None))
            .values(provider_id=provider_id, updated_at=self.now())
        )
        with write_transaction(self.engine) as conn:
            return conn.execute(stmt).rowcount == 1

    def update_if(self, job_id: str, expect: Iterable[JobStatus], **values: Any) -> bool:
        """Write ``values`` only while the row is still in one of ``expect`` (no move)."""
        stmt = (
            update(JobRow)
            .where(JobRow.id == job_id)
            .where(JobRow.status.in_([JobStatus(s).value for s in expect]))
            .values(updated_at=self.now(), **_with_detail(values))
        )
        with write_transaction(self.engine) as conn:
            return conn.execute(stmt).rowcount == 1


def _with_detail(values: dict[str, Any]) -> dict[str, Any]:
    """A new ``error`` message without its own detail clears the old one's."""
    if "error" in values and "error_detail" not in values:
        return {**values, "error_detail": None}
    return values


def _row_to_record(row: Any) -> JobRecord | None:
    if row is None:
        return None
    return to_record(row)
