"""The text-to-video request: every ModelsLab field we let application code set, checked.

A request is refused here, before anything reaches the table or the broker, with one
readable line per bad field (``RequestInvalid``). This module holds no secret and sends
nothing: the worker adds ``key``, ``track_id`` and ``webhook`` when it calls the API.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from t2v_core.errors import FieldError, RequestInvalid

#: Models the API really runs; any other ``model_id`` is run as ``wan2.2`` by ModelsLab.
KNOWN_MODELS: tuple[str, ...] = ("wan2.2", "ltx-2.3")
DEFAULT_MODEL = "wan2.2"
PROMPT_MAX_CHARS = 2000
MODEL_ID_MAX_CHARS = 64  # the `model_requested` column is String(64)
SEED_MAX = 2**32 - 1

#: Fields the system sets itself; a request that carries one is refused.
RESERVED_FIELDS: dict[str, str] = {
    "key": "not allowed: the API key never passes through application code "
    "(workers add it from T2V_MODELSLAB_API_KEY)",
    "track_id": "not allowed: the system sets it (it is the job id)",
    "webhook": "not allowed: the system sets it (from T2V_WEBHOOK_URL)",
}


class UnknownModelWarning(UserWarning):
    """``model_id`` is not one ModelsLab runs; the job will use ``wan2.2``."""


Prompt = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=PROMPT_MAX_CHARS)
]
OptionalText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=PROMPT_MAX_CHARS)]
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]


class Text2VideoRequest(BaseModel):
    """One text-to-video request, validated against the documented limits.

    Decisions where ModelsLab's docs contradict themselves:

    * ``output_type`` defaults to ``"mp4"`` (the OpenAPI says ``gif``, the doc's example
      sends ``mp4``): MP4 is what users expect, and much smaller. It is always sent, so the
      provider's default never matters.
    * ``upscale_guidance_scale`` defaults to ``8`` and is capped at ``8``: the docs give a
      default of 12 above their own maximum of 8; we never send a value the API's limit
      refuses, and we always send it so the provider's contradictory default is never used.
    * ``model_id`` accepts any string. ``wan2.2`` and ``ltx-2.3`` (case-insensitive) are
      run as asked; anything else (the stale ``cogvideox``/``wanx`` enum included) is run
      as ``wan2.2``, with an ``UnknownModelWarning``. The job record keeps both the asked
      (``model_requested``) and the effective (``model_effective``) model.
    * ``width``/``height`` (and the upscale sizes) must be even: H.264 MP4 needs even frame
      sizes, so an odd size is refused with a clear error instead of failing later.
    * ``prompt`` is required, trimmed, non-blank, at most 2,000 characters;
      ``negative_prompt`` is trimmed, at most 2,000 characters, blank means none.
    * ``seed``/``improved_sampling_seed``: 0..2**32-1, or ``None`` for random.
    * ``fps``: 1..16 or ``None`` (the provider's default; not sent).
    * ``key``, ``track_id`` and ``webhook`` are refused: the key lives in worker settings
      only, ``track_id`` is our job id and ``webhook`` comes from ``T2V_WEBHOOK_URL``.
    * Types are strict: ``"5"`` is not a number and ``1`` is not ``True``.

    Errors: every way of building a request (``Text2VideoRequest(...)``,
    ``Text2VideoRequest.parse(mapping)``, ``model_validate``, ``enqueue``) raises
    ``t2v_core.errors.RequestInvalid`` (a ``ValueError``) naming each bad field, its value
    and the limit, e.g. ``width=1024: must be at most 512; num_frames=30: must be at most 25``.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        strict=True,
        # Error strings must never echo inputs (a `key` value, a long prompt) into logs;
        # `RequestInvalid` shows values itself, redacting the key.
        hide_input_in_errors=True,
        allow_inf_nan=False,
    )

    prompt: Prompt
    negative_prompt: OptionalText | None = None
    model_id: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MODEL_ID_MAX_CHARS)
    ] = DEFAULT_MODEL
    seed: Seed | None = None
    width: int = Field(512, ge=2, le=512)
    height: int = Field(512, ge=2, le=512)
    num_frames: int = Field(25, ge=1, le=25)
    num_inference_steps: int = Field(20, ge=1, le=50)
    guidance_scale: float = Field(7.0, ge=0, le=8)
    clip_skip: int | None = Field(None, ge=1, le=2)
    upscale_height: int = Field(640, ge=2, le=1024)
    upscale_width: int = Field(1024, ge=2, le=1024)
    upscale_strength: float = Field(0.6, ge=0, le=1)
    upscale_guidance_scale: float = Field(8.0, ge=0, le=8)
    upscale_num_inference_steps: int = Field(20, ge=1, le=50)
    use_improved_sampling: bool = False
    improved_sampling_seed: Seed | None = None
    fps: int | None = Field(None, ge=1, le=16)
    output_type: Literal["mp4", "gif"] = "mp4"
    instant_response: bool = False
    temp: bool = False

    if not TYPE_CHECKING:
        # At run time every construction path raises RequestInvalid; type checkers still
        # see pydantic's typed __init__.
        def __init__(self, **data: Any) -> None:
            _refuse_lone_surrogates(data)
            try:
                super().__init__(**data)
            except ValidationError as exc:
                raise request_invalid(exc, data) from None

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        if isinstance(obj, Mapping):
            _refuse_lone_surrogates(obj)
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            # With a custom __init__, pydantic validates through it: our own RequestInvalid
            # comes back wrapped as a model-level value_error. Unwrap it, do not re-format.
            for error in exc.errors(include_url=False, include_input=False):
                inner = (error.get("ctx") or {}).get("error")
                if isinstance(inner, RequestInvalid):
                    raise inner from None
            raise request_invalid(exc, obj) from None

    @classmethod
    def parse(cls, data: Mapping[str, Any] | Text2VideoRequest) -> Text2VideoRequest:
        """A request from a mapping (a JSON object), or the request itself."""
        if isinstance(data, Text2VideoRequest):
            return data
        if not isinstance(data, Mapping):
            raise RequestInvalid.of(
                "request",
                None,
                "must be a JSON object",
                message=f"request: must be a JSON object, not {type(data).__name__}",
            )
        return cls.model_validate(dict(data))

    @field_validator("negative_prompt")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("width", "height", "upscale_width", "upscale_height")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError("must be even (H.264 video needs even frame sizes)")
        return value

    @field_validator("model_id")
    @classmethod
    def _warn_unknown_model(cls, value: str) -> str:
        if effective_model(value) != value.lower():
            warnings.warn(
                f"model_id={value!r} is not one ModelsLab runs ({', '.join(KNOWN_MODELS)}); "
                f"the job will run as {DEFAULT_MODEL!r}",
                UnknownModelWarning,
                stacklevel=2,
            )
        return value

    @property
    def model_requested(self) -> str:
        """The model as asked for."""
        return self.model_id

    @property
    def model_effective(self) -> str:
        """The model ModelsLab will really run (``wan2.2`` for anything it does not know)."""
        return effective_model(self.model_id)

    def to_api_payload(self) -> dict[str, Any]:
        """The JSON body fields for ``POST /video/text2video``, without key/track_id/webhook.

        ``model_id`` is the effective model; fields that are ``None`` are left out (the
        provider's default applies). ``Text2VideoRequest.parse(payload)`` gives back an
        equal payload, which is why the job record stores exactly this.
        """
        payload = self.model_dump(mode="json", exclude_none=True)
        payload["model_id"] = self.model_effective
        return payload


