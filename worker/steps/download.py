"""The download step: copy each output of a finished render into our storage, then
`succeeded`.

    claim the download, reading the row (a duplicate drops) → tries used up? park →
    transfer each output (``worker.transfer``; probe it and cut a poster on the way) →
    ``decide_download_failure`` (pure) on an error → apply: retry later, or park

Money rule here: a render we paid for is never thrown away by our own limits (a link that
still 404s or serves a page, a storage outage, tries used up): the job is parked with the
reason and retried until the provider's 24 h are over.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from t2v_core.errors import PermanentError, TransientError
from t2v_core.names import TASK_DOWNLOAD
from t2v_core.problems import ErrorKind, Problem
from t2v_core.records import JobRecord, JobRow, OutputRecord
from t2v_core.states import JobStatus
from worker import instruments
from worker.policy import retry_delay
from worker.probe import make_poster, probe_video
from worker.steps.runtime import Runtime
from worker.steps.transitions import park, reschedule
from worker.storage import object_key, poster_key
from worker.transfer import LinkNotReady, LinkServesPage, download_to_storage

log = logging.getLogger("t2v.worker")


@dataclass(frozen=True)
class RetryLater:
    """Try the download again (after ``retry_after`` seconds if the server said so)."""

    retry_after: float | None = None


def download_step(rt: Runtime, job_id: str) -> None:
    # Not the task time limit (600 s): a worker killed mid-download must not hold the job
    # that long. A slow download outliving the lease may be sent again; both copies write
    # the same storage keys and only one moves the row (compare-and-set). The claim is the
    # read: a row in another state, or a duplicate, is not claimed and drops.
    rec = rt.store.claim_record(
        job_id,
        JobStatus.DOWNLOADING,
        lease=rt.settings.download_claim_lease,
        slack=rt.settings.claim_slack,
        download_attempts=JobRow.download_attempts + 1,
    )
    if rec is not None:
        download_claimed(rt, rec)


def download_claimed(rt: Runtime, rec: JobRecord) -> None:
    """The download of a job this process has claimed (``download_attempts`` counts this
    try): by ``download_step``, or by the poll that moved it to `downloading`."""
    if rec.download_attempts > rt.settings.download_max_attempts:
        # The earlier tries never came back (their workers died mid-download): stop here.
        park(
            rt,
            rec,
            Problem(
                ErrorKind.DOWNLOAD,
                f"download tried {rec.download_attempts - 1} times without "
                "finishing (workers stopped mid-download?)",
                {"attempts": rec.download_attempts - 1},
            ),
        )
        return
    started = time.monotonic()
    try:
        outputs = [store_output(rt, rec, i, url) for i, url in enumerate(rec.source_urls or [])]
    except Exception as exc:  # noqa: BLE001 - every failure is judged, none loses the render
        waited = (rt.now() - (rec.downloading_at or rt.now())).total_seconds()
        decision = decide_download_failure(
            exc,
            waited=waited,
            attempts=rec.download_attempts,
            window=rt.settings.download_not_found_window,
            max_attempts=rt.settings.download_max_attempts,
        )
        if isinstance(decision, Problem):
            park(rt, rec, decision)
            return
        log.warning(
            "job %s: download attempt %d failed: %s: %s",
            rec.id,
            rec.download_attempts,
            type(exc).__name__,
            exc,
        )
        delay = retry_delay(
            rec.download_attempts,
            rt.settings.transient_base_delay,
            rt.settings.poll_max_delay,
            rt.rng,
            retry_after=decision.retry_after,
        )
        reschedule(rt, rec, TASK_DOWNLOAD, rt.capped(delay), retry_count=JobRow.retry_count + 1)
        return
    if not outputs:
        park(rt, rec, Problem(ErrorKind.PROVIDER, "provider reported success without output links"))
        return
    if rt.store.transition(
        rec.id,
        JobStatus.SUCCEEDED,
        expect=[JobStatus.DOWNLOADING],
        outputs=[o.model_dump() for o in outputs],
        error=None,
        next_check_at=None,
    ):
        log.info("job %s succeeded: %s", rec.id, ", ".join(o.storage_uri for o in outputs))
        instruments.downloaded(time.monotonic() - started, sum(o.bytes or 0 for o in outputs))
        instruments.job_succeeded(rec.model_effective)


def decide_download_failure(
    exc: Exception, *, waited: float, attempts: int, window: float, max_attempts: int
) -> RetryLater | Problem:
    """What a failed transfer means, ``waited`` seconds after the render finished (pure).

    A link that 404s or serves a page may appear later: retried within the not-found
    window. Bytes we refuse (not a video, too big, a private address) park at once.
    Anything else (storage misconfigured or down, a soft time limit on a slow link, a bug)
    is retried within the download tries, never re-driven for ever.
    """
    if isinstance(exc, LinkNotReady):
        if waited < window:
            return RetryLater(exc.retry_after)
        detail = {"waited_s": round(waited), "window_s": round(window)}
        if isinstance(exc, LinkServesPage):
            return Problem(
                ErrorKind.LINK_NOT_VIDEO,
                f"output link still serves no video after {waited:.0f}s: {exc}",
                detail,
            )
        return Problem(
            ErrorKind.LINK_MISSING, f"output link still missing after {waited:.0f}s: {exc}", detail
        )
    if isinstance(exc, PermanentError):
        # Not a video, too big, a private address: our rules; the render stays paid for.
        return Problem(ErrorKind.DOWNLOAD_REFUSED, f"download refused: {exc}")
    if attempts >= max_attempts:
        return Problem(
            ErrorKind.DOWNLOAD,
            f"download failed {attempts} times; last: {type(exc).__name__}: {exc}",
            {"attempts": attempts},
        )
    return RetryLater(getattr(exc, "retry_after", None))


def expected_type(rec: JobRecord, url: str) -> str:
    """``mp4`` or ``gif``: what was asked, else what the link's name says."""
    asked = str(rec.request.get("output_type") or "")
    if asked in ("mp4", "gif"):
        return asked
    return "gif" if url.lower().split("?")[0].endswith(".gif") else "mp4"


