"""Priority classes, tenants and labels: what a job carries besides its request.

``priority`` is one of ``PRIORITIES`` (``"interactive"``, ``"normal"``, ``"bulk"``), ``tenant``
a short name (``TENANT_PATTERN``, default none: one shared tenant) and ``labels`` the caller's
small string key/values (``LABEL_*`` limits). The producer refuses anything else at
``enqueue`` with the field and the reason (``job_option_errors``), before anything is written.

Labels are the caller's: stored on the row, filterable, shown; never sent to ModelsLab (they
are not part of the request payload).

The worker's slot line weighs a waiting job by ``flow_cost``: the cost of one slot for a flow
(a priority class and a tenant) is ``1 / (CLASS_WEIGHTS[priority] * tenant weight)``; tenant
weights come from ``T2V_TENANT_WEIGHTS`` (``parse_tenant_weights``). How the line uses them is
``worker.limiter``'s docstring.

Pure logic: this module imports nothing of ours but the error types.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from t2v_core.errors import FieldError, RequestInvalid

#: The priority classes, most urgent first; ``"normal"`` is the default.
PRIORITIES: tuple[str, ...] = ("interactive", "normal", "bulk")
DEFAULT_PRIORITY = "normal"

#: Each class's share of the account relative to ``bulk``, multiplied by the tenant's
#: weight: a backlogged interactive flow is served 100 times as often as a bulk flow of the
#: same tenant weight, and bulk keeps at least its share (never starved).
CLASS_WEIGHTS: dict[str, float] = {"interactive": 100.0, "normal": 10.0, "bulk": 1.0}

TENANT_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
LABEL_KEY_PATTERN = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,62})$")
LABELS_MAX = 16
LABEL_KEY_MAX = 63
LABEL_VALUE_MAX = 256

#: The flow name of jobs enqueued without a tenant (one shared tenant).
NO_TENANT = ""


@dataclass(frozen=True)
class JobOptions:
    """An item's own ``priority``/``tenant``/``labels`` in ``enqueue_many`` (None: the call's)."""

    priority: str | None = None
    tenant: str | None = None
    labels: Mapping[str, str] | None = None


def job_option_errors(priority: Any, tenant: Any, labels: Any) -> list[FieldError]:
    """Every reason ``priority``, ``tenant`` and ``labels`` are refused (empty: all fine)."""
    errors: list[FieldError] = []
    if priority not in PRIORITIES:
        errors.append(FieldError("priority", priority, f"must be one of {', '.join(PRIORITIES)}"))
    if tenant is not None and (not isinstance(tenant, str) or not TENANT_PATTERN.match(tenant)):
        errors.append(FieldError("tenant", tenant, "must be 1-64 characters of A-Z a-z 0-9 . _ -"))
    errors.extend(label_errors(labels))
    return errors


def label_errors(labels: Any) -> list[FieldError]:
    """Why ``labels`` is refused: not a mapping of strings, too many, a key or value too long."""
    if labels is None:
        return []
    if not isinstance(labels, Mapping):
        return [FieldError("labels", None, "must be a mapping of string keys to string values")]
    errors: list[FieldError] = []
    if len(labels) > LABELS_MAX:
        errors.append(FieldError("labels", None, f"at most {LABELS_MAX} labels, got {len(labels)}"))
    for key, value in labels.items():
        field = f"labels.{key}" if isinstance(key, str) else "labels"
        if not isinstance(key, str) or not LABEL_KEY_PATTERN.match(key):
            errors.append(
                FieldError(
                    field,
                    key if isinstance(key, str | int) else None,
                    f"a key must be 1-{LABEL_KEY_MAX} characters of A-Z a-z 0-9 . _ / - "
                    "starting with a letter or digit",
                )
            )
        elif not isinstance(value, str):
            errors.append(FieldError(field, None, "must be a string"))
        elif len(value) > LABEL_VALUE_MAX:
            errors.append(
                FieldError(field, None, f"at most {LABEL_VALUE_MAX} characters, got {len(value)}")
            )
    return errors


def check_job_options(priority: Any, tenant: Any, labels: Any) -> None:
    """Raise ``RequestInvalid`` naming every bad option."""
    errors = job_option_errors(priority, tenant, labels)
    if errors:
        raise RequestInvalid.listing(errors)


def parse_label_filter(items: Any) -> dict[str, str]:
    """``["order=1234", ...]`` (the CLI's ``--label``) as a dict; ``RequestInvalid`` if bad."""
    found: dict[str, str] = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        if not sep or not key:
            raise RequestInvalid.of("label", item, "must be KEY=VALUE")
        found[key] = value
    errors = label_errors(found)
    if errors:
        raise RequestInvalid.listing(errors)
    return found


def parse_tenant_weights(text: str | Mapping[str, float] | None) -> dict[str, float]:
    """``"acme=3,trial=1"`` as ``{"acme": 3.0, "trial": 1.0}``; ``ValueError`` when bad."""
    if text is None:
        return {}
    pairs: list[tuple[str, object]] = []
    if isinstance(text, Mapping):
        pairs = list(text.items())
    else:
        for part in text.split(","):
            if not part.strip():
                continue
            key, sep, raw = part.partition("=")
            if not sep:
                raise ValueError(f"T2V_TENANT_WEIGHTS: {part.strip()!r} is not TENANT=WEIGHT")
            pairs.append((key.strip(), raw.strip()))
    weights: dict[str, float] = {}
    for tenant, given in pairs:
        name = str(tenant)
        try:
            weight = float(str(given))
        except ValueError:
            raise ValueError(f"T2V_TENANT_WEIGHTS: weight of {name!r} is not a number") from None
        if not (0 < weight <= 1000):
            raise ValueError(f"T2V_TENANT_WEIGHTS: weight of {name!r} must be in (0, 1000]")
        weights[name] = weight
    return weights


def flow_name(priority: str | None, tenant: str | None) -> str:
    """The slot line's flow of a job: its class and its tenant (``bulk/acme``)."""
    return f"{priority or DEFAULT_PRIORITY}/{tenant or NO_TENANT}"


def flow_cost(priority: str | None, tenant: str | None, weights: Mapping[str, float]) -> float:
    """What one slot costs a flow in the line's virtual time: 1 / (class x tenant weight)."""
    klass = CLASS_WEIGHTS.get(priority or DEFAULT_PRIORITY, CLASS_WEIGHTS[DEFAULT_PRIORITY])
    return 1.0 / (klass * weights.get(tenant or NO_TENANT, 1.0))


def item_options(
    count: int, call: JobOptions, options: Sequence[JobOptions | None] | None
) -> tuple[list[dict[str, Any]], list[FieldError]]:
    """``enqueue_many``'s options per item (an item's own, else the call's) as
    ``insert_values`` keywords, and every bad one as ``[i].field`` errors."""
    errors = job_option_errors(call.priority, call.tenant, call.labels)
    if options is not None and len(options) != count:
        reason = f"must have one entry per request: {len(options)} for {count} request(s)"
        errors.append(FieldError("options", None, reason))
    if errors:
        return [], errors
    found: list[dict[str, Any]] = []
    for index in range(count):
        own = options[index] if options is not None else None
        own = own or JobOptions()
        priority = own.priority if own.priority is not None else call.priority
        tenant = own.tenant if own.tenant is not None else call.tenant
        labels = own.labels if own.labels is not None else call.labels
        if own != JobOptions():
            bad = job_option_errors(priority or DEFAULT_PRIORITY, tenant, labels)
            errors.extend(error.at(f"[{index}].") for error in bad)
        found.append(
            {
                "priority": priority or DEFAULT_PRIORITY,
                "tenant": tenant,
                "labels": dict(labels) if labels else None,
            }
        )
    return found, errors
