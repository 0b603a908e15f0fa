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
from producer.states import JobStatus
from tests.producer_fixtures import (  # noqa: F401 - fixtures, found by pytest by name
    MakeProducer,
    make_producer_fixture,
    private_redis_base_fixture,
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


def test_batch_enqueues_all_then_reports(t2v: Any, tmp_path: Path, database_url: str,
                                         make_producer: MakeProducer) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(5)))
    code, data = t2v("batch", str(path), "--timeout", "0.3", "--json")
    assert code == 3 and data["counts"] == {"queued": 5}
    store = make_producer(database_url).store
    for job in data["jobs"]:
        store.transition(job["id"], JobStatus.CANCELLED)
    code, data = t2v("batch", str(path), "--no-wait", "--json")
    assert code == 0 and len(data["ids"]) == 5
    path.write_text('{"prompt": "ok"}\n{"prompt": "x", "num_frames": 99}\n')
    code, data = t2v("batch", str(path), "--json")
    assert code == 2 and data["errors"][0]["line"] == 2
    assert len(store.list(limit=None)) == 10  # the invalid file enqueued nothing


def test_the_console_script_runs_as_a_process(database_url: str, redis_url: str) -> None:
    env = {"T2V_DATABASE_URL": database_url, "T2V_BROKER_URL": redis_url,
           "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    code = "from producer.cli import main; main()"
    result = subprocess.run([sys.executable, "-c", code, "submit", "a cat", "--json"],
                            capture_output=True, text=True, env=env, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "queued"
    bad = subprocess.run([sys.executable, "-c", code, "submit", "a cat", "--fps", "99"],
                         capture_output=True, text=True, env=env, timeout=60, cwd=REPO)
    assert bad.returncode == 2 and "fps=99: must be at most 16" in bad.stderr
