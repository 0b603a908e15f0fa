"""The account's slots as the steps use them: who holds one, for how long, who is woken.

A slot is held exactly while the provider may be rendering for us (``may_be_rendering``):
from just before a submit is sent until the render is seen over. How long a hold lasts is
computed here (``lost_answer_hold`` for an answer that was lost, ``render_hold`` for a
render in progress); every freed slot wakes the waiting job it lets in (never one already
woken: wakes do not multiply), and ``wake_line`` all that fit now. When
Redis lost the line, ``rebuild_line`` writes it again from the job table.

The line itself (Lua, one script per decision) is ``worker.limiter.AccountLimiter``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from t2v_core.fairness import flow_cost, flow_name
from t2v_core.names import TASK_SUBMIT, rebuild_lock_key
from t2v_core.records import JobRecord
from t2v_core.states import JobStatus
from worker.leases import Lease
from worker.limiter import LineLost
from worker.steps.runtime import Runtime

log = logging.getLogger("t2v.worker")

# How long a job that found no free account slot waits before reconcile looks at it again
# (a freed slot normally wakes it much sooner).
WAITING_RECHECK_SECONDS = 600.0
# A lost answer's slot hold when no eta was ever seen for the model (docs: 3-10 min).
LOST_HOLD_UNKNOWN = 600.0
# How long a rendering job's slot outlives its next expected look at it.
RENDER_HOLD_MARGIN = 300.0

# True inside a submit run in place by ``wake`` (one hand-off per task, never a chain of
# submits inside one task) and inside reconcile: every hand-off there is sent as a task.
_queue_hand_offs: ContextVar[bool] = ContextVar("t2v_queue_hand_offs", default=False)


def may_be_rendering(rec: JobRecord) -> bool:
    """True while the provider may be rendering for this job: its account slot stays held.

    A cancelled job keeps its slot until its render can be over: its quiet polls are
    pending (``next_check_at``) and nothing was seen finished (no download began).
    """
    if rec.status in (JobStatus.SUBMITTING, JobStatus.PROCESSING):
        return True
    if rec.downloading_at is not None or rec.next_check_at is None:
        return False
    if rec.provider_id is None:
        # Cancelled while its submit may be in flight or its answer lost: the provider may
        # be rendering it. The slot's own short hold bounds how long it is kept.
        return (
            rec.status is JobStatus.CANCELLED
            and rec.submitting_at is not None
            and rec.processing_at is None
        )
    # Parked while the provider was still rendering (deadline, a refused fetch): the
    # provider counts it until the render ends, so the slot stays held until it resumes.
    return rec.status in (JobStatus.CANCELLED, JobStatus.PARKED)


def release_slot(rt: Runtime, job_id: str | None) -> None:
    """Free ``job_id``'s account slot and wake the waiting jobs that lets in."""
    wake(rt, rt.limiter.release(job_id))


def leave_line(rt: Runtime, job_id: str) -> None:
    """``job_id`` waits no more (it is at the provider or needs no slot): it keeps a slot
    it holds, and whoever its place lets in is woken (nobody if it was not in line)."""
    wake(rt, rt.limiter.leave_line(job_id))


def wake_line(rt: Runtime) -> None:
    """Send the submit tasks of all the waiting jobs that fit in the free slots now, woken
    before or not (their wakes may have been lost): at most the free slots' count a call."""
    wake(rt, rt.limiter.release(None))


def wake(rt: Runtime, job_ids: list[str]) -> None:
    """Submit the jobs a freed slot lets in: the first in this task when this worker runs
    submits in place (``T2V_SUBMIT_INLINE``), the others (and every one otherwise) through
    the t2v.submit queue, sent first so other workers start on them at once."""
    in_place = (
        job_ids[0] if job_ids and TASK_SUBMIT in rt.inline and not _queue_hand_offs.get() else None
    )
    for waiting_id in job_ids:
        log.info("job %s takes a freed account slot", waiting_id)
        if waiting_id != in_place:
            rt.schedule(TASK_SUBMIT, waiting_id, 0)
    if in_place is not None:
        submit_in_place(rt, in_place)


@contextmanager
def hand_offs_through_the_queue() -> Iterator[None]:
    """Within: every job a freed slot lets in is sent to the t2v.submit queue, none is
    submitted in place (reconcile: a run stays short, whatever the provider's latency)."""
    token = _queue_hand_offs.set(True)
    try:
        yield
    finally:
        _queue_hand_offs.reset(token)


def submit_in_place(rt: Runtime, job_id: str) -> None:
    """The submit step for ``job_id``, run inside the task that freed its slot. It fails
    the way a t2v.submit task fails: logged, the job left as the step left it for
    reconcile (a slot it never took is handed on again by ``wake_line``); the task that
    called it carries on, its own job already settled."""
    from worker.steps.submit import submit_step  # submit imports this module

    with hand_offs_through_the_queue():
        try:
            submit_step(rt, job_id)
        except Exception:
            log.exception("job %s: the submit run in place failed", job_id)


