"""PostgreSQL connections as the worker uses them (``t2v_core.db``): a pooled connection
is pinged only after sitting idle, a dead one is replaced, and a lone statement runs
autocommitted (no BEGIN/COMMIT round trips) on a real server."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

from t2v_core.db import make_engine, one_statement, write_transaction
from t2v_core.store import JobStore
from tests.conftest import PG_ADMIN_URL


def backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


def terminate(pid: int) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
    finally:
        admin.dispose()
    time.sleep(0.2)  # the server closes the socket after answering


def count_pings(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    pings: list[int] = []
    real = engine.dialect.do_ping

    def counted(dbapi_conn: Any) -> bool:
        pings.append(1)
        return real(dbapi_conn)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return pings


def test_a_connection_used_a_moment_ago_is_not_pinged(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(pg_url, pool_size=1, max_overflow=0)  # the default idle threshold
    store = JobStore(engine)
    store.create_schema()
    pings = count_pings(engine, monkeypatch)
    for _ in range(20):
        assert store.get("missing") is None
    assert pings == []
    engine.dispose()


def test_a_connection_idle_past_the_threshold_is_pinged(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(pg_url, pool_size=1, max_overflow=0, ping_idle=0.0)
    store = JobStore(engine)
    store.create_schema()
    pings = count_pings(engine, monkeypatch)
    for _ in range(5):
        assert store.get("missing") is None
    assert len(pings) == 5  # every checkout of the one pooled connection
    engine.dispose()


def test_a_dead_idle_connection_is_replaced_before_the_step_sees_it(pg_url: str) -> None:
    engine = make_engine(pg_url, pool_size=1, max_overflow=0, ping_idle=0.1)
    store = JobStore(engine)
    store.create_schema()
    first = backend_pid(engine)
    terminate(first)  # a server restart, or an idle timeout, while it sat in the pool
    assert store.get("missing") is None  # no error: the ping found it dead
    assert backend_pid(engine) != first
    engine.dispose()


def test_a_dead_busy_connection_fails_one_statement_then_the_pool_recovers(pg_url: str) -> None:
    """Used less than the threshold ago, a connection is not pinged: a restart in between
    fails that one statement (the step's lease re-drives it), and the next one works."""
    engine = make_engine(pg_url, pool_size=1, max_overflow=0, ping_idle=3600.0)
    store = JobStore(engine)
    store.create_schema()
    first = backend_pid(engine)
    terminate(first)
    with pytest.raises(DBAPIError) as failed:
        store.get("missing")
    assert failed.value.connection_invalidated
    assert store.get("missing") is None
    assert backend_pid(engine) != first
    engine.dispose()


def test_one_statement_is_autocommitted_and_a_transaction_is_not(pg_url: str) -> None:
    engine = make_engine(pg_url, pool_size=1, max_overflow=0)
    with one_statement(engine) as conn:
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None and dbapi.autocommit
        assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1
    with write_transaction(engine) as conn:  # the same pooled connection, reset on return
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None and not dbapi.autocommit
        conn.exec_driver_sql("SELECT 1")
        assert str(dbapi.info.transaction_status.name) == "INTRANS"
    engine.dispose()


def test_reconcile_and_metrics_reads_send_no_transaction(pg_url: str) -> None:
    """Reconcile's reads of due rows and the other bounded reads run autocommitted: each
    is one round trip, not three (a BEGIN before it, a ROLLBACK when the connection goes
    back to the pool); a reconcile run makes eight of them every ten seconds."""
    from datetime import UTC, datetime

    from sqlalchemy import event

    from t2v_core.states import JobStatus

    store = JobStore(make_engine(pg_url, pool_size=1, max_overflow=0))
    store.create_schema()
    autocommit: list[bool] = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def _seen(conn: Any, *_: Any) -> None:
        autocommit.append(bool(conn.connection.dbapi_connection.autocommit))

    now = datetime.now(UTC)
    store.overdue(now)
    store.overdue(now, statuses=[JobStatus.SUBMITTING])
    store.cancelled_rendering_due(now)
    store.due_ids(JobStatus.QUEUED, now, 10)
    store.callbacks_due(now)
    store.get_many(["a", "b"])
    store.statuses(["a"])
    store.admission_rows(["a"])
    store.count_by_status()
    store.list(limit=5)
    store.get_by_idempotency_key("k")
    assert len(autocommit) >= 11 and all(autocommit), autocommit
    store.engine.dispose()
