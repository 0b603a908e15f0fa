"""The account's queued-request limit as one semaphore in Redis, shared by every worker.

ModelsLab allows 5/10/15 queued requests per account (by plan) and answers 429 past that.
A per-process Celery ``rate_limit`` cannot express "at most N in flight across all hosts",
so the slots live in Redis:

    {prefix}:holders   ZSET job_id → lease expiry (epoch s); a crashed holder frees itself
    {prefix}:waiting   ZSET job_id → job creation time; oldest first

A job that finds no free slot joins ``waiting`` and its submit task simply returns: it
costs nothing while it waits (no retry-polling). Releasing a slot pops the oldest waiting
jobs that now fit (they keep their place until their own acquire takes the slot), and the
caller sends their submit tasks. ``reconcile`` does the same on a timer, so a lost wake-up
is only a delay. A new job never takes a slot while older jobs wait for it.

Everything is a single Lua script per call, so two workers never both take the last slot.
"""

from __future__ import annotations

from typing import Any

# Time comes from Redis (TIME), so hosts with skewed clocks agree on lease expiry.
_NOW = "local t = redis.call('TIME'); local now = tonumber(t[1]) + tonumber(t[2]) / 1000000\n"

_ACQUIRE = _NOW + """
local holders, waiting = KEYS[1], KEYS[2]
local job, lease, limit, created = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]),
    tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
if redis.call('ZSCORE', holders, job) then
  redis.call('ZADD', holders, now + lease, job)
  redis.call('ZREM', waiting, job)
  return 1
end
-- Oldest first: a slot goes to this job only if fewer jobs older than it are waiting
-- than there are free slots (a new job never jumps the line).
local free = limit - redis.call('ZCARD', holders)
local older = redis.call('ZCOUNT', waiting, '-inf', '(' .. created)
if free > 0 and older < free then
  redis.call('ZADD', holders, now + lease, job)
  redis.call('ZREM', waiting, job)
  return 1
end
redis.call('ZADD', waiting, 'NX', created, job)
return 0
"""

_RELEASE = _NOW + """
local holders, waiting = KEYS[1], KEYS[2]
local job, limit = ARGV[1], tonumber(ARGV[2])
redis.call('ZREM', holders, job)
redis.call('ZREM', waiting, job)
redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
local free = limit - redis.call('ZCARD', holders)
if free <= 0 then return {} end
-- Who should go next; they stay in line until their own acquire takes the slot.
return redis.call('ZRANGE', waiting, 0, free - 1)
"""

_HOLDERS = _NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
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
        self._holders = redis.register_script(_HOLDERS)

    def acquire(self, job_id: str, *, lease: float, created: float) -> bool:
        """Take (or renew) a slot for ``job_id``; if none is free, join the waiting line."""
        got = self._acquire(
            keys=[self.holders_key, self.waiting_key],
            args=[job_id, lease, self.limit, created],
        )
        return bool(got)

    def release(self, job_id: str | None) -> list[str]:
        """Free ``job_id``'s slot (and its place in line); return the oldest waiting jobs
        that fit in the free slots now. They stay in line until their acquire succeeds, so
        a wake-up that is lost only delays them, and nobody younger can take their turn."""
        popped = self._release(
            keys=[self.holders_key, self.waiting_key],
            args=[job_id or "", self.limit],
        )
        return _strs(popped)

    def holders(self) -> list[str]:
        return _strs(self._holders(keys=[self.holders_key]))

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
