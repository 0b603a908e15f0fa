"""The client installed alone: `t2v submit` works without the worker or the simulator, and
`t2v up` says which extra brings it.

The other packages are made unimportable in a fresh interpreter (a meta path hook that
refuses them, as a machine where they were never installed would), then the real ``t2v``
entry point runs against real Redis and SQLite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, text

# What `pip install t2v-queue` (no extras) does not bring, and the project's own packages
# the client must never need.
ABSENT = (
    "worker",
    "simulator",
    "boto3",
    "requests",
    "av",
    "starlette",
    "uvicorn",
    "flower",
    "PIL",
    "fakeredis",
)

RUNNER = f"""
import importlib.abc, sys
ABSENT = {ABSENT!r}

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
from producer.cli import main
try:
    main(sys.argv[1:])
finally:
    loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set(ABSENT))
    print("LOADED=" + ",".join(loaded), file=sys.stderr)
"""


def _t2v(
    args: list[str], redis_url: str, sqlite_url: str, cwd: Path
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "T2V_BROKER_URL": redis_url, "T2V_DATABASE_URL": sqlite_url}
    return subprocess.run(
        [sys.executable, "-c", RUNNER, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_submit_works_and_up_names_the_extra_without_the_worker(
    redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    done = _t2v(
        ["submit", "a fox in the snow", "--frames", "9", "--json"], redis_url, sqlite_url, tmp_path
    )
    assert done.returncode == 0, done.stderr
    job_id = json.loads(done.stdout)["id"]
    assert "LOADED=\n" in done.stderr or done.stderr.rstrip().endswith("LOADED=")
    with create_engine(sqlite_url).connect() as conn:
        status = conn.execute(
            text("SELECT status FROM t2v_jobs WHERE id = :i"), {"i": job_id}
        ).scalar_one()
    assert status == "queued"

    for command, extra in (("up", "worker"), ("demo", "worker"), ("simulator", "simulator")):
        args = [command, "a prompt"] if command == "demo" else [command]
        missing = _t2v(args, redis_url, sqlite_url, tmp_path)
        assert missing.returncode == 2, (command, missing.stdout, missing.stderr)
        assert f"pip install 't2v-queue[{extra}]'" in missing.stderr, missing.stderr

    listed = _t2v(["--help"], redis_url, sqlite_url, tmp_path)
    assert listed.returncode == 0 and "submit" in listed.stdout and "up" in listed.stdout


def test_with_the_worker_installed_up_comes_from_its_entry_point() -> None:
    # The same lookup with nothing hidden finds the worker's own command (its --help is
    # argparse's, not the client's).
    shown = subprocess.run(
        [sys.executable, "-c", "from producer.cli import main; main()", "up", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "usage: t2v up" in shown.stdout and "--concurrency" in shown.stdout
