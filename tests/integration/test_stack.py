"""`t2v demo` and `t2v up` as a newcomer runs them: no key, no Redis where the URL points.
The demo must store a valid video and exit 0; `up` must stop every child on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from worker.devstack import processes

pytestmark = pytest.mark.slow

T2V = str(Path(sys.executable).parent / "t2v")


def newcomer_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("T2V_", "AWS_"))}
    # Nothing listens here, so the stack must start its own private Redis.
    env["T2V_BROKER_URL"] = f"redis://127.0.0.1:{processes.free_port()}/0"
    env["HOME"] = str(tmp_path)
    return env


def test_demo_stores_a_valid_video_on_embedded_defaults(tmp_path: Path) -> None:
    out = subprocess.run(
        [T2V, "demo", "A paper plane over a city at dawn"],
        cwd=tmp_path,
        env=newcomer_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "(private, from" in out.stdout
    assert "the local simulator; no key was set" in out.stdout
    line = next(x for x in out.stdout.splitlines() if x.startswith("Stored video: "))
    video = Path(line.removeprefix("Stored video: "))
    assert video.is_file() and video.is_relative_to(tmp_path / "var" / "videos")
    probe = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
            str(video),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "h264"
    assert "Results page:   `t2v web`, then http://127.0.0.1:8090/jobs/" in out.stdout


def test_up_runs_in_the_foreground_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [T2V, "up", "--no-flower"],
        cwd=tmp_path,
        env=newcomer_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if line.startswith("Ready.") or not line:
            break
    assert lines[-1].startswith("Ready."), "".join(lines)
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
    pids = [int(p) for p in children.stdout.split()]
    assert len(pids) >= 4  # redis, simulator, worker, web
    # `t2v up` starts the results page and prints where it is.
    web = next(x for x in lines if x.startswith("Results page:"))
    url = web.split()[2].rstrip("/")
    import urllib.request

    with urllib.request.urlopen(f"{url}/healthz", timeout=10) as answer:  # noqa: S310 - loopback
        assert answer.read() == b"ok"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    proc.stdout.close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
