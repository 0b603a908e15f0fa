"""The HTML pages of `t2v web`: the list, one job, login; the retry and cancel forms.

Server-rendered Jinja2 with autoescape on (a prompt is user input: ``<script>`` shows as
text), no JavaScript. Every form carries the CSRF token (``auth.csrf_token``) and is
checked on POST (``auth.form_ok``); an action answers with a redirect back to the job
(303), so a reload never repeats it.

Handlers that read the database are plain ``def`` (Starlette runs them in its thread pool).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from producer import Producer
from t2v_core.errors import EnqueueError, JobNotFound, RequestInvalid, RetryRefused
from t2v_core.pages import CursorInvalid, JobFilter, list_page
from t2v_core.records import JobRecord
from t2v_core.states import JobStatus
from web import auth
from web.media import Media
from web.overview import Overview, overview
from web.timeline import human_seconds, render_time, timeline

TEMPLATES = Path(__file__).parent / "templates"
RETRYABLE = frozenset({JobStatus.PARKED, JobStatus.FAILED})


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(enabled_extensions=("html",), default=True),
    )
    env.filters["seconds"] = human_seconds
    return env


class Views:
    def __init__(
        self,
        producer: Producer,
        media: Media,
        *,
        redis: Any,
        slot_limit: int,
        page_size: int,
        token: str | None,
        counts_ttl: float = 0.0,
    ) -> None:
        self.producer = producer
        self.media = media
        self.redis = redis
        self.slot_limit = slot_limit
        self.page_size = page_size
        self.token = token
        self.env = environment()
        # The counts are one GROUP BY over the whole table: reused for ``counts_ttl`` s so a
        # busy list page does not run it on every request.
        self.counts_ttl = counts_ttl
        self._overview: tuple[float, Overview] | None = None

    def overview(self) -> Overview:
        cached = self._overview
        if cached is not None and time.monotonic() - cached[0] < self.counts_ttl:
            return cached[1]
        fresh = overview(self.producer.store, self.redis, self.slot_limit)
        self._overview = (time.monotonic(), fresh)
        return fresh

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        html = self.env.get_template(name).render(
            csrf=auth.csrf_token(request),
            auth_on=self.token is not None,
            now=datetime.now(UTC),
            **context,
        )
        return HTMLResponse(html, status_code=status)

    def unauthorized(self, request: Request) -> Response:
        return self.render(request, "login.html", status=401, failed=False)

    # -- pages --------------------------------------------------------------------------
    def index(self, request: Request) -> Response:
        q = request.query_params
        try:
            filters = JobFilter.of(
                q.getlist("state"), q.get("model"), q.get("q"), q.get("tenant"), q.getlist("label")
            )
        except RequestInvalid as exc:
            return self.render(request, "list.html", status=422, error=str(exc), **_blank())
        except ValueError:
            return self.render(request, "list.html", status=422, error="unknown state", **_blank())
        try:
            page = list_page(
                self.producer.store.engine, filters, cursor=q.get("cursor"), limit=self.page_size
            )
        except CursorInvalid as exc:
            return self.render(request, "list.html", status=422, error=str(exc), **_blank())
        rows = [self._row(r) for r in page.records]
        keep = [("state", s.value) for s in filters.states]
        given = (("model", filters.model), ("q", filters.prompt), ("tenant", filters.tenant))
        keep += [(k, v) for k, v in given if v]
        keep += [("label", f"{k}={v}") for k, v in filters.labels]
        older = "?" + urlencode([*keep, ("cursor", page.next_cursor)]) if page.next_cursor else None
        return self.render(
            request,
            "list.html",
            rows=rows,
            older=older,
            newest="?" + urlencode(keep),
            filters=filters,
            states=[s.value for s in JobStatus],
            overview=self.overview(),
            error=None,
        )

    def _row(self, record: JobRecord) -> dict[str, Any]:
        first = record.outputs[0] if record.outputs else None
        return {
            "id": record.id,
            "prompt": str(record.request.get("prompt", "")),
            "model_requested": record.model_requested,
            "model_effective": record.model_effective,
            "priority": record.priority,
            "tenant": record.tenant,
            "labels": sorted((record.labels or {}).items()),
            "status": record.status.value,
            "age": human_seconds((datetime.now(UTC) - record.created_at).total_seconds()),
            "render": human_seconds(render_time(record)),
            "poster": self.media.url_for(first.poster_uri) if first else None,
        }

    def job(self, request: Request) -> Response:
        record = self._load(request.path_params["job_id"])
        if record is None:
            return self.render(request, "missing.html", status=404)
        sent = {k: v for k, v in record.request.items() if k != "key"}
        outputs = [
            {
                "o": o,
                "url": self.media.url_for(o.storage_uri),
                "poster": self.media.url_for(o.poster_uri),
                "is_video": o.content_type.startswith("video/"),
            }
            for o in record.outputs
        ]
        return self.render(
            request,
            "job.html",
            r=record,
            outputs=outputs,
            request_json=json.dumps(sent, indent=2, sort_keys=True),
            steps=timeline(record),
            can_retry=record.status in RETRYABLE,
            can_cancel=not record.status.is_final,
            notice=request.query_params.get("notice"),
        )

    def _load(self, job_id: str) -> JobRecord | None:
        return self.producer.store.get(job_id) if len(job_id) <= 32 else None

    # -- actions ------------------------------------------------------------------------
    async def action(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        what = request.path_params["action"]
        if not await auth.form_ok(request):
            return Response("CSRF token missing or wrong", status_code=403)
        if what not in ("retry", "cancel"):
            return Response("not found", status_code=404)
        try:
            notice = await run_in_threadpool(self._act, job_id, what)
        except JobNotFound:
            return Response("not found", status_code=404)
        return RedirectResponse(f"/jobs/{job_id}?{urlencode({'notice': notice})}", 303)

    def _act(self, job_id: str, what: str) -> str:
        if what == "cancel":
            return "cancelled" if self.producer.cancel(job_id) else "already finished"
        try:
            self.producer.retry(job_id)
        except RetryRefused as exc:
            return f"retry refused: {exc}"
        except EnqueueError as exc:
            return f"retried; the broker did not take the message yet ({exc})"
        return "retried"

    # -- login --------------------------------------------------------------------------
    def login_form(self, request: Request) -> Response:
        return self.render(request, "login.html", failed=False)

    async def login(self, request: Request) -> Response:
        if not await auth.form_ok(request):
            return Response("CSRF token missing or wrong", status_code=403)
        form = await request.form()
        given = form.get("token")
        if self.token is None:
            return RedirectResponse("/", 303)
        if not auth.token_ok(given if isinstance(given, str) else None, self.token):
            return self.render(request, "login.html", status=401, failed=True)
        response = RedirectResponse("/", 303)
        response.set_cookie(
            auth.SESSION_COOKIE, auth.session_value(self.token), httponly=True, samesite="strict"
        )
        return response

    async def logout(self, request: Request) -> Response:
        if not await auth.form_ok(request):
            return Response("CSRF token missing or wrong", status_code=403)
        response = RedirectResponse("/login", 303)
        response.delete_cookie(auth.SESSION_COOKIE)
        return response

    def media_file(self, request: Request) -> Response:
        return self.media.response(request.path_params["key"])

    def routes(self) -> list[Route]:
        return [
            Route("/", self.index, methods=["GET"]),
            Route("/jobs/{job_id}", self.job, methods=["GET"]),
            Route("/jobs/{job_id}/{action}", self.action, methods=["POST"]),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/media/{key:path}", self.media_file, methods=["GET", "HEAD"]),
        ]


def _blank() -> dict[str, Any]:
    return {
        "rows": [],
        "older": None,
        "newest": "?",
        "filters": JobFilter(),
        "states": [s.value for s in JobStatus],
        "overview": None,
    }
