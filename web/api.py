"""``/api/v1/``: the JSON API for applications not written in Python.

    POST /api/v1/jobs               the request's fields + enqueue options → 201 the job
    GET  /api/v1/jobs               ?state=&model=&prompt=&cursor=&limit= → a keyset page
    GET  /api/v1/jobs/{id}          the job
    POST /api/v1/jobs/{id}/cancel   producer's cancel()
    POST /api/v1/jobs/{id}/retry    producer's retry()
    GET  /api/v1/openapi.json       the OpenAPI document

Handlers that touch the database run in Starlette's thread pool (plain ``def``).
Validation is ``enqueue``'s own: a refused field is a 422 whose ``fields`` name each one
(``RequestInvalid.field_errors``), nothing written. Only the options ``enqueue`` takes are
accepted (``ENQUEUE_OPTIONS``: one line each); any other key is a request field, and
``Text2VideoRequest`` refuses the unknown ones by name.

Never: echo the API key (no route here has it), or accept a body that is not a JSON object.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from producer import Producer
from producer.render import record_json
from t2v_core.errors import EnqueueError, JobNotFound, RequestInvalid, RetryRefused
from t2v_core.fairness import LABEL_VALUE_MAX, LABELS_MAX, PRIORITIES, TENANT_PATTERN
from t2v_core.pages import CursorInvalid, JobFilter, list_page
from t2v_core.records import JobRecord
from web.openapi import document

# The options of ``Producer.enqueue`` besides the request, with their JSON schema: the API
# takes exactly these from the body (adding an option to enqueue is one line here).
ENQUEUE_OPTIONS: dict[str, dict[str, Any]] = {
    "idempotency_key": {"type": "string", "maxLength": 255, "description": "one job per key"},
    "priority": {
        "type": "string",
        "enum": list(PRIORITIES),
        "description": "the class in the account's slot line (default normal)",
    },
    "tenant": {
        "type": "string",
        "pattern": TENANT_PATTERN.pattern,
        "description": "whose fair share of the slots the job uses (default: the shared one)",
    },
    "labels": {
        "type": "object",
        "maxProperties": LABELS_MAX,
        "additionalProperties": {"type": "string", "maxLength": LABEL_VALUE_MAX},
        "description": "the caller's string key/values, stored and filterable, never sent on",
    },
    "on_done": {
        "type": "string",
        "maxLength": 200,
        "description": "a Celery task of the application, sent [job_id, status] when the job ends",
    },
    "on_done_queue": {"type": "string", "maxLength": 200, "description": "the on_done queue"},
    "callback_url": {
        "type": "string",
        "format": "uri",
        "description": "an http(s) URL POSTed a signed JSON body when the job ends",
    },
}
MAX_BODY = 64 * 1024

MediaUrl = Callable[[str | None], str | None]


def job_json(record: JobRecord, media_url: MediaUrl) -> dict[str, Any]:
    data = record_json(record)
    data["request"] = {k: v for k, v in record.request.items() if k != "key"}
    data["media"] = [media_url(o.storage_uri) for o in record.outputs]
    return data


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _invalid(exc: RequestInvalid) -> JSONResponse:
    fields = [e.as_dict() for e in exc.field_errors]
    return _error(422, str(exc), fields=json.loads(json.dumps(fields, default=str)))


def split_options(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(request fields, enqueue options) from a POSTed body."""
    options = {k: body[k] for k in ENQUEUE_OPTIONS if k in body}
    fields = {k: v for k, v in body.items() if k not in ENQUEUE_OPTIONS}
    return fields, options


def routes(producer: Producer, media_url: MediaUrl, page_size: int) -> list[Route]:
    spec = document(ENQUEUE_OPTIONS)

    def load(job_id: str) -> JobRecord | None:
        return producer.store.get(job_id) if len(job_id) <= 32 else None

    async def create(request: Request) -> Response:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return _error(413, f"body over {MAX_BODY} bytes")
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            return _error(400, "body is not JSON")
        if not isinstance(body, dict):
            return _invalid(RequestInvalid.of(None, None, "the body must be a JSON object"))
        fields, options = split_options(body)
        try:
            job = await run_in_threadpool(producer.enqueue, fields, **options)
        except RequestInvalid as exc:
            return _invalid(exc)
        except EnqueueError as exc:
            return _error(503, str(exc), job_id=exc.job_id)
        record = await run_in_threadpool(producer.store.get, job.id)
        assert record is not None
        return JSONResponse(job_json(record, media_url), status_code=201)

    def listing(request: Request) -> Response:
        q = request.query_params
        try:
            filters = JobFilter.of(
                q.getlist("state"),
                q.get("model"),
                q.get("prompt"),
                q.get("tenant"),
                q.getlist("label"),
            )
        except RequestInvalid as exc:
            return _invalid(exc)
        except ValueError:
            return _error(422, "unknown state", fields=[{"field": "state", "reason": "unknown"}])
        try:
            limit = int(q.get("limit", page_size))
        except ValueError:
            return _error(422, "limit must be an integer", fields=[{"field": "limit"}])
        try:
            page = list_page(producer.store.engine, filters, cursor=q.get("cursor"), limit=limit)
        except CursorInvalid as exc:
            return _error(422, str(exc), fields=[{"field": "cursor", "reason": "not ours"}])
        return JSONResponse(
            {
                "jobs": [job_json(r, media_url) for r in page.records],
                "next_cursor": page.next_cursor,
            }
        )

    def one(request: Request) -> Response:
        record = load(request.path_params["job_id"])
        if record is None:
            return _error(404, "no such job")
        return JSONResponse(job_json(record, media_url))

    def cancel(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        if load(job_id) is None:
            return _error(404, "no such job")
        try:
            moved = producer.cancel(job_id)
        except JobNotFound:
            return _error(404, "no such job")
        record = load(job_id)
        assert record is not None
        if not moved:
            return _error(409, f"job is {record.status.value}: nothing to cancel")
        return JSONResponse(job_json(record, media_url))

    def retry(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        if load(job_id) is None:
            return _error(404, "no such job")
        try:
            producer.retry(job_id)
        except JobNotFound:
            return _error(404, "no such job")
        except RetryRefused as exc:
            return _error(409, str(exc))
        except EnqueueError as exc:
            return _error(503, str(exc))
        record = load(job_id)
        assert record is not None
        return JSONResponse(job_json(record, media_url))

    def openapi(_request: Request) -> Response:
        return JSONResponse(spec)

    return [
        Route("/api/v1/jobs", create, methods=["POST"]),
        Route("/api/v1/jobs", listing, methods=["GET"]),
        Route("/api/v1/jobs/{job_id}", one, methods=["GET"]),
        Route("/api/v1/jobs/{job_id}/cancel", cancel, methods=["POST"]),
        Route("/api/v1/jobs/{job_id}/retry", retry, methods=["POST"]),
        Route("/api/v1/openapi.json", openapi, methods=["GET"]),
    ]
