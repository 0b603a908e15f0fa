"""Priorities and fair share in the account's slot line, on the real worker and simulator.

Each phase starts its own stack (a private Redis, the simulator with short renders, one
Celery worker with beat, SQLite) and tears it down:

1. ``interactive``: tenant A enqueues ``--bulk`` bulk jobs; once A holds every slot, tenant
   B enqueues 10 interactive jobs. Measured: seconds until B's first job holds a slot
   (``submitting_at``) against the mean render time, and how many of A's jobs still wait
   when B's last job is done.
2. ``even`` / ``weighted``: tenants A and B enqueue ``--per-tenant`` bulk jobs each (A's
   first, then B's), with ``T2V_TENANT_WEIGHTS`` unset / ``A=3,B=1``. Once every submit
   message has joined the line (``all_joined_the_line_after_s``: until then B's messages
   wait in the broker behind A's), measured over a ``--window`` s window: each tenant's
   share of slot-seconds (a slot is held from ``submitting_at`` to ``downloading_at``), in
   10 s buckets too.
3. ``single``: the same jobs with no tenant (the old single line), for slot use while
   jobs wait: slot-seconds used / (limit x window) in both.

The backlogs are not run to their end (at 5 slots and 2 s renders 10,000 jobs take over an
hour); the window says how long each phase ran. Results: benchmarks/results/fairness.json.
The share per 10 s bucket is also drawn: benchmarks/results/fairness-shares.png
(``--plot-only`` redraws it from the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from worker.devstack import processes  # noqa: E402

KEY = "bench-key-0123456789"
SLOTS = 5


def _stack(base: Path, render_mean: float, extra: dict[str, str]) -> tuple[list[Any], Any]:
    base.mkdir(parents=True)
    procs: list[processes.ManagedProcess] = []
    redis = processes.start_redis(base)
    procs.append(redis)
    sim = processes.start_simulator(
        base,
        keys=[KEY],
        args=["--render-mean", str(render_mean), "--render-spread", "0.1", "--seed", "7"],
    )
    procs.append(sim)
    env = {
        "T2V_BROKER_URL": redis.url,
        "T2V_DATABASE_URL": f"sqlite:///{base / 't2v.sqlite3'}",
        "T2V_STORAGE_URL": str(base / "videos"),
        "T2V_MODELSLAB_API_KEY": KEY,
        "T2V_MODELSLAB_BASE_URL": f"{sim.url}/api/v6",
        "T2V_DOWNLOAD_ALLOWED_HOSTS": "127.0.0.1",
        "T2V_ACCOUNT_SLOTS": str(SLOTS),
        "T2V_PROBE_VIDEOS": "false",
        **extra,
    }
    os.environ.update(env)
    from t2v_core.settings import get_settings

    get_settings.cache_clear()
    from producer.api import Producer
    from t2v_core.settings import Settings

    prod = Producer(Settings())
    prod.store.create_schema()
    procs.append(processes.start_worker(base, env=env, concurrency=4, loglevel="INFO"))
    return procs, prod


def _req(i: int) -> dict[str, Any]:
    return {
        "prompt": f"fairness {i}: a tram in the rain",
        "num_frames": 8,
        "width": 64,
        "height": 64,
    }


def _wait_until(check: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.2)
    return False


def _held(prod: Any, status: str = "processing") -> int:
    return len(prod.list_jobs(status=status, limit=10_000))


def interactive(base: Path, bulk: int, render_mean: float) -> dict[str, Any]:
    procs, prod = _stack(base, render_mean, {})
    try:
        t0 = time.monotonic()
        prod.enqueue_many([_req(i) for i in range(bulk)], priority="bulk", tenant="A")
        enqueue_s = time.monotonic() - t0
        _wait_until(lambda: _held(prod) >= SLOTS, 120)
        started = datetime.now().astimezone()
        t1 = time.monotonic()
        jobs = prod.enqueue_many(
            [_req(10**6 + i) for i in range(10)], priority="interactive", tenant="B"
        )
        ids = [j.id for j in jobs]
        first_slot = None
        while time.monotonic() - t1 < 300:
            rows = prod.store.get_many(ids)
            got = [r.submitting_at for r in rows.values() if r.submitting_at]
            if got and first_slot is None:
                first_slot = (min(got) - started).total_seconds()
            if all(r.is_final for r in rows.values()):
                break
            time.sleep(0.1)
        all_done_s = time.monotonic() - t1
        rows = prod.store.get_many(ids)
        a_waiting = len(prod.list_jobs(status="queued", tenant="A", limit=100_000))
        return {
            "bulk_jobs_of_A": bulk,
            "enqueue_bulk_s": round(enqueue_s, 2),
            "render_mean_s": render_mean,
            "B_first_slot_after_s": round(first_slot, 2) if first_slot is not None else None,
            "B_all_10_final_after_s": round(all_done_s, 2),
            "B_succeeded": sum(r.status.value == "succeeded" for r in rows.values()),
            "A_jobs_still_queued_when_B_done": a_waiting,
        }
    finally:
        for proc in reversed(procs):
            proc.stop()


def _slot_seconds(prod: Any, t0: datetime, window: float) -> dict[str, Any]:
    """Slot-seconds per tenant in [t0, t0 + window], total and per 10 s bucket."""
    rows = prod.store.list(limit=None)
    per: dict[str, float] = {}
    buckets: dict[str, list[float]] = {}
    n_buckets = int(window // 10)
    now = datetime.now().astimezone()
    for r in rows:
        if r.submitting_at is None:
            continue
        start = (r.submitting_at - t0).total_seconds()
        end_at = r.downloading_at or r.succeeded_at or r.failed_at or now
        end = min((end_at - t0).total_seconds(), window)
        start = max(start, 0.0)
        if end <= start:
            continue
        tenant = r.tenant or "(none)"
        per[tenant] = per.get(tenant, 0.0) + end - start
        b = buckets.setdefault(tenant, [0.0] * n_buckets)
        for k in range(n_buckets):
            lo, hi = k * 10.0, (k + 1) * 10.0
            b[k] += max(0.0, min(end, hi) - max(start, lo))
    total = sum(per.values())
    return {
        "slot_seconds": {t: round(v, 1) for t, v in per.items()},
        "share": {t: round(v / total, 4) for t, v in per.items()} if total else {},
        "slot_use_while_waiting": round(total / (SLOTS * window), 4),
        "share_per_10s": {
            t: [round(x / (sum(buckets[u][k] for u in buckets) or 1), 3) for k, x in enumerate(b)]
            for t, b in buckets.items()
        },
    }


def shared(base: Path, per_tenant: int, window: float, render_mean: float, mode: str) -> Any:
    extra = {"T2V_TENANT_WEIGHTS": "A=3,B=1"} if mode == "weighted" else {}
    procs, prod = _stack(base, render_mean, extra)
    try:
        import redis

        from t2v_core.names import QUEUE_SUBMIT, queue_lists

        client = redis.Redis.from_url(os.environ["T2V_BROKER_URL"])
        start = time.monotonic()
        if mode == "single":
            prod.enqueue_many([_req(i) for i in range(2 * per_tenant)], priority="bulk")
        else:
            for n, tenant in enumerate(("A", "B")):
                reqs = [_req(n * per_tenant + i) for i in range(per_tenant)]
                prod.enqueue_many(reqs, priority="bulk", tenant=tenant)
        # Fairness is the line's: measure once every submit message has joined it.
        _wait_until(lambda: sum(client.llen(k) for k in queue_lists(QUEUE_SUBMIT)) == 0, 900)
        joined_s = time.monotonic() - start
        t0 = datetime.now().astimezone()
        time.sleep(window)  # a measurement window, not a synchronisation
        result = _slot_seconds(prod, t0, window)
        result["all_joined_the_line_after_s"] = round(joined_s, 1)
        result["queued_at_end"] = len(prod.list_jobs(status="queued", limit=100_000))
        result["weights"] = extra.get("T2V_TENANT_WEIGHTS", "1:1")
        return result
    finally:
        for proc in reversed(procs):
            proc.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bulk", type=int, default=10_000)
    ap.add_argument("--per-tenant", type=int, default=5_000)
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--render-mean", type=float, default=2.0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/fairness.json")
    ap.add_argument(
        "--phases",
        default="interactive,even,weighted,single",
        help="phases to run; the others keep their figures from --out",
    )
    ap.add_argument("--plot-only", action="store_true", help="redraw the plot from --out")
    args = ap.parse_args()
    if args.plot_only:
        plot(json.loads(args.out.read_text()), args.out.with_name("fairness-shares.png"))
        return 0
    phases = args.phases.split(",")
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    results.setdefault("runs", {})
    results.update(
        {
            "machine": f"{platform.node()} {os.cpu_count()} cores",
            "account_slots": SLOTS,
            "plot": "fairness-shares.png (share_per_10s of even and weighted)",
        }
    )
    command = " ".join(["python", *sys.argv])
    with tempfile.TemporaryDirectory(prefix="t2v-fair-") as tmp:
        base = Path(tmp)
        if "interactive" in phases:
            result = interactive(base / "i", args.bulk, args.render_mean)
            results["interactive_behind_bulk"] = result
            results["runs"]["interactive_behind_bulk"] = command
            print(json.dumps(result), flush=True)
        for mode in ("even", "weighted", "single"):
            if mode not in phases:
                continue
            result = shared(base / mode, args.per_tenant, args.window, args.render_mean, mode)
            result["per_tenant_jobs"] = args.per_tenant
            result["window_s"] = args.window
            results[mode] = result
            results["runs"][mode] = command
            print(mode, json.dumps(result["share"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.out.with_name("fairness-shares.png"))
    print(f"wrote {args.out}")
    return 0


def plot(results: dict[str, Any], path: Path) -> None:
    """Each tenant's share of slot-seconds per 10 s, for equal and for 3:1 weights."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    for ax, mode in zip(axes, ("even", "weighted"), strict=True):
        run = results.get(mode)
        if not run:
            continue
        for tenant, shares in sorted(run["share_per_10s"].items()):
            ax.plot([10 * (i + 1) for i in range(len(shares))], shares, marker="o", label=tenant)
        ax.set_title(f"{mode} ({run['weights']}, {run['per_tenant_jobs']} jobs each)")
        ax.set_xlabel("seconds into the window")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(title="tenant")
    axes[0].set_ylabel("share of slot-seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
