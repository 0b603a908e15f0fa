"""Many processes starting at once on one fresh SQLite file: no ``database is locked``, ever.

Eight long-lived worker processes (``spawn``, so nothing is inherited from pytest) run 50
rounds; each round is a new database file that does not exist yet. In a round every worker
makes a fresh engine for it (half of them with ``NullPool``, so every operation is a new
connection that runs the WAL/busy-timeout pragmas again) and, released together by a
barrier, connects, runs ``JobStore.create_schema()`` and writes straight away while the
others still migrate:

1. inserts its own rows (``insert_many`` and ``insert_one``), reads them back, and moves
   each ``queued -> submitting`` by compare-and-set (a second try must lose);
2. (all at once) races two other workers for each row of its own and of its two
   neighbours: read the row, then ``submitting -> processing`` by compare-and-set; each
   row of the round must be won by exactly one worker;
3. (all at once) finishes its own rows (``update_if``, then ``downloading -> succeeded`` or
   ``cancelled``) while reading the table.

Any exception in any worker is an error of the round. After each round the parent reads
its file: each row is there, in the state its owner left it, the version table holds the
head revision once, and the file is in WAL mode.

One-process tests pin the pieces: a plain read holds no write lock while
``write_transaction`` holds it from its ``BEGIN``; why: a deferred transaction that read
and then writes after another writer's commit fails at once (``SQLITE_BUSY_SNAPSHOT``);
and the start-up race made deterministic: switching a file to WAL while another connection
holds its write lock waits instead of failing.
"""

from __future__ import annotations

import multiprocessing
import queue
import re
import sqlite3
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from t2v_core.db import make_engine, write_transaction
from t2v_core.migrate import VERSION_TABLE, head_revision
from t2v_core.records import JobRow
from t2v_core.states import JobStatus
from t2v_core.store import JobStore

ROUNDS = 50
WORKERS = 8
OWN_ROWS = 4  # per worker and round: 2 by insert_many, 2 by insert_one
RACERS = 3  # workers racing for each row: its owner and the next two
BARRIER_TIMEOUT = 120.0  # only a guard against a hung worker, never reached when passing


def _row_id(round_no: int, worker: int, n: int) -> str:
    return f"r{round_no:03d}w{worker}n{n:02d}"


def _final_status(n: int) -> str:
    return "succeeded" if n % 2 == 0 else "cancelled"


