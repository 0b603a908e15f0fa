"""The pure normalisation of everything ModelsLab may answer: bytes in, a result or our error out.

``parse_response`` is pure: (HTTP status, body, content type, headers) in, a
``ProviderResult`` or one of our errors out. It survives every shape listed in
``shared/modelslab-api.md``: integer or string ids, ``output`` as a list or ``""``, string
or object messages, the legacy ``messege`` key, errors sent with HTTP 200, HTML error
pages, truncated JSON, statuses nobody documented.

    HTTP / body                                     outcome
    5xx, 408, 409, broken JSON, non-JSON 2xx        TransientError
    429, "Rate limit", queue limit, spam filter     RateLimited(retry_after)
    401/402/403/400 or their messages (any status)  PermanentError
    status "failed"                                  ProviderResult(FAILED, message)
    status "success" / "processing"                  ProviderResult(SUCCESS / PROCESSING)
    anything else                                    ProviderResult(UNKNOWN): not finished

Also here: ``ProviderResult`` / ``ProviderStatus`` (what the steps read),
``SubmitOutcomeUnknown`` (raised by the client, acted on by the steps) and ``scrub``,
which takes the API key out of any text before it is shown.

Never: import an HTTP library or do any I/O (the client in ``client.py`` does the
talking; this module only reads what came back), or let the API key, or a ``"key"`` the
server echoed, into a message.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any

from t2v_core.errors import PermanentError, RateLimited, TransientError

__all__ = [
    "SPAM_FILTER_WAIT",
    "ProviderResult",
    "ProviderStatus",
    "SubmitOutcomeUnknown",
    "as_id",
    "flatten_message",
    "parse_response",
    "scrub",
]

# How much of an unexpected body goes into an error message.
_SNIPPET = 200
# How deep ``flatten_message`` reads a message ([[[[...]]]] 900 deep must not recurse).
_MESSAGE_DEPTH = 16
# The legacy spam filter asks for 30 s; a queue-limit 429 without a hint waits this long.
SPAM_FILTER_WAIT = 30.0


class SubmitOutcomeUnknown(TransientError):
    """A submit was sent but no answer came back: it may have been accepted (and paid).

    Do not resubmit blindly: wait for the webhook carrying our ``track_id`` or the
    deadline, then resubmit and record that it happened.
    """


class ProviderStatus(StrEnum):
    PROCESSING = "processing"
    SUCCESS = "success"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ProviderResult:
    status: ProviderStatus
    provider_id: str | None = None
    eta: float | None = None
    outputs: list[str] = field(default_factory=list)
    future_links: list[str] = field(default_factory=list)
    message: str | None = None
    raw_status: str = ""
    generation_time: float | None = None
    track_id: str | None = None

    @property
    def is_final(self) -> bool:
        return self.status in (ProviderStatus.SUCCESS, ProviderStatus.FAILED)


# -- pure parsing -----------------------------------------------------------------------


def scrub(text: str, secret: str | None) -> str:
    """``text`` without the API key, nor any ``"key": "..."`` pair the server echoed."""
    if secret:
        text = text.replace(secret, "***")
    return re.sub(r'("key"\s*:\s*)"[^"]*"', r'\1"***"', text)


def _snippet(body: bytes, secret: str | None) -> str:
    text = body[: _SNIPPET * 4].decode("utf-8", "replace")
    text = " ".join(scrub(text, secret).split())
    return text[:_SNIPPET] + ("..." if len(text) > _SNIPPET else "")


def flatten_message(value: Any, _depth: int = 0) -> str | None:
    """One readable line from a string, a list, or an object of field errors (what is
    nested deeper than ``_MESSAGE_DEPTH`` levels is left out)."""
    if value is None or _depth > _MESSAGE_DEPTH:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, Mapping):
        parts = []
        for name, errs in value.items():
            text = flatten_message(errs, _depth + 1)
            parts.append(f"{name}: {text}" if text else str(name))
        return "; ".join(parts) or None
    if isinstance(value, list | tuple):
        texts = [t for t in (flatten_message(v, _depth + 1) for v in value) if t]
        return " ".join(texts) or None
    return str(value)


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a 400-digit integer
        return None
    return number if math.isfinite(number) and number >= 0 else None


def as_id(value: Any) -> str | None:
    """An id as ModelsLab means it: an integer (``12``, ``12.0``) or non-blank string,
    trimmed; None for anything else (null, a bool, a list, an object)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int | str):
        text = str(value).strip()
        return text or None
    return None