def effective_model(model_id: str) -> str:
    """``model_id`` as ModelsLab runs it: a known model (canonical case) or ``wan2.2``."""
    wanted = model_id.strip().lower()
    return wanted if wanted in KNOWN_MODELS else DEFAULT_MODEL


def _has_lone_surrogate(value: Any) -> bool:
    """True if a string in ``value`` (nested to any depth, read without recursion) holds
    a lone surrogate."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            if any("\ud800" <= ch <= "\udfff" for ch in item):
                return True
        elif isinstance(item, Mapping):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, list | tuple):
            todo.extend(item)
    return False


def _refuse_lone_surrogates(data: Mapping[str, Any]) -> None:
    """``RequestInvalid`` for text no UTF-8 can carry (JSON's ``"\\ud800"``): pydantic
    cannot even report it (it raises ``UnicodeEncodeError``), nor can it be stored or sent.
    The value is not shown: printing it would fail the same way."""
    errors = [
        FieldError(str(k), None, "must be valid Unicode text (has a lone surrogate)")
        for k, v in data.items()
        if not _has_lone_surrogate(k) and _has_lone_surrogate(v)
    ]
    if errors:
        raise RequestInvalid.listing(errors)


# -- error formatting ---------------------------------------------------------------------
_REASONS: dict[str, str] = {
    "missing": "is required",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "model_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
}


def _reason(error: Mapping[str, Any], field: str) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return RESERVED_FIELDS.get(field, "is not a request field")
    if kind in ("less_than_equal", "less_than"):
        bound = ctx.get("le", ctx.get("lt"))
        at_most = kind == "less_than_equal"
        return f"must be at most {bound}" if at_most else f"must be below {bound}"
    if kind in ("greater_than_equal", "greater_than"):
        bound = ctx.get("ge", ctx.get("gt"))
        at_least = kind == "greater_than_equal"
        return f"must be at least {bound}" if at_least else f"must be above {bound}"
    if kind == "string_too_short":
        return "must not be blank"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return _REASONS.get(kind, str(error["msg"]))


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def request_invalid(exc: ValidationError, data: Any = None, prefix: str = "") -> RequestInvalid:
    """A ``RequestInvalid`` with one ``FieldError`` per error, its field after ``prefix``.

    ``data`` is the raw input, used to show values (pydantic's own error text hides them);
    the value of ``key`` is never shown or kept.
    """
    errors: list[FieldError] = []
    parts: list[str] = []
    source = data if isinstance(data, Mapping) else {}
    for error in exc.errors(include_url=False, include_input=False):
        loc = [str(p) for p in error["loc"]]
        field = ".".join(loc) or "request"
        reason = _reason(error, field)
        missing = error["type"] == "missing" or field not in source
        value: Any = None if missing else source[field]
        if field == "key":
            value = "<redacted>"
        errors.append(FieldError(field, value, reason).at(prefix))
        shown = "" if missing else "=" + ("<redacted>" if field == "key" else _show(value))
        parts.append(f"{prefix}{field}{shown}: {reason}")
    return RequestInvalid("; ".join(parts), errors)
