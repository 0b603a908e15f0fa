"""Sending task messages by name (``t2v.submit``; for ``retry`` also ``t2v.poll`` and
``t2v.download``): a minimal Celery app, no worker code.

A message carries only the job id (the row holds the request). Sending is bounded: a
broker that refuses or does not answer raises ``EnqueueError`` within about
``settings.broker_send_timeout`` seconds, never an endless connection retry; the row
stays `queued` and ``reconcile`` re-drives it.

Many ids go out through one pooled connection in one kombu publish batch (a Redis
pipeline, kombu ≥ 5.7): messages are built by Celery's own ``amqp.create_task_message``,
so any stock Celery worker consumes them exactly as if ``send_task`` had sent them.
This module must never import ``worker``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from celery import Celery

from t2v_core.errors import EnqueueError
from t2v_core.names import TASK_ADMIT, TASK_ROUTES, TASK_SUBMIT
from t2v_core.settings import Settings

log = logging.getLogger(__name__)

#: Messages buffered before one pipeline round trip.
BATCH_SIZE = 1000
#: Job ids per ``t2v.admit`` message.
ADMIT_CHUNK = 1000


def make_celery_app(settings: Settings) -> Celery:
    """A Celery app that only sends; configured so a dead broker fails fast."""
    timeout = settings.broker_send_timeout
    app = Celery("t2v-producer", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        enable_utc=True,
        broker_connection_timeout=timeout,
        broker_connection_retry=False,
        broker_connection_max_retries=0,
        broker_transport_options={
            "socket_connect_timeout": timeout,
            "socket_timeout": timeout,
            "max_retries": 0,
        },
    )
    return app


class Broker:
    """Sends submit messages for job ids; one per process is plenty."""

    def __init__(self, settings: Settings, app: Celery | None = None) -> None:
        self.settings = settings
        self.app = app or make_celery_app(settings)

    def send_submit(self, job_ids: Sequence[str]) -> None:
        """Hand new jobs to the workers: one ``t2v.submit`` message for a single id, one
        ``t2v.admit`` message per ``ADMIT_CHUNK`` ids for many (the worker puts a whole
        chunk in the slot line in one pass and sends ``t2v.submit`` only for the jobs that
        got a slot: a backlog costs one message per chunk, not one per job)."""
        if len(job_ids) <= 1:
            self.send(TASK_SUBMIT, job_ids)
            return
        chunks = [list(job_ids[i : i + ADMIT_CHUNK]) for i in range(0, len(job_ids), ADMIT_CHUNK)]
        self._send_messages(TASK_ADMIT, chunks, job_ids)

    def send(self, task: str, job_ids: Sequence[str]) -> None:
        """Send one ``task`` message per id; raise ``EnqueueError`` if the broker fails.

        On failure some messages may have gone out; none is lost either way (every row is
        `queued` and re-driven), and a duplicate message is harmless (the worker moves a
        row by compare-and-set, so the second copy finds it moved).
        """
        if not job_ids:
            return
        self._send_messages(task, list(job_ids), job_ids)

    def _send_messages(self, task: str, args: Sequence[Any], job_ids: Sequence[str]) -> None:
        """One ``task`` message per item of ``args`` (a job id, or a list of them)."""
        try:
            with self.app.producer_or_acquire() as producer:
                if len(args) == 1:
                    self._publish(producer, task, args[0])
                else:
                    with producer.batch(max_size=BATCH_SIZE):
                        for arg in args:
                            self._publish(producer, task, arg)
        except Exception as exc:  # kombu, redis-py and socket errors all mean "not sent"
            err = EnqueueError(
                f"broker refused {len(job_ids)} message(s): {type(exc).__name__}: {exc}; "
                "the job(s) stay queued and are re-driven later",
                job_id=job_ids[0],
            )
            err.job_ids = tuple(job_ids)
            log.warning("enqueue: broker send failed for %d job(s): %s", len(job_ids), exc)
            raise err from exc

    def _publish(self, producer: Any, task: str, arg: str | list[str]) -> None:
        message = self.app.amqp.create_task_message(str(uuid.uuid4()), task, [arg], {})
        producer.publish(
            message.body,
            exchange="",
            routing_key=TASK_ROUTES[task],
            headers=message.headers,
            serializer="json",
            retry=False,
            **message.properties,
        )

    def close(self) -> None:
        self.app.close()
