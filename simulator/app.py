"""The HTTP face of the simulator: ModelsLab's routes, the generated files and ``/_sim/*``.

Order of checks on submit (each counted in ``/_sim/stats`` first): slow -> HTML 5xx ->
``lost_before_create`` (connection reset, no job) -> key (401) -> ``rate_limit_next`` (429) ->
``credits_exhausted`` (402) -> ``premium_required`` (403) -> validation (400) -> spam filter
(429) -> queued-request limit (429; ``external_holders`` take slots of it) -> accepted: the
job is created (and counted in ``created``), then ``lost_after_create`` may lose its answer:
``cut`` (a 200 whose JSON is cut in half), ``slow`` (the full answer after
``lost_slow_seconds``) or ``reset`` (the TCP connection reset, no HTTP answer at all). A
truncated-JSON fault hits the other 200 answers after the work is done (the job exists; the
client just cannot read its id). Fetch: slow -> HTML 5xx -> ``fetch_5xx_share`` (HTML 5xx)
-> ``fetch_401_share`` (401 ``Invalid API key``) -> key (401) -> id (404 ``Request not
found``; also for another key's job) -> the job's documented shape. Files: unknown or not
yet successful -> 404, ``link_404_seconds`` -> 404, ``bad_link`` -> a 200 HTML page (for
ever), else the video.

A connection reset needs the server's transport: ``SimApp`` keeps the server's own ``send``
in the scope, and under uvicorn that is a bound method of the request cycle, which holds the
transport. The socket gets ``SO_LINGER`` 0, so closing it sends a TCP RST.

The fetch path is the hot one (clients poll it): it must stay a dict lookup and a small
``json.dumps``. This module only routes and shapes; jobs, faults and rendering live elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from simulator import shapes
from simulator.config import SimConfig
from simulator.jobs import Engine
from simulator.validation import RequestInvalid, validate

log = logging.getLogger("simulator")
_MEDIA_TYPES = {"mp4": "video/mp4", "gif": "image/gif"}
_SERVER_SEND = "t2v_sim.server_send"  # scope key: the ASGI server's own send callable
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


class ConnectionDropped(RuntimeError):
    """Raised where no server transport can be reached to reset (e.g. an in-process call)."""


class SimApp(Starlette):
    """Starlette that remembers the server's ``send`` so a handler can reset the connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[_SERVER_SEND] = send
        await super().__call__(scope, receive, send)


class _Dropped(Response):
    """No answer at all: reset the TCP connection, then wait until the server has seen it."""

    def __init__(self) -> None:
        super().__init__(b"")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cycle: Any = getattr(scope.get(_SERVER_SEND), "__self__", None)
        transport = getattr(cycle, "transport", None)
        if transport is None or not hasattr(cycle, "disconnected"):
            raise ConnectionDropped("simulated connection reset (no server transport here)")
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        transport.abort()
        for turn in range(1000):  # connection_lost runs on a later loop turn
            if cycle.disconnected:
                return
            await asyncio.sleep(0.001 if turn else 0)


