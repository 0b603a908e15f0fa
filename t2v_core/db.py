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
read only by the SQLite ``begin`` listener. A lone statement (a step's read, claim or
compare-and-set move) goes through ``one_statement`` instead, and so does every read
that needs no snapshot across its statements (reconcile's due rows, chunks of ids): on
PostgreSQL it runs autocommitted, which saves the ``BEGIN`` and ``COMMIT``/``ROLLBACK``
round trips (two of a step's three; sixteen of a reconcile run's twenty-four).

PostgreSQL connections are pinged at checkout only when they sat idle in the pool for
``PING_IF_IDLE_SECONDS`` (``pool_pre_ping`` pinged before every statement: a round trip
and about a tenth of a worker's CPU). A server restart between a connection's last use and
a use less than that later fails that one statement; the disconnect invalidates the rest of
the pool, and the step it broke is re-driven by its claim's lease (reconcile).
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
# A pooled PostgreSQL connection idle for this long is pinged before it is handed out.
PING_IF_IDLE_SECONDS = 5.0
_IDLE_SINCE = "t2v_idle_since"
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


@contextmanager
def one_statement(engine: Engine, *, write: bool = True) -> Iterator[Connection]:
    """A connection for one statement that is atomic on its own (a read, or a single
    ``UPDATE``/``INSERT``), or for reads that need no snapshot in common (chunks of ids):
    autocommitted on PostgreSQL, so no ``BEGIN``/``COMMIT`` (or ``ROLLBACK``) round trips;
    on SQLite a ``write_transaction`` (its write lock taken up front), or a plain deferred
    one for a read (``write=False``)."""
    if engine.dialect.name != "postgresql":
        if write:
            with write_transaction(engine) as conn:
                yield conn
        else:
            with engine.connect() as conn:
                yield conn
        return
    with engine.connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


def ping_when_idle(engine: Engine, idle_seconds: float = PING_IF_IDLE_SECONDS) -> None:
    """Ping a pooled connection at checkout if it sat idle ``idle_seconds`` or longer; a
    dead one is replaced (the pool's ``DisconnectionError`` protocol)."""
    from sqlalchemy.exc import DisconnectionError

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since < idle_seconds:
            return  # new, or used a moment ago
        try:
            alive = engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # noqa: BLE001 - any failure means a dead connection
            raise DisconnectionError(f"pooled connection failed its ping: {exc}") from exc
        if not alive:
            raise DisconnectionError("pooled connection failed its ping")


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
    """A new engine for ``url`` with the pragmas/pool settings this system relies on.

    ``ping_idle``: on PostgreSQL, ping connections idle this long at checkout (None: never).
    """
    ping_idle = kwargs.pop("ping_idle", PING_IF_IDLE_SECONDS)
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
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", 5)
        kwargs.setdefault("max_overflow", 5)
    engine = create_engine(url, **kwargs)
    if ping_idle is not None and not kwargs.get("pool_pre_ping"):
        ping_when_idle(engine, ping_idle)
    return engine


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