def _urls(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    if isinstance(value, list | tuple):
        return [v.strip() for v in value if isinstance(v, str) and v.strip()]
    return []


def _retry_after(
    data: Mapping[str, Any] | None, headers: Mapping[str, str], now: float
) -> float | None:
    if data is not None:
        for name in ("retry_after", "retryAfter", "retry-after"):
            seconds = _as_float(data.get(name))
            if seconds is not None:
                return seconds
    value = headers.get("retry-after")
    if value:
        seconds = _as_float(value.strip())
        if seconds is not None:
            return seconds
        try:
            when = parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            when = None
        if when is not None:
            return max(0.0, when.timestamp() - now)
    reset = _as_float((headers.get("x-ratelimit-reset") or "").strip() or None)
    if reset is not None:
        # Some servers send seconds to wait, others a Unix time: anything past 2001 is a time.
        return max(0.0, reset - now) if reset > 1e9 else reset
    return None


_RATE_RE = re.compile(r"rate.?limit|too many|queued requests|queue limit|spam", re.I)
_KEY_RE = re.compile(r"invalid api.?key|api key.*(invalid|missing|required)|unauthori[sz]ed", re.I)
_CREDITS_RE = re.compile(
    r"insufficient (credit|balance|fund)|out of credits|add more credits", re.I
)
# "Rate limit exceeded. Maximum 5 queued requests allowed."
_QUEUE_MAX_RE = re.compile(r"maximum\s+(\d{1,6})\s+queued", re.I)
_PREMIUM_RE = re.compile(r"premium|subscription|upgrade your plan|not allowed for your plan", re.I)
_TRANSIENT_RE = re.compile(
    r"try again|timed? ?out|temporar|overload|busy|maintenance|server error|unavailable", re.I
)


def _classify_error(
    http_status: int,
    data: Mapping[str, Any] | None,
    message: str,
    headers: Mapping[str, str],
    now: float,
) -> Exception:
    """The exception for an error answer (HTTP >= 400 or ``status: "error"``)."""
    tips = flatten_message(data.get("tips") or data.get("tip")) if data is not None else None
    text = f"{message} {tips or ''}"
    if http_status == 429 or _RATE_RE.search(text):
        wait = _retry_after(data, headers, now)
        spam = "spam" in f"{tips or ''} {message}".lower()
        if spam:
            # Re-sending the same request within 30 s is refused again: wait it out.
            wait = max(wait or 0.0, SPAM_FILTER_WAIT)
        found = _QUEUE_MAX_RE.search(text)
        return RateLimited(
            f"ModelsLab rate limit: {message}",
            retry_after=wait,
            queue_full=not spam,
            provider_max=int(found.group(1)) if found else None,
        )
    if http_status >= 500 or http_status in (408, 409):
        return TransientError(f"ModelsLab HTTP {http_status}: {message}")
    if http_status == 401 or _KEY_RE.search(message):
        return PermanentError(f"ModelsLab refused the API key: {message}")
    if http_status == 402 or _CREDITS_RE.search(message):
        return PermanentError(f"ModelsLab account has no credits left: {message}")
    if http_status == 403 or _PREMIUM_RE.search(message):
        return PermanentError(f"ModelsLab refused the request for this plan: {message}")
    if http_status == 400 or (data is not None and isinstance(data.get("message"), Mapping)):
        return PermanentError(f"ModelsLab rejected the request: {message}")
    if http_status >= 400:
        return PermanentError(f"ModelsLab HTTP {http_status}: {message}")
    # `status: "error"` with HTTP 200 and a message we do not know. Retrying a request
    # the provider rejected usually fails the same way, so only messages that sound
    # temporary are retried; everything else fails the job with the provider's words.
    if _TRANSIENT_RE.search(message):
        return TransientError(f"ModelsLab error: {message}")
    return PermanentError(f"ModelsLab error: {message}")


def parse_response(
    http_status: int,
    body: bytes,
    content_type: str | None,
    headers: Mapping[str, str] | None = None,
    *,
    secret: str | None = None,
    now: float | None = None,
) -> ProviderResult:
    """Normalise one ModelsLab answer, or raise the error the caller should act on.

    ``secret`` (the API key) is scrubbed from every message; ``now`` (Unix time) is only
    used to turn an HTTP-date ``Retry-After`` into seconds.
    """
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    clock = time.time() if now is None else now
    try:
        decoded: Any = json.loads(body) if body.strip() else None
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[... deep
        decoded = None
    data: Mapping[str, Any] | None = decoded if isinstance(decoded, Mapping) else None

    if data is None:
        ctype = (content_type or "unknown").split(";")[0].strip()
        detail = f"HTTP {http_status}, {ctype}: {_snippet(body, secret) or '(empty body)'}"
        if http_status >= 400:
            raise _classify_error(http_status, None, detail, lowered, clock)
        raise TransientError(f"ModelsLab answered without a JSON object ({detail})")

    raw_status = str(data.get("status") or "").strip()
    status = raw_status.lower()
    message_value = data.get("message")
    if message_value is None:
        message_value = data.get("messege")  # legacy endpoints misspell it
    message = flatten_message(message_value)
    message = scrub(message, secret) if message else None

    if http_status >= 400 or status == "error":
        shown = message or f"HTTP {http_status}: {_snippet(body, secret)}"
        raise _classify_error(http_status, data, shown, lowered, clock)

    raw_meta = data.get("meta")
    meta: Mapping[str, Any] = raw_meta if isinstance(raw_meta, Mapping) else {}
    provider_id = as_id(data.get("id")) or as_id(meta.get("id"))
    track_id = as_id(data.get("track_id")) or as_id(meta.get("track_id"))
    eta = _as_float(data.get("eta"))
    generation_time = _as_float(data.get("generationTime", data.get("generation_time")))
    future_links = _urls(data.get("future_links"))

    if status == ProviderStatus.FAILED:
        return ProviderResult(
            status=ProviderStatus.FAILED,
            provider_id=provider_id,
            message=message or "generation failed (no message)",
            raw_status=raw_status,
            track_id=track_id,
        )

    outputs = _urls(data.get("output"))
    if status == ProviderStatus.SUCCESS and not outputs:
        # Like the Go CLI: when `output` is empty, the links are elsewhere.
        outputs = _urls(data.get("output_url")) or future_links
    known = {"success": ProviderStatus.SUCCESS, "processing": ProviderStatus.PROCESSING}
    result_status = known.get(status, ProviderStatus.UNKNOWN)
    if result_status is ProviderStatus.SUCCESS and not outputs:
        # Nothing to download: treat it as not finished yet (keeps the provider id, so a
        # submit is recorded and polled, never paid for twice) and say why.
        result_status = ProviderStatus.UNKNOWN
        message = "success without any output URL; polling again"
    return ProviderResult(
        status=result_status,
        provider_id=provider_id,
        eta=eta,
        outputs=outputs,
        future_links=future_links,
        message=message,
        raw_status=raw_status,
        generation_time=generation_time,
        track_id=track_id,
    )
