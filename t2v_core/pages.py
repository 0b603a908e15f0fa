"""Keyset pages of the job table, newest first: what `t2v web` lists and `/api/v1/jobs` serves.

A page is ``ORDER BY created_at DESC, id DESC LIMIT n`` from a cursor naming the last row
seen (its ``created_at`` and ``id``), never ``OFFSET``: page 2,000 of 100,000 rows costs what
page 1 costs, because the scan starts at the cursor in ``ix_t2v_jobs_created`` (or
``ix_t2v_jobs_status_created`` with a state filter). The cursor is opaque to callers
(``encode_cursor``/``decode_cursor``: URL-safe base64 of ``created_at|id``).

Filters: states (any of), model (asked or effective, exact), prompt text (case-insensitive
substring of the request's ``prompt``; ``%`` and ``_`` are matched literally).

This module only reads (like ``JobStore``'s reads, through the same engine) and never
decides anything about a job. It lives beside ``store`` rather than in it so the list's
query can be tuned without touching the compare-and-set code.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine, String, and_, cast, func, or_, select

from t2v_core.fairness import parse_label_filter
from t2v_core.records import JobRecord, JobRow, _as_aware, to_record
from t2v_core.states import JobStatus

MAX_PAGE = 200
_T = JobRow.__table__


class CursorInvalid(ValueError):
    """A cursor that this module did not write (or that was cut short)."""


@dataclass(frozen=True)
class JobFilter:
    """What to list: empty fields filter nothing."""

    states: tuple[JobStatus, ...] = ()
    model: str | None = None
    prompt: str | None = None
    tenant: str | None = None
    labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(
        cls,
        states: Iterable[str] = (),
        model: str | None = None,
        prompt: str | None = None,
        tenant: str | None = None,
        labels: Iterable[str] = (),
    ) -> JobFilter:
        """Raises ``ValueError`` naming a state that does not exist, and
        ``RequestInvalid`` for a label that is not ``KEY=VALUE`` within the limits."""
        return cls(
            states=tuple(JobStatus(s) for s in states if s),
            model=(model or "").strip() or None,
            prompt=(prompt or "").strip() or None,
            tenant=(tenant or "").strip() or None,
            labels=tuple(sorted(parse_label_filter([x for x in labels if x]).items())),
        )

    @property
    def any(self) -> bool:
        return bool(self.states or self.model or self.prompt or self.tenant or self.labels)


@dataclass(frozen=True)
class Page:
    records: list[JobRecord]
    next_cursor: str | None = None
    filters: JobFilter = field(default_factory=JobFilter)


def encode_cursor(created_at: datetime, job_id: str) -> str:
    aware = _as_aware(created_at)
    assert aware is not None
    raw = f"{aware.isoformat()}|{job_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, job_id = raw.split("|", 1)
        when = datetime.fromisoformat(stamp)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise CursorInvalid(f"not a cursor from this list: {cursor[:40]!r}") from exc
    if when.tzinfo is None or not job_id or len(job_id) > 32:
        raise CursorInvalid(f"not a cursor from this list: {cursor[:40]!r}")
    return when, job_id


def _like(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _where(filters: JobFilter) -> list[object]:
    clauses: list[object] = []
    if filters.states:
        clauses.append(JobRow.status.in_([s.value for s in filters.states]))
    if filters.model:
        clauses.append(
            or_(JobRow.model_effective == filters.model, JobRow.model_requested == filters.model)
        )
    if filters.prompt:
        prompt = cast(JobRow.request["prompt"].as_string(), String)
        clauses.append(func.lower(prompt).like(_like(filters.prompt), escape="\\"))
    if filters.tenant:
        clauses.append(JobRow.tenant == filters.tenant)
    for key, value in filters.labels:
        clauses.append(JobRow.labels[key].as_string() == value)
    return clauses


def list_page(
    engine: Engine, filters: JobFilter = JobFilter(), *, cursor: str | None = None, limit: int = 50
) -> Page:
    """One page of jobs, newest first, after ``cursor`` (None: the first page).

    Raises ``CursorInvalid`` for a cursor this module did not write.
    """
    limit = max(1, min(limit, MAX_PAGE))
    stmt = select(_T).where(*_where(filters))  # type: ignore[arg-type]
    if cursor:
        when, job_id = decode_cursor(cursor)
        # `created_at <= when` on its own gives the index a range to start from (an OR
        # alone made SQLite walk the index from the newest row to the cursor).
        stmt = stmt.where(
            JobRow.created_at <= when,
            or_(JobRow.created_at < when, and_(JobRow.created_at == when, JobRow.id < job_id)),
        )
    stmt = stmt.order_by(JobRow.created_at.desc(), JobRow.id.desc()).limit(limit + 1)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    records = [to_record(row) for row in rows[:limit]]
    more = len(rows) > limit
    last = records[-1] if records and more else None
    return Page(
        records=records,
        next_cursor=encode_cursor(last.created_at, last.id) if last else None,
        filters=filters,
    )
