"""What each task does, as plain functions over a ``Runtime`` of passed-in dependencies.

Every step loads the row, checks its state, does one thing, and moves the state forward
by compare-and-set. A copy of a message that arrives twice, late, or for a job already
finished or cancelled finds the row elsewhere and does nothing. A step never sleeps: when
something is not ready it asks ``rt.schedule`` to run it again with a countdown.

Money rule: a submit whose outcome is unknown (the answer was lost after the request left)
is never repeated at once. The job stays `submitting` until ``submit_unknown_wait`` has
passed; then ``reconcile`` resubmits it, and ``submit_count`` records that it did.

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

from producer.errors import PermanentError, RateLimited, TransientError
from producer.records import JobRecord, JobRow, JobStore, OutputRecord, utcnow
from producer.states import (
    ACTIVE_STATES,
    TASK_DOWNLOAD,
    TASK_POLL,
    TASK_SUBMIT,
    JobStatus,
)
from worker.download import LinkNotReady, download_to_storage
from worker.limiter import AccountLimiter
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

    @property
    def slot_lease(self) -> float:
        # A slot outlives the longest a job can be at the provider, then frees itself.
        return self.settings.poll_deadline_seconds + self.settings.submit_unknown_wait + 300


def _in(seconds: float, rt: Runtime) -> datetime:
    return rt.now() + timedelta(seconds=seconds)


def _capped(rt: Runtime, delay: float) -> float:
    """No countdown past the first-poll cap: a server's huge Retry-After must not outlive
    the broker's visibility timeout (the start-up check relies on this bound)."""
    return min(delay, rt.settings.poll_max_first_delay)


# -- shared endings ---------------------------------------------------------------------
def fail(rt: Runtime, rec: JobRecord, message: str, kind: str,
         *, only_from: JobStatus | None = None) -> bool:
    """Move the job to `failed` with ``message``; free its slot. False if it had moved on.

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


def release_slot(rt: Runtime, job_id: str | None) -> None:
    """Free ``job_id``'s account slot and wake the oldest jobs waiting for one."""
    for waiting_id in rt.limiter.release(job_id):
        log.info("job %s takes a freed account slot", waiting_id)
        rt.schedule(TASK_SUBMIT, waiting_id, 0)


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
    if rec.status.is_final:
        # Cancelled (or failed) while waiting in line: give its turn to the next job.
        release_slot(rt, job_id)
        return
    if rec.status is not JobStatus.QUEUED:
        return  # already submitted, or in doubt (reconcile decides)
    if not rt.limiter.acquire(job_id, lease=rt.slot_lease, created=rec.created_at.timestamp()):
        # Waits in line at no cost; a freed slot (or reconcile) sends this task again.
        rt.store.update_if(job_id, [JobStatus.QUEUED],
                           next_check_at=_in(WAITING_RECHECK_SECONDS, rt))
        log.info("job %s waits for an account slot", job_id)
        return
    if not rt.store.transition(
        job_id, JobStatus.SUBMITTING, expect=[JobStatus.QUEUED],
        submit_count=JobRow.submit_count + 1,
        # If this worker dies mid-request, the outcome is unknown until this time.
        next_check_at=_in(rt.settings.submit_unknown_wait, rt),
    ):
        return  # another copy of this message got there first
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
        # The provider may have accepted (and charged) it: do not send it again now. The
        # job stays `submitting`; a webhook naming it adopts the provider's id, otherwise
        # reconcile decides after submit_unknown_wait (bounded by max_unknown_resubmits).
        rt.store.update_if(job_id, [JobStatus.SUBMITTING], error=f"submit outcome unknown: {exc}",
                           retry_count=JobRow.retry_count + 1)
        log.warning("job %s: submit outcome unknown (%s); not resubmitting before %ss",
                    job_id, exc, rt.settings.submit_unknown_wait)
        return
    except RateLimited as exc:
        _back_to_queue(rt, rec, exc, forget_slot=True)
        return
    except TransientError as exc:
        _back_to_queue(rt, rec, exc, forget_slot=False)
        return
    except PermanentError as exc:
        fail(rt, rec, f"provider refused the request: {exc}", "permanent")
        return
    _after_submit(rt, rec, result)


def _back_to_queue(rt: Runtime, rec: JobRecord, exc: TransientError, *, forget_slot: bool) -> None:
    """The provider did not take the request: try again later, unless tries are used up.

    A 429 (``forget_slot``) is waiting for room at the provider, not a failure: it does not
    use up tries.
    """
    if not forget_slot and rec.submit_count >= rt.settings.submit_max_attempts:
        fail(rt, rec, f"submit failed {rec.submit_count} times; last: {exc}", "transient")
        return
    delay = _capped(rt, retry_delay(rec.submit_count, rt.settings.transient_base_delay,
                                    rt.settings.poll_max_delay, rt.rng,
                                    retry_after=exc.retry_after))
    if forget_slot:
        # 429: the account is full (someone else uses it too); don't sit on a slot meanwhile.
        rt.limiter.forget(rec.id)
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
        if rt.store.transition(rec.id, JobStatus.DOWNLOADING, expect=[rec.status],
                               source_urls=result.outputs, next_check_at=rt.now(), **values):
            release_slot(rt, rec.id)
            rt.schedule(TASK_DOWNLOAD, rec.id, 0)
        return True
    if result.status is ProviderStatus.FAILED:
        fail(rt, rec, result.message or "generation failed", "generation_failed")
        return True
    return False


