"""The ``Producer``: enqueue, look up, cancel and retry jobs with one set of settings.

``enqueue`` validates, writes the row `queued`, then sends ``t2v.submit`` with the job id
only. The row comes first so a message can never name a job that does not exist, and a
message that could not be sent loses nothing (``EnqueueError``; reconcile re-sends).

What an idempotency key may be, and how ``enqueue_many`` resolves a call's keys against
the table, is ``idempotency.py``; the module-level ``enqueue``/``get_job``/... functions and
``configure`` (one default ``Producer`` per process) are ``default.py``.

This module must never log a prompt (it is user data; logs name job ids), and must never
send a message for a row it has not written.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy.exc import IntegrityError

from producer.broker import Broker
from producer.engine import insert_once, producer_engine
from producer.idempotency import (
    check_idempotency_key,
    first_positions,
    idempotency_key_problem,
    insert_keyed,
    jobs_by_key,
    key_list,
)
from producer.job import Job
from producer.request import Text2VideoRequest
from producer.resume import retry_job, retry_jobs
from t2v_core.callbacks import callback_values
from t2v_core.errors import FieldError, JobNotFound, RequestInvalid, RetryRefused
from t2v_core.fairness import JobOptions, check_job_options, item_options
from t2v_core.names import TASK_CALLBACK
from t2v_core.records import JobRecord
from t2v_core.settings import Settings, get_settings
from t2v_core.states import JobStatus
from t2v_core.store import JobStore

log = logging.getLogger(__name__)

RequestLike = Text2VideoRequest | Mapping[str, Any]


class ManyEnqueued(NamedTuple):
    """What ``Producer.enqueue_many_detailed`` did."""

    #: One job per input item, in input order (the same job at each position of a key).
    jobs: list[Job]
    #: Ids of the jobs this call created and sent, in input order; the others existed.
    new_ids: list[str]


class Producer:
    """Settings, job store and broker held together; every public call goes through one."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: JobStore | None = None,
        broker: Broker | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.store = store or JobStore(producer_engine(self.settings))
        self.broker = broker or Broker(self.settings)
        if self.store.notify is None:  # a cancel that makes a callback due sends it
            self.store.notify = lambda job_id: self.broker.send(TASK_CALLBACK, [job_id])
        self._schema_ready = not self.settings.auto_migrate
        self._schema_lock = threading.Lock()

    @property
    def default_wait_timeout(self) -> float:
        return self.settings.default_wait_timeout

    def _ready(self) -> JobStore:
        # Upgrade the schema once per process, on first use (cheap when already current).
        if not self._schema_ready:
            with self._schema_lock:
                if not self._schema_ready:
                    self.store.create_schema()
                    self._schema_ready = True
        return self.store

    # -- writes -----------------------------------------------------------------------
    def enqueue(
        self,
        request: RequestLike,
        *,
        idempotency_key: str | None = None,
        priority: str = "normal",
        tenant: str | None = None,
        labels: Mapping[str, str] | None = None,
        on_done: str | None = None,
        on_done_queue: str | None = None,
        callback_url: str | None = None,
    ) -> Job:
        """Validate, write the row `queued`, send ``t2v.submit``; return the job's handle.

        ``priority`` (``"interactive"``, ``"normal"``, ``"bulk"``) and ``tenant`` place the
        job in the account's slot line (``t2v_core.fairness``); ``labels`` are the caller's
        small string key/values, stored and filterable, never sent to ModelsLab.
        ``on_done`` (your Celery task, on ``on_done_queue``) and ``callback_url`` (a signed
        POST) hear at least once when the job ends or parks (``t2v_core.callbacks``).

        With ``idempotency_key``, a second call with the same key returns the first job and
        sends nothing (also across processes racing: the key is unique in the table). The
        same key with a different request raises ``RequestInvalid``.
        Raises ``RequestInvalid`` (nothing written) or ``EnqueueError`` (row written and
        `queued`, message not sent; it is re-driven later).
        """
        req = Text2VideoRequest.parse(request)
        payload = req.to_api_payload()
        check_job_options(priority, tenant, labels)
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
        callbacks = callback_values(self.settings, on_done, on_done_queue, callback_url)
        store = self._ready()
        if idempotency_key is not None:
            existing = store.get_by_idempotency_key(idempotency_key)
            if existing is not None:
                return self._same_job(existing, payload, idempotency_key)
        row = store.insert_values(
            request=payload,
            model_requested=req.model_requested,
            model_effective=req.model_effective,
            idempotency_key=idempotency_key,
            priority=priority,
            tenant=tenant,
            labels=dict(labels) if labels else None,
            callbacks=callbacks,
        )
        try:
            self._insert(row)
        except IntegrityError:
            # Another caller inserted this key between our read and our insert.
            existing = store.get_by_idempotency_key(idempotency_key) if idempotency_key else None
            if existing is None:
                raise
            return self._same_job(existing, payload, idempotency_key or "")
        job_id = row["id"]
        log.info("enqueued job %s (model %s)", job_id, req.model_effective)
        self.broker.send_submit([job_id], [priority])
        return Job(job_id, self, JobRecord.model_validate(row))

    def _insert(self, row: dict[str, Any]) -> None:
        insert_once(self.store, row)

    def enqueue_many(
        self,
        requests: Iterable[RequestLike],
        *,
        idempotency_keys: Sequence[str | None] | None = None,
        priority: str = "normal",
        tenant: str | None = None,
        labels: Mapping[str, str] | None = None,
        options: Sequence[JobOptions | None] | None = None,
        on_done: str | None = None,
        on_done_queue: str | None = None,
        callback_url: str | None = None,
    ) -> list[Job]:
        """Enqueue many requests: all validated first, one transaction, pipelined sends.

        ``idempotency_keys``, if given, has one entry per request (``None``: no key for
        that one) and means what ``enqueue``'s key means: an item whose key already names
        a job with the same request gets that job back (nothing written or sent for it);
        the same key twice in one call with the same request is one job, returned at both
        positions. Only the new rows' messages are sent. The result is one job per item,
        in input order. ``priority``/``tenant``/``labels`` apply to every item; ``options``
        (one ``JobOptions`` or None per item) overrides them per item. ``on_done``,
        ``on_done_queue`` and ``callback_url`` apply to every item, as for ``enqueue``.

        All or nothing: raises ``RequestInvalid`` naming every bad item by index
        (``[3].width=...``, ``[3].idempotency_key=...``: a bad key, or a key used for a
        different request, earlier in the call or by an existing job) or a wrong number
        of keys (``idempotency_keys``), and writes nothing. ``EnqueueError``
        (``.job_ids``: the new jobs) if the broker failed after the rows were written
        (they stay `queued` and are re-driven).
        """
        return self.enqueue_many_detailed(
            requests,
            idempotency_keys=idempotency_keys,
            priority=priority,
            tenant=tenant,
            labels=labels,
            options=options,
            on_done=on_done,
            on_done_queue=on_done_queue,
            callback_url=callback_url,
        ).jobs

    def enqueue_many_detailed(
        self,
        requests: Iterable[RequestLike],
        *,
        idempotency_keys: Sequence[str | None] | None = None,
        priority: str = "normal",
        tenant: str | None = None,
        labels: Mapping[str, str] | None = None,
        options: Sequence[JobOptions | None] | None = None,
        on_done: str | None = None,
        on_done_queue: str | None = None,
        callback_url: str | None = None,
    ) -> ManyEnqueued:
        """``enqueue_many``, also telling which jobs this call created (``new_ids``)."""
        callbacks = callback_values(self.settings, on_done, on_done_queue, callback_url)
        keys: list[Any] | None = None
        requests = list(requests)
        if idempotency_keys is not None:
            keys = key_list(idempotency_keys, len(requests))
        opts, errors = item_options(len(requests), JobOptions(priority, tenant, labels), options)
        parsed: list[Text2VideoRequest] = []
        for index, item in enumerate(requests):
            try:
                parsed.append(Text2VideoRequest.parse(item))
            except RequestInvalid as exc:
                errors.extend(error.at(f"[{index}].") for error in exc.field_errors)
            if keys is not None and keys[index] is not None:
                reason = idempotency_key_problem(keys[index])
                if reason:
                    errors.append(FieldError(f"[{index}].idempotency_key", keys[index], reason))
        if errors:
            raise RequestInvalid.listing(errors)
        if not parsed:
            return ManyEnqueued([], [])
        if keys is not None and any(k is not None for k in keys):
            return self._enqueue_keyed(parsed, keys, opts, callbacks)
        # No keys: the fast path (benchmarked), every item a new job.
        store = self._ready()
        rows = [
            store.insert_values(
                request=req.to_api_payload(),
                model_requested=req.model_requested,
                model_effective=req.model_effective,
                **opts[index],
                callbacks=callbacks,
            )
            for index, req in enumerate(parsed)
        ]
        store.insert_many(rows)
        ids = [row["id"] for row in rows]
        log.info("enqueued %d jobs (%s .. %s)", len(ids), ids[0], ids[-1])
        self.broker.send_submit(ids, [row["priority"] for row in rows])
        return ManyEnqueued(
            [Job(row["id"], self, JobRecord.model_validate(row)) for row in rows], ids
        )

    def _enqueue_keyed(
        self,
        parsed: list[Text2VideoRequest],
        keys: list[str | None],
        opts: list[dict[str, Any]],
        callbacks: dict[str, Any],
    ) -> ManyEnqueued:
        payloads = [req.to_api_payload() for req in parsed]
        first = first_positions(keys, payloads)
        store = self._ready()

        def new_row(index: int) -> dict[str, Any]:
            req = parsed[index]
            return store.insert_values(
                request=payloads[index],
                model_requested=req.model_requested,
                model_effective=req.model_effective,
                idempotency_key=keys[index],
                **opts[index],
                callbacks=callbacks,
            )

        keyed_rows = {key: new_row(index) for key, index in first.items()}
        unkeyed_rows = {i: new_row(i) for i, key in enumerate(keys) if key is None}
        existing = insert_keyed(
            store,
            first,
            payloads,
            keyed_rows,
            list(unkeyed_rows.values()),
            lookup=self._jobs_by_key,
        )

        jobs: list[Job] = []
        new_ids: list[str] = []
        by_key: dict[str, Job] = {}
        for index, key in enumerate(keys):
            if key is None:
                row = unkeyed_rows[index]
                new_ids.append(row["id"])
                jobs.append(Job(row["id"], self, JobRecord.model_validate(row)))
                continue
            job = by_key.get(key)
            if job is None:
                if key in existing:
                    job = Job(existing[key].id, self, existing[key])
                else:
                    row = keyed_rows[key]
                    new_ids.append(row["id"])
                    job = Job(row["id"], self, JobRecord.model_validate(row))
                by_key[key] = job
            jobs.append(job)
        log.info(
            "enqueued %d jobs; %d idempotency key(s) matched existing jobs, nothing sent for them",
            len(new_ids),
            len(existing),
        )
        rows = {r["id"]: r for r in [*keyed_rows.values(), *unkeyed_rows.values()]}
        self.broker.send_submit(new_ids, [rows[i]["priority"] for i in new_ids])
        return ManyEnqueued(jobs, new_ids)

    def _jobs_by_key(self, keys: Sequence[str]) -> dict[str, JobRecord]:
        # A method, not a bare call, so a test can hold one producer's lookup to stage a race.
        return jobs_by_key(self.store, keys)

    def cancel(self, job_id: str) -> bool:
        """Move a non-final job to `cancelled` (compare-and-set); False if already final.

        The worker sees the state at its next step and stops. Raises ``JobNotFound``.
        """
        moved = self._ready().transition(
            job_id,
            JobStatus.CANCELLED,
            error="cancelled by user",
            error_kind="cancelled",
        )
        if not moved and self.store.get(job_id) is None:
            raise JobNotFound(job_id)
        if moved:
            log.info("cancelled job %s", job_id)
        return moved

    def retry(self, job_id: str) -> Job:
        """Resume a `parked` (or `failed`) job from its last paid step (``resume.py``)."""
        return retry_job(self, job_id)

    def retry_many(
        self,
        *,
        status: Iterable[JobStatus | str] = (JobStatus.PARKED,),
        since: datetime | None = None,
        limit: int = 1000,
    ) -> tuple[list[Job], list[RetryRefused]]:
        """``retry`` every job in ``status`` (created at/after ``since``); returns the jobs
        resumed and the refusals (each says why)."""
        return retry_jobs(self, status=status, since=since, limit=limit)

    # -- reads ------------------------------------------------------------------------
    def load(self, job_id: str) -> JobRecord:
        """The job's record now; raises ``JobNotFound``."""
        record = self._ready().get(job_id)
        if record is None:
            raise JobNotFound(job_id)
        return record

    def get_job(self, job_id: str) -> Job:
        """A handle on an existing job; raises ``JobNotFound`` (a ``KeyError``)."""
        return Job(job_id, self, self.load(job_id))

    def list_jobs(
        self,
        status: JobStatus | str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        *,
        tenant: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[JobRecord]:
        """Records newest first, optionally only ``status``, created at/after ``since``, of
        ``tenant``, and carrying every one of ``labels`` (``{"order": "1234"}``)."""
        if status is not None:
            try:
                status = JobStatus(status)
            except ValueError:
                allowed = ", ".join(s.value for s in JobStatus)
                raise RequestInvalid.of("status", status, f"must be one of {allowed}") from None
        labels = dict(labels) if labels else None
        store = self._ready()
        return store.list(status=status, since=since, limit=limit, tenant=tenant, labels=labels)

    def _same_job(self, existing: JobRecord, payload: dict[str, Any], key: str) -> Job:
        if existing.request != payload:
            reason = f"already used for a different request (job {existing.id})"
            raise RequestInvalid.of("idempotency_key", key, reason)
        log.info("idempotency key matched job %s; nothing sent", existing.id)
        return Job(existing.id, self, existing)

    def close(self) -> None:
        self.broker.close()
