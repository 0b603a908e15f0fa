"""Request counters for ``GET /_sim/stats``: how often each route was hit, by key and track_id.

Counting happens for every request that reached a route, including ones answered with an
injected fault, so a test can assert exactly how many calls a client made. Beside the routes:
``created`` counts the jobs really created (paid generations) by key and track_id,
``lost_after_create`` the accepted submits whose answer was then lost (also ``by_mode``), and
``lost_before_create`` the submits whose connection was reset before any job existed.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

INJECTED = (
    "http_500",
    "truncated_json",
    "slow",
    "link_404",
    "rate_limited",
    "webhooks_sent",
    "webhooks_failed",
    "queue_limited",
    "spam_filtered",
    "credits_exhausted",
    "premium_required",
    "queue_limited_external",
    "lost_after_create_cut",
    "lost_after_create_slow",
    "lost_after_create_reset",
    "lost_before_create",
    "fetch_401",
    "fetch_5xx",
    "bad_link",
)


class RouteCounter:
    """Total hits of one route plus the same hits split by API key and by track_id."""

    def __init__(self) -> None:
        self.total = 0
        self.by_key: Counter[str] = Counter()
        self.by_track_id: Counter[str] = Counter()

    def count(self, key: Any, track_id: Any) -> None:
        self.total += 1
        if isinstance(key, str) and key:
            self.by_key[key] += 1
        if track_id is not None and track_id != "":
            self.by_track_id[str(track_id)] += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_key": dict(self.by_key),
            "by_track_id": dict(self.by_track_id),
        }


class Stats:
    """All counters of one simulator; ``reset`` puts them back to zero."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.submits = RouteCounter()
        self.fetches = RouteCounter()
        self.downloads = RouteCounter()
        self.created = RouteCounter()
        self.lost_after_create = RouteCounter()
        self.lost_modes: Counter[str] = Counter()
        self.lost_before_create = RouteCounter()
        self.injected: Counter[str] = Counter(dict.fromkeys(INJECTED, 0))
        # The last accepted submit bodies, without the key: what a client really sent.
        self.bodies: deque[dict[str, Any]] = deque(maxlen=1000)

    def inject(self, name: str) -> None:
        self.injected[name] += 1

    def lost_after(self, key: Any, track_id: Any, mode: str) -> None:
        self.lost_after_create.count(key, track_id)
        self.lost_modes[mode] += 1
        self.injected[f"lost_after_create_{mode}"] += 1

    def lost_before(self, key: Any, track_id: Any) -> None:
        self.lost_before_create.count(key, track_id)
        self.injected["lost_before_create"] += 1

    def snapshot(self, jobs: dict[str, Any]) -> dict[str, Any]:
        return {
            "submits": self.submits.snapshot(),
            "fetches": self.fetches.snapshot(),
            "downloads": self.downloads.snapshot(),
            "created": self.created.snapshot(),
            "lost_after_create": {
                **self.lost_after_create.snapshot(),
                "by_mode": dict(self.lost_modes),
            },
            "lost_before_create": self.lost_before_create.snapshot(),
            "jobs": jobs,
            "injected": dict(self.injected),
            "submit_bodies": list(self.bodies),
        }
