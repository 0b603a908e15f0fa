"""Idempotency keys: what a valid key is, and how ``enqueue_many`` resolves a call's keys.

A key is a non-blank string of at most ``IDEMPOTENCY_KEY_MAX`` characters (the column's
length); ``idempotency_key_problem`` says why one is not, for ``enqueue``, ``enqueue_many``
and ``t2v batch``'s line ids alike. ``first_positions`` holds a call to one request per key,
``jobs_by_key`` finds the jobs that already own keys, and ``insert_keyed`` writes the rows
of the keys nobody owns yet, reading again whenever another caller wins a key first.

This module must never send a message nor build a ``Job`` handle: ``Producer`` in
``api.py`` does both with what it returns. It must never treat a key already used for a
different request as a match: that is ``RequestInvalid``, and nothing is written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from t2v_core.errors import FieldError, RequestInvalid
from t2v_core.records import JobRecord, JobRow, to_record
from t2v_core.store import JobStore

log = logging.getLogger(__name__)

IDEMPOTENCY_KEY_MAX = 255  # the column's length
#: Idempotency keys looked up per query in ``enqueue_many``.
KEY_LOOKUP_CHUNK = 500

#: Existing jobs of some keys, by key (``jobs_by_key``, or a stand-in a test holds).
KeyLookup = Callable[[Sequence[str]], dict[str, JobRecord]]


def idempotency_key_problem(key: Any) -> str | None:
    """Why ``key`` cannot be an idempotency key, or None if it can."""
    if not isinstance(key, str) or not key.strip():
        return "must be a non-blank string"
    if len(key) > IDEMPOTENCY_KEY_MAX:
        return f"must be at most {IDEMPOTENCY_KEY_MAX} characters"
    return None


def check_idempotency_key(key: Any) -> None:
    """``enqueue``'s check: ``RequestInvalid`` naming ``idempotency_key`` if it is bad."""
    reason = idempotency_key_problem(key)
    if reason:
        # This message has always left the value out (``errors`` has it); kept word for word.
        raise RequestInvalid.of(
            "idempotency_key", key, reason, message=f"idempotency_key: {reason}"
        )


def key_list(keys: Any, count: int) -> list[Any]:
    """``enqueue_many``'s keys as a list, one per request, or ``RequestInvalid``."""
    reason = None
    if isinstance(keys, str | bytes | Mapping) or not isinstance(keys, Iterable):
        kind = type(keys).__name__
        reason = f"must be a sequence with one key (or None) per request, not a {kind}"
    else:
        keys = list(keys)
        if len(keys) != count:
            reason = f"must have one entry per request: {len(keys)} for {count} request(s)"
    if reason:
        raise RequestInvalid.of("idempotency_keys", None, reason)
    return list(keys)


def first_positions(
    keys: Sequence[str | None], payloads: Sequence[dict[str, Any]]
) -> dict[str, int]:
    """Each key's first position in the call; a later position must carry the same request
    (else ``RequestInvalid`` naming every such position)."""
    first: dict[str, int] = {}
    errors: list[FieldError] = []
    for index, key in enumerate(keys):
        if key is None:
            continue
        earlier = first.setdefault(key, index)
        if earlier != index and payloads[earlier] != payloads[index]:
            errors.append(
                FieldError(
                    f"[{index}].idempotency_key",
                    key,
                    f"also the key of [{earlier}], with a different request",
                )
            )
    if errors:
        raise RequestInvalid.listing(errors)
    return first


def jobs_by_key(store: JobStore, keys: Sequence[str]) -> dict[str, JobRecord]:
    """Existing jobs of ``keys``, by key (one query per ``KEY_LOOKUP_CHUNK`` keys)."""
    found: dict[str, JobRecord] = {}
    table = JobRow.__table__
    with store.engine.connect() as conn:
        for start in range(0, len(keys), KEY_LOOKUP_CHUNK):
            chunk = list(keys[start : start + KEY_LOOKUP_CHUNK])
            stmt = select(table).where(JobRow.idempotency_key.in_(chunk))
            for row in conn.execute(stmt).all():
                record = to_record(row)
                if record.idempotency_key is not None:
                    found[record.idempotency_key] = record
    return found


def insert_keyed(
    store: JobStore,
    first: Mapping[str, int],
    payloads: Sequence[dict[str, Any]],
    keyed_rows: Mapping[str, dict[str, Any]],
    unkeyed_rows: Sequence[dict[str, Any]],
    lookup: KeyLookup,
) -> dict[str, JobRecord]:
    """Write, in one transaction, the row of every key no job owns yet and every unkeyed
    row; return the jobs that already owned the other keys, by key.

    ``first`` is each key's first position in the call (``first_positions``), ``payloads``
    the requests by position. A key an existing job owns with a different request raises
    ``RequestInvalid`` (every such key, by position) and nothing is written.
    """
    existing: dict[str, JobRecord] = {}
    missing = list(first)
    raced: IntegrityError | None = None
    while True:
        found = lookup(missing) if missing else {}
        if raced is not None and not found:
            # The insert failed, but not on a key someone else has since written.
            raise raced
        mismatched = [
            FieldError(
                f"[{first[key]}].idempotency_key",
                key,
                f"already used for a different request (job {record.id})",
            )
            for key, record in found.items()
            if record.request != payloads[first[key]]
        ]
        if mismatched:
            mismatched.sort(key=lambda e: first[e.value])
            raise RequestInvalid.listing(mismatched)
        existing.update(found)
        missing = [key for key in missing if key not in found]
        # Keyed rows in key order: concurrent callers then take the unique index's
        # entries in one order and wait on each other instead of deadlocking.
        rows = [keyed_rows[key] for key in sorted(missing)] + list(unkeyed_rows)
        try:
            store.insert_many(rows)
            return existing
        except IntegrityError as exc:
            # Another caller committed one of our keys between our read and our insert
            # (the transaction rolled back: nothing of ours was written). Read again:
            # every round finds at least one more key, so this ends.
            log.info("enqueue_many: idempotency keys raced another caller; resolving again")
            raced = exc
