"""What must hold in the model world: at the end of every schedule (``final_checks``), after
every beat while it drains (``drain_tick_checks``), and, the cheap ones, after every event
or as a request leaves (``World.check_slots``, ``World.on_submit``, ``World.check_message``).

Each check has a name (``harness.CHECKS``); ``T2V_MODEL_SKIP=name,...`` counts a check's
failures instead of failing on them.

1. No job lost (``lost``): each job ends final (succeeded, failed, cancelled) or parked, and
   a parked one is recoverable (``plan_retry`` accepts it) unless its output has expired;
   while the world drains, no active job sits with nothing due and no message.
2. Money: paid renders per job (the provider's truth) are at most 1 + the answers lost for
   it (``paid_twice``; an answer is lost when the step that paid ended without its id on
   the row); every paid one was counted on the row before it left (``not_counted``), each
   extra one is recorded (``not_recorded``: ``unknown_submits``, or a ``retry()`` of a
   failed job the provider never answered); never a submission while the row names a
   provider id, nor from any state but `submitting` (``submit_with_id``).
3. Slots: live holders never above the limit (``slots_over_limit``, after every event); a
   submit leaves only while its job holds a slot (``submit_without_slot``); a render the
   provider is running for a `processing` job (or a cancelled one whose quiet polls go on)
   keeps its slot (``rendering_without_slot``); once the world drains, no slot stays free
   for two beats while a job stands first in the line's fair order with no submit sent, and
   the fair order names exactly the jobs in line (``slot_idle``); at
   the end no slot is held by a job the provider cannot be rendering for (``slot_leaked``).
4. No paid output thrown away (``output_thrown_away``): a job whose render succeeded at the
   provider ends succeeded, parked, cancelled, or failed with ``output_expired`` only once
   24 h have passed since the render was paid for; a succeeded job holds exactly the
   provider's bytes in storage (``output_corrupt``).
5. The API key is in no row, message, Redis key or value, log line or exception
   (``secret``); every countdown is finite and below the visibility timeout (``countdown``).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from sqlalchemy import select

from t2v_core.names import TASK_SUBMIT
from t2v_core.records import JobRow
from t2v_core.retry import OUTPUT_TTL, RetryRefused, output_expiry, plan_retry
from t2v_core.states import ACTIVE_STATES, JobStatus
from worker.steps.slots import may_be_rendering

if TYPE_CHECKING:
    from t2v_core.records import JobRecord
    from tests.model.harness import Render, World


def drain_tick_checks(world: World, starving: dict[str, int]) -> None:
    """After a beat while the world drains (faults off) and nothing else is due now."""
    rows = world.bench.peek(world.job_ids)
    pending = {j for m in world.broker.queue for j in m.job_id.split(",")}  # t2v.admit: many
    for job_id, rec in rows.items():
        if (
            rec.status in ACTIVE_STATES
            and rec.status is not JobStatus.PARKED
            and rec.next_check_at is None
            and job_id not in pending
        ):
            world.violate(
                "lost",
                f"{world.name(job_id)} is {rec.status.value} with no step due "
                "and no message (reconcile can never find it)",
            )
    limiter = world.limiter
    if not world._line_ready():
        starving.clear()  # the next beat rebuilds the line
        return
    free = limiter.effective_limit() - len(world.live_holders())
    submits = {m.job_id for m in world.broker.queue if m.task == TASK_SUBMIT}
    # The line's fair order (class, tenant weights, oldest first within a flow): a free slot
    # goes to the first jobs it names.
    line = world._zset(limiter.waiting_key)
    waiting = limiter.next_in_line(len(line))
    if sorted(waiting) != sorted(line):
        world.violate(
            "slot_idle",
            f"the fair order names {[world.name(j) for j in waiting]} but the line holds "
            f"{[world.name(j) for j in line]}",
        )
    queued_waiting = [j for j in waiting if j in rows and rows[j].status is JobStatus.QUEUED]
    now: set[str] = set()
    if free > 0 and queued_waiting:
        now = {j for j in waiting[:free] if j not in submits}
    for job_id in list(starving):
        if job_id not in now:
            del starving[job_id]
    for job_id in sorted(now):
        first = starving.setdefault(job_id, world.full_ticks)
        if world.full_ticks - first >= 2:
            rec = rows.get(job_id)
            what = rec.status.value if rec else "gone"
            world.violate(
                "slot_idle",
                f"{free} slot(s) free for {world.full_ticks - first} beats while "
                f"{world.name(job_id)} ({what}) stands first in line and no submit is sent "
                f"(line {[world.name(j) for j in waiting]}, queued "
                f"{[world.name(j) for j in queued_waiting]})",
            )


def final_checks(world: World) -> None:
    now = world.clock.t
    rows = world.reader.get_many(world.job_ids)
    provider = world.provider
    deadline = world.settings.poll_deadline_seconds

    def bad(check: str, text: str) -> None:
        world.violate(check, text, stop=False)

    for job_id in world.job_ids:
        name = world.name(job_id)
        rec = rows.get(job_id)
        renders = provider.by_track.get(job_id, [])
        if rec is None:
            if renders:
                bad("phantom", f"{name} has no row but {len(renders)} paid render(s)")
            continue
        _count(world, rec, renders)
        # 1. settled
        if not rec.status.is_final:
            if rec.status is JobStatus.PARKED:
                expiry = output_expiry(rec)
                try:
                    plan_retry(rec, now=world.app_now(), deadline_seconds=deadline)
                except RetryRefused as exc:
                    if expiry is None or world.app_now() < expiry:
                        bad("lost", f"{name} is parked but cannot be retried: {exc}")
            else:
                bad(
                    "lost",
                    f"{name} never settled: still {rec.status.value} after the drain "
                    f"(next_check_at {rec.next_check_at}, error {rec.error!r})",
                )
        # 2. money
        paid = len(renders)
        lost = sum(1 for r in renders if r.lost)
        if paid > 1 + lost:
            bad(
                "paid_twice",
                f"{name} was paid {paid} times ({[r.pid for r in renders]}) but "
                f"only {lost} answer(s) were lost",
            )
        if paid > rec.submit_count:
            bad(
                "not_counted",
                f"{name} was paid {paid} times but submit_count is {rec.submit_count}",
            )
        recorded = rec.unknown_submits + world.user_requeues[job_id]
        if paid - 1 > recorded:
            bad(
                "not_recorded",
                f"{name} was paid {paid} times ({[r.pid for r in renders]}); "
                f"the row records {rec.unknown_submits} resubmit(s) after lost answers "
                f"(+{world.user_requeues[job_id]} retries of a failed job)",
            )
        # 4. no paid output thrown away
        render = provider.renders.get(rec.provider_id) if rec.provider_id else None
        if rec.provider_id and render is None:
            bad(
                "phantom",
                f"{name} names provider id {rec.provider_id}, which the provider never made",
            )
        if render is not None and render.outcome == "success" and render.finish <= now:
            ok = rec.status in (JobStatus.SUCCEEDED, JobStatus.PARKED, JobStatus.CANCELLED)
            if rec.status is JobStatus.FAILED and rec.error_kind == "output_expired":
                ok = rec.failed_at is not None and rec.failed_at.timestamp() >= (
                    render.created + OUTPUT_TTL.total_seconds() - 10.0
                )
            if not ok:
                bad(
                    "output_thrown_away",
                    f"{name}'s render {render.pid} succeeded but the job is "
                    f"{rec.status.value} ({rec.error_kind}: {(rec.error or '')[:160]})",
                )
        if rec.status is JobStatus.SUCCEEDED:
            _check_outputs(world, name, rec, render)
    # 3. slots at the end
    for job_id in world.live_holders():
        rec = rows.get(job_id)
        if rec is None or not may_be_rendering(rec):
            what = rec.status.value if rec else "no row"
            bad(
                "slot_leaked",
                f"{world.name(job_id)} ({what}) still holds an account slot at the end",
            )
    # 5. the key
    _check_secret(world)


def _count(world: World, rec: JobRecord, renders: list[Render]) -> None:
    stats = world.stats
    stats[f"end_{rec.status.value}"] += 1
    if rec.error_kind:
        stats[f"kind_{rec.error_kind}"] += 1
    stats["paid"] += len(renders)
    stats["lost_answers"] += sum(1 for r in renders if r.lost)
    stats["unknown_resubmits"] += rec.unknown_submits
    stats["parks"] += rec.park_count
    if len(renders) > 1:
        stats["paid_twice"] += 1


def _check_outputs(world: World, name: str, rec: JobRecord, render: Render | None) -> None:
    if render is None or render.outcome != "success":
        world.violate(
            "output_corrupt",
            f"{name} succeeded without a successful render at the provider",
            stop=False,
        )
        return
    if len(rec.outputs) != len(render.bodies):
        world.violate(
            "output_corrupt",
            f"{name} succeeded with {len(rec.outputs)} output(s); "
            f"the render has {len(render.bodies)}",
            stop=False,
        )
        return
    for i, (o, body) in enumerate(zip(rec.outputs, render.bodies, strict=True)):
        key = o.storage_uri.removeprefix("mem://videos/")
        stored = world.storage.objects.get(key)
        if o.sha256 != hashlib.sha256(body).hexdigest() or stored != body:
            world.violate(
                "output_corrupt",
                f"{name} output {i}: the stored bytes are not the provider's ({o.storage_uri})",
                stop=False,
            )


def _check_secret(world: World) -> None:
    key = world.api_key
    with world.bench.engine.connect() as conn:
        table = repr(conn.execute(select(JobRow.__table__)).all())
    if key in table:
        world.violate("secret", "the API key is in the job table", stop=False)
    redis = world.redis
    for name in redis.keys("*"):
        kind = redis.type(name)
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        value: object = None
        if kind == "string":
            value = redis.get(name)
        elif kind == "zset":
            value = redis.zrange(name, 0, -1, withscores=True)
        elif kind == "hash":
            value = redis.hgetall(name)
        elif kind == "list":
            value = redis.lrange(name, 0, -1)
        elif kind == "set":
            value = redis.smembers(name)
        if key in repr((name, value)):
            world.violate("secret", f"the API key is in Redis key {name!r}", stop=False)
