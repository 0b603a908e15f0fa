"""Account slots follow the provider, with a real worker + beat on real Redis and the
simulator over HTTP: a line lost with Redis is rebuilt from the table; a cancelled render
keeps its slot until it can be over."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis as redis_lib

from t2v_core.states import JobStatus
from tests.conftest import SimControl
from tests.integration.pipeline import Pipeline, enqueue_small
from tests.integration.test_pipeline import make_env

pytestmark = pytest.mark.slow


def test_redis_restarted_empty_mid_run_rebuilds_the_line(
    redis_url: str, sqlite_url: str, sim: SimControl, tmp_path: Path
) -> None:
    env = make_env(
        redis_url,
        sqlite_url,
        sim,
        {
            "T2V_STORAGE_URL": str(tmp_path / "v"),
            "T2V_ACCOUNT_SLOTS": "2",
            "T2V_PROBE_VIDEOS": "false",
        },
    )
    pipe = Pipeline(env, tmp_path / "logs")
    pipe.start_worker()
    try:
        ids = enqueue_small(pipe, 8, "wipe")
        r = redis_lib.Redis.from_url(redis_url)
        # Wait until some hold slots and others wait in line, then lose everything.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and r.zcard("t2v:slots:waiting") < 2:
            time.sleep(0.05)
        assert r.zcard("t2v:slots:waiting") >= 2, "the line never formed"
        r.flushdb()  # Redis restarted with nothing on disk: messages and the line are gone
        records = pipe.wait_all(ids, timeout=120)
        log = pipe.worker_log()
    finally:
        pipe.stop()
    assert [rec.status for rec in records] == [JobStatus.SUCCEEDED] * 8, [
        (rec.status, rec.error) for rec in records
    ]
    assert "slot line rebuilt from the table" in log
    paid = sim.paid()
    assert all(paid.get(i) == 1 for i in ids), paid  # nothing was submitted twice
    # The provider (queue limit 5) never saw more than our 2 slots: no 429 for a full queue.
    assert sim.stats()["injected"].get("queue_limited", 0) == 0  # type: ignore[union-attr]


def test_a_cancelled_render_keeps_its_slot_until_it_can_be_over(
    redis_url: str, sqlite_url: str, sim: SimControl, tmp_path: Path
) -> None:
    deadline = 8.0
    env = make_env(
        redis_url,
        sqlite_url,
        sim,
        {
            "T2V_STORAGE_URL": str(tmp_path / "v"),
            "T2V_ACCOUNT_SLOTS": "1",
            "T2V_POLL_DEADLINE_SECONDS": str(deadline),
            "T2V_PROBE_VIDEOS": "false",
        },
    )
    pipe = Pipeline(env, tmp_path / "logs")
    sim.faults(never_finish_share=1.0)  # the first render runs until we stop looking
    pipe.start_worker()
    try:
        [first] = enqueue_small(pipe, 1, "cancelled")
        pipe.wait_all([first], timeout=30, done=lambda r: r.status is JobStatus.PROCESSING)
        sim.faults(never_finish_share=0.0)
        with pipe.as_application() as producer:
            assert producer.cancel(first) is True
            assert producer.get_job(first).status is JobStatus.CANCELLED  # at once
        [second] = enqueue_small(pipe, 1, "next")
        [rec] = pipe.wait_all([second], timeout=60)
        cancelled = pipe.store.get(first)
    finally:
        pipe.stop()
    assert rec.status is JobStatus.SUCCEEDED, rec.error
    assert cancelled is not None and cancelled.status is JobStatus.CANCELLED
    assert cancelled.next_check_at is None  # its quiet polls ended and gave the slot back
    jobs = {j["track_id"]: j for j in sim.stats()["jobs"].values()}  # type: ignore[union-attr]
    # The next job was not sent while the provider could still be rendering the cancelled
    # one for us (it would have been over the plan): only after that render's deadline.
    assert jobs[second]["submitted_at"] >= jobs[first]["submitted_at"] + deadline * 0.9
    downloads = sim.stats()["downloads"]["by_track_id"]  # type: ignore[index]
    assert downloads.get(first, 0) == 0  # nothing of the cancelled job was downloaded


def test_a_lost_answer_gives_its_slot_back_while_it_waits_for_its_resubmit(
    redis_url: str, sqlite_url: str, sim: SimControl, tmp_path: Path
) -> None:
    env = make_env(
        redis_url,
        sqlite_url,
        sim,
        {
            "T2V_STORAGE_URL": str(tmp_path / "v"),
            "T2V_ACCOUNT_SLOTS": "1",
            "T2V_PROBE_VIDEOS": "false",
            "T2V_LOST_SUBMIT_HOLD": "2",
            "T2V_SUBMIT_UNKNOWN_WAIT": "600",  # the lost one waits long for a webhook
        },
    )
    pipe = Pipeline(env, tmp_path / "logs")
    sim.faults(lost_after_create_share=1.0, lost_after_create_mode="reset")
    pipe.start_worker()
    try:
        [lost] = enqueue_small(pipe, 1, "lost")
        pipe.wait_all(
            [lost], timeout=30, done=lambda r: r.error is not None and "unknown" in r.error
        )
        sim.faults(lost_after_create_share=0.0)
        others = enqueue_small(pipe, 3, "after")
        records = pipe.wait_all(others, timeout=90)
        still = pipe.store.get(lost)
    finally:
        pipe.stop()
    # With one slot, the others could only run because the lost answer's hold ended.
    assert [r.status for r in records] == [JobStatus.SUCCEEDED] * 3, [r.error for r in records]
    assert still is not None and still.status is JobStatus.SUBMITTING  # still waiting
    assert sim.paid() == {lost: 1, **{i: 1 for i in others}}


def test_another_system_on_the_key_lowers_the_limit_in_use(
    redis_url: str, sqlite_url: str, sim: SimControl, tmp_path: Path
) -> None:
    import json
    import os
    import subprocess
    import sys

    env = make_env(
        redis_url,
        sqlite_url,
        sim,
        {
            "T2V_STORAGE_URL": str(tmp_path / "v"),
            "T2V_ACCOUNT_SLOTS": "5",
            "T2V_PROBE_VIDEOS": "false",
        },
    )
    pipe = Pipeline(env, tmp_path / "logs")
    sim.faults(external_holders=3, retry_after=1)  # the provider takes 2 of ours at most
    pipe.start_worker()
    try:
        ids = enqueue_small(pipe, 8, "shared")
        records = pipe.wait_all(ids, timeout=120)
        status = subprocess.run(
            [str(Path(sys.executable).with_name("t2v")), "status", "--account", "--json"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        pipe.stop()
    assert [r.status for r in records] == [JobStatus.SUCCEEDED] * 8, [r.error for r in records]
    assert all(n == 1 for n in sim.paid().values())
    assert status.returncode == 0, status.stderr
    view = json.loads(status.stdout)
    assert view["provider_max"] == 5 and view["queue_full_429s"] >= 1
    assert view["configured_limit"] == 5
    # Every 429 the provider gave for its full queue was seen and counted as such.
    limited = sim.stats()["injected"]["queue_limited_external"]  # type: ignore[index]
    assert limited == view["queue_full_429s"]
