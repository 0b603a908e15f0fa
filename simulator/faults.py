"""Fault injection: the names, their defaults, validation, and the seeded dice that roll them.

Faults are plain data (a dict of known names) merged by ``POST /_sim/faults``; the dice are a
``random.Random`` seeded at start, so a run with the same seed and request order injects the
same faults. Unknown fault names are refused, so a typo never silently injects nothing.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

DEFAULT_FAULTS: dict[str, Any] = {
    "http_500_share": 0.0,  # API answers that are 500/502/503 with an HTML body
    "truncated_json_share": 0.0,  # 200 answers whose JSON body is cut in half
    "slow_share": 0.0,  # API answers delayed by slow_seconds (async: others go on)
    "slow_seconds": 10.0,
    "link_404_seconds": 0.0,  # output files answer 404 this long after success
    "fail_share": 0.0,  # generations that end failed
    "never_finish_share": 0.0,  # generations that stay processing forever
    "webhook_deliveries": 1,  # times each webhook is POSTed
    "rate_limit_next": 0,  # the next N submits answer 429
    "retry_after": 30,  # retry_after in every 429 rate-limit answer
    "credits_exhausted": False,  # submits answer 402
    "premium_required": False,  # submits answer 403
    "error_as_200": False,  # error answers use HTTP 200 with status: error
    "legacy_messege": False,  # error answers spell the key "messege"
    "spam_filter": True,  # the same submit body again within the window is refused
    "spam_window_seconds": 30.0,
    # answers lost after the job was created (and charged): the client never learns its id
    "lost_after_create_share": 0.0,  # accepted submits whose answer is lost
    "lost_after_create_mode": "mixed",  # how: cut | slow | reset | mixed (each picks one)
    "lost_slow_seconds": 35.0,  # mode slow: the answer comes this late (past client timeouts)
    "lost_before_create_share": 0.0,  # submits whose connection is reset before any job exists
    "external_holders": 0,  # queued-request slots of every key held by another system
    "fetch_401_share": 0.0,  # fetches answered 401 Invalid API key (as by a proxy); submits not
    "fetch_5xx_share": 0.0,  # fetches answered HTML 500/502/503; submits not
    # successful renders whose output links answer 200 with an HTML page forever, never
    # the video (a CDN landing/error page served as 200)
    "bad_link_share": 0.0,
}

LOST_MODES = ("cut", "slow", "reset")

_SHARES = (
    "http_500_share",
    "truncated_json_share",
    "slow_share",
    "fail_share",
    "never_finish_share",
    "lost_after_create_share",
    "lost_before_create_share",
    "fetch_401_share",
    "fetch_5xx_share",
    "bad_link_share",
)
_SECONDS = ("slow_seconds", "link_404_seconds", "spam_window_seconds", "lost_slow_seconds")
_COUNTS = ("webhook_deliveries", "rate_limit_next", "retry_after", "external_holders")
_CHOICES: dict[str, tuple[str, ...]] = {"lost_after_create_mode": (*LOST_MODES, "mixed")}
_FLAGS = ("credits_exhausted", "premium_required", "error_as_200", "legacy_messege", "spam_filter")


def validate_faults(faults: Any) -> dict[str, Any]:
    """Check names and types of a partial faults object; return it normalised. Raises ValueError."""
    if not isinstance(faults, Mapping):
        raise ValueError("faults must be a JSON object")
    out: dict[str, Any] = {}
    for name, value in faults.items():
        if name in _SHARES or name in _SECONDS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number")
            if name in _SHARES and not 0 <= value <= 1:
                raise ValueError(f"{name} must be within 0..1")
            if value < 0:
                raise ValueError(f"{name} must be >= 0")
            out[name] = float(value)
        elif name in _COUNTS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer")
            out[name] = value
        elif name in _FLAGS:
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false")
            out[name] = value
        elif name in _CHOICES:
            if value not in _CHOICES[name]:
                raise ValueError(f"{name} must be one of {', '.join(_CHOICES[name])}")
            out[name] = value
        else:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(DEFAULT_FAULTS))}")
    return out


class Faults:
    """The current faults and the seeded dice; one instance per running simulator."""

    def __init__(self, start: Mapping[str, Any], seed: int) -> None:
        self._start = {**DEFAULT_FAULTS, **validate_faults(start)}
        self._seed = seed
        self.reset()

    def reset(self) -> None:
        self.current: dict[str, Any] = dict(self._start)
        self.rng = random.Random(self._seed * 1_000_003 + 1)

    def update(self, body: Any) -> dict[str, Any]:
        """Merge a partial faults object (``{"reset": true}`` first restores the start values)."""
        if not isinstance(body, Mapping):
            raise ValueError("faults must be a JSON object")
        body = dict(body)
        if body.pop("reset", False) is True:
            self.current = dict(self._start)
        self.current.update(validate_faults(body))
        return dict(self.current)

    def __getitem__(self, name: str) -> Any:
        return self.current[name]

    def roll(self, share_name: str) -> bool:
        """True with probability ``current[share_name]``; no die is cast for a zero share."""
        share = float(self.current[share_name])
        if share <= 0:
            return False
        return share >= 1 or self.rng.random() < share

    def lost_after_create(self) -> str | None:
        """How an accepted submit's answer is lost (``cut``/``slow``/``reset``), or None."""
        if not self.roll("lost_after_create_share"):
            return None
        mode = str(self.current["lost_after_create_mode"])
        return self.rng.choice(LOST_MODES) if mode == "mixed" else mode

    def take_rate_limit(self) -> bool:
        """Consume one of the ``rate_limit_next`` forced 429s, if any are left."""
        left = int(self.current["rate_limit_next"])
        if left <= 0:
            return False
        self.current["rate_limit_next"] = left - 1
        return True
