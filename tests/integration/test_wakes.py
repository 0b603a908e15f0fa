"""Wakes do not multiply: a release names only the jobs it brought among the first ``free``
of the fair order, never again the ones already named, and a release that changed nothing
(a second copy of a message, a job that holds nothing and is not in line) names nobody.

The benchmark that found it (benchmarks/results/callbacks.json, "full_size_attempt"): after
a FLUSHDB left 60 slots free and 1,460 jobs in line, every stale submit message (a job
already submitted or done) released "its" slot and woke the first 60 of the line again:
each message sent 60 more, and Redis filled with two million submit messages while the
woken jobs' own messages sat behind them.

Each test runs on the real Redis of the test run and on fakeredis' Lua (the same scripts;
the model test uses the latter)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis as redis_lib

from worker.limiter import AccountLimiter


@pytest.fixture(params=["real", "fake"])
def client(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "real":
        yield redis_lib.Redis.from_url(request.getfixturevalue("redis_url"))
    else:
        yield fakeredis.FakeRedis()


def _after_a_wipe(client: Any, limit: int, jobs: int) -> AccountLimiter:
    """The line as the rebuild after a wipe leaves it: every slot free, ``jobs`` waiting."""
    lim = AccountLimiter(client, limit, clock=lambda: 1000.0)
    lim.rebuild([], [(f"j{i}", float(i)) for i in range(jobs)])
    return lim


def test_a_release_that_changed_nothing_wakes_nobody(client: Any) -> None:
    lim = _after_a_wipe(client, 3, 6)
    assert lim.release(None) == ["j0", "j1", "j2"]  # the rebuild's wake: the whole window
    assert lim.acquire("j0", lease=600, created=0.0)
    # Second copies of j0's submit message (j0 is submitting now: it leaves a line it is no
    # longer in, keeping its slot), and of a job that is gone: nothing changed, so nobody
    # is woken, however many copies there are.
    for _ in range(5):
        assert lim.leave_line("j0") == []
        assert lim.release("gone") == []
    assert lim.waiting() == ["j1", "j2", "j3", "j4", "j5"]


def test_a_freed_slot_wakes_only_the_job_it_brings_in(client: Any) -> None:
    lim = _after_a_wipe(client, 3, 6)
    assert lim.release(None) == ["j0", "j1", "j2"]
    assert lim.acquire("j0", lease=600, created=0.0)
    # j1 and j2 were woken and their messages are on the way: j0's freed slot brings in j3.
    assert lim.release("j0") == ["j3"]
    # j1 was cancelled while it waited: its place goes to the next one, j4.
    assert lim.release("j1") == ["j4"]
    assert lim.acquire("j2", lease=600, created=2.0)
    assert lim.acquire("j3", lease=600, created=3.0)
    assert lim.acquire("j4", lease=600, created=4.0)
    assert lim.release("j2") == ["j5"]
    assert lim.release("j2") == []  # a second copy of that release


def test_a_lapsed_lease_wakes_the_job_it_brings_in_once(client: Any) -> None:
    clock = [1000.0]
    lim = AccountLimiter(client, 2, clock=lambda: clock[0])
    lim.rebuild([("h", 10.0)], [("a", 1.0), ("b", 2.0), ("c", 3.0)])
    assert lim.release(None) == ["a"]
    clock[0] += 11  # h's hold lapsed (its worker died): one more slot is free
    assert lim.release("gone") == ["b"]
    assert lim.release("gone") == []


def test_the_explicit_wake_names_the_whole_window_each_time(client: Any) -> None:
    """Reconcile's and the rebuild's wake: whoever fits now, woken or not (their messages
    may have been lost with a killed worker or a wiped broker); at most ``free`` a run."""
    lim = _after_a_wipe(client, 2, 4)
    assert lim.release(None) == ["j0", "j1"]
    assert lim.release(None) == ["j0", "j1"]
    assert lim.next_in_line(2) == ["j0", "j1"]
