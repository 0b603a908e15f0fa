"""The module-level API: ``enqueue``, ``get_job``, ``cancel``... on one default ``Producer``.

The default producer is built lazily from ``get_settings()`` on first use;
``configure(settings=..., store=..., broker=...)`` replaces it (tests, embedding apps), or
build a ``Producer`` of your own. ``producer/__init__.py`` exports these functions.

This module must never hold more than the one default producer, nor let a forked child
use its parent's: after a fork the child forgets it, and every engine, and builds afresh.
Every function here only delegates: the rules live in ``Producer`` (``api.py``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from producer.api import Producer, RequestLike
from producer.broker import Broker
from producer.job import Job
from t2v_core.db import forget_engines
from t2v_core.fairness import JobOptions
from t2v_core.records import JobRecord
from t2v_core.settings import Settings
from t2v_core.states import JobStatus
from t2v_core.store import JobStore

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


def enqueue(
    request: RequestLike,
    *,
    idempotency_key: str | None = None,
    priority: str = "normal",
    tenant: str | None = None,
    labels: Mapping[str, str] | None = None,
    on_done: str | None = None,
    on_done_queue: str | None = None,
    callback_url: str | None = None,
) -> Job:
    """Validate ``request``, record it `queued` and send it to the workers; see ``Producer``."""
    return default_producer().enqueue(
        request,
        idempotency_key=idempotency_key,
        priority=priority,
        tenant=tenant,
        labels=labels,
        on_done=on_done,
        on_done_queue=on_done_queue,
        callback_url=callback_url,
    )


def enqueue_many(
    requests: Iterable[RequestLike],
    *,
    idempotency_keys: Sequence[str | None] | None = None,
    priority: str = "normal",
    tenant: str | None = None,
    labels: Mapping[str, str] | None = None,
    options: Sequence[JobOptions | None] | None = None,
    on_done: str | None = None,
    on_done_queue: str | None = None,
    callback_url: str | None = None,
) -> list[Job]:
    """Enqueue many requests in one transaction with pipelined sends, optionally one
    idempotency key per request (all or nothing); see ``Producer.enqueue_many``."""
    return default_producer().enqueue_many(
        requests,
        idempotency_keys=idempotency_keys,
        priority=priority,
        tenant=tenant,
        labels=labels,
        options=options,
        on_done=on_done,
        on_done_queue=on_done_queue,
        callback_url=callback_url,
    )


def get_job(job_id: str) -> Job:
    """A handle on job ``job_id``; raises ``JobNotFound`` (a ``KeyError``) if unknown."""
    return default_producer().get_job(job_id)


def list_jobs(
    status: JobStatus | str | None = None,
    since: datetime | None = None,
    limit: int = 100,
    *,
    tenant: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> list[JobRecord]:
    """Job records newest first, filtered by ``status``, ``since``, ``tenant``, ``labels``."""
    return default_producer().list_jobs(
        status=status, since=since, limit=limit, tenant=tenant, labels=labels
    )


def cancel(job_id: str) -> bool:
    """Cancel a non-final job; False if it already ended; ``JobNotFound`` if unknown."""
    return default_producer().cancel(job_id)


def retry(job_id: str) -> Job:
    """Resume a parked or failed job from its last paid step; see ``Producer.retry``."""
    return default_producer().retry(job_id)
