"""The account's queued-request limit as one semaphore in Redis, shared by every worker.

ModelsLab allows 5/10/15 queued requests per account (by plan) and answers 429 past that.
A per-process Celery ``rate_limit`` cannot express "at most N in flight across all hosts",
so the slots live in Redis:

    {prefix}:holders   ZSET job_id → lease expiry (epoch s); a crashed holder frees itself
    {prefix}:waiting   ZSET job_id → job creation time; oldest first (ties: by job id)
    {prefix}:ready     present while the line is whole; Redis restarted empty → absent
    {prefix}:state     HASH effective limit learned from the provider's 429s, its max, when
    {prefix}:eta:{m}   LIST the provider's recent etas for model m (how long a slot of a
                       submit whose answer was lost is held)

A slot is held while the provider may be rendering for us: taken for a short hold before
the submit is sent (as long as a render whose answer is lost could run), stretched to the
poll deadline once the provider answered, given back when the render ended. A job that
finds no free slot joins ``waiting`` and its submit task simply returns: it costs nothing
while it waits (no retry-polling). Releasing a slot names the oldest waiting jobs that now
fit (they keep their place until their own acquire takes the slot), and the caller sends
their submit tasks. A new job never takes a slot while older jobs wait for it: a job's
place is its rank in ``waiting`` (``ZRANK``), so no number ever passes through Lua's
14-digit number formatting.

When ``ready`` is missing (Redis lost the line), ``acquire`` raises ``LineLost`` and takes
nothing; the caller rebuilds the line from the job table (``rebuild``) and tries again.

The limit used is ``min(configured, effective)``: a 429 "Maximum N queued requests" while
we hold fewer than N (someone else uses the key) lowers ``effective`` to what the provider
accepted; each accepted submit grows it back by ``1/effective``, and once ``retry_after``
has passed one more slot is probed per ``retry_after`` even if nothing is accepted (so a
slot held by a render that never ends cannot stall the line): additive increase after a
decrease to what the provider took, as Netflix's concurrency-limits does.

Everything that decides is a single Lua script per call, so two workers never both take
the last slot. Time comes from Redis (TIME) unless a clock is passed in (model tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from t2v_core.names import SLOTS_PREFIX, eta_key, slot_keys
from worker.limiter_scripts import (
    _ACCEPTED,
    _ACQUIRE,
    _HOLD,
    _HOLDERS,
    _HOLDS,
    _LIMIT_NOW,
    _QUEUE_FULL,
    _RELEASE,
)


class LineLost(Exception):
    """Redis no longer holds the slot line (restarted empty, failed over): rebuild it."""


@dataclass(frozen=True)
class AccountView:
    """What ``t2v status --account`` and the metrics show about the account's slots."""

    configured: int
    effective: int
    provider_max: int | None
    in_use: int
    waiting: int
    queue_full_429s: int
    last_429_at: float | None
    line_ready: bool


