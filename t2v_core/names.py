"""Every name the system puts on the wire or in Redis, and nowhere else.

Producer and worker meet only through these strings (tasks are sent by name, so the
producer never imports the worker); an operator looking for a Redis key or a queue finds
it here. Changing one is a protocol change: messages and keys already in Redis keep the
old name.

    task                 queue              what it does
    t2v.submit           t2v.submit         take an account slot, submit the request
    t2v.admit            t2v.submit         many job ids: put them in the slot line at once
    t2v.poll             t2v.poll           fetch the render's status, reschedule itself
    t2v.download         t2v.download       copy the outputs into our storage
    t2v.reconcile        t2v.maintenance    beat: re-drive overdue jobs from the table
    t2v.callback         t2v.callbacks      deliver a job's completion callback(s)

    Redis key                               written by
    t2v:slots:holders|waiting|ready|state   the account's slot line (worker.limiter)
    t2v:slots:flows|flowof|fair             its fair order: flows by virtual tag, each
    t2v:slots:fair:{class}/{tenant}         job's flow, virtual time; one FIFO per flow
    t2v:slots:eta:{model}                   recent provider etas (worker.limiter)
    t2v:slots:rebuild-lock                  one rebuilder of a lost line at a time
    t2v:reconcile:lock                      one reconcile at a time
    t2v:reconcile:last-run                  when reconcile last ran (beat liveness metric)
    t2v:redrives:{job}:{state}:{progress}   re-drive counts (worker.reconcile)
    t2v:webhook:{job}:{provider id}:{status}  webhook delivery dedupe (worker.webhook)
    t2v:callbacks:epoch                     absent after Redis lost its data (worker.reconcile)
"""

from __future__ import annotations

# -- Celery tasks and queues ---------------------------------------------------------------
TASK_SUBMIT = "t2v.submit"
# One message carries a batch of job ids (``enqueue_many``): the jobs join the slot line
# in one pass, and only those that get a slot are sent on as ``t2v.submit``.
TASK_ADMIT = "t2v.admit"
TASK_POLL = "t2v.poll"
TASK_DOWNLOAD = "t2v.download"
TASK_RECONCILE = "t2v.reconcile"
TASK_CALLBACK = "t2v.callback"

# One queue per kind of step, so a backlog of polls never starves submits.
QUEUE_SUBMIT = "t2v.submit"
QUEUE_POLL = "t2v.poll"
QUEUE_DOWNLOAD = "t2v.download"
QUEUE_MAINTENANCE = "t2v.maintenance"
# Callbacks wait on the application's receivers: their own queue, never behind job steps.
QUEUE_CALLBACKS = "t2v.callbacks"
QUEUES: tuple[str, ...] = (
    QUEUE_SUBMIT,
    QUEUE_POLL,
    QUEUE_DOWNLOAD,
    QUEUE_MAINTENANCE,
    QUEUE_CALLBACKS,
)

# Which queue each task is sent to (the producer sends by name, the worker routes by it).
TASK_ROUTES: dict[str, str] = {
    TASK_SUBMIT: QUEUE_SUBMIT,
    TASK_ADMIT: QUEUE_SUBMIT,
    TASK_POLL: QUEUE_POLL,
    TASK_DOWNLOAD: QUEUE_DOWNLOAD,
    TASK_RECONCILE: QUEUE_MAINTENANCE,
    TASK_CALLBACK: QUEUE_CALLBACKS,
}
BEAT_RECONCILE = "t2v-reconcile"  # the beat schedule's entry
# Where an application's ``on_done`` task goes when no queue is named: Celery's default.
DEFAULT_ON_DONE_QUEUE = "celery"

# A bulk job's submit message goes to a lower-priority Redis list of its queue (kombu's
# priority steps; a worker pops the plain list first), so a burst of bulk enqueues never
# holds an interactive job's submit, nor a freed slot's wake-up, behind it.
SUBMIT_MESSAGE_PRIORITY: dict[str, int] = {"bulk": 6}
PRIORITY_SEP = "\x06\x16"  # kombu's default separator of a queue's priority lists


def queue_lists(queue: str) -> list[str]:
    """The Redis lists a queue's messages wait in, by priority step (kombu: 0, 3, 6, 9)."""
    return [queue] + [f"{queue}{PRIORITY_SEP}{step}" for step in (3, 6, 9)]


# -- Redis keys ----------------------------------------------------------------------------
SLOTS_PREFIX = "t2v:slots"


def slot_keys(prefix: str = SLOTS_PREFIX) -> dict[str, str]:
    """The slot line's keys under ``prefix`` (a test or a second account uses another)."""
    parts = ("holders", "waiting", "ready", "state", "flows", "flowof", "fair")
    return {part: f"{prefix}:{part}" for part in parts}


def eta_key(prefix: str, model: str) -> str:
    return f"{prefix}:eta:{model}"


def rebuild_lock_key(prefix: str) -> str:
    return f"{prefix}:rebuild-lock"


RECONCILE_LOCK_KEY = "t2v:reconcile:lock"
# Unix time of the last reconcile run (written by reconcile, exported by worker.metrics as
# t2v_last_reconcile_timestamp_seconds: beat is alive while it keeps moving).
RECONCILE_LAST_RUN_KEY = "t2v:reconcile:last-run"
REDRIVES_KEY = "t2v:redrives"


def redrive_key(job_id: str, state: str, progress: int) -> str:
    return f"{REDRIVES_KEY}:{job_id}:{state}:{progress}"


def webhook_dedupe_key(job_id: str, provider_id: str, status: str) -> str:
    return f"t2v:webhook:{job_id}:{provider_id}:{status}"


CALLBACK_EPOCH_KEY = "t2v:callbacks:epoch"
