"""The documented answer shapes, byte for byte, and the error/fault answers around them.

Every JSON answer the API routes send is built here, so the quirks live in one place: integer
top-level ``id`` vs string ``meta.id``, fetch-processing with ``output: ""`` and no ``id``,
the failed shape with ``id: ""``, errors as HTTP codes or as 200 (``error_as_200``), the
legacy ``messege`` spelling, proxy-style HTML 5xx pages, JSON cut off midway, and the
200 HTML page a ``bad_link`` output serves instead of its video.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

SUBMIT_TIP = "Your image is processing in background, you can get this image using fetch API"
SUBMIT_MESSAGE = "Try to fetch request after seconds estimated"
FETCH_TIP = (
    "Get 20x faster image generation using enterprise plan. Click here : "
    "https://modelslab.com/enterprise"
)
FAILED = {"status": "failed", "id": "", "message": "Failed, Try Again", "output": ""}
SPAM_TIPS = (
    "you are sending same request multiple times, spam filter is enabled, "
    "please wait for 30 seconds..."
)

_HTML_5XX = {
    500: "500 Internal Server Error",
    502: "502 Bad Gateway",
    503: "503 Service Temporarily Unavailable",
}


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(obj: Any, status_code: int = 200, *, truncate: bool = False) -> Response:
    body = dumps(obj)
    if truncate:
        body = body[: max(1, len(body) // 2)]  # still application/json, no longer JSON
    return Response(body, status_code=status_code, media_type="application/json")


def html_5xx(code: int) -> Response:
    title = _HTML_5XX[code]
    page = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    )
    return Response(page, status_code=code, media_type="text/html")


# What a bad_link output serves: a 200 HTML page (a CDN landing page), never the video.
BAD_LINK_PAGE = (
    "<!DOCTYPE html>\r\n<html>\r\n<head><title>ModelsLab</title></head>\r\n"
    "<body>\r\n<h1>This file is not available</h1>\r\n"
    "<p>Please check back later.</p>\r\n</body>\r\n</html>\r\n"
)


def bad_link_page() -> Response:
    return Response(BAD_LINK_PAGE, status_code=200, media_type="text/html")


def error_body(
    message: str | dict[str, list[str]], *, legacy_messege: bool, **extra: Any
) -> dict[str, Any]:
    return {"status": "error", ("messege" if legacy_messege else "message"): message, **extra}


def submit_processing(
    job_id: int, eta: int, fetch_url: str, meta: dict[str, Any], future_links: list[str]
) -> dict[str, Any]:
    return {
        "status": "processing",
        "tip": SUBMIT_TIP,
        "eta": eta,
        "message": SUBMIT_MESSAGE,
        "fetch_result": fetch_url,
        "id": job_id,
        "output": [],
        "meta": meta,
        "future_links": future_links,
    }


def submit_success(
    job_id: int,
    generation_time: float,
    output: list[str],
    proxy: list[str],
    meta: dict[str, Any],
    future_links: list[str],
) -> dict[str, Any]:
    return {
        "status": "success",
        "generationTime": generation_time,
        "id": job_id,
        "output": output,
        "proxy_links": proxy,
        "meta": meta,
        "future_links": future_links,
    }


def fetch_processing() -> dict[str, Any]:
    return {"status": "processing", "message": "try again later.", "output": "", "tip": FETCH_TIP}


def fetch_success(job_id: int, output: list[str], proxy: list[str]) -> dict[str, Any]:
    return {"status": "success", "id": job_id, "output": output, "proxy_links": proxy}


def webhook_success(
    job_id: int, output: list[str], generation_time: float, track_id: Any, meta: dict[str, Any]
) -> dict[str, Any]:
    return {
        "status": "success",
        "id": str(job_id),
        "output": output,
        "generationTime": generation_time,
        "track_id": track_id,
        "meta": meta,
    }


def webhook_failed(job_id: int, track_id: Any) -> dict[str, Any]:
    return {
        "status": "failed",
        "id": str(job_id),
        "message": "Processing failed: simulated generation failure",
        "track_id": track_id,
    }
