"""A real Prometheus (Debian's ``prometheus``) scrapes a running worker and the state
exporter every second while a small pipeline (worker + beat + simulator) runs; its HTTP
API must show the counters moved by exactly the number of jobs run."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import requests

from tests.conftest import SimControl, need
from tests.integration.pipeline import Pipeline, enqueue_small
from tests.integration.test_pipeline import make_env
from worker.devstack import processes

N_JOBS = 5


def prometheus_config(worker_port: int, exporter_port: int) -> str:
    return json.dumps(  # JSON is YAML
        {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "t2v-worker",
                    "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}],
                },
                {
                    "job_name": "t2v-state",
                    "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}],
                },
            ],
        }
    )


class Prom:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> float | None:
        """The single value of ``expr`` now, or None if it has no sample."""
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        answer.raise_for_status()
        result = answer.json()["data"]["result"]
        assert len(result) <= 1, (expr, result)
        return float(result[0]["value"][1]) if result else None

    def await_value(self, expr: str, want: float, timeout: float = 60.0) -> float | None:
        """Poll the query until it answers ``want`` (bounded): the last answer."""
        deadline = time.monotonic() + timeout
        got = self.query(expr)
        while got != want and time.monotonic() < deadline:
            time.sleep(0.25)
            got = self.query(expr)
        return got


def test_prometheus_sees_the_counters_move_by_the_jobs_run(
    redis_url: str, sqlite_url: str, sim: SimControl, tmp_path: Path
) -> None:
    binary = shutil.which("prometheus")
    need(binary is not None, "prometheus is not installed (apt-get install prometheus)")
    assert binary is not None
    worker_port, exporter_port, prom_port = (processes.free_port() for _ in range(3))
    env = make_env(
        redis_url,
        sqlite_url,
        sim,
        {
            "T2V_STORAGE_URL": str(tmp_path / "videos"),
            "T2V_WORKER_METRICS_PORT": str(worker_port),
            "T2V_METRICS_PORT": str(exporter_port),
        },
    )
    logs = tmp_path / "logs"
    config = tmp_path / "prometheus.yml"
    config.write_text(prometheus_config(worker_port, exporter_port))
    pipe = Pipeline(env, logs)
    started: list[processes.ManagedProcess] = []
    try:
        worker = pipe.start_worker(concurrency=2)  # with beat (-B): reconcile runs
        exporter = processes.spawn(
            "exporter", [sys.executable, "-m", "worker.metrics"], env=env, log_dir=logs
        )
        started.append(exporter)
        prom_proc = processes.spawn(
            "prometheus",
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            log_dir=logs,
        )
        started.append(prom_proc)
        processes.wait_for_port("127.0.0.1", worker_port, 30, worker)
        processes.wait_for_port("127.0.0.1", exporter_port, 30, exporter)
        processes.wait_for_port("127.0.0.1", prom_port, 60, prom_proc)
        prom = Prom(f"http://127.0.0.1:{prom_port}")
        assert prom.await_value('up{job="t2v-worker"}', 1) == 1, prom_proc.tail()
        assert prom.await_value('up{job="t2v-state"}', 1) == 1, prom_proc.tail()
        succeeded = "sum(t2v_jobs_succeeded_total) or vector(0)"
        before = prom.query(succeeded)
        assert before == 0

        ids = enqueue_small(pipe, N_JOBS, "prometheus")
        records = pipe.wait_all(ids)
        assert all(r.status.value == "succeeded" for r in records), records

        results = {
            expr: prom.await_value(expr, want)
            for expr, want in (
                (succeeded, N_JOBS),
                ("sum(t2v_jobs_enqueued_total)", N_JOBS),
                ("sum(t2v_paid_submissions_total)", N_JOBS),
                ("sum(t2v_render_seconds_count)", N_JOBS),
                ("sum(t2v_download_seconds_count)", N_JOBS),
                ('t2v_jobs{status="succeeded"}', N_JOBS),
                ('sum(t2v_queue_length{queue="t2v.submit"})', 0),
                ("t2v_slots_in_use", 0),
            )
        }
        print("prometheus query results:", json.dumps(results, indent=1))
        assert results[succeeded] == N_JOBS
        assert results["sum(t2v_jobs_enqueued_total)"] == N_JOBS
        assert results["sum(t2v_paid_submissions_total)"] == N_JOBS == sum(sim.paid().values())
        assert results["sum(t2v_render_seconds_count)"] == N_JOBS
        assert results["sum(t2v_download_seconds_count)"] == N_JOBS
        assert results['t2v_jobs{status="succeeded"}'] == N_JOBS
        assert results['sum(t2v_queue_length{queue="t2v.submit"})'] == 0
        assert results["t2v_slots_in_use"] == 0
        assert (prom.query("sum(t2v_jobs_failed_total) or vector(0)") or 0) == 0
        # Beat is alive: reconcile ran within the last minute, as Prometheus saw it.
        age = prom.query("time() - t2v_last_reconcile_timestamp_seconds")
        assert age is not None and age < 60, age
    finally:
        pipe.stop()
        for proc in reversed(started):
            proc.stop()
