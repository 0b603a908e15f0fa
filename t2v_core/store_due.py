"""The job store's bounded reads of many rows (``JobStore`` inherits ``DueRows``): what is
due (reconcile), the slot line's members (its rebuild after Redis lost it), and narrow rows
of a batch (admission). Each reads only rows that are due or named, through an index, at
most ``limit`` per call, or streams narrow rows in chunks: never the whole table at once.

Like ``store.py``, this module must never decide what happens next.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, or_, select

from t2v_core.db import one_statement
from t2v_core.records import JobRecord, JobRow, LineMember, _as_aware, to_record
from t2v_core.states import ALLOWED_FROM, JobStatus

_T = JobRow.__table__


class DueRows:
    """Reads of what is due, of the slot line's members and of a batch's narrow rows."""

    engine: Engine

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
        with one_statement(self.engine, write=False) as conn:
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
        with one_statement(self.engine, write=False) as conn:
            rows = conn.execute(stmt).all()
        return [to_record(row) for row in rows]

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
            JobRow.priority,
            JobRow.tenant,
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
                    priority=row.priority,
                    tenant=row.tenant,
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

    def statuses(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """The state of each of ``job_ids`` that exists (narrow rows, 500 ids a query)."""
        found: dict[str, JobStatus] = {}
        ids = list(dict.fromkeys(job_ids))
        with one_statement(self.engine, write=False) as conn:
            for start in range(0, len(ids), 500):
                stmt = select(JobRow.id, JobRow.status).where(
                    JobRow.id.in_(ids[start : start + 500])
                )
                found.update({row.id: JobStatus(row.status) for row in conn.execute(stmt).all()})
        return found

    def admission_rows(self, job_ids: Sequence[str]) -> builtins.list[Any]:
        """Narrow rows (id, status, created_at, provider_id, model_effective, priority,
        tenant) of the ``job_ids`` that exist, oldest first: what admitting a batch into
        the slot line reads."""
        cols = (
            JobRow.id,
            JobRow.status,
            JobRow.created_at,
            JobRow.provider_id,
            JobRow.model_effective,
            JobRow.priority,
            JobRow.tenant,
        )
        found: builtins.list[Any] = []
        ids = list(dict.fromkeys(job_ids))
        with one_statement(self.engine, write=False) as conn:
            for start in range(0, len(ids), 1000):
                stmt = select(*cols).where(JobRow.id.in_(ids[start : start + 1000]))
                found += [
                    (r.id, JobStatus(r.status), _as_aware(r.created_at), *r[3:])
                    for r in conn.execute(stmt).all()
                ]
        found.sort(key=lambda r: (r[2], r[0]))
        return found
