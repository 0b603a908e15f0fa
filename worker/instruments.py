"""Counters and histograms of what the steps did: one function per event.

Steps call ``instruments.job_succeeded(model)`` and the like; nothing else in the worker
touches ``prometheus_client``. The metrics are built on first use, not at import: under a
prefork worker the main process chooses ``PROMETHEUS_MULTIPROC_DIR`` first
(``worker.worker_metrics``), then each child writes its values there and the main process
serves their sum on ``T2V_WORKER_METRICS_PORT``. A process that never set the directory
(the webhook receiver, a test calling a step) counts in its own memory.

Labels are small closed sets only: a model name, an ``error_kind``, an outcome. Never a
job id, a prompt or a provider id.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from t2v_core.once import once

# Seconds: a job may wait hours for a slot, a render takes minutes, a fetch seconds.
LONG_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 21600, 86400)
SHORT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)
# CPU seconds of one task: a poll takes a few milliseconds, a download with a probe more.
CPU_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)


@dataclass(frozen=True)
class Instruments:
    enqueued: Any
    succeeded: Any
    failed: Any
    parked: Any
    paid: Any
    answers_lost: Any
    rate_limited: Any
    fetches: Any
    webhooks: Any
    stored_bytes: Any
    queued_seconds: Any
    slot_wait_seconds: Any
    render_seconds: Any
    lateness_seconds: Any
    download_seconds: Any
    task_cpu_seconds: Any


@once
def instruments() -> Instruments:
    """The metrics of this process, registered in the default registry on first use."""
    from prometheus_client import Counter, Histogram, values

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Chosen at the library's import, which may have come before the directory was set.
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    return Instruments(
        enqueued=Counter(
            "t2v_jobs_enqueued", "Jobs taken by a worker for their first submission.", ["model"]
        ),
        succeeded=Counter("t2v_jobs_succeeded", "Jobs whose videos are stored.", ["model"]),
        failed=Counter("t2v_jobs_failed", "Jobs moved to failed.", ["model", "error_kind"]),
        parked=Counter(
            "t2v_jobs_parked", "Paid renders parked by our own limits.", ["model", "error_kind"]
        ),
        paid=Counter("t2v_paid_submissions", "Submissions the provider accepted.", ["model"]),
        answers_lost=Counter(
            "t2v_submit_answers_lost",
            "Submissions whose answer was lost (may have been paid).",
            ["model"],
        ),
        rate_limited=Counter("t2v_provider_rate_limited", "429 answers from the provider."),
        fetches=Counter("t2v_fetches", "Status fetches of a render, by outcome.", ["outcome"]),
        webhooks=Counter(
            "t2v_webhook_deliveries", "Webhook deliveries received, by outcome.", ["outcome"]
        ),
        stored_bytes=Counter("t2v_stored_bytes", "Bytes of video written to storage."),
        queued_seconds=Histogram(
            "t2v_job_queued_seconds",
            "From enqueue to the job's first submission.",
            buckets=LONG_BUCKETS,
        ),
        slot_wait_seconds=Histogram(
            "t2v_slot_wait_seconds",
            "From the job's (latest) return to queued to taking an account slot.",
            buckets=LONG_BUCKETS,
        ),
        render_seconds=Histogram(
            "t2v_render_seconds",
            "From the submission to the provider reporting the render done, as we saw it.",
            ["model"],
            buckets=LONG_BUCKETS,
        ),
        lateness_seconds=Histogram(
            "t2v_detection_lateness_seconds",
            "How late a finished render was noticed at most: since the look before.",
            buckets=SHORT_BUCKETS,
        ),
        download_seconds=Histogram(
            "t2v_download_seconds",
            "Time to copy a job's outputs into storage.",
            buckets=SHORT_BUCKETS,
        ),
        task_cpu_seconds=Histogram(
            "t2v_task_cpu_seconds",
            "CPU time of each task this worker ran (its thread's, from start to end), by task.",
            ["task"],
            buckets=CPU_BUCKETS,
        ),
    )


def _seconds(value: float) -> float:
    return max(0.0, float(value))


def job_enqueued(model: str, queued_seconds: float) -> None:
    i = instruments()
    i.enqueued.labels(model=model).inc()
    i.queued_seconds.observe(_seconds(queued_seconds))


def slot_taken(waited_seconds: float) -> None:
    instruments().slot_wait_seconds.observe(_seconds(waited_seconds))


def job_succeeded(model: str) -> None:
    instruments().succeeded.labels(model=model).inc()


def job_failed(model: str, error_kind: str) -> None:
    instruments().failed.labels(model=model, error_kind=error_kind).inc()


def job_parked(model: str, error_kind: str) -> None:
    instruments().parked.labels(model=model, error_kind=error_kind).inc()


def paid_submission(model: str) -> None:
    instruments().paid.labels(model=model).inc()


def submit_answer_lost(model: str) -> None:
    instruments().answers_lost.labels(model=model).inc()


def provider_rate_limited() -> None:
    instruments().rate_limited.inc()


# The outcomes a fetch is counted under (a closed set: labels stay few).
FETCH_OUTCOMES = ("running", "finished", "failed", "error")


def fetched(outcome: str) -> None:
    instruments().fetches.labels(outcome=outcome).inc()


WEBHOOK_OUTCOMES = ("accepted", "ignored", "duplicate", "refused", "error")


def webhook_delivery(outcome: str) -> None:
    instruments().webhooks.labels(outcome=outcome).inc()


def render_finished(model: str, render_seconds: float, lateness_seconds: float | None) -> None:
    i = instruments()
    i.render_seconds.labels(model=model).observe(_seconds(render_seconds))
    if lateness_seconds is not None:
        i.lateness_seconds.observe(_seconds(lateness_seconds))


def downloaded(seconds: float, stored_bytes: int) -> None:
    i = instruments()
    i.download_seconds.observe(_seconds(seconds))
    i.stored_bytes.inc(max(0, int(stored_bytes)))


def task_ran(task: str, cpu_seconds: float) -> None:
    """A ``t2v.*`` task ended after ``cpu_seconds`` of its thread's CPU (with whatever it
    ran in place: a download, a hand-off's submit)."""
    instruments().task_cpu_seconds.labels(task=task).observe(_seconds(cpu_seconds))
