"""What every ``t2v`` command shares: exit codes, the consoles, ``--json``, and ``guard``,
which runs a command's action and turns our errors into exit codes.

Exit codes (also in ``t2v --help``): 0 succeeded (or done), 1 failed/cancelled or a service
error, 2 bad usage or input (the bad field is named), 3 timed out waiting (the job goes on).

This module must never define a command (``cli.py``, ``cli_batch.py`` and ``plugins.py``
do), and a command must never exit any other way than through ``guard``, ``fail`` or one
of these codes: scripts read them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.markup import escape
from sqlalchemy.exc import SQLAlchemyError

from producer import render
from producer.api import Producer
from t2v_core.errors import JobFailed, JobNotFound, JobTimeout, RequestInvalid, T2VError
from t2v_core.fairness import DEFAULT_PRIORITY, PRIORITIES
from t2v_core.records import JobRecord
from t2v_core.settings import Settings

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
priority_option = click.option(
    "--priority",
    type=click.Choice(list(PRIORITIES)),
    default=DEFAULT_PRIORITY,
    show_default=True,
    help="The job's class in the account's slot line.",
)
tenant_option = click.option("--tenant", help="Share slots fairly with other tenants (1-64 chars).")
label_option = click.option(
    "--label", "labels", multiple=True, help="KEY=VALUE kept on the job, never sent (repeat)."
)


def make_producer() -> Producer:
    """A ``Producer`` for this invocation."""
    # Settings read afresh per invocation (the environment is the configuration).
    # pydantic-settings fills the fields from the environment; mypy cannot see that.
    return Producer(Settings())


def wait_timeout(producer: Producer, timeout: float | None) -> float:
    """``--timeout``, or the settings' default wait."""
    return producer.settings.default_wait_timeout if timeout is None else timeout


def fail(code: int, message: str, as_json: bool, **extra: Any) -> NoReturn:
    """Print ``message`` (as JSON with ``--json``) and exit with ``code``."""
    if as_json:
        click.echo(render.as_json({"error": message, "exit_code": code, **extra}))
    else:
        err.print(f"[red]t2v:[/] {escape(message)}", soft_wrap=True)
    sys.exit(code)


def guard(as_json: bool, action: Callable[[], int]) -> NoReturn:
    """Run ``action`` and exit with its code, mapping our errors to exit codes."""
    try:
        code = action()
    except RequestInvalid as exc:
        fail(EXIT_USAGE, str(exc), as_json, errors=exc.errors)
    except JobNotFound as exc:
        fail(EXIT_USAGE, str(exc), as_json)
    except JobTimeout as exc:
        _finished(exc.record, as_json, str(exc))
        sys.exit(EXIT_TIMEOUT)
    except JobFailed as exc:
        _finished(exc.record, as_json, str(exc))
        sys.exit(EXIT_FAILED)
    except (T2VError, SQLAlchemyError) as exc:
        job = getattr(exc, "job_id", None)
        fail(EXIT_FAILED, f"{type(exc).__name__}: {exc}", as_json, job_id=job)
    sys.exit(code)


def _finished(record: JobRecord | None, as_json: bool, message: str) -> None:
    if as_json:
        click.echo(render.as_json(render.record_json(record) if record else {"error": message}))
        return
    if record is not None:
        render.show_record(out, record)
    err.print(f"[red]t2v:[/] {escape(message)}", soft_wrap=True)
