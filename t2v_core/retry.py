"""Where a retried job resumes: one pure decision, used by ``retry()`` / ``t2v retry`` and by
the worker's automatic retry of parked jobs.

The money rule: resume from the last paid step. A job with a provider id is fetched again
(or its known output links downloaded again), never resubmitted. A job is submitted again
only if no provider id was ever known (the provider never took it, or refused it), and
then its ``submit_count`` records it. Nothing here touches a database or a broker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from t2v_core.errors import RetryRefused
from t2v_core.names import TASK_DOWNLOAD, TASK_POLL, TASK_SUBMIT
from t2v_core.records import JobRecord
from t2v_core.states import JobStatus

# ModelsLab deletes outputs 24 h after they are made: past this, a parked job is failed.
OUTPUT_TTL = timedelta(hours=24)

# error_kind values that mean the provider itself ended the render or refused the request.
PROVIDER_ENDED = frozenset({"generation_failed"})
# A lost answer may have been paid: a plain retry must not submit it again.
MAYBE_PAID = frozenset({"submit_unknown"})


@dataclass(frozen=True)
class RetryPlan:
    """Move the job to ``to`` (from ``expect``) writing ``values``, then send ``task``."""

    to: JobStatus
    task: str
    expect: JobStatus
    note: str
    values: dict[str, Any] = field(default_factory=dict)


def output_expiry(rec: JobRecord) -> datetime | None:
    """When the provider no longer keeps this job's output (None: nothing was paid)."""
    if rec.expires_at is not None:
        return rec.expires_at
    seen = rec.downloading_at or rec.processing_at or rec.submitting_at
    if rec.provider_id is None and not rec.source_urls:
        return None
    return None if seen is None else seen + OUTPUT_TTL


def plan_retry(rec: JobRecord, *, now: datetime, deadline_seconds: float) -> RetryPlan:
    """What retrying ``rec`` does now; raises ``RetryRefused`` with the reason."""
    status = rec.status
    if status is JobStatus.PARKED or (status is JobStatus.FAILED and _paid_and_ours(rec)):
        expiry = output_expiry(rec)
        if expiry is not None and now >= expiry:
            raise RetryRefused(
                f"job {rec.id}: the provider no longer keeps its output (24 h after "
                f"{(expiry - OUTPUT_TTL).isoformat()})",
                rec.id,
            )
        if rec.source_urls:
            return RetryPlan(
                to=JobStatus.DOWNLOADING,
                task=TASK_DOWNLOAD,
                expect=status,
                note=f"retry: downloading the paid output again ({rec.error_kind})",
                values={"download_attempts": 0, "next_check_at": now},
            )
        if rec.provider_id:
            return RetryPlan(
                to=JobStatus.PROCESSING,
                task=TASK_POLL,
                expect=status,
                note=f"retry: fetching provider job {rec.provider_id} again ({rec.error_kind})",
                values={
                    "next_check_at": now,
                    "deadline_at": now + timedelta(seconds=deadline_seconds),
                },
            )
        raise RetryRefused(
            f"job {rec.id} is {status.value} without a provider id or output", rec.id
        )
    if status is JobStatus.FAILED:
        if rec.provider_id:
            raise RetryRefused(
                f"job {rec.id}: the provider ended render {rec.provider_id} as failed; a "
                "retry would pay for a new render: enqueue a new job instead",
                rec.id,
            )
        if rec.error_kind in MAYBE_PAID:
            raise RetryRefused(
                f"job {rec.id}: the answers to its submits were lost and may have been paid "
                "for; enqueue a new job if you want to pay for another render",
                rec.id,
            )
        return RetryPlan(
            to=JobStatus.QUEUED,
            task=TASK_SUBMIT,
            expect=status,
            note=f"retry: submitting again; the provider never took it ({rec.error_kind})",
            values={"next_check_at": now + timedelta(seconds=60), "deadline_at": None},
        )
    if status is JobStatus.CANCELLED:
        raise RetryRefused(f"job {rec.id} was cancelled; enqueue it again instead", rec.id)
    if status is JobStatus.SUCCEEDED:
        raise RetryRefused(f"job {rec.id} already succeeded", rec.id)
    raise RetryRefused(f"job {rec.id} is still {status.value}: nothing to retry", rec.id)


def _paid_and_ours(rec: JobRecord) -> bool:
    """A `failed` job with a paid render that our own (older) limits failed, not the
    provider: it is brought back as a parked one would be."""
    has_render = bool(rec.provider_id or rec.source_urls)
    return has_render and rec.error_kind not in PROVIDER_ENDED | {"output_expired"}
