"""Re-drive jobs from the table when their messages were lost.

Redis may lose every message (it keeps nothing on disk in many setups); the table does
not. Run periodically by Celery beat, one run at a time (a Redis lock), this finds active
jobs whose next step is overdue and sends that step again. Duplicates are harmless: each
step claims its job by compare-and-set and a second copy drops.

It also rebuilds the account's slot line from the table when Redis lost it, resolves
submits whose outcome is unknown (after ``submit_unknown_wait``: back to `queued`,
recorded, resubmitted), retries parked jobs when their backoff is over (failing them once
their output's 24 h are over), keeps the quiet polls of cancelled renders going, wakes
jobs waiting for an account slot when slots are free, frees slots held by jobs that are
no longer at the provider, and stops a job re-driven ``max_redrives`` times without moving
(a poison job must not loop forever): a paid one is parked, an unpaid one failed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from t2v_core.names import (
    CALLBACK_EPOCH_KEY,
    RECONCILE_LAST_RUN_KEY,
    RECONCILE_LOCK_KEY,
    TASK_CALLBACK,
    TASK_DOWNLOAD,
    TASK_POLL,
    TASK_SUBMIT,
    redrive_key,
)
from t2v_core.problems import ErrorKind, Problem
from t2v_core.records import JobRecord, JobRow
from t2v_core.states import ACTIVE_STATES, JobStatus
from worker.leases import Lease
from worker.settings import WorkerSettings
from worker.steps.runtime import Runtime
from worker.steps.slots import (
    WAITING_RECHECK_SECONDS,
    hand_offs_through_the_queue,
    may_be_rendering,
    rebuild_line,
    release_slot,
    wake,
)
from worker.steps.transitions import fail, park, poll_known_render, resume

log = logging.getLogger("t2v.reconcile")

REDRIVES_TTL = 86400
# Queued rows looked at per reconcile run (ids only; the waiting ones in one UPDATE).
QUEUED_BATCH = 5000
# Slot holders looked at per run for a stale slot (reading 5,000 rows took 230 ms a run).
HOLDERS_BATCH = 1000
# ``on_done`` tasks marked due again per statement when Redis lost its data.
REPLAY_BATCH = 1000

_STEP_FOR = {
    JobStatus.QUEUED: TASK_SUBMIT,
    JobStatus.PROCESSING: TASK_POLL,
    JobStatus.DOWNLOADING: TASK_DOWNLOAD,
}


@dataclass
class ReconcileReport:
    redriven: int = 0
    resubmitted: int = 0
    woken: int = 0
    freed: int = 0
    failed: int = 0
    parked_retried: int = 0
    callbacks_resent: int = 0
    callbacks_replayed: int = 0
    rebuilt: bool = False
    skipped_locked: bool = False


def reconcile_lock_seconds(settings: WorkerSettings) -> float:
    """How long a reconcile run's lock lives unless the run renews it: three intervals,
    and never under 5 s. A worker killed mid-run (a host dying) stops reconcile for no
    longer than this; every re-drive is a compare-and-set, so the rare run that outlives
    its lock and overlaps the next does no harm."""
    return max(5.0, 3 * settings.reconcile_interval)


def reconcile(rt: Runtime, *, lock_seconds: float | None = None) -> ReconcileReport:
    report = ReconcileReport()
    redis = rt.limiter.redis
    # Beat is alive while this keeps moving (t2v_last_reconcile_timestamp_seconds).
    redis.set(RECONCILE_LAST_RUN_KEY, repr(rt.now().timestamp()))
    lease = Lease(
        redis,
        RECONCILE_LOCK_KEY,
        reconcile_lock_seconds(rt.settings) if lock_seconds is None else lock_seconds,
    )
    if not lease.take():
        report.skipped_locked = True
        log.debug("reconcile: another run holds the lock")
        return report
    try:
        with hand_offs_through_the_queue():
            if not rt.limiter.is_ready():
                report.rebuilt = rebuild_line(rt)
                lease.renew()
            _redrive_overdue(rt, report, lease)
            _free_stale_slots(rt, report)
            _resend_callbacks(rt, report)
            woken = rt.limiter.release(None)
            wake(rt, woken)
            report.woken += len(woken)
    finally:
        lease.drop()
    if (
        report.redriven
        or report.resubmitted
        or report.woken
        or report.freed
        or report.failed
        or report.parked_retried
        or report.rebuilt
        or report.callbacks_resent
        or report.callbacks_replayed
    ):
        log.info("reconcile: %s", report)
    return report


def _resend_callbacks(rt: Runtime, report: ReconcileReport) -> None:
    """Send again every completion callback still due after the grace (its message was
    lost, or its sender died); bounded by the index on ``callback_due_at``. When Redis has
    lost its data (the epoch key is gone), ``on_done`` tasks published within the replay
    window are sent again too: the wipe may have taken them before the application's
    worker did (receivers deduplicate by the task id). The key is set again only once the
    replay is over, so a run killed half-way leaves the rest to the next one; each batch is
    logged as it goes."""
    now = rt.now()
    redis = rt.limiter.redis
    if not redis.exists(CALLBACK_EPOCH_KEY):
        since = now - timedelta(seconds=rt.settings.callback_replay_window)
        while ids := rt.store.replay_on_done(since, now, limit=REPLAY_BATCH):
            for job_id in ids:
                rt.schedule(TASK_CALLBACK, job_id, 0)
            report.callbacks_replayed += len(ids)
            log.warning("reconcile: Redis lost its data; on_done replayed for %d jobs", len(ids))
        redis.set(CALLBACK_EPOCH_KEY, now.isoformat())
    cutoff = now - timedelta(seconds=rt.settings.reconcile_grace)
    for rec in rt.store.callbacks_due(cutoff):
        rt.schedule(TASK_CALLBACK, rec.id, 0)
        report.callbacks_resent += 1


def _redrive_overdue(rt: Runtime, report: ReconcileReport, lease: Lease) -> None:
    cutoff = rt.now() - timedelta(seconds=rt.settings.reconcile_grace)
    # Jobs in flight first: a backlog of jobs waiting for a slot must never starve them.
    in_flight = [
        s
        for s in ACTIVE_STATES
        if s not in (JobStatus.QUEUED, JobStatus.PARKED, JobStatus.SUBMITTING)
    ]
    for rec in rt.store.overdue(rt.now(), statuses=[JobStatus.SUBMITTING]):
        # Not after the re-drive grace: a lost answer waits `submit_unknown_wait`, as the
        # settings say, and never less than one whole request (so one in flight is not
        # taken for lost).
        due = unknown_submit_due(rt, rec)
        if rt.now() >= due:
            _resolve_unknown_submit(rt, rec, report)
        else:
            # Not due yet: say when, so the next ticks do not read it again until then.
            rt.store.update_if(rec.id, [JobStatus.SUBMITTING], next_check_at=due)
    lease.renew()
    for rec in rt.store.overdue(rt.now(), statuses=[JobStatus.PARKED]):
        # A parked render's backoff is over: fetch or download it again (or let it go
        # once the provider no longer keeps its output).
        if resume(rt, rec):
            report.parked_retried += 1
    lease.renew()
    for rec in rt.store.cancelled_rendering_due(cutoff):
        # A cancelled render whose quiet poll was lost: its slot must still come back.
        _redrive(rt, rec, report)
    lease.renew()
    for rec in rt.store.overdue(cutoff, statuses=in_flight):
        _redrive(rt, rec, report)
    lease.renew()
    _recheck_queued(rt, cutoff, report)


def _recheck_queued(rt: Runtime, cutoff: datetime, report: ReconcileReport) -> None:
    """Overdue queued jobs: those waiting in line for a slot are not stuck (their next
    look is pushed back, in one statement), the others are re-driven. Reads ids only,
    at most ``QUEUED_BATCH`` per call, and asks Redis about them in one round trip."""
    ids = rt.store.due_ids(JobStatus.QUEUED, cutoff, QUEUED_BATCH)
    if not ids:
        return
    pipe = rt.limiter.redis.pipeline(transaction=False)
    for job_id in ids:
        pipe.zscore(rt.limiter.waiting_key, job_id)
    in_line = pipe.execute()
    waiting = [job_id for job_id, score in zip(ids, in_line, strict=True) if score is not None]
    if waiting:
        recheck = rt.now() + timedelta(seconds=WAITING_RECHECK_SECONDS)
        rt.store.update_many_if(waiting, [JobStatus.QUEUED], next_check_at=recheck)
    lost = rt.store.get_many([j for j, s in zip(ids, in_line, strict=True) if s is None])
    for rec in lost.values():
        if rec.status is JobStatus.QUEUED:
            _redrive(rt, rec, report)


def unknown_submit_due(rt: Runtime, rec: JobRecord) -> datetime:
    """When a job still `submitting` is taken for a lost answer: ``submit_unknown_wait``
    after it was sent (its ``next_check_at``), and not before the request itself must have
    ended, with the re-drive grace as a stalled worker's margin."""
    started = rec.submitting_at or rec.updated_at
    request = rt.settings.connect_timeout + rt.settings.read_timeout + rt.settings.reconcile_grace
    return max(rec.next_check_at or started, started + timedelta(seconds=request))


