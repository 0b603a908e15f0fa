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
from producer.request import Text2VideoRequest
from t2v_core.errors import EnqueueError, JobFailed, JobNotFound, JobTimeout, RequestInvalid
from t2v_core.names import QUEUE_SUBMIT, TASK_ADMIT, TASK_SUBMIT
from t2v_core.states import JobStatus
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


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    field=st.sampled_from(["width", "num_frames", "fps", "guidance_scale", "key"]),
    value=st.one_of(st.integers(min_value=10_000), st.text(max_size=3)),
)
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
    procs = [
        ctx.Process(target=_enqueue_in_child, args=(database_url, redis_url, barrier, out))
        for _ in range(4)
    ]
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
    down = make_producer(
        database_url, f"redis://127.0.0.1:{_closed_port()}/0", broker_send_timeout=2.0
    )
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


def test_enqueue_many_is_one_transaction_and_one_admit_message_per_thousand_jobs(
    producer: Producer, redis_client: redis.Redis
) -> None:
    jobs = producer.enqueue_many([{"prompt": f"p{i}"} for i in range(2500)])
    assert len({j.id for j in jobs}) == 2500
    assert row_count(producer) == 2500
    messages = _messages(redis_client)[::-1]  # kombu LPUSHes: the list is newest first
    assert [m["headers"]["task"] for m in messages] == [TASK_ADMIT] * 3
    assert [len(_args(m)[0]) for m in messages] == [1000, 1000, 500]
    sent = [job_id for m in messages for job_id in _args(m)[0]]
    assert sent == [j.id for j in jobs]
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
    output = {
        "index": 0,
        "source_url": "http://x/v.mp4",
        "storage_uri": "file:///v.mp4",
        "bytes": 10,
        "sha256": "0" * 64,
        "content_type": "video/mp4",
    }
    assert store.transition(c.id, JobStatus.SUCCEEDED, outputs=[output])
    record = c.wait(timeout=5)
    assert record.outputs[0].storage_uri == "file:///v.mp4"
    assert c.outputs[0].sha256 == "0" * 64
    assert producer.cancel(c.id) is False


# -- enqueue_many with idempotency keys ------------------------------------------------------
def _sent(client: redis.Redis) -> list[str]:
    """The job ids of the queued submit and admit messages, sorted."""
    ids: list[str] = []
    for m in _messages(client):
        arg = _args(m)[0]
        ids += arg if m["headers"]["task"] == TASK_ADMIT else [arg]
    return sorted(ids)


def test_enqueue_many_keys_dedupe_across_calls_and_with_enqueue(
    producer: Producer, redis_client: redis.Redis
) -> None:
    first = producer.enqueue_many(
        [{"prompt": "a"}, {"prompt": "b"}, {"prompt": "c"}],
        idempotency_keys=["k-a", None, "k-c"],
    )
    assert row_count(producer) == 3 and _sent(redis_client) == sorted(j.id for j in first)
    redis_client.delete(QUEUE_SUBMIT)

    again = producer.enqueue_many_detailed(
        [{"prompt": "a"}, {"prompt": "d"}, Text2VideoRequest(prompt="c"), {"prompt": "b"}],
        idempotency_keys=["k-a", "k-d", "k-c", None],
    )
    ids = [j.id for j in again.jobs]
    assert ids[0] == first[0].id and ids[2] == first[2].id
    assert again.jobs[0].record.idempotency_key == "k-a"
    assert again.new_ids == [ids[1], ids[3]]  # only d and the unkeyed b are new
    assert len(set(ids)) == 4 and first[1].id not in ids
    assert row_count(producer) == 5
    assert _sent(redis_client) == sorted(again.new_ids)  # nothing for the existing ones
    assert [j.record.request["prompt"] for j in again.jobs] == ["a", "d", "c", "b"]

    # The same key means the same job through enqueue and through enqueue_many.
    assert producer.enqueue({"prompt": "d"}, idempotency_key="k-d").id == ids[1]
    single = producer.enqueue({"prompt": "e"}, idempotency_key="k-e")
    (back,) = producer.enqueue_many([{"prompt": "e"}], idempotency_keys=["k-e"])
    assert back.id == single.id
    assert row_count(producer) == 6 and _sent(redis_client) == sorted([*again.new_ids, single.id])


