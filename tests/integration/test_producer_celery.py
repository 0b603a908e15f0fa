"""Messages from ``enqueue``/``enqueue_many`` are consumed by a stock Celery worker.

This module is also the throwaway Celery app the worker subprocess loads
(``celery -A tests.integration.test_producer_celery worker``): its ``t2v.submit`` task
appends the job id to a Redis list (``t2v.admit``, the batch ``enqueue_many`` sends, appends
each of its ids), so the test can check every id arrived exactly once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import redis
from celery import Celery
from kombu import Queue

from producer.api import Producer
from t2v_core.names import QUEUE_SUBMIT, TASK_ADMIT, TASK_SUBMIT
from tests.producer_fixtures import (  # noqa: F401 - fixtures, found by pytest by name
    MakeProducer,
    make_producer_fixture,
    private_redis_base_fixture,
    redis_client_fixture,
    sqlite_producer_fixture,
)

REPO = Path(__file__).resolve().parents[2]
SEEN = "producer-test:seen"

app = Celery(
    "producer-consumer-test",
    broker=os.environ.get("T2V_TEST_CONSUMER_BROKER", "redis://127.0.0.1:6379/0"),
)
app.conf.update(
    task_queues=[Queue(QUEUE_SUBMIT, routing_key=QUEUE_SUBMIT)],
    accept_content=["json"],
    task_ignore_result=True,
    worker_hijack_root_logger=False,
)


@app.task(name=TASK_SUBMIT)
def submit(job_id: str) -> None:
    client = redis.Redis.from_url(app.conf.broker_url)
    client.rpush(SEEN, job_id)
    client.close()


@app.task(name=TASK_ADMIT)
def admit(job_ids: list[str]) -> None:
    client = redis.Redis.from_url(app.conf.broker_url)
    client.rpush(SEEN, *job_ids)
    client.close()


def test_a_stock_celery_worker_consumes_every_message_exactly_once(
    sqlite_producer: Producer, redis_url: str, redis_client: redis.Redis
) -> None:
    jobs = sqlite_producer.enqueue_many([{"prompt": f"p{i}"} for i in range(1500)])
    jobs.append(sqlite_producer.enqueue({"prompt": "single"}))
    expected = sorted(j.id for j in jobs)
    env = {**os.environ, "T2V_TEST_CONSUMER_BROKER": redis_url, "PYTHONPATH": str(REPO)}
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.integration.test_producer_celery",
            "worker",
            "-Q",
            QUEUE_SUBMIT,
            "-P",
            "threads",
            "-c",
            "4",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "WARNING",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while redis_client.llen(SEEN) < len(expected) and time.monotonic() < deadline:
            assert worker.poll() is None, worker.communicate()[0]
            time.sleep(0.1)
        time.sleep(0.5)  # a duplicate would show up now
        seen = sorted(x.decode() for x in redis_client.lrange(SEEN, 0, -1))
    finally:
        worker.terminate()
        output = worker.communicate(timeout=30)[0]
    assert seen == expected, output[-3000:]
    assert redis_client.llen(QUEUE_SUBMIT) == 0
