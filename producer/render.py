"""How the ``t2v`` command line shows records: rich tables for people, JSON for machines.

Prompts are shown only where a person asked for one job (``t2v status``), never in lists.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from t2v_core.records import JobRecord
from t2v_core.states import JobStatus

STATUS_STYLE = {
    JobStatus.QUEUED: "dim",
    JobStatus.SUBMITTING: "cyan",
    JobStatus.PROCESSING: "cyan",
    JobStatus.DOWNLOADING: "cyan",
    JobStatus.SUCCEEDED: "green",
    JobStatus.FAILED: "red",
    JobStatus.CANCELLED: "yellow",
    JobStatus.PARKED: "magenta",
}


def as_json(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)


def record_json(record: JobRecord) -> dict[str, Any]:
    data = record.model_dump(mode="json")
    data["timings"] = record.timings
    return data


def summary_json(record: JobRecord) -> dict[str, Any]:
    """A short form for lists: no request body (prompts are user data)."""
    return {
        "id": record.id,
        "status": record.status.value,
        "model_effective": record.model_effective,
        "priority": record.priority,
        "tenant": record.tenant,
        "labels": record.labels or {},
        "created_at": record.created_at.isoformat(),
        "error": record.error,
        "outputs": [o.storage_uri for o in record.outputs],
    }


def _status(status: JobStatus) -> str:
    return f"[{STATUS_STYLE[status]}]{status.value}[/]"


def show_record(console: Console, record: JobRecord) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    model = record.model_effective
    if record.model_requested and record.model_requested != model:
        model = f"{model} (asked for {record.model_requested})"
    rows: list[tuple[str, str]] = [
        ("id", record.id),
        ("status", _status(record.status)),
        ("prompt", escape(str(record.request.get("prompt", "")))),
        ("model", escape(model)),
        ("created", record.created_at.isoformat(timespec="seconds")),
        (
            "priority",
            record.priority + (f", tenant {escape(record.tenant)}" if record.tenant else ""),
        ),
    ]
    if record.labels:
        rows.append(("labels", escape(labels_text(record.labels))))
    if record.provider_id:
        rows.append(("provider id", escape(record.provider_id)))
    if record.eta_seconds is not None:
        rows.append(("provider eta", f"{record.eta_seconds:g}s"))
    rows.append(
        (
            "attempts",
            f"submits {record.submit_count}, polls {record.poll_count}, "
            f"downloads {record.download_attempts}",
        )
    )
    if record.error:
        rows.append(("error", f"[red]{escape(record.error)}[/]"))
    for out in record.outputs:
        rows.append(
            (
                f"output {out.index}",
                f"{escape(out.storage_uri)}\n{out.bytes} bytes, "
                f"{out.content_type}, sha256 {out.sha256}",
            )
        )
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in record.timings.items())
    if timings:
        rows.append(("timings", timings))
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


def show_list(console: Console, records: Sequence[JobRecord], title: str | None = None) -> None:
    table = Table(title=title)
    table.add_column("id", no_wrap=True)
    for name in ("status", "model", "priority / tenant / labels", "created", "output / error"):
        table.add_column(name, overflow="fold")
    for r in records:
        detail = r.outputs[0].storage_uri if r.outputs else (r.error or "")
        who = [r.priority, r.tenant or "", labels_text(r.labels or {})]
        table.add_row(
            r.id,
            _status(r.status),
            r.model_effective,
            escape(" ".join(w for w in who if w)),
            r.created_at.isoformat(timespec="seconds"),
            escape(detail),
        )
    console.print(table)


def labels_text(labels: dict[str, str]) -> str:
    """``order=1234 customer=acme``: labels as ``t2v list --label`` takes them."""
    return " ".join(f"{k}={v}" for k, v in sorted(labels.items()))


def show_counts(console: Console, records: Iterable[JobRecord]) -> None:
    counts = Counter(r.status for r in records)
    table = Table(title="batch summary")
    table.add_column("status")
    table.add_column("jobs", justify="right")
    for status in JobStatus:
        if counts[status]:
            table.add_row(_status(status), str(counts[status]))
    table.add_row("[bold]total[/]", str(sum(counts.values())))
    console.print(table)
