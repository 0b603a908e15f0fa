"""Enqueue and look up jobs: the functions application code calls.

``enqueue`` validates, writes the row `queued`, then sends ``t2v.submit`` with the job id
only. The row comes first so a message can never name a job that does not exist, and a
message that could not be sent loses nothing (``EnqueueError``; reconcile re-sends).

The module functions use a default ``Producer`` built lazily from ``get_settings()``;
``configure(settings=..., store=..., broker=...)`` replaces it (tests, embedding apps), or
build a ``Producer`` of your own. Logs name job ids, never prompts (they are user data).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError

from producer.broker import Broker
from producer.db import forget_engines, get_engine, get_tuned_engine
from producer.errors import JobNotFound, RequestInvalid
from producer.job import Job
from producer.records import JobRecord, JobStore
from producer.request import Text2VideoRequest
from producer.settings import Settings, get_settings
from producer.states import JobStatus

log = logging.getLogger(__name__)

RequestLike = Text2VideoRequest | Mapping[str, Any]
IDEMPOTENCY_KEY_MAX = 255  # the column's length


class Producer:
    """Settings, job store and broker held together; every public call goes through one."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: JobStore | None = None,
        broker: Broker | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.store = store or JobStore(_engine(self.settings.database_url))
        self.broker = broker or Broker(self.settings)
        self._schema_ready = not self.settings.auto_migrate
        self._schema_lock = threading.Lock()

    @property
    def default_wait_timeout(self) -> float:
        return self.settings.default_wait_timeout

    def _ready(self) -> JobStore:
        # Upgrade the schema once per process, on first use (cheap when already current).
        if not self._schema_ready:
            with self._schema_lock:
                if not self._schema_ready:
                    self.store.create_schema()
                    self._schema_ready = True
        return self.store

    # -- writes -----------------------------------------------------------------------
    def enqueue(self, request: RequestLike, *, idempotency_key: str | None = None) -> Job:
        """Validate, write the row `queued`, send ``t2v.submit``; return the job's handle.

        With ``idempotency_key``, a second call with the same key returns the first job and
        sends nothing (also across processes racing: the key is unique in the table). The
        same key with a different request raises ``RequestInvalid``.
        Raises ``RequestInvalid`` (nothing written) or ``EnqueueError`` (row written and
        `queued`, message not sent; it is re-driven later).
        """
        req = Text2VideoRequest.parse(request)
        payload = req.to_api_payload()
        if idempotency_key is not None:
            _check_idempotency_key(idempotency_key)
        store = self._ready()
        if idempotency_key is not None:
            existing = store.get_by_idempotency_key(idempotency_key)
            if existing is not None:
                return self._same_job(existing, payload, idempotency_key)
        row = store.insert_values(
            request=payload,
            model_requested=req.model_requested,
            model_effective=req.model_effective,
            idempotency_key=idempotency_key,
        )
        try:
            self._insert(row)
        except IntegrityError:
            # Another caller inserted this key between our read and our insert.
            existing = store.get_by_idempotency_key(idempotency_key) if idempotency_key else None
            if existing is None:
                raise
            return self._same_job(existing, payload, idempotency_key or "")
        job_id = row["id"]
        log.info("enqueued job %s (model %s)", job_id, req.model_effective)
        self.broker.send_submit([job_id])
        return Job(job_id, self, JobRecord.model_validate(row))

    def _insert(self, row: dict[str, Any]) -> None:
        # Producer engines skip the pre-ping round trip (see _engine); a connection the
        # database dropped fails once, is invalidated, and the insert is tried again.
        try:
            self.store.insert_one(row)
        except DBAPIError as exc:
            if isinstance(exc, IntegrityError) or not exc.connection_invalidated:
                raise
            try:
                self.store.insert_one(row)
            except IntegrityError:
                # The first attempt did commit before the connection broke: same id, done.
                if self.store.get(row["id"]) is None:
                    raise

    def enqueue_many(self, requests: Iterable[RequestLike]) -> list[Job]:
        """Enqueue many requests: all validated first, one transaction, pipelined sends.

        Raises ``RequestInvalid`` naming every bad request by index (``[3].width=...``) and
        writes nothing; ``EnqueueError`` (``.job_ids``) if the broker failed after the
        rows were written (they stay `queued` and are re-driven).
        """
        parsed: list[Text2VideoRequest] = []
        errors: list[dict[str, Any]] = []
        for index, item in enumerate(requests):
            try:
                parsed.append(Text2VideoRequest.parse(item))
            except RequestInvalid as exc:
                for error in exc.errors:
                    errors.append({**error, "field": f"[{index}].{error['field']}"})
        if errors:
            lines = [_error_line(e) for e in errors]
            more = f"; ... and {len(lines) - 20} more" if len(lines) > 20 else ""
            raise RequestInvalid("; ".join(lines[:20]) + more, errors)
        if not parsed:
            return []
        store = self._ready()
        rows = [
            store.insert_values(
                request=req.to_api_payload(),
                model_requested=req.model_requested,
                model_effective=req.model_effective,
            )
            for req in parsed
        ]
        store.insert_many(rows)
        ids = [row["id"] for row in rows]
        log.info("enqueued %d jobs (%s .. %s)", len(ids), ids[0], ids[-1])
        self.broker.send_submit(ids)
        return [Job(row["id"], self, JobRecord.model_validate(row)) for row in rows]

    def cancel(self, job_id: str) -> bool:
        """Move a non-final job to `cancelled` (compare-and-set); False if already final.

        The worker sees the state at its next step and stops. Raises ``JobNotFound``.
        """
        moved = self._ready().transition(
            job_id,
            JobStatus.CANCELLED,
            error="cancelled by user",
            error_kind="cancelled",
        )
        if not moved and self.store.get(job_id) is None:
            raise JobNotFound(job_id)
        if moved:
            log.info("cancelled job %s", job_id)
        return moved

    # -- reads ------------------------------------------------------------------------
    def load(self, job_id: str) -> JobRecord:
        """The job's record now; raises ``JobNotFound``."""
        record = self._ready().get(job_id)
        if record is None:
            raise JobNotFound(job_id)
        return record

    def get_job(self, job_id: str) -> Job:
        """A handle on an existing job; raises ``JobNotFound`` (a ``KeyError``)."""
        return Job(job_id, self, self.load(job_id))

    def list_jobs(
        self,
        status: JobStatus | str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[JobRecord]:
        """Records newest first, optionally only ``status`` and created at/after ``since``."""
        if status is not None:
            try:
                status = JobStatus(status)
            except ValueError:
                allowed = ", ".join(s.value for s in JobStatus)
                raise RequestInvalid(
                    f"status={status!r}: must be one of {allowed}",
                    [{"field": "status", "value": status, "reason": f"must be one of {allowed}"}],
                ) from None
        return self._ready().list(status=status, since=since, limit=limit)

    def _same_job(self, existing: JobRecord, payload: dict[str, Any], key: str) -> Job:
        if existing.request != payload:
            reason = f"already used for a different request (job {existing.id})"
            raise RequestInvalid(
                f"idempotency_key={key!r}: {reason}",
                [{"field": "idempotency_key", "value": key, "reason": reason}],
            )
        log.info("idempotency key matched job %s; nothing sent", existing.id)
        return Job(existing.id, self, existing)

    def close(self) -> None:
        self.broker.close()


def _engine(url: str) -> Engine:
    """The producer's engine: on PostgreSQL one without ``pool_pre_ping``.

    The pre-ping is a round trip before every checkout: a third of a single ``enqueue``.
    A connection the server dropped is caught by ``Producer._insert`` instead (reads just
    fail once and work again). Both live in ``producer.db``'s registry.
    """
    if make_url(url).get_backend_name() != "postgresql":
        return get_engine(url)
    return get_tuned_engine("producer", url, pool_pre_ping=False, pool_recycle=1800)


def _check_idempotency_key(key: Any) -> None:
    reason = None
    if not isinstance(key, str) or not key.strip():
        reason = "must be a non-blank string"
    elif len(key) > IDEMPOTENCY_KEY_MAX:
        reason = f"must be at most {IDEMPOTENCY_KEY_MAX} characters"
    if reason:
        raise RequestInvalid(
            f"idempotency_key: {reason}",
            [{"field": "idempotency_key", "value": key, "reason": reason}],
        )


def _error_line(error: Mapping[str, Any]) -> str:
    if error.get("value") is None:
        return f"{error['field']}: {error['reason']}"
    return f"{error['field']}={error['value']!r}: {error['reason']}"


# -- the default producer and the module-level API -------------------------------------------
_default: Producer | None = None
_default_lock = threading.Lock()


def configure(
    settings: Settings | None = None,
    *,
    store: JobStore | None = None,
    broker: Broker | None = None,
) -> Producer:
    """Replace the default producer the module functions use; returns it."""
    global _default
    producer = Producer(settings, store=store, broker=broker)
    with _default_lock:
        old, _default = _default, producer
    if old is not None:
        old.close()
    return producer


def default_producer() -> Producer:
    """The process-wide producer, built from ``get_settings()`` on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Producer()
        return _default


def _forget_after_fork() -> None:
    # A child must not share the parent's database or broker connections.
    global _default, _default_lock
    _default = None
    _default_lock = threading.Lock()
    forget_engines()


os.register_at_fork(after_in_child=_forget_after_fork)


def enqueue(request: RequestLike, *, idempotency_key: str | None = None) -> Job:
    """Validate ``request``, record it `queued` and send it to the workers; see ``Producer``."""
    return default_producer().enqueue(request, idempotency_key=idempotency_key)


def enqueue_many(requests: Iterable[RequestLike]) -> list[Job]:
    """Enqueue many requests in one transaction with pipelined sends; see ``Producer``."""
    return default_producer().enqueue_many(requests)


def get_job(job_id: str) -> Job:
    """A handle on job ``job_id``; raises ``JobNotFound`` (a ``KeyError``) if unknown."""
    return default_producer().get_job(job_id)


def list_jobs(
    status: JobStatus | str | None = None, since: datetime | None = None, limit: int = 100
) -> list[JobRecord]:
    """Job records newest first, filtered by ``status`` and ``since``."""
    return default_producer().list_jobs(status=status, since=since, limit=limit)


def cancel(job_id: str) -> bool:
    """Cancel a non-final job; False if it already ended; ``JobNotFound`` if unknown."""
    return default_producer().cancel(job_id)
