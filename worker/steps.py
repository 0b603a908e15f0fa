"""What each task does, as plain functions over a ``Runtime`` of passed-in dependencies.

Every step loads the row, checks its state, does one thing, and moves the state forward
by compare-and-set. A copy of a message that arrives twice, late, or for a job already
finished or cancelled finds the row elsewhere and does nothing. A step never sleeps: when
something is not ready it asks ``rt.schedule`` to run it again with a countdown.

Money rules:
- a submit whose outcome is unknown (the answer was lost after the request left) is never
  repeated at once. The job stays `submitting` until ``submit_unknown_wait`` has passed;
  then ``reconcile`` resubmits it, and ``unknown_submits``/``submit_count`` record it;
- never a submission while a provider id is known; the id and the move to `processing`
  are written in one statement;
- a paid render is never thrown away by our own limits (deadline, download tries, a link
  that never serves a video, a refused fetch): the job is ``park``-ed, and ``resume``
  fetches or downloads it again. Only the provider's own `failed` fails a paid job;
- an account slot is held exactly while the provider may be rendering for us (see
  ``may_be_rendering``), and every freed slot wakes the oldest waiting job.

This module imports no Celery: tests drive it with real services and a recording
``schedule``.
"""

from __future__ import annotations

import logging
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from t2v_core.errors import PermanentError, RateLimited, RetryRefused, TransientError
from t2v_core.names import TASK_DOWNLOAD, TASK_POLL, TASK_SUBMIT, rebuild_lock_key
from t2v_core.records import JobRecord, JobRow, JobStore, OutputRecord, utcnow
from t2v_core.retry import OUTPUT_TTL, output_expiry, plan_retry
from t2v_core.states import ACTIVE_STATES, JobStatus
from worker.download import LinkNotReady, LinkServesPage, download_to_storage
from worker.limiter import AccountLimiter, LineLost
from worker.modelslab import ModelsLabClient, ProviderResult, ProviderStatus, SubmitOutcomeUnknown
from worker.policy import PollPolicy, next_poll_delay, retry_delay
from worker.probe import make_poster, probe_video
from worker.settings import WorkerSettings
from worker.storage import Storage, object_key, poster_key

log = logging.getLogger("t2v.worker")

Schedule = Callable[[str, str, float], None]

# How long a job that found no free account slot waits before reconcile looks at it again
# (a freed slot normally wakes it much sooner).
WAITING_RECHECK_SECONDS = 600.0
# A lost answer's slot hold when no eta was ever seen for the model (docs: 3-10 min).
LOST_HOLD_UNKNOWN = 600.0
# How long a rendering job's slot outlives its next expected look at it.
RENDER_HOLD_MARGIN = 300.0


@dataclass
class Runtime:
    """Everything a step needs, built once per worker process and passed in."""

    settings: WorkerSettings
    store: JobStore
    client: ModelsLabClient
    limiter: AccountLimiter
    storage: Storage
    http: requests.Session
    schedule: Schedule
    rng: random.Random = field(default_factory=random.Random)
    now: Callable[[], datetime] = utcnow

    @property
    def policy(self) -> PollPolicy:
        return PollPolicy.from_settings(self.settings)


def _in(seconds: float, rt: Runtime) -> datetime:
    return rt.now() + timedelta(seconds=seconds)


def _capped(rt: Runtime, delay: float) -> float:
    """No countdown past the first-poll cap: a server's huge Retry-After must not outlive
    the broker's visibility timeout (the start-up check relies on this bound)."""
    return min(delay, rt.settings.poll_max_first_delay)


