"""``once``: a function of no arguments run at most once per process, safe under threads.

``functools.lru_cache`` may run its function twice when two threads ask at the same time
(each sees a miss). Under Celery's ``threads`` pool that registered the Prometheus metrics
twice (``DuplicateTimeseries``) and built two worker runtimes; ``once`` takes a lock for
the first call only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import update_wrapper
from typing import Generic, TypeVar

T = TypeVar("T")


class Once(Generic[T]):
    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn = fn
        self._lock = threading.Lock()
        self._box: tuple[T] | None = None
        update_wrapper(self, fn)

    def __call__(self) -> T:
        box = self._box
        if box is None:
            with self._lock:
                box = self._box
                if box is None:
                    box = self._box = (self._fn(),)
        return box[0]

    def cache_clear(self) -> None:
        """Forget the value (a forked child builds its own)."""
        with self._lock:
            self._box = None


def once(fn: Callable[[], T]) -> Once[T]:
    return Once(fn)
