"""enqueue against real Redis and both databases: the row, the message, idempotency, failure."""

from __future__ import annotations

import base64
import json
import multiprocessing
import socket
import time
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer.api import Producer
from producer.errors import EnqueueError, JobFailed, JobNotFound, JobTimeout, RequestInvalid
from producer.request import Text2VideoRequest
from producer.states import QUEUE_SUBMIT, TASK_SUBMIT, JobStatus
from tests.producer_fixtures import (  # noqa: F401 - fixtures, found by pytest by name
    MakeProducer,
    make_producer_fixture,
    make_settings,
    private_redis_base_fixture,
    producer_fixture,
    queue_length,
    redis_client_fixture,
    row_count,
    sqlite_producer_fixture,
)

PROMPT = "A lighthouse at dusk, waves rolling in, secret-prompt-marker"


def _messages(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in client.lrange(QUEUE_SUBMIT, 0, -1)]


def _args(message: dict[str, Any]) -> list[Any]:
    body = json.loads(base64.b64decode(message["body"]))
    return list(body[0])


def test_enqueue_writes_the_row_then_sends_only_the_job_id(
    producer: Producer, redis_client: redis.Redis
) -> None:
    job = producer.enqueue(Text2VideoRequest(prompt=PROMPT, num_frames=16))
    record = producer.load(job.id)
    assert record.status is JobStatus.QUEUED
    assert record.request["prompt"] == PROMPT and record.request["num_frames"] == 16
    assert record.model_effective == "wan2.2" and record.next_check_at is not None
    raw = redis_client.lrange(QUEUE_SUBMIT, 0, -1)
    assert len(raw) == 1
    text = raw[0].decode()
    assert job.id in text
    assert "secret-prompt-marker" not in text and "lighthouse" not in text.lower()
    assert '"key"' not in base64.b64decode(json.loads(text)["body"]).decode()
    message = json.loads(text)
    assert message["headers"]["task"] == TASK_SUBMIT
    assert _args(message) == [job.id]


def test_unknown_models_are_recorded_as_asked_and_as_run(producer: Producer) -> None:
    with pytest.warns(UserWarning, match="wanx"):
        job = producer.enqueue({"prompt": "x", "model_id": "wanx"})
    assert (job.record.model_requested, job.record.model_effective) == ("wanx", "wan2.2")
    assert producer.load(job.id).request["model_id"] == "wan2.2"


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(["width", "num_frames", "fps", "guidance_scale", "key"]),
       value=st.one_of(st.integers(min_value=10_000), st.text(max_size=3)))
def test_an_invalid_request_reaches_neither_table_nor_broker(
    sqlite_producer: Producer, redis_client: redis.Redis, field: str, value: object
) -> None:
    rows, queued = row_count(sqlite_producer), queue_length(redis_client)
    with pytest.raises(RequestInvalid) as info:
        sqlite_producer.enqueue({"prompt": "x", field: value})
    assert [e["field"] for e in info.value.errors] == [field]
    with pytest.raises(RequestInvalid):
        sqlite_producer.enqueue_many([{"prompt": "ok"}, {"prompt": "x", field: value}])
    assert (row_count(sqlite_producer), queue_length(redis_client)) == (rows, queued)


def test_same_idempotency_key_gives_one_row_and_one_message(
    producer: Producer, redis_client: redis.Redis
) -> None:
    first = producer.enqueue({"prompt": "x"}, idempotency_key="order-42")
    second = producer.enqueue(Text2VideoRequest(prompt="x"), idempotency_key="order-42")
    assert first.id == second.id
    assert row_count(producer) == 1 and queue_length(redis_client) == 1
    with pytest.raises(RequestInvalid, match="idempotency_key='order-42': already used"):
        producer.enqueue({"prompt": "something else"}, idempotency_key="order-42")
    with pytest.raises(RequestInvalid, match="idempotency_key"):
        producer.enqueue({"prompt": "x"}, idempotency_key=" ")


