"""Metrics over real HTTP: the state exporter against real Redis and a real job table, and
a real prefork worker's counters summed over its children, against the simulator."""

from __future__ import annotations

import sys
from pathlib import Path

import requests

from t2v_core.names import RECONCILE_LAST_RUN_KEY
from tests.conftest import SimControl
from tests.integration.metrics_helpers import await_value, scrape, total
from tests.integration.pipeline import Pipeline, enqueue_small
from tests.integration.test_pipeline import make_env
from worker.devstack import processes

N_JOBS = 6


def test_exporter_shows_queue_depth_job_states_and_slots(
    redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    env = {"T2V_BROKER_URL": redis_url, "T2V_DATABASE_URL": sqlite_url, "T2V_ACCOUNT_SLOTS": "7"}
    pipe = Pipeline(env, tmp_path)  # no worker: messages stay in the queue
    prompt = "metrics must not show this prompt"
    with pipe.as_application() as producer:
        # One message per job (``enqueue_many`` would send one t2v.admit for all three).
        jobs = [producer.enqueue({"prompt": prompt, "num_frames": 4}) for _ in range(3)]
    import redis

    client = redis.Redis.from_url(redis_url)
    client.zadd("t2v:slots:waiting", {"a-waiting-job": 1000.0})  # created at t=1000
    client.set(RECONCILE_LAST_RUN_KEY, "1234.5")
    port = processes.free_port()
    proc = processes.spawn(
        "metrics",
        [sys.executable, "-m", "worker.metrics"],
        env={**env, "T2V_METRICS_PORT": str(port)},
        log_dir=tmp_path,
    )
    try:
        processes.wait_for_port("127.0.0.1", port, 30, proc)
        url = f"http://127.0.0.1:{port}/metrics"
        body = requests.get(url, timeout=5).text
        got = scrape(url)
    finally:
        proc.stop()
    now = float(client.time()[0])

    def value(name: str, **labels: str) -> float:
        return got[(name, tuple(sorted(labels.items())))]

    assert value("t2v_queue_length", queue="t2v.submit") == 3
    assert value("t2v_queue_length", queue="t2v.poll") == 0
    assert value("t2v_jobs", status="queued") == 3
    assert value("t2v_jobs", status="succeeded") == 0
    assert value("t2v_slots_limit") == 7
    assert value("t2v_slots_effective_limit") == 7
    assert value("t2v_slots_in_use") == 0
    assert value("t2v_jobs_waiting_for_slot") == 1
    assert now - 1000 - 5 <= value("t2v_oldest_waiting_job_age_seconds") <= now - 1000 + 5
    assert value("t2v_last_reconcile_timestamp_seconds") == 1234.5
    assert prompt not in body and not any(j.id in body for j in jobs)
    assert "a-waiting-job" not in body


def test_prefork_worker_counts_every_job_once_across_its_children(
    redis_url: str, sqlite_url: str, sim: SimControl, tmp_path: Path
) -> None:
    port = processes.free_port()
    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    stale = multiproc / "counter_999999.db"
    stale.write_bytes(b"left by a worker that ran before")
    env = make_env(
        redis_url,
        sqlite_url,
        sim,
        {
            "T2V_STORAGE_URL": str(tmp_path / "videos"),
            "T2V_WORKER_METRICS_PORT": str(port),
            "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        },
    )
    pipe = Pipeline(env, tmp_path / "logs")
    worker = pipe.start_worker(concurrency=2)
    try:
        processes.wait_for_port("127.0.0.1", port, 30, worker)
        url = f"http://127.0.0.1:{port}/metrics"
        assert not stale.exists()  # emptied at start: counters begin at 0
        ids = enqueue_small(pipe, N_JOBS, "metrics")
        records = pipe.wait_all(ids)
        assert all(r.status.value == "succeeded" for r in records), records
        # The counter moves right after the row does: await it, then it must be exactly N.
        await_value(lambda: total(scrape(url), "t2v_jobs_succeeded_total"), N_JOBS)
        got = scrape(url)
    finally:
        pipe.stop()
    model = records[0].model_effective
    assert got[("t2v_jobs_succeeded_total", (("model", model),))] == N_JOBS
    assert total(got, "t2v_jobs_succeeded_total") == N_JOBS
    assert total(got, "t2v_jobs_enqueued_total") == N_JOBS
    assert total(got, "t2v_paid_submissions_total") == N_JOBS == sum(sim.paid().values())
    assert total(got, "t2v_jobs_failed_total") == 0
    assert total(got, "t2v_jobs_parked_total") == 0
    assert total(got, "t2v_submit_answers_lost_total") == 0
    assert total(got, "t2v_job_queued_seconds_count") == N_JOBS
    assert total(got, "t2v_render_seconds_count") == N_JOBS
    assert total(got, "t2v_download_seconds_count") == N_JOBS
    assert total(got, "t2v_slot_wait_seconds_count") == N_JOBS
    assert got[("t2v_fetches_total", (("outcome", "finished"),))] == N_JOBS
    # Every poll was a task whose CPU was timed (a few ms each, never nothing), beside the
    # submits; no other label than a t2v task.
    polls = sum(v for k, v in got.items() if k[0] == "t2v_fetches_total")
    timed = {dict(k[1])["task"]: v for k, v in got.items() if k[0] == "t2v_task_cpu_seconds_count"}
    assert timed["t2v.poll"] == polls and timed["t2v.submit"] >= N_JOBS, timed
    assert set(timed) <= {
        "t2v.submit",
        "t2v.admit",
        "t2v.poll",
        "t2v.download",
        "t2v.reconcile",
        "t2v.callback",
    }
    poll_cpu = got[("t2v_task_cpu_seconds_sum", (("task", "t2v.poll"),))]
    assert 0 < poll_cpu < timed["t2v.poll"], poll_cpu  # measured, and under 1 s a poll
    stored = sum(o.bytes for r in records for o in r.outputs or [])
    assert total(got, "t2v_stored_bytes_total") == stored > 0
    # Written by the prefork children (one file per process), not the main process.
    assert list(multiproc.glob("counter_*.db")), "no child wrote its counters"
