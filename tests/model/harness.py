"""The model world: the real step functions driven in-process against fakes, one seed each.

Everything that decides comes from ``random.Random`` instances derived from one integer
seed, and all time is a fake clock, so a seed replays exactly (run it with the same
``PYTHONHASHSEED``: ``runner`` starts its processes with 0).

Real parts: a SQLite file (``JobStore`` with the fake clock), ``AccountLimiter`` on
fakeredis (our Lua scripts run in fakeredis' Lua), ``worker.steps`` / ``worker.reconcile``
/ ``worker.webhook.accept_webhook`` / ``producer.api.Producer`` / ``t2v_core.retry``, and
``worker.transfer.download_to_storage`` (through a requests adapter that serves the fake
CDN). Fakes: the provider (its own truth: renders, queue limit, other clients, outputs that
expire), the broker (a list of messages with due times), the storage (a dict), the clock.

Faults, from the seed: a crash (``Crash``, a ``BaseException`` so no ``except Exception``
in the steps can swallow it) before or after any one write of a step: database, Redis,
HTTP, storage, broker send; the message is then lost or redelivered after the visibility
timeout. Messages duplicated, reordered, delayed, dropped; the broker and Redis wiped
together (FLUSHALL and SCRIPT FLUSH: a Redis restart without persistence); submit answers
lost before or after the provider took the job, answers without an id, 429 queue-full,
5xx, 401 on fetch; webhooks sent twice or never; CDN links that 404 at first, HTML pages
instead of a video, connection resets; storage outages; host clocks skewed against the
limiter's clock; a worker stalling mid-step; application actions (enqueue, enqueue_many,
cancel, retry) at any time.

Up to three steps are in flight at once: each runs on its own thread, but only one runs
at a time, handing control back at each write, so the seed picks how they interleave.

A schedule has a chaos phase (faults on), then a drain phase (faults off, time runs on
with beat) until every job is final, bounded by fake time and events; ``invariants``
checks the world after every event and at the end. See README.md beside this file.
"""

from __future__ import annotations

import _thread
import hashlib
import io
import logging
import random
import sqlite3
import threading
import time as _time
import types
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import fakeredis
import fakeredis._socket._base as _fakeredis_socket
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from sqlalchemy import delete

import producer.api as api_module
import t2v_core.store as store_module
import worker.limiter as limiter_module
from producer.api import Producer
from producer.broker import Broker
from t2v_core import names
from t2v_core.db import make_engine
from t2v_core.errors import (
    EnqueueError,
    JobNotFound,
    PermanentError,
    RateLimited,
    T2VError,
    TransientError,
)
from t2v_core.fairness import PRIORITIES
from t2v_core.names import TASK_ADMIT, TASK_DOWNLOAD, TASK_POLL, TASK_SUBMIT
from t2v_core.records import JobRecord, JobRow
from t2v_core.retry import OUTPUT_TTL, RetryRefused, plan_retry
from t2v_core.settings import Settings
from t2v_core.states import JobStatus
from t2v_core.store import JobStore
from worker import reconcile as reconcile_module
from worker import steps
from worker.limiter import AccountLimiter
from worker.modelslab import ProviderResult, ProviderStatus, SubmitOutcomeUnknown
from worker.settings import WorkerSettings
from worker.webhook import DEDUPE_TTL, accept_webhook

T0 = 1_750_000_000.0  # fake epoch seconds at the start of every schedule
CDN = "cdn.model.test"
WEBHOOK_SECRET = "model-webhook-secret-0123456789"
MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"


class Crash(BaseException):
    """The worker (or application) process died here; nothing after this line ran."""


class Violation(BaseException):
    """An invariant failed inside a step: stop the schedule, report it."""


# -- time ---------------------------------------------------------------------------------
class Clock:
    """True fake time (epoch seconds). Hosts read it through their own skew."""

    def __init__(self) -> None:
        self.t = T0

    def view(self, skew: float) -> Callable[[], datetime]:
        return lambda: datetime.fromtimestamp(self.t + skew, UTC)


# fakeredis expires keys (EX) by its own time.time(): point it at the current world's clock,
# or a crashed reconcile's 120 s lock would last 120 real seconds.
_CURRENT_CLOCK: Clock | None = None


def _fake_time() -> float:
    return _CURRENT_CLOCK.t if _CURRENT_CLOCK is not None else _time.time()


_fakeredis_socket.time = types.SimpleNamespace(  # type: ignore[attr-defined]
    time=_fake_time, monotonic=_time.monotonic, sleep=_time.sleep
)

_SCRIPT_NAMES = {
    hashlib.sha1(text.encode()).hexdigest(): name  # noqa: S324 - Redis names scripts by SHA-1
    for name, text in (
        ("acquire", limiter_module._ACQUIRE),
        ("release", limiter_module._RELEASE),
        ("hold", limiter_module._HOLD),
        ("holders", limiter_module._HOLDERS),
        ("queue_full", limiter_module._QUEUE_FULL),
        ("accepted", limiter_module._ACCEPTED),
        ("forget", limiter_module._FORGET),
        ("next_in_line", limiter_module._NEXT),
        ("join_many", limiter_module._JOIN_MANY),
        ("rebuilt", limiter_module._REBUILT),
    )
}


# -- configuration of one schedule ----------------------------------------------------------
@dataclass
class Config:
    seed: int
    n_jobs: int
    limit: int
    provider_limit: int
    others: list[tuple[float, float]]
    webhooks: bool
    skews: list[float]
    intensity: float
    concurrency: int
    chaos_events: int
    settings_update: dict[str, Any]

    @classmethod
    def from_seed(cls, seed: int) -> Config:
        rng = random.Random(f"config:{seed}")
        limit = rng.choice([1, 2, 2, 3])
        others: list[tuple[float, float]] = []
        if rng.random() < 0.2:
            for _ in range(rng.randint(1, 2)):
                start = rng.uniform(0, 900)
                others.append((start, start + rng.uniform(60, 1800)))
        skewed = rng.random() < 0.5
        skews = [rng.uniform(-2.5, 2.5) if skewed else 0.0 for _ in range(3)]
        webhooks = rng.random() < 0.5
        update: dict[str, Any] = {
            "account_slots": limit,
            "poll_deadline_seconds": rng.choice([300.0, 600.0, 1800.0]),
            "poll_max_delay": rng.choice([30.0, 60.0, 300.0]),
            "submit_unknown_wait": rng.choice([120.0, 300.0, 900.0]),
            "lost_submit_hold": rng.choice([None, None, 120.0]),
            "parked_retry_base": rng.choice([60.0, 300.0]),
            "parked_retry_max": rng.choice([900.0, 3600.0]),
            "max_unknown_resubmits": rng.choice([0, 1, 1, 2]),
            "max_redrives": rng.choice([2, 3, 5]),
            "submit_max_attempts": rng.choice([2, 4, 8]),
            "download_max_attempts": rng.choice([2, 4, 10]),
            "download_not_found_window": rng.choice([30.0, 120.0, 300.0]),
            "webhook_url": f"https://hooks.model.test/webhook/{WEBHOOK_SECRET}"
            if webhooks
            else None,
        }
        return cls(
            seed=seed,
            n_jobs=rng.choice([1, 2, 2, 3, 3, 4]),
            limit=limit,
            provider_limit=limit + rng.choice([0, 0, 0, 1]),
            others=others,
            webhooks=webhooks,
            skews=skews,
            intensity=rng.choice([0.0, 0.5, 1.0, 1.0, 2.0]),
            concurrency=rng.choice([1, 1, 2, 3]),
            chaos_events=rng.randint(10, 60),
            settings_update=update,
        )


