"""The instruments: one call per event moves exactly its metric, names follow the
Prometheus conventions, labels are small closed sets (never a job id or a prompt)."""

from __future__ import annotations

from prometheus_client import REGISTRY
from starlette.responses import JSONResponse

from t2v_core.errors import TransientError
from worker import instruments
from worker.modelslab import ProviderResult, ProviderStatus
from worker.steps.poll import fetch_outcome
from worker.webhook import delivery_outcome

ALLOWED_LABELS = {"model", "error_kind", "outcome", "task", "le"}  # task: a t2v.* task name


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_each_event_moves_its_counter_by_one() -> None:
    cases = [
        (lambda: instruments.job_succeeded("m1"), "t2v_jobs_succeeded_total", {"model": "m1"}),
        (
            lambda: instruments.job_failed("m1", "permanent"),
            "t2v_jobs_failed_total",
            {"model": "m1", "error_kind": "permanent"},
        ),
        (
            lambda: instruments.job_parked("m1", "download"),
            "t2v_jobs_parked_total",
            {"model": "m1", "error_kind": "download"},
        ),
        (lambda: instruments.paid_submission("m1"), "t2v_paid_submissions_total", {"model": "m1"}),
        (
            lambda: instruments.submit_answer_lost("m1"),
            "t2v_submit_answers_lost_total",
            {"model": "m1"},
        ),
        (instruments.provider_rate_limited, "t2v_provider_rate_limited_total", {}),
        (lambda: instruments.fetched("running"), "t2v_fetches_total", {"outcome": "running"}),
        (
            lambda: instruments.webhook_delivery("duplicate"),
            "t2v_webhook_deliveries_total",
            {"outcome": "duplicate"},
        ),
        (lambda: instruments.job_enqueued("m1", 3.0), "t2v_jobs_enqueued_total", {"model": "m1"}),
        (lambda: instruments.job_enqueued("m1", 3.0), "t2v_job_queued_seconds_count", {}),
        (lambda: instruments.slot_taken(2.0), "t2v_slot_wait_seconds_count", {}),
        (
            lambda: instruments.render_finished("m1", 40.0, 1.5),
            "t2v_render_seconds_count",
            {"model": "m1"},
        ),
        (
            lambda: instruments.render_finished("m1", 40.0, 1.5),
            "t2v_detection_lateness_seconds_count",
            {},
        ),
        (lambda: instruments.downloaded(0.5, 10), "t2v_download_seconds_count", {}),
        (
            lambda: instruments.task_ran("t2v.poll", 0.004),
            "t2v_task_cpu_seconds_count",
            {"task": "t2v.poll"},
        ),
    ]
    for event, name, labels in cases:
        before = value(name, **labels)
        event()
        assert value(name, **labels) == before + 1, name


def test_bytes_and_seconds_add_up_and_never_go_negative() -> None:
    before = value("t2v_stored_bytes_total")
    total_before = value("t2v_download_seconds_sum")
    instruments.downloaded(0.25, 1000)
    instruments.downloaded(-3.0, -5)  # a clock step back must not move a counter down
    assert value("t2v_stored_bytes_total") == before + 1000
    assert value("t2v_download_seconds_sum") == total_before + 0.25
    lateness = value("t2v_detection_lateness_seconds_count")
    instruments.render_finished("m2", 5.0, None)  # unknown lateness: not observed
    assert value("t2v_detection_lateness_seconds_count") == lateness


def test_names_carry_units_and_labels_are_closed_sets() -> None:
    instruments.instruments()
    names = set()
    for family in REGISTRY.collect():
        if not family.name.startswith("t2v_"):
            continue
        names.add(family.name)
        assert family.type in ("counter", "histogram"), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        for sample in family.samples:
            assert set(sample.labels) <= ALLOWED_LABELS, sample
    assert {"t2v_jobs_enqueued", "t2v_stored_bytes", "t2v_render_seconds"} <= names


def test_fetch_and_delivery_outcomes() -> None:
    result = ProviderResult(status=ProviderStatus.SUCCESS, provider_id="1", outputs=["u"])
    assert fetch_outcome(result) == "finished"
    assert fetch_outcome(TransientError("down")) == "error"
    assert delivery_outcome(JSONResponse({"detail": "no"}, status_code=413)) == "refused"
    assert delivery_outcome(JSONResponse({"ok": True, "action": "duplicate"})) == "duplicate"
    assert delivery_outcome(JSONResponse({"ok": True, "action": "no track_id"})) == "ignored"
    assert delivery_outcome(JSONResponse({"ok": True, "action": "polling"})) == "accepted"