# -- slots --------------------------------------------------------------------------------
def may_be_rendering(rec: JobRecord) -> bool:
    """True while the provider may be rendering for this job: its account slot stays held.

    A cancelled job keeps its slot until its render can be over: its quiet polls are
    pending (``next_check_at``) and nothing was seen finished (no download began).
    """
    if rec.status in (JobStatus.SUBMITTING, JobStatus.PROCESSING):
        return True
    if rec.downloading_at is not None or rec.next_check_at is None:
        return False
    if rec.provider_id is None:
        # Cancelled while its submit may be in flight or its answer lost: the provider may
        # be rendering it. The slot's own short hold bounds how long it is kept.
        return (rec.status is JobStatus.CANCELLED and rec.submitting_at is not None
                and rec.processing_at is None)
    # Parked while the provider was still rendering (deadline, a refused fetch): the
    # provider counts it until the render ends, so the slot stays held until it resumes.
    return rec.status in (JobStatus.CANCELLED, JobStatus.PARKED)


def release_slot(rt: Runtime, job_id: str | None) -> None:
    """Free ``job_id``'s account slot and wake the oldest jobs waiting for one."""
    _wake(rt, rt.limiter.release(job_id))


def wake_line(rt: Runtime) -> None:
    """Send the submit tasks of the oldest waiting jobs that fit in the free slots now."""
    _wake(rt, rt.limiter.release(None))


def _wake(rt: Runtime, job_ids: list[str]) -> None:
    for waiting_id in job_ids:
        log.info("job %s takes a freed account slot", waiting_id)
        rt.schedule(TASK_SUBMIT, waiting_id, 0)


def lost_answer_hold(rt: Runtime, model: str) -> float:
    """How long a submit whose answer was lost keeps its slot: as long as its render could
    still be running (``lost_submit_hold``, else 1.5 x the longest recent eta + 30 s), and
    never less than one whole request's timeouts."""
    learned = rt.settings.lost_submit_hold is None
    return _hold_for(rt, rt.limiter.recent_etas(model) if learned else [])


def _hold_for(rt: Runtime, etas: list[float]) -> float:
    floor = rt.settings.connect_timeout + rt.settings.read_timeout + 30.0
    if rt.settings.lost_submit_hold is not None:
        return max(floor, rt.settings.lost_submit_hold)
    learned = 1.5 * max(etas) + 30.0 if etas else LOST_HOLD_UNKNOWN
    return max(floor, min(learned, rt.settings.poll_deadline_seconds))


def stretched_deadline(deadline: float, eta: float | None) -> float:
    """The poll deadline, stretched to 1.5 x the provider's eta when it expects longer: a
    job we paid for is not parked before it could possibly be done."""
    return max(deadline, 1.5 * (eta or 0.0))


def render_hold(deadline_left: float, next_check: float) -> float:
    """The slot lease of a job at the provider: until its (stretched) poll deadline, and at
    least past its next look at it, plus a margin."""
    return max(deadline_left, next_check, 0.0) + RENDER_HOLD_MARGIN


def rebuild_line(rt: Runtime) -> bool:
    """Redis lost the slot line: write it again from the table. True if this call did it.

    Holders are the jobs that may be at the provider, waiters the queued ones (oldest
    first). One rebuilder at a time (a Redis lock); the others find the line ready.
    """
    redis = rt.limiter.redis
    lock = rebuild_lock_key(rt.limiter.prefix)
    if not redis.set(lock, "1", nx=True, ex=60):
        return False
    try:
        if rt.limiter.is_ready():
            return False
        holders: list[tuple[str, float]] = []
        waiters: list[tuple[str, float]] = []
        now = rt.now()
        members = list(rt.store.line_members())
        # The etas Redis remembered are gone with it: the table's recent ones stand in.
        lost_hold = _hold_for(rt, [m.eta_seconds for m in members if m.eta_seconds][-50:])
        for member in members:
            if member.status is JobStatus.QUEUED:
                waiters.append((member.id, member.created_at.timestamp()))
            elif member.status is JobStatus.SUBMITTING:
                since = (now - (member.submitting_at or now)).total_seconds()
                left = lost_hold - since
                if left > 0:
                    holders.append((member.id, left))
            else:
                # Processing, or cancelled/parked while the provider may still render it.
                deadline_left = ((member.deadline_at - now).total_seconds()
                                 if member.deadline_at else rt.settings.poll_deadline_seconds)
                if member.eta_seconds and member.submitting_at:
                    since = (now - member.submitting_at).total_seconds()
                    deadline_left = max(deadline_left,
                                        stretched_deadline(0.0, member.eta_seconds) - since)
                next_left = ((member.next_check_at - now).total_seconds()
                             if member.next_check_at else 0.0)
                holders.append((member.id, render_hold(deadline_left, next_left)))
        rt.limiter.rebuild(holders, waiters)
        log.warning("slot line rebuilt from the table: %d holding, %d waiting",
                    len(holders), len(waiters))
    finally:
        redis.delete(lock)
    wake_line(rt)
    return True


