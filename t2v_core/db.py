"""Engines for the job table: SQLite (WAL, busy timeout) or PostgreSQL.

SQLite is safe for several worker processes on one host here because every write is a
short transaction (compare-and-set updates) and WAL lets readers go on while one writer
holds the lock. How the locks are taken:

- A read (``with engine.connect() as conn: conn.execute(select(...))``) begins a deferred
  transaction (plain ``BEGIN``): it takes no write lock, so it neither waits for a writer
  nor makes one wait, and its statements see one snapshot.
- A write goes through ``write_transaction(engine)``, whose transaction begins ``BEGIN
  IMMEDIATE``: it takes the database's write lock up front, so a second writer waits on
  ``busy_timeout`` instead of failing with "database is locked". Taking the lock later,
  in a transaction that has read already, is what fails: when another connection is
  writing, or has committed since this transaction's snapshot (in WAL mode that is
  ``SQLITE_BUSY_SNAPSHOT``), SQLite cannot wait and reports busy at once. Any other
  deferred transaction (a plain ``engine.begin()`` too) is fine only while its *first*
  statement is the write (a lone ``INSERT``): SQLite waits on the busy handler for that.
- WAL mode is switched on by whichever connection opens the file first; it is recorded in
  the file, so later connections find it on. Switching has to write the file header, and
  when several processes open a fresh file at once the loser of that upgrade is told
  "database is locked" without the busy handler being asked, so ``_enable_wal`` retries
  it (after ``busy_timeout`` is set) until it is on or the timeout has passed.

On PostgreSQL ``write_transaction`` is ``engine.begin()``: the execution option it sets is
read only by the SQLite ``begin`` listener.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

_engines: dict[str, Engine] = {}
_lock = threading.Lock()

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Connection execution option: this connection's transactions write (SQLite: BEGIN IMMEDIATE).
WRITE_OPTION = "t2v_write"


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that writes: committed on exit, rolled back on error.

    Use it instead of ``engine.begin()`` for every transaction that writes (or reads and
    then writes). On SQLite it begins with ``BEGIN IMMEDIATE``; elsewhere it is exactly
    ``engine.begin()``.
    """
    with engine.connect() as conn:
        conn.execution_options(**{WRITE_OPTION: True})
        with conn.begin():
            yield conn


def _enable_wal(dbapi_conn: Any) -> None:
    """``PRAGMA journal_mode=WAL``, retried while another connection holds the lock."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.002
    while True:
        try:
            dbapi_conn.execute("PRAGMA journal_mode=WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


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
            # Let SQLAlchemy, not pysqlite, decide when a transaction begins and how (the
            # "begin" listener below), so writers queue on busy_timeout.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            # First: everything after this, the WAL switch included, may have to wait.
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            if parsed.database not in (None, "", ":memory:"):
                _enable_wal(dbapi_conn)
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            # Reads (and autobegun transactions) defer; write_transaction locks up front.
            write = conn.get_execution_options().get(WRITE_OPTION, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", 5)
        kwargs.setdefault("max_overflow", 5)
    return create_engine(url, **kwargs)


def pool_options(settings: Any) -> dict[str, Any]:
    """Engine options from ``Settings``: the per-process PostgreSQL connection budget.

    At most ``db_pool_size + db_max_overflow`` connections per process; a checkout waits
    ``db_pool_timeout`` seconds for a free one. ``db_pgbouncer``: the URL is a PgBouncer in
    transaction mode, where a server connection changes between transactions, so psycopg
    must not prepare statements server-side (``prepare_threshold=None``). Empty for SQLite.
    """
    if make_url(settings.database_url).get_backend_name() == "sqlite":
        return {}
    options: dict[str, Any] = {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout,
    }
    if settings.db_pgbouncer:
        options["connect_args"] = {"prepare_threshold": None}
    return options


def get_engine(url: str, **kwargs: Any) -> Engine:
    """One shared engine per URL per process (engines hold the connection pool).

    ``kwargs`` (``pool_options(settings)``) apply when the engine is first made.
    """
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(url, **kwargs)
        return engine


def settings_engine(settings: Any) -> Engine:
    """The shared engine for ``settings.database_url``, sized by the pool settings."""
    return get_engine(settings.database_url, **pool_options(settings))


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