class AccountLimiter:
    """At most ``limit`` jobs hold a provider slot at once, across every worker."""

    def __init__(
        self,
        redis: Any,
        limit: int,
        *,
        prefix: str = SLOTS_PREFIX,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.redis = redis
        self.limit = limit
        self.prefix = prefix
        keys = slot_keys(prefix)
        self.holders_key = keys["holders"]
        self.waiting_key = keys["waiting"]
        self.ready_key = keys["ready"]
        self.state_key = keys["state"]
        self._clock = clock
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)
        self._hold = redis.register_script(_HOLD)
        self._holds = redis.register_script(_HOLDS)
        self._holders = redis.register_script(_HOLDERS)
        self._queue_full = redis.register_script(_QUEUE_FULL)
        self._accepted = redis.register_script(_ACCEPTED)
        self._limit_now = redis.register_script(_LIMIT_NOW)

    def _now(self) -> str:
        return "" if self._clock is None else repr(float(self._clock()))

    @property
    def _line(self) -> list[str]:
        return [self.holders_key, self.waiting_key, self.ready_key, self.state_key]

    # -- the line ----------------------------------------------------------------------
    def acquire(self, job_id: str, *, lease: float, created: float) -> bool:
        """Take (or renew) a slot for ``job_id``; if none is free, join the waiting line.

        Raises ``LineLost`` (and takes nothing) when Redis lost the line.
        """
        got = self._acquire(
            keys=self._line, args=[self._now(), job_id, lease, self.limit, repr(float(created))]
        )
        if int(got) < 0:
            raise LineLost(self.ready_key)
        return bool(got)

    def acquire_many(self, jobs: Sequence[tuple[str, float]], *, lease: float) -> list[bool]:
        """``acquire`` for each (job, creation time), oldest first, in one round trip (the
        same script, pipelined): True where the job got a slot, False where it waits in line.

        Raises ``LineLost`` when Redis lost the line (the calls before it may have taken
        slots; the caller rebuilds the line and calls again, which renews them).
        """
        pipe = self.redis.pipeline(transaction=False)
        now = self._now()
        for job_id, created in jobs:
            self._acquire(
                keys=self._line,
                args=[now, job_id, lease, self.limit, repr(float(created))],
                client=pipe,
            )
        got = pipe.execute()
        if any(int(g) < 0 for g in got):
            raise LineLost(self.ready_key)
        return [bool(int(g)) for g in got]

    def release(self, job_id: str | None) -> list[str]:
        """Free ``job_id``'s slot (and its place in line); return the oldest waiting jobs
        that fit in the free slots now. They stay in line until their acquire succeeds, so
        a wake-up that is lost only delays them, and nobody younger can take their turn."""
        popped = self._release(keys=self._line, args=[self._now(), job_id or "", self.limit])
        return _strs(popped)

    def leave_line(self, job_id: str) -> list[str]:
        """Take ``job_id`` out of the waiting line (keeping any slot it holds); return who
        fits in the free slots now, as ``release`` does."""
        self.redis.zrem(self.waiting_key, job_id)
        return self.release(None)

    def hold(self, job_id: str, lease: float) -> bool:
        """Set the lease of the slot ``job_id`` holds to ``lease`` s from now; a job whose
        render is running and whose slot lapsed takes a free one back (never past the
        limit, regardless of the line: the provider already counts it). True if held."""
        return bool(self._hold(keys=self._line, args=[self._now(), job_id, lease, self.limit]))

    def holds(self, job_id: str) -> bool:
        """True if ``job_id`` holds a slot now (checked right before a submit is sent)."""
        return bool(self._holds(keys=[self.holders_key], args=[self._now(), job_id]))

    def forget(self, job_id: str) -> None:
        """Drop ``job_id`` from both sets without waking anyone."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(self.holders_key, job_id)
        pipe.zrem(self.waiting_key, job_id)
        pipe.execute()

    def is_ready(self) -> bool:
        return bool(self.redis.exists(self.ready_key))

    def rebuild(
        self,
        holders: Iterable[tuple[str, float]],
        waiters: Iterable[tuple[str, float]],
        *,
        chunk: int = 1000,
    ) -> None:
        """Write the line from the job table: ``holders`` (job, lease seconds from now) and
        ``waiters`` (job, creation time). Acquires refuse until the last write (``ready``),
        so nobody takes a slot from a half-written line."""
        batch: list[tuple[str, float]] = []
        for item in waiters:
            batch.append(item)
            if len(batch) >= chunk:
                self.redis.zadd(self.waiting_key, {j: c for j, c in batch}, nx=True)
                batch = []
        if batch:
            self.redis.zadd(self.waiting_key, {j: c for j, c in batch}, nx=True)
        now = self._clock() if self._clock is not None else _redis_time(self.redis)
        held = {job: now + lease for job, lease in holders}
        pipe = self.redis.pipeline(transaction=True)
        if held:
            # GT: a render that answered while the table was read keeps its longer hold.
            pipe.zadd(self.holders_key, held, gt=True)
            pipe.zrem(self.waiting_key, *held)
        pipe.set(self.ready_key, "1")
        pipe.execute()

    # -- capacity learned from the provider -----------------------------------------------
    def queue_full(self, job_id: str, *, provider_max: int | None, retry_after: float) -> int:
        """The provider refused ``job_id``: over its queue limit. Frees the slot and lowers
        the effective limit to what the provider accepted; returns the new limit."""
        eff = self._queue_full(
            keys=[self.holders_key, self.state_key],
            args=[
                self._now(),
                job_id,
                "" if provider_max is None else provider_max,
                max(0.0, retry_after),
                self.limit,
            ],
        )
        return int(float(_str(eff)))

    def accepted(self) -> bool:
        """An accepted submit: grow the effective limit back a step. True if a whole slot
        came back (wake the line)."""
        return bool(self._accepted(keys=[self.state_key], args=[self._now(), self.limit]))

    def effective_limit(self) -> int:
        """The limit in use now (``limit_now`` in the scripts)."""
        return int(self._limit_now(keys=[self.state_key], args=[self._now(), self.limit]))

    # -- what a render takes --------------------------------------------------------------
    def note_eta(self, model: str, eta: float, *, keep: int = 50) -> None:
        key = eta_key(self.prefix, model)
        pipe = self.redis.pipeline(transaction=False)
        pipe.lpush(key, repr(float(eta)))
        pipe.ltrim(key, 0, keep - 1)
        pipe.execute()

    def recent_etas(self, model: str) -> list[float]:
        return [float(_str(v)) for v in self.redis.lrange(eta_key(self.prefix, model), 0, -1)]

    # -- reads ---------------------------------------------------------------------------
    def holders(self) -> list[str]:
        return _strs(self._holders(keys=[self.holders_key], args=[self._now()]))

    def waiting(self) -> list[str]:
        return _strs(self.redis.zrange(self.waiting_key, 0, -1))

    def waiting_count(self) -> int:
        return int(self.redis.zcard(self.waiting_key))

    def is_waiting(self, job_id: str) -> bool:
        return self.redis.zscore(self.waiting_key, job_id) is not None

    def view(self) -> AccountView:
        state = {_str(k): _str(v) for k, v in self.redis.hgetall(self.state_key).items()}
        last = state.get("last_429_at")
        pmax = state.get("provider_max")
        return AccountView(
            configured=self.limit,
            effective=self.effective_limit(),
            provider_max=int(float(pmax)) if pmax else None,
            in_use=len(self.holders()),
            waiting=self.waiting_count(),
            queue_full_429s=int(state.get("queue_full_429s", 0)),
            last_429_at=float(last) if last else None,
            line_ready=self.is_ready(),
        )


def _redis_time(redis: Any) -> float:
    seconds, micros = redis.time()
    return float(seconds) + float(micros) / 1_000_000


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _strs(members: Sequence[Any]) -> list[str]:
    return [_str(m) for m in members]
