"""``Job``: a handle on one job row, rebuilt from its id alone in any process.

It reads the table and nothing else: waiting is polling the row with backoff (0.05 s
doubling to 2 s), never a broker round trip, so a handle survives restarts of anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

from t2v_core.errors import JobFailed, JobParked, JobTimeout
from t2v_core.records import JobRecord, OutputRecord
from t2v_core.states import JobStatus

if TYPE_CHECKING:
    from producer.api import Producer

POLL_START = 0.05
POLL_MAX = 2.0


class RecordSource(Protocol):
    """Where a ``Job`` reads its row (``producer.api.Producer``)."""

    @property
    def default_wait_timeout(self) -> float: ...

    def load(self, job_id: str) -> JobRecord: ...


class Job:
    """One job. ``record`` is the last snapshot read; ``status``/``outputs`` read afresh."""

    def __init__(self, job_id: str, source: RecordSource, record: JobRecord | None = None) -> None:
        self._id = job_id
        self._source = source
        self._record = record
        self.sleep: Callable[[float], None] = time.sleep

    def __repr__(self) -> str:
        status = self._record.status.value if self._record else "?"
        return f"<Job {self._id} {status}>"

    @property
    def id(self) -> str:
        return self._id

    @property
    def record(self) -> JobRecord:
        """The last record read (read once if none yet); ``refresh()`` for a new one."""
        if self._record is None:
            return self.refresh()
        return self._record

    def refresh(self) -> JobRecord:
        """Read the row again; raises ``JobNotFound`` if it is gone."""
        self._record = self._source.load(self._id)
        return self._record

    @property
    def status(self) -> JobStatus:
        """The job's state now (reads the row)."""
        return self.refresh().status

    @property
    def outputs(self) -> list[OutputRecord]:
        """The stored outputs now (reads the row); empty until the job succeeded."""
        return self.refresh().outputs

    def wait(
        self,
        timeout: float | None = None,
        *,
        poll_start: float = POLL_START,
        poll_max: float = POLL_MAX,
    ) -> JobRecord:
        """Block until the job is final and return its record if it ``succeeded``.

        ``timeout`` in seconds; ``None`` means ``settings.default_wait_timeout`` (900 s
        unless set), ``math.inf`` waits for ever. Raises ``JobFailed`` (``.record``) when
        the job ends `failed` or `cancelled`, ``JobParked`` (a ``JobFailed``) when it is
        `parked` (a paid render held for ``retry()``), ``JobTimeout`` (``.record``, the job goes
        on) when time runs out, ``JobNotFound`` if the row does not exist.
        """
        limit = self._source.default_wait_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        delay = poll_start
        while True:
            record = self.refresh()
            if record.status is JobStatus.SUCCEEDED:
                return record
            if record.status.is_final or record.status is JobStatus.PARKED:
                why = f": {record.error}" if record.error else ""
                error = JobParked if record.status is JobStatus.PARKED else JobFailed
                raise error(f"job {self._id} {record.status.value}{why}", record)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise JobTimeout(
                    f"job {self._id} still {record.status.value} after {limit:g}s", record
                )
            self.sleep(min(delay, remaining))
            delay = min(delay * 2, poll_max)

    async def wait_async(self, timeout: float | None = None) -> JobRecord:
        """``wait`` for async code: the same result and errors, without blocking the event
        loop or holding a thread (one poller per loop reads every waiting job's row in one
        query per tick; see ``producer.aio``)."""
        from producer.aio import wait_job

        return await wait_job(self, cast("Producer", self._source), timeout)