def base_settings(api_key: str) -> WorkerSettings:
    """Worker settings for the model: every field the steps read is given here, so nothing
    comes from the environment or a ``.env`` file."""
    return WorkerSettings(
        _env_file=None,  # type: ignore[call-arg]
        database_url="sqlite:///:memory:",
        storage_url="mem://videos",
        tenant_weights={"a": 3.0},
        modelslab_api_key=api_key,
        modelslab_base_url="https://api.model.test/api/v6",
        download_allowed_hosts=[CDN],
        webhook_secret=WEBHOOK_SECRET,
        account_slots=2,
        connect_timeout=5.0,
        read_timeout=30.0,
        poll_deadline_seconds=600.0,
        poll_max_first_delay=900.0,
        poll_min_delay=2.0,
        poll_max_delay=60.0,
        poll_backoff=1.6,
        poll_jitter=0.2,
        submit_unknown_wait=300.0,
        lost_submit_hold=None,
        parked_retry_base=300.0,
        parked_retry_max=3600.0,
        max_unknown_resubmits=1,
        claim_lease=60.0,
        claim_slack=5.0,
        reconcile_grace=60.0,
        max_redrives=5,
        submit_max_attempts=8,
        transient_base_delay=2.0,
        download_max_bytes=1 << 20,
        download_not_found_window=300.0,
        download_max_attempts=10,
        probe_videos=False,
        visibility_timeout=3600.0,
        task_time_limit=600.0,
        reconcile_interval=10.0,
        auto_migrate=False,
    )


APP_SETTINGS = Settings(
    _env_file=None,
    database_url="sqlite:///:memory:",  # type: ignore[call-arg]
    auto_migrate=False,
)


# -- crash points -----------------------------------------------------------------------------
@dataclass
class CrashPlan:
    at: int  # the index of the write (in this step) at which the process dies
    after: bool  # after the write took effect, or before it
    count: int = 0
    fired: bool = False


class ModelStore(JobStore):
    """The real store; every write is a crash point."""

    def __init__(self, engine: Any, *, now: Callable[[], datetime], world: World) -> None:
        super().__init__(engine, now=now)
        self._world = world

    def transition(self, job_id: str, to: JobStatus, *, expect: Any = None, **values: Any) -> bool:
        return self._move(super().transition, "", job_id, to, expect, values)

    def move_record(
        self, job_id: str, to: JobStatus, *, expect: Any = None, **values: Any
    ) -> JobRecord | None:
        return self._move(super().move_record, " (claimed)", job_id, to, expect, values)

    def _move(
        self,
        method: Callable[..., Any],
        note: str,
        job_id: str,
        to: JobStatus,
        expect: Any,
        values: dict[str, Any],
    ) -> Any:
        label = f"db {self._world.name(job_id)} -> {to.value}{note}"
        return self._world.write(label, method, job_id, to, expect=expect, **values)

    def claim(
        self, job_id: str, status: JobStatus, *, lease: float, slack: float = 5.0, **values: Any
    ) -> bool:
        return self._claim(super().claim, job_id, status, lease, slack, values)

    def claim_record(
        self, job_id: str, status: JobStatus, *, lease: float, slack: float = 5.0, **values: Any
    ) -> JobRecord | None:
        return self._claim(super().claim_record, job_id, status, lease, slack, values)

    def _claim(
        self,
        method: Callable[..., Any],
        job_id: str,
        status: JobStatus,
        lease: float,
        slack: float,
        values: dict[str, Any],
    ) -> Any:
        label = f"db claim {self._world.name(job_id)} {status.value}"
        return self._world.write(label, method, job_id, status, lease=lease, slack=slack, **values)

    def update_if(self, job_id: str, expect: Any, **values: Any) -> bool:
        return self._world.write(
            f"db update {self._world.name(job_id)} {sorted(values)}",
            super().update_if,
            job_id,
            expect,
            **values,
        )

    def set_provider_id(self, job_id: str, provider_id: str) -> bool:
        return self._world.write(
            f"db set_provider_id {self._world.name(job_id)}",
            super().set_provider_id,
            job_id,
            provider_id,
        )

    def insert_one(self, row: dict[str, Any]) -> None:
        return self._world.write("db insert", super().insert_one, row)

    def insert_many(self, rows: Any) -> None:
        return self._world.write(f"db insert {len(rows)}", super().insert_many, rows)


class CrashingRedis:
    """The fakeredis client the limiter and reconcile use; every write is a crash point."""

    _WRITES = frozenset(
        {
            "set",
            "delete",
            "zadd",
            "zrem",
            "evalsha",
            "eval",
            "lpush",
            "ltrim",
            "hset",
            "hdel",
            "incr",
            "expire",
        }
    )

    def __init__(self, real: Any, world: World) -> None:
        self._real = real
        self._world = world

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._real, name)
        if name not in self._WRITES:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            label = f"redis {name}"
            if name == "evalsha":
                label = f"redis lua:{_SCRIPT_NAMES.get(str(args[0]), '?')}"
            return self._world.write(label, attr, *args, **kwargs)

        return call

    def register_script(self, script: str) -> Any:
        from redis.commands.core import Script

        return Script(self, script)

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        pipe = self._real.pipeline(*args, **kwargs)
        execute = pipe.execute
        pipe.execute = lambda *a, **k: self._world.write("redis pipeline", execute, *a, **k)
        return pipe


# -- the provider -----------------------------------------------------------------------------
@dataclass
class Render:
    pid: str
    track: str
    created: float
    finish: float
    outcome: str  # success | failed | never (processing until the provider gives up)
    eta: float
    urls: list[str]
    bodies: list[bytes]
    lag: float  # CDN links 404 this long after the render finished
    lost: bool = False  # the answer to the submit that made it never reached us
    webhook: bool = False


