"""Completion callbacks: what is checked at ``enqueue``, what is signed, what is sent.

A job may carry two forms of callback (either, both, or none; defaults from settings):
- ``on_done``: a Celery task name of the application's, sent with ``[job_id, status]`` to
  ``on_done_queue`` (its Celery task id is the notification's id, so a receiver can
  deduplicate by ``self.request.id``);
- ``callback_url``: an HTTP POST of ``{id, status, labels, outputs, error, error_kind}``
  signed as the Standard Webhooks spec says (``webhook-id``, ``webhook-timestamp``,
  ``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` keyed with
  the base64-decoded part of the ``whsec_...`` secret).

A notification is due when a job enters a state in ``NOTIFY_STATES`` (a final state, or
`parked`); ``JobStore.transition`` marks it due in the same UPDATE as the move, and bumps
``callback_seq``, so the notification id (``notification_id``) differs per final state
and per attempt of the job (a parked job retried and then finished notifies again).

This module is pure (no I/O, no name lookups): the producer checks a URL's literal address
and obviously local names here; the worker checks DNS again before it connects.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import re
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

from t2v_core.addresses import AllowList, address_problem
from t2v_core.errors import FieldError, RequestInvalid
from t2v_core.states import FINAL_STATES, JobStatus

NOTIFY_STATES = frozenset(FINAL_STATES | {JobStatus.PARKED})

#: A dotted Python/Celery task name: ``myapp.tasks.video_ready``.
_TASK_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")
URL_MAX = 2000
#: Names that always mean this machine or its network, refused without a lookup.
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa", ".lan")
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def on_done_problem(name: object) -> str | None:
    """Why ``name`` is not a usable ``on_done`` task name, or None."""
    if not isinstance(name, str):
        return "must be a string: a dotted Celery task name such as myapp.tasks.video_ready"
    if len(name) > 200 or not _TASK_NAME.match(name):
        return "must be a dotted Celery task name such as myapp.tasks.video_ready"
    if name.startswith("t2v."):
        return "names one of t2v's own tasks; use a task of your application"
    return None


def queue_problem(queue: object) -> str | None:
    if not isinstance(queue, str) or not _QUEUE_NAME.match(queue):
        return "must be a queue name of 1-200 letters, digits and . _ : -"
    return None


def callback_url_problem(url: object, allowed_hosts: Collection[str] = ()) -> str | None:
    """Why ``url`` may not be a callback URL, or None. No name is resolved here: literal
    addresses and obviously local names are refused; the worker vets DNS at send time."""
    if not isinstance(url, str) or not url:
        return "must be an http(s) URL"
    if len(url) > URL_MAX:
        return f"longer than {URL_MAX} characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError as exc:
        return f"malformed URL ({exc})"
    if parts.scheme.lower() not in ("http", "https"):
        return f"scheme {parts.scheme or '(none)'!r} is not http(s)"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials (user:password@); the body is signed instead"
    if not host:
        return "has no host"
    allow = AllowList.parse(allowed_hosts)
    if allow.allows_name(host):
        return None
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        name = host.lower().rstrip(".")
        if name in _LOCAL_NAMES or name.endswith(_LOCAL_SUFFIXES) or "." not in name:
            return (
                f"host {host!r} is a local name; add it to T2V_CALLBACK_ALLOWED_HOSTS"
                " if this is intended"
            )
        return None
    if allow.allows_ip(literal):
        return None
    problem = address_problem(literal)
    if problem is not None:
        return (
            f"points at a {problem} address ({literal}); add it to"
            " T2V_CALLBACK_ALLOWED_HOSTS if this is intended"
        )
    return None


def callback_columns(
    *,
    on_done: str | None,
    on_done_queue: str | None,
    callback_url: str | None,
    allowed_hosts: Collection[str] = (),
) -> tuple[dict[str, Any], list[FieldError]]:
    """The row's callback columns for these (already defaulted) values, or the field errors."""
    errors: list[FieldError] = []
    if on_done is not None and (why := on_done_problem(on_done)):
        errors.append(FieldError("on_done", on_done, why))
    if on_done_queue is not None and (why := queue_problem(on_done_queue)):
        errors.append(FieldError("on_done_queue", on_done_queue, why))
    if callback_url is not None and (why := callback_url_problem(callback_url, allowed_hosts)):
        errors.append(FieldError("callback_url", callback_url, why))
    values = {
        "on_done": on_done,
        "on_done_queue": on_done_queue if on_done is not None else None,
        "callback_url": callback_url,
    }
    return values, errors


def callback_values(
    settings: Any, on_done: str | None, on_done_queue: str | None, callback_url: str | None
) -> dict[str, Any]:
    """The row's callback columns for an ``enqueue`` call (``settings``, a
    ``t2v_core.settings.Settings``, fills what the call leaves out), or ``RequestInvalid``
    naming each bad field: nothing is written."""
    values, errors = callback_columns(
        on_done=on_done if on_done is not None else settings.on_done,
        on_done_queue=on_done_queue if on_done_queue is not None else settings.on_done_queue,
        callback_url=callback_url if callback_url is not None else settings.callback_url,
        allowed_hosts=settings.callback_allowed_hosts,
    )
    if errors:
        raise RequestInvalid.listing(errors)
    return values


# -- what is sent ---------------------------------------------------------------------------
def notification_id(job_id: str, status: str, seq: int) -> str:
    """Stable per job, final state and attempt: the same for every retry of one
    notification, different for the next final state of the same job."""
    return f"{job_id}-{status}-{seq}"


def callback_body(record: Any, status: str) -> bytes:
    """The HTTP callback's JSON body for ``record`` (a ``JobRecord``) as of ``status``."""
    outputs = [o.model_dump(mode="json") for o in getattr(record, "outputs", [])]
    body = {
        "id": record.id,
        "status": status,
        # Labels arrive with the labels feature; until then a job has none.
        "labels": dict(getattr(record, "labels", None) or {}),
        "outputs": outputs,
        "error": record.error,
        "error_kind": record.error_kind,
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: base64 after an optional ``whsec_``."""
    raw = secret[len("whsec_") :] if secret.startswith("whsec_") else secret
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError as exc:
        raise ValueError("T2V_CALLBACK_SECRET must be whsec_ followed by base64") from exc


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: ``v1,<base64 HMAC-SHA256>``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def verify(
    secret: str, headers: Mapping[str, str], body: bytes, *, now: float, tolerance: float = 300
) -> bool:
    """A receiver's check (tests and benchmarks use it): any ``v1`` signature matches and
    the timestamp is within ``tolerance`` seconds of ``now``."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id, ts = lower["webhook-id"], int(lower["webhook-timestamp"])
    except (KeyError, ValueError):
        return False
    if abs(now - ts) > tolerance:
        return False
    expected = sign(secret, msg_id, ts, body)
    given = lower.get("webhook-signature", "").split()
    return any(hmac.compare_digest(expected, sig) for sig in given)


def callback_backoff(attempt: int, base: float, cap: float) -> float:
    """Seconds before try ``attempt + 1`` after ``attempt`` failed ones (1, 2, ...)."""
    return float(min(cap, base * (2 ** max(0, min(attempt - 1, 30)))))
