"""Alembic migrations: the migrated schema is exactly ``Base.metadata``, on both databases."""

from __future__ import annotations

import multiprocessing

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from t2v_core.db import make_engine
from t2v_core.migrate import VERSION_TABLE, current_revision, head_revision, upgrade
from t2v_core.records import Base
from t2v_core.store import JobStore


def test_migrated_schema_equals_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"version_table": VERSION_TABLE, "compare_type": True}
            )
            assert compare_metadata(context, Base.metadata) == []
            assert current_revision(conn) == head_revision()
        names = {ix["name"] for ix in inspect(engine).get_indexes("t2v_jobs")}
        assert {
            "ix_t2v_jobs_status_created",
            "ix_t2v_jobs_created",
            "ix_t2v_jobs_status_next_check",
            "ix_t2v_jobs_provider_id",
        } <= names
        upgrade(engine)  # a second run is a no-op
    finally:
        engine.dispose()


def _upgrade_in_child(url: str, barrier: multiprocessing.synchronize.Barrier) -> None:
    engine = make_engine(url)
    barrier.wait(timeout=30)
    upgrade(engine)
    engine.dispose()


def test_two_processes_upgrading_at_once_both_succeed(database_url: str) -> None:
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(3)
    procs = [ctx.Process(target=_upgrade_in_child, args=(database_url, barrier)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            query = text(f"SELECT version_num FROM {VERSION_TABLE}")  # noqa: S608 - a constant
            versions = conn.execute(query).all()
        assert [v[0] for v in versions] == [head_revision()]
    finally:
        engine.dispose()


def test_store_get_many_returns_existing_rows_by_id(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        store = JobStore(engine)
        store.create_schema()
        rows = [
            store.insert_values(
                request={"prompt": str(i)}, model_requested=None, model_effective="wan2.2"
            )
            for i in range(3)
        ]
        store.insert_many(rows)
        ids = [r["id"] for r in rows]
        found = store.get_many([*ids, "missing", ids[0]])
        assert set(found) == set(ids)
        assert found[ids[1]].request == {"prompt": "1"}
    finally:
        engine.dispose()
