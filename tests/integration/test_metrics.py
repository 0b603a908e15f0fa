"""The metrics endpoint over real HTTP, against real Redis and a real job table."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import requests

from tests.integration.pipeline import Pipeline
from worker.devstack import processes


def test_metrics_show_queue_depth_job_states_and_slots(
    redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    env = {"T2V_BROKER_URL": redis_url, "T2V_DATABASE_URL": sqlite_url, "T2V_ACCOUNT_SLOTS": "7"}
    pipe = Pipeline(env, tmp_path)  # no worker: messages stay in the queue
    prompt = "metrics must not show this prompt"
    with pipe.as_application() as producer:
        # One message per job (``enqueue_many`` would send one t2v.admit for all three).
        jobs = [producer.enqueue({"prompt": prompt, "num_frames": 4}) for _ in range(3)]
    port = processes.free_port()
    proc = processes.spawn(
        "metrics",
        [sys.executable, "-m", "worker.metrics", "--port", str(port)],
        env=env,
        log_dir=tmp_path,
    )
    try:
        processes.wait_for_port("127.0.0.1", port, 30, proc)
        body = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        proc.stop()

    def value(name: str) -> float:
        match = re.search(rf"^{re.escape(name)} (\S+)$", body, re.MULTILINE)
        assert match, (name, body)
        return float(match.group(1))

    assert value('t2v_queue_length{queue="t2v.submit"}') == 3
    assert value('t2v_queue_length{queue="t2v.poll"}') == 0
    assert value('t2v_jobs{status="queued"}') == 3
    assert value('t2v_jobs{status="succeeded"}') == 0
    assert value("t2v_account_slots_limit") == 7
    assert value("t2v_account_slots_in_use") == 0
    assert prompt not in body and not any(j.id in body for j in jobs)
