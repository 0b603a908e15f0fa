"""Request counters for ``GET /_sim/stats``: how often each route was hit, by key and track_id.

Counting happens for every request that reached a route, including ones answered with an
injected fault, so a test can assert exactly how many calls a client made.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

INJECTED = ("http_500", "truncated_json", "slow", "link_404", "rate_limited", "webhooks_sent",
            "webhooks_failed", "queue_limited", "spam_filtered", "credits_exhausted",
            "premium_required")


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
        return {"total": self.total, "by_key": dict(self.by_key),
                "by_track_id": dict(self.by_track_id)}


class Stats:
    """All counters of one simulator; ``reset`` puts them back to zero."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.submits = RouteCounter()
        self.fetches = RouteCounter()
        self.downloads = RouteCounter()
        self.injected: Counter[str] = Counter(dict.fromkeys(INJECTED, 0))

    def inject(self, name: str) -> None:
        self.injected[name] += 1

    def snapshot(self, jobs: dict[str, Any]) -> dict[str, Any]:
        return {
            "submits": self.submits.snapshot(),
            "fetches": self.fetches.snapshot(),
            "downloads": self.downloads.snapshot(),
            "jobs": jobs,
            "injected": dict(self.injected),
        }
