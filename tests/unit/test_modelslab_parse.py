"""Every response shape in shared/modelslab-api.md, through the pure parser and the client."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from t2v_core.errors import PermanentError, RateLimited, TransientError
from tests.loopback_http import serving
from worker.modelslab import (
    ModelsLabClient,
    ProviderResult,
    ProviderStatus,
    SubmitOutcomeUnknown,
    flatten_message,
    parse_response,
)

KEY = "sk-live-SECRET-0123456789abcdef"
JSON = "application/json"


def parse(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> ProviderResult:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_response(status, raw, JSON, headers, secret=KEY, now=1_700_000_000.0)


# -- success and processing ------------------------------------------------------------


def test_submit_processing_int_id_eta_future_links() -> None:
    r = parse(
        {
            "status": "processing",
            "tip": "Your image is processing in background, you can get this image using fetch API",
            "eta": 960,
            "message": "Try to fetch request after seconds estimated",
            "fetch_result": "https://modelslab.com/api/v6/video/fetch/134799477",
            "id": 134799477,
            "output": [],
            "meta": {"id": "134799477", "track_id": "300", "webhook": "https://x"},
            "future_links": ["https://pub-1.r2.dev/video_generations/a.gif"],
        }
    )
    assert r.status is ProviderStatus.PROCESSING
    assert r.provider_id == "134799477"
    assert r.eta == 960.0
    assert r.outputs == []
    assert r.future_links == ["https://pub-1.r2.dev/video_generations/a.gif"]
    assert r.track_id == "300"
    assert r.raw_status == "processing"
    assert not r.is_final


def test_submit_success_at_once() -> None:
    r = parse(
        {
            "status": "success",
            "generationTime": 4.49,
            "id": 147,
            "output": ["https://cdn/x.mp4"],
            "proxy_links": ["https://proxy/x.mp4"],
            "meta": {},
            "future_links": ["https://cdn/x.mp4"],
        }
    )
    assert r.status is ProviderStatus.SUCCESS
    assert r.provider_id == "147"
    assert r.outputs == ["https://cdn/x.mp4"]
    assert r.generation_time == 4.49
    assert r.is_final


def test_fetch_processing_output_empty_string_and_no_id() -> None:
    r = parse(
        {
            "status": "processing",
            "message": "try again later.",
            "output": "",
            "tip": "Get 20x faster image generation using enterprise plan...",
        }
    )
    assert r.status is ProviderStatus.PROCESSING
    assert r.provider_id is None
    assert r.outputs == []
    assert r.eta is None
    assert r.message == "try again later."


def test_fetch_success() -> None:
    r = parse({"status": "success", "id": 147, "output": ["URL1"], "proxy_links": ["P"]})
    assert (r.status, r.provider_id, r.outputs) == (ProviderStatus.SUCCESS, "147", ["URL1"])


def test_string_id_and_meta_id_fallback() -> None:
    assert parse({"status": "processing", "id": "abc123-def456"}).provider_id == "abc123-def456"
    r = parse({"status": "processing", "id": "", "meta": {"id": "134799477"}})
    assert r.provider_id == "134799477"
    assert parse({"status": "processing", "meta": {"id": 99}}).provider_id == "99"
    assert parse({"status": "processing", "id": None}).provider_id is None
    assert parse({"status": "processing", "id": 12.0}).provider_id == "12"


def test_success_with_empty_output_falls_back_to_output_url_then_future_links() -> None:
    r = parse({"status": "success", "id": 1, "output": "", "output_url": "https://cdn/o.mp4"})
    assert r.outputs == ["https://cdn/o.mp4"]
    r = parse({"status": "success", "id": 1, "output": [], "future_links": ["https://cdn/f.mp4"]})
    assert r.outputs == ["https://cdn/f.mp4"]


def test_success_without_any_url_is_not_finished() -> None:
    r = parse({"status": "success", "id": 5, "output": []})
    assert r.status is ProviderStatus.UNKNOWN
    assert r.provider_id == "5"
    assert r.message and "without any output" in r.message


def test_processing_does_not_take_future_links_as_outputs() -> None:
    r = parse({"status": "processing", "id": 1, "output": [], "future_links": ["https://f"]})
    assert r.outputs == []


def test_webhook_shapes() -> None:
    ok = parse(
        {
            "status": "success",
            "id": "abc",
            "output": ["https://cdn/a.mp4"],
            "generationTime": 45.2,
            "track_id": "job-1",
            "meta": {},
        }
    )
    assert (ok.status, ok.track_id, ok.generation_time) == (ProviderStatus.SUCCESS, "job-1", 45.2)
    bad = parse(
        {"status": "failed", "id": "abc", "message": "Processing failed: x", "track_id": "j"}
    )
    assert bad.status is ProviderStatus.FAILED
    assert bad.message == "Processing failed: x"


def test_eta_as_string_and_garbage() -> None:
    assert parse({"status": "processing", "eta": "12.5"}).eta == 12.5
    assert parse({"status": "processing", "eta": "soon"}).eta is None
    assert parse({"status": "processing", "eta": -3}).eta is None
    assert parse({"status": "processing", "eta": True}).eta is None


# -- failed and unknown ----------------------------------------------------------------


def test_failed_shape_with_empty_id() -> None:
    r = parse({"status": "failed", "id": "", "message": "Failed, Try Again", "output": ""})
    assert r.status is ProviderStatus.FAILED
    assert r.provider_id is None
    assert r.message == "Failed, Try Again"


def test_failed_without_message_still_says_something() -> None:
    assert parse({"status": "failed"}).message


@pytest.mark.parametrize("status", ["queued", "started", "QUEUED", "", "pending"])
def test_unknown_statuses(status: str) -> None:
    r = parse({"status": status, "id": 3})
    assert r.status is ProviderStatus.UNKNOWN
    assert r.raw_status == status
    assert r.provider_id == "3"


def test_status_is_case_insensitive() -> None:
    assert parse({"status": "Success", "output": ["u"]}).status is ProviderStatus.SUCCESS


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("http", [400, 200])
def test_validation_error_string(http: int) -> None:
    with pytest.raises(PermanentError, match="prompt is required"):
        parse({"status": "error", "message": "prompt is required"}, http)


@pytest.mark.parametrize("http", [400, 200, 422])
def test_validation_error_object_message_is_flattened(http: int) -> None:
    body = {
        "status": "error",
        "message": {
            "prompt": ["The prompt field is required."],
            "width": ["The width may not be greater than 512."],
        },
    }
    with pytest.raises(PermanentError) as info:
        parse(body, http)
    assert (
        "prompt: The prompt field is required.; width: The width may not be greater than 512."
        in str(info.value)
    )


def test_flatten_message_shapes() -> None:
    assert flatten_message("  x ") == "x"
    assert flatten_message({"a": ["b", "c"]}) == "a: b c"
    assert flatten_message(["a", {"b": "c"}]) == "a b: c"
    assert flatten_message(None) is None
    assert flatten_message("") is None
    assert flatten_message(3) == "3"


@pytest.mark.parametrize("http", [401, 200])
@pytest.mark.parametrize("msg", ["Invalid API key", "Invalid Api Key"])
def test_invalid_key(http: int, msg: str) -> None:
    with pytest.raises(PermanentError, match="API key"):
        parse({"status": "error", "message": msg}, http)


def test_legacy_messege_spelling() -> None:
    with pytest.raises(PermanentError, match="Invalid Api Key"):
        parse({"status": "error", "messege": "Invalid Api Key"})
    r = parse({"status": "failed", "messege": "boom"})
    assert r.message == "boom"


@pytest.mark.parametrize("http", [402, 200])
def test_insufficient_credits(http: int) -> None:
    body = {
        "status": "error",
        "message": "Insufficient credits. Please add more credits to continue.",
    }
    with pytest.raises(PermanentError, match="credits"):
        parse(body, http)


@pytest.mark.parametrize("http", [403, 200])
def test_premium(http: int) -> None:
    body = {"status": "error", "message": "This feature requires a premium subscription"}
    with pytest.raises(PermanentError, match="premium"):
        parse(body, http)


def test_permanent_is_not_transient() -> None:
    with pytest.raises(PermanentError) as info:
        parse({"status": "error", "message": "Invalid API key"}, 401)
    assert not isinstance(info.value, TransientError)


@pytest.mark.parametrize("http", [429, 200])
def test_queue_limit_with_retry_after_in_body(http: int) -> None:
    body = {
        "status": "error",
        "message": "Rate limit exceeded. Maximum 5 queued requests allowed.",
        "retry_after": 30,
    }
    with pytest.raises(RateLimited) as info:
        parse(body, http)
    assert info.value.retry_after == 30.0


def test_429_retry_after_header_seconds_and_date() -> None:
    with pytest.raises(RateLimited) as info:
        parse({"status": "error", "message": "slow down"}, 429, {"Retry-After": "7"})
    assert info.value.retry_after == 7.0
    with pytest.raises(RateLimited) as info:
        # 1_700_000_000 is Tue, 14 Nov 2023 22:13:20 GMT
        parse({"status": "error"}, 429, {"retry-after": "Tue, 14 Nov 2023 22:13:50 GMT"})
    assert info.value.retry_after == pytest.approx(30.0)


def test_429_x_ratelimit_reset_delta_and_epoch() -> None:
    with pytest.raises(RateLimited) as info:
        parse({"status": "error", "message": "x"}, 429, {"X-RateLimit-Reset": "12"})
    assert info.value.retry_after == 12.0
    with pytest.raises(RateLimited) as info:
        parse({"status": "error", "message": "x"}, 429, {"X-RateLimit-Reset": "1700000045"})
    assert info.value.retry_after == pytest.approx(45.0)


def test_429_without_hint_and_html_body() -> None:
    with pytest.raises(RateLimited) as info:
        parse_response(429, b"<html>Too Many Requests</html>", "text/html")
    assert info.value.retry_after is None


def test_spam_filter_waits_at_least_30s() -> None:
    body = {
        "status": "error",
        "message": "Rate limit exceeded",
        "tips": "you are sending same request multiple times, spam filter is enabled, "
        "please wait for 30 seconds...",
    }
    with pytest.raises(RateLimited) as info:
        parse(body)
    assert info.value.retry_after is not None and info.value.retry_after >= 30
    with pytest.raises(RateLimited) as info:
        parse({**body, "retry_after": 5})
    assert info.value.retry_after == 30.0


@pytest.mark.parametrize("http", [500, 502, 503, 504, 520])
def test_5xx_html_is_transient(http: int) -> None:
    html = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    with pytest.raises(TransientError) as info:
        parse_response(http, html, "text/html")
    assert not isinstance(info.value, RateLimited)
    assert str(http) in str(info.value)


def test_5xx_with_json_error_is_transient() -> None:
    with pytest.raises(TransientError):
        parse({"status": "error", "message": "Internal error"}, 500)


@pytest.mark.parametrize("http", [408, 409])
def test_408_409_transient(http: int) -> None:
    with pytest.raises(TransientError):
        parse({"status": "error", "message": "conflict"}, http)


@pytest.mark.parametrize(
    "body",
    [b'{"status":"processing","eta":96', b"", b"   ", b"not json", b"[1,2]", b'"success"'],
)
def test_broken_or_non_object_json_200_is_transient(body: bytes) -> None:
    with pytest.raises(TransientError) as info:
        parse_response(200, body, JSON)
    assert not isinstance(info.value, PermanentError)


def test_html_200_is_transient() -> None:
    with pytest.raises(TransientError, match="text/html"):
        parse_response(200, b"<!doctype html><p>maintenance</p>", "text/html; charset=utf-8")


def test_200_error_with_unknown_message() -> None:
    with pytest.raises(PermanentError, match="model not found"):
        parse({"status": "error", "message": "model not found"})
    with pytest.raises(TransientError):
        parse({"status": "error", "message": "Server busy, please try again"})
    with pytest.raises(PermanentError):
        parse({"status": "error"})


def test_404_non_json_is_permanent() -> None:
    with pytest.raises(PermanentError, match="404"):
        parse_response(404, b"Not Found", "text/plain")


# -- the key never leaks ----------------------------------------------------------------


def test_key_is_scrubbed_from_echoed_messages() -> None:
    body = {"status": "error", "message": f"Invalid API key {KEY}", "meta": {"key": KEY}}
    with pytest.raises(PermanentError) as info:
        parse(body, 401)
    assert KEY not in str(info.value)
    with pytest.raises(TransientError) as info2:
        parse_response(502, f'<html>{{"key": "{KEY}"}}</html>'.encode(), "text/html", secret=KEY)
    assert KEY not in str(info2.value)
    r = parse({"status": "failed", "message": f"bad request key={KEY}"})
    assert r.message and KEY not in r.message


def test_echoed_key_pair_scrubbed_even_without_secret() -> None:
    with pytest.raises(TransientError) as info:
        parse_response(503, b'{"oops": 1, "key": "abcdef123"', JSON)
    assert "abcdef123" not in str(info.value)


# Two cores shared with other test runs: generation may be slow, that is not the subject here.
RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=200)


@RELAXED
@given(st.binary(max_size=300), st.integers(min_value=100, max_value=599))
def test_parser_never_crashes_unexpectedly(body: bytes, status: int) -> None:
    try:
        result = parse_response(status, body, None, secret=KEY)
    except (TransientError, PermanentError):
        return
    assert isinstance(result, ProviderResult)


@RELAXED
@given(
    st.dictionaries(
        st.sampled_from(["status", "id", "output", "message", "eta", "meta", "future_links"]),
        st.one_of(
            st.none(),
            st.integers(),
            st.text(max_size=20),
            st.lists(st.text(max_size=10), max_size=3),
            st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
        ),
    ),
    st.integers(min_value=100, max_value=599),
)
def test_parser_survives_any_json_object(body: dict[str, Any], status: int) -> None:
    try:
        result = parse(body, status)
    except (TransientError, PermanentError):
        return
    assert result.provider_id is None or isinstance(result.provider_id, str)
    assert all(isinstance(u, str) and u for u in result.outputs)


# -- the client against a loopback server -------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []
    mode = "ok"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        body = json.loads(self.rfile.read(length))
        type(self).seen.append({"path": self.path, "body": body, "headers": dict(self.headers)})
        if self.mode == "hang":
            # Read the request, never answer: the client's read timeout fires.
            threading.Event().wait(2)
            return
        if self.mode == "drop":
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if self.path.startswith("/api/v6/video/fetch/"):
            answer: dict[str, Any] = {"status": "success", "id": 7, "output": ["https://cdn/v"]}
        else:
            answer = {"status": "processing", "id": 7, "eta": 12, "output": []}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("content-type", JSON)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.seen = []
    _Handler.mode = "ok"
    with serving(_Handler) as url:
        yield f"{url}/api/v6"


def test_client_submit_and_fetch_key_only_in_body(server: str) -> None:
    with ModelsLabClient(server, SecretStr(KEY)) as client:
        sub = client.submit({"prompt": "a cat", "key": "ignored"})
        got = client.fetch(sub.provider_id or "")
    assert (sub.status, sub.provider_id, sub.eta) == (ProviderStatus.PROCESSING, "7", 12.0)
    assert got.outputs == ["https://cdn/v"]
    first, second = _Handler.seen
    assert first["path"] == "/api/v6/video/text2video"
    assert first["body"] == {"prompt": "a cat", "key": KEY}
    assert second["path"] == "/api/v6/video/fetch/7"
    assert second["body"] == {"key": KEY}
    for call in _Handler.seen:
        assert KEY not in call["path"]
        assert KEY not in json.dumps(call["headers"])


def test_client_repr_hides_key(server: str) -> None:
    client = ModelsLabClient(server, KEY)
    assert KEY not in repr(client)
    assert KEY not in str(vars(client))
    client.close()


def test_submit_read_timeout_is_outcome_unknown(server: str) -> None:
    _Handler.mode = "hang"
    client = ModelsLabClient(server, KEY, read_timeout=0.3)
    with pytest.raises(SubmitOutcomeUnknown) as info:
        client.submit({"prompt": "x"})
    assert KEY not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_submit_connection_dropped_after_send_is_outcome_unknown(server: str) -> None:
    _Handler.mode = "drop"
    with pytest.raises(SubmitOutcomeUnknown):
        ModelsLabClient(server, KEY).submit({"prompt": "x"})


def test_fetch_timeout_is_plain_transient(server: str) -> None:
    _Handler.mode = "hang"
    with pytest.raises(TransientError) as info:
        ModelsLabClient(server, KEY, read_timeout=0.3).fetch("7")
    assert not isinstance(info.value, SubmitOutcomeUnknown)


def test_submit_connection_refused_is_plain_transient() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(TransientError) as info:
        ModelsLabClient(f"http://127.0.0.1:{port}", KEY, connect_timeout=1).submit({"p": 1})
    assert not isinstance(info.value, SubmitOutcomeUnknown)
    assert KEY not in str(info.value)
