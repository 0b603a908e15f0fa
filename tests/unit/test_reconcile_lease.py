"""The reconcile lock: short-lived so a killed run stops reconcile only briefly, renewed by a
long run, never taken back from a run that took it over."""

from __future__ import annotations

import fakeredis
import pytest

from t2v_core.names import RECONCILE_LOCK_KEY
from worker import leases as leases_module
from worker.leases import Lease
from worker.reconcile import reconcile_lock_seconds
from worker.settings import WorkerSettings


def test_the_lock_lives_three_intervals_and_at_least_five_seconds() -> None:
    assert reconcile_lock_seconds(WorkerSettings.model_construct(reconcile_interval=1.0)) == 5.0
    assert reconcile_lock_seconds(WorkerSettings.model_construct(reconcile_interval=10.0)) == 30.0


def test_a_long_run_renews_its_lock_and_a_short_one_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    redis = fakeredis.FakeRedis()
    clock = [100.0]
    monkeypatch.setattr(leases_module.time, "monotonic", lambda: clock[0])
    lease = Lease(redis, RECONCILE_LOCK_KEY, 6.0)
    assert lease.take()
    assert not Lease(redis, RECONCILE_LOCK_KEY, 6.0).take()  # one run at a time
    redis.pexpire(RECONCILE_LOCK_KEY, 4000)  # time passed in Redis too
    clock[0] += 1.0  # under a third of the lease: no renewal
    lease.renew()
    assert redis.pttl(RECONCILE_LOCK_KEY) <= 4000
    clock[0] += 1.5  # past a third: renewed to the whole lease
    lease.renew()
    assert redis.pttl(RECONCILE_LOCK_KEY) > 5000
    lease.drop()
    assert not redis.exists(RECONCILE_LOCK_KEY)


def test_a_run_that_lost_its_lock_never_takes_it_back(monkeypatch: pytest.MonkeyPatch) -> None:
    redis = fakeredis.FakeRedis()
    clock = [100.0]
    monkeypatch.setattr(leases_module.time, "monotonic", lambda: clock[0])
    slow = Lease(redis, RECONCILE_LOCK_KEY, 6.0)
    assert slow.take()
    redis.delete(RECONCILE_LOCK_KEY)  # it expired while the slow run went on
    other = Lease(redis, RECONCILE_LOCK_KEY, 6.0)
    assert other.take()
    clock[0] += 10.0
    slow.renew()
    slow.drop()
    assert redis.get(RECONCILE_LOCK_KEY) == other.token.encode()