def _resolve_unknown_submit(rt: Runtime, rec: JobRecord, report: ReconcileReport) -> None:
    """The answer to our submit never came back, and no webhook claimed the job.

    The money rule: we waited ``submit_unknown_wait`` (long enough for a generation that
    was accepted to finish and call back); now resubmit, at most ``max_unknown_resubmits``
    times, recorded on the row. Past that, fail the job rather than pay again.
    """
    if rec.provider_id:
        # The provider's id is known (an adopted webhook, an older version's crash between
        # two writes): poll it; never a second submission while an id is known.
        if poll_known_render(rt, rec, error=None):
            report.redriven += 1
        return
    if rec.unknown_submits >= rt.settings.max_unknown_resubmits:
        lost = Problem(
            ErrorKind.SUBMIT_UNKNOWN,
            f"the answers to {rec.unknown_submits + 1} submits were lost; not "
            f"resubmitting again so as not to pay twice (provider track_id {rec.id})",
            {"lost_answers": rec.unknown_submits + 1, "submits": rec.submit_count},
        )
        if fail(rt, rec, lost, only_from=JobStatus.SUBMITTING):
            report.failed += 1
        return
    note = (
        f"submit #{rec.submit_count} outcome unknown after "
        f"{rt.settings.submit_unknown_wait:.0f}s; resubmitting"
    )
    if rt.store.transition(
        rec.id,
        JobStatus.QUEUED,
        expect=[JobStatus.SUBMITTING],
        error=note,
        next_check_at=rt.now(),
        retry_count=JobRow.retry_count + 1,
        unknown_submits=JobRow.unknown_submits + 1,
    ):
        log.warning("job %s: %s", rec.id, note)
        rt.limiter.forget(rec.id)  # a lost answer's hold, if any is left, ends here
        rt.schedule(TASK_SUBMIT, rec.id, 0)
        report.resubmitted += 1


