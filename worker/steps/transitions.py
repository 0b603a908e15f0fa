"""The moves the steps share, each one compare-and-set on the row plus its effects on the
account's slots and the broker. Reconcile and the webhook receiver use them too.

    fail                 the provider said so (or nothing was paid): `failed`, slot freed
    park                 our own limit stopped a paid render: `parked`, retried later
    resume               a parked job's retry: fetch or download again, never resubmit
    poll_known_render    a provider id is known: poll it, never submit again
    provider_finished    the provider is done with the render: download it, or fail it
    record_provider_id   keep every paid render's id on the record
    reschedule           the same step again after a countdown
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from t2v_core.errors import RetryRefused
from t2v_core.names import TASK_DOWNLOAD, TASK_POLL
from t2v_core.problems import ErrorKind, Problem
from t2v_core.records import JobRecord, JobRow
from t2v_core.retry import OUTPUT_TTL, output_expiry, plan_retry
from t2v_core.states import ACTIVE_STATES, JobStatus
from worker import instruments
from worker.modelslab import ProviderResult, ProviderStatus
from worker.steps.runtime import Runtime
from worker.steps.slots import leave_line, release_slot, render_hold

log = logging.getLogger("t2v.worker")


def fail(
    rt: Runtime, rec: JobRecord, problem: Problem, *, only_from: JobStatus | None = None
) -> bool:
    """Move the job to `failed` for ``problem``; free its slot. False if it had moved on.

    Only for what the provider said (a failed render, a refused request) or for jobs
    nothing was paid for; our own limits on a paid render ``park`` it instead.
    ``only_from``: fail it only if it is still in that state (reconcile's view may be stale).
    """
    moved = rt.store.transition(
        rec.id,
        JobStatus.FAILED,
        expect=ACTIVE_STATES if only_from is None else [only_from],
        next_check_at=None,
        **problem.row_values(),
    )
    if moved:
        log.warning("job %s failed (%s)", rec.id, problem)
        instruments.job_failed(rec.model_effective, problem.kind.value)
    release_slot(rt, rec.id)
    return moved


def park(rt: Runtime, rec: JobRecord, problem: Problem) -> bool:
    """Our own limit stopped a paid render: hold it in `parked` for retry, never throw it
    away. Retried automatically with backoff until its output's 24 h are over."""
    backoff = min(
        rt.settings.parked_retry_max, rt.settings.parked_retry_base * (2 ** min(rec.park_count, 20))
    )
    expires = rec.expires_at or output_expiry(rec) or (rt.now() + OUTPUT_TTL)
    rendering = rec.status is JobStatus.PROCESSING
    if rendering:
        # The provider may still be rendering it (and counting it): keep the slot until
        # the automatic retry looks again (set first: a crash must not lose it).
        rt.limiter.hold(rec.id, render_hold(0.0, backoff))
    moved = rt.store.transition(
        rec.id,
        JobStatus.PARKED,
        expect=[rec.status],
        park_count=JobRow.park_count + 1,
        expires_at=expires,
        next_check_at=min(rt.at(backoff), expires),
        **problem.row_values(),
    )
    if moved:
        log.warning(
            "job %s parked (%s); retried in %.0fs or by `t2v retry`", rec.id, problem, backoff
        )
        instruments.job_parked(rec.model_effective, problem.kind.value)
        if not rendering:
            release_slot(rt, rec.id)
    return moved


def resume(rt: Runtime, rec: JobRecord) -> bool:
    """Retry a parked (or old-style failed) job from its last paid step; fail it once its
    output has expired. Used by reconcile's automatic retry."""
    try:
        plan = plan_retry(rec, now=rt.now(), deadline_seconds=rt.settings.poll_deadline_seconds)
    except RetryRefused as exc:
        if rec.status is JobStatus.PARKED:
            fail(
                rt,
                rec,
                Problem(
                    ErrorKind.OUTPUT_EXPIRED,
                    f"{exc}; it was parked: {rec.error}",
                    {"parked_as": rec.error_kind},
                ),
                only_from=JobStatus.PARKED,
            )
        return False
    if rt.store.transition(
        rec.id,
        plan.to,
        expect=[plan.expect],
        error=plan.note,
        retry_count=JobRow.retry_count + 1,
        **plan.values,
    ):
        log.info("job %s: %s", rec.id, plan.note)
        rt.schedule(plan.task, rec.id, 0)
        return True
    return False


def poll_known_render(rt: Runtime, rec: JobRecord, **values: Any) -> bool:
    """Never a second submission while a provider id is known: move the job (queued, or
    in doubt in `submitting`) to `processing` and poll that render. It leaves the line,
    and whoever is next in it is woken."""
    leave_line(rt, rec.id)
    if rt.store.transition(
        rec.id,
        JobStatus.PROCESSING,
        expect=[rec.status],
        next_check_at=rt.now(),
        deadline_at=rt.at(rt.policy.deadline),
        **values,
    ):
        rt.schedule(TASK_POLL, rec.id, 0)
        return True
    return False


def provider_finished(
    rt: Runtime,
    rec: JobRecord,
    result: ProviderResult,
    *,
    seen_late: float | None = None,
    download: Callable[[Runtime, JobRecord], None] | None = None,
    **values: Any,
) -> bool:
    """If the provider is done with the job (success or failed), move it on; True if so.

    Success moves it to `downloading` (``values`` are written in the same statement) and
    frees its account slot at once: the provider no longer counts it as queued.
    ``seen_late``: at most how long ago the render may have finished (for the metrics).
    ``download``: the download of a claimed job (``download_claimed``), to run it here and
    now instead of sending its task: the move to `downloading` is its claim.
    """
    since = rec.submitting_at or rec.created_at
    rendered = (rt.now() - since).total_seconds()
    if result.status is ProviderStatus.SUCCESS and result.outputs:
        move = {"source_urls": result.outputs, "expires_at": rt.now() + OUTPUT_TTL, **values}
        claimed: JobRecord | None = None
        if download is None:
            moved = rt.store.transition(
                rec.id, JobStatus.DOWNLOADING, expect=[rec.status], next_check_at=rt.now(), **move
            )
        else:
            # The move is the download's claim too: its lease, this try counted.
            claimed = rt.store.move_record(
                rec.id,
                JobStatus.DOWNLOADING,
                expect=[rec.status],
                next_check_at=rt.at(rt.settings.download_claim_lease),
                download_attempts=JobRow.download_attempts + 1,
                **move,
            )
            moved = claimed is not None
        # The render is over whatever became of the row (cancelled meanwhile?): the
        # provider no longer counts it, so neither do we.
        release_slot(rt, rec.id)
        if moved:
            instruments.render_finished(rec.model_effective, rendered, seen_late)
            if download is None or claimed is None:
                rt.schedule(TASK_DOWNLOAD, rec.id, 0)
            else:
                download(rt, claimed)
        return True
    if result.status is ProviderStatus.FAILED:
        if rec.status is JobStatus.PROCESSING:
            instruments.render_finished(rec.model_effective, rendered, seen_late)
        fail(
            rt,
            rec,
            Problem(
                ErrorKind.GENERATION_FAILED,
                result.message or "generation failed",
                {"provider_id": result.provider_id or rec.provider_id},
            ),
        )
        return True
    return False


def record_provider_id(rt: Runtime, rec: JobRecord, provider_id: str | None) -> None:
    """Keep ``provider_id`` on the record; a second paid render is noted, never lost."""
    if provider_id and not rt.store.set_provider_id(rec.id, provider_id):
        current = rt.store.get(rec.id)
        if current is not None and current.provider_id != provider_id:
            log.warning(
                "job %s: a second render %s was paid for (the job has %s)",
                rec.id,
                provider_id,
                current.provider_id,
            )
            rt.store.update_if(
                rec.id, list(JobStatus), error=f"a second paid render {provider_id} was not used"
            )


def reschedule(rt: Runtime, rec: JobRecord, task: str, delay: float, **values: Any) -> None:
    """Send ``task`` again in ``delay`` seconds, if the row is still where it was."""
    if rt.store.update_if(rec.id, [rec.status], next_check_at=rt.at(delay), **values):
        rt.schedule(task, rec.id, delay)
