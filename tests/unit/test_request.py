"""The request model: documented limits, our decisions on the docs' contradictions, errors."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producer.request import (
    PROMPT_MAX_CHARS,
    SEED_MAX,
    Text2VideoRequest,
    UnknownModelWarning,
)
from t2v_core.errors import RequestInvalid

# Per field: values the documented limits (or our decisions) refuse.
INVALID: dict[str, st.SearchStrategy[Any]] = {
    "prompt": st.one_of(
        st.text(alphabet=" \t\n", max_size=5),
        st.text(min_size=PROMPT_MAX_CHARS + 1, max_size=PROMPT_MAX_CHARS + 5).filter(
            lambda s: len(s.strip()) > PROMPT_MAX_CHARS
        ),
        st.integers(),
        st.none(),
    ),
    "width": st.one_of(
        st.integers(max_value=1),
        st.integers(min_value=513),
        st.integers(3, 511).filter(lambda n: n % 2),
        st.text(max_size=3),
    ),
    "height": st.one_of(
        st.integers(max_value=1),
        st.integers(min_value=513),
        st.integers(3, 511).filter(lambda n: n % 2),
    ),
    "num_frames": st.one_of(st.integers(max_value=0), st.integers(min_value=26), st.floats()),
    "num_inference_steps": st.one_of(st.integers(max_value=0), st.integers(min_value=51)),
    "guidance_scale": st.one_of(
        st.floats(max_value=-0.001),
        st.floats(min_value=8.001),
        st.just(float("nan")),
        st.booleans(),
    ),
    "clip_skip": st.one_of(st.integers(max_value=0), st.integers(min_value=3)),
    "upscale_height": st.one_of(st.integers(max_value=1), st.integers(min_value=1025)),
    "upscale_width": st.one_of(st.integers(max_value=1), st.integers(min_value=1025)),
    "upscale_strength": st.one_of(st.floats(max_value=-0.001), st.floats(min_value=1.001)),
    "upscale_guidance_scale": st.one_of(st.floats(min_value=8.001), st.just(12)),
    "upscale_num_inference_steps": st.one_of(st.integers(max_value=0), st.integers(min_value=51)),
    "fps": st.one_of(st.integers(max_value=0), st.integers(min_value=17), st.just("5")),
    "seed": st.one_of(
        st.integers(max_value=-1), st.integers(min_value=SEED_MAX + 1), st.booleans()
    ),
    "improved_sampling_seed": st.integers(max_value=-1),
    "output_type": st.text(max_size=6).filter(lambda s: s not in ("mp4", "gif")),
    "use_improved_sampling": st.one_of(st.integers(), st.text(max_size=4)),
    "instant_response": st.one_of(st.integers(), st.none()),
    "temp": st.just("true"),
    "key": st.text(max_size=20),
    "track_id": st.text(max_size=20),
    "webhook": st.text(max_size=20),
    "extra_field": st.integers(),
}

VALID = st.fixed_dictionaries(
    {"prompt": st.text(min_size=1, max_size=50).filter(lambda s: s.strip())},
    optional={
        "negative_prompt": st.text(max_size=30),
        "model_id": st.sampled_from(["wan2.2", "ltx-2.3", "LTX-2.3"]),
        "seed": st.integers(0, SEED_MAX),
        "width": st.integers(1, 256).map(lambda n: 2 * n),
        "height": st.integers(1, 256).map(lambda n: 2 * n),
        "num_frames": st.integers(1, 25),
        "num_inference_steps": st.integers(1, 50),
        "guidance_scale": st.floats(0, 8),
        "clip_skip": st.sampled_from([1, 2, None]),
        "upscale_strength": st.floats(0, 1),
        "upscale_guidance_scale": st.floats(0, 8),
        "fps": st.integers(1, 16),
        "output_type": st.sampled_from(["mp4", "gif"]),
        "use_improved_sampling": st.booleans(),
        "temp": st.booleans(),
    },
)


@st.composite
def invalid_payloads(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A valid payload with exactly one field made invalid; returns (field, payload)."""
    payload = dict(draw(VALID))
    field = draw(st.sampled_from(sorted(INVALID)))
    payload[field] = draw(INVALID[field])
    return field, payload


@settings(max_examples=300, deadline=None)
@given(invalid_payloads())
def test_an_invalid_field_is_always_named(case: tuple[str, dict[str, Any]]) -> None:
    field, payload = case
    with pytest.raises(RequestInvalid) as info:
        Text2VideoRequest.parse(payload)
    fields = [e["field"] for e in info.value.errors]
    assert fields == [field]
    assert str(info.value).startswith(field)
    assert isinstance(info.value, ValueError)


