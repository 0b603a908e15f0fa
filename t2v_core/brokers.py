"""Which broker carries the task messages, and where the shared state lives.

The broker (``T2V_BROKER_URL``) carries Celery's messages: Redis, or RabbitMQ
(``amqp://``) with quorum queues and native delayed delivery. The shared state (the slot
line, locks, eta lists, redrive marks: every Redis key in ``t2v_core.names``) always lives
in Redis, named by ``T2V_REDIS_URL``; when that is unset it is the broker URL, which only
works when the broker is Redis. Every Redis client of the system is made here
(``shared_redis``), so no module derives one from the broker URL on its own.
"""

from __future__ import annotations

from typing import Any

from t2v_core.errors import ConfigError
from t2v_core.names import QUEUES

#: URL schemes of a Redis server (kombu's and redis-py's spellings).
REDIS_SCHEMES = ("redis", "rediss", "redis+socket", "unix")
#: URL schemes of an AMQP 0-9-1 broker (RabbitMQ).
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
#: The topic exchange the task queues are bound to on RabbitMQ (native delayed delivery
#: forwards to the queue's own exchange and refuses direct ones).
AMQP_EXCHANGE = "t2v"


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def is_redis_url(url: str) -> bool:
    return _scheme(url) in REDIS_SCHEMES


def is_amqp_url(url: str) -> bool:
    return _scheme(url) in AMQP_SCHEMES


def shared_redis_url(settings: Any) -> str:
    """The Redis URL of the shared state: ``T2V_REDIS_URL``, else the broker's own URL.

    Raises ``ConfigError`` naming ``T2V_REDIS_URL`` when the broker is not Redis and no
    Redis URL is set (called at worker start, so a misconfigured host fails at once).
    """
    url: str | None = getattr(settings, "redis_url", None)
    if url:
        if not is_redis_url(url):
            raise ConfigError(f"T2V_REDIS_URL={url} is not a redis:// URL")
        return url
    broker: str = settings.broker_url
    if is_redis_url(broker):
        return broker
    raise ConfigError(
        f"T2V_REDIS_URL is not set and the broker ({_scheme(broker)}://) is not Redis: the"
        " slot line, locks and eta lists live in Redis; set T2V_REDIS_URL=redis://host:6379/0"
    )


def shared_redis(settings: Any, **kwargs: Any) -> Any:
    """A redis-py client on the shared-state Redis (``shared_redis_url``)."""
    import redis

    return redis.Redis.from_url(shared_redis_url(settings), **kwargs)


def task_queues(broker_url: str) -> list[Any]:
    """The task queues, declared the same way by the worker and the producer.

    Redis: plain queues. RabbitMQ: quorum queues (replicated, durable; Celery turns on
    native delayed delivery for them) bound to one topic exchange, as native delayed
    delivery requires.
    """
    from kombu.entity import Exchange, Queue

    if is_amqp_url(broker_url):
        exchange = Exchange(AMQP_EXCHANGE, type="topic", durable=True)  # type: ignore[no-untyped-call]
        return [
            Queue(  # type: ignore[no-untyped-call]
                q,
                exchange,
                routing_key=q,
                durable=True,
                queue_arguments={"x-queue-type": "quorum"},
            )
            for q in QUEUES
        ]
    return [Queue(q, routing_key=q) for q in QUEUES]  # type: ignore[no-untyped-call]
