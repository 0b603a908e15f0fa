"""The account's queued-request limit as one semaphore in Redis, shared by every worker.

ModelsLab allows 5/10/15 queued requests per account (by plan) and answers 429 past that.
A per-process Celery ``rate_limit`` cannot express "at most N in flight across all hosts",
so the slots live in Redis:

    {prefix}:holders   ZSET job_id → lease expiry (epoch s); a crashed holder frees itself
    {prefix}:waiting   ZSET job_id → job creation time: every job waiting for a slot
    {prefix}:flows     ZSET flow → virtual tag of the flow's first waiting job
    {prefix}:fair:{f}  ZSET job_id → creation time: flow f's waiting jobs, oldest first
    {prefix}:flowof    HASH job_id → its flow
    {prefix}:fair      HASH V (the line's virtual time), c:{f} (a slot's cost), l:{f} (last tag)
    {prefix}:ready     present while the line is whole; Redis restarted empty → absent
    {prefix}:state     HASH effective limit learned from the provider's 429s, its max, when
    {prefix}:eta:{m}   LIST the provider's recent etas for model m (how long a slot of a
                       submit whose answer was lost is held)

A slot is held while the provider may be rendering for us: taken for a short hold before
the submit is sent (as long as a render whose answer is lost could run), stretched to the
poll deadline once the provider answered, given back when the render ended. A job that
finds no free slot joins the line and its submit task simply returns: it costs nothing
while it waits (no retry-polling). Releasing a slot names the waiting jobs the release
brought among the first ``free`` of the fair order (they keep their place until their own
acquire takes the slot), and the caller sends their submit tasks. Nobody the order puts
later takes a slot while an earlier job waits for it: acquire takes a slot only if its job
is among the first ``free`` of the order.

**Wakes do not multiply.** A release names only the jobs it let in, never those already
among the first ``free`` (named when they got there), so a release that changed nothing
(a second copy of a message, a job that holds nothing and is not in line) names nobody,
and a woken job that cannot take a slot sends nothing more. Naming the whole window at
every release made each stale submit message send up to ``free`` more: after a wipe left
60 slots free, Redis filled with millions of submit messages while the line stood still.
Only the explicit wake (``release(None)``: reconcile's beat, a rebuilt line, a slot the
provider gave back) names all of the first ``free`` again, at most ``free`` a call: their
wakes may have been lost (a killed worker, a wiped broker), or the window grew without a
release (a lease that lapsed before anyone looked, the limit growing back).

**The fair order** (weighted fair queueing with self-clocked virtual tags, as SCFQ): a
job's *flow* is its priority class and tenant (``bulk/acme``); one slot costs a flow
``1 / (class weight × tenant weight)`` (``t2v_core.fairness``: interactive 100, normal 10,
bulk 1; tenants from ``T2V_TENANT_WEIGHTS``, default 1). A flow's waiting jobs are served
oldest first (by creation, whatever order they joined in); the i-th has the virtual tag
``head + i × cost``, and free slots go to the smallest tags (ties by flow name). A slot
taken moves the line's virtual time ``V`` to the tag served and the flow's head one cost
on. A flow that was empty starts at ``max(V, its last tag) + cost``: an idle tenant saves
up no credit and a busy one is forgiven no debt. So backlogged flows share the slots in
proportion to their weights (two bulk tenants 1:1, ``acme=3,trial=1`` 3:1), and a new
interactive job's tag is ``V + 1/100``: ahead of every bulk job but those already within
a hundredth of a slot of V — the next free slot, in practice.

**Starvation: a minimum share, not aging.** Classes are weights, not strict levels, so a
backlogged bulk flow keeps at least ``1 / (sum of the backlogged flows' weights)`` of the
slots (1 in 11 against one normal tenant's backlog, 1 in 101 against an interactive one):
bulk work always moves, at a rate one can compute, and an interactive job still waits
for at most about one slot. Aging (promoting a bulk job older than X) was not chosen: once
a large backlog ages, all of it is promoted together and competes with the class it was
promoted into, which starves that class instead; and "older than X" would have to be
re-checked for every waiting job, which a per-decision O(log n) script cannot do.

**Cost per decision**: O(k log n) Redis work for the k = free slots (at most the account
limit: 5/10/15) — ``ZRANGE`` on ``flows`` and on at most k flows' FIFOs, a k-way merge in
Lua — and O(log n) to join or leave; never a scan of the line. One Lua script per
decision, so two workers never both take the last slot.

When ``ready`` is missing (Redis lost the line), ``acquire`` raises ``LineLost`` and takes
nothing; the caller rebuilds the line from the job table (``rebuild``) and tries again.

The limit used is ``min(configured, effective)``: a 429 "Maximum N queued requests" while
we hold fewer than N (someone else uses the key) lowers ``effective`` to what the provider
accepted; each accepted submit grows it back by ``1/effective``, and once ``retry_after``
has passed one more slot is probed per ``retry_after`` even if nothing is accepted (so a
slot held by a render that never ends cannot stall the line): additive increase after a
decrease to what the provider took, as Netflix's concurrency-limits does. Time comes
from Redis (TIME) unless a clock is passed in (model tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from t2v_core.names import SLOTS_PREFIX, eta_key, slot_keys
from worker.limiter_scripts import (
    _ACCEPTED,
    _ACQUIRE,
    _FORGET,
    _HOLD,
    _HOLDERS,
    _HOLDS,
    _JOIN_MANY,
    _LIMIT_NOW,
    _NEXT,
    _QUEUE_FULL,
    _REBUILT,
    _RELEASE,
    ScriptPipeline,
    _redis_time,
    _str,
    _strs,
)

#: The flow of a job enqueued with no priority and no tenant, and what one slot costs it.
DEFAULT_FLOW = "normal/"
DEFAULT_COST = 0.1


def _waiter_fields(item: tuple[str, float] | tuple[str, float, str, float]) -> list[str]:
    # A waiter's job, creation time, flow and cost, as ``_JOIN_MANY`` takes them.
    flow, cost = (item[2], item[3]) if len(item) == 4 else (DEFAULT_FLOW, DEFAULT_COST)
    return [item[0], repr(float(item[1])), str(flow), repr(float(cost))]


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
        self.flows_key = keys["flows"]
        self.flowof_key = keys["flowof"]
        self.fair_key = keys["fair"]
        self._clock = clock
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)
        self._hold = redis.register_script(_HOLD)
        self._holds = redis.register_script(_HOLDS)
        self._holders = redis.register_script(_HOLDERS)
        self._queue_full = redis.register_script(_QUEUE_FULL)
        self._accepted = redis.register_script(_ACCEPTED)
        self._limit_now = redis.register_script(_LIMIT_NOW)
        self._forget = redis.register_script(_FORGET)
        self._next = redis.register_script(_NEXT)
        self._join_many = redis.register_script(_JOIN_MANY)
        self._rebuilt = redis.register_script(_REBUILT)

    def _now(self) -> str:
        return "" if self._clock is None else repr(float(self._clock()))

    @property
    def _line(self) -> list[str]:
        return [
            self.holders_key,
            self.waiting_key,
            self.ready_key,
            self.state_key,
            self.flows_key,
            self.flowof_key,
            self.fair_key,
        ]

    # -- the line ----------------------------------------------------------------------
    def acquire(
        self,
        job_id: str,
        *,
        lease: float,
        created: float,
        flow: str = DEFAULT_FLOW,
        cost: float = DEFAULT_COST,
    ) -> bool:
        """Take (or renew) a slot for ``job_id``; if none is free, join the waiting line in
        ``flow`` (``t2v_core.fairness.flow_name``), where one slot costs ``cost``
        (``flow_cost``): oldest ``created`` first within the flow, flows by virtual tag.

        Raises ``LineLost`` (and takes nothing) when Redis lost the line.
        """
        args = [self._now(), job_id, lease, self.limit, repr(float(created)), flow, repr(cost)]
        got = self._acquire(keys=self._line, args=args)
        if int(got) < 0:
            raise LineLost(self.ready_key)
        return bool(got)

    def acquire_many(
        self, jobs: Sequence[tuple[str, float, str, float]], *, lease: float
    ) -> list[bool]:
        """``acquire`` for each (job, creation time, flow, cost), oldest first, in one round
        trip (the same script, pipelined): True where the job got a slot, False where it
        waits in line.

        Raises ``LineLost`` when Redis lost the line (the calls before it may have taken
        slots; the caller rebuilds the line and calls again, which renews them).
        """
        pipe = ScriptPipeline(self.redis)
        now = self._now()
        for job_id, created, flow, cost in jobs:
            pipe.script(
                self._acquire,
                self._line,
                [now, job_id, lease, self.limit, repr(float(created)), flow, repr(cost)],
            )
        got = pipe.execute()
        if any(int(g) < 0 for g in got):
            raise LineLost(self.ready_key)
        return [bool(int(g)) for g in got]

    def release(self, job_id: str | None) -> list[str]:
        """Free ``job_id``'s slot (and its place in line); return the waiting jobs this
        brought among the first ``free`` of the fair order (none if nothing changed).
        ``None``: free nothing, return all of the first ``free`` (the explicit wake). They
        stay in line until their acquire succeeds, so a lost wake-up only delays them (until
        the next explicit wake), and nobody later can take their turn."""
        popped = self._release(keys=self._line, args=[self._now(), job_id or "", self.limit])
        return _strs(popped)

    def leave_line(self, job_id: str) -> list[str]:
        """Take ``job_id`` out of the waiting line (keeping any slot it holds); return who
        that let in, as ``release`` does (nobody if it was not in line)."""
        return _strs(self._release(keys=self._line, args=[self._now(), job_id, self.limit, "1"]))

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
        self._forget(keys=self._line, args=[self._now(), job_id])

    def is_ready(self) -> bool:
        return bool(self.redis.exists(self.ready_key))

    def rebuild(
        self,
        holders: Iterable[tuple[str, float]],
        waiters: Iterable[tuple[str, float] | tuple[str, float, str, float]],
        *,
        chunk: int = 1000,
        on_chunk: Callable[[], object] = lambda: None,
    ) -> None:
        """Write the line from the job table: ``holders`` (job, lease seconds from now) and
        ``waiters`` (job, creation time[, flow, cost]), oldest first, calling ``on_chunk``
        after each ``chunk`` of them. Acquires refuse until the last write (``ready``)."""
        flat, step = [value for item in waiters for value in _waiter_fields(item)], 4 * chunk
        for start in range(0, len(flat), step):
            self._join_many(keys=self._line, args=[self._now(), *flat[start : start + step]])
            on_chunk()
        now = self._clock() if self._clock is not None else _redis_time(self.redis)
        held = [v for job, lease in holders for v in (job, repr(now + lease))]
        self._rebuilt(keys=self._line, args=[self._now(), *held])

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

    def after_accept(self, model: str, eta: float | None, *, keep: int = 50) -> tuple[bool, bool]:
        """A submit the provider took, in one round trip: grow the effective limit back a
        step, note the eta it gave (if any) and read ``contended``. Returns (a whole slot
        came back: wake the line, more jobs want a slot than there are slots)."""
        pipe = ScriptPipeline(self.redis)
        pipe.script(self._accepted, [self.state_key], [self._now(), self.limit])
        if eta:
            pipe.lpush(eta_key(self.prefix, model), repr(float(eta)))
            pipe.ltrim(eta_key(self.prefix, model), 0, keep - 1)
        grew, *_, contended = self._execute_contended(pipe)
        return bool(grew), contended

    def effective_limit(self) -> int:
        """The limit in use now (``limit_now`` in the scripts)."""
        return int(self._limit_now(keys=[self.state_key], args=[self._now(), self.limit]))

    # -- what a render takes --------------------------------------------------------------

    def recent_etas(self, model: str) -> list[float]:
        return [float(_str(v)) for v in self.redis.lrange(eta_key(self.prefix, model), 0, -1)]

    # -- reads ---------------------------------------------------------------------------
    def holders(self) -> list[str]:
        return _strs(self._holders(keys=[self.holders_key], args=[self._now()]))

    def holders_sample(self, count: int) -> list[str]:
        """``holders`` if at most ``count``, else ``count`` at random (lapsed ones too)."""
        if int(self.redis.zcard(self.holders_key)) <= count:
            return self.holders()
        return _strs(self.redis.zrandmember(self.holders_key, count))

    def waiting(self) -> list[str]:
        """Every waiting job, oldest first (by creation; ``next_in_line`` is the fair order)."""
        return _strs(self.redis.zrange(self.waiting_key, 0, -1))

    def next_in_line(self, count: int) -> list[str]:
        """The first ``count`` waiting jobs in the order free slots go to them."""
        return _strs(self._next(keys=self._line, args=[self._now(), count]))

    def waiting_count(self) -> int:
        return int(self.redis.zcard(self.waiting_key))

    def contended(self) -> bool:
        """True while more jobs want a slot than there are slots (a freed one would be
        taken at once): one round trip, two ZCARDs. Jobs just enqueued while slots are free
        are in line too, for a moment; they do not count, and neither does the moment
        between a release and the next job's acquire."""
        return bool(self._execute_contended(self.redis.pipeline(transaction=False))[-1])

    def _execute_contended(self, pipe: Any) -> list[Any]:
        """Run ``pipe`` with ``contended``'s reads added: its answers, then that one."""
        pipe.zcard(self.waiting_key)
        pipe.zcard(self.holders_key)
        *answers, waiting, held = pipe.execute()
        return [*answers, int(waiting) > 0 and int(waiting) + int(held) > self.limit]

    def snapshot(self, *extra: tuple[str, str]) -> tuple[AccountView, float, list[Any]]:
        """The view, the age of the oldest waiting job (0: none; the line is a ZSET ordered
        by creation time) and ``extra`` reads (``("llen", key)``, ``("get", key)``), all in
        one round trip to Redis: what a metrics scrape needs."""
        pipe = ScriptPipeline(self.redis)
        pipe.hgetall(self.state_key)
        pipe.script(self._limit_now, [self.state_key], [self._now(), self.limit])
        pipe.script(self._holders, [self.holders_key], [self._now()])
        pipe.zcard(self.waiting_key)
        pipe.zrange(self.waiting_key, 0, 0, withscores=True)
        pipe.time()
        pipe.exists(self.ready_key)
        for command, key in extra:
            getattr(pipe, command)(key)
        state_raw, effective, holders, waiting, first, now, ready, *rest = pipe.execute()
        state = {_str(k): _str(v) for k, v in state_raw.items()}
        last, pmax = state.get("last_429_at"), state.get("provider_max")
        view = AccountView(
            configured=self.limit,
            effective=int(effective),
            provider_max=int(float(pmax)) if pmax else None,
            in_use=len(holders),
            waiting=int(waiting),
            queue_full_429s=int(state.get("queue_full_429s", 0)),
            last_429_at=float(last) if last else None,
            line_ready=bool(ready),
        )
        seconds, micros = now
        age = float(seconds) + float(micros) / 1e6 - float(first[0][1]) if first else 0.0
        return view, max(0.0, age), rest

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
