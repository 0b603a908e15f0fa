"""The ``t2v`` command: submit, watch and cancel jobs; start the local stack.

Every job command takes ``--json`` for machines. Exit codes (also in ``t2v --help``):
0 succeeded (or done), 1 failed/cancelled or a service error, 2 bad usage or input
(the bad field is named), 3 timed out waiting (the job goes on).

``up``, ``demo`` and ``simulator`` are not defined here: the packages that own them register
them under the ``t2v.commands`` entry point group (see ``pyproject.toml``), and this group
finds them there when asked for one. The client never names ``worker`` or ``simulator``;
installed without them, ``t2v up`` says which extra brings it.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.exc import SQLAlchemyError

from producer import render
from producer.account import account_status
from producer.api import Producer
from producer.batch import by_line, read_batch
from producer.request import Text2VideoRequest, UnknownModelWarning
from t2v_core.errors import (
    ConfigError,
    JobFailed,
    JobNotFound,
    JobTimeout,
    RequestInvalid,
    RetryRefused,
    T2VError,
)
from t2v_core.records import JobRecord
from t2v_core.settings import Settings
from t2v_core.states import JobStatus

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT = 0, 1, 2, 3

EXIT_HELP = """\b
Exit codes:
  0  succeeded (or, without waiting, done)
  1  the job failed or was cancelled, or a service (database, broker) failed
  2  bad usage or input: the bad field is named
  3  timed out waiting (the job itself goes on)
"""

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")


def _producer() -> Producer:
    # Settings read afresh per invocation (the environment is the configuration).
    # pydantic-settings fills the fields from the environment; mypy cannot see that.
    return Producer(Settings())


def _fail(code: int, message: str, as_json: bool, **extra: Any) -> NoReturn:
    if as_json:
        click.echo(render.as_json({"error": message, "exit_code": code, **extra}))
    else:
        err.print(f"[red]t2v:[/] {escape(message)}", soft_wrap=True)
    sys.exit(code)


def _guard(as_json: bool, action: Callable[[], int]) -> NoReturn:
    """Run ``action`` and exit with its code, mapping our errors to exit codes."""
    try:
        code = action()
    except RequestInvalid as exc:
        _fail(EXIT_USAGE, str(exc), as_json, errors=exc.errors)
    except JobNotFound as exc:
        _fail(EXIT_USAGE, str(exc), as_json)
    except JobTimeout as exc:
        _finished(exc.record, as_json, str(exc))
        sys.exit(EXIT_TIMEOUT)
    except JobFailed as exc:
        _finished(exc.record, as_json, str(exc))
        sys.exit(EXIT_FAILED)
    except (T2VError, SQLAlchemyError) as exc:
        job = getattr(exc, "job_id", None)
        _fail(EXIT_FAILED, f"{type(exc).__name__}: {exc}", as_json, job_id=job)
    sys.exit(code)


def _finished(record: JobRecord | None, as_json: bool, message: str) -> None:
    if as_json:
        click.echo(render.as_json(render.record_json(record) if record else {"error": message}))
        return
    if record is not None:
        render.show_record(out, record)
    err.print(f"[red]t2v:[/] {escape(message)}", soft_wrap=True)


def _timeout(producer: Producer, timeout: float | None) -> float:
    return producer.settings.default_wait_timeout if timeout is None else timeout


class _Group(click.Group):
    """The commands defined here, plus those other installed packages register."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_plugins()) | set(PLUGIN_EXTRAS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        own = super().get_command(ctx, cmd_name)
        if own is not None:
            return own
        entry = _plugins().get(cmd_name)
        if entry is None:
            return _not_installed(cmd_name, "not installed") if cmd_name in PLUGIN_EXTRAS else None
        try:
            target = entry.load()
        except ImportError as exc:  # registered, but its package's dependencies are missing
            return _not_installed(cmd_name, f"{type(exc).__name__}: {exc}")
        return _passthrough(cmd_name, target)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_paragraph()
        for line in EXIT_HELP.splitlines():
            formatter.write_text(line)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """t2v: text-to-video jobs through a queue. Settings come from T2V_* variables."""


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
@click.option("--wait", is_flag=True, help="Wait for the job to finish.")
@click.option("--timeout", type=float, help="Seconds --wait waits (default 900).")
@json_option
def submit(prompt: str, idempotency_key: str | None, wait: bool, timeout: float | None,
           as_json: bool, **fields: Any) -> None:
    """Enqueue one video for PROMPT; print its job id (or, with --wait, its result)."""
    data = {"prompt": prompt, **{k: v for k, v in fields.items() if v is not None}}

    def action() -> int:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UnknownModelWarning)
            request = Text2VideoRequest.parse(data)
        for w in caught:
            err.print(f"[yellow]note:[/] {escape(str(w.message))}", soft_wrap=True)
        producer = _producer()
        job = producer.enqueue(request, idempotency_key=idempotency_key)
        record = job.wait(timeout=_timeout(producer, timeout)) if wait else job.record
        if as_json:
            click.echo(render.as_json(render.record_json(record)))
        elif wait:
            render.show_record(out, record)
        else:
            out.print(f"enqueued job [bold]{job.id}[/] ({record.status.value})")
        return EXIT_OK

    _guard(as_json, action)


