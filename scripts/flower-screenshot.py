"""Take ops/flower-under-load.png: Flower, behind basic auth, while workers run a batch.

Starts the local stack (`t2v up`'s: a private Redis unless T2V_BROKER_URL answers, the
simulator, a Celery worker with beat), Flower with basic auth, enqueues a batch of small
jobs, waits until Flower has seen tasks of every step, checks that Flower refuses anonymous
requests (401), and has Debian's headless Chromium screenshot the tasks page with the
credentials. Everything runs on loopback and stops at the end.

    apt-get install -y --no-install-recommends chromium
    .venv/bin/python scripts/flower-screenshot.py [--jobs 40] [--out ops/flower-under-load.png]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
USER = "ops"
STEPS = {"t2v.submit", "t2v.poll", "t2v.download"}


def wait_until(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--out", type=Path, default=REPO / "ops" / "flower-under-load.png")
    parser.add_argument("--page", default="/tasks", help="Flower page to shoot (/, /tasks)")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium: apt-get install -y --no-install-recommends chromium")

    run = Path(tempfile.mkdtemp(prefix="t2v-flower-shot-"))
    os.environ.setdefault("T2V_DATABASE_URL", f"sqlite:///{run}/jobs.sqlite3")
    os.environ.setdefault("T2V_STORAGE_URL", str(run / "videos"))

    import producer
    from worker.devstack import processes
    from worker.devstack.stack import running_stack

    # Unset: a private Redis on a free port (the stack starts one when nothing answers).
    os.environ.setdefault("T2V_BROKER_URL", f"redis://127.0.0.1:{processes.free_port()}/0")

    password = secrets.token_urlsafe(12)
    with running_stack(run, flower=False, concurrency=args.concurrency, render_mean=6.0) as stack:
        env = {k: v for k, v in {**os.environ, **stack.env}.items() if k != "T2V_MODELSLAB_API_KEY"}
        flower = processes.start_flower(run, env=env, user=USER, password=password)
        try:
            jobs = [
                producer.enqueue(
                    producer.Text2VideoRequest(
                        prompt=f"A paper boat drifting down a rain gutter, take {i}",
                        num_frames=8,
                        width=128,
                        height=128,
                    )
                )
                for i in range(args.jobs)
            ]
            print(f"enqueued {len(jobs)} jobs; Flower at {flower.url}")

            def seen() -> bool:
                r = requests.get(f"{flower.url}/api/tasks", auth=(USER, password), timeout=10)
                r.raise_for_status()
                names = {t.get("name") for t in r.json().values()}
                return names >= STEPS and len(r.json()) >= args.jobs

            wait_until("Flower to see every step", seen, 120)
            anonymous = requests.get(f"{flower.url}{args.page}", timeout=10).status_code
            api = requests.get(f"{flower.url}/api/tasks", timeout=10).status_code
            print(f"without credentials: {args.page} -> {anonymous}, /api/tasks -> {api}")
            if (anonymous, api) != (401, 401):
                raise SystemExit("Flower answered without credentials")
            host = flower.url.removeprefix("http://")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [
                    chromium,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--hide-scrollbars",
                    "--window-size=1400,900",
                    "--virtual-time-budget=8000",
                    f"--screenshot={args.out}",
                    f"http://{USER}:{password}@{host}{args.page}",
                ],
                check=True,
                capture_output=True,
                timeout=120,
            )
            print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
        finally:
            flower.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
