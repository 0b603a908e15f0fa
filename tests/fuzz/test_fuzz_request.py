"""Fuzz target: the request model, ``Text2VideoRequest.parse``.

Rule: any JSON object (any keys, any values: huge numbers, NaN, wrong types, nesting) is
either a valid request or ``RequestInvalid`` whose ``field_errors`` each name a real field
path (a request field, or a key of the input when that key is not allowed), with a reason;
the value of ``key`` is never shown. A valid request's API payload parses back to itself.
Anything that is not a JSON object is ``RequestInvalid`` naming ``request``.
"""

from __future__ import annotations

import warnings
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from producer.request import RESERVED_FIELDS, Text2VideoRequest, UnknownModelWarning
from t2v_core.errors import RequestInvalid
from tests.fuzz.budget import classified, fuzz
from tests.fuzz.strategies import JSON_VALUES, ODD_NUMBERS, ODD_STRINGS

FIELDS = sorted(Text2VideoRequest.model_fields)
SECRET_KEY = "sk-live-REQUEST-FUZZ-KEY-42"

good_values: dict[str, st.SearchStrategy[Any]] = {
    "prompt": st.text(min_size=0, max_size=30),
    "negative_prompt": st.one_of(st.none(), st.text(max_size=10)),
    "model_id": st.one_of(
        st.sampled_from(["wan2.2", "LTX-2.3", " wan2.2 ", "cogvideox"]), st.text(max_size=70)
    ),
    "output_type": st.sampled_from(["mp4", "gif", "MP4", "webm"]),
}
values = st.one_of(
    JSON_VALUES,
    ODD_NUMBERS,
    ODD_STRINGS,
    st.integers(-10, 2000),
    st.floats(-1, 2000),
    st.booleans(),
)
keys = st.one_of(st.sampled_from(FIELDS + sorted(RESERVED_FIELDS)), st.text(max_size=12))


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if draw(st.booleans()):
        data["prompt"] = draw(good_values["prompt"])
    for key in draw(st.lists(keys, max_size=6)):
        data[key] = draw(good_values.get(key, values)) if draw(st.booleans()) else draw(values)
    if "key" in data and draw(st.booleans()):
        data["key"] = SECRET_KEY
    return data


def real_field(name: str | None, data: dict[str, Any]) -> bool:
    return name in FIELDS or name in data or name == "request"


@fuzz("request", 1500)
@given(data=st.one_of(requests(), JSON_VALUES))
# Regressions: inputs fuzzing found (each raised or was misclassified before its fix).
@example(data={"clip_skip": "\ud800x"})  # pydantic: UnicodeEncodeError
@example(data={"prompt": "\udfff"})
@example(data={"prompt": "a", "\ud800": 1})
@example(data={"prompt": "a", "width": [[[[["\ud800"]]]]] * 3})
def test_request_parse(data: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownModelWarning)
        try:
            req = Text2VideoRequest.parse(data)
        except RequestInvalid as exc:
            classified("test_request_parse", "RequestInvalid")
            assert exc.field_errors, "a refusal must name at least one field"
            source = data if isinstance(data, dict) else {}
            for error in exc.field_errors:
                assert real_field(error.field, source), f"{error.field!r} is not a field"
                assert error.reason
            if not isinstance(data, dict):
                assert [e.field for e in exc.field_errors] == ["request"]
            assert SECRET_KEY not in str(exc) and SECRET_KEY not in repr(exc.errors)
            return
        classified("test_request_parse", "parsed")
        assert isinstance(data, dict)
        payload = req.to_api_payload()
        assert Text2VideoRequest.parse(payload).to_api_payload() == payload