def store_output(rt: Runtime, rec: JobRecord, index: int, url: str) -> OutputRecord:
    """Transfer output ``index`` of ``rec`` into storage; probe it and store its poster."""
    ext = expected_type(rec, url)

    def inspect(path: Path) -> dict[str, Any]:
        if not rt.settings.probe_videos:
            return {}
        try:
            info = probe_video(path)
        except Exception as exc:  # noqa: BLE001 - any probe failure means "not a video"
            raise TransientError(f"downloaded file is not a playable video: {exc}") from exc
        meta: dict[str, Any] = {
            "duration": info.duration,
            "frames": info.frames,
            "width": info.width,
            "height": info.height,
            "fps": info.fps,
        }
        with tempfile.TemporaryDirectory(prefix="t2v-poster-") as tmp:
            poster = Path(tmp) / "poster.jpg"
            try:
                make_poster(path, poster)
                meta["poster_uri"] = rt.storage.put_file(
                    poster_key(rec.id, index), poster, content_type="image/jpeg"
                )
            except Exception as exc:  # noqa: BLE001 - a missing poster must not lose the video
                log.warning("job %s: no poster for output %d: %s", rec.id, index, exc)
        return meta

    result = download_to_storage(
        url,
        rt.storage,
        object_key(rec.id, index, ext),
        session=rt.http,
        limits=rt.transfer_limits,
        expected_type=ext,
        inspect=inspect,
    )
    return OutputRecord(
        index=index,
        source_url=url,
        storage_uri=result.uri,
        bytes=result.bytes,
        sha256=result.sha256,
        content_type=result.content_type,
        **(result.meta or {}),
    )
