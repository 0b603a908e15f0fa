"""priority, tenant and labels end to end: stored and filtered on SQLite and PostgreSQL,
refused with nothing written, and, with a real worker and the simulator, an interactive
job served ahead of a bulk backlog and labels never sent to ModelsLab."""

from __future__ import annotations

import json
from pathlib import Path

import redis
from click.testing import CliRunner

from producer.api import Producer
from producer.cli import cli
from t2v_core.errors import RequestInvalid
from t2v_core.fairness import JobOptions
from t2v_core.names import QUEUE_SUBMIT, queue_lists
from t2v_core.states import JobStatus
from tests.conftest import TEST_API_KEY, SimControl
from tests.integration.pipeline import FAST, Pipeline
from tests.producer_fixtures import (  # noqa: F401 - fixtures, found by pytest by name
    make_producer_fixture,
    private_redis_base_fixture,
    producer_fixture,
    redis_client_fixture,
    row_count,
)

REQ = {"prompt": "a kite over a beach", "num_frames": 8, "width": 128, "height": 128}


def _messages(client: redis.Redis) -> int:
    return sum(int(client.llen(key)) for key in queue_lists(QUEUE_SUBMIT))


def test_options_are_stored_and_filtered(producer: Producer, redis_client: redis.Redis) -> None:
    a = producer.enqueue(REQ, priority="bulk", tenant="acme", labels={"order": "1234"})
    b = producer.enqueue(REQ, tenant="acme", labels={"order": "1235", "customer.id": "c/9"})
    c = producer.enqueue(REQ, priority="interactive", labels={"order": "1234"})
    rec = producer.load(a.id)
    assert (rec.priority, rec.tenant, rec.labels) == ("bulk", "acme", {"order": "1234"})
    assert producer.load(c.id).tenant is None and producer.load(b.id).priority == "normal"
    assert "labels" not in rec.request and "tenant" not in rec.request

    def ids(**kw: object) -> set[str]:
        return {r.id for r in producer.list_jobs(**kw)}  # type: ignore[arg-type]

    assert ids(labels={"order": "1234"}) == {a.id, c.id}
    assert ids(labels={"order": "1234"}, tenant="acme") == {a.id}
    assert ids(labels={"customer.id": "c/9"}) == {b.id}
    assert ids(labels={"order": "1234", "customer.id": "c/9"}) == set()
    assert ids(tenant="acme") == {a.id, b.id}
    assert ids(labels={"order": "999"}) == set()
    # A bulk job's message waits in the lower-priority list of the submit queue.
    assert redis_client.llen(QUEUE_SUBMIT) == 2 and _messages(redis_client) == 3


def test_enqueue_many_per_call_and_per_item(producer: Producer) -> None:
    jobs = producer.enqueue_many(
        [REQ, REQ, REQ],
        priority="bulk",
        tenant="t1",
        labels={"batch": "9"},
        options=[None, JobOptions(priority="interactive", labels={"x": "y"}), None],
        idempotency_keys=["k1", None, "k3"],
    )
    recs = [producer.load(j.id) for j in jobs]
    assert [r.priority for r in recs] == ["bulk", "interactive", "bulk"]
    assert [r.labels for r in recs] == [{"batch": "9"}, {"x": "y"}, {"batch": "9"}]
    assert {r.tenant for r in recs} == {"t1"}


def test_bad_options_write_nothing(producer: Producer, redis_client: redis.Redis) -> None:
    before = row_count(producer)
    for kwargs in (
        {"priority": "urgent"},
        {"tenant": "not a tenant"},
        {"labels": {"k": "v" * 300}},
        {"labels": {f"k{i}": "v" for i in range(17)}},
    ):
        try:
            producer.enqueue(REQ, **kwargs)  # type: ignore[arg-type]
        except RequestInvalid as exc:
            assert exc.field_errors[0].field.split(".")[0] in kwargs  # type: ignore[union-attr]
        else:
            raise AssertionError(f"{kwargs} was accepted")
    try:
        producer.enqueue_many([REQ, REQ], options=[None, JobOptions(priority="soon")])
    except RequestInvalid as exc:
        assert [e.field for e in exc.field_errors] == ["[1].priority"]
    else:
        raise AssertionError("a bad item's priority was accepted")
    assert row_count(producer) == before and _messages(redis_client) == 0


