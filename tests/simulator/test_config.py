"""Start-up settings: flags over ``SIM_*`` over defaults, and a server configured by env only."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import simulator
from simulator.config import SimConfig, parse_config
from tests.simulator.simhelpers import Sim, SimProcess, start_simulator


def test_public_face() -> None:
    for name in simulator.__all__:
        assert getattr(simulator, name) is not None


def test_render_workers_do_not_load_the_web_stack() -> None:
    code = "import sys, simulator.render; print('starlette' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


async def _asgi_call(app: Any, method: str, path: str, body: bytes = b"") -> tuple[int, Any]:
    """One request straight into an ASGI app, no server and no client library."""
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "scheme": "http",
        "server": ("sim", 80),
        "client": ("127.0.0.1", 1),
        "root_path": "",
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(payload)


def test_create_app_in_process() -> None:
    config = SimConfig(keys=("k",), faults={"never_finish_share": 1.0})

    async def scenario() -> None:
        app = simulator.create_app(config)
        async with app.router.lifespan_context(app):
            assert await _asgi_call(app, "GET", "/_sim/health") == (200, {"ok": True})
            status, body = await _asgi_call(
                app, "POST", "/api/v6/video/text2video", b'{"key": "k", "prompt": "in process"}'
            )
            assert status == 200
            assert body["fetch_result"].startswith("http://127.0.0.1:8765/api/v6/video/fetch/")

    asyncio.run(scenario())


def test_defaults() -> None:
    config = parse_config([], {})
    assert config == SimConfig()
    assert config.keys == ("sim-key",) and config.port == 8765 and config.queue_limit == 5
    assert config.base_url() == "http://127.0.0.1:8765"


def test_flags_win_over_env() -> None:
    env = {
        "SIM_KEYS": "a,b",
        "SIM_RENDER_MEAN": "2.5",
        "SIM_PORT": "9000",
        "SIM_FAULTS": '{"http_500_share": 0.2}',
        "SIM_PUBLIC_URL": "http://sim.local/",
    }
    config = parse_config(["--port", "9100", "--eta-noise", "0.3"], env)
    assert config.keys == ("a", "b") and config.render_mean == 2.5
    assert config.port == 9100 and config.eta_noise == 0.3
    assert config.faults == {"http_500_share": 0.2}
    assert config.base_url() == "http://sim.local"


@pytest.mark.parametrize(
    "argv",
    [
        ["--faults", '{"nope": 1}'],
        ["--faults", "[1]"],
        ["--instant-share", "2"],
        ["--queue-limit", "0"],
    ],
)
def test_bad_settings_exit(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_config(argv, {})


@pytest.fixture(scope="module")
def env_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    server = start_simulator(
        tmp_path_factory.mktemp("sim-env"),
        env={
            "SIM_KEYS": "env-key",
            "SIM_INSTANT_SHARE": "1",
            "SIM_RENDER_MEAN": "0.1",
            "SIM_SEED": "11",
            "SIM_FAULTS": '{"webhook_deliveries": 2, "retry_after": 7}',
            "SIM_QUEUE_LIMIT": "1",
        },
    )
    try:
        yield server
    finally:
        server.stop()


def test_env_configured_server_answers_done_at_once(env_server: SimProcess, tmp_path: Path) -> None:
    sim = Sim(env_server.url, key="env-key")
    assert sim.submit(key="sim-key").status_code == 401  # default key replaced by SIM_KEYS
    r = sim.submit(num_frames=2, width=32, height=32, output_type="mp4", track_id="now")
    body = r.json()
    assert list(body) == [
        "status",
        "generationTime",
        "id",
        "output",
        "proxy_links",
        "meta",
        "future_links",
    ]
    assert body["status"] == "success" and isinstance(body["id"], int)
    assert body["meta"]["id"] == str(body["id"])
    assert body["output"] == body["future_links"]
    assert isinstance(body["generationTime"], float | int)
    assert sim.http.get(body["output"][0], timeout=5).status_code == 200
    faults = sim.http.get(f"{sim.url}/_sim/faults", timeout=5).json()
    assert faults["webhook_deliveries"] == 2 and faults["retry_after"] == 7
    # instant jobs never occupy a queue slot, even with SIM_QUEUE_LIMIT=1
    assert sim.submit(track_id="again").json()["status"] == "success"
