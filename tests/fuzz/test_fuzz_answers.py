"""Fuzz target: the ModelsLab answer normaliser (``parse_response``) and the client's
classification of a submit/fetch answer.

Rule for every answer (any HTTP status, any bytes, any headers): ``parse_response``
returns a ``ProviderResult`` or raises ``TransientError`` (``RateLimited``) or
``PermanentError``; nothing else. Through the client, a submit answer ends in one of
five outcomes, and ``worker/steps/submit.py`` does this with each:

    ProviderResult          recorded (with an id: `processing`; without: outcome unknown)
    SubmitOutcomeUnknown    kept `submitting`: never resent before the webhook/deadline
    PermanentError          job failed, never resent
    RateLimited             back in the line, SENT AGAIN ("not taken")
    TransientError (plain)  back in the line, SENT AGAIN ("not taken")

"Not taken" may only come from an answer in which the origin itself says it did not
take the request: a 429, an origin error status (4xx/5xx other than the gateway ones),
or a 2xx JSON object whose ``status`` is ``"error"``. An answer that may hide an
accepted (and charged) request - a gateway status (408, 502, 504, 520, 522, 524: the
origin's answer was never seen) or any other 2xx (the origin answered but we cannot
read a refusal in it) - must be ``SubmitOutcomeUnknown`` or a result: never resent, so
never paid twice. A fetch is never ``SubmitOutcomeUnknown``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import requests
from hypothesis import example, given
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict

from t2v_core.errors import PermanentError, RateLimited, TransientError
from tests.fuzz.budget import classified, fuzz
from tests.fuzz.strategies import HOSTILE_BODIES, JSON_VALUES, ODD_NUMBERS, ODD_STRINGS, cut, dumps
from worker.modelslab import (
    ModelsLabClient,
    ProviderResult,
    ProviderStatus,
    SubmitOutcomeUnknown,
    parse_response,
)

KEY = "sk-live-FUZZSECRET-0123456789abcdef"
GATEWAY = frozenset({408, 502, 504, 520, 522, 524})

statuses = st.one_of(
    st.sampled_from(
        [
            200,
            201,
            202,
            204,
            301,
            302,
            400,
            401,
            402,
            403,
            404,
            408,
            409,
            413,
            422,
            429,
            500,
            502,
            503,
            504,
            520,
            522,
            524,
        ]
    ),
    st.integers(min_value=100, max_value=599),
)
ids = st.one_of(
    st.integers(),
    st.text(max_size=20),
    st.floats(),
    st.none(),
    st.booleans(),
    ODD_NUMBERS,
    ODD_STRINGS,
    JSON_VALUES,
)
outputs = st.one_of(
    st.lists(st.one_of(st.text(max_size=40), JSON_VALUES), max_size=3),
    st.text(max_size=40),
    JSON_VALUES,
    st.just(["https://cdn.example/v.mp4"]),
)
messages = st.one_of(
    ODD_STRINGS, st.text(max_size=40), JSON_VALUES, st.just(f"echo {KEY}"), st.just({"key": [KEY]})
)
answer_objects = st.fixed_dictionaries(
    {},
    optional={
        "status": st.one_of(
            st.sampled_from(["success", "processing", "failed", "error", "Error ", "queued", ""]),
            JSON_VALUES,
        ),
        "id": ids,
        "track_id": ids,
        "output": outputs,
        "output_url": outputs,
        "future_links": outputs,
        "message": messages,
        "messege": messages,
        "tips": messages,
        "eta": st.one_of(ODD_NUMBERS, ODD_STRINGS, JSON_VALUES),
        "generationTime": st.one_of(ODD_NUMBERS, JSON_VALUES),
        "retry_after": st.one_of(ODD_NUMBERS, ODD_STRINGS, JSON_VALUES),
        "meta": st.one_of(
            JSON_VALUES, st.fixed_dictionaries({}, optional={"id": ids, "track_id": ids})
        ),
        "key": st.just(KEY),
    },
)
bodies = st.one_of(
    answer_objects.map(dumps),
    answer_objects.map(dumps).flatmap(cut),
    JSON_VALUES.map(dumps),
    st.binary(max_size=300),
    HOSTILE_BODIES,
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
header_values = st.one_of(
    ODD_STRINGS,
    st.text(max_size=40),
    st.sampled_from(
        [
            "30",
            "1e999",
            "-5",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "Wed, 21 Oct 99999 07:28:00 GMT",
            "Mon, 01 Jan 0001 00:00:00 GMT",
            "Fri, 31 Dec 9999 23:59:59 +2359",
            "99999999999999999999",
            "nan",
        ]
    ),
)
headers = st.dictionaries(
    st.sampled_from(["Retry-After", "retry-after", "X-RateLimit-Reset", "Content-Type"]),
    header_values,
    max_size=3,
)
content_types = st.one_of(
    st.none(),
    st.text(max_size=30),
    st.sampled_from(["application/json", "text/html; charset=utf-8"]),
)
clocks = st.one_of(st.none(), st.floats(min_value=0, max_value=4e9))


def check_result(r: ProviderResult) -> None:
    assert isinstance(r.status, ProviderStatus)
    for text in (r.provider_id, r.track_id):
        assert text is None or (isinstance(text, str) and text and text == text.strip())
    assert all(isinstance(u, str) and u and u == u.strip() for u in r.outputs)
    assert all(isinstance(u, str) and u for u in r.future_links)
    for number in (r.eta, r.generation_time):
        assert number is None or (math.isfinite(number) and number >= 0)
    if r.status is ProviderStatus.SUCCESS:
        assert r.outputs, "success must carry something to download"
    if r.status is ProviderStatus.FAILED:
        assert r.message
    assert KEY not in repr(r)


def check_error(exc: BaseException) -> None:
    assert isinstance(exc, TransientError | PermanentError), type(exc)
    assert str(exc), "an error must say what happened"
    assert KEY not in str(exc)
    if isinstance(exc, TransientError) and exc.retry_after is not None:
        assert math.isfinite(exc.retry_after) and exc.retry_after >= 0


def outcome(call: Any) -> tuple[str, Any]:
    try:
        return "parsed", call()
    except (TransientError, PermanentError) as exc:
        return type(exc).__name__, exc


DEEP_LIST = b"[" * 100_000  # RecursionError out of json.loads (found at 1,987 deep)
DEEP_MESSAGE = b'{"status":"error","message":' + b"[" * 990 + b'"x"' + b"]" * 990 + b"}"
HUGE_ETA = b'{"status":"success","eta":1' + b"0" * 4000 + b"}"  # float(int): OverflowError


@fuzz("answers", 600)
@given(status=statuses, body=bodies, ctype=content_types, hdrs=headers, now=clocks)
# Regressions: inputs fuzzing found (each raised or was misclassified before its fix).
@example(status=200, body=DEEP_LIST, ctype=None, hdrs={}, now=None)
@example(status=200, body=DEEP_MESSAGE, ctype=None, hdrs={}, now=None)
@example(status=200, body=HUGE_ETA, ctype=None, hdrs={}, now=None)
def test_parse_response(
    status: int, body: bytes, ctype: str | None, hdrs: dict[str, str], now: float | None
) -> None:
    kind, got = outcome(lambda: parse_response(status, body, ctype, hdrs, secret=KEY, now=now))
    classified("test_parse_response", kind)
    if kind == "parsed":
        assert status < 400, "an HTTP error is never a result"
        check_result(got)
        return
    check_error(got)
    if status == 429:
        assert isinstance(got, RateLimited)
    if status >= 500:
        assert isinstance(got, TransientError), "a 5xx may succeed later"


# -- through the client: what a submit or a fetch turns into ---------------------------


class OneAnswer(requests.Session):
    """A session whose every POST gets the same canned answer; no network."""

    def __init__(self, status: int, body: bytes, hdrs: dict[str, str]) -> None:
        super().__init__()
        self.answer = (status, body, hdrs)

    def post(self, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        resp = requests.Response()
        resp.status_code, resp._content, hdrs = self.answer
        resp.headers = CaseInsensitiveDict(hdrs)
        resp.url = str(url)
        return resp


def refusal_in_body(status: int, body: bytes) -> bool:
    """The origin's own refusal: a 2xx JSON object with ``status: "error"``."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return False
    return isinstance(data, dict) and str(data.get("status") or "").strip().lower() == "error"


