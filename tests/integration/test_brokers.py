"""The same pipeline on both brokers (``broker_env``: Redis, and RabbitMQ with quorum
queues and native delayed delivery), and where countdown messages wait on each: held by
the worker on Redis, in the broker's delay queues on RabbitMQ."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from t2v_core.states import JobStatus
from tests.conftest import SimControl, rabbitmqctl
from tests.integration.pipeline import Pipeline, enqueue_small
from tests.integration.test_pipeline import make_env

pytestmark = pytest.mark.slow


def _env(
    broker_env: dict[str, str], database_url: str, sim: SimControl, tmp: Path
) -> dict[str, str]:
    return make_env(
        broker_env["T2V_BROKER_URL"],
        database_url,
        sim,
        {"T2V_STORAGE_URL": str(tmp / "videos"), **broker_env},
    )


def test_pipeline_end_to_end_on_each_broker(
    broker_env: dict[str, str], pg_url: str, sim: SimControl, tmp_path: Path
) -> None:
    pipe = Pipeline(_env(broker_env, pg_url, sim, tmp_path), tmp_path / "logs")
    pipe.start_worker()
    try:
        ids = enqueue_small(pipe, 8, "broker")
        records = pipe.wait_all(ids, timeout=120)
    finally:
        pipe.stop()
    assert [r.status for r in records] == [JobStatus.SUCCEEDED] * 8, [r.error for r in records]
    submits = sim.stats()["submits"]["by_track_id"]  # type: ignore[index]
    assert all(submits.get(i) == 1 for i in ids), submits


def _delayed_messages(vhost: str) -> int:
    out = rabbitmqctl("list_queues", "-p", vhost, "name", "messages")
    total = 0
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].startswith("celery_delayed_") and parts[1].isdigit():
            total += int(parts[1])
    return total


def _held_by_worker(pipe: Pipeline) -> int:
    """Countdown (eta) messages the worker holds in memory, as ``celery inspect`` says."""
    from celery import Celery

    app = Celery(broker=pipe.env["T2V_BROKER_URL"], set_as_current=False)
    try:
        replies = app.control.inspect(timeout=5).scheduled() or {}
    finally:
        app.close()
    assert replies, "the worker did not answer inspect scheduled"
    return sum(len(v) for v in replies.values())


def test_countdowns_wait_in_the_broker_on_rabbitmq_in_the_worker_on_redis(
    broker_env: dict[str, str], sqlite_url: str, sim: SimControl, tmp_path: Path
) -> None:
    n = 5
    slow_polls = {"T2V_POLL_MIN_DELAY": "45", "T2V_POLL_MAX_DELAY": "60"}
    env = {**_env(broker_env, sqlite_url, sim, tmp_path), **slow_polls}
    env["T2V_POLL_MAX_FIRST_DELAY"] = "60"
    pipe = Pipeline(env, tmp_path / "logs")
    pipe.start_worker()
    try:
        ids = enqueue_small(pipe, n, "countdown")
        # Every job submitted and waiting for its first poll (45-60 s away).
        pipe.wait_all(ids, timeout=60, done=lambda r: r.status == JobStatus.PROCESSING)
        rabbit = broker_env["T2V_BROKER_URL"].startswith("amqp")
        deadline = time.monotonic() + 30
        while True:
            held = _held_by_worker(pipe)
            in_broker = _delayed_messages(env["T2V_BROKER_URL"].rsplit("/", 1)[1]) if rabbit else 0
            if (in_broker if rabbit else held) >= n or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        pipe.stop()
    if rabbit:
        assert in_broker >= n, in_broker  # the poll messages sit in the delay queues
        assert held == 0  # and none in the worker's memory
    else:
        assert held >= n  # Redis: the worker holds each countdown message until due