@cli.command(epilog=EXIT_HELP)
@click.argument("job_id", required=False)
@click.option("--account", is_flag=True,
              help="Show the account's slots: limit configured and in use, jobs waiting.")
@json_option
def status(job_id: str | None, account: bool, as_json: bool) -> None:
    """Show job JOB_ID's record (or, with --account, the account's slots)."""

    def action() -> int:
        if account:
            return _account_status(as_json)
        if job_id is None:
            raise RequestInvalid.of("JOB_ID", None, "missing",
                                    message="give a JOB_ID or --account")
        record = _producer().load(job_id)
        if as_json:
            click.echo(render.as_json(render.record_json(record)))
        else:
            render.show_record(out, record)
        return EXIT_OK

    _guard(as_json, action)


def _account_status(as_json: bool) -> int:
    import redis

    settings = Settings()
    client = redis.Redis.from_url(settings.broker_url, socket_timeout=settings.broker_send_timeout,
                                  socket_connect_timeout=settings.broker_send_timeout)
    try:
        view = account_status(client).as_dict()
    except redis.RedisError as exc:
        raise ConfigError(f"cannot read the account's slots from the broker: {exc}") from None
    finally:
        client.close()
    view["configured_limit"] = settings.account_slots
    view["limit_in_use"] = min(settings.account_slots,
                               view["effective_limit"] or settings.account_slots)
    if as_json:
        click.echo(render.as_json(view))
        return EXIT_OK
    learned = ("" if view["effective_limit"] is None else
               f" (lowered from {settings.account_slots}: the provider said 'Maximum "
               f"{view['provider_max']}' while we held fewer; it grows back step by step)")
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
        producer = _producer()
        record = producer.get_job(job_id).wait(timeout=_timeout(producer, timeout))
        if as_json:
            click.echo(render.as_json(render.record_json(record)))
        else:
            render.show_record(out, record)
        return EXIT_OK

    _guard(as_json, action)