def test_a_key_used_for_another_request_writes_nothing_for_the_whole_call(
    producer: Producer, redis_client: redis.Redis
) -> None:
    old = producer.enqueue({"prompt": "x"}, idempotency_key="k-1")
    other = producer.enqueue({"prompt": "z"}, idempotency_key="k-2")
    rows, queued = row_count(producer), queue_length(redis_client)
    with pytest.raises(RequestInvalid) as info:
        producer.enqueue_many(
            [{"prompt": "new"}, {"prompt": "y"}, {"prompt": "x"}, {"prompt": "z", "seed": 1}],
            idempotency_keys=[None, "k-1", "k-new", "k-2"],
        )
    assert [(e["field"], e["value"]) for e in info.value.errors] == [
        ("[1].idempotency_key", "k-1"),
        ("[3].idempotency_key", "k-2"),
    ]
    assert f"already used for a different request (job {old.id})" in str(info.value)
    assert f"(job {other.id})" in str(info.value)
    assert (row_count(producer), queue_length(redis_client)) == (rows, queued)
    assert producer.store.get_by_idempotency_key("k-new") is None


def test_one_key_twice_in_one_call(producer: Producer, redis_client: redis.Redis) -> None:
    jobs = producer.enqueue_many(
        [{"prompt": "p"}, {"prompt": "q"}, {"prompt": "p"}], idempotency_keys=["dup", None, "dup"]
    )
    assert jobs[0].id == jobs[2].id != jobs[1].id
    assert row_count(producer) == 2 and _sent(redis_client) == sorted({j.id for j in jobs})
    with pytest.raises(
        RequestInvalid,
        match=r"\[2\]\.idempotency_key='twice': also the key of "
        r"\[0\], with a different request",
    ):
        producer.enqueue_many(
            [{"prompt": "p"}, {"prompt": "q"}, {"prompt": "other"}],
            idempotency_keys=["twice", None, "twice"],
        )
    assert row_count(producer) == 2 and len(_sent(redis_client)) == 2


def test_bad_keys_and_a_wrong_number_of_keys_write_nothing(
    producer: Producer, redis_client: redis.Redis
) -> None:
    producer.enqueue({"prompt": "warm"})
    rows, queued = row_count(producer), queue_length(redis_client)
    with pytest.raises(
        RequestInvalid, match="idempotency_keys: must have one entry per request: 1 for 2 request"
    ):
        producer.enqueue_many([{"prompt": "a"}, {"prompt": "b"}], idempotency_keys=["k"])
    with pytest.raises(RequestInvalid) as info:
        producer.enqueue_many(
            [{"prompt": "a"}, {"prompt": "b"}, {"prompt": "c"}],
            idempotency_keys=["ok", " ", "x" * 256],
        )
    assert [e["field"] for e in info.value.errors] == ["[1].idempotency_key", "[2].idempotency_key"]
    assert (row_count(producer), queue_length(redis_client)) == (rows, queued)
    assert producer.store.get_by_idempotency_key("ok") is None


def test_existing_keys_are_looked_up_in_chunks(
    producer: Producer, redis_client: redis.Redis
) -> None:
    from sqlalchemy import event

    keys = [f"chunk-{i}" for i in range(1200)]
    requests = [{"prompt": f"p{i}"} for i in range(1200)]
    first = producer.enqueue_many(requests[:600], idempotency_keys=keys[:600])
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    engine = producer.store.engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        result = producer.enqueue_many_detailed(requests, idempotency_keys=keys)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    lookups = [
        s
        for s in statements
        if s.lstrip().upper().startswith("SELECT") and "idempotency_key IN" in s
    ]
    assert len(lookups) == 3  # 1200 keys, 500 a query
    assert [j.id for j in result.jobs[:600]] == [j.id for j in first]
    assert len(result.new_ids) == 600 and row_count(producer) == 1200
    assert len(_sent(redis_client)) == 1200


