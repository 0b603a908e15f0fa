"""The admit step: many new jobs join the account's slot line in one pass.

``enqueue_many`` sends one ``t2v.admit`` message per chunk of job ids instead of one
``t2v.submit`` per job. Admitting a chunk is a constant number of round trips whatever
its size: one narrow read of the rows, one pipelined call of the line's ``acquire``
script per job (the same decision ``submit_step`` makes, oldest first), one UPDATE for the
jobs that wait. Only the jobs that got a slot are sent on as ``t2v.submit``; the others
wait in line at no cost until a freed slot wakes them (``slots.wake``).

A job that is not plainly new (moved on, or a provider id already known) is handed to
``submit_step`` as its own message, which knows every such case.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from t2v_core.fairness import flow_cost, flow_name
from t2v_core.names import TASK_SUBMIT
from t2v_core.states import JobStatus
from worker.limiter import LineLost
from worker.steps.runtime import Runtime
from worker.steps.slots import WAITING_RECHECK_SECONDS, lost_answer_hold, rebuild_line

log = logging.getLogger("t2v.worker")


def admit_step(rt: Runtime, job_ids: Sequence[str]) -> None:
    rows = rt.store.admission_rows(job_ids)
    fresh = [r for r in rows if r[1] is JobStatus.QUEUED and not r[3]]
    for row in rows:
        if row[1] is not JobStatus.QUEUED or row[3]:
            rt.schedule(TASK_SUBMIT, row[0], 0)
    if not fresh:
        return
    hold = max(lost_answer_hold(rt, model) for model in {r[4] for r in fresh})
    weights = rt.settings.tenant_weights
    line = [
        (r[0], r[2].timestamp(), flow_name(r[5], r[6]), flow_cost(r[5], r[6], weights))
        for r in fresh
    ]
    got: list[bool] | None = None
    for _ in range(2):
        try:
            got = rt.limiter.acquire_many(line, lease=hold)
            break
        except LineLost:
            rebuild_line(rt)
    if got is None:
        # The line is being rebuilt by someone else (it will hold these queued jobs):
        # look again soon, as ``submit_step`` does.
        rt.store.update_many_if([j[0] for j in line], [JobStatus.QUEUED], next_check_at=rt.at(5))
        return
    waiting = [job[0] for job, took in zip(line, got, strict=True) if not took]
    if waiting:
        recheck = rt.at(WAITING_RECHECK_SECONDS)
        rt.store.update_many_if(waiting, [JobStatus.QUEUED], next_check_at=recheck)
    for job, took in zip(line, got, strict=True):
        if took:
            rt.schedule(TASK_SUBMIT, job[0], 0)
    log.info(
        "admitted %d jobs: %d take a slot, %d wait in line",
        len(line),
        len(line) - len(waiting),
        len(waiting),
    )
