"""Webhook receiver: ModelsLab calls back when a generation ends; we poll at once.

ModelsLab's webhooks carry no signature, may arrive more than once and are best effort
(never retried). So this receiver trusts nothing in the body:
- the URL carries a secret (``T2V_WEBHOOK_URL`` must end with ``/<T2V_WEBHOOK_SECRET>``);
  a wrong secret gets a 404, as if nothing were here;
- a delivery is deduplicated on (track_id, id, status) in Redis;
- it never marks a job done: it makes the job's poll due now and sends ``t2v.poll``, whose
  one fetch confirms the result before anything is downloaded;
- a submit whose answer was lost (job still `submitting`, or back in the line to be
  resubmitted, no provider id) adopts the id the webhook names — so the job is not
  resubmitted and not paid for twice;
- a cancelled job's render that ends frees its account slot at once;
- it reads at most ``MAX_BODY`` bytes: a larger ``Content-Length`` is refused before the
  body is read, and a body without one (chunked) is counted as it streams in and refused
  once past the cap, so any client costs it constant memory; a body declared as anything
  but JSON is refused (415).
Polling stays the fallback for webhooks that never come.

Run it with ``python -m worker.webhook --host 0.0.0.0 --port 8080`` behind HTTPS.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from t2v_core.errors import ConfigError
from t2v_core.names import TASK_POLL, webhook_dedupe_key
from t2v_core.problems import ErrorKind
from t2v_core.retry import OUTPUT_TTL
from t2v_core.states import JobStatus
from t2v_core.store import JobStore, utcnow
from worker import instruments
from worker.modelslab.answers import as_id

log = logging.getLogger("t2v.webhook")

MAX_BODY = 256 * 1024
DEDUPE_TTL = 86400


def accept_webhook(
    store: JobStore,
    schedule: Callable[[str, str, float], None],
    job_id: str,
    provider_id: str | None,
    *,
    deadline: float,
    now: Callable[[], datetime] = utcnow,
) -> str:
    """Act on one (deduplicated) delivery; returns what was done, for the log."""
    rec = store.get(job_id)
    if rec is None:
        return "unknown job"
    if rec.provider_id and provider_id and rec.provider_id != provider_id:
        return "provider id does not match the job"
    # A submit whose answer was lost (still `submitting`, or already back in the line to
    # be resubmitted) adopts the render the webhook names: not resubmitted, not paid twice,
    # and it needs no account slot (its render is over).
    # A queued job that was never submitted has no render to adopt. A job failed because
    # the answers to its submits were lost (``submit_unknown``) adopts it too: that render
    # was paid for, and the webhook is the only way to learn its id.
    lost = (
        not rec.provider_id
        and rec.submit_count > 0
        and (
            rec.status in (JobStatus.SUBMITTING, JobStatus.QUEUED)
            or (rec.status is JobStatus.FAILED and rec.error_kind == ErrorKind.SUBMIT_UNKNOWN)
        )
    )
    if (
        lost
        and provider_id
        and store.transition(
            job_id,
            JobStatus.PROCESSING,
            expect=[rec.status],
            provider_id=provider_id,
            next_check_at=now(),
            deadline_at=now() + timedelta(seconds=deadline),
            expires_at=now() + OUTPUT_TTL,
            error="submit answer was lost; provider id taken from the webhook",
        )
    ):
        schedule(TASK_POLL, job_id, 0)
        return "adopted provider id; polling now"
    if rec.status is JobStatus.PROCESSING and store.update_if(
        job_id, [JobStatus.PROCESSING], next_check_at=now()
    ):
        schedule(TASK_POLL, job_id, 0)
        return "polling now"
    if rec.status is JobStatus.CANCELLED and provider_id:
        # Keep the record of what was paid for; a render still holding a slot is
        # confirmed over by its quiet poll, now.
        store.set_provider_id(job_id, provider_id)
        if (
            rec.next_check_at is not None
            and rec.downloading_at is None
            and store.update_if(job_id, [JobStatus.CANCELLED], next_check_at=now())
        ):
            schedule(TASK_POLL, job_id, 0)
            return "cancelled; confirming its render is over"
    return f"nothing to do in state {rec.status.value}"


def _refuse_by_headers(request: Request) -> JSONResponse | None:
    """Refuse before reading a byte: a declared size over the cap, or a body that says it
    is not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None:
        # isdigit() alone accepts "²"; a 5,000-digit number is over int()'s limit.
        if not (declared.isascii() and declared.isdigit()):
            return JSONResponse({"detail": "bad Content-Length"}, status_code=400)
        if len(declared.lstrip("0")) > len(str(MAX_BODY)) or int(declared) > MAX_BODY:
            return JSONResponse({"detail": f"body over {MAX_BODY} bytes"}, status_code=413)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind and kind != "application/json" and not kind.endswith("+json"):
        return JSONResponse({"detail": "body must be application/json"}, status_code=415)
    return None