def _hold_after_first_lookup(producer: Producer, then: Any) -> list[int]:
    """Make ``producer``'s first key lookup call ``then()`` after reading: a race, on cue."""
    real = producer._jobs_by_key
    calls: list[int] = []

    def lookup(keys: Any) -> Any:
        found = real(keys)
        calls.append(len(keys))
        if len(calls) == 1:
            then()
        return found

    producer._jobs_by_key = lookup  # type: ignore[method-assign]
    return calls


def test_a_caller_that_loses_the_race_returns_the_winners_jobs(
    database_url: str, make_producer: MakeProducer, redis_client: redis.Redis
) -> None:
    slow, fast = make_producer(database_url), make_producer(database_url)
    slow.store.create_schema()
    won: list[Any] = []
    calls = _hold_after_first_lookup(
        slow,
        lambda: won.extend(
            fast.enqueue_many([{"prompt": "k2"}, {"prompt": "k3"}], idempotency_keys=["k2", "k3"])
        ),
    )
    jobs = slow.enqueue_many(
        [{"prompt": f"k{i}"} for i in range(1, 5)] + [{"prompt": "free"}],
        idempotency_keys=["k1", "k2", "k3", "k4", None],
    )
    assert calls == [4, 4]  # read the four keys; the insert failed; read the four again
    assert [j.id for j in jobs[1:3]] == [j.id for j in won]
    assert [j.record.request["prompt"] for j in jobs] == ["k1", "k2", "k3", "k4", "free"]
    assert row_count(slow) == 5
    assert _sent(redis_client) == sorted(j.id for j in jobs)  # five jobs, one message each


def test_a_race_lost_to_a_different_request_writes_nothing(
    database_url: str, make_producer: MakeProducer, redis_client: redis.Redis
) -> None:
    slow, fast = make_producer(database_url), make_producer(database_url)
    slow.store.create_schema()
    _hold_after_first_lookup(
        slow, lambda: fast.enqueue_many([{"prompt": "theirs"}], idempotency_keys=["k2"])
    )
    with pytest.raises(RequestInvalid, match=r"\[1\]\.idempotency_key='k2': already used"):
        slow.enqueue_many(
            [{"prompt": "k1"}, {"prompt": "mine"}, {"prompt": "free"}],
            idempotency_keys=["k1", "k2", None],
        )
    assert row_count(slow) == 1 and slow.store.get_by_idempotency_key("k1") is None
    assert queue_length(redis_client) == 1


