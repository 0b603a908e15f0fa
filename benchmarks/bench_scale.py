"""Benchmark (issue 10): a big backlog behind an account limit, and many renders in flight.

Two modes, each on a real stack: one ``celery -A worker worker -c 4 -B`` (prefork + beat),
a private Redis (or ``--broker-url``), the simulator over HTTP, PostgreSQL (a database of
its own per run, dropped after) and local files.

``backlog``: N jobs enqueued at once (``enqueue_many``) behind an account limit L (the
simulator's ``--queue-limit`` is L too, so a submit past it is a 429), renders of about T s
(``--render-mean``/``--render-spread``). The stack runs for ``--duration`` s after the
enqueue (a 20,000 backlog at L=10 and 30 s renders would take 17 h to drain: the figures
are taken over a window while jobs wait, which is what the backlog figures are about).

``inflight``: N jobs, no account limit (slots and the simulator's queue limit above N),
renders of 120-180 s; runs until every job is final (or ``--timeout``).

Figures (JSON with the exact command, in ``benchmarks/results/scale-<mode>-<N>.json``):
slots busy (slot-seconds of renders at the provider, capped at L, over L x the time while
jobs waited), throughput against the L/T ceiling, 429s, detection lateness (the move to
`downloading` after the simulator's ``ready_at``: p50/p95/max), fetches per job, worker
CPU (user+system of the worker's whole process tree, from psutil) per job finished in the
steady window and to admit the backlog (from the enqueue until no job is queued outside
the line), peak worker RSS (sum over the tree), Redis ``used_memory`` (peak sampled),
database rows and size, the machine's load average (other work on the machine depresses
slot use and lateness; CPU per job is process time and holds). ``--plot`` redraws the
PNGs from every result file (slots busy over time, lateness histogram, CPU and RSS
against N). ``--baseline`` adds bare Celery countdown reschedules at the same N
(``benchmarks/scale_baseline.py``: each of N tasks re-sends itself every
``--baseline-countdown`` s, what retry-polling for a slot would cost).

    .venv/bin/python benchmarks/bench_scale.py backlog --jobs 20000 --slots 10 \\
        --render-mean 30 --render-spread 0.2 --duration 300
    .venv/bin/python benchmarks/bench_scale.py inflight --jobs 5000 --render-mean 150
    .venv/bin/python benchmarks/bench_scale.py --plot

Not a test: no timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_money import code_version, slot_use  # noqa: E402

from worker.devstack import processes  # noqa: E402

KEY = "bench-scale-key-0123456789"
RESULTS = ROOT / "benchmarks" / "results"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


# -- what the worker's process tree uses ----------------------------------------------------
class TreeMeter:
    """CPU seconds (user+system) and RSS of a process and all its descendants.

    CPU of a child that exited is kept (its last reading), so the total never goes back.
    """

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.cpu_by_pid: dict[int, float] = {}

    def sample(self) -> tuple[float, int]:
        rss = 0
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        for proc in procs:
            try:
                with proc.oneshot():
                    t = proc.cpu_times()
                    self.cpu_by_pid[proc.pid] = t.user + t.system
                    rss += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return sum(self.cpu_by_pid.values()), rss


def service_meters(broker_url: str, redis_pid: int | None, sim_pid: int) -> dict[str, TreeMeter]:
    """Meters of what shares the host with the worker: the broker (the private Redis, or
    this machine's RabbitMQ, ``beam.smp``), the simulator and PostgreSQL (the postmaster's
    tree: every backend)."""
    meters = {"simulator": TreeMeter(sim_pid)}
    if redis_pid is not None:
        meters["broker"] = TreeMeter(redis_pid)
    for proc in psutil.process_iter(["name", "ppid"]):
        name = proc.info["name"]
        try:
            if name == "beam.smp" and broker_url.startswith("amqp"):
                meters["broker"] = TreeMeter(proc.pid)
            elif name == "postgres" and psutil.Process(proc.info["ppid"]).name() != "postgres":
                meters["postgres"] = TreeMeter(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return meters


class Sampler(threading.Thread):
    """Once a second: worker CPU and RSS, Redis memory and queue lengths, the table's counts."""

    def __init__(self, meter: TreeMeter, redis_url: str, store: Any, every: float = 1.0) -> None:
        super().__init__(daemon=True)
        import redis as redis_lib

        from t2v_core.names import QUEUES, slot_keys

        self.meter, self.store, self.every = meter, store, every
        self.slots = 0
        self.redis = redis_lib.Redis.from_url(redis_url)
        self.queues = list(QUEUES)
        self.waiting_key = slot_keys()["waiting"]
        self.samples: list[dict[str, Any]] = []
        self.stop_evt = threading.Event()
        self.hooks: list[Callable[[dict[str, Any]], None]] = []
        self.services: dict[str, TreeMeter] = {}

    def take(self) -> dict[str, Any]:
        cpu, rss = self.meter.sample()
        s: dict[str, Any] = {"t": time.time(), "cpu_s": cpu, "rss": rss}
        s["services_cpu_s"] = {k: m.sample()[0] for k, m in self.services.items()}
        try:
            pipe = self.redis.pipeline(transaction=False)
            for q in self.queues:
                pipe.llen(q)
            pipe.zcard(self.waiting_key)
            pipe.info("memory")
            *lens, waiting, mem = pipe.execute()
            s["queue_len"] = dict(zip(self.queues, lens, strict=True))
            s["line_waiting"] = int(waiting)
            s["redis_used_memory"] = int(mem["used_memory"])
        except Exception as exc:  # noqa: BLE001 - a figure for the report only
            s["redis_error"] = str(exc)[:200]
        try:
            s["by_status"] = self.store.count_by_status()
        except Exception as exc:  # noqa: BLE001
            s["db_error"] = str(exc)[:200]
        s["load"] = os.getloadavg()
        return s

    def run(self) -> None:
        while not self.stop_evt.is_set():
            s = self.take()
            self.samples.append(s)
            for hook in self.hooks:
                hook(s)
            self.stop_evt.wait(self.every)