class Api:
    """Route handlers bound to one ``Engine``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.faults = engine.faults
        self.stats = engine.stats

    # -- helpers ------------------------------------------------------------------------
    @staticmethod
    async def _read(request: Request) -> tuple[Any, str | None]:
        """The JSON body (None if unreadable) and the key from the body or ``key`` header."""
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        key = body.get("key") if isinstance(body, dict) else None
        if not isinstance(key, str) or not key:
            key = request.headers.get("key")
        return body, key

    async def _pre_faults(self) -> Response | None:
        """Faults that hit an API answer before the application sees the request."""
        if self.faults.roll("slow_share"):
            self.stats.inject("slow")
            await asyncio.sleep(float(self.faults["slow_seconds"]))
        if self.faults.roll("http_500_share"):
            self.stats.inject("http_500")
            return shapes.html_5xx(self.faults.rng.choice((500, 502, 503)))
        return None

    def _fetch_faults(self) -> Response | None:
        """Faults of a proxy in front of fetch only: HTML 5xx, then 401 ``Invalid API key``."""
        if self.faults.roll("fetch_5xx_share"):
            self.stats.inject("fetch_5xx")
            return shapes.html_5xx(self.faults.rng.choice((500, 502, 503)))
        if self.faults.roll("fetch_401_share"):
            self.stats.inject("fetch_401")
            return shapes.json_response(
                shapes.error_body(
                    "Invalid API key", legacy_messege=bool(self.faults["legacy_messege"])
                ),
                401,
            )
        return None

    def _answer(self, obj: Any, status_code: int = 200) -> Response:
        truncate = status_code == 200 and self.faults.roll("truncated_json_share")
        if truncate:
            self.stats.inject("truncated_json")
        return shapes.json_response(obj, status_code, truncate=truncate)

    def _error(self, code: int, message: str | dict[str, list[str]], **extra: Any) -> Response:
        body = shapes.error_body(
            message, legacy_messege=bool(self.faults["legacy_messege"]), **extra
        )
        return self._answer(body, 200 if self.faults["error_as_200"] else code)

    def _rate_limited(self) -> Response:
        return self._error(
            429,
            "Rate limit exceeded. Maximum "
            f"{self.engine.config.queue_limit} queued requests allowed.",
            retry_after=int(self.faults["retry_after"]),
        )

    # -- ModelsLab routes ---------------------------------------------------------------
    async def submit(self, request: Request) -> Response:
        body, key = await self._read(request)
        track_id = body.get("track_id") if isinstance(body, dict) else None
        self.stats.submits.count(key, track_id)
        faulted = await self._pre_faults()
        if faulted is not None:
            return faulted
        if self.faults.roll("lost_before_create_share"):
            self.stats.lost_before(key, track_id)
            return _Dropped()
        if key not in self.engine.keys:
            return self._error(401, "Invalid API key")
        assert key is not None
        if self.faults.take_rate_limit():
            self.stats.inject("rate_limited")
            return self._rate_limited()
        if self.faults["credits_exhausted"]:
            self.stats.inject("credits_exhausted")
            return self._error(402, "Insufficient credits. Please add more credits to continue.")
        if self.faults["premium_required"]:
            self.stats.inject("premium_required")
            return self._error(403, "This feature requires a premium subscription")
        if not isinstance(body, dict):
            return self._error(400, "The request body must be a JSON object.")
        try:
            video = validate(body)
        except RequestInvalid as exc:
            return self._error(400, exc.message)
        canonical = json.dumps({**body, "key": key}, sort_keys=True, separators=(",", ":"))
        if self.engine.is_spam(canonical):
            self.stats.inject("spam_filtered")
            return self._error(429, "Rate limit exceeded", tips=shapes.SPAM_TIPS)
        if self.engine.queue_full(key):
            self.stats.inject("queue_limited")
            if self.engine.processing[key] < self.engine.config.queue_limit:
                self.stats.inject("queue_limited_external")
            return self._rate_limited()
        job = await self.engine.submit(key, video, canonical)
        self.stats.bodies.append({k: v for k, v in body.items() if k != "key"})
        base = self.engine.base_url
        if job.status == "success":
            answer = shapes.submit_success(
                job.id,
                job.generation_time,
                [job.output_url],
                [job.proxy_url],
                job.meta,
                [job.output_url],
            )
        else:
            answer = shapes.submit_processing(
                job.id, job.eta, f"{base}/api/v6/video/fetch/{job.id}", job.meta, [job.output_url]
            )
        lost = self.faults.lost_after_create()
        if lost is None:
            return self._answer(answer)
        job.answer_lost = lost
        self.stats.lost_after(key, track_id, lost)
        if lost == "reset":
            return _Dropped()
        if lost == "slow":  # the job runs meanwhile; the client has long given up
            await asyncio.sleep(float(self.faults["lost_slow_seconds"]))
        return shapes.json_response(answer, truncate=lost == "cut")

    async def fetch(self, request: Request) -> Response:
        _body, key = await self._read(request)
        raw_id = request.path_params["id"]
        job = self.engine.jobs.get(int(raw_id)) if raw_id.isdigit() else None
        self.stats.fetches.count(key, job.track_id if job is not None else None)
        faulted = await self._pre_faults()
        if faulted is None:
            faulted = self._fetch_faults()
        if faulted is not None:
            return faulted
        if key not in self.engine.keys:
            return self._error(401, "Invalid API key")
        if job is None or job.key != key:
            return self._error(404, "Request not found")
        if job.status == "success":
            return self._answer(shapes.fetch_success(job.id, [job.output_url], [job.proxy_url]))
        if job.status == "failed":
            return self._answer(dict(shapes.FAILED))
        return self._answer(shapes.fetch_processing())

    async def file(self, request: Request) -> Response:
        name = request.path_params["name"]
        token, _, ext = name.partition(".")
        job = self.engine.files.get(token)
        kind = request.path_params["kind"]
        if job is not None and (
            ext != job.request.output_type or kind not in ("video_generations", "proxy")
        ):
            job = None
        self.stats.downloads.count(job.key if job else None, job.track_id if job else None)
        if job is None or job.status != "success" or job.result is None:
            return PlainTextResponse("404 Not Found", status_code=404)
        if self.engine.link_blocked(job):
            self.stats.inject("link_404")
            return PlainTextResponse("404 Not Found", status_code=404)
        if job.bad_link:  # forever: the link answers, but never with the video
            self.stats.inject("bad_link")
            return shapes.bad_link_page()
        return FileResponse(
            job.result.path,
            media_type=_MEDIA_TYPES[ext],
            filename=f"{token}.{ext}",
            content_disposition_type="inline",
        )

    # -- /_sim admin ----------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def stats_route(self, request: Request) -> Response:
        return JSONResponse(self.stats.snapshot(self.engine.jobs_snapshot()))

    async def faults_route(self, request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(dict(self.faults.current))
        try:
            return JSONResponse(self.faults.update(json.loads(await request.body() or b"{}")))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    async def reset(self, request: Request) -> Response:
        self.engine.reset()
        return JSONResponse({"ok": True, "faults": dict(self.faults.current)})


def create_app(config: SimConfig | None = None, *, base_url: str | None = None) -> Starlette:
    """The simulator as an ASGI app; the render pool starts with the app's lifespan."""
    config = config or SimConfig()
    engine = Engine(config, base_url or config.base_url())
    api = Api(engine)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        engine.pool.start()
        try:
            yield
        finally:
            engine.close()

    routes = [
        Route("/api/v6/video/text2video", api.submit, methods=["POST"]),
        Route("/api/v6/video/fetch/{id}", api.fetch, methods=["POST"]),
        Route("/files/{kind:str}/{name:str}", api.file, methods=["GET", "HEAD"]),
        Route("/_sim/health", api.health, methods=["GET"]),
        Route("/_sim/stats", api.stats_route, methods=["GET"]),
        Route("/_sim/faults", api.faults_route, methods=["GET", "POST"]),
        Route("/_sim/reset", api.reset, methods=["POST"]),
    ]
    app = SimApp(routes=routes, lifespan=lifespan)
    app.state.engine = engine
    return app
