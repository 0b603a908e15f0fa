"""Completion callbacks through a real Celery worker (with beat: reconcile every second),
real Redis, the simulator over HTTP and SQLite / PostgreSQL; the application's side is a
signature-checking HTTP receiver on loopback and the raw ``on_done`` messages in Redis."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import redis

from benchmarks.callback_receiver import HttpReceiver
from t2v_core.errors import RequestInvalid
from t2v_core.names import QUEUE_CALLBACKS, QUEUES
from t2v_core.records import JobRecord
from t2v_core.states import JobStatus
from tests.conftest import SimControl
from tests.integration.pipeline import Pipeline
from tests.integration.test_pipeline import make_env
from worker.devstack import processes

pytestmark = pytest.mark.slow

SECRET = "whsec_" + base64.b64encode(b"t2v-callback-test-secret-32bytes").decode()
APP_QUEUE = "receiver.done"
SMALL = {"num_frames": 8, "width": 128, "height": 128}


def _env(redis_url: str, database_url: str, sim: SimControl, tmp: Path) -> dict[str, str]:
    return make_env(
        redis_url,
        database_url,
        sim,
        {
            "T2V_STORAGE_URL": str(tmp / "videos"),
            "T2V_PROBE_VIDEOS": "false",
            "T2V_CALLBACK_SECRET": SECRET,
            "T2V_CALLBACK_ALLOWED_HOSTS": "127.0.0.1",
            "T2V_CALLBACK_RETRY_BASE": "0.2",
            "T2V_CALLBACK_RETRY_MAX": "1",
        },
    )


def _app_messages(redis_url: str) -> list[dict[str, Any]]:
    """The ``on_done`` messages waiting in the application's queue (kombu's Redis format)."""
    client = redis.Redis.from_url(redis_url)
    out = []
    for raw in client.lrange(APP_QUEUE, 0, -1):
        msg = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(msg["body"]))
        out.append({"task": msg["headers"]["task"], "id": msg["headers"]["id"], "args": args})
    return out


def _delivered(rec: JobRecord) -> bool:
    return rec.callback_due_at is None and rec.callback_delivered_at is not None


def test_both_forms_are_delivered_and_a_failing_receiver_is_retried(
    redis_url: str, database_url: str, sim: SimControl, tmp_path: Path
) -> None:
    receiver = HttpReceiver(SECRET, fail_first=2)
    pipe = Pipeline(_env(redis_url, database_url, sim, tmp_path), tmp_path / "logs")
    pipe.start_worker()
    try:
        with pipe.as_application() as producer:
            req = producer.Text2VideoRequest(prompt="a paper boat in a gutter", **SMALL)
            by_task = producer.enqueue(
                req, on_done="receiver.video_ready", on_done_queue=APP_QUEUE
            ).id
            by_url = producer.enqueue(req, callback_url=receiver.url).id
            with pytest.raises(RequestInvalid) as refused:
                producer.enqueue(req, callback_url="http://10.0.0.7/hook")
            assert refused.value.field_errors[0].field == "callback_url"
        records = pipe.wait_all([by_task, by_url], timeout=120, done=_delivered)
    finally:
        pipe.stop()
        receiver.close()
    assert all(r.status is JobStatus.SUCCEEDED for r in records)
    assert len(pipe.store.list()) == 2  # the refused one wrote nothing

    # The Celery form: the application's task, [job id, status], the notification id.
    msgs = [m for m in _app_messages(redis_url) if m["args"][0] == by_task]
    assert msgs and {m["task"] for m in msgs} == {"receiver.video_ready"}
    assert {tuple(m["args"]) for m in msgs} == {(by_task, "succeeded")}
    assert {m["id"] for m in msgs} == {f"{by_task}-succeeded-1"}

    # The HTTP form: failed twice (500), retried with backoff, then delivered, signed.
    msg_id = f"{by_url}-succeeded-1"
    assert receiver.bad_signatures == 0
    assert receiver.tries[msg_id] >= 3 and receiver.delivered[msg_id] >= 1
    body = receiver.bodies[msg_id]
    assert (body["id"], body["status"], body["labels"], body["error"]) == (
        by_url,
        "succeeded",
        {},
        None,
    )
    assert body["outputs"] and body["outputs"][0]["storage_uri"].startswith("file://")
    url_rec = next(r for r in records if r.id == by_url)
    assert url_rec.callback_attempts >= 3 and url_rec.callback_error is None


def test_reconcile_resends_a_callback_whose_message_was_lost(
    redis_url: str, database_url: str, sim: SimControl, tmp_path: Path
) -> None:
    receiver = HttpReceiver(SECRET)
    env = _env(redis_url, database_url, sim, tmp_path)
    pipe = Pipeline(env, tmp_path / "logs")
    # First a worker that does not consume callbacks: the job finishes, its callback waits.
    pipe.worker = processes.start_worker(
        tmp_path / "logs",
        env=env,
        name="no-callbacks",
        queues=[q for q in QUEUES if q != QUEUE_CALLBACKS],
        loglevel="DEBUG",
    )
    try:
        with pipe.as_application() as producer:
            req = producer.Text2VideoRequest(prompt="a kite over a beach", **SMALL)
            job = producer.enqueue(req, callback_url=receiver.url).id
        [rec] = pipe.wait_all([job], timeout=120, done=lambda r: r.is_final)
        assert rec.status is JobStatus.SUCCEEDED and rec.callback_due_at is not None
        pipe.stop()
        # The broker loses every callback message (as a wipe or a lost Redis would).
        client = redis.Redis.from_url(redis_url)
        assert client.llen(QUEUE_CALLBACKS) >= 1
        client.delete(QUEUE_CALLBACKS)
        assert receiver.delivered == {}
        pipe.start_worker()
        [done] = pipe.wait_all([job], timeout=60, done=_delivered)
    finally:
        pipe.stop()
        receiver.close()
    assert receiver.delivered[f"{job}-succeeded-1"] >= 1 and receiver.bad_signatures == 0
    assert "callbacks_resent=" in pipe.worker_log()
    assert done.callback_delivered_at is not None


def test_a_parked_job_notifies_and_notifies_again_when_it_ends(
    redis_url: str, sqlite_url: str, sim: SimControl, tmp_path: Path
) -> None:
    receiver = HttpReceiver(SECRET)
    env = _env(redis_url, sqlite_url, sim, tmp_path)
    env.update({"T2V_DOWNLOAD_NOT_FOUND_WINDOW": "2", "T2V_PARKED_RETRY_BASE": "3600"})
    pipe = Pipeline(env, tmp_path / "logs")
    sim.faults(link_404_seconds=3600.0)
    pipe.start_worker()
    try:
        with pipe.as_application() as producer:
            req = producer.Text2VideoRequest(prompt="a lantern on a pond", **SMALL)
            job = producer.enqueue(req, callback_url=receiver.url).id
            [parked] = pipe.wait_all([job], timeout=90, done=_delivered)
            assert parked.status is JobStatus.PARKED
            sim.faults(link_404_seconds=0.0)
            producer.retry(job)
        [done] = pipe.wait_all(
            [job], timeout=90, done=lambda r: r.status is JobStatus.SUCCEEDED and _delivered(r)
        )
    finally:
        pipe.stop()
        receiver.close()
    assert receiver.bodies[f"{job}-parked-1"]["status"] == "parked"
    assert receiver.bodies[f"{job}-parked-1"]["error_kind"] == "link_missing"
    assert receiver.bodies[f"{job}-succeeded-2"]["status"] == "succeeded"
    assert done.callback_seq == 2
