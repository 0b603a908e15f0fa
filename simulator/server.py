"""Runs the app under uvicorn: binds first (so ``--port 0`` works), then announces itself.

The line ``simulator listening on http://HOST:PORT`` is printed (and flushed) once the server
accepts connections; parent processes wait for it.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import sys
from collections.abc import Sequence

import uvicorn

from simulator.app import create_app
from simulator.config import SimConfig, parse_config


class _AnnouncingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, announce: str) -> None:
        super().__init__(config)
        self._announce = announce

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if not self.should_exit:
            print(self._announce, flush=True)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(config: SimConfig) -> int:
    try:
        sock = _bind(config.host, config.port)
    except OSError as exc:
        print(f"simulator: cannot bind {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 2
    port = int(sock.getsockname()[1])
    config = dataclasses.replace(config, port=port)
    app = create_app(config)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    uv_config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=config.access_log,
        lifespan="on",
        loop="auto",
        http="auto",
        timeout_keep_alive=30,
    )
    host = f"[{config.host}]" if ":" in config.host else config.host
    server = _AnnouncingServer(uv_config, f"simulator listening on http://{host}:{port}")
    server.run(sockets=[sock])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags/env and serve until SIGINT/SIGTERM; the exit code."""
    return serve(parse_config(argv))
