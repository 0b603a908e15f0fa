"""The job timeline is read from the record alone: steps in time order, durations between
them, the counts beside each step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from t2v_core.records import JobRecord
from web.timeline import human_seconds, render_time, timeline

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def record(**values: Any) -> JobRecord:
    base: dict[str, Any] = {
        "id": "a" * 32,
        "status": "queued",
        "request": {"prompt": "p"},
        "model_effective": "wan2.2",
        "created_at": T0,
        "updated_at": T0,
        "queued_at": T0,
    }
    return JobRecord.model_validate({**base, **values})


def test_a_succeeded_job_has_every_step_with_durations_and_counts() -> None:
    r = record(
        status="succeeded",
        submitting_at=T0 + timedelta(seconds=3),
        processing_at=T0 + timedelta(seconds=4),
        downloading_at=T0 + timedelta(seconds=34),
        succeeded_at=T0 + timedelta(seconds=36),
        submit_count=1,
        poll_count=5,
        download_attempts=2,
        provider_id="p-1",
        eta_seconds=30,
        outputs=[
            {
                "index": 0,
                "source_url": "http://x/v.mp4",
                "storage_uri": "file:///v.mp4",
                "bytes": 1234,
                "sha256": "0" * 64,
                "content_type": "video/mp4",
            }
        ],
    )
    steps = timeline(r)
    assert [s.name for s in steps] == [
        "created",
        "took a slot, submitting",
        "submitted: rendering at the provider",
        "downloading",
        "stored",
    ]
    assert [s.took for s in steps] == [3.0, 1.0, 30.0, 2.0, None]
    assert "5 fetches" in steps[2].detail and "provider id p-1" in steps[2].detail
    assert steps[3].detail == "2 download attempts" and "1234 bytes" in steps[4].detail
    assert render_time(r) == 30.0


def test_a_requeued_parked_then_failed_job_is_ordered_by_time() -> None:
    r = record(
        status="failed",
        queued_at=T0 + timedelta(seconds=10),  # went back to queued once
        submitting_at=T0 + timedelta(seconds=12),
        processing_at=T0 + timedelta(seconds=13),
        parked_at=T0 + timedelta(seconds=100),
        failed_at=T0 + timedelta(seconds=200),
        park_count=1,
        unknown_submits=1,
        submit_count=2,
        error="output expired",
        error_kind="output_expired",
    )
    names = [s.name for s in timeline(r)]
    assert names == [
        "created",
        "queued, waiting for a slot",
        "took a slot, submitting",
        "submitted: rendering at the provider",
        "parked",
        "failed",
    ]
    steps = {s.name: s for s in timeline(r)}
    assert steps["took a slot, submitting"].detail == "2 paid submissions, 1 lost answer"
    assert steps["failed"].detail == "output_expired"
    assert render_time(r) is None


def test_human_seconds() -> None:
    assert human_seconds(None) == "" and human_seconds(0.25) == "250 ms"
    assert human_seconds(12.34) == "12.3 s" and human_seconds(600) == "10 min"
    assert human_seconds(7200) == "2.0 h" and human_seconds(86400 * 3) == "3 d"
