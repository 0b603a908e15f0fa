"""Job states and the only moves allowed between them.

    queued → submitting → processing → downloading → succeeded
    processing | downloading → parked → processing | downloading   (retry)
    any non-final state → failed | cancelled

Moves are forward-only; the database enforces them by compare-and-set (see ``store``).
The steps back, each recorded on the row:
- `submitting → queued`: the provider did not take the request (5xx, 429), or an answer
  that was lost is resubmitted after waiting for its webhook (``unknown_submits``);
- `parked → processing | downloading`: a paid render that our own limits held (deadline,
  download tries, a link that never served a video, a storage outage) is resumed from its
  last paid step: fetched again, never resubmitted (``retry``);
- `failed → queued`: ``retry`` of a job the provider never took (no provider id was ever
  known): the only way a failed job is submitted again.

`parked` is not final: the job waits for ``t2v retry`` or the automatic retry (with backoff
until its output's 24 h are over, then `failed` with ``error_kind = "output_expired"``).
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
    PARKED = "parked"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
ACTIVE_STATES = frozenset(set(JobStatus) - FINAL_STATES)

# Which states each state may be entered from.
ALLOWED_FROM: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.SUBMITTING, JobStatus.FAILED}),
    JobStatus.SUBMITTING: frozenset({JobStatus.QUEUED}),
    # From queued only when a provider id is already known (a webhook adopted a lost
    # answer): it is polled, never submitted again. From failed: ``retry`` of a paid render
    # that an older version's own limits failed.
    JobStatus.PROCESSING: frozenset(
        {JobStatus.SUBMITTING, JobStatus.QUEUED, JobStatus.PARKED, JobStatus.FAILED}
    ),
    JobStatus.DOWNLOADING: frozenset(
        {JobStatus.SUBMITTING, JobStatus.PROCESSING, JobStatus.PARKED, JobStatus.FAILED}
    ),
    JobStatus.SUCCEEDED: frozenset({JobStatus.DOWNLOADING}),
    JobStatus.PARKED: frozenset({JobStatus.PROCESSING, JobStatus.DOWNLOADING}),
    JobStatus.FAILED: ACTIVE_STATES,
    JobStatus.CANCELLED: ACTIVE_STATES,
}
