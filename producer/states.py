"""Job states and the only moves allowed between them.

    queued → submitting → processing → downloading → succeeded
    any non-final state → failed | cancelled

Moves are forward-only; the database enforces them by compare-and-set (see ``records``).
`submitting → queued` is the one step back, used only when an account slot could not be
taken *before* anything was sent to the provider (nothing paid, nothing lost).
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    SUBMITTING = "submitting"
    PROCESSING = "processing"
    DOWNLOADING = "downloading"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
ACTIVE_STATES = frozenset(set(JobStatus) - FINAL_STATES)

# Which states each state may be entered from.
ALLOWED_FROM: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.SUBMITTING}),
    JobStatus.SUBMITTING: frozenset({JobStatus.QUEUED}),
    JobStatus.PROCESSING: frozenset({JobStatus.SUBMITTING}),
    JobStatus.DOWNLOADING: frozenset({JobStatus.SUBMITTING, JobStatus.PROCESSING}),
    JobStatus.SUCCEEDED: frozenset({JobStatus.DOWNLOADING}),
    JobStatus.FAILED: ACTIVE_STATES,
    JobStatus.CANCELLED: ACTIVE_STATES,
}

# Task names, sent by name so the producer never imports the worker.
TASK_SUBMIT = "t2v.submit"
TASK_POLL = "t2v.poll"
TASK_DOWNLOAD = "t2v.download"
TASK_RECONCILE = "t2v.reconcile"

# Queue names, one per kind of step, so a backlog of polls never starves submits.
QUEUE_SUBMIT = "t2v.submit"
QUEUE_POLL = "t2v.poll"
QUEUE_DOWNLOAD = "t2v.download"
QUEUE_MAINTENANCE = "t2v.maintenance"