@fuzz("answers", 600)
@given(status=statuses, body=bodies, hdrs=headers)
# Regressions: inputs fuzzing found (each raised or was misclassified before its fix).
@example(status=200, body=DEEP_LIST, hdrs={})
@example(status=200, body=HUGE_ETA, hdrs={})
# `make fuzz` seed 565058934: a gateway's 502 read as the origin's rate limit, resent.
@example(status=502, body=b"", hdrs={"Content-Type": "Rate limit exceeded"})
@example(status=504, body=b"<html>too many connections</html>", hdrs={})
def test_submit_answer_never_paid_twice(status: int, body: bytes, hdrs: dict[str, str]) -> None:
    client = ModelsLabClient(
        "https://modelslab.invalid/api/v6", KEY, session=OneAnswer(status, body, hdrs)
    )
    try:
        kind, got = outcome(lambda: client.submit({"prompt": "a cat", "track_id": "job-1"}))
    finally:
        client.close()
    classified("test_submit_answer_never_paid_twice", kind)
    if kind == "parsed":
        check_result(got)
        return
    check_error(got)
    resent = isinstance(got, TransientError) and not isinstance(got, SubmitOutcomeUnknown)
    if status in GATEWAY:
        assert isinstance(got, SubmitOutcomeUnknown), (
            f"HTTP {status} may hide an accepted submit, got {type(got).__name__}: {got}"
        )
    elif 200 <= status < 300 and not refusal_in_body(status, body):
        assert not resent and not isinstance(got, PermanentError), (
            f"a 2xx without a refusal may be a paid job, got {type(got).__name__}: {got}"
        )


@fuzz("answers", 300)
@given(status=statuses, body=bodies, hdrs=headers)
# Regressions: inputs fuzzing found (each raised or was misclassified before its fix).
@example(status=200, body=DEEP_LIST, hdrs={})
@example(status=200, body=HUGE_ETA, hdrs={})
@example(status=200, body=DEEP_MESSAGE, hdrs={})
def test_fetch_answer(status: int, body: bytes, hdrs: dict[str, str]) -> None:
    client = ModelsLabClient(
        "https://modelslab.invalid/api/v6", KEY, session=OneAnswer(status, body, hdrs)
    )
    try:
        kind, got = outcome(lambda: client.fetch("134799477"))
    finally:
        client.close()
    classified("test_fetch_answer", kind)
    if kind == "parsed":
        check_result(got)
        return
    check_error(got)
    assert not isinstance(got, SubmitOutcomeUnknown), "a fetch is never an unknown submit"
