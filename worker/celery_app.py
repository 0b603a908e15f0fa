"""The Celery application, configured from ``WorkerSettings`` when first used.

Started the way Celery users expect: ``celery -A worker worker -Q t2v.submit,t2v.poll,...``
(``worker/__init__.py`` exposes ``app``). Choices, each for a reason:

- late acks: a message is acknowledged after its step ran, so a worker host that dies
  mid-step has it redelivered; ``task_reject_on_worker_lost`` stays off so a task that kills
  its process is not redelivered in a loop; the table (claims + reconcile) covers the rest;
- on Redis, ``visibility_timeout`` above every countdown we ever schedule (checked at
  start-up): a countdown message is held unacknowledged by the worker until it is due;
  on RabbitMQ, quorum queues + native delayed delivery keep countdowns in the broker;
- prefetch multiplier 1: countdown tasks are held outside the prefetch window anyway, and
  a fresh host should take ready work instead of a busy one hoarding it;
- results ignored (the job table is the result store); task events only when asked
  (``T2V_TASK_EVENTS``) or turned on by Flower;
- one queue per kind of step, so a backlog of polls never starves submits.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from t2v_core.brokers import AMQP_EXCHANGE, is_amqp_url, shared_redis_url, task_queues
from t2v_core.errors import ConfigError
from t2v_core.names import BEAT_RECONCILE, QUEUE_MAINTENANCE, TASK_RECONCILE, TASK_ROUTES
from worker.settings import WorkerSettings, get_worker_settings

__all__ = ["app"]


def longest_countdown(settings: WorkerSettings) -> float:
    """The longest countdown any step may schedule under these settings."""
    from worker.policy import PollPolicy

    policy = PollPolicy.from_settings(settings)
    return max(policy.max_first_delay, policy.max_delay, settings.callback_retry_max, 120.0)


# RabbitMQ's delay chain hands a countdown over late: Celery sends whole seconds (the
# fraction dropped) and each TTL hop adds some; 1.3-3.6 s late at the median
# (``benchmarks/bench_delays.py``). A poll's countdown through it leaves this much early:
# a worker holds a message that comes before its eta, so a poll starts at most this early
# (a look at a render, harmless); other steps' countdowns (a submit honouring a
# Retry-After) are sent as they are. ``claim_slack`` must cover it.
AMQP_DELAY_LEAD = 1.0


def broker_options(settings: WorkerSettings) -> dict[str, Any]:
    """What differs between the brokers (see README "Choosing a broker").

    Redis: countdown messages are held unacknowledged by the worker until due, so the
    visibility timeout must exceed the longest countdown. RabbitMQ: quorum queues on a
    topic exchange; Celery sees them (``worker_detect_quorum_queues``), turns off global
    QoS (quorum queues refuse it) and declares its native delayed delivery queues, so a
    countdown message waits in the broker, not in the worker; an unacked message goes back
    to its queue as soon as the consumer's channel closes (no visibility timeout).
    """
    if is_amqp_url(settings.broker_url):
        if settings.claim_slack < AMQP_DELAY_LEAD:
            raise ConfigError(
                f"T2V_CLAIM_SLACK={settings.claim_slack:g}s must be at least"
                f" {AMQP_DELAY_LEAD:g}s with RabbitMQ: polls are sent that much early, and a"
                " poll that comes before its claim's slack is dropped"
            )
        return {
            "broker_transport_options": {"confirm_publish": True},
            "worker_detect_quorum_queues": True,
            "broker_native_delayed_delivery_queue_type": "quorum",
            "task_default_exchange": AMQP_EXCHANGE,
            "task_default_exchange_type": "topic",
            "task_default_queue_type": "quorum",
        }
    if longest_countdown(settings) >= settings.visibility_timeout:
        raise ConfigError(
            f"T2V_VISIBILITY_TIMEOUT={settings.visibility_timeout:.0f}s must exceed the longest"
            f" poll countdown ({longest_countdown(settings):.0f}s), or Redis redelivers held"
            " countdown messages and polls run twice"
        )
    return {"broker_transport_options": {"visibility_timeout": settings.visibility_timeout}}


def celery_config(settings: WorkerSettings) -> dict[str, Any]:
    shared_redis_url(settings)  # ConfigError at start when T2V_REDIS_URL is needed and unset
    return {
        "broker_url": settings.broker_url,
        **broker_options(settings),
        "broker_connection_retry_on_startup": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": False,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": settings.worker_prefetch_multiplier,
        "task_ignore_result": True,
        "result_backend": None,
        # Off unless asked for: each event is a publish per task (about 10 % of a job's
        # CPU); Flower enables them on the workers it watches (its `enable_events`).
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        "task_serializer": "json",
        "accept_content": ["json"],
        "enable_utc": True,
        "timezone": "UTC",
        "task_queues": task_queues(settings.broker_url),
        "task_default_queue": QUEUE_MAINTENANCE,
        "task_routes": {name: {"queue": q} for name, q in TASK_ROUTES.items()},
        "task_time_limit": settings.task_time_limit,
        "task_soft_time_limit": max(settings.task_time_limit - 30, settings.task_time_limit * 0.9),
        # A Redis blip must not kill running steps (a submit mid-request would become an
        # unknown outcome); a redelivered copy is dropped by the step's claim anyway.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "beat_schedule": {
            BEAT_RECONCILE: {
                "task": TASK_RECONCILE,
                "schedule": settings.reconcile_interval,
                "options": {"queue": QUEUE_MAINTENANCE, "expires": settings.reconcile_interval},
            }
        },
    }


app = Celery("t2v", set_as_current=False, include=["worker.tasks"])
# A promise: the settings are read the first time the configuration is needed, not at import.
app.add_defaults(lambda: celery_config(get_worker_settings()))