@settings(max_examples=200, deadline=None)
@given(VALID)
def test_valid_payloads_round_trip_through_the_api_payload(payload: dict[str, Any]) -> None:
    request = Text2VideoRequest.parse(payload)
    body = request.to_api_payload()
    assert Text2VideoRequest.parse(body).to_api_payload() == body
    assert not {"key", "track_id", "webhook"} & set(body)
    assert None not in body.values()
    assert body["model_id"] in ("wan2.2", "ltx-2.3")


def test_defaults_and_the_documented_contradictions() -> None:
    request = Text2VideoRequest(prompt="  A cat walking  ")
    body = request.to_api_payload()
    assert body["prompt"] == "A cat walking"
    # OpenAPI says gif, the example sends mp4: we choose mp4 and always send it.
    assert body["output_type"] == "mp4"
    # Documented default 12 exceeds the documented max 8: default 8, always sent.
    assert body["upscale_guidance_scale"] == 8
    with pytest.raises(RequestInvalid, match=r"upscale_guidance_scale=12: must be at most 8"):
        Text2VideoRequest(prompt="x", upscale_guidance_scale=12)
    assert (body["width"], body["height"], body["num_frames"]) == (512, 512, 25)
    assert body["num_inference_steps"] == 20 and body["guidance_scale"] == 7
    assert (body["upscale_height"], body["upscale_width"], body["upscale_strength"]) == (
        640,
        1024,
        0.6,
    )
    # Unset optional fields are left out, not sent as null.
    for absent in ("fps", "seed", "clip_skip", "negative_prompt", "improved_sampling_seed"):
        assert absent not in body


def test_unknown_model_runs_as_wan22_with_a_warning_and_keeps_what_was_asked() -> None:
    with pytest.warns(UnknownModelWarning, match="cogvideox"):
        request = Text2VideoRequest(prompt="x", model_id="cogvideox")
    assert request.model_requested == "cogvideox"
    assert request.model_effective == "wan2.2"
    assert request.to_api_payload()["model_id"] == "wan2.2"


def test_known_models_in_any_case_run_as_asked_without_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        request = Text2VideoRequest(prompt="x", model_id=" LTX-2.3 ")
    assert request.model_effective == "ltx-2.3"


def test_odd_sizes_are_refused_because_h264_needs_even_ones() -> None:
    with pytest.raises(RequestInvalid, match=r"height=511: must be even"):
        Text2VideoRequest(prompt="x", height=511)


def test_the_key_is_refused_and_never_echoed() -> None:
    secret = "sk-live-0123456789"
    with pytest.raises(RequestInvalid) as info:
        Text2VideoRequest(prompt="x", key=secret)
    assert "API key never passes through application code" in str(info.value)
    assert secret not in str(info.value) and secret not in repr(info.value.errors)
    # The pydantic error underneath hides inputs too.
    assert secret not in str(info.value.__context__)


@pytest.mark.parametrize("field", ["track_id", "webhook"])
def test_system_fields_are_refused(field: str) -> None:
    with pytest.raises(RequestInvalid, match=f"{field}=.*the system sets it"):
        Text2VideoRequest.parse({"prompt": "x", field: "abc"})


def test_one_message_names_every_bad_field() -> None:
    with pytest.raises(RequestInvalid) as info:
        Text2VideoRequest.parse({"prompt": "x", "width": 1024, "num_frames": 30})
    assert str(info.value) == "width=1024: must be at most 512; num_frames=30: must be at most 25"
    assert info.value.errors == [
        {"field": "width", "value": 1024, "reason": "must be at most 512"},
        {"field": "num_frames", "value": 30, "reason": "must be at most 25"},
    ]


def test_every_construction_path_raises_request_invalid() -> None:
    for build in (
        lambda: Text2VideoRequest(prompt=""),
        lambda: Text2VideoRequest.parse({"prompt": ""}),
        lambda: Text2VideoRequest.model_validate({"prompt": ""}),
    ):
        with pytest.raises(RequestInvalid, match='prompt="": must not be blank'):
            build()
    with pytest.raises(RequestInvalid, match="prompt: is required"):
        Text2VideoRequest.parse({})
    with pytest.raises(RequestInvalid, match="must be a JSON object"):
        Text2VideoRequest.parse(["prompt"])  # type: ignore[arg-type]


def test_requests_are_frozen_and_strict() -> None:
    request = Text2VideoRequest(prompt="x")
    with pytest.raises(ValueError, match="frozen"):
        request.width = 256  # type: ignore[misc]
    with pytest.raises(RequestInvalid, match='num_frames="5": must be an integer'):
        Text2VideoRequest.parse({"prompt": "x", "num_frames": "5"})


def test_blank_negative_prompt_means_none() -> None:
    assert Text2VideoRequest(prompt="x", negative_prompt="   ").negative_prompt is None