def _acquire(rt: Runtime, rec: JobRecord) -> bool | None:
    """Take a slot for ``rec`` (None: the line is being rebuilt by someone else)."""
    hold = lost_answer_hold(rt, rec.model_effective)
    for _ in range(2):
        try:
            return rt.limiter.acquire(rec.id, lease=hold, created=rec.created_at.timestamp())
        except LineLost:
            rebuild_line(rt)
    return None


# -- shared endings ---------------------------------------------------------------------
def fail(rt: Runtime, rec: JobRecord, message: str, kind: str,
         *, only_from: JobStatus | None = None) -> bool:
    """Move the job to `failed` with ``message``; free its slot. False if it had moved on.

    Only for what the provider said (a failed render, a refused request) or for jobs
    nothing was paid for; our own limits on a paid render ``park`` it instead.
    ``only_from``: fail it only if it is still in that state (reconcile's view may be stale).
    """
    moved = rt.store.transition(
        rec.id, JobStatus.FAILED, expect=ACTIVE_STATES if only_from is None else [only_from],
        error=message[:2000], error_kind=kind, next_check_at=None,
    )
    if moved:
        log.warning("job %s failed (%s): %s", rec.id, kind, message)
    release_slot(rt, rec.id)
    return moved


def park(rt: Runtime, rec: JobRecord, message: str, kind: str) -> bool:
    """Our own limit stopped a paid render: hold it in `parked` for retry, never throw it
    away. Retried automatically with backoff until its output's 24 h are over."""
    backoff = min(rt.settings.parked_retry_max,
                  rt.settings.parked_retry_base * (2 ** min(rec.park_count, 20)))
    expires = rec.expires_at or output_expiry(rec) or (rt.now() + OUTPUT_TTL)
    rendering = rec.status is JobStatus.PROCESSING
    if rendering:
        # The provider may still be rendering it (and counting it): keep the slot until
        # the automatic retry looks again (set first: a crash must not lose it).
        rt.limiter.hold(rec.id, render_hold(0.0, backoff))
    moved = rt.store.transition(
        rec.id, JobStatus.PARKED, expect=[rec.status], error=message[:2000], error_kind=kind,
        park_count=JobRow.park_count + 1, expires_at=expires,
        next_check_at=min(_in(backoff, rt), expires),
    )
    if moved:
        log.warning("job %s parked (%s): %s; retried in %.0fs or by `t2v retry`",
                    rec.id, kind, message, backoff)
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
            fail(rt, rec, f"{exc}; it was parked: {rec.error}", "output_expired",
                 only_from=JobStatus.PARKED)
        return False
    if rt.store.transition(rec.id, plan.to, expect=[plan.expect], error=plan.note,
                           retry_count=JobRow.retry_count + 1, **plan.values):
        log.info("job %s: %s", rec.id, plan.note)
        rt.schedule(plan.task, rec.id, 0)
        return True
    return False


