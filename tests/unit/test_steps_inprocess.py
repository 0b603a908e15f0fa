"""The state machine in-process: each step driven by hand, with a fake provider, a fake CDN
and a fake clock. No Celery, no sleep, no network.

Real parts: a SQLite file (``JobStore``), the account's slot line (``AccountLimiter``, its
Lua scripts on fakeredis) and the files stored (``LocalStorage``). Fake parts: ModelsLab
(``Provider``: answers given by the test, every call logged), the CDN (a ``requests``
adapter serving MP4 bytes), the broker (``World.scheduled``: what the steps asked to send,
as (task, job id, countdown)) and time (``World.clock``, moved by the test).

Each test is one short story: put a job somewhere, deliver a message, look at the row, at
the provider's call log, at what was scheduled and at the account's slots.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from t2v_core.db import make_engine
from t2v_core.errors import RateLimited, TransientError
from t2v_core.names import TASK_DOWNLOAD, TASK_POLL, TASK_SUBMIT
from t2v_core.records import JobRecord
from t2v_core.states import JobStatus
from t2v_core.store import JobStore
from worker.limiter import AccountLimiter
from worker.modelslab import ProviderResult, ProviderStatus, SubmitOutcomeUnknown
from worker.reconcile import reconcile
from worker.settings import WorkerSettings
from worker.steps import Runtime, download_step, poll_step, submit_step
from worker.steps.slots import wake_line
from worker.storage import LocalStorage

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CDN = "cdn.inproc.test"
MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 1000
STEPS: dict[str, Callable[[Runtime, str], None]] = {
    TASK_SUBMIT: submit_step,
    TASK_POLL: poll_step,
    TASK_DOWNLOAD: download_step,
}

# Every field the steps read, given here: nothing comes from the environment or a .env.
SETTINGS = WorkerSettings(
    _env_file=None,  # type: ignore[call-arg]
    database_url="sqlite:///:memory:",
    storage_url="./unused",
    modelslab_api_key="sk-inproc-test",
    download_allowed_hosts=[CDN],  # the fake CDN's name is never resolved
    account_slots=1,  # one render at a time: a freed slot visibly wakes the next job
    connect_timeout=5.0,
    read_timeout=30.0,
    poll_deadline_seconds=300.0,
    poll_max_first_delay=900.0,
    poll_min_delay=10.0,
    poll_max_delay=60.0,
    poll_backoff=1.6,
    poll_jitter=0.2,
    submit_unknown_wait=600.0,
    lost_submit_hold=120.0,
    parked_retry_base=300.0,
    parked_retry_max=3600.0,
    max_unknown_resubmits=1,
    claim_lease=60.0,
    download_claim_lease=120.0,
    claim_slack=1.0,
    submit_max_attempts=2,
    transient_base_delay=2.0,
    download_max_bytes=1 << 20,
    download_not_found_window=120.0,
    download_max_attempts=10,
    probe_videos=False,
    webhook_url=None,
    auto_migrate=False,
)


# -- the fakes ------------------------------------------------------------------------------
class Clock:
    """Fake time: moves only when the test (or ``World.deliver``) moves it."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


Answer = ProviderResult | Exception


