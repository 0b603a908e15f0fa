"""The shell commands the shipped configs run against a worker work on a real one.

The Kubernetes worker's preStop hook (`celery control cancel_consumer` for each queue) and the
compose worker healthcheck (`celery inspect ping`) both address the worker as
`celery@$HOSTNAME`, the node name Celery gives a worker started without `-n`. Here the worker
runs the Deployment's own command (concurrency lowered) with a Redis of its own, and the two
commands run exactly as written, with HOSTNAME set to this machine's host name, as the
kubelet and Docker set it to the pod's or container's.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from t2v_core.names import QUEUE_CALLBACKS, QUEUE_DOWNLOAD, QUEUE_POLL, QUEUE_SUBMIT
from tests.unit.test_compose import interpolate, load_compose, services
from tests.unit.test_k8s import K8S, containers, of_kind, render
from worker.devstack import processes

pytestmark = pytest.mark.slow

HOST = socket.gethostname()
# What a worker pod consumes: every job step and the completion callbacks (maintenance runs
# in its own pod).
WORKER_QUEUES = {QUEUE_SUBMIT, QUEUE_POLL, QUEUE_DOWNLOAD, QUEUE_CALLBACKS}


def shell(command: list[str], env: dict[str, str], timeout: float = 60) -> int:
    return subprocess.run(
        command, env=env, capture_output=True, timeout=timeout, check=False
    ).returncode


def active_queues(env: dict[str, str]) -> set[str]:
    out = subprocess.run(
        ["celery", "-A", "worker", "inspect", "active_queues", "-t", "5", "-j",
         "-d", f"celery@{HOST}"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    replies = json.loads(out)
    return {q["name"] for q in replies[f"celery@{HOST}"]}


def test_prestop_and_healthcheck_reach_the_worker(redis_url: str, tmp_path: Path) -> None:
    deploy = of_kind(render(K8S / "overlays" / "production"), "Deployment")["t2v-worker"]
    worker = containers(deploy)[0]
    argv = list(worker["command"])
    argv[argv.index("--concurrency") + 1] = "1"
    assert argv[:2] == ["celery", "-A"] and "-n" not in argv  # default node name: celery@host
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOSTNAME": HOST,
        "T2V_BROKER_URL": redis_url,
        "T2V_DATABASE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
        "T2V_STORAGE_URL": str(tmp_path / "videos"),
        "T2V_MODELSLAB_API_KEY": "unused-key",
        "T2V_MODELSLAB_BASE_URL": "http://127.0.0.1:9/api/v6",
    }
    proc = processes.spawn("k8s-worker", argv, env=env, log_dir=tmp_path)
    try:
        assert _wait_ready(proc), proc.tail()
        assert active_queues(env) == WORKER_QUEUES

        health = services(load_compose())["worker"]["healthcheck"]["test"]
        assert health[0] == "CMD-SHELL"
        check = ["sh", "-c", interpolate(health[1])]
        assert shell(check, env) == 0
        assert shell(check, {**env, "HOSTNAME": "another-container"}) != 0

        pre_stop = worker["lifecycle"]["preStop"]["exec"]["command"]
        assert shell(pre_stop, env) == 0
        assert active_queues(env) == set()  # consuming nothing, still alive
        assert proc.alive()
    finally:
        code = proc.stop(timeout=60)
    assert code == 0, proc.tail()  # SIGTERM: a warm shutdown


def _wait_ready(proc: processes.ManagedProcess, timeout: float = 60) -> bool:
    """Celery logs "ready." once it consumes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "ready." in proc.tail(200):
            return True
        if not proc.alive():
            return False
        time.sleep(0.1)
    return False