def test_cli_submit_batch_and_list_by_label(
    producer: Producer, tmp_path: Path, monkeypatch: object
) -> None:
    import os

    env = {
        "T2V_DATABASE_URL": producer.settings.database_url,
        "T2V_BROKER_URL": producer.settings.broker_url,
    }
    runner = CliRunner(env={**os.environ, **env})
    args = ["submit", "a heron", "--frames", "8", "--priority", "interactive"]
    got = runner.invoke(cli, [*args, "--tenant", "acme", "--label", "order=77", "--json"])
    assert got.exit_code == 0, got.output
    job = json.loads(got.output)
    assert (job["priority"], job["tenant"], job["labels"]) == (
        "interactive",
        "acme",
        {"order": "77"},
    )
    lines = [
        {"prompt": "one", "num_frames": 8, "labels": {"order": "78"}, "priority": "bulk"},
        {"prompt": "two", "num_frames": 8},
    ]
    path = tmp_path / "b.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    got = runner.invoke(cli, ["batch", str(path), "--no-wait", "--tenant", "shop", "--json"])
    assert got.exit_code == 0, got.output
    got = runner.invoke(cli, ["list", "--label", "order=78", "--json"])
    listed = json.loads(got.output)
    assert [(j["priority"], j["tenant"], j["labels"]) for j in listed] == [
        ("bulk", "shop", {"order": "78"})
    ]
    assert len(json.loads(runner.invoke(cli, ["list", "--tenant", "shop", "--json"]).output)) == 2
    got = runner.invoke(cli, ["submit", "x", "--priority", "soon"])
    assert got.exit_code == 2
    got = runner.invoke(cli, ["submit", "x", "--label", "k" * 70 + "=v"])
    assert got.exit_code == 2 and "labels." in got.output + (got.stderr or "")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "tenant": "has space"}) + "\n")
    got = runner.invoke(cli, ["batch", str(bad), "--no-wait", "--json"])
    assert got.exit_code == 2 and "tenant" in got.output


def test_interactive_job_passes_a_bulk_backlog_and_labels_never_leave(
    redis_url: str, sqlite_url: str, sim: SimControl, tmp_path: Path
) -> None:
    env = {
        "T2V_BROKER_URL": redis_url,
        "T2V_DATABASE_URL": sqlite_url,
        "T2V_STORAGE_URL": str(tmp_path / "videos"),
        "T2V_MODELSLAB_API_KEY": TEST_API_KEY,
        "T2V_MODELSLAB_BASE_URL": sim.api,
        "T2V_DOWNLOAD_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "T2V_ACCOUNT_SLOTS": "1",
        "T2V_PROBE_VIDEOS": "false",
        **FAST,
    }
    pipe = Pipeline(env, tmp_path / "logs")
    pipe.start_worker()
    try:
        with pipe.as_application() as producer:
            bulk = producer.enqueue_many(
                [dict(REQ, prompt=f"bulk {i}") for i in range(8)],
                priority="bulk",
                tenant="A",
                labels={"secret-label": "label-marker-123"},
            )
            first = pipe.wait_all(
                [bulk[0].id], timeout=60, done=lambda r: r.submitting_at is not None
            )
            assert first
            started = {
                j.id for j in bulk if (r := pipe.store.get(j.id)) and r.submitting_at is not None
            }
            hot = producer.enqueue(
                dict(REQ, prompt="interactive"),
                priority="interactive",
                tenant="B",
                labels={"order": "label-marker-456"},
            )
        records = pipe.wait_all([hot.id, *[j.id for j in bulk]], timeout=180)
    finally:
        pipe.stop()
    by_id = {r.id: r for r in records}
    assert all(r.status is JobStatus.SUCCEEDED for r in records), {r.id: r.error for r in records}
    hot_at = by_id[hot.id].submitting_at
    assert hot_at is not None
    before = [j.id for j in bulk if (by_id[j.id].submitting_at or hot_at) < hot_at]
    # At most the bulk jobs already started, plus one woken before the interactive joined.
    assert len(before) <= len(started) + 1, (before, started)
    sent = json.dumps(sim.stats()["submit_bodies"])
    assert "bulk 0" in sent and "interactive" in sent  # the bodies are really recorded
    assert "label-marker" not in sent and "secret-label" not in sent