def _after_submit(rt: Runtime, rec: JobRecord, result: ProviderResult) -> None:
    if result.provider_id:
        # Record what we paid for before anything else can go wrong: whatever state the
        # row is in now (cancelled meanwhile?), the provider's id must not be lost.
        rt.store.update_if(rec.id, list(JobStatus), provider_id=result.provider_id)
    if _provider_finished(rt, rec, result, provider_id=result.provider_id,
                          future_links=result.future_links or None):
        return
    if not result.provider_id:
        # Accepted (it answered) but gave no id to poll: nothing more we can do safely.
        fail(rt, rec, f"provider answered {result.raw_status!r} without an id", "provider")
        return
    policy = rt.policy
    delay = next_poll_delay(elapsed=0.0, eta=result.eta, attempt=0, policy=policy, rng=rt.rng)
    delay = policy.min_delay if delay is None else delay
    if rt.store.transition(
        rec.id, JobStatus.PROCESSING, expect=[JobStatus.SUBMITTING],
        provider_id=result.provider_id, eta_seconds=result.eta,
        future_links=result.future_links or None, error=None,
        deadline_at=_in(policy.deadline, rt), next_check_at=_in(delay, rt),
    ):
        log.info("job %s submitted as %s, eta %ss; first poll in %.1fs",
                 rec.id, result.provider_id, result.eta, delay)
        rt.schedule(TASK_POLL, rec.id, delay)


# -- poll --------------------------------------------------------------------------------
def poll_step(rt: Runtime, job_id: str) -> None:
    rec = rt.store.get(job_id)
    if rec is None or rec.status is not JobStatus.PROCESSING:
        return
    if not rt.store.claim(job_id, JobStatus.PROCESSING, lease=rt.settings.claim_lease,
                          slack=rt.settings.claim_slack, poll_count=JobRow.poll_count + 1):
        return  # a duplicate of a poll already taken, or one that came early
    rec = rt.store.get(job_id)
    assert rec is not None and rec.provider_id is not None
    started = rec.processing_at or rec.created_at
    elapsed = (rt.now() - started).total_seconds()
    policy = rt.policy
    if rec.eta_seconds and rec.eta_seconds * 1.5 > policy.deadline:
        # The provider expects to take longer than our deadline: don't fail a job we paid
        # for before it could possibly be done.
        policy = replace(policy, deadline=rec.eta_seconds * 1.5)
    # Fetch first, even past the deadline: a job that finished meanwhile was paid for.
    try:
        result = rt.client.fetch(rec.provider_id)
    except TransientError as exc:
        if elapsed >= policy.deadline:
            fail(rt, rec, f"not finished after {policy.deadline:.0f}s (deadline); last fetch: "
                 f"{exc}", "deadline")
            return
        delay = retry_delay(rec.retry_count + 1, rt.settings.transient_base_delay,
                            policy.max_delay, rt.rng, retry_after=exc.retry_after)
        delay = _capped(rt, min(delay, max(policy.deadline - elapsed, 0.0)))
        log.info("job %s: fetch failed (%s); again in %.1fs", job_id, exc, delay)
        _reschedule(rt, rec, TASK_POLL, delay, retry_count=JobRow.retry_count + 1)
        return
    except PermanentError as exc:
        fail(rt, rec, f"provider refused the fetch: {exc}", "permanent")
        return
    if _provider_finished(rt, rec, result):
        return
    if result.status is not ProviderStatus.PROCESSING:
        log.warning("job %s: provider status %r treated as not finished", job_id,
                    result.raw_status)
    next_delay = next_poll_delay(elapsed=elapsed, eta=rec.eta_seconds, attempt=rec.poll_count,
                                 policy=policy, rng=rt.rng)
    if next_delay is None:
        fail(rt, rec, f"not finished after {policy.deadline:.0f}s (deadline)", "deadline")
        return
    _reschedule(rt, rec, TASK_POLL, next_delay)


# -- download ----------------------------------------------------------------------------
def download_step(rt: Runtime, job_id: str) -> None:
    rec = rt.store.get(job_id)
    if rec is None or rec.status is not JobStatus.DOWNLOADING:
        return
    if not rt.store.claim(job_id, JobStatus.DOWNLOADING, lease=rt.settings.task_time_limit,
                          slack=rt.settings.claim_slack,
                          download_attempts=JobRow.download_attempts + 1):
        return
    rec = rt.store.get(job_id)
    assert rec is not None
    try:
        outputs = [_store_output(rt, rec, i, url) for i, url in enumerate(rec.source_urls or [])]
    except LinkNotReady as exc:
        waited = (rt.now() - (rec.downloading_at or rt.now())).total_seconds()
        if waited >= rt.settings.download_not_found_window:
            fail(rt, rec, f"output link still missing after {waited:.0f}s: {exc}", "download")
            return
        _retry_download(rt, rec, exc.retry_after)
        return
    except PermanentError as exc:
        fail(rt, rec, f"download refused: {exc}", "download")
        return
    except Exception as exc:  # noqa: BLE001 - transient errors, storage config, time limits
        # Anything else (storage misconfigured, a soft time limit on a slow link, a bug) is
        # retried within the same bounded number of attempts, never re-driven for ever.
        if rec.download_attempts >= rt.settings.download_max_attempts:
            fail(rt, rec, f"download failed {rec.download_attempts} times; last: "
                 f"{type(exc).__name__}: {exc}", "download")
            return
        log.warning("job %s: download attempt %d failed: %s: %s", rec.id,
                    rec.download_attempts, type(exc).__name__, exc)
        _retry_download(rt, rec, getattr(exc, "retry_after", None))
        return
    if not outputs:
        fail(rt, rec, "provider reported success without output links", "provider")
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
