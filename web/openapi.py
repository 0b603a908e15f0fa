"""The OpenAPI 3.1 document of ``/api/v1/``, served at ``/api/v1/openapi.json``.

The request body is built from ``Text2VideoRequest``'s own JSON schema plus
``ENQUEUE_OPTIONS`` (``web.api``), so a field or an option added there shows here without
an edit. A test checks the document against the OpenAPI 3.1 rules and that it lists every
route the app serves under ``/api/v1/``.
"""

from __future__ import annotations

from typing import Any

from producer.request import Text2VideoRequest

REF = "#/components/schemas/{model}"


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _job(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}},
    }


ID_PARAM = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,32}$"},
}
COMMON = {"401": _error("T2V_WEB_TOKEN is set and no valid Bearer token was sent")}


def document(options: dict[str, dict[str, Any]]) -> dict[str, Any]:
    request_schema = Text2VideoRequest.model_json_schema(ref_template=REF)
    defs = request_schema.pop("$defs", {})
    create = {
        "allOf": [
            {"$ref": "#/components/schemas/Text2VideoRequest"},
            {"type": "object", "properties": dict(options)},
        ],
        "description": "The request's fields, and the enqueue options beside them.",
    }
    job = {
        "type": "object",
        "required": ["id", "status", "request", "model_effective", "created_at"],
        "properties": {
            "id": {"type": "string"},
            "status": {
                "type": "string",
                "enum": [
                    "queued",
                    "submitting",
                    "processing",
                    "downloading",
                    "succeeded",
                    "failed",
                    "cancelled",
                    "parked",
                ],
            },
            "request": {"type": "object"},
            "model_effective": {"type": "string"},
            "outputs": {"type": "array", "items": {"type": "object"}},
            "media": {"type": "array", "items": {"type": ["string", "null"]}},
            "error": {"type": ["string", "null"]},
            "error_kind": {"type": ["string", "null"]},
            "created_at": {"type": "string", "format": "date-time"},
        },
        "additionalProperties": True,
    }
    error = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string"},
            "fields": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "field": {"type": ["string", "null"]},
                        "value": {},
                        "reason": {"type": "string"},
                    },
                },
            },
        },
    }
    listing = {
        "type": "object",
        "required": ["jobs", "next_cursor"],
        "properties": {
            "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
            "next_cursor": {"type": ["string", "null"]},
        },
    }
    query = [
        {"name": "state", "in": "query", "schema": {"type": "string"}, "description": "repeat"},
        {"name": "model", "in": "query", "schema": {"type": "string"}},
        {"name": "prompt", "in": "query", "schema": {"type": "string"}},
        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
    ]
    action = {
        "200": _job("the job after the action"),
        "404": _error("no such job"),
        "409": _error("refused: the job is not in a state this action applies to"),
        **COMMON,
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "t2v-queue",
            "version": "1",
            "description": "Enqueue text-to-video jobs and read them: the API of `t2v web`.",
        },
        "paths": {
            "/api/v1/jobs": {
                "post": {
                    "operationId": "createJob",
                    "summary": "Enqueue a job (same validation as enqueue)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/CreateJob"}
                            }
                        },
                    },
                    "responses": {
                        "201": _job("enqueued (or the job an idempotency key already names)"),
                        "422": _error("a field was refused: `fields` names each one"),
                        "503": _error("the row is written but the broker did not take it"),
                        **COMMON,
                    },
                },
                "get": {
                    "operationId": "listJobs",
                    "summary": "Jobs newest first, one keyset page",
                    "parameters": query,
                    "responses": {
                        "200": {
                            "description": "a page",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/JobList"}
                                }
                            },
                        },
                        "422": _error("a bad state or cursor"),
                        **COMMON,
                    },
                },
            },
            "/api/v1/jobs/{job_id}": {
                "get": {
                    "operationId": "getJob",
                    "parameters": [ID_PARAM],
                    "responses": {"200": _job("the job"), "404": _error("no such job"), **COMMON},
                }
            },
            "/api/v1/jobs/{job_id}/cancel": {
                "post": {"operationId": "cancelJob", "parameters": [ID_PARAM], "responses": action}
            },
            "/api/v1/jobs/{job_id}/retry": {
                "post": {"operationId": "retryJob", "parameters": [ID_PARAM], "responses": action}
            },
            "/api/v1/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "responses": {"200": {"description": "this document"}, **COMMON},
                }
            },
        },
        "components": {
            "schemas": {
                **defs,
                "Text2VideoRequest": request_schema,
                "CreateJob": create,
                "Job": job,
                "JobList": listing,
                "Error": error,
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
    }
