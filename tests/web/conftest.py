"""Fixtures for `t2v web`: an app on a real Redis and a real database (SQLite or
PostgreSQL), local storage in a temp directory, and Debian's Chromium for the browser tests.

Chromium is Debian's (``/usr/bin/chromium``, installed by ``.ci/run``), launched by
Playwright through ``executable_path``: Playwright's own browser downloads are never used.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need

CHROMIUM = os.environ.get("T2V_TEST_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture
def web_env(redis_url: str, sqlite_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "T2V_BROKER_URL": redis_url,
        "T2V_DATABASE_URL": sqlite_url,
        "T2V_STORAGE_URL": str(tmp_path / "videos"),
    }


@pytest.fixture
def make_client(web_env: dict[str, str]) -> Iterator[Callable[..., Any]]:
    """``make_client(token=None, **env)``: a TestClient on a fresh app."""
    from starlette.testclient import TestClient

    from t2v_core.db import dispose_engines
    from web.app import create_app
    from web.settings import WebSettings

    clients: list[Any] = []

    def make(token: str | None = None, **env: str) -> Any:
        values = {k.removeprefix("T2V_").lower(): v for k, v in {**web_env, **env}.items()}
        settings = WebSettings(**values, web_token=token, _env_file=None)  # type: ignore[call-arg]
        client = TestClient(create_app(settings), base_url="http://127.0.0.1:8090")
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            client.app.state.producer.close()
            client.close()
        dispose_engines()


@pytest.fixture
def client(make_client: Callable[..., Any]) -> Any:
    return make_client()


@pytest.fixture(scope="session")
def chromium_path() -> str:
    need(
        shutil.which(CHROMIUM) is not None or Path(CHROMIUM).is_file(),
        f"{CHROMIUM} is missing (apt-get install -y chromium)",
    )
    return CHROMIUM


@pytest.fixture(scope="session")
def browser(chromium_path: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=chromium_path,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"],
        )
        try:
            yield b
        finally:
            b.close()


class RealRun:
    """A small real pipeline run and `t2v web` serving it (see ``real_run``)."""

    def __init__(self, pipe: Any, web: Any, ids: dict[str, str], env: dict[str, str]) -> None:
        self.pipe = pipe
        self.web = web
        self.url: str = web.url
        self.ids = ids
        self.env = env


XSS_PROMPT = "<script>window.pwned = 1</script> a cat & a <b>dog</b>"


@pytest.fixture(scope="module")
def real_run(
    redis_base: str, simulator: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RealRun]:
    """A real Celery worker, the simulator over HTTP, real Redis and SQLite, local storage;
    four small jobs (mp4s, a gif, a prompt with HTML) run to the end, and `t2v web` (the
    installed command's code, as its own process, the API key in its environment)
    serving them."""
    import redis

    from tests.conftest import TEST_API_KEY, SimControl, _db_numbers
    from tests.integration.pipeline import FAST, Pipeline
    from worker.devstack import processes

    tmp = tmp_path_factory.mktemp("web-run")
    redis_url = f"{redis_base}/{next(_db_numbers)}"
    redis.Redis.from_url(redis_url).flushdb()
    SimControl(simulator.url).reset()
    env = {
        "T2V_BROKER_URL": redis_url,
        "T2V_DATABASE_URL": f"sqlite:///{tmp / 't2v.sqlite3'}",
        "T2V_STORAGE_URL": str(tmp / "videos"),
        "T2V_MODELSLAB_API_KEY": TEST_API_KEY,
        "T2V_MODELSLAB_BASE_URL": f"{simulator.url}/api/v6",
        "T2V_DOWNLOAD_ALLOWED_HOSTS": "127.0.0.1,localhost",
        **FAST,
    }
    pipe = Pipeline(env, tmp / "logs")
    pipe.start_worker(concurrency=2)
    web = None
    try:
        small = {"num_frames": 16, "width": 128, "height": 128, "fps": 8}
        with pipe.as_application() as producer:
            ids = {
                "mp4": producer.enqueue({"prompt": "a red kite over a beach", **small}).id,
                "mp4b": producer.enqueue({"prompt": "a lighthouse in fog", **small}).id,
                "gif": producer.enqueue(
                    {"prompt": "a paper boat", "output_type": "gif", **small}
                ).id,
                "xss": producer.enqueue({"prompt": XSS_PROMPT, **small}).id,
            }
        pipe.wait_all(list(ids.values()), timeout=180)
        # The key stays in the server's environment on purpose (as when it shares the
        # workers' .env): the tests check that no page, header or log line shows it.
        web_env = {**env, "T2V_WEB_TOKEN": ""}
        web = processes.start_web(tmp / "logs", env=web_env)
        yield RealRun(pipe, web, ids, env)
    finally:
        if web is not None:
            web.stop()
        pipe.stop()
        redis.Redis.from_url(redis_url).flushdb()
