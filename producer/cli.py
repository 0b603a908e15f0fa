"""The ``t2v`` command: the group, and the commands that submit, show, wait for, list,
cancel and retry jobs.

Every job command takes ``--json`` for machines; exit codes, the consoles and the error
mapping all commands share are ``cli_common.py`` (also in ``t2v --help``). ``t2v batch``
is ``cli_batch.py``, registered here. ``up``, ``demo`` and ``simulator`` are not defined
in the client: the group finds them through ``plugins.py`` (the ``t2v.commands`` entry
points) when asked for one.

This module must never import ``worker`` or ``simulator``: installed without them, ``t2v
submit`` works and ``t2v up`` says which extra brings it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from rich.markup import escape

from producer import plugins, render
from producer.account import account_status
from producer.cli_batch import batch
from producer.cli_common import (
    EXIT_FAILED,
    EXIT_HELP,
    EXIT_OK,
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
from producer.request import Text2VideoRequest, UnknownModelWarning
from t2v_core.errors import ConfigError, RequestInvalid, RetryRefused
from t2v_core.fairness import parse_label_filter
from t2v_core.settings import Settings
from t2v_core.states import JobStatus


class _Group(click.Group):
    """The commands defined here, plus those other installed packages register."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | plugins.names())

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        own = super().get_command(ctx, cmd_name)
        return own if own is not None else plugins.command(cmd_name)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_paragraph()
        for line in EXIT_HELP.splitlines():
            formatter.write_text(line)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """t2v: text-to-video jobs through a queue. Settings come from T2V_* variables."""


cli.add_command(batch)  # defined in cli_batch.py


@cli.command(epilog=EXIT_HELP)
@click.argument("prompt")
@click.option("--model", "model_id", help="wan2.2 or ltx-2.3; anything else runs as wan2.2.")
@click.option("--frames", "num_frames", type=int, help="1..25 (default 25).")
@click.option("--width", type=int, help="2..512, even (default 512).")
@click.option("--height", type=int, help="2..512, even (default 512).")
@click.option("--fps", type=int, help="1..16 (default: the provider's).")
@click.option("--output-type", type=click.Choice(["mp4", "gif"]), help="Default mp4.")
@click.option("--seed", type=int, help="0..2**32-1 (default random).")
@click.option("--negative-prompt")
@click.option("--idempotency-key", help="Same key again returns the same job, sends nothing.")
@priority_option
@tenant_option
@label_option
@click.option("--wait", is_flag=True, help="Wait for the job to finish.")
@click.option("--timeout", type=float, help="Seconds --wait waits (default 900).")
@json_option
def submit(
    prompt: str,
    idempotency_key: str | None,
    priority: str,
    tenant: str | None,
    labels: tuple[str, ...],
    wait: bool,
    timeout: float | None,
    as_json: bool,
    **fields: Any,
) -> None:
    """Enqueue one video for PROMPT; print its job id (or, with --wait, its result)."""
    data = {"prompt": prompt, **{k: v for k, v in fields.items() if v is not None}}

    def action() -> int:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UnknownModelWarning)
            request = Text2VideoRequest.parse(data)
        for w in caught:
            err.print(f"[yellow]note:[/] {escape(str(w.message))}", soft_wrap=True)
        producer = make_producer()
        job = producer.enqueue(
            request,
            idempotency_key=idempotency_key,
            priority=priority,
            tenant=tenant,
            labels=parse_label_filter(labels),
        )
        record = job.wait(timeout=wait_timeout(producer, timeout)) if wait else job.record
        if as_json:
            click.echo(render.as_json(render.record_json(record)))
        elif wait:
            render.show_record(out, record)
        else:
            out.print(f"enqueued job [bold]{job.id}[/] ({record.status.value})")
        return EXIT_OK

    guard(as_json, action)


@cli.command(epilog=EXIT_HELP)
@click.argument("job_id", required=False)
@click.option(
    "--account",
    is_flag=True,
    help="Show the account's slots: limit configured and in use, jobs waiting.",
)
@json_option
def status(job_id: str | None, account: bool, as_json: bool) -> None:
    """Show job JOB_ID's record (or, with --account, the account's slots)."""

    def action() -> int:
        if account:
            return _account_status(as_json)
        if job_id is None:
            raise RequestInvalid.of("JOB_ID", None, "missing", message="give a JOB_ID or --account")
        record = make_producer().load(job_id)
        if as_json:
            click.echo(render.as_json(render.record_json(record)))
        else:
            render.show_record(out, record)
        return EXIT_OK

    guard(as_json, action)


def _account_status(as_json: bool) -> int:
    import redis

    from t2v_core.brokers import shared_redis

    settings = Settings()
    client = shared_redis(
        settings,
        socket_timeout=settings.broker_send_timeout,
        socket_connect_timeout=settings.broker_send_timeout,
    )
    try:
        view = account_status(client).as_dict()
    except redis.RedisError as exc:
        raise ConfigError(
            f"cannot read the account's slots from Redis (T2V_REDIS_URL): {exc}"
        ) from None
    finally:
        client.close()
    view["configured_limit"] = settings.account_slots
    view["limit_in_use"] = min(
        settings.account_slots, view["effective_limit"] or settings.account_slots
    )
    if as_json:
        click.echo(render.as_json(view))
        return EXIT_OK
    learned = (
        ""
        if view["effective_limit"] is None
        else f" (lowered from {settings.account_slots}: the provider said 'Maximum "
        f"{view['provider_max']}' while we held fewer; it grows back step by step)"
    )
    out.print(f"account slots: {view['slots_in_use']} in use of {view['limit_in_use']}{learned}")
    out.print(f"jobs waiting for a slot: {view['jobs_waiting']}")
    out.print(f"429s for a full provider queue: {view['queue_full_429s']}")
    if not view["line_ready"]:
        out.print("the slot line is not in Redis (restarted?): workers rebuild it from the table")
    return EXIT_OK