class FakeProvider:
    """ModelsLab's own truth: renders per key, its queue limit, other clients' requests."""

    def __init__(self, world: World, rng: random.Random) -> None:
        self.world = world
        self.rng = rng
        self.renders: dict[str, Render] = {}
        self.by_track: dict[str, list[Render]] = defaultdict(list)
        self.requests: Counter[str] = Counter()
        self.queue_full_429s = 0
        self._next = 1000

    @property
    def now(self) -> float:
        return self.world.clock.t

    def active(self) -> int:
        now = self.now
        ours = sum(1 for r in self.renders.values() if r.created <= now < r.finish)
        theirs = sum(1 for start, end in self.world.cfg.others if start <= now < end)
        return ours + theirs

    def p(self, base: float) -> float:
        return base * self.world.intensity if self.world.faults_on else 0.0

    def submit(self, payload: dict[str, Any]) -> ProviderResult:
        track = str(payload["track_id"])
        self.requests[track] += 1
        r = self.rng.random()
        if r < self.p(0.05):
            raise TransientError("ModelsLab submit failed: HTTP 503")
        if r < self.p(0.057):
            raise PermanentError("ModelsLab refused the request: prompt rejected")
        if r < self.p(0.09):
            raise SubmitOutcomeUnknown(
                "ModelsLab submit sent but unanswered (timeout before "
                "the server read it); it may have been accepted"
            )
        if self.active() >= self.world.cfg.provider_limit:
            self.queue_full_429s += 1
            raise RateLimited(
                f"queue full: Maximum {self.world.cfg.provider_limit} queued requests allowed",
                retry_after=self.rng.choice([None, 10.0, 30.0]),
                queue_full=True,
                provider_max=self.world.cfg.provider_limit,
            )
        render = self._create(track, payload)
        r = self.rng.random()
        if r < self.p(0.05):
            render.lost = True
            raise SubmitOutcomeUnknown(
                "ModelsLab submit answered HTTP 504; it may have been accepted"
            )
        if r < self.p(0.065):
            render.lost = True
            return ProviderResult(
                ProviderStatus.UNKNOWN,
                None,
                raw_status="error",
                message="internal error",
                track_id=track,
            )
        if render.finish <= self.now and render.outcome == "success" and render.lag == 0:
            return ProviderResult(
                ProviderStatus.SUCCESS,
                render.pid,
                outputs=list(render.urls),
                raw_status="success",
                track_id=track,
            )
        return ProviderResult(
            ProviderStatus.PROCESSING,
            render.pid,
            eta=render.eta,
            future_links=list(render.urls),
            raw_status="processing",
            track_id=track,
        )

    def _create(self, track: str, payload: dict[str, Any]) -> Render:
        rng = self.rng
        self._next += 1
        pid = str(self._next)
        deadline = float(self.world.settings.poll_deadline_seconds)
        x = rng.random()
        if x < 0.03:
            duration = 0.0  # answered at once with the output (a cached result)
        elif x < 0.13:
            duration = rng.uniform(0.8 * deadline, 2.0 * deadline)
        else:
            duration = rng.uniform(5.0, 240.0)
        y = rng.random()
        outcome = "success" if y < 0.85 else "failed" if y < 0.95 else "never"
        if outcome == "never":
            duration = 3600.0  # processing until the provider gives up (then: failed)
        eta = max(1.0, duration * rng.uniform(0.7, 1.3)) if duration else 0.0
        n_out = 2 if rng.random() < 0.1 else 1
        urls = [f"https://{CDN}/{pid}/{i}.mp4" for i in range(n_out)]
        bodies = [
            MP4_HEAD + hashlib.sha256(f"{pid}:{i}".encode()).digest() * 8 for i in range(n_out)
        ]
        lag = rng.uniform(1.0, 40.0) if rng.random() < 0.3 else 0.0
        render = Render(
            pid=pid,
            track=track,
            created=self.now,
            finish=self.now + duration,
            outcome=outcome,
            eta=eta,
            urls=urls,
            bodies=bodies,
            lag=lag,
            webhook=bool(payload.get("webhook")),
        )
        self.renders[pid] = render
        self.by_track[track].append(render)
        self.world.log(
            f"provider: {self.world.name(track)} paid render {pid} ({outcome}, "
            f"{duration:.0f}s{', lag' if lag else ''})"
        )
        if render.webhook:
            status = "success" if outcome == "success" else "failed"
            faulty = self.world.faults_on and self.world.intensity
            copies = rng.choice([0, 1, 1, 1, 2]) if faulty else 1
            for _ in range(copies):
                self.world.add_webhook(render.finish + rng.uniform(0.0, 20.0), track, pid, status)
        return render

    def fetch(self, provider_id: str) -> ProviderResult:
        r = self.rng.random()
        if r < self.p(0.06):
            raise TransientError("ModelsLab fetch failed: HTTP 502")
        if r < self.p(0.07):
            raise PermanentError("ModelsLab refused: HTTP 401 (from a proxy)")
        render = self.renders.get(provider_id)
        if render is None:
            raise PermanentError(f"ModelsLab: no job {provider_id}")
        if self.now < render.finish:
            raw = "queued" if self.rng.random() < 0.1 else "processing"
            status = ProviderStatus.UNKNOWN if raw == "queued" else ProviderStatus.PROCESSING
            return ProviderResult(
                status,
                provider_id,
                eta=max(1.0, render.finish - self.now),
                future_links=list(render.urls),
                raw_status=raw,
                track_id=render.track,
            )
        if render.outcome == "success":
            return ProviderResult(
                ProviderStatus.SUCCESS,
                provider_id,
                outputs=list(render.urls),
                raw_status="success",
                track_id=render.track,
            )
        return ProviderResult(
            ProviderStatus.FAILED,
            provider_id,
            message="generation failed",
            raw_status="failed",
            track_id=render.track,
        )

    def serve(self, request: requests.PreparedRequest) -> requests.Response:
        """The CDN: an output's bytes once ready, 404 before and after its 24 h."""
        url = str(request.url)
        parts = url.split("/")
        render = self.renders.get(parts[3]) if len(parts) > 4 else None
        if render is None:
            return _response(request, 404, b"not found", "text/plain")
        index = int(parts[4].split(".")[0])
        now = self.now
        ready = (
            render.outcome == "success"
            and render.finish + render.lag <= now < render.finish + OUTPUT_TTL.total_seconds()
        )
        if not ready:
            return _response(request, 404, b"<html>404</html>", "text/html")
        r = self.rng.random()
        if r < self.p(0.06):
            return _response(request, 503, b"busy", "text/plain")
        if r < self.p(0.09):
            return _response(request, 200, b"<html><body>CDN error</body></html>", "text/html")
        if r < self.p(0.11):
            raise requests.ConnectionError("connection reset by peer")
        if r < self.p(0.115):
            return _response(request, 200, b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "video/mp4")
        return _response(request, 200, render.bodies[index], "video/mp4")


def _response(
    request: requests.PreparedRequest, code: int, body: bytes, content_type: str
) -> requests.Response:
    resp = requests.Response()
    resp.status_code = code
    resp.headers = CaseInsensitiveDict(
        {"content-type": content_type, "content-length": str(len(body))}
    )
    resp.raw = io.BytesIO(body)
    resp.url = str(request.url)
    resp.request = request
    resp.reason = "OK" if code == 200 else "ERR"
    return resp


class CdnAdapter(BaseAdapter):
    def __init__(self, world: World) -> None:
        super().__init__()
        self.world = world

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        return self.world.write(
            "http GET " + str(request.url).split("/", 3)[-1], self.world.provider.serve, request
        )

    def close(self) -> None:
        pass


class FakeClient:
    """Stands in for ``ModelsLabClient``: one call per method, the provider's answers."""

    def __init__(self, world: World) -> None:
        self.world = world

    def submit(self, payload: dict[str, Any]) -> ProviderResult:
        self.world.on_submit(payload)
        return self.world.write(
            f"http submit {self.world.name(str(payload['track_id']))}",
            self.world.provider.submit,
            dict(payload),
        )

    def fetch(self, provider_id: str) -> ProviderResult:
        return self.world.write(f"http fetch {provider_id}", self.world.provider.fetch, provider_id)

    def close(self) -> None:
        pass


class FakeStorage:
    """Object storage in a dict; down while the world says so."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.objects: dict[str, bytes] = {}

    def uri_for(self, key: str) -> str:
        return f"mem://videos/{key}"

    def put_file(self, key: str, path: str | Path, *, content_type: str) -> str:
        return self.world.write(f"storage put {key}", self._put, key, Path(path).read_bytes())

    def put_stream(
        self, key: str, stream: Any, *, content_type: str, size_hint: int | None = None
    ) -> str:
        data = stream.read() if hasattr(stream, "read") else b"".join(stream)
        return self.world.write(f"storage put {key}", self._put, key, data)

    def _put(self, key: str, data: bytes) -> str:
        if self.world.clock.t < self.world.storage_down_until:
            raise TransientError(f"storage cannot write {key!r}: service unavailable")
        self.objects[key] = data
        return self.uri_for(key)


# -- the broker ---------------------------------------------------------------------------------
@dataclass
class Message:
    seq: int
    task: str
    job_id: str  # a t2v.admit message's ids joined by commas
    due: float

    @property
    def step_arg(self) -> str | list[str]:
        """What the step is called with: a job id, or a t2v.admit message's ids."""
        return self.job_id.split(",") if self.task == TASK_ADMIT else self.job_id