def acquire(rt: Runtime, rec: JobRecord) -> bool | None:
    """Take a slot for ``rec``: True if it got one, False if it waits in line, None if the
    line is being rebuilt by someone else."""
    hold = lost_answer_hold(rt, rec.model_effective)
    for _ in range(2):
        try:
            return rt.limiter.acquire(
                rec.id,
                lease=hold,
                created=rec.created_at.timestamp(),
                flow=flow_name(rec.priority, rec.tenant),
                cost=flow_cost(rec.priority, rec.tenant, rt.settings.tenant_weights),
            )
        except LineLost:
            rebuild_line(rt)
    return None


# -- how long a hold lasts -----------------------------------------------------------------
def lost_answer_hold(rt: Runtime, model: str) -> float:
    """How long a submit whose answer was lost keeps its slot: as long as its render could
    still be running (``lost_submit_hold``, else 1.5 x the longest recent eta + 30 s), and
    never less than one whole request's timeouts."""
    learned = rt.settings.lost_submit_hold is None
    return hold_for(rt, rt.recent_etas(model) if learned else [])


def hold_for(rt: Runtime, etas: list[float]) -> float:
    """``lost_answer_hold`` from these recent etas."""
    floor = rt.settings.connect_timeout + rt.settings.read_timeout + 30.0
    if rt.settings.lost_submit_hold is not None:
        return max(floor, rt.settings.lost_submit_hold)
    learned = 1.5 * max(etas) + 30.0 if etas else LOST_HOLD_UNKNOWN
    return max(floor, min(learned, rt.settings.poll_deadline_seconds))


def stretched_deadline(deadline: float, eta: float | None) -> float:
    """The poll deadline, stretched to 1.5 x the provider's eta when it expects longer: a
    job we paid for is not parked before it could possibly be done."""
    return max(deadline, 1.5 * (eta or 0.0))


def render_hold(deadline_left: float, next_check: float) -> float:
    """The slot lease of a job at the provider: until its (stretched) poll deadline, and at
    least past its next look at it, plus a margin."""
    return max(deadline_left, next_check, 0.0) + RENDER_HOLD_MARGIN


# -- a line Redis lost -----------------------------------------------------------------------
# How long the rebuild lock lives unless its holder renews it (it does as it reads the
# table and after each chunk it writes): a rebuilder killed mid-way keeps the line, and
# every acquire, waiting for no longer than this.
REBUILD_LOCK_SECONDS = 10.0


def rebuild_line(rt: Runtime) -> bool:
    """Redis lost the slot line: write it again from the table. True if this call did it.

    Holders are the jobs that may be at the provider, waiters the queued ones (oldest
    first). One rebuilder at a time (a Redis lock); the others find the line ready.
    """
    lease = Lease(rt.limiter.redis, rebuild_lock_key(rt.limiter.prefix), REBUILD_LOCK_SECONDS)
    if not lease.take():
        return False
    try:
        if rt.limiter.is_ready():
            return False
        holders: list[tuple[str, float]] = []
        waiters: list[tuple[str, float, str, float]] = []
        weights = rt.settings.tenant_weights
        now = rt.now()
        members = []
        for member in rt.store.line_members():  # streamed in chunks: a big table is slow
            members.append(member)
            lease.renew()  # a clock read; a round trip once a third of the lock has gone
        # The etas Redis remembered are gone with it: the table's recent ones stand in.
        lost_hold = hold_for(rt, [m.eta_seconds for m in members if m.eta_seconds][-50:])
        for member in members:
            if member.status is JobStatus.QUEUED:
                waiters.append(
                    (
                        member.id,
                        member.created_at.timestamp(),
                        flow_name(member.priority, member.tenant),
                        flow_cost(member.priority, member.tenant, weights),
                    )
                )
            elif member.status is JobStatus.SUBMITTING:
                since = (now - (member.submitting_at or now)).total_seconds()
                left = lost_hold - since
                if left > 0:
                    holders.append((member.id, left))
            else:
                # Processing, or cancelled/parked while the provider may still render it.
                deadline_left = (
                    (member.deadline_at - now).total_seconds()
                    if member.deadline_at
                    else rt.settings.poll_deadline_seconds
                )
                if member.eta_seconds and member.submitting_at:
                    since = (now - member.submitting_at).total_seconds()
                    deadline_left = max(
                        deadline_left, stretched_deadline(0.0, member.eta_seconds) - since
                    )
                next_left = (
                    (member.next_check_at - now).total_seconds() if member.next_check_at else 0.0
                )
                holders.append((member.id, render_hold(deadline_left, next_left)))
        rt.limiter.rebuild(holders, waiters, on_chunk=lease.renew)
        log.warning(
            "slot line rebuilt from the table: %d holding, %d waiting", len(holders), len(waiters)
        )
    finally:
        lease.drop()
    wake_line(rt)
    return True
