"""Schema upgrades: Alembic, run in code (no ``alembic.ini`` needed).

``upgrade(engine)`` brings the job table to the newest revision. It is safe to call from
every process at start-up, several at once:

1. ``is_current`` reads the version in a plain read transaction (on SQLite a deferred
   ``BEGIN``: no write lock, so many processes starting at once do not queue here). A
   concurrent upgrade is one transaction, so this read sees the schema either before it or
   after it, never half-made: an unfinished upgrade reads as "not current".
2. Otherwise it opens ``t2v_core.db.write_transaction`` and takes the migration lock first
   (PostgreSQL: a transaction-scoped advisory lock; SQLite: the ``BEGIN IMMEDIATE`` of that
   transaction, the database's write lock, waited for on ``busy_timeout``), then runs
   Alembic in that same transaction. Alembic reads the version again under the lock, so a
   caller that waited finds the work done and changes nothing; the version table is
   created under the lock too, once.

The version is kept in ``t2v_alembic_version`` so an application's own Alembic history in
the same database is never touched.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from t2v_core.db import write_transaction

VERSION_TABLE = "t2v_alembic_version"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# pg_advisory_xact_lock key: any constant shared by every process of this system ("t2vmig").
_PG_LOCK_KEY = 0x7432_766D_6967


def alembic_config(url: str | None = None) -> Config:
    """An Alembic ``Config`` pointing at ``t2v_core/migrations`` (and ``url`` if given)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(conn: Connection) -> str | None:
    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def is_current(engine: Engine) -> bool:
    """True when the database is already at the newest revision."""
    with engine.connect() as conn:
        return current_revision(conn) == head_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (the newest by default); a no-op when current."""
    if revision == "head" and is_current(engine):
        return
    with write_transaction(engine) as conn:
        # SQLite: an engine from t2v_core.db began this with BEGIN IMMEDIATE, so we hold
        # the write lock already and a concurrent caller waits on busy_timeout.
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
