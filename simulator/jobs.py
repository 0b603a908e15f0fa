"""Simulated generations: creation, timing, outcome, queue accounting, files and webhooks.

A job is created by an accepted submit. Its render time is drawn from a seeded lognormal
(mean ``render_mean``, sigma ``render_spread``); its outcome (success / failed / never) from
the fault dice. A background task renders the real file (in the render pool) while the
simulated time runs; the job becomes ``success`` only when both are done. Ended jobs stop
counting towards the key's queued-request limit; never-finishing jobs count forever; the
``external_holders`` fault takes slots of every key's limit on top. Every created job (a paid
generation) is counted in ``stats.created`` by key and track_id. A successful job may be a
``bad_link`` one (rolled at creation): its files answer an HTML page instead of the video.

Ids are integers that are never reused within one process, not even across ``reset``, so a
client still polling an old id after a reset gets "not found", never somebody else's job.
"""

from __future__ import annotations

import asyncio
import math
import random
import secrets
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from simulator import shapes, webhooks
from simulator.config import SimConfig
from simulator.faults import Faults
from simulator.render import RenderResult, RenderSpec
from simulator.renderpool import RenderPool
from simulator.stats import Stats
from simulator.validation import VideoRequest

FIRST_ID = 134_800_000


@dataclass
class Job:
    id: int
    key: str
    request: VideoRequest
    meta: dict[str, Any]
    outcome: str  # "success" | "failed" | "never"
    eta: int
    submitted_at: float
    ready_at: float
    token: str
    output_url: str
    proxy_url: str
    status: str = "processing"
    result: RenderResult | None = None
    success_at: float | None = None
    generation_time: float = 0.0
    answer_lost: str | None = None  # how the submit's answer was lost: cut | slow | reset
    bad_link: bool = False  # its output links serve an HTML page, never the video
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def track_id(self) -> Any:
        return self.request.track_id

    def snapshot(self) -> dict[str, Any]:
        outputs = []
        if self.result is not None:
            outputs.append(
                {"url": self.output_url, "sha256": self.result.sha256, "bytes": self.result.bytes}
            )
        return {
            "track_id": self.track_id,
            "status": self.status,
            "submitted_at": self.submitted_at,
            "ready_at": self.ready_at,
            "eta": self.eta,
            "key": self.key,
            "answer_lost": self.answer_lost,
            "bad_link": self.bad_link,
            "outputs": outputs,
        }


