"""Re-drive jobs from the table when their messages were lost.

Redis may lose every message (it keeps nothing on disk in many setups); the table does
not. Run periodically by Celery beat, one run at a time (a Redis lock), this finds active
jobs whose next step is overdue and sends that step again. Duplicates are harmless: each
step claims its job by compare-and-set and a second copy drops.

It also resolves submits whose outcome is unknown (after ``submit_unknown_wait``: back to
`queued`, recorded, resubmitted), wakes jobs waiting for an account slot when slots are
free, frees slots held by jobs that are no longer at the provider, and fails a job that has
been re-driven ``max_redrives`` times without moving (a poison job must not loop forever).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

from producer.records import JobRow
from producer.states import TASK_DOWNLOAD, TASK_POLL, TASK_SUBMIT, JobStatus
from worker.steps import Runtime, fail, release_slot

log = logging.getLogger("t2v.reconcile")

LOCK_KEY = "t2v:reconcile:lock"
REDRIVES_KEY = "t2v:redrives"

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
    skipped_locked: bool = False


def reconcile(rt: Runtime, *, lock_seconds: float = 120.0) -> ReconcileReport:
    report = ReconcileReport()
    redis = rt.limiter.redis
    token = uuid.uuid4().hex
    if not redis.set(LOCK_KEY, token, nx=True, ex=int(lock_seconds)):
        report.skipped_locked = True
        return report
    try:
        _redrive_overdue(rt, report)
        _free_stale_slots(rt, report)
        woken = rt.limiter.release(None)
        for job_id in woken:
            rt.schedule(TASK_SUBMIT, job_id, 0)
        report.woken += len(woken)
    finally:
        if redis.get(LOCK_KEY) in (token, token.encode()):
            redis.delete(LOCK_KEY)
    if report.redriven or report.resubmitted or report.woken or report.freed or report.failed:
        log.info("reconcile: %s", report)
    return report


def _redrive_overdue(rt: Runtime, report: ReconcileReport) -> None:
    redis = rt.limiter.redis
    cutoff = rt.now() - timedelta(seconds=rt.settings.reconcile_grace)
    for rec in rt.store.overdue(cutoff):
        # Counted per point of progress: any step that moves the job starts a new count.
        mark = f"{rec.id}:{rec.status}:{rec.submit_count}:{rec.poll_count}:{rec.download_attempts}"
        count = int(redis.hincrby(REDRIVES_KEY, mark, 1))
        redis.expire(REDRIVES_KEY, 7 * 86400)
        if count > rt.settings.max_redrives:
            if fail(rt, rec, f"re-driven {count - 1} times without progress", "stuck"):
                report.failed += 1
            redis.hdel(REDRIVES_KEY, mark)
            continue
        if rec.status is JobStatus.SUBMITTING:
            # The answer to our submit never came back. The money rule: we waited
            # submit_unknown_wait for a webhook; now resubmit once, and say so.
            note = (f"submit #{rec.submit_count} outcome unknown after "
                    f"{rt.settings.submit_unknown_wait:.0f}s; resubmitting")
            if rt.store.transition(rec.id, JobStatus.QUEUED, expect=[JobStatus.SUBMITTING],
                                   error=note, next_check_at=rt.now(),
                                   retry_count=JobRow.retry_count + 1):
                log.warning("job %s: %s", rec.id, note)
                rt.schedule(TASK_SUBMIT, rec.id, 0)
                report.resubmitted += 1
            continue
        if rec.status is JobStatus.QUEUED and rt.limiter.is_waiting(rec.id):
            rt.store.update_if(rec.id, [JobStatus.QUEUED], next_check_at=rt.now()
                               + timedelta(seconds=rt.settings.reconcile_grace * 10))
            redis.hincrby(REDRIVES_KEY, mark, -1)  # waiting in line is not being stuck
            continue
        task = _STEP_FOR.get(rec.status)
        if task is None:
            continue
        # Make the step due now so its claim succeeds; a late original copy then drops.
        if rt.store.update_if(rec.id, [rec.status], next_check_at=rt.now()):
            rt.schedule(task, rec.id, 0)
            report.redriven += 1


def _free_stale_slots(rt: Runtime, report: ReconcileReport) -> None:
    for job_id in rt.limiter.holders():
        rec = rt.store.get(job_id)
        if rec is None or rec.status not in (JobStatus.SUBMITTING, JobStatus.PROCESSING,
                                             JobStatus.QUEUED):
            release_slot(rt, job_id)
            report.freed += 1
