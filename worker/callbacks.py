"""Delivering a job's completion callback (``t2v.callback``), at least once.

The notification was marked due in the same UPDATE that moved the job to a final state or
`parked` (``t2v_core.store_callbacks.due_values``); ``JobStore.notify`` sent this task
after that commit, and reconcile sends it again for any notification still due (a lost
message, a crash mid-send, a broker wipe). One send:

1. claim notification ``callback_seq`` (compare-and-set: a second copy of the message drops);
2. ``on_done``: publish the application's task with ``[job_id, status]`` and the
   notification id as its Celery task id (``on_done_sent_at`` records it);
3. ``callback_url``: POST the signed JSON body, only to an address
   ``netguard.check_url`` vetted (``T2V_CALLBACK_ALLOWED_HOSTS``), over the pinned session,
   no redirects followed; any 2xx is delivered (``callback_delivered_at``);
4. anything left undelivered is tried again after ``callback_backoff`` with a countdown
   (never a sleep) until ``callback_max_attempts``, then given up and recorded
   (``callback_error``). A URL the guard refuses is given up at once.

This module must never log or send the callback secret, never connect to an address it
did not vet, and never decide anything about the job itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import requests
from sqlalchemy import func

from t2v_core.callbacks import callback_backoff, callback_body, notification_id, signed_headers
from t2v_core.errors import TransientError
from t2v_core.names import DEFAULT_ON_DONE_QUEUE, TASK_CALLBACK
from t2v_core.records import JobRecord, JobRow
from worker.netguard import DownloadRefused, check_url, url_port
from worker.pinning import pinned
from worker.steps.runtime import Runtime

log = logging.getLogger("t2v.callbacks")

# publish(task name, args, queue, task id): send the application's Celery task.
Publish = Callable[[str, list[str], str, str], None]


class CallbackRefused(Exception):
    """Retrying cannot help (the URL is refused by the SSRF guard, or answered 410 Gone)."""


def callback_step(rt: Runtime, job_id: str, publish: Publish) -> str:
    """Send job ``job_id``'s due notification; returns what happened (for logs and tests)."""
    rec = rt.store.get(job_id)
    if rec is None or rec.callback_due_at is None:
        return "not due"
    seq = rec.callback_seq
    # Held long enough for one POST; a sender killed mid-way is re-sent by reconcile after.
    lease = max(
        rt.settings.claim_lease, 2 * rt.settings.callback_timeout + rt.settings.connect_timeout
    )
    if not rt.store.claim_callback(job_id, seq, lease=lease, slack=rt.settings.claim_slack):
        return "taken"
    status = rec.callback_status or rec.status.value
    msg_id = notification_id(job_id, status, seq)
    problems: list[str] = []
    refused = False
    if rec.on_done and rec.on_done_sent_at is None:
        try:
            publish(
                rec.on_done, [job_id, status], rec.on_done_queue or DEFAULT_ON_DONE_QUEUE, msg_id
            )
            rt.store.record_callback(job_id, seq, on_done_sent_at=rt.now())
        except Exception as exc:  # kombu/redis errors all mean "not sent"
            problems.append(f"on_done {rec.on_done}: {type(exc).__name__}: {exc}")
    if rec.callback_url and rec.callback_delivered_at is None:
        try:
            post_callback(rt, rec, status, msg_id)
            rt.store.record_callback(job_id, seq, callback_delivered_at=rt.now())
        except CallbackRefused as exc:
            refused = True
            problems.append(str(exc))
        except (TransientError, requests.RequestException) as exc:
            problems.append(f"callback_url: {exc}")
    attempts = rec.callback_attempts + 1  # the claim counted this one
    if not problems:
        rt.store.record_callback(
            job_id,
            seq,
            callback_due_at=None,
            callback_error=None,
            callback_delivered_at=func.coalesce(JobRow.callback_delivered_at, rt.now()),
        )
        log.info("job %s: callback %s delivered", job_id, msg_id)
        return "delivered"
    error = "; ".join(problems)
    if refused or attempts >= rt.settings.callback_max_attempts:
        rt.store.record_callback(
            job_id, seq, callback_due_at=None, callback_error=f"given up after {attempts}: {error}"
        )
        log.warning("job %s: callback %s given up: %s", job_id, msg_id, error)
        return "given up"
    delay = callback_backoff(
        attempts, rt.settings.callback_retry_base, rt.settings.callback_retry_max
    )
    rt.store.record_callback(job_id, seq, callback_due_at=rt.at(delay), callback_error=error)
    rt.schedule(TASK_CALLBACK, job_id, delay)
    log.info("job %s: callback %s failed (%s); again in %.1fs", job_id, msg_id, error, delay)
    return "retry"


def post_callback(rt: Runtime, rec: JobRecord, status: str, msg_id: str) -> None:
    """POST the signed body to ``rec.callback_url`` through the SSRF guard; raises unless
    the receiver answered 2xx."""
    url = rec.callback_url or ""
    secret = rt.settings.callback_secret
    if secret is None or not secret.get_secret_value():
        raise TransientError("T2V_CALLBACK_SECRET is not set: callbacks cannot be signed")
    try:
        vetted = check_url(
            url,
            rt.settings.callback_allowed_hosts,
            what="callback",
            setting="T2V_CALLBACK_ALLOWED_HOSTS",
        )
    except DownloadRefused as exc:
        raise CallbackRefused(str(exc)) from None
    body = callback_body(rec, status)
    headers = signed_headers(secret.get_secret_value(), msg_id, int(time.time()), body)
    parts = urlsplit(url)
    with pinned(parts.hostname or "", url_port(parts), str(vetted[0]) if vetted else None):
        resp = rt.http.post(
            url,
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=(rt.settings.connect_timeout, rt.settings.callback_timeout),
        )
    resp.close()
    if resp.status_code == 410:
        raise CallbackRefused(f"callback_url answered 410 Gone: not sent again ({url})")
    if not 200 <= resp.status_code < 300:
        raise TransientError(f"callback_url answered HTTP {resp.status_code}")