def poll_known_render(rt: Runtime, rec: JobRecord, **values: Any) -> bool:
    """Never a second submission while a provider id is known: move the job (queued, or
    in doubt in `submitting`) to `processing` and poll that render. It leaves the line,
    and whoever is next in it is woken."""
    _wake(rt, rt.limiter.leave_line(rec.id))
    if rt.store.transition(rec.id, JobStatus.PROCESSING, expect=[rec.status],
                           next_check_at=rt.now(), deadline_at=_in(rt.policy.deadline, rt),
                           **values):
        rt.schedule(TASK_POLL, rec.id, 0)
        return True
    return False


def _reschedule(rt: Runtime, rec: JobRecord, task: str, delay: float, **values: Any) -> None:
    if rt.store.update_if(rec.id, [rec.status], next_check_at=_in(delay, rt), **values):
        rt.schedule(task, rec.id, delay)


# -- submit ------------------------------------------------------------------------------
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
            _wake(rt, rt.limiter.leave_line(job_id))
        else:
            # Cancelled or failed while waiting, or done: give its turn to the next job.
            release_slot(rt, job_id)
        return
    if rec.provider_id:
        poll_known_render(rt, rec)
        return
    got = _acquire(rt, rec)
    if not got:
        # Waits in line at no cost; a freed slot (or reconcile) sends this task again.
        recheck = WAITING_RECHECK_SECONDS if got is False else 5.0
        rt.store.update_if(job_id, [JobStatus.QUEUED], next_check_at=_in(recheck, rt))
        log.info("job %s waits for an account slot", job_id)
        return
    if not rt.store.transition(
        job_id, JobStatus.SUBMITTING, expect=[JobStatus.QUEUED],
        submit_count=JobRow.submit_count + 1,
        # If this worker dies mid-request, the outcome is unknown until this time.
        next_check_at=_in(rt.settings.submit_unknown_wait, rt),
    ):
        return  # another copy of this message got there first
    if not rt.limiter.holds(job_id):
        # The slot went meanwhile (a racing copy gave it back, Redis lost the line): send
        # nothing; back in line, as if this attempt never happened.
        if rt.store.transition(job_id, JobStatus.QUEUED, expect=[JobStatus.SUBMITTING],
                               submit_count=JobRow.submit_count - 1, next_check_at=_in(60, rt)):
            rt.schedule(TASK_SUBMIT, job_id, 0)
        return
    rec = rt.store.get(job_id)
    assert rec is not None
    payload = dict(rec.request)
    payload["model_id"] = rec.model_effective
    payload["track_id"] = rec.id
    if rt.settings.webhook_url:
        payload["webhook"] = rt.settings.webhook_url
    try:
        result = rt.client.submit(payload)
    except SubmitOutcomeUnknown as exc:
        _outcome_unknown(rt, rec, str(exc))
        return
    except RateLimited as exc:
        if exc.queue_full:
            # The account is full at the provider: if we held fewer slots than it allows,
            # someone else uses the key; use what it accepted from now on.
            limit = rt.limiter.queue_full(rec.id, provider_max=exc.provider_max,
                                          retry_after=exc.retry_after or 30.0)
            log.warning("job %s: provider queue full (%s); effective limit now %d",
                        rec.id, exc, limit)
        else:
            release_slot(rt, rec.id)  # the spam filter: nothing renders, the slot is free
        _back_to_queue(rt, rec, exc, counts=False)
        return
    except TransientError as exc:
        # Not taken (a 500/503 is the origin refusing): nothing renders, free the slot.
        release_slot(rt, rec.id)
        _back_to_queue(rt, rec, exc, counts=True)
        return
    except PermanentError as exc:
        fail(rt, rec, f"provider refused the request: {exc}", "permanent")
        return
    _after_submit(rt, rec, result)