def _enqueue_in_child(url: str, broker: str, barrier: Any, out: Any) -> None:
    child = Producer(make_settings(url, broker))
    barrier.wait(timeout=30)
    out.put(child.enqueue({"prompt": "race"}, idempotency_key="same-key").id)


def test_concurrent_enqueues_with_one_key_make_one_row_and_one_message(
    database_url: str, redis_url: str, make_producer: MakeProducer, redis_client: redis.Redis
) -> None:
    parent = make_producer(database_url)
    parent.store.create_schema()  # so the race is on the insert, not on the migration
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_enqueue_in_child, args=(database_url, redis_url, barrier, out))
             for _ in range(4)]
    for p in procs:
        p.start()
    ids = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert [p.exitcode for p in procs] == [0] * 4
    assert len(set(ids)) == 1
    assert row_count(parent) == 1
    assert [_args(m) for m in _messages(redis_client)] == [[ids[0]]]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_broker_down_raises_enqueue_error_promptly_and_keeps_the_job(
    database_url: str, make_producer: MakeProducer
) -> None:
    down = make_producer(database_url, f"redis://127.0.0.1:{_closed_port()}/0",
                         broker_send_timeout=2.0)
    start = time.monotonic()
    with pytest.raises(EnqueueError) as info:
        down.enqueue({"prompt": "x"})
    assert time.monotonic() - start < 2.5
    assert info.value.job_id is not None
    assert down.load(info.value.job_id).status is JobStatus.QUEUED
    with pytest.raises(EnqueueError) as many:
        down.enqueue_many([{"prompt": "a"}, {"prompt": "b"}])
    assert len(many.value.job_ids) == 2
    assert {down.load(i).status for i in many.value.job_ids} == {JobStatus.QUEUED}


def test_enqueue_many_is_one_transaction_and_one_message_per_job(
    producer: Producer, redis_client: redis.Redis
) -> None:
    jobs = producer.enqueue_many([{"prompt": f"p{i}"} for i in range(2500)])
    assert len({j.id for j in jobs}) == 2500
    assert row_count(producer) == 2500
    sent = sorted(_args(m)[0] for m in _messages(redis_client))
    assert sent == sorted(j.id for j in jobs)
    assert producer.enqueue_many([]) == []


def test_get_list_cancel_and_wait(producer: Producer) -> None:
    a, b, c = producer.enqueue_many([{"prompt": "a"}, {"prompt": "b"}, {"prompt": "c"}])
    assert producer.get_job(a.id).status is JobStatus.QUEUED
    with pytest.raises(JobNotFound):
        producer.get_job("0" * 32)
    with pytest.raises(KeyError):
        producer.cancel("0" * 32)
    assert {r.id for r in producer.list_jobs(status="queued")} == {a.id, b.id, c.id}
    assert len(producer.list_jobs(limit=2)) == 2
    assert producer.cancel(a.id) is True and producer.cancel(a.id) is False
    assert [r.id for r in producer.list_jobs(status=JobStatus.CANCELLED)] == [a.id]
    with pytest.raises(JobFailed) as failed:
        a.wait(timeout=1)
    assert failed.value.record.status is JobStatus.CANCELLED
    with pytest.raises(JobTimeout):
        b.wait(timeout=0.2)
    # Drive c to success the way the worker does: compare-and-set moves.
    store = producer.store
    assert store.transition(c.id, JobStatus.SUBMITTING)
    assert store.transition(c.id, JobStatus.DOWNLOADING)
    output = {"index": 0, "source_url": "http://x/v.mp4", "storage_uri": "file:///v.mp4",
              "bytes": 10, "sha256": "0" * 64, "content_type": "video/mp4"}
    assert store.transition(c.id, JobStatus.SUCCEEDED, outputs=[output])
    record = c.wait(timeout=5)
    assert record.outputs[0].storage_uri == "file:///v.mp4"
    assert c.outputs[0].sha256 == "0" * 64
    assert producer.cancel(c.id) is False
