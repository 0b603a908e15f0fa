"""The ``t2v`` command line against real Redis and both databases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from producer.cli import cli
from t2v_core.states import JobStatus
from tests.producer_fixtures import (  # noqa: F401 - fixtures, found by pytest by name
    MakeProducer,
    make_producer_fixture,
    private_redis_base_fixture,
    queue_length,
    redis_client_fixture,
    row_count,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def t2v(database_url: str, redis_url: str) -> Any:
    env = {"T2V_DATABASE_URL": database_url, "T2V_BROKER_URL": redis_url}

    def run(*args: str) -> tuple[int, Any]:
        result = CliRunner().invoke(cli, list(args), env=env)
        try:
            data = json.loads(result.stdout) if "--json" in args else result.stdout
        except json.JSONDecodeError:
            pytest.fail(f"not JSON: {result.stdout!r} {result.stderr!r}")
        return result.exit_code, data

    return run


def test_submit_status_list_cancel_with_json(t2v: Any) -> None:
    code, job = t2v("submit", "a cat", "--frames", "10", "--output-type", "gif", "--json")
    assert code == 0 and job["status"] == "queued"
    assert job["request"]["num_frames"] == 10 and job["request"]["output_type"] == "gif"
    code, again = t2v("submit", "a cat", "--idempotency-key", "k", "--json")
    code, same = t2v("submit", "a cat", "--idempotency-key", "k", "--json")
    assert code == 0 and same["id"] == again["id"]
    code, status = t2v("status", job["id"], "--json")
    assert code == 0 and status["id"] == job["id"]
    code, listed = t2v("list", "--status", "queued", "--json")
    assert code == 0 and {j["id"] for j in listed} == {job["id"], again["id"]}
    assert all("request" not in j for j in listed)  # lists never carry prompts
    code, cancelled = t2v("cancel", job["id"], "--json")
    assert code == 0 and cancelled["cancelled"] is True
    code, cancelled = t2v("cancel", job["id"], "--json")
    assert code == 1 and cancelled["cancelled"] is False
    code, data = t2v("status", "nope", "--json")
    assert code == 2 and "no job" in data["error"]
    code, text = t2v("list", "--since", "2000-01-01")
    assert code == 0 and job["id"][:8] in text


def test_wait_exit_codes(t2v: Any, database_url: str, make_producer: MakeProducer) -> None:
    store = make_producer(database_url).store
    _, job = t2v("submit", "a cat", "--json")
    code, timed_out = t2v("wait", job["id"], "--timeout", "0.2", "--json")
    assert code == 3 and timed_out["status"] == "queued"
    assert store.transition(job["id"], JobStatus.FAILED, error="provider said no")
    code, failed = t2v("wait", job["id"], "--json")
    assert code == 1 and failed["error"] == "provider said no"
    _, ok = t2v("submit", "a dog", "--json")
    store.transition(ok["id"], JobStatus.SUBMITTING)
    store.transition(ok["id"], JobStatus.DOWNLOADING)
    store.transition(ok["id"], JobStatus.SUCCEEDED)
    code, done = t2v("wait", ok["id"], "--json")
    assert code == 0 and done["status"] == "succeeded"
    code, done = t2v("submit", "a dog", "--wait", "--timeout", "0.1", "--json")
    assert code == 3


def test_batch_enqueues_all_then_reports(
    t2v: Any, tmp_path: Path, database_url: str, make_producer: MakeProducer
) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(5)))
    code, data = t2v("batch", str(path), "--timeout", "0.3", "--json")
    assert code == 3 and data["counts"] == {"queued": 5}
    assert (data["new"], data["existing"]) == (5, 0)
    store = make_producer(database_url).store
    for job in data["jobs"]:
        store.transition(job["id"], JobStatus.CANCELLED)
    first_ids = [job["id"] for job in data["jobs"]]
    code, data = t2v("batch", str(path), "--no-wait", "--json")  # the same lines: same jobs
    assert code == 0 and data["ids"] == first_ids and (data["new"], data["existing"]) == (0, 5)
    code, data = t2v("batch", str(path), "--json")  # waiting on them: they were cancelled
    assert code == 1 and data["counts"] == {"cancelled": 5} and data["new"] == 0
    code, data = t2v("batch", str(path), "--no-wait", "--no-dedupe", "--json")
    assert code == 0 and len(set(data["ids"]) - set(first_ids)) == 5 and data["new"] == 5
    path.write_text('{"prompt": "ok"}\n{"prompt": "x", "num_frames": 99}\n')
    code, data = t2v("batch", str(path), "--json")
    assert code == 2 and data["errors"][0]["line"] == 2
    assert len(store.list(limit=None)) == 10  # the invalid file enqueued nothing


def _lines(*objects: dict[str, Any]) -> str:
    return "".join(json.dumps(o) + "\n" for o in objects)


BATCH = [
    {"prompt": "p0"},
    {"prompt": "p1", "num_frames": 8},
    {"id": "order-7", "prompt": "p2"},
    {"prompt": "p0"},
    {"prompt": "p3"},
    {"id": "order-8", "prompt": "p4"},
]


def test_batch_run_twice_enqueues_nothing_the_second_time(
    t2v: Any,
    tmp_path: Path,
    database_url: str,
    make_producer: MakeProducer,
    redis_client: Any,
) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text(_lines(*BATCH))
    code, first = t2v("batch", str(path), "--no-wait", "--json")
    assert code == 0 and (first["new"], first["existing"]) == (6, 0)
    assert len(set(first["ids"])) == 6  # the repeated line is a job of its own
    producer = make_producer(database_url)
    assert row_count(producer) == 6 and queue_length(redis_client) == 6
    record = producer.load(first["ids"][2])
    assert record.idempotency_key == "order-7" and "id" not in record.request
    assert producer.load(first["ids"][0]).idempotency_key.startswith("batch:")
    code, second = t2v("batch", str(path), "--no-wait", "--json")
    assert code == 0 and second["ids"] == first["ids"]
    assert (second["new"], second["existing"]) == (0, 6)
    assert row_count(producer) == 6 and queue_length(redis_client) == 6  # nothing sent
    code, text = t2v("batch", str(path), "--no-wait")
    assert code == 0 and "enqueued 0 new job(s); 6 already there" in text


def test_batch_on_a_half_done_file_enqueues_only_the_rest(
    t2v: Any,
    tmp_path: Path,
    database_url: str,
    make_producer: MakeProducer,
    redis_client: Any,
) -> None:
    producer = make_producer(database_url)
    # The first half went in earlier: three lines from another file (its name does not
    # matter), and the line with id order-8 from application code under the same key.
    half = tmp_path / "first-half.jsonl"
    half.write_text(_lines(*BATCH[:3]))
    code, done = t2v("batch", str(half), "--no-wait", "--json")
    assert code == 0 and done["new"] == 3
    app_job = producer.enqueue({"prompt": "p4"}, idempotency_key="order-8")
    assert row_count(producer) == 4 and queue_length(redis_client) == 4

    path = tmp_path / "jobs.jsonl"
    path.write_text(_lines(*BATCH))
    code, data = t2v("batch", str(path), "--no-wait", "--json")
    assert code == 0 and (data["new"], data["existing"]) == (2, 4)
    assert data["ids"][:3] == done["ids"] and data["ids"][5] == app_job.id
    assert row_count(producer) == 6 and queue_length(redis_client) == 6
    new = {data["ids"][3], data["ids"][4]}
    assert {producer.load(i).request["prompt"] for i in new} == {"p0", "p3"}
    code, text = t2v("batch", str(path), "--timeout", "0.2")
    assert code == 3 and "enqueued 0 new job(s); 6 already there" in text


def test_batch_refuses_an_id_already_used_for_another_request(
    t2v: Any,
    tmp_path: Path,
    database_url: str,
    make_producer: MakeProducer,
    redis_client: Any,
) -> None:
    producer = make_producer(database_url)
    old = producer.enqueue({"prompt": "something else"}, idempotency_key="order-7")
    path = tmp_path / "jobs.jsonl"
    path.write_text(_lines(*BATCH))
    code, data = t2v("batch", str(path), "--no-wait", "--json")
    assert code == 2 and "nothing enqueued" in data["error"]
    assert [(e["line"], e["field"], e["value"]) for e in data["errors"]] == [(3, "id", "order-7")]
    assert f"already used for a different request (job {old.id})" in data["error"]
    assert row_count(producer) == 1 and queue_length(redis_client) == 1


def test_the_console_script_runs_as_a_process(database_url: str, redis_url: str) -> None:
    env = {
        "T2V_DATABASE_URL": database_url,
        "T2V_BROKER_URL": redis_url,
        "PYTHONPATH": str(REPO),
        "PATH": "/usr/bin:/bin",
    }
    code = "from producer.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", code, "submit", "a cat", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "queued"
    bad = subprocess.run(
        [sys.executable, "-c", code, "submit", "a cat", "--fps", "99"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=REPO,
    )
    assert bad.returncode == 2 and "fps=99: must be at most 16" in bad.stderr