def _outcome_unknown(rt: Runtime, rec: JobRecord, why: str) -> None:
    """The provider may have accepted (and charged) it: do not send it again now. The job
    stays `submitting`; a webhook naming it adopts the provider's id, otherwise reconcile
    resubmits after submit_unknown_wait (bounded by max_unknown_resubmits). Its slot stays
    held only while such a render could run (the hold taken before sending); at its end
    the line is woken."""
    rt.store.update_if(rec.id, [JobStatus.SUBMITTING], error=f"submit outcome unknown: {why}",
                       retry_count=JobRow.retry_count + 1)
    hold = lost_answer_hold(rt, rec.model_effective)
    rt.limiter.hold(rec.id, hold)
    rt.schedule(TASK_SUBMIT, rec.id, _capped(rt, hold + 1.0))
    log.warning("job %s: submit outcome unknown (%s); not resubmitting before %ss",
                rec.id, why, rt.settings.submit_unknown_wait)


def _back_to_queue(rt: Runtime, rec: JobRecord, exc: TransientError, *, counts: bool) -> None:
    """The provider did not take the request: try again later, unless tries are used up.

    A 429 (not ``counts``) is waiting for room at the provider, not a failure: it does not
    use up tries.
    """
    if counts and rec.submit_count >= rt.settings.submit_max_attempts:
        fail(rt, rec, f"submit failed {rec.submit_count} times; last: {exc}", "transient")
        return
    delay = _capped(rt, retry_delay(rec.submit_count, rt.settings.transient_base_delay,
                                    rt.settings.poll_max_delay, rt.rng,
                                    retry_after=exc.retry_after))
    if rt.store.transition(rec.id, JobStatus.QUEUED, expect=[JobStatus.SUBMITTING],
                           retry_count=JobRow.retry_count + 1, error=str(exc)[:2000],
                           next_check_at=_in(delay + 60, rt)):
        log.info("job %s: submit not taken (%s); again in %.1fs", rec.id, exc, delay)
        rt.schedule(TASK_SUBMIT, rec.id, delay)


def _provider_finished(rt: Runtime, rec: JobRecord, result: ProviderResult,
                       **values: Any) -> bool:
    """If the provider is done with the job (success or failed), move it on; True if so.

    Success moves it to `downloading` (``values`` are written in the same statement) and
    frees its account slot at once: the provider no longer counts it as queued.
    """
    if result.status is ProviderStatus.SUCCESS and result.outputs:
        moved = rt.store.transition(rec.id, JobStatus.DOWNLOADING, expect=[rec.status],
                                    source_urls=result.outputs, next_check_at=rt.now(),
                                    expires_at=rt.now() + OUTPUT_TTL, **values)
        # The render is over whatever became of the row (cancelled meanwhile?): the
        # provider no longer counts it, so neither do we.
        release_slot(rt, rec.id)
        if moved:
            rt.schedule(TASK_DOWNLOAD, rec.id, 0)
        return True
    if result.status is ProviderStatus.FAILED:
        fail(rt, rec, result.message or "generation failed", "generation_failed")
        return True
    return False


