"""Prometheus metrics Flower does not have: queue depth, jobs by state, account slots.

Flower exports task events but no queue length, and knows nothing of our job table. This
serves ``/metrics`` in the Prometheus text format (no client library needed):

    t2v_queue_length{queue="t2v.poll"}        messages waiting in each Redis queue
    t2v_jobs{status="processing"}             rows in the job table by state
    t2v_account_slots_in_use / _limit         the provider's queued-request limit in use
    t2v_account_slots_waiting                 jobs waiting for a slot (cost nothing)
    t2v_account_slots_effective_limit         the limit in use, learned from the provider's
                                              429s when another system shares the key
    t2v_account_provider_max                  the N of the last "Maximum N queued requests"
    t2v_account_queue_full_429s_total         429s for a full provider queue

Scale workers on ``t2v_queue_length``. Run ``python -m worker.metrics --port 9808`` next to
Flower, on the same private network: like Flower's ``/metrics`` it has no auth, and it
never shows a prompt, a key or a job id.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from t2v_core.names import QUEUES, queue_lists
from t2v_core.states import JobStatus
from t2v_core.store import JobStore
from worker.limiter import AccountLimiter


def render_metrics(store: JobStore, redis: Any, limiter: AccountLimiter) -> str:
    lines = [
        "# HELP t2v_queue_length Messages waiting in each Celery queue (Redis list length).",
        "# TYPE t2v_queue_length gauge",
    ]
    for queue in QUEUES:
        waiting = sum(int(redis.llen(key)) for key in queue_lists(queue))
        lines.append(f't2v_queue_length{{queue="{queue}"}} {waiting}')
    counts = store.count_by_status()
    lines += ["# HELP t2v_jobs Jobs in the table by state.", "# TYPE t2v_jobs gauge"]
    for status in JobStatus:
        lines.append(f't2v_jobs{{status="{status.value}"}} {counts.get(status.value, 0)}')
    view = limiter.view()
    lines += [
        "# HELP t2v_account_slots_in_use Provider queued-request slots held by our jobs.",
        "# TYPE t2v_account_slots_in_use gauge",
        f"t2v_account_slots_in_use {view.in_use}",
        "# HELP t2v_account_slots_limit The account's queued-request limit.",
        "# TYPE t2v_account_slots_limit gauge",
        f"t2v_account_slots_limit {view.configured}",
        "# HELP t2v_account_slots_effective_limit The limit in use (lowered by the provider's"
        " 429s while another system shares the key, grown back step by step).",
        "# TYPE t2v_account_slots_effective_limit gauge",
        f"t2v_account_slots_effective_limit {view.effective}",
        "# HELP t2v_account_provider_max The N of the provider's last 'Maximum N queued"
        " requests' answer (0: none seen).",
        "# TYPE t2v_account_provider_max gauge",
        f"t2v_account_provider_max {view.provider_max or 0}",
        "# HELP t2v_account_queue_full_429s_total 429 answers for a full provider queue.",
        "# TYPE t2v_account_queue_full_429s_total counter",
        f"t2v_account_queue_full_429s_total {view.queue_full_429s}",
        "# HELP t2v_account_slots_waiting Jobs waiting for a provider slot.",
        "# TYPE t2v_account_slots_waiting gauge",
        f"t2v_account_slots_waiting {view.waiting}",
    ]
    return "\n".join(lines) + "\n"


def create_app(store: JobStore, redis: Any, limiter: AccountLimiter) -> Starlette:
    async def metrics(_: Request) -> PlainTextResponse:
        body = await run_in_threadpool(render_metrics, store, redis, limiter)
        return PlainTextResponse(body, media_type="text/plain; version=0.0.4")

    return Starlette(routes=[Route("/metrics", metrics, methods=["GET"])])


def main(argv: Sequence[str] | None = None) -> int:
    import redis as redis_lib
    import uvicorn

    from t2v_core.db import get_engine
    from worker.settings import get_worker_settings

    parser = argparse.ArgumentParser(prog="python -m worker.metrics")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9808)
    args = parser.parse_args(list(argv) if argv is not None else None)
    settings = get_worker_settings()
    client = redis_lib.Redis.from_url(settings.broker_url)
    app = create_app(
        JobStore(get_engine(settings.database_url)),
        client,
        AccountLimiter(client, settings.account_slots),
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
