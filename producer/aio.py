"""asyncio forms of the producer's calls: ``aenqueue``, ``aenqueue_many``, ``aget_job``,
``alist_jobs``, ``acancel``, ``aretry`` and ``Job.wait_async``.

    job = await aenqueue(Text2VideoRequest(prompt="..."), callback_url="https://...")
    record = await job.wait_async(timeout=900)

None of them blocks the event loop: each database or broker call runs in a small thread
pool of the producer's (``AIO_THREADS`` threads, so at most that many at once whatever the
number of callers). Waiting costs no thread per job: per event loop and producer one
poller task holds every ``wait_async`` in flight and, each tick, reads all their rows with
one ``get_many`` query (in that pool), resolves the futures of jobs that ended, and then
yields the loop with ``asyncio.sleep`` until the next tick (the interval grows while
nothing changes and shrinks when a new waiter comes).

This module must never import the worker, and never run a database call on the loop.
"""

from __future__ import annotations

import asyncio
import functools
import math
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from t2v_core.errors import JobFailed, JobNotFound, JobParked, JobTimeout
from t2v_core.records import JobRecord
from t2v_core.states import JobStatus

if TYPE_CHECKING:
    from producer.api import Producer, RequestLike
    from producer.job import Job

AIO_THREADS = 4
TICK_MIN = 0.05
TICK_MAX = 1.0

_T = TypeVar("_T")
_pools: weakref.WeakKeyDictionary[Producer, ThreadPoolExecutor] = weakref.WeakKeyDictionary()
_pollers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, _Poller]] = (
    weakref.WeakKeyDictionary()
)


def _pool(producer: Producer) -> ThreadPoolExecutor:
    pool = _pools.get(producer)
    if pool is None:
        pool = ThreadPoolExecutor(AIO_THREADS, thread_name_prefix="t2v-aio")
        _pools[producer] = pool
    return pool


async def _run(producer: Producer, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool(producer), functools.partial(fn, *args, **kwargs))


def _producer(producer: Producer | None) -> Producer:
    if producer is not None:
        return producer
    from producer.default import default_producer

    return default_producer()


# -- the calls -----------------------------------------------------------------------------
async def aenqueue(
    request: RequestLike, *, producer: Producer | None = None, **options: Any
) -> Job:
    """``enqueue`` without blocking the loop (same keyword arguments and errors)."""
    p = _producer(producer)
    return await _run(p, p.enqueue, request, **options)


async def aenqueue_many(
    requests: Iterable[RequestLike], *, producer: Producer | None = None, **options: Any
) -> list[Job]:
    """``enqueue_many`` without blocking the loop."""
    p = _producer(producer)
    return await _run(p, p.enqueue_many, list(requests), **options)


async def aget_job(job_id: str, *, producer: Producer | None = None) -> Job:
    p = _producer(producer)
    return await _run(p, p.get_job, job_id)


async def alist_jobs(
    status: JobStatus | str | None = None,
    since: datetime | None = None,
    limit: int = 100,
    *,
    producer: Producer | None = None,
) -> list[JobRecord]:
    p = _producer(producer)
    return await _run(p, p.list_jobs, status=status, since=since, limit=limit)


async def acancel(job_id: str, *, producer: Producer | None = None) -> bool:
    p = _producer(producer)
    return await _run(p, p.cancel, job_id)


async def aretry(job_id: str, *, producer: Producer | None = None) -> Job:
    p = _producer(producer)
    return await _run(p, p.retry, job_id)


# -- waiting -------------------------------------------------------------------------------
class _Poller:
    """Every ``wait_async`` of one producer on one loop, read with one query per tick."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self.waiting: dict[str, list[asyncio.Future[JobRecord]]] = {}
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.queries = 0
        self.largest_batch = 0

    def add(self, job_id: str) -> asyncio.Future[JobRecord]:
        future: asyncio.Future[JobRecord] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(job_id, []).append(future)
        self.wake.set()
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())
        return future

    def discard(self, job_id: str, future: asyncio.Future[JobRecord]) -> None:
        futures = self.waiting.get(job_id, [])
        if future in futures:
            futures.remove(future)
        if not futures:
            self.waiting.pop(job_id, None)

    def _read(self, ids: list[str]) -> tuple[dict[str, JobStatus], dict[str, JobRecord]]:
        """(In the pool.) Every waiting job's state in one narrow query, and the whole
        record only of those that ended."""
        store = self.producer._ready()
        states = store.statuses(ids)
        ended = [i for i, s in states.items() if s.is_final or s is JobStatus.PARKED]
        return states, (store.get_many(ended) if ended else {})

    async def _run(self) -> None:
        tick = TICK_MIN
        while self.waiting:
            self.wake.clear()
            ids = list(self.waiting)
            self.largest_batch = max(self.largest_batch, len(ids))
            try:
                self.queries += 1
                states, records = await _run(self.producer, self._read, ids)
            except Exception as exc:  # a database error reaches every waiter, not a log
                for futures in self.waiting.values():
                    for f in futures:
                        if not f.done():
                            f.set_exception(exc)
                self.waiting.clear()
                return
            resolved = 0
            for job_id in ids:
                if job_id in states and job_id not in records:
                    continue  # still going
                outcome = _outcome(job_id, records.get(job_id))
                if outcome is None:
                    continue
                resolved += 1
                for f in self.waiting.pop(job_id, []):
                    if not f.done():
                        _settle(f, outcome)
            tick = TICK_MIN if resolved else min(tick * 1.5, TICK_MAX)
            if not self.waiting:
                break
            try:  # sleep, but a new waiter (wake) starts the next tick soon
                await asyncio.wait_for(self.wake.wait(), tick)
                await asyncio.sleep(TICK_MIN)
            except TimeoutError:
                pass


def _outcome(job_id: str, record: JobRecord | None) -> JobRecord | BaseException | None:
    """What a waiter gets now: the record, the error to raise, or None (keep waiting)."""
    if record is None:
        return JobNotFound(job_id)
    if record.status is JobStatus.SUCCEEDED:
        return record
    if record.status.is_final or record.status is JobStatus.PARKED:
        why = f": {record.error}" if record.error else ""
        error = JobParked if record.status is JobStatus.PARKED else JobFailed
        return error(f"job {job_id} {record.status.value}{why}", record)
    return None


def _settle(future: asyncio.Future[JobRecord], outcome: JobRecord | BaseException) -> None:
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def poller_for(producer: Producer) -> _Poller:
    """This loop's poller for ``producer`` (made on first use)."""
    loop = asyncio.get_running_loop()
    mine = _pollers.setdefault(loop, {})
    poller = mine.get(id(producer))
    if poller is None or poller.producer is not producer:
        poller = mine[id(producer)] = _Poller(producer)
    return poller


async def wait_job(job: Job, producer: Producer, timeout: float | None = None) -> JobRecord:
    """``Job.wait`` for async code: same results and errors, no thread held while waiting."""
    limit = producer.default_wait_timeout if timeout is None else timeout
    poller = poller_for(producer)
    future = poller.add(job.id)
    try:
        return await asyncio.wait_for(asyncio.shield(future), None if math.isinf(limit) else limit)
    except TimeoutError:
        record = await _run(producer, producer.load, job.id)
        raise JobTimeout(
            f"job {job.id} still {record.status.value} after {limit:g}s", record
        ) from None
    finally:
        poller.discard(job.id, future)
        if not future.done():
            future.cancel()
