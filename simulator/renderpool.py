"""Runs ``render.render`` in worker processes so rendering never blocks the event loop.

Identical specs rendering at the same time share one render. Processes are started with
``spawn`` (forking a process that runs uvloop and threads is unsafe); a broken pool is
replaced on the next render.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from simulator.render import RenderResult, RenderSpec, render, warm_up


def watch_parent(parent_pid: int) -> None:
    """In a worker: exit when the simulator is gone (even SIGKILLed), never linger orphaned."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


class RenderPool:
    def __init__(self, media_dir: str, workers: int) -> None:
        self.media_dir = media_dir
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._inflight: dict[str, asyncio.Future[RenderResult]] = {}

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=watch_parent,
                initargs=(os.getpid(),),
            )
        return self._pool

    def start(self) -> None:
        """Start the workers and load the codecs in them, without waiting."""
        pool = self._executor()
        for _ in range(self.workers):
            pool.submit(warm_up)

    async def render(self, spec: RenderSpec) -> RenderResult:
        key = spec.cache_key()
        running = self._inflight.get(key)
        if running is None:
            running = asyncio.ensure_future(self._run(spec))
            self._inflight[key] = running
            running.add_done_callback(lambda _f: self._inflight.pop(key, None))
        return await asyncio.shield(running)

    async def _run(self, spec: RenderSpec) -> RenderResult:
        try:
            return await asyncio.wrap_future(self._executor().submit(render, spec, self.media_dir))
        except BrokenProcessPool:
            self._pool = None  # a worker died: start afresh and try once more
            return await asyncio.wrap_future(self._executor().submit(render, spec, self.media_dir))

    def close(self) -> None:
        if self._pool is not None:
            # wait: uvicorn re-raises SIGTERM after shutdown, so atexit never runs for us
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