def _after_submit(rt: Runtime, rec: JobRecord, result: ProviderResult) -> None:
    finished = result.status is ProviderStatus.SUCCESS and result.outputs
    if not result.provider_id and not finished:
        # It answered but gave no id to poll: as good as a lost answer (it may be paid).
        _outcome_unknown(rt, rec, f"provider answered {result.raw_status!r} without an id")
        return
    if rt.limiter.accepted():
        wake_line(rt)  # the provider takes one more at once again
    if result.eta:
        rt.limiter.note_eta(rec.model_effective, result.eta)
    if _provider_finished(rt, rec, result, provider_id=result.provider_id,
                          future_links=result.future_links or None):
        _record_provider_id(rt, rec, result.provider_id)
        return
    assert result.provider_id is not None
    policy = rt.policy
    delay = next_poll_delay(elapsed=0.0, eta=result.eta, attempt=0, policy=policy, rng=rt.rng)
    delay = policy.min_delay if delay is None else delay
    # Hold the slot for the render before recording it (a crash in between must not leave
    # a render running on the short pre-submit hold), as long as the deadline stretched by
    # the provider's eta.
    rt.limiter.hold(rec.id, render_hold(stretched_deadline(policy.deadline, result.eta), delay))
    # The provider's id and the move are one statement: a crash can never leave a job
    # `submitting` with its id recorded (which would be resubmitted).
    if rt.store.transition(
        rec.id, JobStatus.PROCESSING, expect=[JobStatus.SUBMITTING],
        provider_id=result.provider_id, eta_seconds=result.eta,
        future_links=result.future_links or None, error=None,
        expires_at=rt.now() + OUTPUT_TTL,
        deadline_at=_in(policy.deadline, rt), next_check_at=_in(delay, rt),
    ):
        log.info("job %s submitted as %s, eta %ss; first poll in %.1fs",
                 rec.id, result.provider_id, result.eta, delay)
        rt.schedule(TASK_POLL, rec.id, delay)
        return
    # Moved meanwhile (cancelled, or a webhook adopted another render): what we paid for
    # must not be lost from the record.
    _record_provider_id(rt, rec, result.provider_id)
    now = rt.store.get(rec.id)
    cancelled = (now is not None and now.status is JobStatus.CANCELLED
                 and now.provider_id == result.provider_id)
    # Cancelled while the submit was in flight: it renders anyway. Keep its slot until the
    # render can be over (quiet polls), download nothing.
    if cancelled and rt.store.update_if(rec.id, [JobStatus.CANCELLED],
                                        next_check_at=_in(delay, rt), eta_seconds=result.eta,
                                        deadline_at=_in(policy.deadline, rt)):
        rt.schedule(TASK_POLL, rec.id, delay)


def _record_provider_id(rt: Runtime, rec: JobRecord, provider_id: str | None) -> None:
    if provider_id and not rt.store.set_provider_id(rec.id, provider_id):
        current = rt.store.get(rec.id)
        if current is not None and current.provider_id != provider_id:
            log.warning("job %s: a second render %s was paid for (the job has %s)",
                        rec.id, provider_id, current.provider_id)
            rt.store.update_if(rec.id, list(JobStatus),
                               error=f"a second paid render {provider_id} was not used")


# -- poll --------------------------------------------------------------------------------
def poll_step(rt: Runtime, job_id: str) -> None:
    rec = rt.store.get(job_id)
    if rec is None:
        return
    if rec.status is JobStatus.CANCELLED and rec.provider_id and may_be_rendering(rec):
        _quiet_poll(rt, rec)
        return
    if rec.status is not JobStatus.PROCESSING:
        return
    if not rt.store.claim(job_id, JobStatus.PROCESSING, lease=rt.settings.claim_lease,
                          slack=rt.settings.claim_slack, poll_count=JobRow.poll_count + 1):
        return  # a duplicate of a poll already taken, or one that came early
    rec = rt.store.get(job_id)
    assert rec is not None and rec.provider_id is not None
    elapsed, policy = _elapsed_and_policy(rt, rec)
    # Fetch first, even past the deadline: a job that finished meanwhile was paid for.
    try:
        result = rt.client.fetch(rec.provider_id)
    except TransientError as exc:
        if elapsed >= policy.deadline:
            park(rt, rec, f"not finished after {policy.deadline:.0f}s (deadline); last fetch: "
                 f"{exc}", "deadline")
            return
        delay = retry_delay(rec.retry_count + 1, rt.settings.transient_base_delay,
                            policy.max_delay, rt.rng, retry_after=exc.retry_after)
        delay = _capped(rt, min(delay, max(policy.deadline - elapsed, 0.0)))
        rt.limiter.hold(rec.id, render_hold(policy.deadline - elapsed, delay))
        log.info("job %s: fetch failed (%s); again in %.1fs", job_id, exc, delay)
        _reschedule(rt, rec, TASK_POLL, delay, retry_count=JobRow.retry_count + 1)
        return
    except PermanentError as exc:
        # A 4xx on fetch (a proxy's 401, a 404 for an id we know) says nothing about the
        # render we paid for: hold it for retry.
        park(rt, rec, f"provider refused the fetch: {exc}", "fetch_refused")
        return
    if _provider_finished(rt, rec, result):
        return
    unknown = result.status is not ProviderStatus.PROCESSING
    if unknown:
        log.warning("job %s: provider status %r treated as not finished", job_id,
                    result.raw_status)
    next_delay = next_poll_delay(elapsed=elapsed, eta=rec.eta_seconds, attempt=rec.poll_count,
                                 policy=policy, rng=rt.rng)
    if next_delay is None:
        kind = "status_unknown" if unknown else "deadline"
        park(rt, rec, f"not finished after {policy.deadline:.0f}s (deadline); provider status "
             f"{result.raw_status!r}", kind)
        return
    rt.limiter.hold(rec.id, render_hold(policy.deadline - elapsed, next_delay))
    _reschedule(rt, rec, TASK_POLL, next_delay)


