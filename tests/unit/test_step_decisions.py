"""The steps' pure decisions: what a fetch's outcome or a failed transfer means for a job,
and the typed ``Problem`` they return. No broker, no database, no clock."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from t2v_core.errors import PermanentError, RateLimited, TransientError
from t2v_core.problems import FAILING_KINDS, ErrorKind, Problem
from t2v_core.records import JobRecord
from t2v_core.states import JobStatus
from worker.modelslab import ProviderResult, ProviderStatus
from worker.policy import PollPolicy
from worker.steps.download import RetryLater, decide_download_failure
from worker.steps.poll import Again, Finished, decide_poll
from worker.transfer import LinkNotReady, LinkServesPage

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POLICY = PollPolicy(min_delay=2.0, max_delay=60.0, deadline=600.0)
README = Path(__file__).resolve().parents[2] / "README.md"


def rendering(**values: Any) -> JobRecord:
    return JobRecord.model_validate(
        {
            "id": "j1",
            "status": JobStatus.PROCESSING,
            "request": {"prompt": "p"},
            "model_effective": "wan2.2",
            "provider_id": "42",
            "eta_seconds": 30.0,
            "created_at": NOW - timedelta(minutes=5),
            "updated_at": NOW,
            **values,
        }
    )


def decide(outcome: Any, elapsed: float, **values: Any) -> Any:
    return decide_poll(
        rendering(**values),
        outcome,
        elapsed=elapsed,
        policy=POLICY,
        rng=random.Random(1),
        transient_base=1.0,
        cap=900.0,
    )


def test_a_finished_or_failed_render_is_finished() -> None:
    done = ProviderResult(ProviderStatus.SUCCESS, "42", outputs=["https://cdn/x.mp4"])
    failed = ProviderResult(ProviderStatus.FAILED, "42", message="nsfw")
    assert decide(done, 10.0) == Finished(done)
    assert decide(failed, 10.0) == Finished(failed)


def test_success_without_outputs_is_not_finished() -> None:
    empty = ProviderResult(ProviderStatus.SUCCESS, "42", raw_status="success")
    assert isinstance(decide(empty, 10.0), Again)


def test_still_processing_looks_again_and_holds_the_slot_past_it() -> None:
    again = decide(ProviderResult(ProviderStatus.PROCESSING, "42"), 40.0, poll_count=1)
    assert isinstance(again, Again) and not again.fetch_failed
    assert 0 < again.delay <= POLICY.max_delay
    assert again.hold >= again.delay and again.hold >= POLICY.deadline - 40.0


def test_past_the_deadline_a_paid_render_is_parked_not_failed() -> None:
    late = decide(
        ProviderResult(ProviderStatus.PROCESSING, "42", raw_status="processing"),
        700.0,
        poll_count=30,
    )
    assert isinstance(late, Problem) and late.kind is ErrorKind.DEADLINE and late.parks
    assert late.detail == {"deadline_s": 600, "elapsed_s": 700, "provider_status": "processing"}
    odd = decide(
        ProviderResult(ProviderStatus.UNKNOWN, "42", raw_status="queued"), 700.0, poll_count=30
    )
    assert isinstance(odd, Problem) and odd.kind is ErrorKind.STATUS_UNKNOWN and odd.parks


def test_a_failed_fetch_retries_within_the_deadline_then_parks() -> None:
    again = decide(RateLimited("slow down", retry_after=7.0), 100.0)
    assert isinstance(again, Again) and again.fetch_failed and again.delay >= 7.0  # its Retry-After
    near = decide(TransientError("502"), 599.0)
    assert isinstance(near, Again) and near.delay <= 1.0  # never past the deadline
    late = decide(TransientError("502"), 600.0)
    assert isinstance(late, Problem) and late.kind is ErrorKind.DEADLINE


def test_a_refused_fetch_parks_the_render() -> None:
    refused = decide(PermanentError("401 from a proxy"), 10.0)
    assert isinstance(refused, Problem) and refused.kind is ErrorKind.FETCH_REFUSED
    assert refused.parks and "401" in refused.message


@pytest.mark.parametrize(
    ("exc", "waited", "attempts", "want"),
    [
        (LinkNotReady("404"), 10.0, 1, RetryLater(None)),
        (LinkNotReady("404"), 300.0, 1, ErrorKind.LINK_MISSING),
        (LinkServesPage("an HTML page"), 10.0, 9, RetryLater(None)),
        (LinkServesPage("an HTML page"), 301.0, 2, ErrorKind.LINK_NOT_VIDEO),
        (PermanentError("not an MP4"), 0.0, 1, ErrorKind.DOWNLOAD_REFUSED),
        (OSError("storage down"), 0.0, 9, RetryLater(None)),
        (OSError("storage down"), 0.0, 10, ErrorKind.DOWNLOAD),
        (RateLimited("429", retry_after=12.0), 0.0, 1, RetryLater(12.0)),
    ],
)
def test_a_failed_transfer_retries_or_parks(
    exc: Exception, waited: float, attempts: int, want: Any
) -> None:
    got = decide_download_failure(
        exc, waited=waited, attempts=attempts, window=300.0, max_attempts=10
    )
    if isinstance(want, ErrorKind):
        assert isinstance(got, Problem) and got.kind is want and got.parks, got
    else:
        assert got == want


def test_a_problem_writes_message_kind_and_detail_in_one_shape() -> None:
    problem = Problem(ErrorKind.LINK_MISSING, "x" * 5000, {"waited_s": 300})
    values = problem.row_values()
    assert values == {
        "error": "x" * 2000,
        "error_kind": "link_missing",
        "error_detail": {"waited_s": 300},
    }
    assert Problem(ErrorKind.PERMANENT, "no").row_values()["error_detail"] is None
    assert not Problem(ErrorKind.GENERATION_FAILED, "nsfw").parks


def test_every_error_kind_is_documented_in_the_readme() -> None:
    # error_kind values are public contract: code and alerts match on them.
    text = README.read_text()
    documented = set(re.findall(r"`([a-z_]+)`", text))
    assert {k.value for k in ErrorKind} - documented == set()
    assert set(ErrorKind) > FAILING_KINDS
