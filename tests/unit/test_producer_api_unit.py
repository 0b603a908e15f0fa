"""The producer's public face and its pure parts: exports, imports, Job.wait's backoff."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest

import producer
from producer.job import Job
from t2v_core.errors import JobFailed, JobNotFound, JobTimeout
from t2v_core.records import JobRecord
from t2v_core.states import JobStatus


def test_all_names_are_importable() -> None:
    for name in producer.__all__:
        assert getattr(producer, name) is not None, name
    contract = {
        "Text2VideoRequest",
        "enqueue",
        "enqueue_many",
        "get_job",
        "list_jobs",
        "cancel",
        "Job",
        "JobRecord",
        "OutputRecord",
        "JobStatus",
        "Settings",
        "get_settings",
        "RequestInvalid",
        "EnqueueError",
        "JobFailed",
        "JobTimeout",
        "JobNotFound",
        "T2VError",
    }
    assert contract <= set(producer.__all__)
    assert len(set(producer.__all__)) == len(producer.__all__)


def test_importing_the_producer_and_its_cli_never_imports_the_worker() -> None:
    code = (
        "import sys, producer, producer.cli; "
        "bad = [m for m in sys.modules "
        "if m.split('.')[0] in ('worker', 'simulator', 'boto3')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_job_not_found_is_a_key_error_with_a_plain_message() -> None:
    exc = JobNotFound("abc")
    assert isinstance(exc, KeyError)
    assert str(exc) == "no job with id 'abc'"


def _record(status: JobStatus, error: str | None = None) -> JobRecord:
    now = datetime.now(UTC)
    return JobRecord(
        id="j1",
        status=status,
        request={"prompt": "x"},
        model_effective="wan2.2",
        created_at=now,
        updated_at=now,
        error=error,
    )


class Script:
    """A record source that plays back statuses, and a clock that only moves when slept."""

    default_wait_timeout = 900.0

    def __init__(self, *statuses: JobStatus, error: str | None = None) -> None:
        self.statuses = list(statuses)
        self.error = error
        self.loads = 0

    def load(self, job_id: str) -> JobRecord:
        self.loads += 1
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return _record(status, self.error if status.is_final else None)


def test_wait_backs_off_from_50ms_doubling_to_2s_and_returns_the_record() -> None:
    source = Script(*[JobStatus.QUEUED] * 8, JobStatus.SUCCEEDED)
    job = Job("j1", source)
    slept: list[float] = []
    job.sleep = slept.append
    record = job.wait(timeout=10_000)
    assert record.status is JobStatus.SUCCEEDED
    assert slept == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]


@pytest.mark.parametrize("final", [JobStatus.FAILED, JobStatus.CANCELLED])
def test_wait_raises_job_failed_carrying_the_record(final: JobStatus) -> None:
    job = Job("j1", Script(JobStatus.PROCESSING, final, error="provider said no"))
    job.sleep = lambda _s: None
    with pytest.raises(JobFailed, match="provider said no") as info:
        job.wait(timeout=5)
    assert info.value.record.status is final


def test_wait_raises_job_timeout_carrying_the_record() -> None:
    job = Job("j1", Script(JobStatus.PROCESSING))
    job.sleep = lambda _s: None
    with pytest.raises(JobTimeout, match="still processing after 0s") as info:
        job.wait(timeout=0)
    assert info.value.record.status is JobStatus.PROCESSING


# enqueue_many's keys are checked before any service is touched (these ports are closed).
def _offline_producer() -> producer.Producer:
    settings = producer.Settings(
        database_url="postgresql+psycopg://nobody@127.0.0.1:1/none",
        broker_url="redis://127.0.0.1:1/0",
        _env_file=None,
    )  # type: ignore[call-arg]
    return producer.Producer(settings)


@pytest.mark.parametrize(
    ("keys", "fields", "match"),
    [
        (["a"], ["idempotency_keys"], "must have one entry per request: 1 for 2 request"),
        (["a", "b", "c"], ["idempotency_keys"], "3 for 2 request"),
        ("ab", ["idempotency_keys"], "not a str"),
        (["a", ""], ["[1].idempotency_key"], "must be a non-blank string"),
        ([7, "x" * 256], ["[0].idempotency_key", "[1].idempotency_key"], "at most 255 characters"),
        (["same", "same"], ["[1].idempotency_key"], r"also the key of \[0\], with a different"),
    ],
)
def test_enqueue_many_refuses_bad_keys_naming_the_index(
    keys: object, fields: list[str], match: str
) -> None:
    from t2v_core.errors import RequestInvalid

    with pytest.raises(RequestInvalid, match=match) as info:
        _offline_producer().enqueue_many([{"prompt": "a"}, {"prompt": "b"}], idempotency_keys=keys)  # type: ignore[arg-type]
    assert [e["field"] for e in info.value.errors] == fields


def test_enqueue_many_reports_bad_requests_and_bad_keys_together() -> None:
    from t2v_core.errors import RequestInvalid

    with pytest.raises(RequestInvalid) as info:
        _offline_producer().enqueue_many(
            iter([{"prompt": "a", "fps": 99}, {"prompt": "b"}, {"prompt": " "}]),
            idempotency_keys=[None, " ", "ok"],
        )
    assert [e["field"] for e in info.value.errors] == [
        "[0].fps",
        "[1].idempotency_key",
        "[2].prompt",
    ]
