"""The webhook receiver: a submit whose answer was lost is rescued by the webhook carrying
its track_id — no second, paid submission — and duplicate deliveries do nothing."""

from __future__ import annotations

import io
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from t2v_core.db import make_engine
from t2v_core.names import TASK_POLL
from t2v_core.states import JobStatus
from t2v_core.store import JobStore
from tests.conftest import SimControl
from tests.integration.pipeline import Pipeline
from tests.integration.test_pipeline import make_env
from worker.devstack import processes
from worker.webhook import accept_webhook

pytestmark = pytest.mark.slow


def start_receiver(env: dict[str, str], log_dir: Path, port: int) -> processes.ManagedProcess:
    proc = processes.spawn(
        "webhook",
        [sys.executable, "-m", "worker.webhook", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        log_dir=log_dir,
    )
    processes.wait_for_port("127.0.0.1", port, 30, proc)
    return proc


def test_lost_submit_answer_is_rescued_by_the_webhook_without_paying_twice(
    redis_url: str, sqlite_url: str, sim: SimControl, tmp_path: Path
) -> None:
    secret = secrets.token_urlsafe(24)
    port = processes.free_port()
    env = make_env(
        redis_url,
        sqlite_url,
        sim,
        {
            "T2V_STORAGE_URL": str(tmp_path / "videos"),
            "T2V_WEBHOOK_SECRET": secret,
            "T2V_WEBHOOK_URL": f"http://127.0.0.1:{port}/webhook/{secret}",
            "T2V_READ_TIMEOUT": "1",
            # Without the webhook this job would sit `submitting` for two minutes.
            "T2V_SUBMIT_UNKNOWN_WAIT": "120",
        },
    )
    pipe = Pipeline(env, tmp_path / "logs")
    receiver = start_receiver(env, tmp_path / "logs", port)
    # The submit's answer comes after the worker stopped listening: outcome unknown.
    sim.faults(slow_share=1.0, slow_seconds=2.5, webhook_deliveries=2)
    pipe.start_worker()
    try:
        with pipe.as_application() as producer:
            job = producer.enqueue(
                producer.Text2VideoRequest(
                    prompt="a kite rescued by a webhook", num_frames=8, width=128, height=128
                )
            )
        deadline = time.monotonic() + 30
        while sim.stats()["submits"]["by_track_id"].get(job.id) != 1:  # type: ignore[index]
            assert time.monotonic() < deadline, "the submit never reached the simulator"
            time.sleep(0.1)
        sim.faults(slow_share=0.0)
        [rec] = pipe.wait_all([job.id], timeout=60)
        # Deliveries are sequential: wait for the duplicate to land before judging it.
        while sim.stats()["injected"]["webhooks_sent"] < 2:  # type: ignore[index,operator]
            assert time.monotonic() < deadline + 60, (sim.stats()["injected"], receiver.tail())
            time.sleep(0.1)
        time.sleep(1.0)  # give a (wrongly) triggered extra poll the time to show up
    finally:
        pipe.stop()
        receiver.stop()
    assert rec.status is JobStatus.SUCCEEDED, rec.error
    stats = sim.stats()
    assert stats["submits"]["by_track_id"][job.id] == 1  # type: ignore[index]
    assert rec.submit_count == 1
    assert stats["injected"]["webhooks_sent"] == 2  # type: ignore[index]
    receiver_log = receiver.log_path.read_text()
    assert "polling now" in receiver_log and "Traceback" not in receiver_log
    assert secret not in receiver_log
    # One fetch confirms the webhook; the duplicate delivery caused nothing more.
    assert stats["fetches"]["by_track_id"][job.id] == 1  # type: ignore[index]


def bare_receiver(
    redis_url: str, sqlite_url: str, tmp_path: Path
) -> tuple[str, int, processes.ManagedProcess]:
    """A receiver on a fresh secret and port, with the schema, and no worker behind it."""
    secret = secrets.token_urlsafe(24)
    port = processes.free_port()
    env = {
        "T2V_BROKER_URL": redis_url,
        "T2V_DATABASE_URL": sqlite_url,
        "T2V_WEBHOOK_SECRET": secret,
    }
    Pipeline(env, tmp_path)  # creates the schema
    return secret, port, start_receiver(env, tmp_path, port)


def test_receiver_refuses_wrong_secret_and_bad_bodies_and_dedupes(
    redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    secret, port, receiver = bare_receiver(redis_url, sqlite_url, tmp_path)
    base = f"http://127.0.0.1:{port}/webhook"
    try:
        payload = {"status": "success", "id": "77", "track_id": "nope", "output": ["x"]}
        assert (
            requests.post(f"{base}/wrong-secret-wrong-secret", json=payload, timeout=5).status_code
            == 404
        )
        assert requests.post(f"{base}/{secret}", data=b"{not json", timeout=5).status_code == 400
        first = requests.post(f"{base}/{secret}", json=payload, timeout=5).json()
        again = requests.post(f"{base}/{secret}", json=payload, timeout=5).json()
    finally:
        receiver.stop()
    assert first["action"] == "unknown job"
    assert again["action"] == "duplicate"


def test_a_late_webhook_adopts_a_job_failed_for_lost_answers(sqlite_url: str) -> None:
    # Failed as `submit_unknown` (its answers were lost; not paid again), but one of those
    # submits did create a render: the late webhook brings the job back to poll it.
    store = JobStore(make_engine(sqlite_url))
    store.create_schema()
    row = store.insert_values(
        request={"prompt": "p"}, model_requested=None, model_effective="wan2.2"
    )
    store.insert_one(row)
    job_id = row["id"]
    assert store.transition(job_id, JobStatus.SUBMITTING, submit_count=2, unknown_submits=1)
    assert store.transition(
        job_id, JobStatus.FAILED, error="answers lost", error_kind="submit_unknown"
    )
    sent: list[tuple[str, str, float]] = []
    action = accept_webhook(store, lambda *a: sent.append(a), job_id, "9001", deadline=600)
    rec = store.get(job_id)
    assert rec is not None
    assert action.startswith("adopted") and rec.status is JobStatus.PROCESSING
    assert rec.provider_id == "9001" and rec.submit_count == 2  # nothing sent again
    assert sent == [(TASK_POLL, job_id, 0)]
    # A job the provider itself failed is not brought back by a webhook.
    other = store.insert_values(
        request={"prompt": "q"}, model_requested=None, model_effective="wan2.2"
    )
    store.insert_one(other)
    store.transition(other["id"], JobStatus.SUBMITTING, submit_count=1)
    store.transition(other["id"], JobStatus.FAILED, error="nsfw", error_kind="generation_failed")
    assert not accept_webhook(
        store, lambda *a: sent.append(a), other["id"], "9002", deadline=600
    ).startswith("adopted")


def _memory_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def test_the_receiver_holds_at_most_its_cap_of_a_1gb_body(
    redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    secret, port, receiver = bare_receiver(redis_url, sqlite_url, tmp_path)
    url = f"http://127.0.0.1:{port}/webhook/{secret}"
    gigabyte, chunk = 1 << 30, b"[" * (1 << 20)
    sent = {"chunked": 0, "declared": 0}

    def body(kind: str) -> Iterator[bytes]:
        while sent[kind] < gigabyte:
            sent[kind] += len(chunk)
            yield chunk

    def post(kind: str) -> int | None:
        try:
            return requests.post(url, data=body(kind), timeout=30).status_code
        except requests.ConnectionError:
            return None  # it stopped reading and closed: as good as the 413

    class Declared(io.RawIOBase):
        """A gigabyte with a Content-Length (requests streams it through ``read``)."""

        def __len__(self) -> int:
            return gigabyte

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            if sent["declared"] >= gigabyte:
                return b""
            sent["declared"] += len(chunk)
            return chunk

    def post_declared() -> int | None:
        try:
            return requests.post(
                url, data=Declared(), timeout=30, headers={"Content-Type": "application/json"}
            ).status_code
        except requests.ConnectionError:
            return None

    try:
        # Warm up: the first request of each kind loads what it needs.
        payload = {"status": "success", "id": "1", "track_id": "nope"}
        assert requests.post(url, json=payload, timeout=5).status_code == 200
        assert requests.post(url, data=b"x" * 300_000, timeout=5).status_code == 413
        before = _memory_kb(receiver.popen.pid)
        chunked = post("chunked")  # no Content-Length: counted as it streams in
        declared = post_declared()
        as_text = requests.post(
            url, data=b"{}", timeout=5, headers={"Content-Type": "text/plain"}
        ).status_code
        after = _memory_kb(receiver.popen.pid)
        alive = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code
    finally:
        receiver.stop()
    # The gigabytes were on offer (uvicorn drains what the app leaves unread, in chunks)...
    assert min(sent.values()) > 4 * (1 << 20), sent
    # ...and the receiver held no more than its cap of either.
    grew_kb = after["VmHWM"] - before["VmRSS"]
    print(f"receiver peak memory grew by {grew_kb} kB for 2 x 1 GB offered")
    assert grew_kb < 4 * 1024, f"the receiver's peak memory grew by {grew_kb} kB"
    assert chunked in (413, None) and declared in (413, None), (chunked, declared)
    assert as_text == 415 and alive == 200
