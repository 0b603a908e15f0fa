"""Engines for the job table: SQLite (WAL, busy timeout) or PostgreSQL.

SQLite is safe for several worker processes on one host here because every write is a
short single-statement transaction (compare-and-set updates) and WAL lets readers go on
while one writer holds the lock; ``busy_timeout`` makes a second writer wait instead of
failing with "database is locked".
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

_engines: dict[str, Engine] = {}
_lock = threading.Lock()

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str, **kwargs: Any) -> Engine:
    """A new engine for ``url`` with the pragmas/pool settings this system relies on."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            **kwargs,
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not pysqlite, decide when a transaction begins (BEGIN IMMEDIATE
            # below), so two writers queue on busy_timeout instead of deadlocking on upgrade.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            if parsed.database not in (None, "", ":memory:"):
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", 5)
        kwargs.setdefault("max_overflow", 10)
    return create_engine(url, **kwargs)


def get_engine(url: str) -> Engine:
    """One shared engine per URL per process (engines hold the connection pool)."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(url)
        return engine


def dispose_engines() -> None:
    """Close every pooled connection (after fork, and in tests)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def forget_engines() -> None:
    """In a forked child: drop the parent's engines without closing its connections.

    A pooled connection inherited across ``fork`` is shared with the parent; closing it
    here would cut the parent's session, using it would interleave both. ``dispose(
    close=False)`` just forgets them: each engine stays usable with a fresh pool. No lock:
    right after fork the child has one thread, and the lock may have been copied held.
    """
    for engine in list(_engines.values()):
        engine.dispose(close=False)


def get_tuned_engine(name: str, url: str, **kwargs: Any) -> Engine:
    """A shared engine for ``url`` with its own options, cached under ``name`` + ``url``.

    Lives in the same registry as ``get_engine``'s, so ``dispose_engines()`` and
    ``forget_engines()`` cover it (the producer's pre-ping-free PostgreSQL engine).
    """
    key = f"{name}\n{url}"
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = make_engine(url, **kwargs)
        return engine
