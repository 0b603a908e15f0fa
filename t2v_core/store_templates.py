"""Prebuilt UPDATE statements for the steps' hot writes: one per shape, run with parameters.

Building an ``UPDATE`` and computing its cache key cost SQLAlchemy more CPU than running
it: a poll's claim on PostgreSQL took 1.1-1.5 ms of CPU built per call against 0.5 ms
prebuilt and run with parameters (1.6 against 0.85 ms after a 60 ms pause, which is how
a step runs behind a small account). A write's *shape* picks its statement: which columns
it sets, which of them to an increment of themselves (``JobRow.poll_count + 1``), which
states it expects, what it returns. The values go in as parameters (``p_<column>``;
``p_job_id``, ``p_due_by``, ``p_due_now``).

A value no template can hold (any SQL expression other than ``column + n`` or
``column - n`` on its own column) makes ``split_values`` return None, and the same builder
runs with the values themselves: templates change how a write is sent, never what it
writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import DateTime, Table, bindparam, or_, update
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, ClauseElement

from t2v_core.records import JobRow
from t2v_core.states import JobStatus
from t2v_core.store_callbacks import due_values

_T = cast(Table, JobRow.__table__)
# A column set to a parameter; any other spec is the int added to the column itself.
PARAM = "param"
Shape = tuple[tuple[str, Any], ...]
# Columns a move to a notifying state sets itself (``due_values``).
DUE_COLUMNS = frozenset(due_values(JobStatus.SUCCEEDED, _T.c.updated_at))


def split_values(values: Mapping[str, Any]) -> tuple[Shape, dict[str, Any]] | None:
    """``values`` as (shape, parameters), or None when one of them is an SQL expression a
    template cannot hold."""
    shape: list[tuple[str, Any]] = []
    params: dict[str, Any] = {}
    for key in sorted(values):
        value = values[key]
        if isinstance(value, ClauseElement):
            step = _increment(key, value)
            if step is None:
                return None
            shape.append((key, step))
        else:
            shape.append((key, PARAM))
            params[f"p_{key}"] = value
    return tuple(shape), params


def _increment(key: str, value: ClauseElement) -> int | None:
    """``JobRow.<key> + n`` (or ``- n``) as the signed ``n``; None for anything else."""
    if not isinstance(value, BinaryExpression):
        return None
    left, right = value.left, value.right
    if getattr(left, "table", None) is not _T or getattr(left, "name", None) != key:
        return None
    if not isinstance(right, BindParameter) or type(right.value) is not int:
        return None
    if value.operator is operators.add:
        return int(right.value)
    if value.operator is operators.sub:
        return -int(right.value)
    return None


def _set_clause(shape: Shape) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, spec in shape:
        column = _T.c[key]
        out[key] = bindparam(f"p_{key}", type_=column.type) if spec == PARAM else column + spec
    return out


def claim_sql(
    job_id: str, status: str, values: dict[str, Any], due_by: Any, returning: bool
) -> tuple[Any, dict[str, Any]]:
    """A claim's statement and parameters: the row in ``status`` whose step is due by
    ``due_by`` gets ``values`` (``returning``: and is returned)."""
    split = split_values(values)
    if split is None:
        return _claim(status, values, job_id, due_by, returning), {}
    shape, params = split
    stmt = claim_statement(status, shape, returning)
    return stmt, {**params, "p_job_id": job_id, "p_due_by": due_by}


def move_sql(
    job_id: str,
    to: JobStatus,
    allowed: tuple[str, ...],
    values: dict[str, Any],
    due_now: Any,
    returning: str | None,
) -> tuple[Any, dict[str, Any]]:
    """A move's statement and parameters: the row in one of ``allowed`` moves to ``to``
    with ``values``; ``due_now`` (a time, or None): its callback becomes due then, in the
    same statement. ``returning``: None, ``"callback_due_at"`` or ``"row"``."""
    if due_now is not None:
        values = {k: v for k, v in values.items() if k not in DUE_COLUMNS}
    split = split_values(values)
    if split is None:
        return _move(to, allowed, values, job_id, due_now, returning), {}
    shape, params = split
    stmt = move_statement(to, allowed, shape, due_now is not None, returning)
    return stmt, {**params, "p_job_id": job_id, "p_due_now": due_now}


def update_if_sql(
    job_id: str, expect: tuple[str, ...], values: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """``values`` written while the row is in one of ``expect``."""
    split = split_values(values)
    if split is None:
        return _update_if(expect, values, job_id), {}
    shape, params = split
    return update_if_statement(expect, shape), {**params, "p_job_id": job_id}


# -- one builder per kind of write: with parameters (a template) or with the values --------
def _claim(status: str, values: dict[str, Any], job_id: Any, due_by: Any, returning: bool) -> Any:
    stmt = (
        update(_T)
        .where(_T.c.id == job_id)
        .where(_T.c.status == status)
        .where(or_(_T.c.next_check_at.is_(None), _T.c.next_check_at <= due_by))
        .values(**values)
    )
    return _returning(stmt, "row" if returning else None)


def _move(
    to: JobStatus,
    allowed: tuple[str, ...],
    values: dict[str, Any],
    job_id: Any,
    due_now: Any,
    returning: str | None,
) -> Any:
    if due_now is not None:
        values = {**values, **due_values(to, due_now)}
    stmt = update(_T).where(_T.c.id == job_id).where(_T.c.status.in_(list(allowed)))
    return _returning(stmt.values(**values), returning)


def _update_if(expect: tuple[str, ...], values: dict[str, Any], job_id: Any) -> Any:
    return update(_T).where(_T.c.id == job_id).where(_T.c.status.in_(list(expect))).values(**values)


def _returning(stmt: Any, returning: str | None) -> Any:
    if returning == "row":
        return stmt.returning(*_T.c)
    if returning == "callback_due_at":
        return stmt.returning(_T.c.callback_due_at)
    return stmt


@lru_cache(maxsize=512)
def claim_statement(status: str, shape: Shape, returning: bool) -> Any:
    """``JobStore.claim``: the row in ``status`` whose step is due by ``p_due_by``."""
    due_by = bindparam("p_due_by", type_=_T.c.next_check_at.type)
    return _claim(status, _set_clause(shape), bindparam("p_job_id"), due_by, returning)


@lru_cache(maxsize=512)
def move_statement(
    to: JobStatus, allowed: tuple[str, ...], shape: Shape, due: bool, returning: str | None
) -> Any:
    """``JobStore.transition``: the row in one of ``allowed`` moves to ``to``; ``due``: the
    move also makes its callback due (at ``p_due_now``). ``returning``: None,
    ``"callback_due_at"`` or ``"row"``."""
    due_now = bindparam("p_due_now", type_=DateTime(timezone=True)) if due else None
    return _move(to, allowed, _set_clause(shape), bindparam("p_job_id"), due_now, returning)


@lru_cache(maxsize=512)
def update_if_statement(expect: tuple[str, ...], shape: Shape) -> Any:
    """``JobStore.update_if``: write while the row is in one of ``expect``."""
    return _update_if(expect, _set_clause(shape), bindparam("p_job_id"))
