"""Checks a text2video request body against the documented limits, Laravel-style.

A missing prompt answers the documented plain string ``prompt is required``; every other
violation answers ``message`` as an object of field -> [messages], as Laravel's validator does
(attribute names with underscores shown as spaces). Unknown ``model_id`` is not an error: it
is replaced by ``wan2.2``. ``upscale_guidance_scale`` is only checked when sent (its documented
default, 12, exceeds its documented maximum, 8).

Defaults filled in when a field is absent: width/height 512, num_frames 25, fps 8 (undocumented:
our choice), output_type ``gif`` (the OpenAPI default; the doc's example sends ``mp4``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

MODELS = ("wan2.2", "ltx-2.3")
DEFAULT_MODEL = "wan2.2"
DEFAULT_FPS = 8
DEFAULT_OUTPUT_TYPE = "gif"

# field -> (kind, minimum, maximum); kind "int" | "num"; None: no bound
_NUMBERS: dict[str, tuple[str, float | None, float | None]] = {
    "height": ("int", 1, 512),
    "width": ("int", 1, 512),
    "num_frames": ("int", 1, 25),
    "num_inference_steps": ("int", 1, 50),
    "guidance_scale": ("num", 0, 8),
    "upscale_height": ("int", 1, 1024),
    "upscale_width": ("int", 1, 1024),
    "upscale_strength": ("num", 0, 1),
    "upscale_guidance_scale": ("num", 0, 8),
    "upscale_num_inference_steps": ("int", 1, 50),
    "fps": ("int", 1, 16),
    "improved_sampling_seed": ("int", None, None),
}
_NULLABLE_INTS: dict[str, int | None] = {"seed": None, "clip_skip": 2}
_BOOLS = ("use_improved_sampling", "instant_response", "temp")
_STRINGS = ("negative_prompt", "model_id")


class RequestInvalid(Exception):
    """The body breaks a documented rule; ``message`` is a string or a field -> list object."""

    def __init__(self, message: str | dict[str, list[str]]) -> None:
        super().__init__(str(message))
        self.message = message


@dataclass(frozen=True)
class VideoRequest:
    """A valid request: the effective render parameters and the params to echo in ``meta``."""

    prompt: str
    model_id: str
    width: int
    height: int
    num_frames: int
    fps: int
    output_type: str
    seed: int | None
    webhook: str | None
    track_id: Any
    instant_response: bool
    echo: dict[str, Any]


def _label(name: str) -> str:
    return name.replace("_", " ")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_number(
    name: str, value: Any, kind: str, lo: float | None, hi: float | None
) -> str | None:
    if kind == "int" and not _is_int(value):
        return f"The {_label(name)} must be an integer."
    if kind == "num" and not _is_num(value):
        return f"The {_label(name)} must be a number."
    if kind == "num" and lo is not None and hi is not None and not lo <= value <= hi:
        return f"The {_label(name)} must be between {lo} and {hi}."
    if lo is not None and value < lo:
        return f"The {_label(name)} must be at least {lo}."
    if hi is not None and value > hi:
        return f"The {_label(name)} may not be greater than {hi}."
    return None


def validate(body: dict[str, Any]) -> VideoRequest:
    """Return the effective request or raise ``RequestInvalid`` with the documented message."""
    prompt = body.get("prompt")
    if prompt is None or (isinstance(prompt, str) and not prompt.strip()):
        raise RequestInvalid("prompt is required")
    errors: dict[str, list[str]] = {}
    if not isinstance(prompt, str):
        errors["prompt"] = ["The prompt must be a string."]
    for name, (kind, lo, hi) in _NUMBERS.items():
        if body.get(name) is not None:
            problem = _check_number(name, body[name], kind, lo, hi)
            if problem:
                errors[name] = [problem]
    for name, hi_int in _NULLABLE_INTS.items():
        value = body.get(name)
        if value is None:
            continue
        if not _is_int(value):
            errors[name] = [f"The {_label(name)} must be an integer."]
        elif hi_int is not None and value > hi_int:
            errors[name] = [f"The {_label(name)} may not be greater than {hi_int}."]
    for name in _BOOLS:
        if body.get(name) is not None and not isinstance(body[name], bool):
            errors[name] = [f"The {_label(name)} field must be true or false."]
    for name in _STRINGS:
        if body.get(name) is not None and not isinstance(body[name], str):
            errors[name] = [f"The {_label(name)} must be a string."]
    output_type = body.get("output_type")
    if output_type is not None and output_type not in ("mp4", "gif"):
        errors["output_type"] = [f"The selected {_label('output_type')} is invalid."]
    webhook = body.get("webhook")
    if webhook is not None and webhook != "":
        parsed = urlparse(webhook) if isinstance(webhook, str) else None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
            errors["webhook"] = ["The webhook format is invalid."]
    track_id = body.get("track_id")
    if track_id is not None and not (isinstance(track_id, str) or _is_int(track_id)):
        errors["track_id"] = ["The track id must be a string."]
    if errors:
        raise RequestInvalid(errors)

    model_id = body.get("model_id")
    effective_model = model_id if model_id in MODELS else DEFAULT_MODEL
    echo = {k: v for k, v in body.items() if k != "key"}
    echo["model_id"] = effective_model
    return VideoRequest(
        prompt=str(prompt),
        model_id=effective_model,
        width=int(body.get("width") or 512),
        height=int(body.get("height") or 512),
        num_frames=int(body.get("num_frames") or 25),
        fps=int(body.get("fps") or DEFAULT_FPS),
        output_type=str(output_type or DEFAULT_OUTPUT_TYPE),
        seed=body.get("seed"),
        webhook=webhook or None,
        track_id=track_id,
        instant_response=bool(body.get("instant_response") or False),
        echo=echo,
    )
