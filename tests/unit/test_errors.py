"""``FieldError`` and ``RequestInvalid``: the typed detail and the public dict shape."""

from __future__ import annotations

import dataclasses
import json

import pytest

from producer.request import Text2VideoRequest
from t2v_core.errors import LISTED_MAX, FieldError, RequestInvalid, T2VError


def test_a_field_error_is_a_frozen_value_with_the_public_dict_shape() -> None:
    error = FieldError("width", 1024, "must be at most 512")
    assert error.as_dict() == {"field": "width", "value": 1024, "reason": "must be at most 512"}
    assert list(error.as_dict()) == ["field", "value", "reason"]
    assert error == FieldError("width", 1024, "must be at most 512")
    with pytest.raises(dataclasses.FrozenInstanceError):
        error.field = "height"  # type: ignore[misc]


def test_str_shows_the_value_only_when_there_is_one() -> None:
    assert str(FieldError("width", 1024, "must be at most 512")) == (
        "width=1024: must be at most 512"
    )
    assert str(FieldError("key", "k", "bad")) == "key='k': bad"
    assert str(FieldError("prompt", None, "is required")) == "prompt: is required"
    assert str(FieldError(None, None, "not valid JSON")) == "not valid JSON"
    assert str(FieldError("id", 7, "must be a non-blank string", line=3)) == (
        "line 3: id=7: must be a non-blank string"
    )
    assert str(FieldError(None, None, "not valid JSON (x)", line=4)) == "line 4: not valid JSON (x)"


def test_prefixing_and_lines_make_new_values() -> None:
    error = FieldError("idempotency_key", "k", "bad")
    at = error.at("[3].")
    assert at == FieldError("[3].idempotency_key", "k", "bad") and error.field == "idempotency_key"
    assert error.at("") == error
    on = at.on_line(7, "id")
    assert on == FieldError("id", "k", "bad", line=7)
    assert error.on_line(2) == FieldError("idempotency_key", "k", "bad", line=2)
    # A batch line's dict is led by its line number; nothing else changes.
    assert list(on.as_dict().items()) == [
        ("line", 7),
        ("field", "id"),
        ("value", "k"),
        ("reason", "bad"),
    ]


def test_request_invalid_of_one_field() -> None:
    exc = RequestInvalid.of("status", "nope", "must be one of queued, failed")
    assert isinstance(exc, ValueError) and isinstance(exc, T2VError)
    assert str(exc) == "status='nope': must be one of queued, failed"
    assert exc.errors == [
        {"field": "status", "value": "nope", "reason": "must be one of queued, failed"}
    ]
    assert exc.field_errors == [FieldError("status", "nope", "must be one of queued, failed")]
    told = RequestInvalid.of("JOB_ID", None, "missing", message="give a JOB_ID or --account")
    assert str(told) == "give a JOB_ID or --account"
    assert told.errors == [{"field": "JOB_ID", "value": None, "reason": "missing"}]


def test_request_invalid_from_a_list_keeps_dicts_and_typed_errors_in_step() -> None:
    errors = [FieldError("width", 1024, "too wide"), FieldError("prompt", None, "is required")]
    exc = RequestInvalid("a message of its own", errors)
    assert str(exc) == "a message of its own"
    assert exc.field_errors == errors
    assert exc.errors == [e.as_dict() for e in errors]
    assert json.loads(json.dumps(exc.errors)) == exc.errors  # what `t2v --json` prints
    bare = RequestInvalid("nothing to name")
    assert bare.errors == [] and bare.field_errors == []


def test_listing_names_the_first_errors_and_keeps_them_all() -> None:
    two = RequestInvalid.listing(
        [
            FieldError("[0].fps", 99, "must be at most 16"),
            FieldError("[1].prompt", None, "is required"),
        ]
    )
    assert str(two) == "[0].fps=99: must be at most 16; [1].prompt: is required"
    many = RequestInvalid.listing(
        FieldError(f"[{i}].width", 3, "must be even") for i in range(LISTED_MAX + 2)
    )
    assert len(many.errors) == LISTED_MAX + 2
    assert str(many).endswith(f"[{LISTED_MAX - 1}].width=3: must be even; ... and 2 more")


def test_requests_raise_typed_errors_matching_their_dicts() -> None:
    with pytest.raises(RequestInvalid) as info:
        Text2VideoRequest.parse({"prompt": "x", "width": 1024, "key": "sk-secret"})
    exc = info.value
    assert [e.field for e in exc.field_errors] == ["width", "key"]
    assert exc.field_errors[1].value == "<redacted>"
    assert exc.errors == [e.as_dict() for e in exc.field_errors]
    with pytest.raises(RequestInvalid) as info:
        Text2VideoRequest.parse([1])  # type: ignore[arg-type]
    assert str(info.value) == "request: must be a JSON object, not list"
    assert info.value.field_errors == [FieldError("request", None, "must be a JSON object")]
