"""The poll step: fetch the render's status, then move on, park, or look again later.

    claim the poll, reading the row (a duplicate drops; cancelled while rendering? a quiet
    poll) → fetch → ``decide_poll`` (pure) → apply: finished (then the download, here if
    this worker serves downloads) / parked / again in N s

Money rules here: a fetch always comes first, even past the deadline (a render finished
in the last interval was paid for); our own limits park a render, never fail it; the
slot's lease is stretched past every next look.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, replace

from t2v_core.errors import PermanentError, TransientError
from t2v_core.names import TASK_DOWNLOAD, TASK_POLL
from t2v_core.problems import ErrorKind, Problem
from t2v_core.records import JobRecord, JobRow
from t2v_core.states import JobStatus
from worker import instruments
from worker.modelslab import ProviderResult, ProviderStatus
from worker.policy import PollPolicy, next_poll_delay, retry_delay
from worker.steps.download import download_claimed
from worker.steps.runtime import Runtime
from worker.steps.slots import may_be_rendering, release_slot, render_hold, stretched_deadline
from worker.steps.transitions import park, provider_finished, reschedule

log = logging.getLogger("t2v.worker")


@dataclass(frozen=True)
class Finished:
    """The provider is done with the render (succeeded with outputs, or failed)."""

    result: ProviderResult


@dataclass(frozen=True)
class Again:
    """Look again in ``delay`` seconds, holding the slot for ``hold``."""

    delay: float
    hold: float
    fetch_failed: bool = False


PollDecision = Finished | Again | Problem


def poll_step(rt: Runtime, job_id: str) -> None:
    # The claim is the read: one statement on the hot path. It leaves ``updated_at`` alone,
    # so the record still says when the render was last looked at.
    rec = rt.store.claim_record(
        job_id,
        JobStatus.PROCESSING,
        lease=rt.settings.claim_lease,
        slack=rt.settings.claim_slack,
        touch=False,
        poll_count=JobRow.poll_count + 1,
    )
    if rec is None:
        # Not processing, or a duplicate of a poll already taken, or one that came early;
        # a job cancelled while rendering still gets its quiet polls.
        other = rt.store.get(job_id)
        if (
            other is not None
            and other.status is JobStatus.CANCELLED
            and other.provider_id
            and may_be_rendering(other)
        ):
            quiet_poll(rt, other)
        return
    looked_before = rec.updated_at  # the last time anyone looked at this render
    assert rec.provider_id is not None
    elapsed, policy = elapsed_and_policy(rt, rec)
    outcome: ProviderResult | TransientError | PermanentError
    try:
        outcome = rt.client.fetch(rec.provider_id)
    except (TransientError, PermanentError) as exc:
        outcome = exc
    if isinstance(outcome, ProviderResult) and not outcome.is_final:
        policy = rt.polling(policy, rec.eta_seconds)  # look again sooner if jobs wait
    decision = decide_poll(
        rec,
        outcome,
        elapsed=elapsed,
        policy=policy,
        rng=rt.rng,
        transient_base=rt.settings.transient_base_delay,
        cap=rt.settings.poll_max_first_delay,
    )
    instruments.fetched(fetch_outcome(outcome))
    if isinstance(decision, Finished):
        seen_late = (rt.now() - looked_before).total_seconds()
        # Downloaded in this task when this worker serves downloads too: a task per job
        # fewer (its message, its dispatch, its claim).
        inline = download_claimed if TASK_DOWNLOAD in rt.inline else None
        provider_finished(rt, rec, decision.result, seen_late=seen_late, download=inline)
    elif isinstance(decision, Problem):
        park(rt, rec, decision)
    else:
        rt.limiter.hold(rec.id, decision.hold)
        if decision.fetch_failed:
            log.info("job %s: fetch failed (%s); again in %.1fs", job_id, outcome, decision.delay)
            reschedule(rt, rec, TASK_POLL, decision.delay, retry_count=JobRow.retry_count + 1)
        else:
            reschedule(rt, rec, TASK_POLL, decision.delay)


def fetch_outcome(outcome: ProviderResult | TransientError | PermanentError) -> str:
    """The ``t2v_fetches_total`` label of a fetch: running, finished, failed or error."""
    if not isinstance(outcome, ProviderResult):
        return "error"
    if outcome.status is ProviderStatus.SUCCESS:
        return "finished"
    if outcome.status is ProviderStatus.FAILED:
        return "failed"
    return "running"


def decide_poll(
    rec: JobRecord,
    outcome: ProviderResult | TransientError | PermanentError,
    *,
    elapsed: float,
    policy: PollPolicy,
    rng: random.Random,
    transient_base: float,
    cap: float,
) -> PollDecision:
    """What a fetch's outcome means for a job ``elapsed`` seconds into its render (pure)."""
    limit = policy.deadline
    if isinstance(outcome, PermanentError):
        # A 4xx on fetch (a proxy's 401, a 404 for an id we know) says nothing about the
        # render we paid for: hold it for retry.
        return Problem(
            ErrorKind.FETCH_REFUSED,
            f"provider refused the fetch: {outcome}",
            {"provider_id": rec.provider_id},
        )
    if isinstance(outcome, TransientError):
        if elapsed >= limit:
            return Problem(
                ErrorKind.DEADLINE,
                f"not finished after {limit:.0f}s (deadline); last fetch: {outcome}",
                {"deadline_s": round(limit), "elapsed_s": round(elapsed)},
            )
        delay = retry_delay(
            rec.retry_count + 1,
            transient_base,
            policy.max_delay,
            rng,
            retry_after=outcome.retry_after,
        )
        delay = min(delay, max(limit - elapsed, 0.0), cap)
        return Again(delay, render_hold(limit - elapsed, delay), fetch_failed=True)
    result = outcome
    if (
        result.status is ProviderStatus.SUCCESS and result.outputs
    ) or result.status is ProviderStatus.FAILED:
        return Finished(result)
    unknown = result.status is not ProviderStatus.PROCESSING
    if unknown:
        log.warning("job %s: provider status %r treated as not finished", rec.id, result.raw_status)
    next_delay = next_poll_delay(
        elapsed=elapsed, eta=rec.eta_seconds, attempt=rec.poll_count, policy=policy, rng=rng
    )
    if next_delay is None:
        return Problem(
            ErrorKind.STATUS_UNKNOWN if unknown else ErrorKind.DEADLINE,
            f"not finished after {limit:.0f}s (deadline); provider status {result.raw_status!r}",
            {
                "deadline_s": round(limit),
                "elapsed_s": round(elapsed),
                "provider_status": result.raw_status,
            },
        )
    return Again(next_delay, render_hold(limit - elapsed, next_delay))