def test_an_integrity_error_that_is_not_a_key_race_is_raised(
    producer: Producer, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import IntegrityError

    taken = producer.enqueue({"prompt": "taken"}).id
    real = producer.store.insert_values

    def same_id(**kwargs: Any) -> dict[str, Any]:
        return (
            real(**kwargs, job_id=taken) if kwargs.get("idempotency_key") == "b" else real(**kwargs)
        )

    monkeypatch.setattr(producer.store, "insert_values", same_id)
    with pytest.raises(IntegrityError):
        producer.enqueue_many([{"prompt": "a"}, {"prompt": "b"}], idempotency_keys=["a", "b"])
    assert row_count(producer) == 1 and queue_length(redis_client) == 1


def test_broker_down_with_keys_names_only_the_new_jobs(
    database_url: str, make_producer: MakeProducer
) -> None:
    up = make_producer(database_url)
    old = up.enqueue({"prompt": "old"}, idempotency_key="old")
    down = make_producer(
        database_url, f"redis://127.0.0.1:{_closed_port()}/0", broker_send_timeout=2.0
    )
    with pytest.raises(EnqueueError) as info:
        down.enqueue_many([{"prompt": "old"}, {"prompt": "new"}], idempotency_keys=["old", "new"])
    (new_id,) = info.value.job_ids
    assert new_id != old.id and down.load(new_id).idempotency_key == "new"
    # Retried once the broker is back: the key finds the row, nothing is written twice.
    jobs = up.enqueue_many([{"prompt": "old"}, {"prompt": "new"}], idempotency_keys=["old", "new"])
    assert [j.id for j in jobs] == [old.id, new_id] and row_count(up) == 2


# Racing callers, really concurrent: every caller reads before any writes (a barrier right
# after each one's first look-up), so all but the first committer must resolve again.
RACERS, SHARED_KEYS, FREE = 4, 200, 10


def _race_input(racer: int) -> tuple[list[dict[str, Any]], list[str | None]]:
    import random

    keys: list[str | None] = [f"race-{(racer * 50 + i) % SHARED_KEYS}" for i in range(100)]
    random.Random(racer).shuffle(keys)  # each racer inserts in its own order
    keys += [None] * FREE
    requests = [
        {"prompt": f"{k} job"} if k else {"prompt": f"free {racer}-{i}"} for i, k in enumerate(keys)
    ]
    return requests, keys


def _race(producer: Producer, racer: int, barrier: Any) -> tuple[list[str], int]:
    calls = _hold_after_first_lookup(producer, lambda: barrier.wait(timeout=60))
    requests, keys = _race_input(racer)
    jobs = producer.enqueue_many(requests, idempotency_keys=keys)
    assert [j.record.request["prompt"] for j in jobs] == [r["prompt"] for r in requests]
    return [j.id for j in jobs], len(calls)


def _race_in_child(url: str, broker: str, racer: int, barrier: Any, out: Any) -> None:
    try:
        out.put((racer, _race(Producer(make_settings(url, broker)), racer, barrier)))
    except BaseException as exc:
        out.put((racer, repr(exc)))
        raise


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_racing_callers_with_overlapping_keys_make_each_job_once(
    mode: str,
    database_url: str,
    redis_url: str,
    make_producer: MakeProducer,
    redis_client: redis.Redis,
) -> None:
    import threading

    parent = make_producer(database_url)
    parent.store.create_schema()
    results: dict[int, Any] = {}
    if mode == "threads":
        barrier = threading.Barrier(RACERS)
        errors: list[BaseException] = []

        def run(racer: int) -> None:
            try:
                results[racer] = _race(make_producer(database_url), racer, barrier)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                barrier.abort()

        threads = [threading.Thread(target=run, args=(r,)) for r in range(RACERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert errors == []
    else:
        ctx = multiprocessing.get_context("fork")
        pbarrier, out = ctx.Barrier(RACERS), ctx.Queue()
        procs = [
            ctx.Process(target=_race_in_child, args=(database_url, redis_url, r, pbarrier, out))
            for r in range(RACERS)
        ]
        for p in procs:
            p.start()
        for _ in procs:
            racer, result = out.get(timeout=120)
            results[racer] = result
        for p in procs:
            p.join(timeout=30)
        assert [p.exitcode for p in procs] == [0] * RACERS, results
    assert sorted(results) == list(range(RACERS))

    by_key: dict[str, set[str]] = {}
    every_id: set[str] = set()
    for racer, (ids, _lookups) in results.items():
        _, keys = _race_input(racer)
        assert len(ids) == len(keys)
        every_id.update(ids)
        for key, job_id in zip(keys, ids, strict=True):
            if key is not None:
                by_key.setdefault(key, set()).add(job_id)
    assert len(by_key) == SHARED_KEYS
    assert all(len(ids) == 1 for ids in by_key.values())  # every racer got the same job
    assert len(every_id) == SHARED_KEYS + RACERS * FREE == row_count(parent)
    assert _sent(redis_client) == sorted(every_id)  # each job's message once, by its writer
    records = parent.store.get_many(sorted(every_id))
    for key, (job_id,) in by_key.items():
        assert records[job_id].idempotency_key == key
        assert records[job_id].request["prompt"] == f"{key} job"
    # The first to commit shares keys with two others: they had to read again.
    assert sum(lookups for _ids, lookups in results.values()) > RACERS
