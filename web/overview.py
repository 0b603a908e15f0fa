"""The counts at the top of the list, and the account's slots in use.

States come from the table (``JobStore.count_by_status``: one ``GROUP BY`` on the status
index); "waiting for a slot" and "slots in use" come from Redis, read the way
``t2v status --account`` reads them (``producer.account.account_status``). When Redis
does not answer, the slot figures are None and the page says so: the list still works.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from producer.account import AccountStatus, account_status
from t2v_core.store import JobStore

log = logging.getLogger(__name__)

# What the list shows, in this order: (label, states counted).
COUNTED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("queued", ("queued",)),
    ("rendering", ("submitting", "processing")),
    ("downloading", ("downloading",)),
    ("parked", ("parked",)),
    ("failed", ("failed",)),
    ("succeeded", ("succeeded",)),
)


@dataclass(frozen=True)
class Overview:
    counts: dict[str, int]
    account: AccountStatus | None
    slot_limit: int

    @property
    def waiting_for_slot(self) -> int | None:
        return self.account.jobs_waiting if self.account else None

    @property
    def slots_in_use(self) -> int | None:
        return self.account.slots_in_use if self.account else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "counts": {**self.counts, "waiting_for_slot": self.waiting_for_slot},
            "slots_in_use": self.slots_in_use,
            "slot_limit": self.slot_limit,
        }


def overview(store: JobStore, redis: Any, slot_limit: int) -> Overview:
    by_status = store.count_by_status()
    counts = {label: sum(by_status.get(s, 0) for s in states) for label, states in COUNTED}
    account: AccountStatus | None = None
    if redis is not None:
        try:
            account = account_status(redis)
        except Exception as exc:  # noqa: BLE001 - the page works without Redis
            log.warning("cannot read the account's slots from Redis: %s", type(exc).__name__)
    limit = slot_limit
    if account is not None and account.effective_limit:
        limit = min(slot_limit, account.effective_limit)
    return Overview(counts=counts, account=account, slot_limit=limit)
