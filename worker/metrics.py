"""The state exporter: gauges of what is waiting, read at each scrape (one replica).

    t2v_queue_length{queue}                messages waiting in each Redis queue
    t2v_jobs{status}                       rows in the job table by state
    t2v_slots_in_use / _limit / _effective_limit
                                           the provider's queued-request slots
    t2v_jobs_waiting_for_slot              jobs waiting in line for a slot (cost nothing)
    t2v_oldest_waiting_job_age_seconds     age of the oldest job in that line (0: none)
    t2v_last_reconcile_timestamp_seconds   when reconcile last ran (beat is alive)
    t2v_slots_provider_max                 the N of the last "Maximum N queued requests"

A scrape never reads the whole table: jobs in flight are counted through the status
index, jobs in a final state are counted in full once (at start, then every 10 minutes in
the background) and each scrape adds only those that got there since
(``worker.state_counts``); the line's figures come from Redis (the waiting line is a
sorted set ordered by creation time). The counters and histograms of what workers did are
on each worker's own port (``worker.worker_metrics``). Run ``python -m worker.metrics``
(port ``T2V_METRICS_PORT``, 9840) on the private network: no auth, and it never shows a
prompt, a key or a job id.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from t2v_core.names import QUEUES, RECONCILE_LAST_RUN_KEY, queue_lists
from t2v_core.states import JobStatus
from t2v_core.store import JobStore
from worker.limiter import AccountLimiter
from worker.state_counts import StateCounts

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class StateCollector(Collector):
    """Reads the queues, the table's counts and the slot line at each scrape."""

    def __init__(
        self, store: JobStore, redis: Any, limiter: AccountLimiter, counts: StateCounts
    ) -> None:
        self.store = store
        self.state_counts = counts
        self.redis = redis
        self.limiter = limiter

    def collect(self) -> Iterator[GaugeMetricFamily]:
        # Every Redis read in one round trip, then the bounded counts from the table. A
        # queue is a Redis list per kombu priority step: its length is their sum.
        lists = [(q, key) for q in QUEUES for key in queue_lists(q)]
        view, oldest_age, extra = self.limiter.snapshot(
            *(("llen", key) for _, key in lists), ("get", RECONCILE_LAST_RUN_KEY)
        )
        *lengths, last_reconcile = extra
        waiting = dict.fromkeys(QUEUES, 0)
        for (name, _), length in zip(lists, lengths, strict=True):
            waiting[name] += int(length)
        queue = GaugeMetricFamily(
            "t2v_queue_length", "Messages waiting in each Celery queue.", labels=["queue"]
        )
        for name, length in waiting.items():
            queue.add_metric([name], length)
        yield queue
        counts = self.state_counts.counts()
        jobs = GaugeMetricFamily("t2v_jobs", "Jobs in the table by state.", labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], counts.get(status.value, 0))
        yield jobs
        for name, doc, value in (
            ("t2v_slots_in_use", "Provider queued-request slots held by our jobs.", view.in_use),
            ("t2v_slots_limit", "The account's configured queued-request limit.", view.configured),
            (
                "t2v_slots_effective_limit",
                "The limit in use (lowered by the provider's 429s while another system"
                " shares the key, grown back step by step).",
                view.effective,
            ),
            (
                "t2v_slots_provider_max",
                "The N of the provider's last 'Maximum N queued requests' answer (0: none).",
                view.provider_max or 0,
            ),
            ("t2v_jobs_waiting_for_slot", "Jobs waiting in line for a slot.", view.waiting),
            (
                "t2v_oldest_waiting_job_age_seconds",
                "Age of the oldest job waiting for a slot (0: none waits).",
                oldest_age,
            ),
            (
                "t2v_last_reconcile_timestamp_seconds",
                "Unix time reconcile last ran (0: never): beat is alive while it moves.",
                float(last_reconcile or 0),
            ),
        ):
            yield GaugeMetricFamily(name, doc, value=value)


def state_registry(
    store: JobStore, redis: Any, limiter: AccountLimiter, counts: StateCounts | None = None
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    counts = counts or StateCounts(store.engine)
    registry.register(StateCollector(store, redis, limiter, counts))
    return registry


def render_metrics(registry: CollectorRegistry) -> str:
    """One scrape's text (what ``/metrics`` answers)."""
    return generate_latest(registry).decode()


def create_app(
    store: JobStore, redis: Any, limiter: AccountLimiter, counts: StateCounts | None = None
) -> Starlette:
    registry = state_registry(store, redis, limiter, counts)

    async def metrics(_: Request) -> Response:
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE)

    return Starlette(routes=[Route("/metrics", metrics, methods=["GET"])])


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    from t2v_core.brokers import shared_redis
    from t2v_core.db import settings_engine
    from worker.settings import get_worker_settings

    settings = get_worker_settings()
    parser = argparse.ArgumentParser(prog="python -m worker.metrics")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=settings.metrics_port)
    args = parser.parse_args(list(argv) if argv is not None else None)
    client = shared_redis(settings)
    store = JobStore(settings_engine(settings))
    counts = StateCounts(store.engine)
    counts.recount()  # the one full count, before the first scrape
    stop = threading.Event()
    threading.Thread(target=counts.refresh_forever, args=(stop,), daemon=True).start()
    app = create_app(store, client, AccountLimiter(client, settings.account_slots), counts)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
