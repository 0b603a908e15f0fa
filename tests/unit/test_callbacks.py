"""Completion callbacks, the pure parts and the store's compare-and-set (on a SQLite file):
the Standard Webhooks signature against the spec's published test vector, what enqueue
refuses, and the move that makes a notification due in the same statement."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from benchmarks.callback_receiver import verify_signature
from producer.api import Producer
from t2v_core.callbacks import (
    callback_backoff,
    callback_url_problem,
    notification_id,
    on_done_problem,
    sign,
    signed_headers,
    verify,
)
from t2v_core.db import make_engine
from t2v_core.errors import RequestInvalid
from t2v_core.settings import Settings
from t2v_core.states import JobStatus
from t2v_core.store import JobStore

# The Standard Webhooks reference test vector (standard-webhooks/standard-webhooks,
# libraries/python/tests/test_webhooks.py, test_sign_function).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_matches_the_specs_test_vector() -> None:
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIGNATURE
    # The secret without its prefix is the same key.
    assert sign(SPEC_SECRET.removeprefix("whsec_"), SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIGNATURE


def test_verify_accepts_ours_and_refuses_tampering_and_stale_timestamps() -> None:
    now = int(time.time())
    headers = signed_headers(SPEC_SECRET, "job-succeeded-1", now, b"{}")
    assert verify(SPEC_SECRET, headers, b"{}", now=now)
    # The benchmark's receiver checks with its own code, written from the spec.
    assert verify_signature(SPEC_SECRET, headers, b"{}")
    assert not verify(SPEC_SECRET, headers, b'{"x":1}', now=now)
    assert not verify(SPEC_SECRET, {**headers, "webhook-id": "other"}, b"{}", now=now)
    assert not verify(SPEC_SECRET, headers, b"{}", now=now + 301)
    other = "whsec_" + "QUJDREVGR0hJSktMTU5PUA=="
    assert not verify(other, headers, b"{}", now=now)
    # Several signatures (key rotation): any one may match.
    rotated = {**headers, "webhook-signature": "v1,AAAA " + headers["webhook-signature"]}
    assert verify(SPEC_SECRET, rotated, b"{}", now=now)


def test_notification_ids_differ_per_final_state_and_attempt() -> None:
    assert notification_id("j", "parked", 1) != notification_id("j", "succeeded", 2)
    assert notification_id("j", "failed", 3) == notification_id("j", "failed", 3)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/x", "not http(s)"),
        ("example.com/hook", "not http(s)"),
        ("https://user:pw@example.com/hook", "credentials"),
        ("http://127.0.0.1:8000/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[::1]/hook", "loopback"),
        ("http://[::ffff:10.0.0.1]/hook", "private"),
        ("http://localhost/hook", "local name"),
        ("http://db.internal/hook", "local name"),
        ("http://intranet/hook", "local name"),
        ("http://example.com:99999/hook", "malformed"),
        ("", "http(s) URL"),
    ],
)
def test_callback_url_refusals(url: str, reason: str) -> None:
    problem = callback_url_problem(url)
    assert problem is not None and reason in problem


def test_callback_url_allowed() -> None:
    assert callback_url_problem("https://hooks.example.com/t2v") is None
    assert callback_url_problem("http://93.184.216.34/hook") is None
    assert callback_url_problem("http://127.0.0.1:8000/hook", ["127.0.0.1"]) is None
    assert callback_url_problem("http://10.1.2.3/hook", ["10.0.0.0/8"]) is None
    assert callback_url_problem("http://receiver/hook", ["receiver"]) is None


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("video_ready", "dotted"),
        ("my app.tasks.x", "dotted"),
        ("myapp.tasks.", "dotted"),
        ("t2v.submit", "t2v's own"),
        (42, "string"),
    ],
)
def test_on_done_refusals(name: object, reason: str) -> None:
    problem = on_done_problem(name)
    assert problem is not None and reason in problem
    assert on_done_problem("myapp.tasks.video_ready") is None


def test_backoff_doubles_and_is_capped() -> None:
    assert [callback_backoff(n, 2.0, 60.0) for n in (1, 2, 3, 4, 5, 6)] == [2, 4, 8, 16, 32, 60]


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    s = JobStore(make_engine(f"sqlite:///{tmp_path / 'cb.sqlite3'}"))
    s.create_schema()
    return s


def _producer(store: JobStore, **settings: object) -> Producer:
    # The broker is never reached: every call here is refused before anything is sent.
    base = Settings(
        database_url=str(store.engine.url),
        broker_url="redis://127.0.0.1:1/0",
        broker_send_timeout=0.5,
        _env_file=None,  # type: ignore[call-arg]
    )
    return Producer(base.model_copy(update=settings), store=store)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"callback_url": "http://127.0.0.1/hook"}, "callback_url"),
        ({"callback_url": "gopher://example.com/"}, "callback_url"),
        ({"on_done": "not_dotted"}, "on_done"),
        ({"on_done": "app.done", "on_done_queue": "bad queue"}, "on_done_queue"),
    ],
)
def test_enqueue_refuses_bad_callbacks_and_writes_nothing(
    store: JobStore, kwargs: dict[str, str], field: str
) -> None:
    producer = _producer(store)
    with pytest.raises(RequestInvalid) as caught:
        producer.enqueue({"prompt": "a paper boat in the rain"}, **kwargs)
    assert [e.field for e in caught.value.field_errors] == [field]
    with pytest.raises(RequestInvalid):
        producer.enqueue_many([{"prompt": "a paper boat in the rain"}], **kwargs)
    assert store.list() == []


def test_a_settings_default_is_checked_too(store: JobStore) -> None:
    producer = _producer(store, callback_url="http://192.168.1.5/hook")
    with pytest.raises(RequestInvalid) as caught:
        producer.enqueue({"prompt": "a paper boat in the rain"})
    assert caught.value.field_errors[0].field == "callback_url"
    assert store.list() == []


def _row(store: JobStore, **callbacks: str | None) -> str:
    row = store.insert_values(
        request={"prompt": "x"},
        model_requested=None,
        model_effective="wan2.2",
        callbacks=callbacks,
    )
    store.insert_one(row)
    return str(row["id"])


def test_a_final_move_makes_the_callback_due_in_the_same_statement(store: JobStore) -> None:
    sent: list[str] = []
    store.notify = sent.append
    with_cb = _row(store, callback_url="https://hooks.example.com/x")
    without = _row(store)
    assert store.transition(with_cb, JobStatus.CANCELLED)
    assert store.transition(without, JobStatus.CANCELLED)
    rec = store.get(with_cb)
    assert rec is not None and rec.callback_due_at is not None
    assert (rec.callback_status, rec.callback_seq, rec.callback_delivered_at) == (
        "cancelled",
        1,
        None,
    )
    plain = store.get(without)
    assert plain is not None and plain.callback_due_at is None
    assert sent == [with_cb]  # only the job with a callback, once, after the commit
    # A move that did not happen notifies nobody.
    assert not store.transition(with_cb, JobStatus.FAILED)
    assert sent == [with_cb]
    assert [r.id for r in store.callbacks_due(rec.callback_due_at.replace(year=2100))] == [with_cb]


def test_parked_then_final_is_a_second_notification(store: JobStore) -> None:
    job = _row(store, on_done="app.tasks.done")
    for to in (JobStatus.SUBMITTING, JobStatus.PROCESSING, JobStatus.PARKED):
        assert store.transition(job, to)
    first = store.get(job)
    assert first is not None and (first.callback_status, first.callback_seq) == ("parked", 1)
    assert store.claim_callback(job, 1, lease=60)
    assert not store.claim_callback(job, 1, lease=60)  # a second copy of the message drops
    assert store.record_callback(job, 1, callback_due_at=None, on_done_sent_at=store.now())
    assert store.transition(job, JobStatus.FAILED)
    second = store.get(job)
    assert second is not None and (second.callback_status, second.callback_seq) == ("failed", 2)
    assert second.callback_due_at is not None and second.on_done_sent_at is None
    # The parked notification's late writes no longer touch the row.
    assert not store.record_callback(job, 1, callback_due_at=None)


def test_a_notify_that_fails_leaves_the_move_and_the_due_mark(store: JobStore) -> None:
    def broken(job_id: str) -> None:
        raise ConnectionError("broker down")

    store.notify = broken
    job = _row(store, callback_url="https://hooks.example.com/x")
    assert store.transition(job, JobStatus.CANCELLED)
    rec = store.get(job)
    assert rec is not None and rec.status is JobStatus.CANCELLED and rec.callback_due_at
