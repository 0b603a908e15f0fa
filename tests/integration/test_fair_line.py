"""The slot line's fair order: classes, tenants by weight, oldest first within a tenant.

Each test runs twice: on the real Redis of the test run and on fakeredis' Lua (the same
scripts; the model test uses the latter)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis as redis_lib

from t2v_core.fairness import flow_cost, flow_name
from worker.limiter import AccountLimiter


@pytest.fixture(params=["real", "fake"])
def client(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "real":
        yield redis_lib.Redis.from_url(request.getfixturevalue("redis_url"))
    else:
        yield fakeredis.FakeRedis()


def _limiter(client: Any, limit: int) -> AccountLimiter:
    lim = AccountLimiter(client, limit, clock=lambda: 1000.0)
    lim.rebuild([], [])
    return lim


def _join(
    lim: AccountLimiter,
    job: str,
    created: float,
    priority: str = "normal",
    tenant: str | None = None,
    weights: dict[str, float] | None = None,
) -> bool:
    return lim.acquire(
        job,
        lease=600,
        created=created,
        flow=flow_name(priority, tenant),
        cost=flow_cost(priority, tenant, weights or {}),
    )


def _serve(lim: AccountLimiter, holder: str, n: int) -> list[str]:
    """Free ``holder``'s slot ``n`` times, each time letting the job the line names take it
    (as its woken submit does); the jobs in the order they were served."""
    served = []
    for _ in range(n):
        named = lim.release(holder)
        assert len(named) == 1
        assert lim.acquire(named[0], lease=600, created=0.0)
        served.append(named[0])
        holder = named[0]
    return served


def test_an_interactive_job_takes_the_next_slot_ahead_of_a_bulk_backlog(client: Any) -> None:
    lim = _limiter(client, 1)
    assert _join(lim, "a0", 1.0, "bulk", "A")
    for i in range(1, 200):
        assert not _join(lim, f"a{i}", 1.0 + i, "bulk", "A")
    assert not _join(lim, "b0", 500.0, "interactive", "B")
    assert not _join(lim, "b1", 501.0, "interactive", "B")
    assert lim.next_in_line(3) == ["b0", "b1", "a1"]
    assert _serve(lim, "a0", 3) == ["b0", "b1", "a1"]


def test_two_bulk_tenants_alternate_whoever_enqueued_first(client: Any) -> None:
    lim = _limiter(client, 1)
    assert _join(lim, "h", 0.0, "bulk", "A")
    for i in range(50):
        _join(lim, f"a{i}", 1.0 + i, "bulk", "A")
    for i in range(50):
        _join(lim, f"b{i}", 100.0 + i, "bulk", "B")
    served = _serve(lim, "h", 40)
    share = Counter(job[0] for job in served)
    assert share == {"a": 20, "b": 20}
    # Oldest first within each tenant.
    assert [j for j in served if j[0] == "a"] == [f"a{i}" for i in range(20)]
    assert [j for j in served if j[0] == "b"] == [f"b{i}" for i in range(20)]


def test_weights_share_the_slots_three_to_one(client: Any) -> None:
    weights = {"A": 3.0, "B": 1.0}
    lim = _limiter(client, 1)
    assert _join(lim, "h", 0.0, "bulk", "A", weights)
    for i in range(100):
        _join(lim, f"a{i}", 1.0 + i, "bulk", "A", weights)
        _join(lim, f"b{i}", 1.0 + i, "bulk", "B", weights)
    share = Counter(job[0] for job in _serve(lim, "h", 80))
    assert share == {"a": 60, "b": 20}


def test_bulk_keeps_a_minimum_share_under_a_normal_backlog(client: Any) -> None:
    lim = _limiter(client, 1)
    assert _join(lim, "h", 0.0)
    for i in range(100):
        _join(lim, f"n{i}", 1.0 + i, "normal", "N")
    _join(lim, "bulk0", 0.5, "bulk", "Z")
    served = _serve(lim, "h", 11)
    assert "bulk0" in served  # 1 slot in 11 at the class weights 10:1, not never


def test_oldest_first_within_a_tenant_whatever_order_they_join(client: Any) -> None:
    lim = _limiter(client, 1)
    assert _join(lim, "h", 0.0, "bulk", "A")
    assert not _join(lim, "late", 30.0, "bulk", "A")
    assert not _join(lim, "early", 10.0, "bulk", "A")
    assert lim.next_in_line(2) == ["early", "late"]


def test_a_tenant_back_from_idle_saves_up_no_credit(client: Any) -> None:
    lim = _limiter(client, 1)
    assert _join(lim, "h", 0.0, "bulk", "A")
    for i in range(30):
        _join(lim, f"a{i}", 1.0 + i, "bulk", "A")
    _serve(lim, "h", 20)
    # B was idle all along: it is served alternately with A from now, not 20 times first.
    for i in range(10):
        _join(lim, f"b{i}", 100.0 + i, "bulk", "B")
    nxt = lim.next_in_line(6)
    assert Counter(j[0] for j in nxt) == {"a": 3, "b": 3}


def test_a_job_leaving_the_line_frees_its_place(client: Any) -> None:
    lim = _limiter(client, 1)
    assert _join(lim, "h", 0.0, "bulk", "A")
    _join(lim, "a1", 1.0, "bulk", "A")
    _join(lim, "b1", 2.0, "interactive", "B")
    assert lim.next_in_line(5) == ["b1", "a1"]
    assert lim.leave_line("b1") == []  # no slot free: nobody is woken
    lim.forget("a1")
    assert lim.next_in_line(5) == [] and lim.waiting() == []


def test_a_rebuilt_line_keeps_the_classes(client: Any) -> None:
    lim = AccountLimiter(client, 1, clock=lambda: 1000.0)
    waiters = [
        (f"a{i}", 1.0 + i, flow_name("bulk", "A"), flow_cost("bulk", "A", {})) for i in range(5)
    ]
    waiters.append(("b0", 50.0, flow_name("interactive", "B"), flow_cost("interactive", "B", {})))
    lim.rebuild([("h", 60.0)], waiters)
    assert lim.holders() == ["h"]
    assert lim.next_in_line(3) == ["b0", "a0", "a1"]
    assert not _join(lim, "a0", 1.0, "bulk", "A")  # still waits, keeps its place
    assert _serve(lim, "h", 2) == ["b0", "a0"]
