"""The submit step: take an account slot, send the request once, record what came back.

    load the row → not queued? leave the line (or give the turn on) → a provider id is
    known? poll it instead → take a slot (or wait in line at no cost) → `submitting`
    (counted before sending) → still holding the slot? → send → record the answer

Money rules here: a known provider id is never submitted again; a submit whose answer was
lost is never repeated at once (``outcome_unknown``: the job stays `submitting` until a
webhook adopts its render or reconcile resubmits it after ``submit_unknown_wait``,
recorded in ``unknown_submits``); the provider id and the move to `processing` are one
statement.
"""

from __future__ import annotations

import logging
from typing import Any

from t2v_core.errors import PermanentError, RateLimited, TransientError
from t2v_core.names import TASK_POLL, TASK_SUBMIT
from t2v_core.problems import ErrorKind, Problem
from t2v_core.records import JobRecord, JobRow
from t2v_core.retry import OUTPUT_TTL
from t2v_core.states import JobStatus
from worker import instruments
from worker.modelslab import ProviderResult, ProviderStatus, SubmitOutcomeUnknown
from worker.policy import next_poll_delay, retry_delay
from worker.steps.runtime import Runtime
from worker.steps.slots import (
    WAITING_RECHECK_SECONDS,
    acquire,
    leave_line,
    lost_answer_hold,
    may_be_rendering,
    release_slot,
    render_hold,
    stretched_deadline,
    wake_line,
)
from worker.steps.transitions import (
    fail,
    poll_known_render,
    provider_finished,
    record_provider_id,
)

log = logging.getLogger("t2v.worker")


def submit_step(rt: Runtime, job_id: str) -> None:
    rec = rt.store.get(job_id)
    if rec is None:
        log.warning("submit: no job %s", job_id)
        release_slot(rt, job_id)  # a row that is gone must not hold a place in line
        return
    if rec.status is not JobStatus.QUEUED:
        if may_be_rendering(rec):
            # Not waiting any more (in doubt, or adopted by a webhook): leave the line
            # but keep the slot; a lost answer's hold may just have ended: wake the line.
            leave_line(rt, job_id)
        else:
            # Cancelled or failed while waiting, or done: give its turn to the next job.
            release_slot(rt, job_id)
        return
    if rec.provider_id:
        poll_known_render(rt, rec)
        return
    got = acquire(rt, rec)
    if not got:
        # Waits in line at no cost; a freed slot (or reconcile) sends this task again.
        recheck = WAITING_RECHECK_SECONDS if got is False else 5.0
        rt.store.update_if(job_id, [JobStatus.QUEUED], next_check_at=rt.at(recheck))
        log.info("job %s waits for an account slot", job_id)
        return
    if not rt.store.transition(
        job_id,
        JobStatus.SUBMITTING,
        expect=[JobStatus.QUEUED],
        submit_count=JobRow.submit_count + 1,
        # If this worker dies mid-request, the outcome is unknown until this time.
        next_check_at=rt.at(rt.settings.submit_unknown_wait),
    ):
        return  # another copy of this message got there first
    if not rt.limiter.holds(job_id):
        # The slot went meanwhile (a racing copy gave it back, Redis lost the line): send
        # nothing; back in line, as if this attempt never happened.
        if rt.store.transition(
            job_id,
            JobStatus.QUEUED,
            expect=[JobStatus.SUBMITTING],
            submit_count=JobRow.submit_count - 1,
            next_check_at=rt.at(60),
        ):
            rt.schedule(TASK_SUBMIT, job_id, 0)
        return
    # What the move wrote, without reading the row again (a read per submit is ~10 % of
    # a job's CPU): the steps below look at its state and its submit count.
    rec = rec.model_copy(
        update={"status": JobStatus.SUBMITTING, "submit_count": rec.submit_count + 1}
    )
    count_taken(rt, rec)
    try:
        result = rt.client.submit(submit_payload(rec, rt.settings.webhook_url))
    except SubmitOutcomeUnknown as exc:
        outcome_unknown(rt, rec, str(exc))
        return
    except RateLimited as exc:
        instruments.provider_rate_limited()
        if exc.queue_full:
            # The account is full at the provider: if we held fewer slots than it allows,
            # someone else uses the key; use what it accepted from now on.
            limit = rt.limiter.queue_full(
                rec.id, provider_max=exc.provider_max, retry_after=exc.retry_after or 30.0
            )
            log.warning(
                "job %s: provider queue full (%s); effective limit now %d", rec.id, exc, limit
            )
        else:
            release_slot(rt, rec.id)  # the spam filter: nothing renders, the slot is free
        back_to_queue(rt, rec, exc, counts=False)
        return
    except TransientError as exc:
        # Not taken (a 500/503 is the origin refusing): nothing renders, free the slot.
        release_slot(rt, rec.id)
        back_to_queue(rt, rec, exc, counts=True)
        return
    except PermanentError as exc:
        fail(rt, rec, Problem(ErrorKind.PERMANENT, f"provider refused the request: {exc}"))
        return
    after_submit(rt, rec, result)


def count_taken(rt: Runtime, rec: JobRecord) -> None:
    """The job took a slot and is about to be sent: its slot wait, and on its first
    submission (``submit_count`` 1, once per job: the move to `submitting` is a
    compare-and-set) the enqueued counter and the time it spent queued."""
    now = rt.now()
    instruments.slot_taken((now - (rec.queued_at or rec.created_at)).total_seconds())
    if rec.submit_count == 1 and not rec.unknown_submits:
        instruments.job_enqueued(rec.model_effective, (now - rec.created_at).total_seconds())