class Provider:
    """ModelsLab as the test scripts it: the next answer to each call, every call logged."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []  # ("submit", track id) | ("fetch", provider id)
        self.submit_answers: list[Answer] = []
        self.fetch_answers: list[Answer] = []

    def submit(self, payload: dict[str, Any]) -> ProviderResult:
        self.calls.append(("submit", str(payload["track_id"])))
        return self._answer(self.submit_answers)

    def fetch(self, provider_id: str) -> ProviderResult:
        self.calls.append(("fetch", provider_id))
        return self._answer(self.fetch_answers)

    @staticmethod
    def _answer(answers: list[Answer]) -> ProviderResult:
        assert answers, "the provider was asked something the test did not expect"
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class Cdn(BaseAdapter):
    """The provider's CDN behind a ``requests`` adapter: a URL it has serves MP4 bytes,
    any other answers 404."""

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        url = str(request.url)
        self.requests.append(url)
        body = self.files.get(url)
        resp = requests.Response()
        resp.status_code, resp.reason = (200, "OK") if body is not None else (404, "Not Found")
        body = b"not found" if body is None else body
        resp.headers = CaseInsensitiveDict(
            {
                "content-type": "video/mp4" if resp.status_code == 200 else "text/plain",
                "content-length": str(len(body)),
            }
        )
        resp.raw = io.BytesIO(body)
        resp.url, resp.request = url, request
        return resp

    def close(self) -> None:
        pass


def processing(provider_id: str = "p-1", eta: float | None = 30.0) -> ProviderResult:
    return ProviderResult(ProviderStatus.PROCESSING, provider_id, eta=eta, raw_status="processing")


def success(provider_id: str = "p-1", *urls: str) -> ProviderResult:
    return ProviderResult(
        ProviderStatus.SUCCESS,
        provider_id,
        outputs=list(urls) or [f"https://{CDN}/{provider_id}/0.mp4"],
        raw_status="success",
    )


def failed(provider_id: str = "p-1", message: str = "nsfw content") -> ProviderResult:
    return ProviderResult(ProviderStatus.FAILED, provider_id, message=message, raw_status="failed")


# -- the world one test runs in -------------------------------------------------------------
@dataclass
class World:
    rt: Runtime
    clock: Clock
    provider: Provider
    cdn: Cdn
    limiter: AccountLimiter
    store: JobStore
    scheduled: list[tuple[str, str, float]]

    def enqueue(self, **values: Any) -> str:
        """A new `queued` row, as ``Producer.enqueue`` writes it (``values`` added)."""
        row = self.store.insert_values(
            request={"prompt": "a red fox in the snow", "model_id": "wan2.2"},
            model_requested="wan2.2",
            model_effective="wan2.2",
        )
        self.store.insert_one({**row, **values})
        return str(row["id"])

    def job(self, job_id: str) -> JobRecord:
        rec = self.store.get(job_id)
        assert rec is not None
        return rec

    def take(self) -> list[tuple[str, str, float]]:
        """What the steps scheduled since the last look (the broker's new messages)."""
        sent, self.scheduled[:] = list(self.scheduled), []
        return sent

    def tasks(self) -> list[tuple[str, str]]:
        """``take()`` without the countdowns."""
        return [(task, job_id) for task, job_id, _ in self.take()]

    def deliver(self) -> tuple[str, str]:
        """The broker delivers the oldest message when its countdown is over: the clock
        moves to then and the step runs."""
        task, job_id, countdown = self.scheduled.pop(0)
        self.clock.advance(countdown)
        STEPS[task](self.rt, job_id)
        return task, job_id

    def submitted(self, provider_id: str = "p-1", eta: float = 30.0) -> str:
        """A job the provider took, now `processing`, its first poll scheduled."""
        job = self.enqueue()
        self.provider.submit_answers.append(processing(provider_id, eta))
        submit_step(self.rt, job)
        assert self.job(job).status is JobStatus.PROCESSING
        return job


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    clock = Clock()
    engine = make_engine(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    store = JobStore(engine, now=clock)
    store.create_schema()
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    limiter = AccountLimiter(redis, SETTINGS.account_slots, clock=lambda: clock().timestamp())
    limiter.rebuild([], [])  # the line as a running worker finds it: ready, empty
    cdn = Cdn()
    http = requests.Session()
    http.trust_env = False
    http.mount(f"https://{CDN}/", cdn)
    provider = Provider()
    scheduled: list[tuple[str, str, float]] = []
    rt = Runtime(
        settings=SETTINGS,
        store=store,
        client=provider,  # type: ignore[arg-type]
        limiter=limiter,
        storage=LocalStorage(tmp_path / "videos"),
        http=http,
        schedule=lambda task, job_id, countdown: scheduled.append((task, job_id, countdown)),
        rng=random.Random(0),
        now=clock,
    )
    world = World(rt, clock, provider, cdn, limiter, store, scheduled)
    yield world
    http.close()
    redis.close()
    engine.dispose()


# -- the stories ----------------------------------------------------------------------------
def test_happy_path_from_queued_to_a_stored_video(world: World) -> None:
    job = world.enqueue()
    world.provider.submit_answers.append(processing("p-1", eta=30.0))

    submit_step(world.rt, job)
    rec = world.job(job)
    assert (rec.status, rec.provider_id, rec.submit_count) == (JobStatus.PROCESSING, "p-1", 1)
    assert world.limiter.holders() == [job]  # the provider renders it: the slot is held
    [(task, _, first_poll)] = world.scheduled
    assert task == TASK_POLL and 30.0 <= first_poll <= 35.0  # the first look follows the eta

    world.provider.fetch_answers.append(processing("p-1"))
    assert world.deliver() == (TASK_POLL, job)
    assert world.job(job).poll_count == 1
    assert [t for t, _, _ in world.scheduled] == [TASK_POLL]  # not done yet: look again

    world.cdn.files[f"https://{CDN}/p-1/0.mp4"] = MP4
    world.provider.fetch_answers.append(success("p-1"))
    world.deliver()
    assert world.job(job).status is JobStatus.DOWNLOADING
    assert world.limiter.holders() == []  # the render is over: the slot is free at once
    assert world.scheduled == [(TASK_DOWNLOAD, job, 0)]

    world.deliver()
    rec = world.job(job)
    assert rec.status is JobStatus.SUCCEEDED and rec.error is None
    [out] = rec.outputs
    assert out.bytes == len(MP4) and out.content_type == "video/mp4"
    assert Path(out.storage_uri.removeprefix("file://")).read_bytes() == MP4
    assert world.provider.calls == [("submit", job), ("fetch", "p-1"), ("fetch", "p-1")]
    assert world.scheduled == []


def test_a_worker_that_serves_downloads_downloads_in_the_finishing_poll(world: World) -> None:
    """``T2V_DOWNLOAD_INLINE``: no t2v.download task is sent, the same poll stores the video;
    a failed try still goes back through the queue (its retry is a countdown)."""
    world.rt.inline = frozenset({TASK_DOWNLOAD})
    job = world.submitted("p-1")
    world.cdn.files[f"https://{CDN}/p-1/0.mp4"] = MP4
    world.provider.fetch_answers.append(success("p-1"))
    assert world.deliver() == (TASK_POLL, job)
    rec = world.job(job)
    assert rec.status is JobStatus.SUCCEEDED and rec.download_attempts == 1
    assert world.take() == []
    assert world.limiter.holders() == []

    other = world.submitted("p-2")
    world.provider.fetch_answers.append(success("p-2"))  # its link 404s for now
    assert world.deliver() == (TASK_POLL, other)
    rec = world.job(other)
    assert rec.status is JobStatus.DOWNLOADING and rec.download_attempts == 1
    [(task, job_id, countdown)] = world.take()
    assert (task, job_id) == (TASK_DOWNLOAD, other) and countdown > 0


def test_a_worker_that_serves_submits_submits_the_next_job_in_the_task_that_freed_it(
    world: World,
) -> None:
    """``T2V_SUBMIT_INLINE``: the poll that sees a render over hands the freed slot to the
    next job in line by submitting it there (no t2v.submit task); one hand-off per task."""
    world.rt.inline = frozenset({TASK_DOWNLOAD, TASK_SUBMIT})
    first = world.submitted("p-1")
    second = world.enqueue()
    world.clock.advance(1)  # the line is oldest first
    third = world.enqueue()
    submit_step(world.rt, second)  # one slot, held by the first job: both wait in line
    submit_step(world.rt, third)
    assert world.limiter.waiting() == [second, third]
    assert world.tasks() == [(TASK_POLL, first)]

    world.cdn.files[f"https://{CDN}/p-1/0.mp4"] = MP4
    world.provider.fetch_answers.append(success("p-1"))
    world.provider.submit_answers.append(processing("p-2", eta=30.0))
    world.clock.advance(40)
    poll_step(world.rt, first)
    assert world.job(first).status is JobStatus.SUCCEEDED
    rec = world.job(second)
    assert (rec.status, rec.provider_id, rec.submit_count) == (JobStatus.PROCESSING, "p-2", 1)
    assert world.limiter.holders() == [second] and world.limiter.waiting() == [third]
    assert world.tasks() == [(TASK_POLL, second)]  # its first poll; no t2v.submit sent
    assert world.provider.calls[-2:] == [("fetch", "p-1"), ("submit", second)]


def test_a_submit_run_in_place_that_frees_a_slot_sends_the_next_hand_off(world: World) -> None:
    """An in-place submit whose job turns out to need no slot (cancelled while it waited)
    gives its turn on through the queue: hand-offs never chain inside one task."""
    world.rt.inline = frozenset({TASK_SUBMIT})
    first = world.submitted("p-1")
    second = world.enqueue()
    world.clock.advance(1)  # the line is oldest first
    third = world.enqueue()
    submit_step(world.rt, second)
    submit_step(world.rt, third)
    world.take()
    world.store.transition(second, JobStatus.CANCELLED, expect=[JobStatus.QUEUED])

    world.provider.fetch_answers.append(failed("p-1"))
    world.clock.advance(40)
    poll_step(world.rt, first)
    assert world.job(first).status is JobStatus.FAILED
    # The first job's slot went to the second, which gave it on: the third is sent.
    assert world.tasks() == [(TASK_SUBMIT, third)]
    assert world.job(third).status is JobStatus.QUEUED
    assert [c for c, _ in world.provider.calls].count("submit") == 1


def test_a_submit_run_in_place_that_fails_leaves_the_task_that_ran_it_settled(
    world: World,
) -> None:
    """The in-place submit raising (the database, say) fails as its own task would: the
    job that freed the slot is settled anyway, and ``wake_line`` (reconcile) hands the
    slot to the next job again."""
    world.rt.inline = frozenset({TASK_SUBMIT})
    first = world.submitted("p-1")
    second = world.enqueue()
    submit_step(world.rt, second)
    world.take()
    real_get = world.store.get

    def get(job_id: str) -> JobRecord | None:
        if job_id == second:
            raise RuntimeError("the database went away")
        return real_get(job_id)

    world.store.get = get  # type: ignore[method-assign]
    world.provider.fetch_answers.append(failed("p-1"))
    world.clock.advance(40)
    poll_step(world.rt, first)  # does not raise
    world.store.get = real_get  # type: ignore[method-assign]
    assert world.job(first).status is JobStatus.FAILED
    assert world.job(second).status is JobStatus.QUEUED
    assert world.take() == []
    world.rt.inline = frozenset()
    wake_line(world.rt)
    assert world.tasks() == [(TASK_SUBMIT, second)]


def test_reconcile_hands_a_slot_it_frees_on_through_the_queue(world: World) -> None:
    """Reconcile never submits in place: a run must not wait on the provider."""
    world.rt.inline = frozenset({TASK_SUBMIT})
    first = world.submitted("p-1")
    second = world.enqueue()
    submit_step(world.rt, second)
    world.take()
    # The first job ended behind the steps' back: its slot is stale.
    assert world.store.transition(first, JobStatus.FAILED, error="failed elsewhere")
    report = reconcile(world.rt)
    assert report.freed == 1
    assert (TASK_SUBMIT, second) in world.tasks()
    assert world.job(second).status is JobStatus.QUEUED
    assert ("submit", second) not in world.provider.calls


def test_a_lost_submit_answer_is_not_sent_again(world: World) -> None:
    job = world.enqueue()
    world.provider.submit_answers.append(SubmitOutcomeUnknown("read timed out"))

    submit_step(world.rt, job)
    rec = world.job(job)
    # It may have been accepted (and paid): the job stays in doubt, and says why.
    assert rec.status is JobStatus.SUBMITTING
    assert rec.error is not None and rec.error.startswith("submit outcome unknown")
    assert (rec.submit_count, rec.retry_count, rec.unknown_submits) == (1, 1, 0)
    # Reconcile may resubmit only after submit_unknown_wait (a webhook may name it first).
    assert rec.next_check_at == T0 + timedelta(seconds=SETTINGS.submit_unknown_wait)
    assert world.limiter.holders() == [job]  # a render may be running: the slot is kept

    # The one message scheduled is the line's wake-up once the hold is over, not a resubmit.
    [(task, _, countdown)] = world.scheduled
    assert task == TASK_SUBMIT and countdown == SETTINGS.lost_submit_hold + 1.0
    world.deliver()
    assert world.provider.calls == [("submit", job)]
    assert world.job(job).status is JobStatus.SUBMITTING
    assert world.limiter.holders() == []  # the hold ran out: the slot is free again
    assert world.scheduled == []


def test_a_full_provider_queue_sends_the_job_back_without_using_up_tries(world: World) -> None:
    job = world.enqueue()
    full = RateLimited(
        "HTTP 429: Maximum 1 queued requests allowed",
        retry_after=30.0,
        queue_full=True,
        provider_max=1,
    )
    world.provider.submit_answers += [full, full, full, processing("p-9")]

    submit_step(world.rt, job)
    rec = world.job(job)
    assert rec.status is JobStatus.QUEUED and rec.error_kind is None
    assert world.limiter.holders() == []  # nothing renders: the slot went back
    [(task, _, countdown)] = world.scheduled
    assert task == TASK_SUBMIT and countdown >= 30.0  # the server's Retry-After is a floor

    # Three 429s in a row, with submit_max_attempts = 2: waiting for room is no failure.
    world.deliver()
    world.deliver()
    assert world.job(job).status is JobStatus.QUEUED
    world.deliver()
    rec = world.job(job)
    assert (rec.status, rec.provider_id) == (JobStatus.PROCESSING, "p-9")
    assert [call for call, _ in world.provider.calls] == ["submit"] * 4
    assert world.limiter.view().queue_full_429s == 3


def test_a_provider_error_on_submit_does_use_up_tries(world: World) -> None:
    job = world.enqueue()
    world.provider.submit_answers += [TransientError("HTTP 503"), TransientError("HTTP 503")]

    submit_step(world.rt, job)
    assert world.job(job).status is JobStatus.QUEUED
    world.deliver()
    rec = world.job(job)
    assert (rec.status, rec.error_kind, rec.submit_count) == (JobStatus.FAILED, "transient", 2)
    assert world.limiter.holders() == [] and world.scheduled == []


def test_polling_past_the_deadline_parks_the_render_and_does_not_fail_it(world: World) -> None:
    job = world.submitted("p-1", eta=30.0)
    world.take()
    world.clock.advance(SETTINGS.poll_deadline_seconds + 1)
    world.provider.fetch_answers.append(processing("p-1"))

    poll_step(world.rt, job)
    rec = world.job(job)
    assert (rec.status, rec.error_kind, rec.park_count) == (JobStatus.PARKED, "deadline", 1)
    assert rec.error_detail is not None and rec.error_detail["deadline_s"] == 300
    assert world.provider.calls[-1] == ("fetch", "p-1")  # the fetch still came first
    assert world.limiter.holders() == [job]  # it may still be rendering: the slot is kept
    assert world.scheduled == []  # reconcile's automatic retry picks a parked job up


def test_a_render_that_just_finished_past_the_deadline_is_still_downloaded(world: World) -> None:
    job = world.submitted("p-1")
    world.take()
    world.clock.advance(SETTINGS.poll_deadline_seconds + 1)
    world.provider.fetch_answers.append(success("p-1"))

    poll_step(world.rt, job)
    assert world.job(job).status is JobStatus.DOWNLOADING
    assert world.tasks() == [(TASK_DOWNLOAD, job)]


def test_the_providers_failed_fails_the_job_and_frees_the_slot(world: World) -> None:
    first = world.submitted("p-1")
    second = world.enqueue()
    submit_step(world.rt, second)  # one slot, and the first job holds it
    assert world.job(second).status is JobStatus.QUEUED
    assert world.limiter.waiting() == [second]
    assert world.tasks() == [(TASK_POLL, first)]

    world.provider.fetch_answers.append(failed("p-1", "nsfw content"))
    world.clock.advance(40)
    poll_step(world.rt, first)
    rec = world.job(first)
    assert (rec.status, rec.error_kind) == (JobStatus.FAILED, "generation_failed")
    assert rec.error == "nsfw content"
    assert world.limiter.holders() == []
    assert world.tasks() == [(TASK_SUBMIT, second)]  # the freed slot wakes the next in line


def test_a_duplicate_poll_message_does_nothing(world: World) -> None:
    job = world.submitted("p-1")
    [(task, _, countdown)] = world.take()
    world.clock.advance(countdown)
    world.provider.fetch_answers.append(processing("p-1"))

    poll_step(world.rt, job)
    poll_step(world.rt, job)  # the same message, delivered twice
    assert world.provider.calls.count(("fetch", "p-1")) == 1
    assert world.job(job).poll_count == 1
    assert world.tasks() == [(TASK_POLL, job)]


def test_a_link_that_404s_past_the_window_parks_link_missing(world: World) -> None:
    job = world.submitted("p-1")
    world.take()
    world.clock.advance(40)
    world.provider.fetch_answers.append(success("p-1"))  # the CDN never gets the file
    poll_step(world.rt, job)
    assert world.tasks() == [(TASK_DOWNLOAD, job)]

    download_step(world.rt, job)
    assert world.job(job).status is JobStatus.DOWNLOADING  # CDN links appear late: retried
    assert world.tasks() == [(TASK_DOWNLOAD, job)]

    world.clock.advance(SETTINGS.download_not_found_window)
    download_step(world.rt, job)  # still 404, now past the window
    rec = world.job(job)
    assert (rec.status, rec.error_kind) == (JobStatus.PARKED, "link_missing")
    assert rec.download_attempts == 2 and len(world.cdn.requests) == 2
    assert world.scheduled == [] and world.limiter.holders() == []
    assert [call for call, _ in world.provider.calls] == ["submit", "fetch"]  # nothing more


def test_a_second_copy_of_the_submit_message_sends_nothing(world: World) -> None:
    job = world.submitted("p-1")
    world.take()

    submit_step(world.rt, job)  # redelivered after the provider answered
    assert world.provider.calls == [("submit", job)]
    assert world.job(job).status is JobStatus.PROCESSING
    assert world.scheduled == [] and world.limiter.holders() == [job]


def test_a_queued_job_whose_render_is_known_is_polled_never_submitted(world: World) -> None:
    # Queued again while the provider already named its render (a webhook adopted it).
    job = world.enqueue(provider_id="p-7")

    submit_step(world.rt, job)
    rec = world.job(job)
    assert (rec.status, rec.provider_id) == (JobStatus.PROCESSING, "p-7")
    assert world.provider.calls == []
    assert world.take() == [(TASK_POLL, job, 0)]


def test_stale_submit_messages_after_a_wipe_do_not_multiply(world: World) -> None:
    """The benchmark's livelock, small: Redis lost the line with every slot free and jobs
    waiting; the rebuild wakes the first ``free`` of the line and a beat wakes them again
    before their messages ran (both as they must: a wake can be lost). Every render ends at
    once, so the slots stay free. Each second copy of a submit message (its job already
    submitted or done) once released "its" slot and woke the first ``free`` jobs again, so
    every message sent up to ``free`` more: the broker filled up while the line stood.
    Now a copy that changes nothing wakes nobody: every message is a job's own wake, the
    beat's copies, or the wake a freed slot gives the one job it brings in."""
    from worker.steps.slots import rebuild_line, wake_line

    world.limiter.limit = 4
    jobs = []
    for _ in range(12):
        jobs.append(world.enqueue())
        world.clock.advance(1)
    world.limiter.redis.flushdb()  # Redis restarted empty: the line and every message gone
    assert rebuild_line(world.rt)
    wake_line(world.rt)  # a beat before the woken jobs' messages ran
    world.provider.submit_answers += [success(f"p-{i}") for i in range(len(jobs))]
    delivered = 0
    while any(task == TASK_SUBMIT for task, _, _ in world.scheduled):
        message = next(m for m in world.scheduled if m[0] == TASK_SUBMIT)  # oldest first
        world.scheduled.remove(message)
        submit_step(world.rt, message[1])
        delivered += 1
        assert delivered <= 100, "submit messages keep multiplying (324 before the fix)"
    assert {world.job(j).status for j in jobs} == {JobStatus.DOWNLOADING}
    assert world.limiter.waiting() == [] and world.limiter.holders() == []
    # 12 jobs' wakes, the beat's 4 copies: nothing else.
    assert delivered == 12 + 4


def test_a_rebuilder_killed_mid_way_holds_the_line_back_briefly(world: World) -> None:
    """The rebuild of a lost line runs under a short lock its holder renews: a rebuilder
    that died holding it keeps every acquire waiting for ``REBUILD_LOCK_SECONDS`` (it was a
    fixed 60 s), and a live one never drops a lock another process took over."""
    from t2v_core.names import rebuild_lock_key
    from worker.steps.slots import REBUILD_LOCK_SECONDS, rebuild_line

    redis = world.limiter.redis
    lock = rebuild_lock_key(world.limiter.prefix)
    waiting = [world.enqueue() for _ in range(3)]
    redis.flushdb()  # Redis restarted empty: the line is lost
    redis.set(lock, "a-dead-rebuilder", px=int(REBUILD_LOCK_SECONDS * 1000))
    assert not rebuild_line(world.rt)  # somebody is (was) at it
    assert not world.limiter.is_ready()
    assert REBUILD_LOCK_SECONDS <= 10
    redis.delete(lock)  # ...for no longer than its lock lives
    assert rebuild_line(world.rt)
    assert world.limiter.is_ready() and not redis.exists(lock)
    assert set(world.limiter.waiting()) | set(world.limiter.holders()) == set(waiting)

    # A rebuild holds its own lock that long, and once it lapsed and another took it, it
    # leaves the other's lock alone.
    redis.flushdb()
    seen: list[int] = []
    write = world.limiter.rebuild

    def slow_write(*args: Any, **kwargs: Any) -> None:
        seen.append(redis.pttl(lock))
        redis.set(lock, "the-next-rebuilder")  # ours lapsed meanwhile; another took it
        write(*args, **kwargs)

    world.limiter.rebuild = slow_write  # type: ignore[method-assign]
    assert rebuild_line(world.rt)
    assert 0 < seen[0] <= REBUILD_LOCK_SECONDS * 1000
    assert redis.get(lock) == b"the-next-rebuilder"


def test_a_long_rebuild_renews_its_lock_as_it_writes(world: World) -> None:
    """Each chunk of waiters written calls ``on_chunk`` (the rebuild renews its lock there)."""
    calls: list[int] = []
    waiters = [(f"job-{i}", float(i)) for i in range(5)]
    world.limiter.rebuild([], waiters, chunk=2, on_chunk=lambda: calls.append(1))
    assert len(calls) == 3  # after jobs 0-1, 2-3 and 4
    assert world.limiter.waiting() == [job for job, _ in waiters]


def test_a_replay_after_a_wipe_killed_half_way_is_finished_by_the_next_run(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis lost its data: every ``on_done`` task published within the replay window is
    sent again. The replay goes in batches; a run killed between two batches must leave the
    rest to the next run (the epoch key, which says "replayed", was set before the replay
    and the rest were never sent again)."""
    from t2v_core.names import TASK_CALLBACK
    from worker import reconcile as reconcile_module

    monkeypatch.setattr(reconcile_module, "REPLAY_BATCH", 1)
    sent_at = world.clock() - timedelta(seconds=60)  # within the window
    jobs = [
        world.enqueue(
            status=JobStatus.SUCCEEDED.value,
            on_done="app.done",
            on_done_sent_at=sent_at + timedelta(seconds=i),
        )
        for i in range(3)
    ]
    world.clock.advance(1)
    keep = world.rt.schedule
    sent: list[str] = []

    def dies_on_the_second(task: str, job_id: str, countdown: float) -> None:
        if task == TASK_CALLBACK and sent:
            raise SystemExit("SIGKILL")  # the worker dies mid-run
        sent.append(job_id)
        keep(task, job_id, countdown)

    world.rt.schedule = dies_on_the_second  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        reconcile(world.rt)
    assert sent == [jobs[0]]
    world.rt.schedule = keep  # type: ignore[method-assign]
    world.take()
    world.clock.advance(10)
    report = reconcile(world.rt)
    # The second job was marked due before the kill (sent again after the grace, as any
    # lost callback); the third was not marked at all: this run replays it.
    assert report.callbacks_replayed == 1
    assert (TASK_CALLBACK, jobs[2]) in world.tasks()
    assert world.job(jobs[1]).callback_due_at is not None
    world.clock.advance(10)
    assert reconcile(world.rt).callbacks_replayed == 0  # replayed once, not at every run


def test_reconcile_looks_at_a_bounded_sample_of_many_slot_holders(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With more holders than ``HOLDERS_BATCH``, a run reads that many rows, not every
    holder's (5,000 rows took 230 ms a run); a stale slot among them is still freed within
    a few runs. With fewer, every holder is looked at in each run."""
    from worker import reconcile as reconcile_module

    monkeypatch.setattr(reconcile_module, "HOLDERS_BATCH", 4)
    world.limiter.limit = 12
    live = [world.submitted(f"p-{i}") for i in range(11)]
    stale = world.submitted("p-stale")
    # Its render ended behind the steps' back (the release was lost with its worker).
    assert world.store.transition(stale, JobStatus.FAILED, error="failed elsewhere")
    world.take()
    read: list[int] = []
    get_many = world.store.get_many

    def counted(ids: Any) -> Any:
        read.append(len(list(ids)))
        return get_many(ids)

    monkeypatch.setattr(world.store, "get_many", counted)
    runs = 0
    while stale in world.limiter.holders():
        runs += 1
        assert runs <= 40, "a stale slot among 12 holders was never sampled"
        reconcile(world.rt)
    assert max(read) <= 4
    assert sorted(world.limiter.holders()) == sorted(live)  # no live slot taken

    read.clear()
    monkeypatch.setattr(reconcile_module, "HOLDERS_BATCH", 1000)
    reconcile(world.rt)
    assert 11 in read  # at most the batch: all of them


def test_a_lost_answers_hold_reads_the_recent_etas_once_per_ttl(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every submit sizes a lost answer's slot hold from the provider's recent etas: read
    from Redis once per ``RECENT_ETAS_TTL``, not on every submit."""
    from worker.steps.runtime import RECENT_ETAS_TTL

    world.limiter.after_accept("wan2.2", 40.0)
    reads: list[str] = []
    real = world.limiter.recent_etas
    monkeypatch.setattr(world.limiter, "recent_etas", lambda m: reads.append(m) or real(m))
    assert world.rt.recent_etas("wan2.2") == [40.0]
    world.limiter.after_accept("wan2.2", 50.0)
    world.clock.advance(RECENT_ETAS_TTL / 2)
    assert world.rt.recent_etas("wan2.2") == [40.0]
    world.clock.advance(RECENT_ETAS_TTL / 2)
    assert world.rt.recent_etas("wan2.2") == [50.0, 40.0]
    assert reads == ["wan2.2", "wan2.2"]


def test_a_rebuild_renews_its_lock_while_it_reads_a_big_table(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading the table the line is rebuilt from may outlast the lock (a 100,000 backlog
    on a slow database): the rebuilder renews it as the rows come, so no second rebuild
    starts beside it."""
    import worker.leases
    from t2v_core.names import rebuild_lock_key
    from worker.steps.slots import REBUILD_LOCK_SECONDS, rebuild_line

    redis = world.limiter.redis
    lock = rebuild_lock_key(world.limiter.prefix)
    waiting = [world.enqueue() for _ in range(4)]
    redis.flushdb()
    clock = [1000.0]
    monkeypatch.setattr(worker.leases.time, "monotonic", lambda: clock[0])
    seen: list[int] = []
    read = world.store.line_members

    def slow_read(*args: Any, **kwargs: Any) -> Any:
        for member in read(*args, **kwargs):
            clock[0] += REBUILD_LOCK_SECONDS / 2  # each row takes half the lock's life
            redis.pexpire(lock, int(REBUILD_LOCK_SECONDS * 500))  # ...and Redis's clock too
            yield member
            seen.append(redis.pttl(lock))

    monkeypatch.setattr(world.store, "line_members", slow_read)
    assert rebuild_line(world.rt)
    assert len(seen) == len(waiting)
    assert all(ttl > REBUILD_LOCK_SECONDS * 500 for ttl in seen), seen
    assert sorted(world.limiter.waiting()) == sorted(waiting)
