"""Scrape a /metrics endpoint and read it with prometheus_client's own parser."""

from __future__ import annotations

import time
from collections.abc import Callable

import requests
from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape: (name, sorted labels) -> value."""
    body = requests.get(url, timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): float(s.value)
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    """The sum of ``name`` over all its label sets (0 if absent)."""
    return sum(v for (n, _), v in samples.items() if n == name)


def await_value(read: Callable[[], float], want: float, timeout: float = 30.0) -> float:
    """Poll ``read`` until it returns ``want`` (or the timeout: the last value seen)."""
    deadline = time.monotonic() + timeout
    value = read()
    while value != want and time.monotonic() < deadline:
        time.sleep(0.2)
        value = read()
    return value