def _elapsed_and_policy(rt: Runtime, rec: JobRecord) -> tuple[float, PollPolicy]:
    started = rec.processing_at or rec.created_at
    elapsed = (rt.now() - started).total_seconds()
    policy = rt.policy
    return elapsed, replace(policy, deadline=stretched_deadline(policy.deadline,
                                                                rec.eta_seconds))


def _quiet_poll(rt: Runtime, rec: JobRecord) -> None:
    """A cancelled job the provider may still be rendering: fetch once at its eta, then
    back off; when the render is over (or the deadline passed) give its slot back. Nothing
    is downloaded."""
    if not rt.store.claim(rec.id, JobStatus.CANCELLED, lease=rt.settings.claim_lease,
                          slack=rt.settings.claim_slack, poll_count=JobRow.poll_count + 1):
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
    delay = None if over else next_poll_delay(elapsed=elapsed, eta=rec.eta_seconds,
                                              attempt=rec.poll_count, policy=policy,
                                              rng=rt.rng)
    if delay is None:
        if rt.store.update_if(rec.id, [JobStatus.CANCELLED], next_check_at=None):
            release_slot(rt, rec.id)
        return
    rt.limiter.hold(rec.id, render_hold(policy.deadline - elapsed, delay))
    _reschedule(rt, rec, TASK_POLL, delay)


