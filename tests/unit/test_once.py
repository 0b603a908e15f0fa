"""``t2v_core.once``: the first call runs once even when threads ask together (Celery's
``threads`` pool registered the metrics twice with ``lru_cache``)."""

from __future__ import annotations

import threading

from t2v_core.once import once


def test_a_second_thread_waits_for_the_first_call_instead_of_running_it_again() -> None:
    calls: list[str] = []
    entered = threading.Event()
    release = threading.Event()

    @once
    def build() -> object:
        calls.append(threading.current_thread().name)
        entered.set()
        release.wait(timeout=10)
        return object()

    got: dict[str, object] = {}

    def ask(name: str) -> None:
        got[name] = build()

    first = threading.Thread(target=ask, args=("first",), name="first")
    first.start()
    assert entered.wait(timeout=10)
    second = threading.Thread(target=ask, args=("second",), name="second")
    second.start()
    # With lru_cache the second thread would be inside ``build`` by now, waiting too.
    second.join(timeout=0.5)
    release.set()
    first.join(timeout=10)
    second.join(timeout=10)

    assert calls == ["first"]
    assert got["first"] is got["second"]


def test_cache_clear_builds_again() -> None:
    built: list[int] = []

    @once
    def build() -> int:
        built.append(len(built))
        return len(built)

    assert build() == build() == 1
    build.cache_clear()
    assert build() == 2
    assert built == [0, 1]
