"""A paid render is never thrown away by our own limits: it is `parked`, `wait()` raises
`JobParked`, and `retry()` / `t2v retry` / the automatic retry resume it from the last paid
step (fetched or downloaded again, never resubmitted). Real worker + beat, real Redis, the
simulator over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from t2v_core.errors import JobParked, RetryRefused
from t2v_core.states import JobStatus
from tests.conftest import SimControl
from tests.integration.pipeline import Pipeline, enqueue_small
from tests.integration.test_pipeline import make_env

pytestmark = pytest.mark.slow


def test_a_link_that_never_serves_is_parked_then_retried_without_paying_again(
    redis_url: str, sqlite_url: str, sim: SimControl, tmp_path: Path
) -> None:
    env = make_env(
        redis_url,
        sqlite_url,
        sim,
        {
            "T2V_STORAGE_URL": str(tmp_path / "v"),
            "T2V_DOWNLOAD_NOT_FOUND_WINDOW": "2",
            "T2V_PROBE_VIDEOS": "false",
            "T2V_PARKED_RETRY_BASE": "3600",
        },
    )
    pipe = Pipeline(env, tmp_path / "logs")
    sim.faults(link_404_seconds=3600.0)
    pipe.start_worker()
    try:
        job_id = enqueue_small(pipe, 1, "parked")[0]
        [rec] = pipe.wait_all([job_id], timeout=60)
        assert rec.status is JobStatus.PARKED and rec.error_kind == "link_missing", rec.error
        assert rec.provider_id and rec.source_urls and rec.expires_at is not None
        with pipe.as_application() as producer:
            with pytest.raises(JobParked) as caught:
                producer.get_job(job_id).wait(timeout=5)
            assert caught.value.record.status is JobStatus.PARKED
            # A parked job is not final: it cannot be cancelled "again" nor lost.
            sim.faults(link_404_seconds=0.0)
            producer.retry(job_id)
            done = producer.get_job(job_id).wait(timeout=60)
            with pytest.raises(RetryRefused):
                producer.retry(job_id)  # succeeded: nothing to retry
    finally:
        pipe.stop()
    assert done.status is JobStatus.SUCCEEDED and done.outputs
    assert done.submit_count == 1 and sim.paid().get(job_id) == 1  # fetched again, not resubmitted
    assert done.park_count == 1 and done.retry_count >= 1


def test_a_link_that_serves_a_page_is_parked_within_the_window_not_after_all_tries(
    redis_url: str, sqlite_url: str, sim: SimControl, tmp_path: Path
) -> None:
    # An HTML page where the video should be is bounded by the same window as a 404,
    # not by the download tries (ten tries took about six minutes).
    env = make_env(
        redis_url,
        sqlite_url,
        sim,
        {
            "T2V_STORAGE_URL": str(tmp_path / "v"),
            "T2V_DOWNLOAD_NOT_FOUND_WINDOW": "2",
            "T2V_DOWNLOAD_MAX_ATTEMPTS": "1000",
            "T2V_PROBE_VIDEOS": "false",
            "T2V_PARKED_RETRY_BASE": "3600",
        },
    )
    pipe = Pipeline(env, tmp_path / "logs")
    sim.faults(bad_link_share=1.0)
    pipe.start_worker()
    try:
        job_id = enqueue_small(pipe, 1, "page")[0]
        [rec] = pipe.wait_all([job_id], timeout=60)
    finally:
        pipe.stop()
    assert rec.status is JobStatus.PARKED and rec.error_kind == "link_not_video", rec.error
    assert "serves no video" in (rec.error or "")
    assert rec.provider_id and rec.source_urls and not rec.outputs
    assert rec.submit_count == 1 and sim.paid().get(job_id) == 1


def test_parked_jobs_are_retried_automatically_and_by_the_cli(
    redis_url: str, sqlite_url: str, sim: SimControl, tmp_path: Path
) -> None:
    env = make_env(
        redis_url,
        sqlite_url,
        sim,
        {
            "T2V_STORAGE_URL": str(tmp_path / "v"),
            "T2V_POLL_DEADLINE_SECONDS": "3",
            "T2V_PROBE_VIDEOS": "false",
            "T2V_PARKED_RETRY_BASE": "2",
        },
    )
    pipe = Pipeline(env, tmp_path / "logs")
    sim.faults(fetch_401_share=1.0)  # a proxy in front answers 401 to every fetch
    pipe.start_worker()
    try:
        auto = enqueue_small(pipe, 1, "auto")[0]
        [rec] = pipe.wait_all([auto], timeout=60)
        assert rec.status is JobStatus.PARKED and rec.error_kind == "fetch_refused", rec.error
        sim.faults(fetch_401_share=0.0)
        # Nobody retries it: the automatic retry (backoff from 2 s) brings it back.
        [rec] = pipe.wait_all([auto], timeout=60, done=lambda r: r.is_final)
        assert rec.status is JobStatus.SUCCEEDED, rec.error
        assert rec.submit_count == 1 and sim.paid().get(auto) == 1

        sim.faults(fetch_401_share=1.0)
        by_cli = enqueue_small(pipe, 1, "cli")[0]
        [rec] = pipe.wait_all([by_cli], timeout=60)
        assert rec.status is JobStatus.PARKED
        # The worker stops first: otherwise its automatic retry (2 s) races the command on a
        # loaded machine, and the command finds nothing parked. It is started again below.
        pipe.stop()
        sim.faults(fetch_401_share=0.0)
        cli = subprocess.run(
            [
                str(Path(sys.executable).with_name("t2v")),
                "retry",
                "--parked",
                "--since",
                "1h",
                "--json",
            ],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode == 0, cli.stderr
        assert by_cli in json.loads(cli.stdout)["resumed"]
        pipe.start_worker()
        [rec] = pipe.wait_all([by_cli], timeout=60, done=lambda r: r.is_final)
    finally:
        pipe.stop()
    assert rec.status is JobStatus.SUCCEEDED, rec.error
    assert rec.submit_count == 1 and sim.paid().get(by_cli) == 1
