"""Why a job stopped, as one typed value: ``Problem(kind, message, detail)``.

Every failed or parked job's error is built here (the constructors below) and written to
the row in one shape: ``error`` (the message, for people), ``error_kind`` (for code and
alerts) and ``error_detail`` (the figures behind the message). The kinds, by what they
mean for the money:

    the provider's word: the job fails
        generation_failed   the provider ended the render as failed
        permanent           the provider refused the request (bad key, rejected prompt...)
    our limits on work nothing was paid for (or that is lost for good): the job fails
        transient           the provider did not take the submit, tries used up
        submit_unknown      answers to several submits were lost; not paying again
        stuck               a step re-driven again and again without running (a job in
                            `processing`/`downloading` was paid for: reconcile parks it)
        output_expired      a parked render's 24 h at the provider are over
        cancelled           cancelled by the application
    our limits on a paid render: the job is parked (held for retry, never thrown away)
        deadline            still rendering after the poll deadline
        status_unknown      the provider's status stayed one we do not know
        fetch_refused       a 4xx on fetch (a proxy's 401 says nothing of the render)
        download            download tries used up (storage outage, resets...)
        link_missing        the output link still 404s after the not-found window
        link_not_video      the output link still serves a page, not the video
        download_refused    not a video, too big, a private address
        provider            success reported without output links
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

MAX_MESSAGE = 2000


class ErrorKind(StrEnum):
    GENERATION_FAILED = "generation_failed"
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    SUBMIT_UNKNOWN = "submit_unknown"
    STUCK = "stuck"
    OUTPUT_EXPIRED = "output_expired"
    CANCELLED = "cancelled"
    DEADLINE = "deadline"
    STATUS_UNKNOWN = "status_unknown"
    FETCH_REFUSED = "fetch_refused"
    DOWNLOAD = "download"
    LINK_MISSING = "link_missing"
    LINK_NOT_VIDEO = "link_not_video"
    DOWNLOAD_REFUSED = "download_refused"
    PROVIDER = "provider"


# Kinds that end a job as `failed`; every other kind parks a paid render.
FAILING_KINDS = frozenset(
    {
        ErrorKind.GENERATION_FAILED,
        ErrorKind.PERMANENT,
        ErrorKind.TRANSIENT,
        ErrorKind.SUBMIT_UNKNOWN,
        ErrorKind.STUCK,
        ErrorKind.OUTPUT_EXPIRED,
        ErrorKind.CANCELLED,
    }
)


@dataclass(frozen=True)
class Problem:
    """Why a job stopped: ``kind`` (an ``ErrorKind``), ``message`` (for people), ``detail``
    (JSON-able figures behind the message)."""

    kind: ErrorKind
    message: str
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def parks(self) -> bool:
        """True if this kind always parks (a paid render), False if it fails the job, as
        ``stuck`` does for an unpaid one (reconcile parks a paid ``stuck`` job itself)."""
        return self.kind not in FAILING_KINDS

    def row_values(self) -> dict[str, Any]:
        """The row's ``error``, ``error_kind`` and ``error_detail``."""
        return {
            "error": self.message[:MAX_MESSAGE],
            "error_kind": self.kind.value,
            "error_detail": self.detail or None,
        }

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.message}"
