"""The system through PgBouncer in transaction mode: a real pipeline whose worker (and
producer) reach PostgreSQL only through PgBouncer, ``T2V_DB_PGBOUNCER=true`` (no
server-side prepared statements) and a small per-process pool."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from t2v_core.states import JobStatus
from tests.conftest import PG_ADMIN_URL, SimControl, need
from tests.integration.pipeline import Pipeline, enqueue_small
from tests.integration.test_pipeline import make_env
from worker.devstack import processes

pytestmark = pytest.mark.slow


@pytest.fixture
def pgbouncer_url(pg_available: bool) -> Iterator[str]:
    """A private PgBouncer (pool_mode=transaction) in front of a fresh database."""
    need(pg_available, f"PostgreSQL not reachable at {PG_ADMIN_URL}")
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    need(os.path.exists(binary), "pgbouncer is not installed (apt-get install pgbouncer)")
    admin_url = make_url(PG_ADMIN_URL)
    dbname = "t2v_pgb_" + uuid.uuid4().hex[:10]
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{dbname}"'))
    # Its own directory outside pytest's (0700) tree: pgbouncer runs as `postgres`.
    run = Path(tempfile.mkdtemp(prefix="t2v-pgb-"))
    run.chmod(0o755)
    port = processes.free_port()
    user = admin_url.username or "postgres"
    (run / "users.txt").write_text(f'"{user}" ""\n')
    (run / "pgb.ini").write_text(
        f"[databases]\n{dbname} = host={admin_url.host or '127.0.0.1'}"
        f" port={admin_url.port or 5432} dbname={dbname} user={user}\n"
        "[pgbouncer]\nlisten_addr = 127.0.0.1\n"
        f"listen_port = {port}\nauth_type = trust\nauth_file = {run / 'users.txt'}\n"
        f"pool_mode = transaction\nmax_client_conn = 200\ndefault_pool_size = 4\n"
        f"pidfile = {run / 'pgb.pid'}\nlogfile = {run / 'pgb.log'}\n"
        f"unix_socket_dir = {run}\n"
    )
    argv = [binary, "-d", str(run / "pgb.ini")]
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
        shutil.chown(run, "postgres")
        for f in run.iterdir():
            shutil.chown(f, "postgres")
        argv = ["runuser", "-u", "postgres", "--", *argv]
    try:
        subprocess.run(argv, check=True, timeout=30)
        processes.wait_for_port("127.0.0.1", port, timeout=30)
        yield f"postgresql+psycopg://{user}@127.0.0.1:{port}/{dbname}"
    finally:
        pidfile = run / "pgb.pid"
        if pidfile.exists():
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
        shutil.rmtree(run, ignore_errors=True)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
        admin.dispose()


def test_pipeline_through_pgbouncer_transaction_mode(
    redis_url: str, pgbouncer_url: str, sim: SimControl, tmp_path: Path
) -> None:
    pool = {"T2V_DB_PGBOUNCER": "true", "T2V_DB_POOL_SIZE": "2", "T2V_DB_MAX_OVERFLOW": "1"}
    env = make_env(redis_url, pgbouncer_url, sim, {"T2V_STORAGE_URL": str(tmp_path / "v"), **pool})
    pipe = Pipeline(env, tmp_path / "logs")
    pipe.start_worker()
    try:
        ids = enqueue_small(pipe, 8, "pgbouncer")
        records = pipe.wait_all(ids, timeout=120)
    finally:
        pipe.stop()
    assert [r.status for r in records] == [JobStatus.SUCCEEDED] * 8, [r.error for r in records]
    # Every statement went through PgBouncer: none of the server-side prepared statements
    # that transaction mode breaks ("prepared statement ... does not exist").
    assert "prepared statement" not in pipe.worker_log()
