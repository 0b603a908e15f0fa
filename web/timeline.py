"""A job's timeline, read from its record: each step, when, how long until the next, and
the counts the row keeps (submissions, fetches, download attempts, parks, retries).

Pure: a ``JobRecord`` in, a list of ``Step`` out; no clock but the one passed in, no I/O.
The row keeps one timestamp per state (the last time it entered that state), so a job that
went back to `queued` shows its last wait; the counts say how often each step ran. The
webhook has no column of its own: a delivery shows as the fetch that confirmed it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from t2v_core.records import JobRecord


@dataclass(frozen=True)
class Step:
    name: str
    at: datetime
    detail: str = ""
    took: float | None = None  # seconds until the next step; None for the last one


IRREGULAR = {"fetch": "fetches", "retry": "retries"}


def _plural(n: int, word: str) -> str:
    return f"{n} {word if n == 1 else IRREGULAR.get(word, word + 's')}"


def timeline(record: JobRecord) -> list[Step]:
    """The steps of ``record`` that happened, oldest first, with durations."""
    r = record
    marks: list[tuple[str, datetime | None, str]] = [
        ("created", r.created_at, ""),
        ("queued, waiting for a slot", r.queued_at if r.queued_at != r.created_at else None, ""),
        (
            "took a slot, submitting",
            r.submitting_at,
            _plural(r.submit_count, "paid submission")
            + (f", {_plural(r.unknown_submits, 'lost answer')}" if r.unknown_submits else ""),
        ),
        (
            "submitted: rendering at the provider",
            r.processing_at,
            ", ".join(
                part
                for part in (
                    f"provider id {r.provider_id}" if r.provider_id else "",
                    f"eta {r.eta_seconds:.0f}s" if r.eta_seconds is not None else "",
                    _plural(r.poll_count, "fetch") + " (polls and webhook confirmations)",
                )
                if part
            ),
        ),
        ("downloading", r.downloading_at, _plural(r.download_attempts, "download attempt")),
        (
            "parked",
            r.parked_at,
            _plural(r.park_count, "park") + f", {_plural(r.retry_count, 'retry')}",
        ),
        (
            "stored",
            r.succeeded_at,
            f"{_plural(len(r.outputs), 'output')}, {sum(o.bytes for o in r.outputs)} bytes",
        ),
        ("failed", r.failed_at, r.error_kind or ""),
        ("cancelled", r.cancelled_at, ""),
    ]
    present = sorted(
        ((name, at, detail) for name, at, detail in marks if at is not None),
        key=lambda mark: mark[1],
    )
    steps: list[Step] = []
    for i, (name, at, detail) in enumerate(present):
        nxt = present[i + 1][1] if i + 1 < len(present) else None
        took = (nxt - at).total_seconds() if nxt is not None else None
        steps.append(Step(name, at, detail, took))
    return steps


def render_time(record: JobRecord) -> float | None:
    """Seconds the provider spent rendering (submitted → download started), when known."""
    return record.timings.get("processing")


def human_seconds(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} d"