def submit_payload(rec: JobRecord, webhook_url: str | None) -> dict[str, Any]:
    """What is sent: the request as validated, the effective model, our job id as the
    ``track_id`` (how a webhook names the job), the webhook URL when there is one. The
    key is added by the client, never stored."""
    payload = dict(rec.request)
    payload["model_id"] = rec.model_effective
    payload["track_id"] = rec.id
    if webhook_url:
        payload["webhook"] = webhook_url
    return payload


def outcome_unknown(rt: Runtime, rec: JobRecord, why: str) -> None:
    """The provider may have accepted (and charged) it: do not send it again now. The job
    stays `submitting`; a webhook naming it adopts the provider's id, otherwise reconcile
    resubmits after submit_unknown_wait (bounded by max_unknown_resubmits). Its slot stays
    held only while such a render could run (the hold taken before sending); at its end
    the line is woken."""
    rt.store.update_if(
        rec.id,
        [JobStatus.SUBMITTING],
        error=f"submit outcome unknown: {why}",
        retry_count=JobRow.retry_count + 1,
    )
    instruments.submit_answer_lost(rec.model_effective)
    hold = lost_answer_hold(rt, rec.model_effective)
    rt.limiter.hold(rec.id, hold)
    rt.schedule(TASK_SUBMIT, rec.id, rt.capped(hold + 1.0))
    log.warning(
        "job %s: submit outcome unknown (%s); not resubmitting before %ss",
        rec.id,
        why,
        rt.settings.submit_unknown_wait,
    )


def back_to_queue(rt: Runtime, rec: JobRecord, exc: TransientError, *, counts: bool) -> None:
    """The provider did not take the request: try again later, unless tries are used up.

    A 429 (not ``counts``) is waiting for room at the provider, not a failure: it does not
    use up tries.
    """
    if counts and rec.submit_count >= rt.settings.submit_max_attempts:
        fail(
            rt,
            rec,
            Problem(
                ErrorKind.TRANSIENT,
                f"submit failed {rec.submit_count} times; last: {exc}",
                {"submits": rec.submit_count},
            ),
        )
        return
    delay = rt.capped(
        retry_delay(
            rec.submit_count,
            rt.settings.transient_base_delay,
            rt.settings.poll_max_delay,
            rt.rng,
            retry_after=exc.retry_after,
        )
    )
    if rt.store.transition(
        rec.id,
        JobStatus.QUEUED,
        expect=[JobStatus.SUBMITTING],
        retry_count=JobRow.retry_count + 1,
        error=str(exc)[:2000],
        next_check_at=rt.at(delay + 60),
    ):
        log.info("job %s: submit not taken (%s); again in %.1fs", rec.id, exc, delay)
        rt.schedule(TASK_SUBMIT, rec.id, delay)


def after_submit(rt: Runtime, rec: JobRecord, result: ProviderResult) -> None:
    """The provider answered: record its id and eta with the move to `processing` (one
    statement), hold the slot for the render, schedule the first poll."""
    finished = result.status is ProviderStatus.SUCCESS and result.outputs
    if not result.provider_id and not finished:
        # It answered but gave no id to poll: as good as a lost answer (it may be paid).
        outcome_unknown(rt, rec, f"provider answered {result.raw_status!r} without an id")
        return
    instruments.paid_submission(rec.model_effective)
    slot_back, contended = rt.limiter.after_accept(rec.model_effective, result.eta)
    if slot_back:
        wake_line(rt)  # the provider takes one more at once again
    if provider_finished(
        rt, rec, result, provider_id=result.provider_id, future_links=result.future_links or None
    ):
        record_provider_id(rt, rec, result.provider_id)
        return
    assert result.provider_id is not None
    policy = rt.polling(rt.policy, result.eta, contended=contended)
    delay = next_poll_delay(elapsed=0.0, eta=result.eta, attempt=0, policy=policy, rng=rt.rng)
    delay = policy.min_delay if delay is None else delay
    # Hold the slot for the render before recording it (a crash in between must not leave
    # a render running on the short pre-submit hold), as long as the deadline stretched by
    # the provider's eta.
    rt.limiter.hold(rec.id, render_hold(stretched_deadline(policy.deadline, result.eta), delay))
    # The provider's id and the move are one statement: a crash can never leave a job
    # `submitting` with its id recorded (which would be resubmitted).
    if rt.store.transition(
        rec.id,
        JobStatus.PROCESSING,
        expect=[JobStatus.SUBMITTING],
        provider_id=result.provider_id,
        eta_seconds=result.eta,
        future_links=result.future_links or None,
        error=None,
        expires_at=rt.now() + OUTPUT_TTL,
        deadline_at=rt.at(policy.deadline),
        next_check_at=rt.at(delay),
    ):
        log.info(
            "job %s submitted as %s, eta %ss; first poll in %.1fs",
            rec.id,
            result.provider_id,
            result.eta,
            delay,
        )
        rt.schedule(TASK_POLL, rec.id, delay)
        return
    # Moved meanwhile (cancelled, or a webhook adopted another render): what we paid for
    # must not be lost from the record.
    record_provider_id(rt, rec, result.provider_id)
    now = rt.store.get(rec.id)
    cancelled = (
        now is not None
        and now.status is JobStatus.CANCELLED
        and now.provider_id == result.provider_id
    )
    # Cancelled while the submit was in flight: it renders anyway. Keep its slot until the
    # render can be over (quiet polls), download nothing.
    if cancelled and rt.store.update_if(
        rec.id,
        [JobStatus.CANCELLED],
        next_check_at=rt.at(delay),
        eta_seconds=result.eta,
        deadline_at=rt.at(policy.deadline),
    ):
        rt.schedule(TASK_POLL, rec.id, delay)
