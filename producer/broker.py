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

from t2v_core.brokers import is_amqp_url, task_queues
from t2v_core.errors import EnqueueError
from t2v_core.names import SUBMIT_MESSAGE_PRIORITY, TASK_ADMIT, TASK_ROUTES, TASK_SUBMIT
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

    #: Job ids per ``t2v.admit`` message (the model test sends smaller chunks).
    admit_chunk = ADMIT_CHUNK

    def __init__(self, settings: Settings, app: Celery | None = None) -> None:
        self.settings = settings
        self.app = app or make_celery_app(settings)
        self._declared = False

    def send_submit(self, job_ids: Sequence[str], priorities: Sequence[str] | None = None) -> None:
        """Hand new jobs to the workers: one ``t2v.submit`` message for a single id, one
        ``t2v.admit`` message per ``admit_chunk`` ids of one priority class for many (the
        worker puts a whole chunk in the slot line in one pass and sends ``t2v.submit``
        only for the jobs that got a slot: a backlog costs one message per chunk, not one
        per job). ``priorities`` (the jobs' classes, one per id) put bulk jobs' messages
        behind the others in the broker."""
        classes = list(priorities) if priorities else ["normal"] * len(job_ids)
        if len(job_ids) <= 1:
            self.send(TASK_SUBMIT, job_ids, classes)
            return
        by_class: dict[str, list[str]] = {}
        for job_id, klass in zip(job_ids, classes, strict=True):
            by_class.setdefault(klass, []).append(job_id)
        chunks: list[list[str]] = []
        steps: list[int | None] = []
        for klass, ids in by_class.items():
            for start in range(0, len(ids), self.admit_chunk):
                chunks.append(ids[start : start + self.admit_chunk])
                steps.append(SUBMIT_MESSAGE_PRIORITY.get(klass))
        self._send_messages(TASK_ADMIT, chunks, steps, job_ids)

    def send(
        self, task: str, job_ids: Sequence[str], priorities: Sequence[str] | None = None
    ) -> None:
        """Send one ``task`` message per id; raise ``EnqueueError`` if the broker fails.

        On failure some messages may have gone out; none is lost either way (every row is
        `queued` and re-driven), and a duplicate message is harmless (the worker moves a
        row by compare-and-set, so the second copy finds it moved).
        """
        if not job_ids:
            return
        steps = [SUBMIT_MESSAGE_PRIORITY.get(p) for p in priorities or ["normal"] * len(job_ids)]
        self._send_messages(task, list(job_ids), steps, job_ids)

    def _send_messages(
        self,
        task: str,
        args: Sequence[Any],
        steps: Sequence[int | None],
        job_ids: Sequence[str],
    ) -> None:
        """One ``task`` message per item of ``args`` (a job id, or a list of them), each at
        its kombu priority step (None: the default)."""
        try:
            with self.app.producer_or_acquire() as producer:
                self._declare(producer)
                if len(args) == 1:
                    self._publish(producer, task, args[0], steps[0])
                else:
                    with producer.batch(max_size=BATCH_SIZE):
                        for arg, step in zip(args, steps, strict=True):
                            self._publish(producer, task, arg, step)
        except Exception as exc:  # kombu, redis-py and socket errors all mean "not sent"
            err = EnqueueError(
                f"broker refused {len(job_ids)} message(s): {type(exc).__name__}: {exc}; "
                "the job(s) stay queued and are re-driven later",
                job_id=job_ids[0],
            )
            err.job_ids = tuple(job_ids)
            log.warning("enqueue: broker send failed for %d job(s): %s", len(job_ids), exc)
            raise err from exc

    def _declare(self, producer: Any) -> None:
        # RabbitMQ drops a message sent to a queue nobody declared yet: declare the task
        # queues exactly as the worker does (quorum, topic exchange) before the first send.
        if self._declared or not is_amqp_url(self.settings.broker_url):
            return
        for queue in task_queues(self.settings.broker_url):
            queue.bind(producer.channel).declare()
        self._declared = True

    def _publish(
        self, producer: Any, task: str, arg: str | list[str], priority: int | None
    ) -> None:
        message = self.app.amqp.create_task_message(str(uuid.uuid4()), task, [arg], {})
        extra = {} if priority is None else {"priority": priority}
        producer.publish(
            message.body,
            exchange="",
            routing_key=TASK_ROUTES[task],
            headers=message.headers,
            serializer="json",
            retry=False,
            **message.properties,
            **extra,
        )

    def close(self) -> None:
        self.app.close()
