"""``t2v batch``: enqueue every request of a JSONL file, then watch them to the end.

The file is read and keyed by ``batch.py`` (all lines valid or nothing enqueued); this
module enqueues them in one ``enqueue_many`` call under those keys, and ``_watch`` polls
their rows with a progress bar until each is settled (final, or parked for ``t2v retry``)
or the timeout passes. ``cli.py`` registers the command on the ``t2v`` group.

This module must never enqueue a line outside that one call (a re-run must find every
earlier line by its key), nor treat a parked job as still running: nothing more happens
to one without someone.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from producer import render
from producer.api import Producer
from producer.batch import by_line, read_batch
from producer.cli_common import (
    EXIT_FAILED,
    EXIT_HELP,
    EXIT_OK,
    EXIT_TIMEOUT,
    err,
    guard,
    json_option,
    label_option,
    make_producer,
    out,
    priority_option,
    tenant_option,
    wait_timeout,
)
from t2v_core.errors import RequestInvalid
from t2v_core.fairness import parse_label_filter
from t2v_core.records import JobRecord
from t2v_core.states import JobStatus


@click.command(epilog=EXIT_HELP)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--timeout", type=float, help="Seconds to wait for all jobs (default 900).")
@click.option("--no-wait", is_flag=True, help="Enqueue and print the job ids only.")
@click.option(
    "--no-dedupe",
    is_flag=True,
    help="Make every line a new job, even one enqueued before (ignores ids).",
)
@priority_option
@tenant_option
@label_option
@json_option
def batch(
    file: Path,
    timeout: float | None,
    no_wait: bool,
    no_dedupe: bool,
    priority: str,
    tenant: str | None,
    labels: tuple[str, ...],
    as_json: bool,
) -> None:
    """Enqueue every request in FILE.jsonl (one JSON object a line) and wait for them.

    Each line is enqueued under an idempotency key: its "id" field if it has one (a
    string, used as is, like submit's --idempotency-key; it is not a request field),
    else "batch:" + the sha256 of the line's canonical JSON. Re-running a file, or a
    half-done one, enqueues only the lines not enqueued before and returns the earlier
    jobs for the rest; the summary counts new and already there. The key does not
    depend on the file's name or place: the same line in another file is the same job.
    A line repeated within one file still makes a job per copy. --no-dedupe makes
    every line a new job (to render the same requests again).

    If any line is invalid, every bad line is reported with its number and nothing is
    enqueued (exit 2). A line may carry "priority", "tenant" and "labels" (not request
    fields); --priority, --tenant and --label are the defaults for lines without.
    Exit 0 if all succeeded, 1 if any failed, 3 on timeout.
    """

    def action() -> int:
        entries = read_batch(file, dedupe=not no_dedupe)
        producer = make_producer()
        keys = None if no_dedupe else [e.key for e in entries]
        defaults = parse_label_filter(labels)
        try:
            result = producer.enqueue_many_detailed(
                [e.request for e in entries],
                idempotency_keys=keys,
                priority=priority,
                tenant=tenant,
                labels=defaults,
                options=[e.options for e in entries],
            )
        except RequestInvalid as exc:
            raise by_line(file, exc, entries) from None
        ids = [j.id for j in result.jobs]
        distinct = list(dict.fromkeys(ids))
        new = len(result.new_ids)
        existing = len(distinct) - new
        summary = f"enqueued {new} new job(s); {existing} already there"
        if no_wait:
            if as_json:
                click.echo(render.as_json({"ids": ids, "new": new, "existing": existing}))
            else:
                out.print(summary)
                for job_id in ids:
                    out.print(job_id)
            return EXIT_OK
        if not as_json:
            out.print(summary)
        records = _watch(producer, distinct, wait_timeout(producer, timeout), quiet=as_json)
        final = [r for r in records if r.is_final]
        if as_json:
            counts: dict[str, int] = {}
            for r in records:
                counts[r.status.value] = counts.get(r.status.value, 0) + 1
            click.echo(
                render.as_json(
                    {
                        "counts": counts,
                        "new": new,
                        "existing": existing,
                        "jobs": [render.summary_json(r) for r in records],
                    }
                )
            )
        else:
            if len(records) <= 50:
                render.show_list(out, records, title="batch")
            render.show_counts(out, records)
        if len(final) < len(records):
            return EXIT_TIMEOUT
        ok = all(r.status is JobStatus.SUCCEEDED for r in records)
        return EXIT_OK if ok else EXIT_FAILED

    guard(as_json, action)


def _watch(producer: Producer, ids: Sequence[str], timeout: float, quiet: bool) -> list[JobRecord]:
    """Poll the rows of ``ids`` until all are final or time runs out, with a progress bar."""
    deadline = time.monotonic() + timeout
    latest: dict[str, JobRecord] = {}
    pending = list(ids)
    delay = 0.1
    progress = Progress(
        TextColumn("[bold]jobs"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
        transient=False,
    )
    with progress:
        task = progress.add_task("jobs", total=len(ids))
        while True:
            latest.update(producer.store.get_many(pending))
            pending = [i for i in pending if not (i in latest and _settled(latest[i]))]
            progress.update(task, completed=len(ids) - len(pending))
            remaining = deadline - time.monotonic()
            if not pending or remaining <= 0:
                break
            time.sleep(min(delay, remaining))
            delay = min(delay * 1.5, 2.0)
    return [latest[i] for i in ids if i in latest]


def _settled(record: JobRecord) -> bool:
    """Final, or parked (held for ``t2v retry``): nothing more happens without someone."""
    return record.is_final or record.status is JobStatus.PARKED
