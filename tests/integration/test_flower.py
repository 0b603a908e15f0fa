"""Flower against a real worker: it sees our tasks (events are on), behind basic auth, and
what it shows carries job ids only — never the API key or the prompt."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from tests.conftest import TEST_API_KEY, SimControl
from tests.integration.pipeline import Pipeline
from tests.integration.test_pipeline import make_env
from worker.devstack import processes

pytestmark = pytest.mark.slow


def test_flower_sees_tasks_without_secrets(
    redis_url: str, sqlite_url: str, sim: SimControl, tmp_path: Path
) -> None:
    env = make_env(redis_url, sqlite_url, sim, {"T2V_STORAGE_URL": str(tmp_path / "v")})
    pipe = Pipeline(env, tmp_path / "logs")
    flower_env = {k: v for k, v in env.items() if k != "T2V_MODELSLAB_API_KEY"}
    flower = processes.start_flower(
        tmp_path / "logs", env=flower_env, user="ops", password="pw-for-test"
    )
    pipe.start_worker()
    prompt = "a secret-free prompt about a heron"
    try:
        # Task events are off until Flower turns them on (T2V_TASK_EVENTS unset), which it
        # does every few seconds: enqueue once it sees the worker's first event (reconcile,
        # sent by beat every second), so the job's own tasks are all seen.
        _task_names(flower.url, until={"t2v.reconcile"})
        with pipe.as_application() as producer:
            job = producer.enqueue(
                producer.Text2VideoRequest(prompt=prompt, num_frames=8, width=128, height=128)
            )
        pipe.wait_all([job.id], timeout=60)
        assert requests.get(f"{flower.url}/api/tasks", timeout=5).status_code == 401
        # (the download runs inside the poll that found the render finished: T2V_DOWNLOAD_INLINE)
        r = _task_names(flower.url, until={"t2v.submit", "t2v.poll"})
        workers = requests.get(
            f"{flower.url}/api/workers", auth=("ops", "pw-for-test"), timeout=5
        ).text
    finally:
        pipe.stop()
        flower.stop()
    shown = r.text + workers
    assert job.id in shown
    assert TEST_API_KEY not in shown and prompt not in shown


def _task_names(url: str, until: set[str], timeout: float = 30.0) -> requests.Response:
    """Flower's task list once it names every task in ``until`` (its last answer)."""
    deadline = time.monotonic() + timeout
    while True:
        r = requests.get(f"{url}/api/tasks", auth=("ops", "pw-for-test"), timeout=5)
        r.raise_for_status()
        names = {t.get("name") for t in r.json().values()}
        if until <= names:
            return r
        assert time.monotonic() < deadline, names
        time.sleep(0.5)