def _one_round(index: int, round_no: int, url: str, barrier: Any) -> dict[str, Any]:
    """One worker's part of one round; every worker passes every barrier even after an error."""
    errors: list[str] = []
    won: list[str] = []
    # The engine exists before the start (it connects lazily): right after the barrier each
    # worker's first act is to open a connection to a file that does not exist yet.
    kwargs: dict[str, Any] = {"poolclass": NullPool} if index % 2 == 0 else {}
    engine = make_engine(url, **kwargs)
    store = JobStore(engine)
    own = [_row_id(round_no, index, n) for n in range(OWN_ROWS)]
    # The rows of this worker and the previous RACERS - 1, starting with someone else's.
    contested = [
        _row_id(round_no, (index - k) % WORKERS, n)
        for k in reversed(range(RACERS))
        for n in range(OWN_ROWS)
    ]

    def check(ok: bool, what: str) -> None:
        if not ok:
            raise AssertionError(f"worker {index} round {round_no}: {what}")

    def start() -> None:
        store.create_schema()
        rows = [
            store.insert_values(
                request={"prompt": f"{index}/{n}"},
                model_requested=None,
                model_effective="wan2.2",
                job_id=row_id,
            )
            for n, row_id in enumerate(own)
        ]
        store.insert_many(rows[: OWN_ROWS // 2])
        for row in rows[OWN_ROWS // 2 :]:
            check(store.get(row["id"]) is None, "a row was there before its insert")
            store.insert_one(row)
        store.list(limit=None)
        store.count_by_status()
        check(set(store.get_many(own)) == set(own), "own rows missing after insert")
        for row_id in own:
            record = store.get(row_id)
            check(record is not None and record.status is JobStatus.QUEUED, "not queued")
            check(store.transition(row_id, JobStatus.SUBMITTING), "lost its own submit")
            check(not store.transition(row_id, JobStatus.SUBMITTING), "submitted twice")

    def race() -> None:
        for row_id in contested:
            record = store.get(row_id)
            check(record is not None, f"{row_id} missing in the race")
            if (
                record is not None
                and record.status is JobStatus.SUBMITTING
                and store.transition(row_id, JobStatus.PROCESSING, expect=[JobStatus.SUBMITTING])
            ):
                won.append(row_id)
        store.count_by_status()
        # This worker tried each of them: each is processing now, whoever won it.
        statuses = {r.status for r in store.get_many(contested).values()}
        check(statuses == {JobStatus.PROCESSING}, f"after the race: {statuses}")

    def finish() -> None:
        for n, row_id in enumerate(own):
            check(
                store.update_if(row_id, [JobStatus.PROCESSING], poll_count=JobRow.poll_count + 1),
                "update_if lost",
            )
            if _final_status(n) == "succeeded":
                check(store.transition(row_id, JobStatus.DOWNLOADING), "download move lost")
                check(store.transition(row_id, JobStatus.SUCCEEDED), "success move lost")
            else:
                check(store.transition(row_id, JobStatus.CANCELLED), "cancel lost")
            store.count_by_status()
        store.list(status=[JobStatus.PROCESSING, JobStatus.SUCCEEDED], limit=None)

    barrier.wait(timeout=BARRIER_TIMEOUT)  # all together
    for phase in (start, race, finish):
        if not errors:
            try:
                phase()
            except Exception:  # noqa: BLE001 - every failure is reported to the parent
                errors.append(traceback.format_exc())
        barrier.wait(timeout=BARRIER_TIMEOUT)
    engine.dispose()
    return {"worker": index, "round": round_no, "won": won, "errors": errors}


def _worker_main(index: int, tasks: Any, results: Any, barrier: Any) -> None:
    """Run rounds until told to stop (``None``); one task per round."""
    while (task := tasks.get()) is not None:
        round_no, url = task
        try:
            results.put(_one_round(index, round_no, url, barrier))
        except Exception:  # noqa: BLE001 - a broken barrier ends the run, reported
            results.put(
                {"worker": index, "round": round_no, "won": [], "errors": [traceback.format_exc()]}
            )
            return


def _check_file(url: str, round_no: int) -> list[str]:
    """What is wrong with one round's database, as read by a fresh engine afterwards."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(JobRow.id, JobRow.status, JobRow.poll_count)).all()
            versions = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).all()  # noqa: S608
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
    finally:
        engine.dispose()
    expected = {
        _row_id(round_no, w, n): (_final_status(n), 1)
        for w in range(WORKERS)
        for n in range(OWN_ROWS)
    }
    found = {row_id: (status, polls) for row_id, status, polls in rows}
    problems = []
    if found != expected:
        problems.append(
            f"round {round_no}: rows differ: "
            f"missing {sorted(set(expected) - set(found))}, "
            f"wrong {sorted(k for k in found if found[k] != expected.get(k))}"
        )
    if [v[0] for v in versions] != [head_revision()]:
        problems.append(f"round {round_no}: version table holds {versions}")
    if mode != "wal":
        problems.append(f"round {round_no}: journal_mode is {mode}")
    return problems


def _last_error_line(tb: str) -> str:
    """``sqlalchemy.exc.OperationalError: ... database is locked`` out of a traceback."""
    lines = [ln for ln in tb.splitlines() if re.match(r"[A-Za-z_][\w.]*(Error|Exception)\b", ln)]
    return lines[-1] if lines else tb


@pytest.mark.slow
def test_many_processes_migrate_and_write_one_fresh_sqlite_file_at_once(
    tmp_path: Path,
) -> None:
    ctx = multiprocessing.get_context("spawn")
    tasks = ctx.Queue()
    results = ctx.Queue()
    barrier = ctx.Barrier(WORKERS)
    procs = [
        ctx.Process(target=_worker_main, args=(i, tasks, results, barrier), daemon=True)
        for i in range(WORKERS)
    ]
    for p in procs:
        p.start()
    errors: list[str] = []
    problems: list[str] = []
    rounds_with_errors = 0
    try:
        for round_no in range(ROUNDS):
            url = f"sqlite:///{tmp_path / f'round{round_no:03d}.sqlite3'}"
            for _ in range(WORKERS):
                tasks.put((round_no, url))
            try:
                reports = [results.get(timeout=2 * BARRIER_TIMEOUT) for _ in range(WORKERS)]
            except queue.Empty:
                pytest.fail(f"round {round_no}: a worker hung; errors so far: {errors[:3]}")
            assert sorted(r["worker"] for r in reports) == list(range(WORKERS))
            assert {r["round"] for r in reports} == {round_no}
            round_errors = [e for r in reports for e in r["errors"]]
            if round_errors:
                rounds_with_errors += 1
                errors.extend(round_errors)
                if any("BrokenBarrierError" in e for e in round_errors):
                    break  # a worker died; the rest cannot go on together
                continue
            won = [row_id for r in reports for row_id in r["won"]]
            all_ids = {_row_id(round_no, w, n) for w in range(WORKERS) for n in range(OWN_ROWS)}
            if sorted(won) != sorted(all_ids):
                problems.append(f"round {round_no}: compare-and-set winners {sorted(won)}")
            problems.extend(_check_file(url, round_no))
    finally:
        for _ in procs:
            tasks.put(None)
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    # A worker's own failure (a lock error, say) makes the others miss its rows: show the
    # causes first, then the knock-on check failures.
    errors.sort(key=lambda e: "AssertionError: worker" in e)
    kinds = Counter(_last_error_line(e) for e in errors)
    assert not errors, (
        f"{rounds_with_errors} of {ROUNDS} rounds had errors: {dict(kinds.most_common(5))}; "
        f"first:\n{errors[0]}"
    )
    assert not problems, problems
    assert [p.exitcode for p in procs] == [0] * WORKERS


# -- the locks themselves, one process ----------------------------------------------------
def _write_lock_is_free(path: Path) -> bool:
    """Whether another connection could take the write lock right now (it does not wait)."""
    raw = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        raw.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        assert exc.sqlite_errorcode == sqlite3.SQLITE_BUSY, exc
        return False
    else:
        raw.execute("ROLLBACK")
        return True
    finally:
        raw.close()


def _store_with_one_row(path: Path) -> tuple[JobStore, str]:
    store = JobStore(make_engine(f"sqlite:///{path}"))
    store.create_schema()
    row = store.insert_values(
        request={"prompt": "p"}, model_requested=None, model_effective="wan2.2"
    )
    store.insert_many([row])
    return store, str(row["id"])


def test_a_read_takes_no_write_lock_and_a_write_takes_it_at_begin(tmp_path: Path) -> None:
    path = tmp_path / "locks.sqlite3"
    store, job_id = _store_with_one_row(path)
    try:
        with store.engine.connect() as conn:
            assert conn.execute(select(JobRow.status)).scalar_one() == "queued"
            assert conn.in_transaction()
            assert _write_lock_is_free(path)  # a read in its transaction: no write lock
        with write_transaction(store.engine) as conn:
            assert not _write_lock_is_free(path)  # taken by BEGIN, before any statement
            conn.execute(update(JobRow).values(status="submitting"))
            # A read meanwhile neither waits for the writer nor sees its uncommitted row.
            record = store.get(job_id)
            assert record is not None and record.status is JobStatus.QUEUED
        record = store.get(job_id)
        assert record is not None and record.status is JobStatus.SUBMITTING
        assert _write_lock_is_free(path)
    finally:
        store.engine.dispose()


def test_why_writes_begin_immediate_a_read_then_write_cannot_wait(tmp_path: Path) -> None:
    """SQLite's WAL caveat: a transaction that read and then writes after another writer
    committed fails at once with SQLITE_BUSY_SNAPSHOT; busy_timeout does not help."""
    path = tmp_path / "snapshot.sqlite3"
    store, job_id = _store_with_one_row(path)
    try:
        with store.engine.connect() as conn:  # deferred, as every plain read is
            conn.execute(select(JobRow.status)).all()
            assert store.transition(job_id, JobStatus.SUBMITTING)  # another writer commits
            with pytest.raises(OperationalError) as caught:
                conn.execute(update(JobRow).values(error="stale"))
            assert caught.value.orig.sqlite_errorcode == sqlite3.SQLITE_BUSY_SNAPSHOT
        # The same read-then-write inside write_transaction holds the lock throughout.
        with write_transaction(store.engine) as conn:
            assert conn.execute(select(JobRow.status)).scalar_one() == "submitting"
            assert store.get(job_id) is not None  # reads go on meanwhile
            conn.execute(update(JobRow).values(error="fresh"))
        record = store.get(job_id)
        assert record is not None and record.error == "fresh"
    finally:
        store.engine.dispose()


def test_switching_a_file_to_wal_waits_for_a_writer_of_the_old_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race of a fresh file, made deterministic: the first connection's ``PRAGMA
    journal_mode=WAL`` meets another connection's write lock. SQLite answers "database is
    locked" at once (the busy handler is not asked); the engine retries until it is free."""
    path = tmp_path / "switch.sqlite3"
    holder = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE other (x INTEGER)")  # a rollback-journal file
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO other VALUES (1)")
    retrying = threading.Event()
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        retrying.set()  # the engine found the lock taken and is waiting for it
        real_sleep(seconds)

    def release_once_retrying() -> None:
        retrying.wait(timeout=BARRIER_TIMEOUT)
        holder.execute("COMMIT")

    monkeypatch.setattr(time, "sleep", sleep)
    releaser = threading.Thread(target=release_once_retrying)
    releaser.start()
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("SELECT x FROM other").scalars().all() == [1]
        assert retrying.is_set()
    finally:
        retrying.set()
        releaser.join()
        engine.dispose()
        holder.close()
