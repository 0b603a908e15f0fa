"""Thin Celery tasks: take a job id, hand it to a step in ``worker.steps``.

No logic lives here, and no task ever sleeps: a step that must wait asks for itself to be
sent again with a countdown (``send_step``). The per-process ``Runtime`` (engine, HTTP
session, Redis, storage) is built after the worker forks, never shared across processes.
"""

from __future__ import annotations

import random

from celery.signals import worker_init, worker_process_init

import worker.worker_metrics  # noqa: F401 - connects its Celery signals
from t2v_core.brokers import is_amqp_url, shared_redis
from t2v_core.db import dispose_engines, forget_engines, settings_engine
from t2v_core.names import (
    TASK_ADMIT,
    TASK_CALLBACK,
    TASK_DOWNLOAD,
    TASK_POLL,
    TASK_RECONCILE,
    TASK_ROUTES,
    TASK_SUBMIT,
)
from t2v_core.once import once
from t2v_core.store import JobStore
from worker.callbacks import callback_step
from worker.celery_app import AMQP_DELAY_LEAD, app
from worker.limiter import AccountLimiter
from worker.modelslab import ModelsLabClient
from worker.pinning import pinned_session
from worker.reconcile import reconcile
from worker.settings import get_worker_settings
from worker.steps import Runtime, admit_step, download_step, poll_step, submit_step
from worker.storage import storage_from_url


def send_step(task: str, job_id: str, countdown: float) -> None:
    """Send ``task`` for ``job_id`` to its queue, after ``countdown`` seconds (a
    ``Schedule``: what steps, reconcile and the webhook receiver call)."""
    app.send_task(
        task,
        args=[job_id],
        queue=TASK_ROUTES[task],
        countdown=broker_countdown(
            countdown, countdown_lead() if task == TASK_POLL and countdown > 0 else 0.0
        )
        or None,
    )


def broker_countdown(countdown: float, lead: float) -> float:
    """The countdown to send for one of ``countdown`` s: ``lead`` s shorter (never below
    0), to the millisecond."""
    return max(0.0, round(countdown - lead, 3)) if countdown > 0 else 0.0


@once
def countdown_lead() -> float:
    """How much earlier this process sends countdowns: ``AMQP_DELAY_LEAD`` through
    RabbitMQ's delay chain, nothing on Redis (the worker holds the message itself)."""
    return lead_for(get_worker_settings().broker_url)


def lead_for(broker_url: str) -> float:
    return AMQP_DELAY_LEAD if is_amqp_url(broker_url) else 0.0


@once
def runtime() -> Runtime:
    settings = get_worker_settings()
    if settings.modelslab_api_key is None:
        from t2v_core.errors import ConfigError

        raise ConfigError("T2V_MODELSLAB_API_KEY is not set (the worker needs the account key)")
    http = pinned_session()  # downloads connect only to the addresses they vetted
    # A move that makes a completion callback due sends t2v.callback right after commit.
    store = JobStore(
        settings_engine(settings),
        notify=lambda job_id: send_step(TASK_CALLBACK, job_id, 0),
    )
    return Runtime(
        settings=settings,
        store=store,
        client=ModelsLabClient(
            settings.modelslab_base_url,
            settings.modelslab_api_key,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
        ),
        limiter=AccountLimiter(shared_redis(settings), settings.account_slots),
        storage=storage_from_url(settings.storage_url, s3_endpoint_url=settings.s3_endpoint_url),
        http=http,
        schedule=send_step,
        rng=random.Random(),
        inline=inline_steps(settings.download_inline, settings.submit_inline),
    )


def inline_steps(download_inline: bool, submit_inline: bool) -> frozenset[str]:
    """The steps this process runs in place: ``t2v.download`` and ``t2v.submit`` when asked
    and this worker consumes their queue (``-Q``; all queues when not given), so hosts that
    only poll still send downloads and submits to the hosts that serve them."""
    consumed = app.amqp.queues.consume_from
    asked = {TASK_DOWNLOAD: download_inline, TASK_SUBMIT: submit_inline}
    return frozenset(task for task, on in asked.items() if on and TASK_ROUTES[task] in consumed)


@worker_init.connect
def _migrate(**_: object) -> None:
    # Bring the table up to date before taking work (safe when several workers start).
    settings = get_worker_settings()
    JobStore(settings_engine(settings)).create_schema()
    dispose_engines()


@worker_process_init.connect
def _after_fork(**_: object) -> None:
    # Connections opened in the parent must not be shared with forked children: forget
    # them (never close the parent's sockets from here); each child opens its own pool.
    forget_engines()
    runtime.cache_clear()


@app.task(name=TASK_SUBMIT, ignore_result=True)
def submit(job_id: str) -> None:
    submit_step(runtime(), job_id)


@app.task(name=TASK_ADMIT, ignore_result=True)
def admit(job_ids: list[str]) -> None:
    admit_step(runtime(), job_ids)


@app.task(name=TASK_POLL, ignore_result=True)
def poll(job_id: str) -> None:
    poll_step(runtime(), job_id)


@app.task(name=TASK_DOWNLOAD, ignore_result=True)
def download(job_id: str) -> None:
    download_step(runtime(), job_id)


def publish_on_done(task: str, args: list[str], queue: str, task_id: str) -> None:
    """Send the application's ``on_done`` task (its id is the notification's id)."""
    app.send_task(task, args=args, queue=queue, task_id=task_id)


@app.task(name=TASK_CALLBACK, ignore_result=True)
def callback(job_id: str) -> None:
    callback_step(runtime(), job_id, publish_on_done)


@app.task(name=TASK_RECONCILE, ignore_result=True)
def reconcile_task() -> None:
    reconcile(runtime())
