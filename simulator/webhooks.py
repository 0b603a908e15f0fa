"""Best-effort webhook delivery: POST a JSON payload N times, short timeout, errors ignored.

Runs in a worker thread (``asyncio.to_thread``) so a slow receiver never stalls the API.
Proxies from the environment are ignored: the simulator talks to the URL it was given.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from collections.abc import Callable
from typing import Any

log = logging.getLogger("simulator.webhooks")
TIMEOUT_SECONDS = 3.0
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def post_once(url: str, payload: dict[str, Any], timeout: float = TIMEOUT_SECONDS) -> int:
    """POST ``payload``; return the HTTP status (raises on connection errors)."""
    request = urllib.request.Request(  # noqa: S310 - http(s) only, checked by validation
        url,
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "t2v-simulator/0.1"},
    )
    with _opener.open(request, timeout=timeout) as response:
        response.read()
        return int(response.status)


async def deliver(
    url: str, payload: dict[str, Any], times: int, on_result: Callable[[bool], None]
) -> None:
    """Deliver ``times`` times; ``on_result(ok)`` after each attempt. Never raises."""
    for _ in range(max(0, times)):
        try:
            await asyncio.to_thread(post_once, url, payload)
            on_result(True)
        except Exception as exc:  # noqa: BLE001 - best effort, like the real service
            log.info("webhook to %s failed: %s", url, exc)
            on_result(False)
