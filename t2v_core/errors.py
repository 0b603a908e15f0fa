"""One error tree for the whole system, split by what the caller should do.

    T2VError                  base of everything we raise on purpose
    ├── ConfigError           settings are wrong or a needed service is missing: fix and restart
    ├── RequestInvalid        a request was refused before anything was written (also a ValueError);
    │                         `.field_errors` names each bad field (a ``FieldError``)
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

``FieldError`` is not an error class but the detail ``RequestInvalid`` carries: one bad
field, its value and why, built only here (``RequestInvalid.errors`` is the same list as
``{"field", "value", "reason"}`` dicts, the shape ``t2v --json`` prints).

Nothing here imports Celery, SQLAlchemy sessions or HTTP clients: both the producer and
the worker raise these, and application code catches them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

#: ``RequestInvalid.listing`` names at most this many fields in its message (all in ``errors``).
LISTED_MAX = 20


class T2VError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(T2VError):
    """Settings are inconsistent, or a service they name cannot be used."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One reason a request was refused: ``field`` (None: the input as a whole, e.g. a batch
    line that is not JSON), the ``value`` given (None: missing or not shown) and ``reason``.

    ``line`` is set for a line of a batch file (``t2v batch``). ``str()`` is the readable
    form: ``[line N: ]field=value: reason`` (``field: reason`` without a value).
    """

    field: str | None
    value: Any
    reason: str
    line: int | None = None

    def at(self, prefix: str) -> FieldError:
        """The same error under ``prefix`` + field, e.g. ``at("[3].")``: ``[3].width``."""
        return replace(self, field=prefix + (self.field or ""))

    def on_line(self, line: int, field: str | None = None) -> FieldError:
        """The same error on batch-file line ``line``, optionally under another ``field``."""
        return replace(self, line=line, field=self.field if field is None else field)

    def as_dict(self) -> dict[str, Any]:
        """``{"field", "value", "reason"}``, led by ``"line"`` when set (the public shape)."""
        head: dict[str, Any] = {} if self.line is None else {"line": self.line}
        return {**head, "field": self.field, "value": self.value, "reason": self.reason}

    def __str__(self) -> str:
        where = "" if self.line is None else f"line {self.line}: "
        if self.value is not None:
            return f"{where}{self.field}={self.value!r}: {self.reason}"
        return f"{where}{self.field}: {self.reason}" if self.field else where + self.reason


class RequestInvalid(T2VError, ValueError):
    """A request was refused at the door; nothing reached the table or the broker.

    ``field_errors`` lists the bad fields (``FieldError``); ``errors`` is the same list as
    ``{"field", "value", "reason"}`` dicts (plus ``"line"`` for a batch file's line);
    ``str()`` is one readable line per field.
    """

    def __init__(self, message: str, errors: Iterable[FieldError] = ()) -> None:
        super().__init__(message)
        self.field_errors: list[FieldError] = list(errors)
        self.errors: list[dict[str, Any]] = [e.as_dict() for e in self.field_errors]

    @classmethod
    def of(
        cls, field: str | None, value: Any, reason: str, *, message: str | None = None
    ) -> RequestInvalid:
        """One bad field; the message is the error's ``str()`` unless ``message`` is given."""
        error = FieldError(field, value, reason)
        return cls(str(error) if message is None else message, [error])

    @classmethod
    def listing(cls, errors: Iterable[FieldError]) -> RequestInvalid:
        """Every error in ``errors``, the message naming the first ``LISTED_MAX`` by ``; ``."""
        errors = list(errors)
        shown = "; ".join(str(e) for e in errors[:LISTED_MAX])
        more = f"; ... and {len(errors) - LISTED_MAX} more" if len(errors) > LISTED_MAX else ""
        return cls(shown + more, errors)


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