_AGO = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _parse_since(_ctx: click.Context, _param: click.Parameter, value: str | None
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
@json_option
def list_cmd(status_: str | None, since: datetime | None, limit: int, as_json: bool) -> None:
    """List jobs, newest first."""

    def action() -> int:
        records = _producer().list_jobs(status=status_, since=since, limit=limit)
        if as_json:
            click.echo(render.as_json([render.summary_json(r) for r in records]))
        else:
            render.show_list(out, records)
        return EXIT_OK

    _guard(as_json, action)


@cli.command(epilog=EXIT_HELP)
@click.argument("job_id")
@json_option
def cancel(job_id: str, as_json: bool) -> None:
    """Cancel job JOB_ID; exit 0 if cancelled, 1 if it had already finished."""

    def action() -> int:
        producer = _producer()
        moved = producer.cancel(job_id)
        record = producer.load(job_id)
        if as_json:
            click.echo(render.as_json({"id": job_id, "cancelled": moved,
                                       "status": record.status.value}))
        elif moved:
            out.print(f"cancelled job [bold]{job_id}[/]")
        else:
            err.print(f"job {job_id} had already finished: {record.status.value}")
        return EXIT_OK if moved else EXIT_FAILED

    _guard(as_json, action)


@cli.command(epilog=EXIT_HELP)
@click.argument("job_ids", nargs=-1)
@click.option("--parked", "parked", is_flag=True, help="Retry every parked job.")
@click.option("--failed", "failed", is_flag=True, help="Retry every failed job that can be.")
@click.option("--since", callback=_parse_since,
              help="With --parked/--failed: only jobs created since (1h, 30m, ISO time).")
@json_option
def retry(job_ids: tuple[str, ...], parked: bool, failed: bool, since: datetime | None,
          as_json: bool) -> None:
    """Resume parked (or failed) jobs from their last paid step.

    A job with a provider id is fetched (or downloaded) again, never resubmitted; a job is
    submitted again only if the provider never took it. Exit 0 if every job asked for was
    resumed, 1 if some were refused (each with its reason).
    """

    def action() -> int:
        producer = _producer()
        if not job_ids and not (parked or failed):
            raise RequestInvalid.of("JOB_IDS", None, "missing",
                                    message="give JOB_IDs, --parked or --failed")
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
            click.echo(render.as_json({
                "resumed": resumed,
                "refused": [{"id": why.job_id, "reason": str(why)} for why in refused],
            }))
        else:
            for job_id in resumed:
                out.print(f"resumed job [bold]{job_id}[/]")
            for why in refused:
                err.print(f"not retried: {escape(str(why))}", soft_wrap=True)
            out.print(f"{len(resumed)} resumed, {len(refused)} refused")
        return EXIT_FAILED if refused else EXIT_OK

    _guard(as_json, action)


@cli.command(epilog=EXIT_HELP)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--timeout", type=float, help="Seconds to wait for all jobs (default 900).")
@click.option("--no-wait", is_flag=True, help="Enqueue and print the job ids only.")
@click.option("--no-dedupe", is_flag=True,
              help="Make every line a new job, even one enqueued before (ignores ids).")
@json_option
def batch(file: Path, timeout: float | None, no_wait: bool, no_dedupe: bool,
          as_json: bool) -> None:
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
    enqueued (exit 2). Exit 0 if all succeeded, 1 if any failed, 3 on timeout.
    """

    def action() -> int:
        entries = read_batch(file, dedupe=not no_dedupe)
        producer = _producer()
        keys = None if no_dedupe else [e.key for e in entries]
        try:
            result = producer.enqueue_many_detailed([e.request for e in entries],
                                                    idempotency_keys=keys)
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
        records = _watch(producer, distinct, _timeout(producer, timeout), quiet=as_json)
        final = [r for r in records if r.is_final]
        if as_json:
            counts: dict[str, int] = {}
            for r in records:
                counts[r.status.value] = counts.get(r.status.value, 0) + 1
            click.echo(render.as_json({"counts": counts, "new": new, "existing": existing,
                                       "jobs": [render.summary_json(r) for r in records]}))
        else:
            if len(records) <= 50:
                render.show_list(out, records, title="batch")
            render.show_counts(out, records)
        if len(final) < len(records):
            return EXIT_TIMEOUT
        ok = all(r.status is JobStatus.SUCCEEDED for r in records)
        return EXIT_OK if ok else EXIT_FAILED

    _guard(as_json, action)


def _watch(producer: Producer, ids: Sequence[str], timeout: float, quiet: bool
           ) -> list[JobRecord]:
    """Poll the rows of ``ids`` until all are final or time runs out, with a progress bar."""
    deadline = time.monotonic() + timeout
    latest: dict[str, JobRecord] = {}
    pending = list(ids)
    delay = 0.1
    progress = Progress(
        TextColumn("[bold]jobs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, disable=quiet, transient=False,
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


# -- commands other packages register (entry point group ``t2v.commands``) --------------------
PLUGIN_GROUP = "t2v.commands"
# The commands the project's other packages bring, and the extra that installs each: named
# here only to say what to install when one is missing.
PLUGIN_EXTRAS = {"up": "worker", "demo": "worker", "simulator": "simulator"}
PASSTHROUGH = {"ignore_unknown_options": True, "allow_extra_args": True,
               "help_option_names": []}


def _plugins() -> dict[str, EntryPoint]:
    """Each entry point names a ``main(argv) -> int`` whose docstring's first line is its
    help; it parses its own arguments."""
    return {entry.name: entry for entry in entry_points(group=PLUGIN_GROUP)}


def _passthrough(name: str, target: Callable[[list[str]], int | None]) -> click.Command:
    def run(args: tuple[str, ...]) -> NoReturn:
        sys.exit(int(target(list(args)) or 0))

    doc = (target.__doc__ or "").strip().splitlines()
    return click.Command(
        name, callback=run, context_settings=PASSTHROUGH, add_help_option=False,
        params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
        help=(doc[0] if doc else name) + " (arguments go to it; try --help)",
    )


def _not_installed(name: str, why: str) -> click.Command:
    extra = PLUGIN_EXTRAS.get(name, name)

    def run(args: tuple[str, ...]) -> NoReturn:
        hint = escape(f"pip install 't2v-queue[{extra}]' ({why})")
        err.print(f"[red]t2v:[/] `t2v {name}` comes with the {extra} extra: {hint}",
                  soft_wrap=True)
        sys.exit(EXIT_USAGE)

    return click.Command(
        name, callback=run, context_settings=PASSTHROUGH, add_help_option=False,
        params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
        help=f"(needs pip install 't2v-queue[{extra}]')",
    )


def main(argv: Sequence[str] | None = None) -> None:
    """The ``t2v`` console script."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="t2v")
