"""The HTTP face of the simulator: ModelsLab's routes, the generated files and ``/_sim/*``.

Order of checks on submit (each counted in ``/_sim/stats`` first): slow -> HTML 5xx ->
key (401) -> ``rate_limit_next`` (429) -> ``credits_exhausted`` (402) -> ``premium_required``
(403) -> validation (400) -> spam filter (429) -> queued-request limit (429) -> accepted. A
truncated-JSON fault hits 200 answers after the work is done (the job exists; the client
just cannot read its id). Fetch: slow -> HTML 5xx -> key (401) -> id (404 ``Request not
found``; also for another key's job) -> the job's documented shape.

The fetch path is the hot one (clients poll it): it must stay a dict lookup and a small
``json.dumps``. This module only routes and shapes; jobs, faults and rendering live elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from simulator import shapes
from simulator.config import SimConfig
from simulator.jobs import Engine
from simulator.validation import RequestInvalid, validate

log = logging.getLogger("simulator")
_MEDIA_TYPES = {"mp4": "video/mp4", "gif": "image/gif"}


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

    def _answer(self, obj: Any, status_code: int = 200) -> Response:
        truncate = status_code == 200 and self.faults.roll("truncated_json_share")
        if truncate:
            self.stats.inject("truncated_json")
        return shapes.json_response(obj, status_code, truncate=truncate)

    def _error(self, code: int, message: str | dict[str, list[str]], **extra: Any) -> Response:
        body = shapes.error_body(message, legacy_messege=bool(self.faults["legacy_messege"]),
                                 **extra)
        return self._answer(body, 200 if self.faults["error_as_200"] else code)

    def _rate_limited(self) -> Response:
        return self._error(429, "Rate limit exceeded. Maximum "
                           f"{self.engine.config.queue_limit} queued requests allowed.",
                           retry_after=int(self.faults["retry_after"]))

    # -- ModelsLab routes ---------------------------------------------------------------
    async def submit(self, request: Request) -> Response:
        body, key = await self._read(request)
        track_id = body.get("track_id") if isinstance(body, dict) else None
        self.stats.submits.count(key, track_id)
        faulted = await self._pre_faults()
        if faulted is not None:
            return faulted
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
            return self._rate_limited()
        job = await self.engine.submit(key, video, canonical)
        base = self.engine.base_url
        if job.status == "success":
            return self._answer(shapes.submit_success(
                job.id, job.generation_time, [job.output_url], [job.proxy_url], job.meta,
                [job.output_url]))
        return self._answer(shapes.submit_processing(
            job.id, job.eta, f"{base}/api/v6/video/fetch/{job.id}", job.meta, [job.output_url]))

    async def fetch(self, request: Request) -> Response:
        _body, key = await self._read(request)
        raw_id = request.path_params["id"]
        job = self.engine.jobs.get(int(raw_id)) if raw_id.isdigit() else None
        self.stats.fetches.count(key, job.track_id if job is not None else None)
        faulted = await self._pre_faults()
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
        if job is not None and (ext != job.request.output_type
                                or kind not in ("video_generations", "proxy")):
            job = None
        self.stats.downloads.count(job.key if job else None, job.track_id if job else None)
        if job is None or job.status != "success" or job.result is None:
            return PlainTextResponse("404 Not Found", status_code=404)
        if self.engine.link_blocked(job):
            self.stats.inject("link_404")
            return PlainTextResponse("404 Not Found", status_code=404)
        return FileResponse(job.result.path, media_type=_MEDIA_TYPES[ext],
                            filename=f"{token}.{ext}", content_disposition_type="inline")

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
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.engine = engine
    return app
