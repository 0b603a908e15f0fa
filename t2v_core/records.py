"""What a job row is: the job table (``JobRow``) and the frozen records read from it.

``JobRow`` is the SQLAlchemy table (its migrations live in ``migrations/``); ``JobRecord``
and ``OutputRecord`` are what application code reads about a job, and ``to_record`` turns
a result row into one. ``LineMember`` is the narrow row the slot line is rebuilt from.

This module must never read or write the database (no engine, no connection, no query):
every read and compare-and-set write of a job row is ``t2v_core.store.JobStore``'s. It
must never hold or store the API key either: the request payload saved in a row is the
validated ``Text2VideoRequest`` (which has no ``key`` field).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import JSON, DateTime, Float, Index, Integer, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from t2v_core.states import JobStatus


class Base(DeclarativeBase):
    pass


# The states reconcile reads due rows of (``ix_t2v_jobs_active_due`` covers only these).
_ACTIVE_DUE = (
    "next_check_at IS NOT NULL AND status IN "
    "('queued', 'submitting', 'processing', 'downloading', 'parked', 'cancelled')"
)


class JobRow(Base):
    __tablename__ = "t2v_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    request: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    model_requested: Mapped[str | None] = mapped_column(String(64))
    model_effective: Mapped[str] = mapped_column(String(32), nullable=False)

    provider_id: Mapped[str | None] = mapped_column(String(64))
    eta_seconds: Mapped[float | None] = mapped_column(Float)
    future_links: Mapped[list[str] | None] = mapped_column(JSON)
    # The provider's output URLs once it reports success; downloaded into `outputs`.
    source_urls: Mapped[list[str] | None] = mapped_column(JSON)
    outputs: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False, default=list)

    submit_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    poll_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    download_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    retry_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Submits whose answer was lost (may have been paid); bounds blind resubmits.
    unknown_submits: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default="0"
    )
    # Times this job was parked (our own limit held a paid render); bounds the backoff.
    park_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # While parked: after this the provider no longer keeps the output (24 h).
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    error: Mapped[str | None] = mapped_column(Text)
    error_kind: Mapped[str | None] = mapped_column(String(32))
    # The figures behind the error (``t2v_core.problems.Problem.detail``).
    error_detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    # The slot line's class and fair-share tenant, and the caller's labels (never sent to
    # the provider). Migration 0005.
    priority: Mapped[str] = mapped_column(
        String(16), nullable=False, default="normal", server_default="normal"
    )
    tenant: Mapped[str | None] = mapped_column(String(64))
    labels: Mapped[dict[str, str] | None] = mapped_column(JSON)
    # Completion callbacks (t2v_core.callbacks): what to notify, and the pending
    # notification: due (not yet delivered) while callback_due_at is set.
    on_done: Mapped[str | None] = mapped_column(String(200))
    on_done_queue: Mapped[str | None] = mapped_column(String(200))
    callback_url: Mapped[str | None] = mapped_column(Text)
    callback_status: Mapped[str | None] = mapped_column(String(16))
    callback_seq: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default="0"
    )
    callback_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    callback_delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    on_done_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    callback_attempts: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default="0"
    )
    callback_error: Mapped[str | None] = mapped_column(Text)

    # When the job's next step is due; `reconcile` re-drives rows whose time has passed.
    next_check_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    submitting_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    processing_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    downloading_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    succeeded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    parked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # `t2v list --status S` and `list_jobs(status=, since=)`, newest first.
        Index("ix_t2v_jobs_status_created", "status", "created_at"),
        Index("ix_t2v_jobs_created", "created_at"),
        # reconcile: active rows whose next step is overdue.
        Index("ix_t2v_jobs_status_next_check", "status", "next_check_at"),
        # ... and only the rows it may find due (migration 0007_due_indexes).
        Index(
            "ix_t2v_jobs_active_due",
            "status",
            "next_check_at",
            postgresql_where=text(_ACTIVE_DUE),
            sqlite_where=text(_ACTIVE_DUE),
        ),
        # webhook receiver: find the job by the provider's id.
        Index("ix_t2v_jobs_provider_id", "provider_id"),
        # the metrics exporter: jobs that reached a final state since its watermark.
        Index("ix_t2v_jobs_status_succeeded", "status", "succeeded_at"),
        Index("ix_t2v_jobs_status_failed", "status", "failed_at"),
        Index("ix_t2v_jobs_status_cancelled", "status", "cancelled_at"),
        # `list_jobs(tenant=)` / `t2v list --tenant`, newest first.
        Index("ix_t2v_jobs_tenant_created", "tenant", "created_at"),
        # reconcile: callbacks due and not delivered; and those to replay after a wipe.
        Index("ix_t2v_jobs_callback_due", "callback_due_at"),
        Index("ix_t2v_jobs_on_done_sent", "on_done_sent_at"),
    )


@dataclass(frozen=True)
class LineMember:
    """One row of ``JobStore.line_members``."""

    id: str
    status: JobStatus
    created_at: datetime
    submitting_at: datetime | None
    deadline_at: datetime | None
    eta_seconds: float | None = None
    next_check_at: datetime | None = None
    priority: str = "normal"
    tenant: str | None = None


class OutputRecord(BaseModel):
    """One stored output of a job."""

    model_config = ConfigDict(frozen=True, extra="allow")

    index: int
    source_url: str
    storage_uri: str
    bytes: int
    sha256: str
    content_type: str
    duration: float | None = None
    frames: int | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    poster_uri: str | None = None


class JobRecord(BaseModel):
    """What application code reads about a job: a frozen copy of its row."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    id: str
    status: JobStatus
    idempotency_key: str | None = None
    request: dict[str, Any]
    model_requested: str | None = None
    model_effective: str
    provider_id: str | None = None
    eta_seconds: float | None = None
    future_links: list[str] | None = None
    source_urls: list[str] | None = None
    outputs: list[OutputRecord] = []
    submit_count: int = 0
    poll_count: int = 0
    download_attempts: int = 0
    retry_count: int = 0
    unknown_submits: int = 0
    park_count: int = 0
    expires_at: datetime | None = None
    error: str | None = None
    error_kind: str | None = None
    error_detail: dict[str, Any] | None = None
    priority: str = "normal"
    tenant: str | None = None
    labels: dict[str, str] | None = None
    on_done: str | None = None
    on_done_queue: str | None = None
    callback_url: str | None = None
    callback_status: str | None = None
    callback_seq: int = 0
    callback_due_at: datetime | None = None
    callback_delivered_at: datetime | None = None
    on_done_sent_at: datetime | None = None
    callback_attempts: int = 0
    callback_error: str | None = None
    next_check_at: datetime | None = None
    deadline_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    queued_at: datetime | None = None
    submitting_at: datetime | None = None
    processing_at: datetime | None = None
    downloading_at: datetime | None = None
    succeeded_at: datetime | None = None
    failed_at: datetime | None = None
    cancelled_at: datetime | None = None
    parked_at: datetime | None = None

    @property
    def is_final(self) -> bool:
        return self.status.is_final

    @property
    def timings(self) -> dict[str, float]:
        """Seconds spent in each stage, for stages that have both ends."""
        marks = [
            ("queued", self.queued_at, self.submitting_at),
            ("submitting", self.submitting_at, self.processing_at or self.downloading_at),
            ("processing", self.processing_at, self.downloading_at),
            ("downloading", self.downloading_at, self.succeeded_at),
            ("total", self.created_at, self.succeeded_at or self.failed_at or self.cancelled_at),
        ]
        return {name: (end - start).total_seconds() for name, start, end in marks if start and end}


def _as_aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything we store is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def to_record(row: Any) -> JobRecord:
    """A ``JobRecord`` from a Core result row (or anything with ``_mapping``)."""
    data = dict(row._mapping)
    for key, value in data.items():
        if isinstance(value, datetime):
            data[key] = _as_aware(value)
    data["outputs"] = data.get("outputs") or []
    return JobRecord.model_validate(data)
