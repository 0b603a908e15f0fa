"""Benchmark (issue 11): completion callbacks arrive at least once through kills and a wipe.

A private Redis (db 0 the broker; db 1 the application's receipts, never wiped), the
simulator over HTTP (queue limit 60, 1 s renders, half answered at once), one real Celery
worker with beat (SQLite file, local files, no probing, 60 account slots), and the
application's side: a Celery worker of ``benchmarks/callback_receiver.py`` consuming
``receiver.done`` (its ``video_ready`` task records each receipt in db 1), and an HTTP
receiver on loopback (allow-listed) that checks every Standard Webhooks signature with its
own code. N jobs (default 1,000) get ``on_done="receiver.video_ready"`` and N others a
``callback_url``. During the run the t2v worker's process group is SIGKILLed every 10 s
(a new one started at once) and the broker's db is wiped once (``FLUSHDB``) at
``--flush-at`` seconds.

Reported, per form: jobs, jobs whose callback arrived at least once, missing ones,
duplicates (receipts beyond the first per job and final state), the most receipts of one
job, bad signatures (HTTP), and the delay from the job's final state (its row stamp) to the
first receipt (p50/p95/max); the wall time, the kills, the wipe, and reconcile's re-sends
and replays from the worker logs. Writes benchmarks/results/callbacks.json. Not a test:
nothing is asserted.

    .venv/bin/python benchmarks/bench_callbacks.py [--jobs 1000] [--flush-at 60]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from benchmarks.callback_receiver import RECEIPTS, HttpReceiver  # noqa: E402
from worker.devstack import processes  # noqa: E402

KEY = "bench-callbacks-key-0123456789"
SECRET = "whsec_" + base64.b64encode(b"bench-callbacks-secret-0123456789").decode()
RESULT = ROOT / "benchmarks" / "results" / "callbacks.json"
SLOTS = 60
KILL_EVERY = 10.0
APP_QUEUE = "receiver.done"
REPLAY_WINDOW = 300


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 2)


def delays(first: dict[str, float], finals: dict[str, float]) -> dict[str, Any]:
    d = [first[j] - finals[j] for j in first if j in finals]
    return {"p50_s": pct(d, 0.5), "p95_s": pct(d, 0.95), "max_s": pct(d, 1.0)}


def main() -> None:  # noqa: PLR0915 (one run, read top to bottom)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per callback form")
    parser.add_argument("--flush-at", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=2400.0)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="t2v-bench-callbacks-"))
    logs = base / "logs"
    redis_proc = processes.start_redis(logs)
    broker_url = redis_proc.url  # db 0
    receipts_url = redis_proc.url.rsplit("/", 1)[0] + "/1"
    sim = processes.start_simulator(
        logs,
        keys=[KEY],
        args=["--render-mean", "1", "--queue-limit", str(SLOTS), "--instant-share", "0.5"],
    )
    http = HttpReceiver(SECRET)
    env = {
        "T2V_BROKER_URL": broker_url,
        "T2V_DATABASE_URL": f"sqlite:///{base / 't2v.sqlite3'}",
        "T2V_STORAGE_URL": str(base / "videos"),
        "T2V_MODELSLAB_API_KEY": KEY,
        "T2V_MODELSLAB_BASE_URL": f"{sim.url}/api/v6",
        "T2V_DOWNLOAD_ALLOWED_HOSTS": "127.0.0.1",
        "T2V_ACCOUNT_SLOTS": str(SLOTS),
        "T2V_PROBE_VIDEOS": "false",
        "T2V_CALLBACK_SECRET": SECRET,
        "T2V_CALLBACK_ALLOWED_HOSTS": "127.0.0.1",
        "T2V_CALLBACK_REPLAY_WINDOW": str(REPLAY_WINDOW),
        "T2V_CALLBACK_RETRY_BASE": "0.5",
        "T2V_CALLBACK_RETRY_MAX": "10",
        "T2V_CALLBACK_TIMEOUT": "5",
        # Fast re-drives, so a killed worker's steps are picked up within seconds.
        "T2V_RECONCILE_INTERVAL": "2",
        "T2V_RECONCILE_GRACE": "5",
        "T2V_CLAIM_LEASE": "10",
        "T2V_DOWNLOAD_CLAIM_LEASE": "15",
        "T2V_POLL_MIN_DELAY": "0.3",
        "T2V_POLL_MAX_DELAY": "2",
        # A submit cut by a kill has an unknown outcome: resubmitted (recorded) after 15 s,
        # not the production 30 min, so the run ends; a job whose every submit was cut
        # fails (submit_unknown), which is a final state and notifies too.
        "T2V_SUBMIT_UNKNOWN_WAIT": "15",
        "T2V_LOST_SUBMIT_HOLD": "10",
        "T2V_MAX_UNKNOWN_RESUBMITS": "3",
    }
    receiver_env = {"RECEIVER_BROKER": broker_url, "RECEIVER_RECEIPTS": receipts_url}
    app_worker = processes.spawn(
        "receiver",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "benchmarks.callback_receiver",
            "worker",
            "-Q",
            APP_QUEUE,
            "--concurrency",
            "2",
            "--loglevel",
            "INFO",
            "--without-mingle",
            "--without-gossip",
        ],
        env={**receiver_env, "PYTHONPATH": str(ROOT)},
        log_dir=logs,
        cwd=ROOT,
    )
    generation = 0

    def new_worker() -> processes.ManagedProcess:
        nonlocal generation
        generation += 1
        return processes.start_worker(
            logs, env=env, name=f"t2v-{generation}", concurrency=4, beat=True
        )

    worker = new_worker()
    events: list[dict[str, Any]] = []
    receipts = redis.Redis.from_url(receipts_url, decode_responses=True)
    broker = redis.Redis.from_url(broker_url)
    try:
        os.environ.update(env)
        import producer
        from producer.default import default_producer

        producer.configure()
        n = args.jobs

        def reqs(tag: str) -> list[Any]:
            return [
                producer.Text2VideoRequest(
                    prompt=f"{tag} {i}: a paper lantern", num_frames=8, width=128, height=128
                )
                for i in range(n)
            ]

        t0 = time.time()
        by_task: list[str] = []
        by_url: list[str] = []
        for start in range(0, n, 250):
            chunk = min(250, n - start)
            by_task += [
                j.id
                for j in producer.enqueue_many(
                    reqs("task")[:chunk], on_done="receiver.video_ready", on_done_queue=APP_QUEUE
                )
            ]
            by_url += [
                j.id for j in producer.enqueue_many(reqs("url")[:chunk], callback_url=http.url)
            ]
        enqueued_s = time.time() - t0
        store = default_producer().store
        next_kill, flushed = t0 + KILL_EVERY, False
        done = False
        while time.time() - t0 < args.timeout:
            now = time.time()
            if now >= next_kill:
                worker.kill()
                killed = time.time()
                worker = new_worker()
                events.append(
                    {
                        "at_s": round(killed - t0, 1),
                        "event": "SIGKILL worker",
                        "new_ready_after_s": round(time.time() - killed, 1),
                    }
                )
                next_kill = time.time() + KILL_EVERY
            if not flushed and now - t0 >= args.flush_at:
                pending = broker.dbsize()
                broker.flushdb()
                flushed = True
                events.append(
                    {"at_s": round(now - t0, 1), "event": "FLUSHDB broker", "keys_lost": pending}
                )
            got_task = {k.split(":")[0] for k in receipts.hkeys(f"{RECEIPTS}:count")}
            got_url = {k.split("-")[0] for k in http.delivered}
            if set(by_task) <= got_task and set(by_url) <= got_url:
                done = True
                break
            time.sleep(0.5)
        wall = time.time() - t0
        counts = {k: int(v) for k, v in receipts.hgetall(f"{RECEIPTS}:count").items()}
        firsts = {
            k.split(":")[0]: float(v) for k, v in receipts.hgetall(f"{RECEIPTS}:first").items()
        }
        records = store.get_many(by_task + by_url)
    finally:
        worker.stop()
        app_worker.stop()
        http.close()
        sim.stop()
    worker_logs = "".join(p.read_text(errors="replace") for p in logs.glob("t2v-*.log"))
    resent = sum(int(x) for x in re.findall(r"callbacks_resent=(\d+)", worker_logs))
    # Logged per batch as it is sent (a run killed before its report still counts).
    replayed = sum(int(x) for x in re.findall(r"on_done replayed for (\d+) jobs", worker_logs))
    redis_proc.stop()

    def final_ts(job_id: str) -> float | None:
        r = records.get(job_id)
        if r is None:
            return None
        stamp = r.succeeded_at or r.failed_at or r.cancelled_at or r.parked_at
        return stamp.timestamp() if stamp else None

    finals = {j: t for j in by_task + by_url if (t := final_ts(j)) is not None}
    task_counts: dict[str, int] = {}
    for key, c in counts.items():
        task_counts[key.split(":")[0]] = task_counts.get(key.split(":")[0], 0) + c
    url_counts: dict[str, int] = {}
    for msg_id, c in http.delivered.items():
        url_counts[msg_id.split("-")[0]] = url_counts.get(msg_id.split("-")[0], 0) + c
    statuses: dict[str, int] = {}
    for r in records.values():
        statuses[r.status.value] = statuses.get(r.status.value, 0) + 1

    def form(ids: list[str], got: dict[str, int], first: dict[str, float]) -> dict[str, Any]:
        arrived = [j for j in ids if got.get(j, 0) >= 1]
        return {
            "jobs": len(ids),
            "arrived_at_least_once": len(arrived),
            "missing": len(ids) - len(arrived),
            "duplicates": sum(got.get(j, 0) - 1 for j in arrived),
            "jobs_with_duplicates": sum(1 for j in arrived if got[j] > 1),
            "most_receipts_of_one_job": max((got.get(j, 0) for j in ids), default=0),
            "final_state_to_first_receipt": delays(first, finals),
        }

    url_first = {k.split("-")[0]: v for k, v in http.first.items()}
    result = {
        "all_arrived": done,
        "wall_s": round(wall, 1),
        "enqueue_s": round(enqueued_s, 2),
        "job_states": statuses,
        "celery_task_callback": form(by_task, task_counts, firsts),
        "http_callback": {
            **form(by_url, url_counts, url_first),
            "signatures_verified": http.verified,
            "bad_signatures": http.bad_signatures,
        },
        "kills": sum(1 for e in events if e["event"] == "SIGKILL worker"),
        "events": events,
        "reconcile_callbacks_resent": resent,
        "reconcile_on_done_replayed_after_wipe": replayed,
        "settings": {
            "kill_every_s": KILL_EVERY,
            "flush_at_s": args.flush_at,
            "T2V_CALLBACK_REPLAY_WINDOW": REPLAY_WINDOW,
            "worker_concurrency": 4,
            "simulator": "render-mean 1 s, queue-limit 60, instant-share 0.5",
        },
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        },
        "command": f"benchmarks/bench_callbacks.py --jobs {args.jobs} --flush-at {args.flush_at}",
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
