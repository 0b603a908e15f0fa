"""``t2v batch``'s file reader: a JSONL file of requests, each keyed for idempotency.

``read_batch`` parses every line (blank and ``#`` lines skipped) into a ``BatchLine``: the
validated ``Text2VideoRequest`` and the idempotency key it is enqueued under, the line's
``id`` if it has one, else ``content_key`` (``batch:`` + the sha256 of its canonical JSON,
``:n`` for the n-th copy within the file). A line's ``priority``, ``tenant`` and ``labels``
are the job's options (``BatchLine.options``), not request fields. The file is all valid
or nothing: every bad line is reported as ``line N: field=value: reason``. ``by_line``
maps ``enqueue_many``'s ``[i].field`` errors back to those line numbers.

This module must never enqueue, nor touch the database or the broker: the ``batch``
command in ``cli_batch.py`` does that with what it returns. A key must never depend on anything
but the line (not the file's name or place), and ``content_key`` must never change how it
hashes: a re-run of a file would then enqueue, and pay for, every line again.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from rich.console import Console

from producer.idempotency import idempotency_key_problem
from producer.request import Text2VideoRequest, UnknownModelWarning
from t2v_core.errors import FieldError, RequestInvalid
from t2v_core.fairness import DEFAULT_PRIORITY, JobOptions, job_option_errors

err = Console(stderr=True, highlight=False)


#: A line's fields that are the job's options, not request fields.
LINE_OPTIONS = ("priority", "tenant", "labels")

#: Prefix of the keys ``t2v batch`` derives from a line's content (never an application's).
BATCH_KEY_PREFIX = "batch:"


class BatchLine(NamedTuple):
    """One request of a batch file and the idempotency key it is enqueued under."""

    line: int
    request: Text2VideoRequest
    #: The line's ``id``, else ``batch:<sha256 of its canonical JSON>``; None with no dedupe.
    key: str | None
    from_id: bool
    #: The line's own ``priority``/``tenant``/``labels`` (None: the command's flags).
    options: JobOptions | None = None


def content_key(data: Any) -> str:
    """The key of a line without ``id``: ``batch:`` + sha256 of its canonical JSON.

    ``read_batch`` appends ``:n`` for the n-th identical line of a file (n > 1), so a file
    that asks for the same request twice still makes two jobs, and re-running it none.
    """
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return BATCH_KEY_PREFIX + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def read_batch(path: Path, *, dedupe: bool = True) -> list[BatchLine]:
    """Requests from a JSONL file (blank and ``#`` lines skipped); all valid, or none.

    A line's ``id`` (a string) is taken out of the request and is its idempotency key;
    a line without one is keyed by its content (``content_key``). ``dedupe=False`` keys
    nothing (``id`` is still checked and taken out). The same ``id`` on two lines must
    carry the same request (they are then one job).
    Raises ``RequestInvalid`` listing every bad line as ``line N: field=value: reason``.
    """
    entries: list[BatchLine] = []
    errors: list[FieldError] = []
    lines: list[str] = []
    seen_content: dict[str, int] = {}
    id_lines: dict[str, BatchLine] = {}

    def bad(number: int, field: str | None, value: Any, reason: str) -> None:
        error = FieldError(field, value, reason, line=number)
        errors.append(error)
        lines.append(str(error))

    text = _read_text(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnknownModelWarning)
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                bad(number, None, None, f"not valid JSON ({exc.msg})")
                continue
            except (ValueError, RecursionError) as exc:  # a 5,000-digit number; [[[[...
                why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                bad(number, None, None, f"not valid JSON ({why[:80]})")
                continue
            ident: Any = None
            has_id = isinstance(data, dict) and "id" in data
            if has_id:
                data = dict(data)
                ident = data.pop("id")
                problem = idempotency_key_problem(ident)
                if problem:
                    bad(number, "id", ident, problem)
            options, option_errors = _line_options(data)
            for error in option_errors:
                bad(number, error.field, error.value, error.reason)
            try:
                request = Text2VideoRequest.parse(_without_options(data))
            except RequestInvalid as exc:
                errors.extend(e.on_line(number) for e in exc.field_errors)
                lines.append(f"line {number}: {exc}")
                continue
            if has_id:
                entry = BatchLine(number, request, ident if dedupe else None, True, options)
                other = id_lines.setdefault(ident, entry) if isinstance(ident, str) else entry
                same = other.request.to_api_payload() == request.to_api_payload()
                if not same:
                    bad(
                        number,
                        "id",
                        ident,
                        f"also the id of line {other.line}, with a different request",
                    )
            else:
                key = None
                if dedupe:
                    key = content_key(data)
                    seen = seen_content[key] = seen_content.get(key, 0) + 1
                    key = key if seen == 1 else f"{key}:{seen}"
                entry = BatchLine(number, request, key, False, options)
            entries.append(entry)
    if len(caught) and not errors:
        err.print(
            f"[yellow]note:[/] {len(caught)} request(s) name an unknown model; they run as wan2.2"
        )
    if errors:
        raise RequestInvalid(f"{path}: nothing enqueued; " + "\n".join(lines), errors)
    if not entries:
        raise RequestInvalid(f"{path}: no requests in the file")
    return entries


def _without_options(data: Any) -> Any:
    if not isinstance(data, dict):
        return data
    return {k: v for k, v in data.items() if k not in LINE_OPTIONS}


def _line_options(data: Any) -> tuple[JobOptions | None, list[FieldError]]:
    """A line's ``priority``/``tenant``/``labels`` (kept in its content key: the same prompt
    with other labels is another job) and why they are refused."""
    if not isinstance(data, dict) or not any(k in data for k in LINE_OPTIONS):
        return None, []
    priority, tenant, labels = (data.get(k) for k in LINE_OPTIONS)
    errors = job_option_errors(priority or DEFAULT_PRIORITY, tenant, labels)
    return JobOptions(priority, tenant, labels), errors


def _read_text(path: Path) -> str:
    """The file as text, or ``RequestInvalid`` naming the line of its first non-UTF-8 byte."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start].decode("utf-8")
        line = len((before + "x").splitlines())  # the line the bad byte is on
        error = FieldError(None, None, f"not UTF-8 text (byte {exc.start + 1})", line=line)
        raise RequestInvalid(f"{path}: nothing enqueued; {error}", [error]) from None


def by_line(path: Path, exc: RequestInvalid, entries: Sequence[BatchLine]) -> RequestInvalid:
    """``enqueue_many``'s ``[i].field`` errors as the batch file's ``line N`` errors."""
    errors: list[FieldError] = []
    for error in exc.field_errors:
        index, _, rest = (error.field or "").partition("].")
        if not (index.startswith("[") and index[1:].isdigit()):
            return exc
        entry = entries[int(index[1:])]
        if rest == "idempotency_key":
            rest = "id" if entry.from_id else "content key"
        errors.append(error.on_line(entry.line, rest))
    lines = "\n".join(str(e) for e in errors)
    return RequestInvalid(f"{path}: nothing enqueued; " + lines, errors)
