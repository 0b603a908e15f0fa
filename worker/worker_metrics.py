"""The worker host's own ``/metrics``: the counters and histograms of ``worker.instruments``
summed over every prefork child, served by the worker's main process.

prometheus_client's multiprocess mode: each child writes its values to files in
``PROMETHEUS_MULTIPROC_DIR``; the main process reads them all at each scrape. The worker
creates that directory when it is not set (a fresh one per worker), and empties it at
start when it is (one directory per worker: two workers must never share one). A child that
exits is marked dead (its counters stay counted). Served on ``T2V_WORKER_METRICS_PORT``
(9841; 0: off) at ``T2V_WORKER_METRICS_HOST``. Prometheus's ``up{job="t2v-worker"}`` is
the worker's liveness.

It also times every ``t2v.*`` task's CPU (``t2v_task_cpu_seconds``, by task): the thread's
CPU from ``task_prerun`` to ``task_postrun``, so what Celery itself spends around the
tasks (the main process's broker traffic, beat) is the worker's total minus this sum.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from celery.signals import (
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_shutdown,
    worker_shutdown,
)

from t2v_core.names import TASK_RECONCILE, TASK_ROUTES
from worker import instruments
from worker.settings import get_worker_settings

log = logging.getLogger("t2v.worker")
ENV = "PROMETHEUS_MULTIPROC_DIR"
_created: list[Path] = []  # the directory this worker made (removed when it stops)
TIMED_TASKS = frozenset({*TASK_ROUTES, TASK_RECONCILE})  # a closed set of labels
_started: dict[str, float] = {}  # task id -> its thread's CPU clock at the start


def prepare_multiproc_dir() -> Path:
    """Set ``PROMETHEUS_MULTIPROC_DIR`` (created if unset) and empty it; return it."""
    chosen = os.environ.get(ENV)
    if chosen:
        path = Path(chosen)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
    else:
        path = Path(tempfile.mkdtemp(prefix="t2v-worker-metrics-"))
        os.environ[ENV] = str(path)
        _created.append(path)
    return path


def serve(host: str, port: int) -> Any:
    """Serve the sum of every process's values on ``host:port``; the server, or None if
    the port is taken (the worker still works, unscraped: logged)."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        log.warning("worker metrics: cannot listen on %s:%d (%s); not served", host, port, exc)
        return None
    log.info("worker metrics on http://%s:%d/metrics", host, port)
    return server


@worker_init.connect
def _start(**_: object) -> None:
    # In the main process, before the pool forks: the children inherit the directory.
    settings = get_worker_settings()
    path = prepare_multiproc_dir()
    if settings.worker_metrics_port:
        serve(settings.worker_metrics_host, settings.worker_metrics_port)
    log.debug("worker metrics directory %s", path)


@worker_process_shutdown.connect
def _child_exit(pid: int | None = None, **_: object) -> None:
    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())  # type: ignore[no-untyped-call]


@worker_shutdown.connect
def _cleanup(**_: object) -> None:
    # In the main process after the pool stopped: a directory we made goes with us.
    for path in _created:
        shutil.rmtree(path, ignore_errors=True)


@task_prerun.connect
def _task_started(task_id: str | None = None, task: Any = None, **_: object) -> None:
    if task_id is not None and getattr(task, "name", None) in TIMED_TASKS:
        _started[task_id] = time.thread_time()


@task_postrun.connect
def _task_ended(task_id: str | None = None, task: Any = None, **_: object) -> None:
    began = _started.pop(task_id, None) if task_id is not None else None
    if began is not None:
        instruments.task_ran(task.name, time.thread_time() - began)
