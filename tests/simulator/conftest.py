"""Fixtures: one real ``python -m simulator`` per session, reset around every test.

The server starts on port 0 and announces its real port on stdout; ``simhelpers`` waits for
that line and for ``/_sim/health``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.simulator.simhelpers import (
    KEY,
    OTHER_KEY,
    SEED_SAMPLE_KEY,
    Receiver,
    Sim,
    SimProcess,
    start_simulator,
)


@pytest.fixture(scope="session")
def sim_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    server = start_simulator(
        tmp_path_factory.mktemp("sim"),
        [
            "--keys",
            f"{KEY},{OTHER_KEY},{SEED_SAMPLE_KEY}",
            "--seed",
            "3",
            "--render-mean",
            "0.2",
            "--render-spread",
            "0.3",
            "--queue-limit",
            "5",
        ],
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sim(sim_server: SimProcess) -> Iterator[Sim]:
    """The session's simulator, reset before and after this test."""
    client = Sim(sim_server.url)
    client.reset()
    try:
        yield client
    finally:
        client.reset()
        client.http.close()


@pytest.fixture
def webhook_receiver() -> Iterator[Receiver]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length", 0))
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Receiver(f"http://127.0.0.1:{server.server_port}/hook?secret=s3", received)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
