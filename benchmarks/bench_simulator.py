"""Fetch requests per second against a real ``python -m simulator`` on loopback.

Starts the simulator as a subprocess, creates a set of jobs (half finish, half stay
processing, so both fetch shapes are served), then drives ``POST /api/v6/video/fetch/{id}``
from several client processes, each on one keep-alive ``http.client`` connection, for a bounded
time and count. Writes ``benchmarks/results/simulator.json``.

    .venv/bin/python benchmarks/bench_simulator.py [--seconds 8] [--clients 3] [--jobs 50]

Target: >= 1,000 fetches/s on a 2-core box (the simulator must never be the bottleneck).
The client processes share the cores with the server, so the figure is a floor.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "results" / "simulator.json"
KEY = "bench-key"
TARGET = 1000.0


def start_simulator(media_dir: str) -> tuple[subprocess.Popen[str], str, int]:
    argv = [
        sys.executable,
        "-m",
        "simulator",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--keys",
        KEY,
        "--render-mean",
        "0.05",
        "--render-spread",
        "0",
        "--queue-limit",
        "100000",
        "--media-dir",
        media_dir,
        "--faults",
        json.dumps({"never_finish_share": 0.5}),
    ]
    proc = subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    found: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("simulator listening on "):
                found.append(line.rsplit(":", 1)[1].strip())
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(30)
    if not found:
        proc.kill()
        raise SystemExit("simulator did not start")
    return proc, "127.0.0.1", int(found[0])


def call(
    conn: http.client.HTTPConnection, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    conn.request(
        method,
        path,
        body=json.dumps(body) if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def client(
    port: int, ids: list[int], seconds: float, max_requests: int, start: Any, out: Any
) -> None:
    """One keep-alive connection polling the ids round-robin until time or count runs out."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    payload = json.dumps({"key": KEY}).encode()
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    errors = 0
    start.wait()
    began = time.perf_counter()
    deadline = began + seconds
    n = 0
    while n < max_requests:
        t0 = time.perf_counter()
        if t0 >= deadline:
            break
        conn.request(
            "POST", f"/api/v6/video/fetch/{ids[n % len(ids)]}", body=payload, headers=headers
        )
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - t0)
        if response.status != 200:
            errors += 1
        n += 1
    out.put(
        {
            "requests": n,
            "errors": errors,
            "elapsed": time.perf_counter() - began,
            "latencies": latencies,
        }
    )
    conn.close()


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--max-requests", type=int, default=200_000, help="per client")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-sim-") as media:
        proc, host, port = start_simulator(media)
        try:
            conn = http.client.HTTPConnection(host, port, timeout=30)
            ids = []
            for i in range(args.jobs):
                status, body = call(
                    conn,
                    "POST",
                    "/api/v6/video/text2video",
                    {
                        "key": KEY,
                        "prompt": f"benchmark job {i}",
                        "track_id": f"b{i}",
                        "width": 32,
                        "height": 32,
                        "num_frames": 2,
                        "output_type": "mp4",
                    },
                )
                assert status == 200, body
                ids.append(int(body["id"]))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # let the finishing half finish
                _s, stats = call(conn, "GET", "/_sim/stats")
                states = [j["status"] for j in stats["jobs"].values()]
                if (
                    states.count("success") + states.count("processing") == len(ids)
                    and states.count("success") >= len(ids) // 4
                ):
                    time.sleep(0.5)
                    break
                time.sleep(0.1)
            call(conn, "POST", "/_sim/faults", {})
            _s, before = call(conn, "GET", "/_sim/stats")

            ctx = multiprocessing.get_context("spawn")
            start, out = ctx.Event(), ctx.Queue()
            workers = [
                ctx.Process(
                    target=client, args=(port, ids, args.seconds, args.max_requests, start, out)
                )
                for _ in range(args.clients)
            ]
            for w in workers:
                w.start()
            time.sleep(1.0)  # let every client connect and wait at the gate
            start.set()
            results = [out.get(timeout=args.seconds + 60) for _ in workers]
            for w in workers:
                w.join(10)
            _s, after = call(conn, "GET", "/_sim/stats")
            conn.close()
        finally:
            proc.terminate()
            proc.wait(10)

    total = sum(r["requests"] for r in results)
    errors = sum(r["errors"] for r in results)
    elapsed = max(r["elapsed"] for r in results)
    latencies = sorted(x for r in results for x in r["latencies"])
    rate = total / elapsed
    served = after["fetches"]["total"] - before["fetches"]["total"]
    states = [j["status"] for j in after["jobs"].values()]
    result = {
        "benchmark": "simulator fetch requests per second, loopback, keep-alive",
        "fetches_per_second": round(rate, 1),
        "target_per_second": TARGET,
        "meets_target": rate >= TARGET,
        "requests": total,
        "errors": errors,
        "server_counted": served,
        "seconds": round(elapsed, 3),
        "clients": args.clients,
        "jobs": {
            "total": len(ids),
            "success": states.count("success"),
            "processing": states.count("processing"),
        },
        "latency_ms": {
            "p50": round(statistics.median(latencies) * 1000, 3),
            "p99": round(latencies[int(len(latencies) * 0.99)] * 1000, 3),
            "max": round(latencies[-1] * 1000, 3),
        },
        "command": " ".join([".venv/bin/python", "benchmarks/bench_simulator.py", *sys.argv[1:]]),
        "server": "python -m simulator (starlette + uvicorn, uvloop/httptools when installed)",
        "machine": machine(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "fetches_per_second",
                    "requests",
                    "errors",
                    "server_counted",
                    "latency_ms",
                )
            }
        )
    )
    print(f"wrote {RESULT.relative_to(REPO)}")
    return 0 if rate >= TARGET and errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
