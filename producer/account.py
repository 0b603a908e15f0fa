"""The account's slots as the workers see them, read from Redis for ``t2v status --account``.

Read-only and key-free: what is configured, the limit in use (lowered by the provider's
429s while another system shares the key, grown back step by step), how many slots our
jobs hold and how many jobs wait. The keys are written by ``worker.limiter``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from t2v_core.names import SLOTS_PREFIX, slot_keys


@dataclass(frozen=True)
class AccountStatus:
    effective_limit: int | None  # None: the configured limit (nothing learned)
    provider_max: int | None
    slots_in_use: int
    jobs_waiting: int
    queue_full_429s: int
    last_429_at: float | None
    line_ready: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def account_status(redis: Any, prefix: str = SLOTS_PREFIX) -> AccountStatus:
    """One consistent-enough read of the slot keys (a pipeline, no scripts)."""
    keys = slot_keys(prefix)
    pipe = redis.pipeline(transaction=False)
    pipe.zcount(keys["holders"], f"({time.time()}", "+inf")
    pipe.zcard(keys["waiting"])
    pipe.hgetall(keys["state"])
    pipe.exists(keys["ready"])
    in_use, waiting, raw, ready = pipe.execute()
    state = {_s(k): _s(v) for k, v in raw.items()}
    effective = state.get("effective")
    return AccountStatus(
        effective_limit=int(float(effective)) if effective else None,
        provider_max=int(float(state["provider_max"])) if state.get("provider_max") else None,
        slots_in_use=int(in_use),
        jobs_waiting=int(waiting),
        queue_full_429s=int(state.get("queue_full_429s", 0)),
        last_429_at=float(state["last_429_at"]) if state.get("last_429_at") else None,
        line_ready=bool(ready),
    )


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