class FakeBroker:
    """Messages with due times on the fake clock; the world picks which runs next."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.queue: list[Message] = []
        self.seq = 0

    def send(self, task: str, job_id: str, countdown: float) -> None:
        self.world.check_message(task, job_id, countdown)
        self.seq += 1
        self.queue.append(Message(self.seq, task, job_id, self.world.clock.t + max(0.0, countdown)))


class AppBroker(Broker):
    """The producer's own ``Broker`` (which message for how many jobs: one t2v.submit for
    one, t2v.admit chunks per priority class for many), with the sending replaced: the
    messages go to the fake broker, which may refuse them all."""

    admit_chunk = 2  # the producer's is 1,000: a batch of 3-4 makes two t2v.admit messages

    def __init__(self, world: World) -> None:  # no Celery app: nothing is really sent
        self.world = world

    def _send_messages(
        self,
        task: str,
        args: Sequence[Any],
        steps: Sequence[int | None],
        job_ids: Sequence[str],
    ) -> None:
        self.world.write(f"app send {len(args)} {task}", self._send, task, args, job_ids)

    def _send(self, task: str, args: Sequence[Any], job_ids: Sequence[str]) -> None:
        if self.world.faults_on and self.world.fault_rng.random() < 0.04 * self.world.intensity:
            err = EnqueueError(f"broker refused {len(args)} message(s)", job_id=job_ids[0])
            err.job_ids = tuple(job_ids)
            raise err
        for arg in args:
            self.world.broker.send(task, ",".join(arg) if isinstance(arg, list) else arg, 0.0)

    def close(self) -> None:
        pass


# -- hosts -------------------------------------------------------------------------------------
@dataclass
class Host:
    name: str
    rt: steps.Runtime


@dataclass
class Webhook:
    seq: int
    due: float
    track: str
    pid: str
    status: str


@dataclass
class Action:
    seq: int
    due: float
    kind: str  # enqueue | enqueue_many | cancel | retry
    arg: int  # job index (cancel/retry) or how many jobs (enqueue*)


@dataclass
class Result:
    seed: int
    violations: list[str]
    trace: list[str]
    stats: dict[str, int]
    exceptions: Counter[str]


class _TraceHandler(logging.Handler):
    """Log lines of the code under test go into the world's trace, and are searched for
    the API key."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.world: World | None = None

    def emit(self, record: logging.LogRecord) -> None:
        world = self.world
        if world is None:
            return
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad log call is not our business here
            return
        if world.api_key in text:
            world.violate("secret", f"the API key is in a log line: {text[:200]}", stop=False)
        world.log(f"    log {record.name}: {text[:160]}")


_HANDLER = _TraceHandler()
_LOGGERS = ("t2v", "producer", "worker")


@contextmanager
def _logging_into(world: World) -> Iterator[None]:
    levels = {}
    for name in _LOGGERS:
        lg = logging.getLogger(name)
        levels[name] = lg.level
        lg.setLevel(logging.INFO)
        lg.addHandler(_HANDLER)
    _HANDLER.world = world
    try:
        yield
    finally:
        _HANDLER.world = None
        for name in _LOGGERS:
            lg = logging.getLogger(name)
            lg.removeHandler(_HANDLER)
            lg.setLevel(levels[name])


class Peek(NamedTuple):
    status: JobStatus
    next_check_at: float | None
    provider_id: str | None
    submit_count: int
    downloaded: bool  # downloading_at is set
    poll_count: int
    download_attempts: int
    retry_count: int
    submitting_at: float | None

    @property
    def cancelled_rendering(self) -> bool:
        """``JobStore.cancelled_rendering_due``'s rows (``may_be_rendering`` of a cancelled
        job)."""
        return (
            self.status is JobStatus.CANCELLED
            and self.provider_id is not None
            and not self.downloaded
            and self.next_check_at is not None
        )


def _epoch(value: str | None) -> float | None:
    if value is None:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()


# -- the shared real parts of one process -------------------------------------------------------
class _DirectConnection(fakeredis.FakeRedisConnection):
    """fakeredis' connection, minus the wire: a command's arguments go to the fake server's
    command processing as the list of byte strings the RESP parser would have made of them
    (no packing into RESP and parsing back). The server's reply comes back as before."""

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        if not self._sock:
            self.connect()
        sock: Any = self._sock
        if not sock._server.connected or sock._killed:
            raise self._connection_error_class("FakeRedis is emulating a connection error.")
        # What ``PythonRespSerializer.pack`` does to the arguments.
        name = args[0]
        if isinstance(name, str):
            args = tuple(name.encode().split()) + args[1:]
        elif b" " in name:
            args = tuple(name.split()) + args[1:]
        encode = self.encoder.encode
        sock._process_command([bytes(encode(a)) for a in args])  # type: ignore[no-untyped-call]


class _DirectRedis(fakeredis.FakeRedis):
    """A fakeredis client that sends each command on one connection of its own, without
    redis-py's pool and retry wrapping (nothing here can fail to connect; a command's
    error is raised as before). Pipelines still take connections from the pool."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(connection_class=_DirectConnection, **kwargs)
        self._direct: Any = self.connection_pool.get_connection()

    def execute_command(self, *args: Any, **options: Any) -> Any:
        conn = self._direct
        conn.send_command(*args, **options)
        return self.parse_response(conn, args[0], **options)  # type: ignore[no-untyped-call]


class Bench:
    """A SQLite file with the schema and a fakeredis server, reused by every schedule of a
    process (rows deleted and Redis flushed between schedules)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(f"sqlite:///{directory / 'model.sqlite3'}")
        JobStore(self.engine).create_schema()
        self.raw = sqlite3.connect(
            directory / "model.sqlite3", isolation_level=None, check_same_thread=False
        )
        server = fakeredis.FakeServer()
        self.redis = _DirectRedis(server=server)
        self.redis.ping()
        self.db = server.dbs[0]
        self.api_key = "sk-model-" + hashlib.sha256(str(directory).encode()).hexdigest()[:24]
        self.settings = base_settings(self.api_key)

    def peek(self, job_ids: list[str]) -> dict[str, Peek]:
        """A few columns of the rows, read straight from the SQLite file (the harness reads
        often; the code under test reads through ``JobStore``)."""
        if not job_ids:
            return {}
        marks = ",".join("?" * len(job_ids))
        columns = (
            "id, status, next_check_at, provider_id, submit_count, downloading_at, "
            "poll_count, download_attempts, retry_count, submitting_at"
        )
        query = f"SELECT {columns} FROM t2v_jobs WHERE id IN ({marks})"  # noqa: S608 - only ?s
        cur = self.raw.execute(query, job_ids)
        return {
            row[0]: Peek(
                JobStatus(row[1]),
                _epoch(row[2]),
                row[3],
                row[4],
                row[5] is not None,
                row[6],
                row[7],
                row[8],
                _epoch(row[9]),
            )
            for row in cur.fetchall()
        }

    def reset(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(JobRow))
        self.redis.flushall()
        self.redis.script_flush()


# -- tasks: steps in flight, interleaved at their writes ----------------------------------------
class _Runner:
    """A thread that runs tasks' bodies, one task at a time, reused across tasks and
    schedules (starting a thread per step cost more than the step's hand-offs).

    The hand-off is a pair of bare locks used as binary semaphores (a ``_thread`` lock may
    be released by another thread): ``go`` lets the runner's task run, ``back`` hands
    control back to the world's thread. Exactly one side runs at any moment."""

    _idle: list[_Runner] = []

    def __init__(self) -> None:
        self.go = _thread.allocate_lock()
        self.go.acquire()
        self.back = _thread.allocate_lock()
        self.back.acquire()
        self.task: Task | None = None
        threading.Thread(target=self._loop, name="model runner", daemon=True).start()

    @classmethod
    def take(cls, task: Task) -> _Runner:
        runner = cls._idle.pop() if cls._idle else cls()
        runner.task = task
        return runner

    def _loop(self) -> None:
        while True:
            self.go.acquire()
            task = self.task
            assert task is not None
            try:
                task._run()
            finally:
                self.task = None
                _Runner._idle.append(self)  # before ``back``: the world's thread waits on it
                self.back.release()


class Task:
    """One step in flight, on a thread of its own. Only one task runs at a time: the world
    lets it run (``advance``) until its next write point, where it hands control back
    (``pause``), so steps interleave between any two writes, in an order the seed picks."""

    def __init__(
        self,
        world: World,
        label: str,
        body: Callable[[Task], None],
        crash: CrashPlan | None,
        *,
        threaded: bool,
    ) -> None:
        self.world = world
        self.label = label
        self.body = body
        self.crash = crash
        self.submitted: list[str] = []
        self.done = False
        self.killed = False
        self.error: BaseException | None = None
        # Else it runs to its end in the world's thread at the first advance.
        self._runner: _Runner | None = _Runner.take(self) if threaded else None

    def _run(self) -> None:
        try:
            if not self.killed:
                self.body(self)
        except BaseException as exc:  # noqa: BLE001 - handed to the world's thread
            self.error = exc
        finally:
            self.done = True

    def advance(self) -> None:
        self.world.current = self
        try:
            runner = self._runner
            if runner is None:
                self._run()
            else:
                runner.go.release()
                runner.back.acquire()
        finally:
            self.world.current = None

    def pause(self) -> None:
        runner = self._runner
        assert runner is not None
        runner.back.release()
        runner.go.acquire()
        if self.killed:
            raise Crash("the schedule is over")

    def kill(self) -> None:
        """The schedule is over: ``Crash`` at the task's write point. A body that writes
        again on its way out (a ``finally``) stays paused at that write for good, and its
        runner is not reused."""
        self.killed = True
        if not self.done and self._runner is not None:
            self.advance()


