"""``Producer.retry`` and ``retry_many``: resume a `parked` (or `failed`) job from its last
paid step, as ``t2v_core.retry.plan_retry`` decides.

This module must never resubmit a job whose provider id is known (``plan_retry`` refuses or
plans a fetch) and never send a message for a row it did not move.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from producer.job import Job
from t2v_core.errors import JobNotFound, RetryRefused
from t2v_core.records import JobRow
from t2v_core.retry import plan_retry
from t2v_core.states import JobStatus

if TYPE_CHECKING:
    from producer.api import Producer

log = logging.getLogger("producer.api")


def retry_job(producer: Producer, job_id: str) -> Job:
    """Resume a `parked` (or `failed`) job from its last paid step; return its handle.

    A job with a provider id is fetched again (or its output downloaded again), never
    resubmitted; a job is submitted again only if no provider id was ever known, and
    its ``submit_count`` records it. Raises ``RetryRefused`` with the reason (still
    running, cancelled, succeeded, its output expired, or a retry would pay for a new
    render), ``JobNotFound``, ``EnqueueError`` (moved, message not sent: re-driven).
    """
    store = producer._ready()
    record = store.get(job_id)
    if record is None:
        raise JobNotFound(job_id)
    plan = plan_retry(
        record, now=store.now(), deadline_seconds=producer.settings.poll_deadline_seconds
    )
    if not store.transition(
        job_id,
        plan.to,
        expect=[plan.expect],
        error=plan.note,
        retry_count=JobRow.retry_count + 1,
        **plan.values,
    ):
        now = store.get(job_id)
        state = now.status.value if now else "gone"
        raise RetryRefused(f"job {job_id} moved on meanwhile (now {state})", job_id)
    log.info("job %s: %s", job_id, plan.note)
    producer.broker.send(plan.task, [job_id])
    return Job(job_id, producer)


def retry_jobs(
    producer: Producer,
    *,
    status: Iterable[JobStatus | str] = (JobStatus.PARKED,),
    since: datetime | None = None,
    limit: int = 1000,
) -> tuple[list[Job], list[RetryRefused]]:
    """``retry`` every job in ``status`` (created at/after ``since``); returns the jobs
    resumed and the refusals (each says why)."""
    wanted = [JobStatus(s) for s in status]
    resumed: list[Job] = []
    refused: list[RetryRefused] = []
    for record in producer._ready().list(status=wanted, since=since, limit=limit):
        try:
            resumed.append(retry_job(producer, record.id))
        except RetryRefused as exc:
            refused.append(exc)
    return resumed, refused