async def read_bounded(request: Request, limit: int) -> bytes | None:
    """The body, or None once more than ``limit`` bytes came (nothing more is read)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def create_app(
    *,
    secret: str,
    store: JobStore,
    redis: Any,
    schedule: Callable[[str, str, float], None],
    deadline: float,
) -> Starlette:
    if len(secret) < 16:
        raise ConfigError("T2V_WEBHOOK_SECRET must be at least 16 characters")

    async def receive(request: Request) -> JSONResponse:
        try:
            answer = await handle(request)
        except Exception:
            instruments.webhook_delivery("error")
            raise
        instruments.webhook_delivery(delivery_outcome(answer))
        return answer

    async def handle(request: Request) -> JSONResponse:
        if not hmac.compare_digest(str(request.path_params["secret"]), secret):
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        refused = _refuse_by_headers(request)
        if refused is not None:
            return refused
        body = await read_bounded(request, MAX_BODY)
        if body is None:
            return JSONResponse({"detail": f"body over {MAX_BODY} bytes"}, status_code=413)
        try:
            payload = json.loads(body)
            if not isinstance(payload, dict):
                raise ValueError("not an object")
        except (ValueError, RecursionError):  # RecursionError: [[[[... nested too deep
            return JSONResponse({"detail": "body must be a JSON object"}, status_code=400)
        job_id = str(payload.get("track_id") or "")
        # Read like a submit answer's id (12.0 is "12"; an object or a bool is no id), so
        # a lost submit adopts the id a fetch will find.
        provider_id = as_id(payload.get("id"))
        status = str(payload.get("status") or "")
        if not job_id:
            return JSONResponse({"ok": True, "action": "no track_id"})
        mark = webhook_dedupe_key(job_id, str(provider_id), status)
        if not mark.isascii():
            try:
                mark.encode("utf-8")
            except UnicodeEncodeError:  # a "\ud800" escape: no Redis key, no row has it
                return JSONResponse(
                    {"detail": "track_id, id and status must be valid Unicode text"},
                    status_code=400,
                )
        fresh = await run_in_threadpool(redis.set, mark, 1, nx=True, ex=DEDUPE_TTL)
        if not fresh:
            return JSONResponse({"ok": True, "action": "duplicate"})
        try:
            action = await run_in_threadpool(
                accept_webhook, store, schedule, job_id, provider_id, deadline=deadline
            )
        except Exception:
            # Not acted on: let a repeated delivery try again (they may come twice).
            await run_in_threadpool(redis.delete, mark)
            raise
        log.info("webhook for job %s (%s): %s", job_id, status, action)
        return JSONResponse({"ok": True, "action": action})

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def metrics(_: Request) -> Response:
        # This process's delivery counters (t2v_webhook_deliveries_total); keep the path
        # off the public route: only /webhook/ needs to be reachable from the provider.
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

        instruments.instruments()  # registered even before the first delivery
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/webhook/{secret}", receive, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ]
    )


def delivery_outcome(answer: JSONResponse) -> str:
    """The ``t2v_webhook_deliveries_total`` label of an answer: refused (4xx), duplicate,
    ignored (no job named) or accepted."""
    if answer.status_code >= 400:
        return "refused"
    action = json.loads(bytes(answer.body)).get("action")
    if action == "duplicate":
        return "duplicate"
    return "ignored" if action == "no track_id" else "accepted"


def app_from_settings() -> Starlette:
    from t2v_core.brokers import shared_redis
    from t2v_core.db import settings_engine
    from worker.settings import get_worker_settings
    from worker.tasks import send_step

    settings = get_worker_settings()
    if settings.webhook_secret is None:
        raise ConfigError("T2V_WEBHOOK_SECRET is not set")
    secret = settings.webhook_secret.get_secret_value()
    if settings.webhook_url and not settings.webhook_url.rstrip("/").endswith("/" + secret):
        raise ConfigError("T2V_WEBHOOK_URL must end with /<T2V_WEBHOOK_SECRET>")
    return create_app(
        secret=secret,
        store=JobStore(settings_engine(settings)),
        redis=shared_redis(settings),
        schedule=send_step,
        deadline=settings.poll_deadline_seconds,
    )


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m worker.webhook")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # No access log: the request path carries the webhook secret.
    uvicorn.run(
        app_from_settings(), host=args.host, port=args.port, log_level="info", access_log=False
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