class RabbitSampler(threading.Thread):
    """Every ``every`` s: messages and memory of the vhost's queues (``rabbitmqctl``, which
    costs about a second of CPU outside the worker per call, hence the long interval)."""

    def __init__(self, broker_url: str, every: float = 20.0) -> None:
        super().__init__(daemon=True)
        from urllib.parse import unquote, urlsplit

        self.vhost = unquote(urlsplit(broker_url).path.lstrip("/")) or "/"
        self.every = every
        self.samples: list[dict[str, Any]] = []
        self.stop_evt = threading.Event()

    def take(self) -> None:
        import subprocess

        out = subprocess.run(
            ["rabbitmqctl", "list_queues", "-q", "-p", self.vhost, "name", "messages", "memory"]
            + ["--formatter", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        try:
            queues = json.loads(out.stdout or "[]")
        except ValueError:
            return
        self.samples.append(
            {
                "t": time.time(),
                "messages": sum(int(q.get("messages") or 0) for q in queues),
                "delayed": sum(
                    int(q.get("messages") or 0) for q in queues if "delayed" in q["name"]
                ),
                "memory": sum(int(q.get("memory") or 0) for q in queues),
            }
        )

    def run(self) -> None:
        while not self.stop_evt.is_set():
            self.take()
            self.stop_evt.wait(self.every)

    def figures(self) -> dict[str, Any]:
        if not self.samples:
            return {}
        return {
            "vhost_queue_memory_peak_mb": round(max(s["memory"] for s in self.samples) / 2**20, 2),
            "messages_peak": max(s["messages"] for s in self.samples),
            "delayed_messages_peak": max(s["delayed"] for s in self.samples),
            "sampled_every_s": self.every,
        }


# -- PostgreSQL: a database per run ----------------------------------------------------------
def make_database(name: str) -> str:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def db_figures(url: str) -> dict[str, Any]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT count(*) FROM t2v_jobs")).scalar_one()
            size = conn.execute(text("SELECT pg_total_relation_size('t2v_jobs')")).scalar_one()
            db = conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
    finally:
        engine.dispose()
    return {"rows": int(rows), "table_bytes_with_indexes": int(size), "database_bytes": int(db)}


# -- small statistics -------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return round(ordered[k], 3)


def cpu_between(samples: list[dict[str, Any]], a: float, b: float) -> float:
    """Worker CPU seconds used between wall times ``a`` and ``b`` (nearest samples)."""
    before = [s for s in samples if s["t"] <= a] or samples[:1]
    after = [s for s in samples if s["t"] >= b] or samples[-1:]
    return float(after[0]["cpu_s"] - before[-1]["cpu_s"])


def configure_producer(env: dict[str, str]) -> Any:
    from bench_money import configure_producer as configure

    return configure(env)


# -- one run ------------------------------------------------------------------------------------
def run(args: argparse.Namespace, jobs: int, probe: bool, logs: Path) -> dict[str, Any]:
    from sqlalchemy.pool import NullPool

    from t2v_core.db import make_engine
    from t2v_core.store import JobStore

    logs.mkdir(parents=True, exist_ok=True)
    backlog = args.mode == "backlog"
    slots = args.slots if backlog else jobs * 2 + 10
    db_name = f"t2v_scale_{os.getpid()}_{jobs}"
    procs: list[processes.ManagedProcess] = []
    sampler: Sampler | None = None
    rabbit: RabbitSampler | None = None
    try:
        if args.broker_url:
            broker_url = args.broker_url
            redis_url = args.redis_url or broker_url
        else:
            redis = processes.start_redis(logs)
            procs.append(redis)
            broker_url = redis_url = redis.url
        sim_args = [
            "--queue-limit",
            str(slots),
            "--render-mean",
            str(args.render_mean),
            "--render-spread",
            str(args.render_spread),
            "--eta-noise",
            str(args.eta_noise),
            "--seed",
            str(args.seed),
        ]
        sim = processes.start_simulator(logs, keys=[KEY], args=sim_args)
        procs.append(sim)
        db_url = args.database_url or make_database(db_name)
        env = {
            "T2V_BROKER_URL": broker_url,
            "T2V_REDIS_URL": redis_url,
            "T2V_DATABASE_URL": db_url,
            "T2V_STORAGE_URL": str(logs / "videos"),
            "T2V_MODELSLAB_API_KEY": KEY,
            "T2V_MODELSLAB_BASE_URL": f"{sim.url}/api/v6",
            "T2V_DOWNLOAD_ALLOWED_HOSTS": "127.0.0.1",
            "T2V_ACCOUNT_SLOTS": str(slots),
            "T2V_PROBE_VIDEOS": "true" if probe else "false",
            "T2V_WORKER_METRICS_PORT": str(metrics_port := processes.free_port()),
        }
        env.update(variant_settings(args))
        producer = configure_producer(env)
        store = JobStore(make_engine(db_url, poolclass=NullPool))
        store.create_schema()
        worker = processes.start_worker(
            logs,
            env=env,
            concurrency=args.concurrency,
            beat=True,
            pool=args.pool,
            extra_args=args.worker_arg,
        )
        procs.append(worker)
        sampler = Sampler(TreeMeter(worker.popen.pid), redis_url, store)
        sampler.slots = slots
        sampler.services = service_meters(
            broker_url, procs[0].popen.pid if not args.broker_url else None, sim.popen.pid
        )
        # What the worker + beat cost with nothing to do (beat's reconcile ticks, the
        # consumer's broker polling): measured first, subtracted in ``per_job_net_ms``.
        time.sleep(5)
        idle0, idle_t0 = sampler.meter.sample()[0], time.time()
        time.sleep(args.idle_seconds)
        idle_rate = (sampler.meter.sample()[0] - idle0) / (time.time() - idle_t0)
        sampler.samples.append(sampler.take())
        sampler.start()
        if broker_name(args.broker_url) == "rabbitmq":
            rabbit = RabbitSampler(broker_url)
            rabbit.start()
        requests_ = [
            producer.Text2VideoRequest(
                prompt="scale: a paper boat on a slow river",  # one cached render for all
                seed=7,
                num_frames=8,
                width=64,
                height=64,
            )
            for _ in range(jobs)
        ]
        t0 = time.time()
        cpu0 = time.process_time()
        ids: list[str] = []
        for start in range(0, jobs, 5000):
            ids += [h.id for h in producer.enqueue_many(requests_[start : start + 5000])]
        enqueue_s = time.time() - t0
        producer_cpu = time.process_time() - cpu0
        admitted_at = wait_admitted(sampler, jobs, t0, backlog, args.timeout)
        end_by = t0 + (args.duration if backlog else args.timeout)
        tasks_from = steady_start(backlog, admitted_at, t0)
        tasks0: dict[str, tuple[float, float]] | None = None if backlog else {}
        while time.time() < end_by:
            if tasks0 is None and time.time() >= tasks_from:
                tasks0 = task_cpu(metrics_port)
            last = sampler.samples[-1]
            by = last.get("by_status", {})
            if not backlog and sum(by.get(s, 0) for s in ("succeeded", "failed", "parked")) >= jobs:
                break
            time.sleep(1.0)
        end = time.time()
        tasks1 = task_cpu(metrics_port)
        sampler.stop_evt.set()
        sampler.join(10)
        sampler.samples.append(sampler.take())
        stats = requests.get(f"{sim.url}/_sim/stats", timeout=60).json()
        records = store.get_many(ids)
        dbf = db_figures(db_url)
    finally:
        if sampler is not None:
            sampler.stop_evt.set()
        if rabbit is not None:
            rabbit.stop_evt.set()
        for proc in reversed(procs):
            proc.stop()
        if not args.database_url:
            try:
                drop_database(db_name)
            except Exception as exc:  # noqa: BLE001
                print(f"could not drop {db_name}: {exc}", file=sys.stderr)
    result = analyse(
        args,
        jobs,
        slots,
        probe,
        ids,
        records,
        stats,
        sampler.samples,
        t0,
        admitted_at,
        end,
        enqueue_s,
        producer_cpu,
        dbf,
        logs,
        idle_rate,
        task_cpu_between(tasks0, tasks1),
    )
    if rabbit is not None:
        rabbit.take()
        result["rabbitmq"] = rabbit.figures()
    return result


def steady_start(backlog: bool, admitted_at: float | None, t0: float) -> float:
    """Where the steady window begins: 10 s after the backlog was admitted (in flight: the
    enqueue). CPU per job is taken from there to the end."""
    return (admitted_at or t0) + 10 if backlog else t0


def task_cpu(port: int) -> dict[str, tuple[float, float]]:
    """The worker's ``t2v_task_cpu_seconds`` now: per task, (tasks run, CPU seconds)."""
    from tests.integration.metrics_helpers import scrape

    column = {"t2v_task_cpu_seconds_count": 0, "t2v_task_cpu_seconds_sum": 1}
    got: dict[str, list[float]] = {}
    for (name, labels), value in scrape(f"http://127.0.0.1:{port}/metrics").items():
        if name in column:
            got.setdefault(dict(labels)["task"], [0.0, 0.0])[column[name]] += value
    return {task: (n, cpu) for task, (n, cpu) in got.items()}


def task_cpu_between(
    before: dict[str, tuple[float, float]] | None, after: dict[str, tuple[float, float]]
) -> dict[str, tuple[float, float]]:
    """What each task ran and cost in CPU between two ``task_cpu`` readings."""
    if before is None:  # the run ended before its steady window began
        return {}
    return {
        task: (n - before.get(task, (0.0, 0.0))[0], cpu - before.get(task, (0.0, 0.0))[1])
        for task, (n, cpu) in after.items()
    }


def wait_admitted(
    sampler: Sampler, jobs: int, t0: float, backlog: bool, timeout: float
) -> float | None:
    """When every job was in line or past it: no submit message left and no row queued
    outside the line (only meaningful for a backlog)."""
    if not backlog:
        return None
    deadline = t0 + timeout
    while time.time() < deadline:
        s = sampler.samples[-1]
        if s["t"] > t0 + 1 and "queue_len" in s and "by_status" in s:
            queued = s["by_status"].get("queued", 0)
            # Queued rows outside the line are at most the L holders between acquire and
            # submit (waiting for the submit queue would never end: wakes keep coming).
            if s["line_waiting"] >= queued - sampler.slots - 5:
                return float(s["t"])
        time.sleep(0.5)
    return None


# -- judging one run ---------------------------------------------------------------------------
def services_cpu(samples: list[dict[str, Any]], a: float, b: float) -> dict[str, float]:
    """CPU seconds each service on the host (broker, simulator, PostgreSQL) used from ``a``
    to ``b``: what the worker competed with."""
    inside = [s for s in samples if a <= s["t"] <= b and s.get("services_cpu_s")]
    if len(inside) < 2:
        return {}
    first, last = inside[0]["services_cpu_s"], inside[-1]["services_cpu_s"]
    return {k: round(last[k] - first.get(k, 0.0), 2) for k in last}


def analyse(
    args: argparse.Namespace,
    jobs: int,
    slots: int,
    probe: bool,
    ids: list[str],
    records: dict[str, Any],
    stats: dict[str, Any],
    samples: list[dict[str, Any]],
    t0: float,
    admitted_at: float | None,
    end: float,
    enqueue_s: float,
    producer_cpu: float,
    dbf: dict[str, Any],
    logs: Path,
    idle_rate: float,
    tasks: dict[str, tuple[float, float]],
) -> dict[str, Any]:
    backlog = args.mode == "backlog"
    task_cpu_s = sum(cpu for _, cpu in tasks.values())
    sim_jobs = list(stats["jobs"].values())
    renders = [(j["submitted_at"], min(j["ready_at"], end)) for j in sim_jobs]
    ready = {str(j["track_id"]): j["ready_at"] for j in sim_jobs if j["status"] != "processing"}
    lateness = []
    for job_id, rec in records.items():
        if rec.downloading_at is not None and job_id in ready:
            lateness.append(rec.downloading_at.timestamp() - ready[job_id])
    finished = [r for r in records.values() if r.status.value == "succeeded"]
    fetches = [stats["fetches"]["by_track_id"].get(r.id, 0) for r in finished]
    # Steady state: after admission (backlog) or after the last submit (inflight) until the
    # end; CPU over that window per job that succeeded in it.
    first_submit = min((j["submitted_at"] for j in sim_jobs), default=t0)
    last_submit = max((j["submitted_at"] for j in sim_jobs), default=t0)
    steady_from = steady_start(backlog, admitted_at, t0)
    done_in = [
        r
        for r in finished
        if r.succeeded_at is not None and steady_from <= r.succeeded_at.timestamp() <= end
    ]
    steady_cpu = cpu_between(samples, steady_from, end)
    durations = [j["ready_at"] - j["submitted_at"] for j in sim_jobs if j["status"] != "processing"]
    mean_render = statistics.mean(durations) if durations else args.render_mean
    window = max(1e-9, end - first_submit)
    ended = [j for j in sim_jobs if first_submit <= j["ready_at"] <= end]
    # Jobs waited from the enqueue until the end when the backlog did not drain.
    queued_left = sum(1 for r in records.values() if r.status.value == "queued")
    waits = [(t0, end)] if backlog and queued_left else []
    if backlog and not queued_left:
        last_take = last_submit
        waits = [(t0, last_take)]
    su = slot_use(waits, renders, [j["submitted_at"] for j in sim_jobs], t0, slots=slots)
    busy_series = slots_busy_series(renders, t0, end, slots)
    peak = max(samples, key=lambda s: s["rss"])
    peak_mem = max((s.get("redis_used_memory", 0) for s in samples), default=0)
    status_counts: dict[str, int] = {}
    for r in records.values():
        status_counts[r.status.value] = status_counts.get(r.status.value, 0) + 1
    loads = [s["load"][0] for s in samples]
    result: dict[str, Any] = {
        "mode": args.mode,
        "jobs": jobs,
        "account_slots": slots if backlog else None,
        "probe_and_poster": probe,
        "broker": broker_name(args.broker_url),
        "settings": variant_settings(args),
        "render_mean_s": args.render_mean,
        "render_spread": args.render_spread,
        "renders_measured_s": {
            "mean": round(mean_render, 2),
            "p5": pct(durations, 0.05),
            "p95": pct(durations, 0.95),
        },
        "run_wall_s": round(end - t0, 1),
        "enqueue": {"wall_s": round(enqueue_s, 2), "producer_cpu_s": round(producer_cpu, 2)},
        "states_at_end": status_counts,
        "slots_busy_while_jobs_waited": su["slot_use"] if backlog else None,
        "slot_use_detail": su if backlog else None,
        "throughput": {
            "renders_ended_per_s": round(len(ended) / window, 4),
            "ceiling_L_over_T_per_s": round(slots / mean_render, 4) if backlog else None,
            "vs_ceiling": round(len(ended) / window / (slots / mean_render), 3)
            if backlog
            else None,
        },
        "http_429": stats["injected"].get("queue_limited", 0)
        + stats["injected"].get("rate_limited", 0)
        + stats["injected"].get("spam_filtered", 0),
        "peak_renders_at_once": max((b for _t, b in busy_series), default=0),
        "detection_lateness_s": {
            "n": len(lateness),
            "p50": pct(lateness, 0.5),
            "p95": pct(lateness, 0.95),
            "max": pct(lateness, 1.0),
        },
        "fetches_per_job": {
            "mean": round(statistics.mean(fetches), 3) if fetches else None,
            "max": max(fetches, default=None),
        },
        "worker_cpu": {
            "total_s": round(samples[-1]["cpu_s"] - samples[0]["cpu_s"], 2),
            "steady_window_s": [round(steady_from - t0, 1), round(end - t0, 1)],
            "steady_s": round(steady_cpu, 2),
            "jobs_succeeded_in_window": len(done_in),
            "per_job_ms": round(1000 * steady_cpu / len(done_in), 2) if done_in else None,
            "idle_ms_per_s": round(1000 * idle_rate, 2),
            "per_job_net_ms": round(
                1000 * (steady_cpu - idle_rate * (end - steady_from)) / len(done_in), 2
            )
            if done_in
            else None,
            "to_admit_backlog_s": round(cpu_between(samples, t0, admitted_at), 2)
            if admitted_at
            else None,
            "admit_wall_s": round(admitted_at - t0, 2) if admitted_at else None,
            # From the worker's own t2v_task_cpu_seconds over the same window: the CPU of
            # the t2v tasks themselves (with what they ran in place), per job, and the
            # rest of the worker's (Celery's broker traffic and dispatch, beat, idle).
            "tasks": {
                task: {"count": int(n), "cpu_s": round(cpu, 3), "ms_each": round(1000 * cpu / n, 2)}
                for task, (n, cpu) in sorted(tasks.items())
                if n
            },
            "tasks_per_job_ms": round(1000 * task_cpu_s / len(done_in), 2)
            if done_in and tasks
            else None,
            "outside_tasks_per_job_ms": round(1000 * (steady_cpu - task_cpu_s) / len(done_in), 2)
            if done_in and tasks
            else None,
        },
        "services_cpu_s": services_cpu(samples, t0, end),
        "worker_rss_peak_mb": round(peak["rss"] / 2**20, 1),
        "redis_used_memory_peak_mb": round(peak_mem / 2**20, 2),
        "database": dbf,
        "load_average_1m": {
            "mean": round(statistics.mean(loads), 2),
            "max": round(max(loads), 2),
        },
        "series": {
            "slots_busy": [(round(t - t0, 1), b) for t, b in busy_series],
            "lateness_s": [round(x, 3) for x in lateness],
            "samples": [
                {
                    "t": round(s["t"] - t0, 1),
                    "cpu_s": round(s["cpu_s"], 2),
                    "rss_mb": round(s["rss"] / 2**20, 1),
                    "waiting": s.get("line_waiting"),
                    "load": round(s["load"][0], 2),
                }
                for s in samples[:: max(1, len(samples) // 400)]
            ],
        },
        "logs": str(logs),
    }
    return result


def slots_busy_series(
    renders: list[tuple[float, float]], t0: float, end: float, slots: int, step: float = 2.0
) -> list[tuple[float, int]]:
    """Renders in progress at the provider every ``step`` s (capped at the limit)."""
    import bisect

    starts = sorted(a for a, _b in renders)
    ends = sorted(b for _a, b in renders)
    out = []
    t = t0
    while t <= end:
        n = bisect.bisect_right(starts, t) - bisect.bisect_right(ends, t)
        out.append((t, min(slots, n)))
        t += step
    return out


def broker_name(url: str | None) -> str:
    """``rabbitmq`` for an AMQP broker URL, else ``redis``."""
    from t2v_core.brokers import is_amqp_url

    return "rabbitmq" if url and is_amqp_url(url) else "redis"


def variant_settings(args: argparse.Namespace) -> dict[str, str]:
    """The ``--env T2V_NAME=VALUE`` settings of this run."""
    return dict(item.split("=", 1) for item in args.env)


# -- plots --------------------------------------------------------------------------------------
def plot_all() -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Variants (another pool, -c, a setting) live in results/variants/, not plotted here.
    results = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("scale-*.json"))]
    results.sort(key=lambda res: str(res.get("finished_at", "")))
    # The newest run of each mode, broker, N and probe setting (older ones stay in their
    # files, quoted in the README as "before").
    newest = {
        (r["mode"], r.get("broker", "redis"), r["jobs"], r["probe_and_poster"]): r
        for res in results
        for r in res.get("runs", [])
    }
    runs = list(newest.values())
    written = []
    for r in runs:
        if r["mode"] != "backlog" or r["probe_and_poster"]:
            continue
        fig, ax = plt.subplots(figsize=(7, 3))
        xs = [p[0] for p in r["series"]["slots_busy"]]
        ys = [p[1] for p in r["series"]["slots_busy"]]
        ax.plot(xs, ys, lw=0.8)
        ax.axhline(r["account_slots"], color="grey", ls="--", lw=0.8, label="limit L")
        ax.set_xlabel("seconds since enqueue")
        ax.set_ylabel("renders at the provider")
        ax.set_title(f"backlog {r['jobs']:,}: slots busy {r['slots_busy_while_jobs_waited']}")
        ax.legend(loc="lower right")
        out = RESULTS / f"scale-slots-{r['jobs']}.png"
        fig.tight_layout()
        fig.savefig(out, dpi=90)
        plt.close(fig)
        written.append(out.name)
    late = [r for r in runs if r["mode"] == "inflight" and r["series"]["lateness_s"]]
    if late:
        fig, ax = plt.subplots(figsize=(7, 3))
        for r in late:
            label = f"{r['jobs']:,} on {r.get('broker', 'redis')}"
            ax.hist(r["series"]["lateness_s"], bins=60, histtype="step", label=label)
        ax.set_xlabel("detection after the render ended (s)")
        ax.set_ylabel("jobs")
        ax.set_title("inflight: detection lateness")
        ax.legend(title="jobs in flight")
        fig.tight_layout()
        out = RESULTS / "scale-lateness.png"
        fig.savefig(out, dpi=90)
        plt.close(fig)
        written.append(out.name)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    lines = (("backlog", "redis", "o"), ("inflight", "redis", "s"), ("inflight", "rabbitmq", "^"))
    for mode, broker, marker in lines:
        pts = sorted(
            (r["jobs"], r["worker_cpu"]["per_job_net_ms"], r["worker_rss_peak_mb"])
            for r in runs
            if r["mode"] == mode
            and r.get("broker", "redis") == broker
            and not r["probe_and_poster"]
            and not r.get("settings")
            # fewer finished jobs than this in the window: CPU per job is mostly idle time
            and r["worker_cpu"]["jobs_succeeded_in_window"] >= 50
        )
        if pts:
            label = f"{mode}, {broker}"
            a1.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=label)
            a2.plot([p[0] for p in pts], [p[2] for p in pts], marker=marker, label=label)
    base = [r for res in results for r in res.get("baseline", []) if r["worker_rss_peak_mb"]]
    if base:
        bare = sorted((b["jobs"], b["worker_rss_peak_mb"]) for b in base)
        a2.plot([p[0] for p in bare], [p[1] for p in bare], marker="x", ls=":", label="bare Celery")
    a1.set_xlabel("N jobs")
    a1.set_ylabel("worker CPU per job, net of idle (ms)")
    a2.set_xlabel("N jobs")
    a2.set_ylabel("peak worker RSS (MB)")
    for a in (a1, a2):
        a.set_xscale("log")
        a.legend()
    fig.tight_layout()
    out = RESULTS / "scale-cost.png"
    fig.savefig(out, dpi=90)
    plt.close(fig)
    written.append(out.name)
    return written


def summary(r: dict[str, Any]) -> str:
    c = r["worker_cpu"]
    return (
        f"{r['mode']} N={r['jobs']:,} probe={r['probe_and_poster']}: states {r['states_at_end']}; "
        f"slots busy {r['slots_busy_while_jobs_waited']}, vs ceiling "
        f"{r['throughput']['vs_ceiling']}, 429s {r['http_429']}; lateness "
        f"{r['detection_lateness_s']}; fetches/job {r['fetches_per_job']['mean']}; CPU/job "
        f"{c['per_job_ms']} ms (net of idle {c['per_job_net_ms']} ms; in t2v tasks "
        f"{c.get('tasks_per_job_ms')} ms, outside them {c.get('outside_tasks_per_job_ms')} ms), "
        "admit "
        f"{c['to_admit_backlog_s']} s CPU in {c['admit_wall_s']} s; "
        f"RSS {r['worker_rss_peak_mb']} MB; redis {r['redis_used_memory_peak_mb']} MB; "
        f"db {r['database']}; load {r['load_average_1m']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", nargs="?", choices=("backlog", "inflight"))
    parser.add_argument("--jobs", type=int, action="append", help="N; repeatable")
    parser.add_argument("--slots", type=int, default=10, help="account limit L (backlog)")
    parser.add_argument("--render-mean", type=float, default=None)
    parser.add_argument("--render-spread", type=float, default=None)
    parser.add_argument("--eta-noise", type=float, default=0.1)
    parser.add_argument("--duration", type=float, default=180.0, help="backlog window (s)")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--pool", default="prefork", choices=("prefork", "threads"))
    parser.add_argument(
        "--worker-arg", action="append", default=[], help="passed to celery worker; repeatable"
    )
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="idle CPU sample")
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--probe", choices=("off", "on", "both"), default="off")
    parser.add_argument("--broker-url", default=None, help="default: a private Redis")
    parser.add_argument("--redis-url", default=None, help="T2V_REDIS_URL (default: broker)")
    parser.add_argument("--database-url", default=None, help="default: a fresh PG database")
    parser.add_argument("--baseline", action="store_true", help="bare Celery reschedules too")
    parser.add_argument("--baseline-countdown", type=float, default=5.0)
    parser.add_argument("--baseline-duration", type=float, default=60.0)
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="T2V_NAME=VALUE",
        help="a worker setting for this run (a variant: e.g. T2V_POLL_WAITING_ETA_MARGIN=0.05)",
    )
    parser.add_argument("--plot", action="store_true", help="redraw the PNGs from results")
    parser.add_argument("--out", default=None, help="result file name (default by mode and N)")
    args = parser.parse_args()
    if args.mode is None:
        if args.plot:
            print("wrote", ", ".join(plot_all()))
            return 0
        parser.error("a mode (backlog|inflight) or --plot")
    if args.render_mean is None:
        args.render_mean = 30.0 if args.mode == "backlog" else 150.0
    if args.render_spread is None:
        args.render_spread = 0.2 if args.mode == "backlog" else 0.12
    sizes = args.jobs or ([2000] if args.mode == "backlog" else [500])
    probes = {"off": [False], "on": [True], "both": [False, True]}[args.probe]
    logs = Path(tempfile.mkdtemp(prefix=f"t2v-bench-scale-{args.mode}-"))
    print(f"logs in {logs}", flush=True)
    runs, baseline = [], []
    for n in sizes:
        for probe in probes:
            r = run(args, n, probe, logs / f"{n}-{'probe' if probe else 'noprobe'}")
            print(summary(r), flush=True)
            runs.append(r)
        if args.baseline:
            from scale_baseline import run_baseline

            b = run_baseline(
                n, args.baseline_countdown, args.baseline_duration, logs / f"{n}-baseline"
            )
            print("baseline:", json.dumps(b), flush=True)
            baseline.append(b)
    result = {
        "benchmark": f"scale: {args.mode} (issue 10)",
        "command": shlex.join(["python", "benchmarks/bench_scale.py", *sys.argv[1:]]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "note": "2 cores shared with other work: slot use and lateness are depressed by "
            "contention (see load_average_1m); CPU per job is process time",
        },
        "code": code_version(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "setup": {
            "worker": f"one `celery -A worker worker -B` ({args.pool}, -c {args.concurrency}"
            + "".join(f" {a}" for a in args.worker_arg)
            + ")",
            "database": "PostgreSQL 127.0.0.1:5432, a fresh database per run",
            "broker": re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", args.broker_url)
            if args.broker_url
            else "a private redis-server per run",
            "requests": "8 frames, 64x64, one prompt and seed (the simulator renders once)",
            "simulator_eta_noise": args.eta_noise,
        },
        "runs": runs,
        "baseline": baseline,
    }
    name = args.out or f"scale-{args.mode}-{'-'.join(str(n) for n in sizes)}.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / name).write_text(json.dumps(result, indent=1) + "\n")
    print("wrote", name, "and", ", ".join(plot_all()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
