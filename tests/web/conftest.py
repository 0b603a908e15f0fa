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