# -- the world ----------------------------------------------------------------------------------
_LIMITER_METHODS = (
    "acquire",
    "release",
    "leave_line",
    "hold",
    "forget",
    "is_ready",
    "rebuild",
    "queue_full",
    "after_accept",
    "effective_limit",
    "recent_etas",
    "holders",
    "waiting",
    "waiting_count",
    "is_waiting",
    "view",
)
DRAIN_HOURS = 50.0
IDLE_TICKS_QUIET = 30  # the drain stops when this many beats in a row did nothing
DRAIN_EVENTS = 4000

# Checks by name; ``T2V_MODEL_SKIP=name,...`` turns some off (counted, not failed).
CHECKS = (
    "lost",
    "paid_twice",
    "not_counted",
    "not_recorded",
    "submit_with_id",
    "submit_without_slot",
    "slots_over_limit",
    "rendering_without_slot",
    "slot_idle",
    "slot_leaked",
    "output_thrown_away",
    "output_corrupt",
    "secret",
    "countdown",
    "phantom",
)


class World:
    def __init__(
        self, seed: int, bench: Bench, skip: frozenset[str] = frozenset(), verbose: bool = False
    ) -> None:
        self.seed = seed
        self.verbose = verbose  # every write in the trace (replays of one seed)
        self.bench = bench
        self.skip = skip
        self.cfg = Config.from_seed(seed)
        self.plan_rng = random.Random(f"plan:{seed}")
        self.fault_rng = random.Random(f"faults:{seed}")
        self.order_rng = random.Random(f"order:{seed}")
        self.id_rng = random.Random(f"ids:{seed}")
        self.clock = Clock()
        self.intensity = self.cfg.intensity
        self.faults_on = True
        self.storage_down_until = 0.0
        self.api_key = bench.api_key
        self.settings: WorkerSettings = bench.settings.model_copy(update=self.cfg.settings_update)
        self.trace: list[str] = []
        self.violations: list[str] = []
        self.exceptions: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self.current: Task | None = None
        self.tasks: list[Task] = []
        self.max_tasks = self.cfg.concurrency
        self.names: dict[str, str] = {}
        self.job_ids: list[str] = []
        self.recorded_pids: set[str] = set()
        self.user_requeues: Counter[str] = Counter()  # retry() of failed jobs back to queued
        self.webhooks: list[Webhook] = []
        self.actions: list[Action] = []
        self.seq = 0
        self.tick_at = T0
        self.tick_stale = False
        self.ticks = 0
        self.full_ticks = 0  # beats that ran to the end (not skipped for the lock, not died)
        self.idle_ticks = 0  # beats in a row that found nothing to do, with nothing between

        self.redis = bench.redis  # the real fakeredis client: for checks, never crashes
        self.provider = FakeProvider(self, random.Random(f"provider:{seed}"))
        self.broker = FakeBroker(self)
        self.storage = FakeStorage(self)
        self.reader = JobStore(bench.engine, now=self.clock.view(0.0))
        self.limiter = AccountLimiter(
            CrashingRedis(bench.redis, self), self.cfg.limit, clock=lambda: self.clock.t
        )
        self.in_limiter = 0
        for method in _LIMITER_METHODS:
            setattr(self.limiter, method, self._limiter_method(getattr(self.limiter, method)))
        self.hosts = [self._host(f"w{i}", self.cfg.skews[i]) for i in range(2)]
        app_store = ModelStore(bench.engine, now=self.clock.view(self.cfg.skews[2]), world=self)
        self.app_now = self.clock.view(self.cfg.skews[2])
        self.app = Producer(APP_SETTINGS, store=app_store, broker=AppBroker(self))  # type: ignore[arg-type]
        self._plan_actions()

    def _host(self, name: str, skew: float) -> Host:
        http = requests.Session()
        http.trust_env = False
        http.mount(f"https://{CDN}/", CdnAdapter(self))
        rt = steps.Runtime(
            settings=self.settings,
            store=ModelStore(self.bench.engine, now=self.clock.view(skew), world=self),
            client=FakeClient(self),  # type: ignore[arg-type]
            limiter=self.limiter,
            storage=self.storage,  # type: ignore[arg-type]
            http=http,
            schedule=lambda task, job_id, countdown: self.write(
                f"send {task} {self.name(job_id)} +{countdown:.0f}s",
                self.broker.send,
                task,
                job_id,
                countdown,
            ),
            rng=random.Random(f"{name}:{self.seed}"),
            now=self.clock.view(skew),
            # One host downloads in the poll that saw the render finished and submits the
            # job a freed slot lets in, the other sends t2v.download and t2v.submit
            # (T2V_DOWNLOAD_INLINE, T2V_SUBMIT_INLINE, and a host serving neither queue).
            inline=frozenset({TASK_DOWNLOAD, TASK_SUBMIT}) if name == "w0" else frozenset(),
        )
        return Host(name, rt)

    # -- bookkeeping -----------------------------------------------------------------------------
    def log(self, text: str) -> None:
        self.trace.append(f"{self.clock.t - T0:9.1f}  {text}")

    def name(self, job_id: str) -> str:
        """A job's short name (J1...); a t2v.admit message's ids, each named."""
        if "," in job_id:
            return "+".join(self.name(j) for j in job_id.split(","))
        return self.names.get(job_id, job_id[:6])

    def new_job_id(self) -> str:
        job_id = f"{self.id_rng.getrandbits(128):032x}"
        self.names[job_id] = f"J{len(self.job_ids) + 1}"
        self.job_ids.append(job_id)
        return job_id

    def add_webhook(self, due: float, track: str, pid: str, status: str) -> None:
        self.seq += 1
        self.webhooks.append(Webhook(self.seq, due, track, pid, status))

    def violate(self, check: str, text: str, *, stop: bool = True) -> None:
        """Record a failed check (``stop``: end the schedule here)."""
        assert check in CHECKS, check
        if check in self.skip:
            self.stats[f"skipped_{check}"] += 1
            self.log(f"(skipped check {check}) {text}")
            return
        self.violations.append(f"[{check}] {text}")
        self.log(f"VIOLATION [{check}] {text}")
        if stop:
            raise Violation(text)

    def write(self, label: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One write of the current task: others may run before it, and the process may die
        just before or just after it."""
        task = self.current
        if task is None:
            return fn(*args, **kwargs)
        if self.max_tasks > 1 and self.faults_on and not self.in_limiter:
            task.pause()  # a point where other steps may run
        if self.verbose:
            self.log(f"    . {task.label}: {label}")
        plan = task.crash
        if plan is None or plan.fired:
            return fn(*args, **kwargs)
        n = plan.count
        plan.count += 1
        if n != plan.at:
            return fn(*args, **kwargs)
        plan.fired = True
        if not plan.after:
            self.log(f"  CRASH ({task.label}) before {label}")
            raise Crash(label)
        try:
            fn(*args, **kwargs)
        except (Crash, Violation):
            raise
        except Exception as exc:  # noqa: BLE001 - the process dies right after either way
            self.log(f"  CRASH ({task.label}) after {label} (which raised {type(exc).__name__})")
            raise Crash(label) from None
        self.log(f"  CRASH ({task.label}) after {label}")
        raise Crash(label)

    def _limiter_method(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Other steps may run before a limiter call, not inside it: the call reads the
        clock for its arguments first (in production Redis's own TIME, inside the script),
        so a pause between the two would be a stall no real worker has."""

        def call(*args: Any, **kwargs: Any) -> Any:
            task = self.current
            if task is not None and self.max_tasks > 1 and self.faults_on and not self.in_limiter:
                task.pause()
            self.in_limiter += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self.in_limiter -= 1

        return call

    # -- checks made at the moment something happens ---------------------------------------------
    def check_message(self, task: str, job_id: str, countdown: float) -> None:
        if self.api_key in task or self.api_key in job_id:
            self.violate("secret", f"the API key is in a {task} message")
        if countdown != countdown or countdown in (float("inf"), float("-inf")):
            self.violate("countdown", f"{task} for {self.name(job_id)}: countdown {countdown!r}")
        if countdown >= self.settings.visibility_timeout:
            self.violate(
                "countdown",
                f"{task} for {self.name(job_id)}: countdown {countdown:.0f}s is not "
                f"below the visibility timeout {self.settings.visibility_timeout:.0f}s"
                " (Redis would deliver it twice)",
            )

    def on_submit(self, payload: dict[str, Any]) -> None:
        """The money rules, checked as the request leaves."""
        job_id = str(payload.get("track_id"))
        if self.current is not None:
            self.current.submitted.append(job_id)
        if "key" in payload or self.api_key in repr(payload):
            self.violate("secret", f"the submit payload of {self.name(job_id)} carries a key")
        rec = self.bench.peek([job_id]).get(job_id)
        if rec is None:
            self.violate("phantom", f"submit for {self.name(job_id)}, a job that has no row")
            return
        if rec.provider_id is not None:
            self.violate(
                "submit_with_id",
                f"submit for {self.name(job_id)} while its row names provider id "
                f"{rec.provider_id} (status {rec.status.value})",
            )
        if rec.status is not JobStatus.SUBMITTING:
            self.violate(
                "submit_with_id",
                f"submit for {self.name(job_id)} while its row is {rec.status.value}",
            )
        sent = self.provider.requests[job_id] + 1
        if rec.submit_count < sent:
            self.violate(
                "not_counted",
                f"submit #{sent} for {self.name(job_id)} not counted "
                f"first (submit_count {rec.submit_count})",
            )
        if self._line_ready():
            live = self.live_holders()
            if job_id not in live:
                self.violate(
                    "submit_without_slot",
                    f"submit for {self.name(job_id)} without an account slot "
                    f"(holders {self._holders_text()})",
                )

    def _zset(self, key: str) -> dict[str, float]:
        """A sorted set's members and scores, read from fakeredis' memory (no command, no
        crash point, fast: the checks run after every event)."""
        item = self.bench.db._dict.get(key.encode())
        if item is None:
            return {}
        return {m.decode(): float(score) for m, score in item.value._bylex.items()}

    def _holders_text(self) -> str:
        now = self.clock.t
        held = self._zset(self.limiter.holders_key)
        return (
            ", ".join(
                f"{self.name(j)} until {until - now:+.0f}s"
                for j, until in sorted(held.items(), key=lambda x: x[1])
            )
            or "none"
        )

    def _line_ready(self) -> bool:
        return self.limiter.ready_key.encode() in self.bench.db._dict

    def live_holders(self) -> list[str]:
        now = self.clock.t
        held = self._zset(self.limiter.holders_key)
        return sorted((j for j, until in held.items() if until > now), key=held.__getitem__)

    def check_slots(self, before: set[str], was_ready: bool) -> None:
        live = self.live_holders()
        taken = set(live) - before
        # A line rebuilt from the table names every job that may be rendering, even past
        # the limit (safe: nobody takes a slot until they end); a slot *taken* past the
        # limit is the violation.
        if len(live) > self.cfg.limit and taken and (was_ready or not self._line_ready()):
            self.violate(
                "slots_over_limit",
                f"{len(live)} account slots held, limit "
                f"{self.cfg.limit}, after {[self.name(j) for j in sorted(taken)]} "
                f"took one: {self._holders_text()}",
            )
        elif len(live) > self.cfg.limit:
            self.stats["rebuilt_over_limit"] += 1
        # A render we know the provider is running (its id is on a processing row, or on a
        # cancelled one whose quiet polls go on) keeps its slot, while the line is whole.
        running = [
            r
            for r in self.provider.renders.values()
            if r.created <= self.clock.t < r.finish and r.track in self.names
        ]
        if not running or not self._line_ready():
            return
        rows = self.bench.peek(sorted({r.track for r in running}))
        for render in running:
            rec = rows.get(render.track)
            if rec is None or rec.provider_id != render.pid or render.track in live:
                continue
            if rec.status is JobStatus.PROCESSING or rec.cancelled_rendering:
                full = self.reader.get(render.track)
                why = ""
                if full is not None:
                    left = (
                        (full.deadline_at.timestamp() - self.clock.t) if full.deadline_at else None
                    )
                    why = (
                        f"; row: eta {full.eta_seconds or 0:.0f}s, deadline in "
                        f"{left if left is None else round(left)}s, parked "
                        f"{full.park_count}x, retried {full.retry_count}x"
                    )
                self.violate(
                    "rendering_without_slot",
                    f"{self.name(render.track)} is {rec.status.value} and the provider"
                    f" is still rendering {render.pid} (until "
                    f"+{render.finish - T0:.0f}), but it holds no account slot "
                    f"(holders: {self._holders_text()}){why}",
                )
            elif rec.status is JobStatus.PARKED:
                self.stats["parked_while_rendering"] += 1

    # -- the schedule ----------------------------------------------------------------------------
    def _plan_actions(self) -> None:
        rng = self.plan_rng
        left = self.cfg.n_jobs
        first = True
        while left:
            k = rng.randint(1, left) if rng.random() < 0.4 else 1
            due = T0 + (rng.uniform(0.0, 5.0) if first else rng.uniform(0.0, 600.0))
            self._action(due, "enqueue_many" if k > 1 else "enqueue", k)
            left -= k
            first = False
        for index in range(self.cfg.n_jobs):
            if rng.random() < 0.15 * max(self.intensity, 0.5):
                self._action(T0 + rng.uniform(0.0, 1200.0), "cancel", index)
            if rng.random() < 0.3:
                self._action(T0 + rng.uniform(200.0, 9000.0), "retry", index)

    def _action(self, due: float, kind: str, arg: int) -> None:
        self.seq += 1
        self.actions.append(Action(self.seq, due, kind, arg))

    def run(self) -> Result:
        global _CURRENT_CLOCK
        _CURRENT_CLOCK = self.clock
        saved_new_id = store_module.new_job_id
        store_module.new_job_id = self.new_job_id
        # ``Producer.retry`` plans with the wall clock (``producer.api.utcnow``), not its
        # store's clock: give it the application host's fake clock.
        saved_utcnow = getattr(api_module, "utcnow", None)
        if saved_utcnow is not None:
            api_module.utcnow = self.app_now  # type: ignore[attr-defined]
        try:
            with _logging_into(self):
                self.log(
                    f"seed {self.seed}: {self.cfg.n_jobs} job(s), limit {self.cfg.limit} "
                    f"(provider {self.cfg.provider_limit}, others {len(self.cfg.others)}),"
                    f" webhooks {self.cfg.webhooks}, intensity {self.intensity}, "
                    f"concurrency {self.max_tasks}, skews "
                    f"{[round(s, 2) for s in self.cfg.skews]}, settings "
                    f"{self.cfg.settings_update}"
                )
                try:
                    self._chaos()
                    self._drain()
                    from tests.model.invariants import final_checks

                    final_checks(self)
                except Violation:
                    pass
                finally:
                    for task in self.tasks:
                        task.kill()
                    self.tasks.clear()
        finally:
            store_module.new_job_id = saved_new_id
            if saved_utcnow is not None:
                api_module.utcnow = saved_utcnow  # type: ignore[attr-defined]
            _CURRENT_CLOCK = None
        return Result(self.seed, self.violations, self.trace, dict(self.stats), self.exceptions)

    def _chaos(self) -> None:
        for _ in range(self.cfg.chaos_events):
            if not self.tasks and self._quiet() and self._all_final():
                break
            self._step(faults=True)
        while self.tasks:  # let the steps in flight finish
            self._advance(self.tasks[0])
        self.log("-- drain: faults off --")

    def _drain(self) -> None:
        from tests.model.invariants import drain_tick_checks

        self.faults_on = False
        self.storage_down_until = 0.0
        end = self.clock.t + DRAIN_HOURS * 3600
        starving: dict[str, int] = {}
        for _ in range(DRAIN_EVENTS):
            if self.clock.t > end:
                break
            if self._quiet() and self._all_final():
                break
            if self._quiet() and self.idle_ticks >= IDLE_TICKS_QUIET:
                self.log(f"-- quiet: {self.idle_ticks} beats in a row found nothing to do --")
                break
            kind = self._step(faults=False)
            if kind == "tick" and not self._due_now():
                drain_tick_checks(self, starving)
        # One last beat, and what it sends, before the end checks.
        self.tick_at = self.clock.t
        for _ in range(50):
            self._step(faults=False)
            if not self._due_now():
                break

    def _quiet(self) -> bool:
        return not self.broker.queue and not self.actions and not self.webhooks

    def _all_final(self) -> bool:
        rows = self.bench.peek(self.job_ids)
        return all(r.status.is_final for r in rows.values())

    def _due_now(self) -> bool:
        now = self.clock.t
        return (
            any(m.due <= now for m in self.broker.queue)
            or any(w.due <= now for w in self.webhooks)
            or any(a.due <= now for a in self.actions)
        )

    def _step(self, *, faults: bool) -> str:
        """Run a step in flight a little further, or start the next event (advancing the
        clock to it when nothing is due and nothing runs); returns what it did."""
        interval = float(self.settings.reconcile_interval)
        if self.tick_stale and self.tick_at > self.clock.t + interval:
            self.tick_at = min(
                self.tick_at, max(self.clock.t + interval, self._next_reconcile_work())
            )
            self.tick_stale = False
        rng = self.order_rng
        if faults:
            self._global_faults()
        cands: list[tuple[float, int, str, Any]] = [
            (m.due, m.seq, "msg", m) for m in self.broker.queue
        ]
        cands += [(w.due, w.seq, "webhook", w) for w in self.webhooks]
        cands += [(a.due, a.seq, "action", a) for a in self.actions]
        cands.append((self.tick_at, 0, "tick", None))
        due = [c for c in cands if c[0] <= self.clock.t]
        if self.tasks and (not due or len(self.tasks) >= self.max_tasks or rng.random() < 0.5):
            if faults and rng.random() < 0.01 * self.intensity:
                stall = rng.uniform(1.0, 30.0)  # up to one SQLite busy_timeout
                self.log(f"(a worker stalls {stall:.0f}s)")
                self.clock.t += stall
            self._advance(rng.choice(self.tasks))
            return "advance"
        if not due:
            self.clock.t = min(c[0] for c in cands)
            due = [c for c in cands if c[0] <= self.clock.t]
        due.sort(key=lambda c: (c[0], c[1]))
        chosen = rng.choice(due) if faults and len(due) > 1 and rng.random() < 0.3 else due[0]
        _, _, kind, item = chosen
        crash = self._crash_plan() if faults else None
        body: Callable[[Task], None] | None
        if kind == "msg":
            body = self._message(item, faults)
        elif kind == "webhook":
            self.webhooks.remove(item)
            body = self._webhook(item)
        elif kind == "action":
            self.actions.remove(item)
            body = self._app_action(item)
        else:
            self.tick_at = float("inf")  # set again when this beat is over
            body = self._tick(faults)
        self.stats[f"{'chaos' if faults else 'drain'}_{kind}"] += 1
        self.stats["events"] += 1
        if kind != "tick":
            self.tick_stale = True
            self.idle_ticks = 0
        if body is not None:
            task = Task(
                self,
                f"{kind}#{self.stats['events']}",
                body,
                crash,
                threaded=faults and self.max_tasks > 1,
            )
            self.tasks.append(task)
            self._advance(task)
        return kind

    def _advance(self, task: Task) -> None:
        before = set(self.live_holders())
        was_ready = self._line_ready()
        task.advance()
        if task.done:
            self.tasks.remove(task)
            if task.submitted:
                self._note_lost_answers(task.submitted)
            if task.error is not None:
                raise task.error
        self.check_slots(before, was_ready)

    def _note_lost_answers(self, submitted: list[str]) -> None:
        """A render whose id is not on its row once the step that paid for it is over (it
        died, or the answer never came) is one whose answer was lost."""
        jobs = sorted(set(submitted))
        peeks = self.bench.peek(jobs)
        for job_id in jobs:
            rec = peeks.get(job_id)
            for render in self.provider.by_track.get(job_id, []):
                if render.pid in self.recorded_pids:
                    continue
                if rec is not None and rec.provider_id == render.pid:
                    self.recorded_pids.add(render.pid)
                elif not render.lost:
                    render.lost = True
                    self.log(f"  (the answer for render {render.pid} was lost)")

    def _crash_plan(self) -> CrashPlan | None:
        rng = self.fault_rng
        if rng.random() >= 0.12 * self.intensity:
            return None
        return CrashPlan(at=rng.randint(0, 9), after=rng.random() < 0.5)

    def _global_faults(self) -> None:
        rng = self.fault_rng
        r = rng.random()
        if r < 0.012 * self.intensity:
            self.log(f"WIPE: Redis restarted empty ({len(self.broker.queue)} message(s) lost)")
            self.broker.queue.clear()
            self.redis.flushall()
            self.redis.script_flush()
            self.stats["wipes"] += 1
        elif r < 0.024 * self.intensity:
            self.storage_down_until = self.clock.t + rng.uniform(30.0, 900.0)
            self.log(f"storage down until +{self.storage_down_until - T0:.0f}")

    # -- events: each returns the body of its task (None: nothing to run) ------------------------
    def _message(self, msg: Message, faults: bool) -> Callable[[Task], None] | None:
        rng = self.fault_rng
        if faults:
            r = rng.random()
            if r < 0.04 * self.intensity:
                self.broker.queue.remove(msg)
                self.log(f"drop {msg.task} {self.name(msg.job_id)}")
                return None
            if r < 0.08 * self.intensity:
                msg.due = self.clock.t + rng.uniform(1.0, 400.0)
                self.log(f"delay {msg.task} {self.name(msg.job_id)} to +{msg.due - T0:.0f}")
                return None
            if r < 0.13 * self.intensity:
                self.broker.seq += 1
                copy = Message(
                    self.broker.seq, msg.task, msg.job_id, self.clock.t + rng.uniform(0.0, 60.0)
                )
                self.broker.queue.append(copy)
                self.log(f"duplicate {msg.task} {self.name(msg.job_id)} (+{copy.due - T0:.0f})")
        self.broker.queue.remove(msg)
        host = self.hosts[rng.randrange(2)] if faults else self.hosts[0]
        step = {
            TASK_SUBMIT: "submit_step",
            TASK_POLL: "poll_step",
            TASK_DOWNLOAD: "download_step",
            TASK_ADMIT: "admit_step",
        }[msg.task]

        def body(task: Task) -> None:
            self.log(f"{host.name} {msg.task} {self.name(msg.job_id)}")
            try:
                getattr(steps, step)(host.rt, msg.step_arg)
            except Crash:
                if task.killed:
                    return
                if rng.random() < 0.5:
                    self.log(f"  {msg.task} {self.name(msg.job_id)} lost with the worker")
                else:
                    self.broker.seq += 1
                    self.broker.queue.append(
                        Message(
                            self.broker.seq,
                            msg.task,
                            msg.job_id,
                            self.clock.t + self.settings.visibility_timeout,
                        )
                    )
                    self.log(
                        f"  {msg.task} {self.name(msg.job_id)} redelivered after the "
                        "visibility timeout"
                    )
            except Exception as exc:  # noqa: BLE001 - a task that raises is acked and gone
                self._raised(msg.task, exc)

        return body

    def _raised(self, where: str, exc: Exception) -> None:
        self.exceptions[f"{where}: {type(exc).__name__}"] += 1
        self.log(f"  {where} raised {type(exc).__name__}: {str(exc)[:160]}")
        if self.api_key in str(exc):
            self.violate("secret", f"the API key is in an exception: {str(exc)[:200]}", stop=False)

    def _tick(self, faults: bool) -> Callable[[Task], None]:
        host = self.hosts[self.fault_rng.randrange(2)] if faults else self.hosts[0]

        def body(task: Task) -> None:
            before = (self.broker.seq, self.seq)
            self.ticks += 1
            report = None
            try:
                report = reconcile_module.reconcile(host.rt)
            except Crash:
                self.log("  reconcile died")
            except Exception as exc:  # noqa: BLE001 - beat runs it again next time
                self._raised("reconcile", exc)
            busy = (
                report is None
                or (self.broker.seq, self.seq) != before
                or any(
                    (
                        report.redriven,
                        report.resubmitted,
                        report.woken,
                        report.freed,
                        report.failed,
                        report.parked_retried,
                        report.rebuilt,
                    )
                )
            )
            if report is not None and busy:
                self.log(f"{host.name} reconcile: {_short_report(report)}")
            if report is not None and not report.skipped_locked:
                self.full_ticks += 1
            interval = float(self.settings.reconcile_interval)
            self.idle_ticks = 0 if busy else self.idle_ticks + 1
            if busy:
                self.tick_at = self.clock.t + interval
            else:
                # Idle: beats before the next time reconcile could act would find nothing
                # to do; skip them. Any other event makes this estimate stale (``_step``).
                self.tick_at = max(self.clock.t + interval, self._next_reconcile_work())
                self.tick_stale = False

        return body

    def _next_reconcile_work(self) -> float:
        """The earliest fake time at which a beat could find something to do: a row's step
        overdue (after grace, and its re-drive backoff), a parked job's retry, a lease that
        ends while jobs wait for a slot. Plus a margin for the host's clock skew."""
        grace = float(self.settings.reconcile_grace)
        times = []
        for job_id, rec in self.bench.peek(self.job_ids).items():
            t = rec.next_check_at
            if t is None:
                continue
            if rec.status is JobStatus.PARKED:
                times.append(t)
            elif rec.status is JobStatus.SUBMITTING:
                # reconcile.unknown_submit_due: the wait, and never before the request ended.
                sent = rec.submitting_at if rec.submitting_at is not None else t
                request = (
                    float(self.settings.connect_timeout) + float(self.settings.read_timeout) + grace
                )
                times.append(max(t, sent + request))
            elif not rec.status.is_final or rec.cancelled_rendering:
                key = names.redrive_key(
                    job_id, rec.status.value, reconcile_module.progress_mark(rec)
                )
                item = self.bench.db._dict.get(key.encode())
                count = int(item.value) if item is not None else 0
                times.append(t + grace * (2**count))
        if self._zset(self.limiter.waiting_key):
            times.extend(self._zset(self.limiter.holders_key).values())
        if not self._line_ready() or self.redis.exists(names.RECONCILE_LOCK_KEY):
            times.append(self.clock.t)  # a lost line is rebuilt; a stale lock expires
        if not times:
            return self.clock.t + 86400.0
        return min(times) + 3.0

    def _webhook(self, wh: Webhook) -> Callable[[Task], None]:
        """What ``worker.webhook``'s receiver does with one delivery (dedupe, then act)."""
        host = self.hosts[0]
        redis = host.rt.limiter.redis

        def body(task: Task) -> None:
            mark = f"t2v:webhook:{wh.track}:{wh.pid}:{wh.status}"
            self.log(f"webhook {self.name(wh.track)} {wh.pid} {wh.status}")
            try:
                if not redis.set(mark, 1, nx=True, ex=DEDUPE_TTL):
                    self.log("  duplicate delivery")
                    return
                try:
                    action = accept_webhook(
                        host.rt.store,
                        host.rt.schedule,
                        wh.track,
                        wh.pid,
                        deadline=self.settings.poll_deadline_seconds,
                        now=host.rt.now,
                    )
                except Exception:
                    redis.delete(mark)
                    raise
                self.log(f"  webhook {self.name(wh.track)}: {action}")
            except Crash:
                self.log("  the receiver died (the provider does not send it again)")
            except Exception as exc:  # noqa: BLE001
                self._raised("webhook", exc)

        return body

    def _app_action(self, action: Action) -> Callable[[Task], None]:
        def body(task: Task) -> None:
            try:
                self._do_action(action)
            except Crash:
                self.log("  the application died")
            except Exception as exc:  # noqa: BLE001
                self._raised(f"app {action.kind}", exc)

        return body

    def _do_action(self, action: Action) -> None:
        if action.kind in ("enqueue", "enqueue_many"):
            reqs = [
                {
                    "prompt": f"model job {len(self.job_ids) + i + 1}: a lighthouse in fog",
                    "num_frames": 8,
                    "width": 128,
                    "height": 128,
                }
                for i in range(action.arg)
            ]
            # The line's fair order: a class and a tenant per call, from the seed.
            pick = random.Random(f"{self.cfg.seed}:{len(self.job_ids)}")
            opts = {
                "priority": pick.choice(PRIORITIES),
                "tenant": pick.choice([None, "a", "b"]),
            }
            self.log(f"app {action.kind} x{action.arg} {opts}")
            try:
                if action.kind == "enqueue":
                    self.app.enqueue(reqs[0], **opts)
                else:
                    self.app.enqueue_many(reqs, **opts)
            except EnqueueError as exc:
                self.log(f"  app sees EnqueueError: {exc}")
            return
        if action.arg >= len(self.job_ids):
            return
        job_id = self.job_ids[action.arg]
        self.log(f"app {action.kind} {self.name(job_id)}")
        if action.kind == "cancel":
            try:
                self.log(f"  cancelled {self.name(job_id)}: {self.app.cancel(job_id)}")
            except JobNotFound:
                self.log("  no such job")
            return
        self._retry(job_id)

    def _retry(self, job_id: str) -> None:
        """``retry()``: ``Producer.retry`` when it exists, else what it does: plan, move,
        send the plan's task."""
        before = self.bench.peek([job_id]).get(job_id)
        retry = getattr(self.app, "retry", None)
        if retry is not None:
            try:
                retry(job_id)
            except (RetryRefused, T2VError) as exc:
                self.log(f"  refused: {str(exc)[:120]}")
        else:
            rec = self.app.store.get(job_id)
            if rec is None:
                return
            try:
                plan = plan_retry(
                    rec, now=self.app_now(), deadline_seconds=self.settings.poll_deadline_seconds
                )
            except RetryRefused as exc:
                self.log(f"  refused: {str(exc)[:120]}")
                return
            if self.app.store.transition(
                job_id,
                plan.to,
                expect=[plan.expect],
                error=plan.note,
                retry_count=JobRow.retry_count + 1,
                **plan.values,
            ):
                self.log(f"  {plan.note}")
                if (
                    before is not None
                    and before.status is JobStatus.FAILED
                    and (plan.to is JobStatus.QUEUED)
                ):
                    self.user_requeues[job_id] += 1
                self.app.broker.send(plan.task, [job_id])
                return
        after = self.bench.peek([job_id]).get(job_id)
        if (
            before is not None
            and after is not None
            and before.status is JobStatus.FAILED
            and after.status is JobStatus.QUEUED
        ):
            self.user_requeues[job_id] += 1


def _short_report(report: Any) -> str:
    fields = (
        "redriven",
        "resubmitted",
        "woken",
        "freed",
        "failed",
        "parked_retried",
        "rebuilt",
        "skipped_locked",
    )
    return " ".join(f"{f}={getattr(report, f)}" for f in fields if getattr(report, f))


def run_schedule(
    seed: int, bench: Bench, skip: frozenset[str] = frozenset(), verbose: bool = False
) -> Result:
    bench.reset()
    return World(seed, bench, skip, verbose).run()