def progress_mark(rec: JobRecord) -> int:
    """A job's re-drives are counted per state and per this mark (the sum of the counts its
    steps bump when they run): a step that ran starts the backoff again, so a job whose
    workers keep dying is not re-driven ever more slowly; a step that never runs is stopped
    after ``max_redrives``. Steps bound their own tries (download attempts, the poll
    deadline, unknown-submit resubmits)."""
    return rec.submit_count + rec.poll_count + rec.download_attempts + rec.retry_count


def _redrive(rt: Runtime, rec: JobRecord, report: ReconcileReport) -> None:
    """Send the job's overdue step again, backing off; fail it if it never moves."""
    redis = rt.limiter.redis
    key = redrive_key(rec.id, rec.status.value, progress_mark(rec))
    count = int(redis.get(key) or 0)
    overdue = (rt.now() - (rec.next_check_at or rt.now())).total_seconds()
    # Re-drive after grace, 2×grace, 4×grace...: a step stuck behind a long queue gets
    # time to run before it is sent again (each copy is harmless, but not free).
    if overdue < rt.settings.reconcile_grace * (2**count):
        return
    if count >= rt.settings.max_redrives:
        why = Problem(
            ErrorKind.STUCK,
            f"{rec.status.value} step re-driven {count} times without running",
            {"redrives": count, "state": rec.status.value},
        )
        if rec.status in (JobStatus.PROCESSING, JobStatus.DOWNLOADING):
            stopped = park(rt, rec, why)  # paid for: hold it, never throw it away
        elif rec.status is JobStatus.CANCELLED:
            stopped = rt.store.update_if(rec.id, [JobStatus.CANCELLED], next_check_at=None)
            release_slot(rt, rec.id)
        else:
            stopped = fail(rt, rec, why, only_from=rec.status)
        if stopped:
            report.failed += 1
        redis.delete(key)
        return
    redis.set(key, count + 1, ex=REDRIVES_TTL)
    task = TASK_POLL if rec.status is JobStatus.CANCELLED else _STEP_FOR.get(rec.status)
    # Make the step due now so its claim succeeds; a late original copy then drops.
    if task is not None and rt.store.update_if(rec.id, [rec.status], next_check_at=rt.now()):
        rt.schedule(task, rec.id, 0)
        report.redriven += 1


def _free_stale_slots(rt: Runtime, report: ReconcileReport) -> None:
    """Free the slots of holders no longer at the provider (a release lost with its worker).
    At most ``HOLDERS_BATCH`` rows a run: every holder behind a plan of that size or less,
    a random sample of them above it, so a stale slot among N holders is found within about
    N / ``HOLDERS_BATCH`` runs on average, and a run stays bounded at 10,000 in flight."""
    holders = rt.limiter.holders_sample(HOLDERS_BATCH)  # a lapsed one among them is harmless
    records = rt.store.get_many(holders)
    for job_id in holders:
        rec = records.get(job_id)
        # A queued holder is between its acquire and its move to `submitting`.
        if rec is None or not (may_be_rendering(rec) or rec.status is JobStatus.QUEUED):
            release_slot(rt, job_id)
            report.freed += 1