class Engine:
    """The whole mutable state of one simulator: jobs, counters, faults, render pool."""

    def __init__(self, config: SimConfig, base_url: str) -> None:
        self.config = config
        self.base_url = base_url
        self.keys = frozenset(config.keys)
        self.media_dir = config.media_dir or tempfile.mkdtemp(prefix="t2v-sim-media-")
        self.pool = RenderPool(self.media_dir, config.render_workers)
        self.faults = Faults(config.faults, config.seed)
        self.stats = Stats()
        self._next_id = FIRST_ID
        self.reset()

    # -- lifecycle of the simulator ------------------------------------------------------
    def reset(self) -> None:
        """Counters, faults, dice and jobs back to their start values (ids keep counting)."""
        for job in getattr(self, "jobs", {}).values():
            if job.task is not None:
                job.task.cancel()
        self.jobs: dict[int, Job] = {}
        self.files: dict[str, Job] = {}
        self.processing: Counter[str] = Counter()
        self.recent: dict[str, float] = {}  # spam filter: canonical body -> monotonic time
        self.rng = random.Random(self.config.seed)
        self.faults.reset()
        self.stats.reset()

    def close(self) -> None:
        for job in self.jobs.values():
            if job.task is not None:
                job.task.cancel()
        self.pool.close()
        if self.config.media_dir is None:  # our own temp dir: leave nothing behind
            shutil.rmtree(self.media_dir, ignore_errors=True)

    # -- submit-time checks --------------------------------------------------------------
    def is_spam(self, canonical_body: str) -> bool:
        """True if an accepted submit with this exact body was seen within the window."""
        if not self.faults["spam_filter"]:
            return False
        now = time.monotonic()
        window = float(self.faults["spam_window_seconds"])
        if len(self.recent) > 10_000:
            self.recent = {b: t for b, t in self.recent.items() if now - t < window}
        seen = self.recent.get(canonical_body)
        return seen is not None and now - seen < window

    def queue_full(self, key: str) -> bool:
        """True if the key's queued requests plus the ``external_holders`` reach the limit."""
        held = self.processing[key] + int(self.faults["external_holders"])
        return held >= self.config.queue_limit

    # -- jobs -----------------------------------------------------------------------------
    def _draw_render_seconds(self) -> float:
        mean, sigma = self.config.render_mean, self.config.render_spread
        if mean <= 0:
            return 0.0
        if sigma <= 0:
            return mean
        return self.rng.lognormvariate(math.log(mean) - sigma * sigma / 2, sigma)

    async def submit(self, key: str, request: VideoRequest, canonical_body: str) -> Job:
        """Create a job for an accepted request and start its background lifecycle."""
        job_id = self._next_id
        self._next_id += 1
        seconds = self._draw_render_seconds()
        noise = self.config.eta_noise * self.rng.uniform(-1, 1)
        eta = max(1, round(seconds * (1 + noise)))
        instant = self.config.instant_share > 0 and self.rng.random() < self.config.instant_share
        outcome = "success"
        if self.faults.roll("never_finish_share"):
            outcome = "never"
        elif self.faults.roll("fail_share"):
            outcome = "failed"
        # Decided at creation (on the same dice), so a render's fate is known from the start.
        bad_link = outcome == "success" and self.faults.roll("bad_link_share")
        token = secrets.token_hex(16)
        ext = request.output_type
        now = time.time()
        meta = {
            **request.echo,
            "id": str(job_id),
            "track_id": request.track_id,
            "webhook": request.webhook,
            "model_id": request.model_id,
            "width": request.width,
            "height": request.height,
            "num_frames": request.num_frames,
            "fps": request.fps,
            "output_type": ext,
        }
        job = Job(
            id=job_id,
            key=key,
            request=request,
            meta=meta,
            outcome=outcome,
            eta=eta,
            submitted_at=now,
            ready_at=now + seconds,
            token=token,
            output_url=f"{self.base_url}/files/video_generations/{token}.{ext}",
            proxy_url=f"{self.base_url}/files/proxy/{token}.{ext}",
            bad_link=bad_link,
        )
        self.jobs[job_id] = job
        self.files[token] = job
        self.stats.created.count(key, request.track_id)
        self.recent[canonical_body] = time.monotonic()
        if instant and outcome == "success":
            await self._finish_success(job, instant=True)
        else:
            self.processing[key] += 1
            job.task = asyncio.create_task(self._run(job, seconds))
        return job

    def _spec(self, job: Job) -> RenderSpec:
        r = job.request
        return RenderSpec(
            prompt=r.prompt,
            seed=r.seed,
            width=r.width,
            height=r.height,
            num_frames=r.num_frames,
            fps=r.fps,
            output_type=r.output_type,
            model_id=r.model_id,
        )

    async def _run(self, job: Job, seconds: float) -> None:
        if job.outcome == "never":
            return  # stays processing, keeps its queue slot: as a stuck real job would
        rendering = None
        if job.outcome == "success":
            rendering = asyncio.ensure_future(self.pool.render(self._spec(job)))
        await asyncio.sleep(seconds)
        try:
            if rendering is not None:
                await self._finish_success(job, rendering=rendering)
                return
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a broken render is a failed generation
            job.outcome = "failed"
        self._end(job, "failed")
        if job.request.webhook:
            await self._webhook(job.request.webhook, shapes.webhook_failed(job.id, job.track_id))

    async def _finish_success(
        self,
        job: Job,
        *,
        instant: bool = False,
        rendering: asyncio.Future[RenderResult] | None = None,
    ) -> None:
        job.result = await (
            rendering if rendering is not None else self.pool.render(self._spec(job))
        )
        now = time.time()
        job.ready_at = max(job.ready_at, now)
        job.generation_time = round(job.ready_at - job.submitted_at, 2)
        if not instant:
            self._end(job, "success")
        job.status = "success"
        job.success_at = time.monotonic()
        if job.request.webhook:
            payload = shapes.webhook_success(
                job.id, [job.output_url], job.generation_time, job.track_id, job.meta
            )
            coro = self._webhook(job.request.webhook, payload)
            if instant:
                asyncio.get_running_loop().create_task(coro)
            else:
                await coro

    def _end(self, job: Job, status: str) -> None:
        job.status = status
        if self.jobs.get(job.id) is job:  # not dropped by a reset meanwhile
            self.processing[job.key] -= 1

    async def _webhook(self, url: str, payload: dict[str, Any]) -> None:
        def count(ok: bool) -> None:
            self.stats.inject("webhooks_sent" if ok else "webhooks_failed")

        await webhooks.deliver(url, payload, int(self.faults["webhook_deliveries"]), count)

    # -- reads ----------------------------------------------------------------------------
    def link_blocked(self, job: Job) -> bool:
        """True while a finished job's files still answer 404 (the ``link_404_seconds`` fault)."""
        delay = float(self.faults["link_404_seconds"])
        return (
            delay > 0 and job.success_at is not None and time.monotonic() - job.success_at < delay
        )

    def jobs_snapshot(self) -> dict[str, Any]:
        return {str(job_id): job.snapshot() for job_id, job in self.jobs.items()}
