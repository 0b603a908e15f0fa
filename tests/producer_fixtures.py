"""Fixtures for the producer's tests, on top of ``tests/conftest.py``'s real services.

Import the ones a module needs (``from tests.producer_fixtures import producer``); each
test gets its own Redis database and its own SQLite file or PostgreSQL schema.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis
from sqlalchemy import func, select

from producer.api import Producer
from producer.records import JobRow
from producer.settings import Settings
from producer.states import QUEUE_SUBMIT

MakeProducer = Callable[..., Producer]


def make_settings(database_url: str, broker_url: str, **extra: object) -> Settings:
    # `_env_file=None`: a developer's .env must not leak into tests.
    return Settings(
        database_url=database_url, broker_url=broker_url, _env_file=None, **extra  # type: ignore[call-arg]
    )


@pytest.fixture
def make_producer(redis_url: str) -> Iterator[MakeProducer]:
    """Build producers on this test's Redis db; closed at the end."""
    made: list[Producer] = []

    def make(database_url: str, broker_url: str | None = None, **extra: object) -> Producer:
        producer = Producer(make_settings(database_url, broker_url or redis_url, **extra))
        made.append(producer)
        return producer

    yield make
    for producer in made:
        producer.close()


@pytest.fixture
def producer(database_url: str, make_producer: MakeProducer) -> Producer:
    """A producer on SQLite and on PostgreSQL (the test runs once for each)."""
    return make_producer(database_url)


@pytest.fixture
def sqlite_producer(sqlite_url: str, make_producer: MakeProducer) -> Producer:
    return make_producer(sqlite_url)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def queue_length(client: redis.Redis) -> int:
    return int(client.llen(QUEUE_SUBMIT))


def row_count(producer: Producer) -> int:
    producer.store.create_schema()
    with producer.store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(JobRow)).scalar_one())
