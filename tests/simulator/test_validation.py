"""Every documented limit answers 400, Laravel-style, over real HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from tests.simulator.simhelpers import Sim

BAD: list[tuple[str, Any, str]] = [
    ("height", 513, "The height may not be greater than 512."),
    ("width", 1024, "The width may not be greater than 512."),
    ("width", 0, "The width must be at least 1."),
    ("height", "512", "The height must be an integer."),
    ("num_frames", 26, "The num frames may not be greater than 25."),
    ("num_inference_steps", 51, "The num inference steps may not be greater than 50."),
    ("guidance_scale", 8.5, "The guidance scale must be between 0 and 8."),
    ("guidance_scale", -1, "The guidance scale must be between 0 and 8."),
    ("clip_skip", 3, "The clip skip may not be greater than 2."),
    ("upscale_height", 1025, "The upscale height may not be greater than 1024."),
    ("upscale_width", 2048, "The upscale width may not be greater than 1024."),
    ("upscale_strength", 1.5, "The upscale strength must be between 0 and 1."),
    ("upscale_guidance_scale", 12, "The upscale guidance scale must be between 0 and 8."),
    (
        "upscale_num_inference_steps",
        51,
        "The upscale num inference steps may not be greater than 50.",
    ),
    ("fps", 17, "The fps may not be greater than 16."),
    ("output_type", "webm", "The selected output type is invalid."),
    ("seed", "42", "The seed must be an integer."),
    ("webhook", "not a url", "The webhook format is invalid."),
]


@pytest.mark.parametrize(("field", "value", "message"), BAD, ids=[f"{f}={v!r}" for f, v, _ in BAD])
def test_limit_violation_is_400_with_object_message(
    sim: Sim, field: str, value: Any, message: str
) -> None:
    r = sim.submit({field: value})
    assert r.status_code == 400
    assert r.json() == {"status": "error", "message": {field: [message]}}


def test_several_violations_are_reported_together(sim: Sim) -> None:
    r = sim.submit(width=999, fps=99)
    assert r.status_code == 400
    assert set(r.json()["message"]) == {"width", "fps"}


@pytest.mark.parametrize("body", [{"prompt": None}, {"prompt": ""}, {}])
def test_missing_prompt_is_a_plain_string(sim: Sim, body: dict[str, Any]) -> None:
    payload = {"key": sim.key, **body}
    r = sim.http.post(f"{sim.api}/video/text2video", json=payload, timeout=5)
    assert r.status_code == 400
    assert r.json() == {"status": "error", "message": "prompt is required"}


GOOD: list[dict[str, Any]] = [
    {"height": 512, "width": 512, "num_frames": 25, "num_inference_steps": 50},
    {"guidance_scale": 0, "clip_skip": None, "seed": None},
    {"guidance_scale": 8, "clip_skip": 2, "seed": 7},
    {
        "upscale_height": 1024,
        "upscale_width": 1024,
        "upscale_strength": 1,
        "upscale_guidance_scale": 8,
        "upscale_num_inference_steps": 50,
    },
    {"fps": 16, "output_type": "gif", "webhook": None, "track_id": None},
    {
        "output_type": "mp4",
        "instant_response": True,
        "temp": True,
        "use_improved_sampling": False,
        "negative_prompt": "blurry",
    },
]


@pytest.mark.parametrize("fields", GOOD)
def test_values_at_the_limits_are_accepted(sim: Sim, fields: dict[str, Any]) -> None:
    """Includes the absent upscale_guidance_scale, whose documented default 12 exceeds 8."""
    r = sim.submit(fields)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "processing"


def test_body_that_is_not_json_is_400(sim: Sim) -> None:
    r = sim.http.post(
        f"{sim.api}/video/text2video", data=b"{not json", headers={"key": sim.key}, timeout=5
    )
    assert r.status_code == 400
    assert r.json()["status"] == "error"