@cli.command(name="wait", epilog=EXIT_HELP)
@click.argument("job_id")
@click.option("--timeout", type=float, help="Seconds to wait (default 900).")
@json_option
def wait_cmd(job_id: str, timeout: float | None, as_json: bool) -> None:
    """Wait for job JOB_ID to finish; exit 0 succeeded, 1 failed/cancelled, 3 timed out."""

    def action() -> int:
        producer = make_producer()
        record = producer.get_job(job_id).wait(timeout=wait_timeout(producer, timeout))
        if as_json:
            click.echo(render.as_json(render.record_json(record)))
        else:
            render.show_record(out, record)
        return EXIT_OK

    guard(as_json, action)


_AGO = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _parse_since(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> datetime | None:
    if value is None:
        return None
    amount, unit = value[:-1], value[-1:].lower()
    if unit in _AGO and amount.replace(".", "", 1).isdigit():
        return datetime.now(UTC) - timedelta(seconds=float(amount) * _AGO[unit])
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither an ISO date/time nor an age such as 90s, 30m, 1h, 2d"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@cli.command(name="list", epilog=EXIT_HELP)
@click.option("--status", "status_", type=click.Choice([s.value for s in JobStatus]))
@click.option("--since", callback=_parse_since, help="ISO date/time (UTC if no offset).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--tenant", help="Only this tenant's jobs.")
@click.option("--label", "labels", multiple=True, help="Only jobs with label KEY=VALUE (repeat).")
@json_option
def list_cmd(
    status_: str | None,
    since: datetime | None,
    limit: int,
    tenant: str | None,
    labels: tuple[str, ...],
    as_json: bool,
) -> None:
    """List jobs, newest first."""

    def action() -> int:
        wanted = parse_label_filter(labels)
        records = make_producer().list_jobs(
            status=status_, since=since, limit=limit, tenant=tenant, labels=wanted
        )
        if as_json:
            click.echo(render.as_json([render.summary_json(r) for r in records]))
        else:
            render.show_list(out, records)
        return EXIT_OK

    guard(as_json, action)


@cli.command(epilog=EXIT_HELP)
@click.argument("job_id")
@json_option
def cancel(job_id: str, as_json: bool) -> None:
    """Cancel job JOB_ID; exit 0 if cancelled, 1 if it had already finished."""

    def action() -> int:
        producer = make_producer()
        moved = producer.cancel(job_id)
        record = producer.load(job_id)
        if as_json:
            click.echo(
                render.as_json({"id": job_id, "cancelled": moved, "status": record.status.value})
            )
        elif moved:
            out.print(f"cancelled job [bold]{job_id}[/]")
        else:
            err.print(f"job {job_id} had already finished: {record.status.value}")
        return EXIT_OK if moved else EXIT_FAILED

    guard(as_json, action)


@cli.command(epilog=EXIT_HELP)
@click.argument("job_ids", nargs=-1)
@click.option("--parked", "parked", is_flag=True, help="Retry every parked job.")
@click.option("--failed", "failed", is_flag=True, help="Retry every failed job that can be.")
@click.option(
    "--since",
    callback=_parse_since,
    help="With --parked/--failed: only jobs created since (1h, 30m, ISO time).",
)
@json_option
def retry(
    job_ids: tuple[str, ...], parked: bool, failed: bool, since: datetime | None, as_json: bool
) -> None:
    """Resume parked (or failed) jobs from their last paid step.

    A job with a provider id is fetched (or downloaded) again, never resubmitted; a job is
    submitted again only if the provider never took it. Exit 0 if every job asked for was
    resumed, 1 if some were refused (each with its reason).
    """

    def action() -> int:
        producer = make_producer()
        if not job_ids and not (parked or failed):
            raise RequestInvalid.of(
                "JOB_IDS", None, "missing", message="give JOB_IDs, --parked or --failed"
            )
        resumed: list[str] = []
        refused: list[RetryRefused] = []
        for job_id in job_ids:
            try:
                resumed.append(producer.retry(job_id).id)
            except RetryRefused as exc:
                refused.append(exc)
        statuses = [s for s, on in ((JobStatus.PARKED, parked), (JobStatus.FAILED, failed)) if on]
        if statuses:
            jobs, more = producer.retry_many(status=statuses, since=since)
            resumed += [job.id for job in jobs]
            refused += more
        if as_json:
            click.echo(
                render.as_json(
                    {
                        "resumed": resumed,
                        "refused": [{"id": why.job_id, "reason": str(why)} for why in refused],
                    }
                )
            )
        else:
            for job_id in resumed:
                out.print(f"resumed job [bold]{job_id}[/]")
            for why in refused:
                err.print(f"not retried: {escape(str(why))}", soft_wrap=True)
            out.print(f"{len(resumed)} resumed, {len(refused)} refused")
        return EXIT_FAILED if refused else EXIT_OK

    guard(as_json, action)


def main(argv: Sequence[str] | None = None) -> None:
    """The ``t2v`` console script."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="t2v")
