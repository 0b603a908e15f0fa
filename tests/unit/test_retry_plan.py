"""Where a retried job resumes (``t2v_core.retry.plan_retry``): from its last paid step,
never a second submission while a provider id is known."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from t2v_core.errors import RetryRefused
from t2v_core.names import TASK_DOWNLOAD, TASK_POLL, TASK_SUBMIT
from t2v_core.records import JobRecord
from t2v_core.retry import OUTPUT_TTL, output_expiry, plan_retry
from t2v_core.states import JobStatus

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def record(status: JobStatus, **values: Any) -> JobRecord:
    return JobRecord.model_validate(
        {
            "id": "j1",
            "status": status,
            "request": {"prompt": "p"},
            "model_effective": "wan2.2",
            "created_at": NOW - timedelta(hours=1),
            "updated_at": NOW,
            **values,
        }
    )


def test_parked_with_output_links_downloads_again() -> None:
    rec = record(
        JobStatus.PARKED,
        provider_id="42",
        source_urls=["https://x/v.mp4"],
        error_kind="link_missing",
        expires_at=NOW + timedelta(hours=20),
        download_attempts=10,
    )
    plan = plan_retry(rec, now=NOW, deadline_seconds=600)
    assert (plan.to, plan.task, plan.expect) == (
        JobStatus.DOWNLOADING,
        TASK_DOWNLOAD,
        JobStatus.PARKED,
    )
    assert plan.values["download_attempts"] == 0


def test_parked_render_is_fetched_again_never_resubmitted() -> None:
    rec = record(
        JobStatus.PARKED,
        provider_id="42",
        error_kind="deadline",
        expires_at=NOW + timedelta(hours=1),
    )
    plan = plan_retry(rec, now=NOW, deadline_seconds=600)
    assert (plan.to, plan.task) == (JobStatus.PROCESSING, TASK_POLL)
    assert plan.values["deadline_at"] == NOW + timedelta(seconds=600)


def test_expired_output_is_refused() -> None:
    rec = record(JobStatus.PARKED, provider_id="42", expires_at=NOW - timedelta(seconds=1))
    with pytest.raises(RetryRefused, match="no longer keeps"):
        plan_retry(rec, now=NOW, deadline_seconds=600)


def test_failed_by_an_older_version_s_own_limit_is_resumed_like_parked() -> None:
    rec = record(
        JobStatus.FAILED,
        provider_id="42",
        error_kind="deadline",
        processing_at=NOW - timedelta(hours=2),
    )
    plan = plan_retry(rec, now=NOW, deadline_seconds=600)
    assert (plan.to, plan.task, plan.expect) == (JobStatus.PROCESSING, TASK_POLL, JobStatus.FAILED)
    assert output_expiry(rec) == NOW - timedelta(hours=2) + OUTPUT_TTL


@pytest.mark.parametrize("kind", ["permanent", "transient", "stuck"])
def test_failed_without_provider_id_is_submitted_again(kind: str) -> None:
    plan = plan_retry(record(JobStatus.FAILED, error_kind=kind), now=NOW, deadline_seconds=60)
    assert (plan.to, plan.task) == (JobStatus.QUEUED, TASK_SUBMIT)


@pytest.mark.parametrize(
    ("status", "values", "reason"),
    [
        (JobStatus.FAILED, {"provider_id": "42", "error_kind": "generation_failed"}, "new render"),
        (JobStatus.FAILED, {"error_kind": "submit_unknown"}, "may have been paid"),
        (JobStatus.CANCELLED, {}, "cancelled"),
        (JobStatus.SUCCEEDED, {}, "already succeeded"),
        (JobStatus.PROCESSING, {"provider_id": "42"}, "still processing"),
        (JobStatus.QUEUED, {}, "still queued"),
    ],
)
def test_refusals_say_why(status: JobStatus, values: dict[str, Any], reason: str) -> None:
    with pytest.raises(RetryRefused, match=reason) as caught:
        plan_retry(record(status, **values), now=NOW, deadline_seconds=60)
    assert caught.value.job_id == "j1"