# -- download ----------------------------------------------------------------------------
def download_step(rt: Runtime, job_id: str) -> None:
    rec = rt.store.get(job_id)
    if rec is None or rec.status is not JobStatus.DOWNLOADING:
        return
    # Not the task time limit (600 s): a worker killed mid-download must not hold the job
    # that long. A slow download outliving the lease may be sent again; both copies write
    # the same storage keys and only one moves the row (compare-and-set).
    if not rt.store.claim(job_id, JobStatus.DOWNLOADING, lease=rt.settings.download_claim_lease,
                          slack=rt.settings.claim_slack,
                          download_attempts=JobRow.download_attempts + 1):
        return
    rec = rt.store.get(job_id)
    assert rec is not None
    if rec.download_attempts > rt.settings.download_max_attempts:
        # The earlier tries never came back (their workers died mid-download): stop here.
        park(rt, rec, f"download tried {rec.download_attempts - 1} times without finishing "
             "(workers stopped mid-download?)", "download")
        return
    try:
        outputs = [_store_output(rt, rec, i, url) for i, url in enumerate(rec.source_urls or [])]
    except LinkNotReady as exc:
        waited = (rt.now() - (rec.downloading_at or rt.now())).total_seconds()
        if waited >= rt.settings.download_not_found_window:
            if isinstance(exc, LinkServesPage):
                park(rt, rec, f"output link still serves no video after {waited:.0f}s: "
                     f"{exc}", "link_not_video")
            else:
                park(rt, rec, f"output link still missing after {waited:.0f}s: {exc}",
                     "link_missing")
            return
        _retry_download(rt, rec, exc.retry_after)
        return
    except PermanentError as exc:
        # Not a video, too big, a private address: our rules; the render stays paid for.
        park(rt, rec, f"download refused: {exc}", "download_refused")
        return
    except Exception as exc:  # noqa: BLE001 - transient errors, storage config, time limits
        # Anything else (storage misconfigured, a soft time limit on a slow link, a bug) is
        # retried within the same bounded number of attempts, never re-driven for ever.
        if rec.download_attempts >= rt.settings.download_max_attempts:
            park(rt, rec, f"download failed {rec.download_attempts} times; last: "
                 f"{type(exc).__name__}: {exc}", "download")
            return
        log.warning("job %s: download attempt %d failed: %s: %s", rec.id,
                    rec.download_attempts, type(exc).__name__, exc)
        _retry_download(rt, rec, getattr(exc, "retry_after", None))
        return
    if not outputs:
        park(rt, rec, "provider reported success without output links", "provider")
        return
    if rt.store.transition(rec.id, JobStatus.SUCCEEDED, expect=[JobStatus.DOWNLOADING],
                           outputs=[o.model_dump() for o in outputs], error=None,
                           next_check_at=None):
        log.info("job %s succeeded: %s", rec.id, ", ".join(o.storage_uri for o in outputs))


def _retry_download(rt: Runtime, rec: JobRecord, retry_after: float | None) -> None:
    delay = retry_delay(rec.download_attempts, rt.settings.transient_base_delay,
                        rt.settings.poll_max_delay, rt.rng, retry_after=retry_after)
    _reschedule(rt, rec, TASK_DOWNLOAD, _capped(rt, delay), retry_count=JobRow.retry_count + 1)


def _expected_type(rec: JobRecord, url: str) -> str:
    asked = str(rec.request.get("output_type") or "")
    if asked in ("mp4", "gif"):
        return asked
    return "gif" if url.lower().split("?")[0].endswith(".gif") else "mp4"


def _store_output(rt: Runtime, rec: JobRecord, index: int, url: str) -> OutputRecord:
    ext = _expected_type(rec, url)

    def inspect(path: Path) -> dict[str, Any]:
        if not rt.settings.probe_videos:
            return {}
        try:
            info = probe_video(path)
        except Exception as exc:  # noqa: BLE001 - any probe failure means "not a video"
            raise TransientError(f"downloaded file is not a playable video: {exc}") from exc
        meta: dict[str, Any] = {
            "duration": info.duration, "frames": info.frames, "width": info.width,
            "height": info.height, "fps": info.fps,
        }
        with tempfile.TemporaryDirectory(prefix="t2v-poster-") as tmp:
            poster = Path(tmp) / "poster.jpg"
            try:
                make_poster(path, poster)
                meta["poster_uri"] = rt.storage.put_file(
                    poster_key(rec.id, index), poster, content_type="image/jpeg")
            except Exception as exc:  # noqa: BLE001 - a missing poster must not lose the video
                log.warning("job %s: no poster for output %d: %s", rec.id, index, exc)
        return meta

    result = download_to_storage(
        url, rt.storage, object_key(rec.id, index, ext), session=rt.http,
        max_bytes=rt.settings.download_max_bytes,
        allowed_hosts=rt.settings.download_allowed_hosts, expected_type=ext,
        connect_timeout=rt.settings.connect_timeout, read_timeout=rt.settings.read_timeout,
        inspect=inspect,
    )
    return OutputRecord(
        index=index, source_url=url, storage_uri=result.uri, bytes=result.bytes,
        sha256=result.sha256, content_type=result.content_type, **(result.meta or {}),
    )
