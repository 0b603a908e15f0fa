"""Helpers for the simulator tests: start a real ``python -m simulator``, talk to it.

The server is started on port 0 and announces its real port on stdout
(``simulator listening on http://HOST:PORT``); we wait for that line, then for
``/_sim/health``. Every test gets the same process with counters, faults and jobs reset.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
SEED_DIR = REPO / ".." / "shared" / "seed"
CI = os.environ.get("CI", "").lower() == "true"
KEY = "sim-key"
OTHER_KEY = "other-key"
SEED_SAMPLE_KEY = "your_api_key"  # the key the docs' sample client sends, unchanged


def need(ok: bool, reason: str) -> None:
    """Skip when something is missing locally; fail under CI=true."""
    if not ok:
        if CI:
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)


@dataclass
class SimProcess:
    proc: subprocess.Popen[str]
    url: str
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_simulator(
    workdir: Path,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 30,
) -> SimProcess:
    """Start ``python -m simulator --port 0`` and return once it answers its health check."""
    log = workdir / "simulator.log"
    argv = [
        sys.executable,
        "-m",
        "simulator",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--media-dir",
        str(workdir / "media"),
        *args,
    ]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SIM_")}
    full_env.update(env or {})
    with open(log, "w") as err:
        proc = subprocess.Popen(
            argv, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=err, text=True
        )
    found: list[str] = []

    def read_announce() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("simulator listening on "):
                found.append(line.split(" on ", 1)[1].strip())
                return

    reader = threading.Thread(target=read_announce, daemon=True)
    reader.start()
    reader.join(timeout)
    if not found:
        proc.kill()
        proc.wait(5)
        raise RuntimeError(f"simulator did not start: {log.read_text()[-2000:]}")
    sim = SimProcess(proc, found[0], log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{sim.url}/_sim/health", timeout=2).json() == {"ok": True}:
                return sim
        except requests.RequestException:
            time.sleep(0.05)
    sim.stop()
    raise RuntimeError("simulator never became healthy")


@dataclass
class Sim:
    """Client of one simulator: the API as a ModelsLab client sees it, plus ``/_sim``."""

    url: str
    key: str = KEY
    http: requests.Session = field(default_factory=requests.Session)

    @property
    def api(self) -> str:
        return f"{self.url}/api/v6"

    def submit(
        self, body: dict[str, Any] | None = None, *, key: str | None = None, **fields: Any
    ) -> requests.Response:
        payload = {
            "key": key or self.key,
            "prompt": "a red ball bouncing",
            **(body or {}),
            **fields,
        }
        return self.http.post(f"{self.api}/video/text2video", json=payload, timeout=30)

    def fetch(self, job_id: int | str, *, key: str | None = None) -> requests.Response:
        return self.http.post(
            f"{self.api}/video/fetch/{job_id}", json={"key": key or self.key}, timeout=30
        )

    def wait_status(
        self, job_id: int | str, status: str = "success", timeout: float = 20
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.fetch(job_id).json()
            if last["status"] == status:
                return last
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} not {status} after {timeout}s: {last}")

    def faults(self, **faults: Any) -> dict[str, Any]:
        r = self.http.post(f"{self.url}/_sim/faults", json=faults, timeout=5)
        r.raise_for_status()
        return dict(r.json())

    def stats(self) -> dict[str, Any]:
        r = self.http.get(f"{self.url}/_sim/stats", timeout=5)
        r.raise_for_status()
        return dict(r.json())

    def reset(self) -> None:
        self.http.post(f"{self.url}/_sim/reset", timeout=5).raise_for_status()


@dataclass
class Receiver:
    """A tiny webhook receiver on loopback that records every POSTed JSON body."""

    url: str
    received: list[dict[str, Any]]

    def wait_for(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.received) < count:
            time.sleep(0.02)
        return list(self.received)


def ffprobe(path: Path) -> dict[str, Any]:
    """Stream facts of the first video stream, frames really counted."""
    need(shutil.which("ffprobe") is not None, "ffprobe not installed")
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames,r_frame_rate,avg_frame_rate,pix_fmt",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return dict(json.loads(out.stdout)["streams"][0])
