"""A Redis lock held for a while by one process: taken with a token, renewed by the holder
while it works, never renewed or dropped once another process holds it.

Reconcile runs one at a time under one (``RECONCILE_LOCK_KEY``), and so does the rebuild
of a lost slot line (``rebuild_lock_key``). Both are short-lived so that a holder killed
mid-work (a host dying) blocks the others only briefly; a long holder renews as it goes.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

__all__ = ["Lease"]

# Extend the lock only while it is still ours (a holder that outlived its lock and lost it
# to another must not take it back).
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class Lease:
    """The lock ``key`` for ``seconds``, renewed by ``renew`` once a third of it has gone
    (a short holder, the usual case, costs no renewals)."""

    def __init__(self, redis: Any, key: str, seconds: float) -> None:
        self.redis = redis
        self.key = key
        self.token = uuid.uuid4().hex
        self.ms = max(1000, int(seconds * 1000))
        self.renewed = time.monotonic()

    def take(self) -> bool:
        self.renewed = time.monotonic()
        return bool(self.redis.set(self.key, self.token, nx=True, px=self.ms))

    def renew(self) -> None:
        if (time.monotonic() - self.renewed) * 1000 < self.ms / 3:
            return
        self.renewed = time.monotonic()
        self.redis.eval(_RENEW, 1, self.key, self.token, self.ms)

    def drop(self) -> None:
        if self.redis.get(self.key) in (self.token, self.token.encode()):
            self.redis.delete(self.key)
