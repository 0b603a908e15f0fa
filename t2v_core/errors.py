"""One error tree for the whole system, split by what the caller should do.

    T2VError                  base of everything we raise on purpose
    ├── ConfigError           settings are wrong or a needed service is missing: fix and restart
    ├── RequestInvalid        a request was refused before anything was written (also a ValueError)
    ├── EnqueueError          the row is written but the broker refused the message: re-drive later
    ├── JobNotFound           no job has that id (also a KeyError)
    ├── RetryRefused          ``retry`` cannot resume this job; ``str()`` says why
    ├── JobError              a job ended badly; carries the job's record
    │   ├── JobFailed         the job is `failed` (or `cancelled`); `.record.error` says why
    │   │   └── JobParked     the job is `parked`: a paid render held for `retry()`, not lost
    │   └── JobTimeout        `Job.wait` gave up before the job finished (the job goes on)
    ├── TransientError        the provider or storage may succeed later: retry with backoff
    │   └── RateLimited       the provider said 429; `.retry_after` seconds to wait
    └── PermanentError        retrying cannot help (bad key, no credits, rejected prompt)

Nothing here imports Celery, SQLAlchemy sessions or HTTP clients: both the producer and
the worker raise these, and application code catches them.
"""

from __future__ import annotations

from typing import Any


class T2VError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(T2VError):
    """Settings are inconsistent, or a service they name cannot be used."""


class RequestInvalid(T2VError, ValueError):
    """A request was refused at the door; nothing reached the table or the broker.

    ``errors`` is a list of ``{"field", "value", "reason"}`` dicts; ``str()`` is one
    readable line per field.
    """

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class EnqueueError(T2VError):
    """The job row was written (state `queued`) but its message could not be sent.

    The job is not lost: ``reconcile`` (or ``t2v`` re-driving) sends it again later.
    ``job_id`` names the row.
    """

    def __init__(self, message: str, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id

    #: Every job whose message was not sent (``enqueue_many``); all of them are `queued`.
    job_ids: tuple[str, ...] = ()


class JobNotFound(T2VError, KeyError):
    """No job has this id; ``job_id`` names it."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id

    def __str__(self) -> str:
        # KeyError's str() is the repr of its argument; show the plain message.
        return str(self.args[0])


class RetryRefused(T2VError):
    """``retry`` cannot resume this job (still running, cancelled, succeeded, its output
    expired, or a retry would pay for a second render); ``job_id`` names it."""

    def __init__(self, message: str, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class JobError(T2VError):
    """A job did not end in `succeeded`; ``record`` is its last known record."""

    def __init__(self, message: str, record: Any = None) -> None:
        super().__init__(message)
        self.record = record


class JobFailed(JobError):
    """The job is `failed` or `cancelled`."""


class JobParked(JobFailed):
    """The job is `parked`: our own limit (deadline, download tries, a link that never served
    a video, a storage outage) held a paid render. Not final: ``retry()`` / ``t2v retry``
    resumes it from the last paid step (it is also retried automatically with backoff)."""


class JobTimeout(JobError):
    """Waiting for the job took longer than the caller allowed; the job itself goes on."""


class TransientError(T2VError):
    """Worth retrying later: 5xx, timeouts, broken JSON, a link that is not there yet."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(TransientError):
    """The provider refused with 429 (queue limit or spam filter); wait ``retry_after`` s.

    ``queue_full``: the account's queued-request limit was hit (not the spam filter);
    ``provider_max``: the N of "Maximum N queued requests allowed", when the answer said.
    """

    def __init__(
        self,
        message: str,
        retry_after: float | None = None,
        *,
        queue_full: bool = False,
        provider_max: int | None = None,
    ) -> None:
        super().__init__(message, retry_after)
        self.queue_full = queue_full
        self.provider_max = provider_max


class PermanentError(T2VError):
    """Retrying cannot help: bad key, no credits, validation refused, premium feature."""
