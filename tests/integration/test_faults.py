"""The worker against a misbehaving API, through the simulator's fault injection.

One real worker serves the whole module (faults are switched at run time); each test
enqueues its own jobs and judges them by their records and the simulator's counters.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from sqlalchemy import text

from t2v_core.states import JobStatus
from tests.conftest import TEST_API_KEY, SimControl
from tests.integration.pipeline import FAST, Pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipe(
    redis_base: str, simulator: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    tmp = tmp_path_factory.mktemp("faults")
    redis_url = f"{redis_base}/14"
    redis_lib.Redis.from_url(redis_url).flushdb()
    env = {
        "T2V_BROKER_URL": redis_url,
        "T2V_DATABASE_URL": f"sqlite:///{tmp / 't2v.sqlite3'}",
        "T2V_STORAGE_URL": str(tmp / "videos"),
        "T2V_MODELSLAB_API_KEY": TEST_API_KEY,
        "T2V_MODELSLAB_BASE_URL": f"{simulator.url}/api/v6",
        "T2V_DOWNLOAD_ALLOWED_HOSTS": "127.0.0.1",
        **FAST,
        "T2V_READ_TIMEOUT": "1.5",
        "T2V_POLL_DEADLINE_SECONDS": "20",
    }
    pipeline = Pipeline(env, tmp / "logs")
    pipeline.start_worker(concurrency=3)
    try:
        yield pipeline
    finally:
        pipeline.stop()
        redis_lib.Redis.from_url(redis_url).flushdb()


def enqueue(pipe: Pipeline, n: int, **fields: Any) -> list[str]:
    with pipe.as_application() as producer:
        return [
            producer.enqueue(
                producer.Text2VideoRequest(
                    prompt=f"fault test {uuid.uuid4().hex[:8]} a red kite over hills",
                    num_frames=8,
                    width=128,
                    height=128,
                    **fields,
                )
            ).id
            for _ in range(n)
        ]


def test_flaky_api_still_succeeds_with_retries_counted(pipe: Pipeline, sim: SimControl) -> None:
    sim.faults(
        http_500_share=0.25,
        truncated_json_share=0.15,
        slow_share=0.1,
        slow_seconds=3,
        link_404_seconds=2,
    )
    ids = enqueue(pipe, 6)
    records = pipe.wait_all(ids, timeout=150)
    assert all(r.status is JobStatus.SUCCEEDED for r in records), [
        (r.status, r.error) for r in records
    ]
    injected = sim.stats()["injected"]
    assert sum(injected.values()) > 0, injected  # type: ignore[union-attr]
    # Every fault the worker met shows up as a counted retry on some record.
    assert sum(r.retry_count for r in records) > 0
    assert any(r.download_attempts > 1 for r in records)  # late links were retried


def test_failed_generation_fails_with_provider_message(pipe: Pipeline, sim: SimControl) -> None:
    sim.faults(fail_share=1.0)
    [job_id] = enqueue(pipe, 1)
    [rec] = pipe.wait_all([job_id], timeout=60)
    assert rec.status is JobStatus.FAILED
    assert rec.error_kind == "generation_failed"
    assert rec.error and "Failed, Try Again" in rec.error


def test_bad_key_fails_at_once_without_retry_storm(
    pipe: Pipeline, sim: SimControl, tmp_path: Path, redis_base: str
) -> None:
    env = {
        **pipe.env,
        "T2V_MODELSLAB_API_KEY": "not-the-key",
        "T2V_BROKER_URL": f"{redis_base}/13",
        "T2V_DATABASE_URL": f"sqlite:///{tmp_path / 'bad.sqlite3'}",
    }
    redis_lib.Redis.from_url(env["T2V_BROKER_URL"]).flushdb()
    bad = Pipeline(env, tmp_path / "logs")
    bad.start_worker(concurrency=1)
    try:
        ids = enqueue(bad, 3)
        records = bad.wait_all(ids, timeout=60)
    finally:
        bad.stop()
        redis_lib.Redis.from_url(env["T2V_BROKER_URL"]).flushdb()
    for rec in records:
        assert rec.status is JobStatus.FAILED and rec.error_kind == "permanent"
        assert rec.error and "Invalid API key" in rec.error
        assert rec.submit_count == 1
    submits = sim.stats()["submits"]["by_track_id"]  # type: ignore[index]
    assert [submits.get(i, 0) for i in ids] == [1, 1, 1]


def test_never_finishing_job_is_parked_at_deadline(pipe: Pipeline, sim: SimControl) -> None:
    """Our deadline says nothing about a render we paid for: parked for retry, not failed,
    and its account slot is given back."""
    sim.faults(never_finish_share=1.0)
    [job_id] = enqueue(pipe, 1)
    [rec] = pipe.wait_all([job_id], timeout=60)
    assert rec.status is JobStatus.PARKED and rec.error_kind == "deadline"
    assert rec.error and "deadline" in rec.error
    assert rec.provider_id and rec.park_count == 1 and rec.expires_at is not None
    fetches = sim.stats()["fetches"]["by_track_id"][job_id]  # type: ignore[index]
    assert 1 <= fetches <= 20  # backed off, not a tight loop


def test_rate_limited_submit_waits_retry_after_and_succeeds(
    pipe: Pipeline, sim: SimControl
) -> None:
    sim.faults(rate_limit_next=1, retry_after=1)
    [job_id] = enqueue(pipe, 1)
    [rec] = pipe.wait_all([job_id], timeout=60)
    assert rec.status is JobStatus.SUCCEEDED, rec.error
    assert rec.retry_count >= 1
    assert sim.stats()["submits"]["by_track_id"][job_id] == 2  # type: ignore[index]
    assert sim.stats()["injected"]["rate_limited"] == 1  # type: ignore[index]


def test_api_key_is_nowhere(pipe: Pipeline, sim: SimControl) -> None:
    """Every Redis key and value, the worker's log and every row: zero hits for the key."""
    ids = enqueue(pipe, 2)
    pipe.wait_all(ids, timeout=60)
    needle = TEST_API_KEY.encode()
    r = redis_lib.Redis.from_url(pipe.env["T2V_BROKER_URL"])
    hits = []
    for key in r.scan_iter(count=1000):
        kind = r.type(key)
        values: list[bytes] = [key]
        if kind == b"string":
            values.append(r.get(key) or b"")
        elif kind == b"list":
            values += r.lrange(key, 0, -1)
        elif kind == b"hash":
            for k, v in r.hgetall(key).items():
                values += [k, v]
        elif kind == b"set":
            values += list(r.smembers(key))
        elif kind == b"zset":
            values += [m for m, _ in r.zrange(key, 0, -1, withscores=True)]
        hits += [key for v in values if needle in v]
    assert not hits
    log = pipe.worker_log()
    assert "submitted as" in log  # the log is really there and verbose (DEBUG)
    assert TEST_API_KEY not in log
    with pipe.store.engine.connect() as conn:
        dump = [str(tuple(row)) for row in conn.execute(text("SELECT * FROM t2v_jobs"))]
    assert dump and not any(TEST_API_KEY in line for line in dump)
    assert not re.search(
        re.escape(TEST_API_KEY),
        Path(pipe.env["T2V_DATABASE_URL"][10:]).read_bytes().decode("latin-1"),
    )
