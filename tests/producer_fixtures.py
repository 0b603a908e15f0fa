"""Fixtures for the producer's tests, on top of ``tests/conftest.py``'s real services.

Import the ones a module needs (``from tests.producer_fixtures import producer_fixture``:
the function is named ``*_fixture``, the fixture ``producer``, so parameters shadow nothing); each
test gets its own Redis database and its own SQLite file or PostgreSQL schema.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterator

import pytest
import redis
from sqlalchemy import func, select

from producer.api import Producer
from t2v_core.db import dispose_engines
from t2v_core.names import QUEUE_SUBMIT, queue_lists
from t2v_core.records import JobRow
from t2v_core.settings import Settings

MakeProducer = Callable[..., Producer]


@pytest.fixture(scope="session", name="redis_base")
def private_redis_base_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis of this session's own (overrides ``tests/conftest.py``'s in modules that
    import it): other sessions on the machine's shared Redis flush the same db numbers,
    which would make "exactly one message" checks flaky. Falls back to the shared one."""
    from worker.devstack import processes

    if processes.redis_server_binary() is None:
        yield os.environ.get("T2V_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
        return
    proc = processes.start_redis(tmp_path_factory.mktemp("producer-redis"))
    try:
        yield proc.url.rsplit("/", 1)[0]
    finally:
        proc.stop()


def make_settings(database_url: str, broker_url: str, **extra: object) -> Settings:
    # `_env_file=None`: a developer's .env must not leak into tests.
    return Settings(
        database_url=database_url,
        broker_url=broker_url,
        _env_file=None,
        **extra,  # type: ignore[call-arg]
    )


@pytest.fixture(name="make_producer")
def make_producer_fixture(redis_url: str) -> Iterator[MakeProducer]:
    """Build producers on this test's Redis db; closed at the end."""
    made: list[Producer] = []

    def make(database_url: str, broker_url: str | None = None, **extra: object) -> Producer:
        producer = Producer(make_settings(database_url, broker_url or redis_url, **extra))
        made.append(producer)
        return producer

    yield make
    for producer in made:
        producer.close()
    dispose_engines()


@pytest.fixture(name="producer")
def producer_fixture(database_url: str, make_producer: MakeProducer) -> Producer:
    """A producer on SQLite and on PostgreSQL (the test runs once for each)."""
    return make_producer(database_url)


@pytest.fixture(name="sqlite_producer")
def sqlite_producer_fixture(sqlite_url: str, make_producer: MakeProducer) -> Producer:
    return make_producer(sqlite_url)


@pytest.fixture(name="redis_client")
def redis_client_fixture(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def sent_job_ids(client: redis.Redis) -> list[str]:
    """The job ids the messages waiting in ``t2v.submit`` carry (every priority list): one
    per ``t2v.submit`` message, a whole chunk per ``t2v.admit`` message."""
    ids: list[str] = []
    for key in queue_lists(QUEUE_SUBMIT):
        for raw in client.lrange(key, 0, -1):
            message = json.loads(raw)
            args = json.loads(base64.b64decode(message["body"]))[0]
            ids += args[0] if isinstance(args[0], list) else [args[0]]
    return ids


def queue_length(client: redis.Redis) -> int:
    """How many jobs the messages waiting in ``t2v.submit`` hand to the workers."""
    return len(sent_job_ids(client))


def row_count(producer: Producer) -> int:
    producer.store.create_schema()
    with producer.store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(JobRow)).scalar_one())
