"""The `t2v web` app and command: the results page and the JSON API on one server.

``create_app`` wires the pieces (a ``Producer`` for reads and actions, the storage for
media, Redis for the account's slots) and is what tests hand to Starlette's TestClient;
``main`` is the ``t2v web`` command (registered under ``t2v.commands`` in pyproject).

Safe by default: it binds 127.0.0.1; any other host is refused unless ``T2V_WEB_TOKEN`` is
set. The server never holds the ModelsLab API key: ``WebSettings`` extends the shared
``Settings`` (which have none), and the worker's settings are never read here.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from producer import Producer
from web.api import routes as api_routes
from web.auth import Guard
from web.media import Media
from web.settings import WebSettings
from web.views import Views

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8090
STATIC = Path(__file__).parent / "static"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _redis(url: str) -> Any:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    import redis

    return redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)


def _storage(settings: WebSettings) -> Any:
    from worker.storage import storage_from_url

    return storage_from_url(settings.storage_url, s3_endpoint_url=settings.s3_endpoint_url)


def create_app(
    settings: WebSettings | None = None,
    *,
    producer: Producer | None = None,
    storage: Any = None,
    redis: Any = None,
) -> Starlette:
    """The app for ``settings`` (from the environment when None)."""
    settings = settings or WebSettings()
    producer = producer or Producer(settings)
    producer._ready()  # the schema, once, before the first request
    media = Media(storage if storage is not None else _storage(settings))
    views = Views(
        producer,
        media,
        redis=redis if redis is not None else _redis(settings.broker_url),
        slot_limit=settings.account_slots,
        page_size=settings.web_page_size,
        token=settings.token,
        counts_ttl=settings.web_counts_ttl,
    )

    def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            *views.routes(),
            *api_routes(producer, media.url_for, settings.web_page_size),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
    )
    app.add_middleware(Guard, token=settings.token, unauthorized=views.unauthorized)
    app.state.producer = producer
    return app


def main(argv: Sequence[str] | None = None) -> int:
    """The results page and JSON API (`t2v web [--host 127.0.0.1] [--port 8090]`)."""
    parser = argparse.ArgumentParser(
        prog="t2v web",
        description="The results page (posters, players, timelines) and the JSON API under"
        " /api/v1/. Beyond loopback it needs T2V_WEB_TOKEN.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (8090)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(list(argv or []))
    settings = WebSettings()
    if not is_loopback(args.host) and settings.token is None:
        print(
            f"t2v web: refusing to listen on {args.host} without auth: set T2V_WEB_TOKEN"
            " (or bind 127.0.0.1)",
            file=sys.stderr,
        )
        return 2
    import uvicorn

    app = create_app(settings)
    auth = "token auth on" if settings.token else "no auth (loopback only)"
    print(f"t2v web: http://{args.host}:{args.port}/  ({auth})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