def elapsed_and_policy(rt: Runtime, rec: JobRecord) -> tuple[float, PollPolicy]:
    """Seconds since the render began, and the poll policy with its deadline stretched by
    the provider's eta."""
    started = rec.processing_at or rec.created_at
    elapsed = (rt.now() - started).total_seconds()
    policy = rt.policy
    return elapsed, replace(policy, deadline=stretched_deadline(policy.deadline, rec.eta_seconds))


def quiet_poll(rt: Runtime, rec: JobRecord) -> None:
    """A cancelled job the provider may still be rendering: fetch once at its eta, then
    back off; when the render is over (or the deadline passed) give its slot back. Nothing
    is downloaded."""
    if not rt.store.claim(
        rec.id,
        JobStatus.CANCELLED,
        lease=rt.settings.claim_lease,
        slack=rt.settings.claim_slack,
        poll_count=JobRow.poll_count + 1,
    ):
        return
    assert rec.provider_id is not None
    start = rec.processing_at or rec.submitting_at or rec.created_at
    elapsed = (rt.now() - start).total_seconds()
    policy = rt.policy
    over = elapsed >= policy.deadline
    if not over:
        try:
            over = rt.client.fetch(rec.provider_id).is_final
        except PermanentError:
            over = True
        except TransientError:
            over = False
    delay = (
        None
        if over
        else next_poll_delay(
            elapsed=elapsed, eta=rec.eta_seconds, attempt=rec.poll_count, policy=policy, rng=rt.rng
        )
    )
    if delay is None:
        if rt.store.update_if(rec.id, [JobStatus.CANCELLED], next_check_at=None):
            release_slot(rt, rec.id)
        return
    rt.limiter.hold(rec.id, render_hold(policy.deadline - elapsed, delay))
    reschedule(rt, rec, TASK_POLL, delay)
