"""The account's queued-request limit as one semaphore in Redis, shared by every worker.

ModelsLab allows 5/10/15 queued requests per account (by plan) and answers 429 past that.
A per-process Celery ``rate_limit`` cannot express "at most N in flight across all hosts",
so the slots live in Redis:

    {prefix}:holders   ZSET job_id → lease expiry (epoch s); a crashed holder frees itself
    {prefix}:waiting   ZSET job_id → job creation time; oldest first

A job that finds no free slot joins ``waiting`` and its submit task simply returns: it
costs nothing while it waits (no retry-polling). Releasing a slot pops the oldest waiting
jobs that now fit, and the caller sends their submit tasks. ``reconcile`` does the same
on a timer, so a lost wake-up is only a delay.

Everything is a single Lua script per call, so two workers never both take the last slot.
"""

from __future__ import annotations

import time
from typing import Any

_ACQUIRE = """
local holders, waiting = KEYS[1], KEYS[2]
local job, now, lease, limit, created = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]),
    tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
if redis.call('ZSCORE', holders, job) then
  redis.call('ZADD', holders, now + lease, job)
  redis.call('ZREM', waiting, job)
  return 1
end
if redis.call('ZCARD', holders) < limit then
  redis.call('ZADD', holders, now + lease, job)
  redis.call('ZREM', waiting, job)
  return 1
end
redis.call('ZADD', waiting, 'NX', created, job)
return 0
"""

_RELEASE = """
local holders, waiting = KEYS[1], KEYS[2]
local job, now, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREM', holders, job)
redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
local free = limit - redis.call('ZCARD', holders)
if free <= 0 then return {} end
local next = redis.call('ZRANGE', waiting, 0, free - 1)
for _, j in ipairs(next) do redis.call('ZREM', waiting, j) end
return next
"""


class AccountLimiter:
    """At most ``limit`` jobs hold a provider slot at once, across every worker."""

    def __init__(self, redis: Any, limit: int, *, prefix: str = "t2v:slots") -> None:
        self.redis = redis
        self.limit = limit
        self.holders_key = f"{prefix}:holders"
        self.waiting_key = f"{prefix}:waiting"
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)

    def acquire(self, job_id: str, *, lease: float, created: float) -> bool:
        """Take (or renew) a slot for ``job_id``; if none is free, join the waiting line."""
        got = self._acquire(
            keys=[self.holders_key, self.waiting_key],
            args=[job_id, time.time(), lease, self.limit, created],
        )
        return bool(got)

    def release(self, job_id: str | None) -> list[str]:
        """Free ``job_id``'s slot; return the waiting jobs (oldest first) that may go now."""
        popped = self._release(
            keys=[self.holders_key, self.waiting_key],
            args=[job_id or "", time.time(), self.limit],
        )
        return _strs(popped)

    def holders(self) -> list[str]:
        self.redis.zremrangebyscore(self.holders_key, "-inf", time.time())
        return _strs(self.redis.zrange(self.holders_key, 0, -1))

    def waiting(self) -> list[str]:
        return _strs(self.redis.zrange(self.waiting_key, 0, -1))

    def is_waiting(self, job_id: str) -> bool:
        return self.redis.zscore(self.waiting_key, job_id) is not None

    def forget(self, job_id: str) -> None:
        """Drop ``job_id`` from both sets (a cancelled or failed job)."""
        self.redis.zrem(self.holders_key, job_id)
        self.redis.zrem(self.waiting_key, job_id)


def _strs(members: Any) -> list[str]:
    return [m.decode() if isinstance(m, bytes) else str(m) for m in members]
