"""The poll and retry policy: pure, seeded, no clock."""

from __future__ import annotations

import random
import statistics
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.policy import PollPolicy, next_poll_delay, retry_delay

P = PollPolicy()


def delay(elapsed: float, eta: float | None, attempt: int, policy: PollPolicy = P) -> float | None:
    return next_poll_delay(
        elapsed=elapsed, eta=eta, attempt=attempt, policy=policy, rng=random.Random(attempt)
    )


def test_first_delay_follows_eta_within_its_margin() -> None:
    for eta in (10.0, 45.0, 300.0):
        d = delay(0.0, eta, 0)
        assert d is not None
        target = max(eta * (1 + P.eta_margin), P.min_delay)
        assert target <= d <= target + P.jitter * P.min_delay
    late = PollPolicy(eta_margin=0.05)
    d = delay(0.0, 300.0, 0, late)
    assert d is not None and d >= 315.0


def test_first_delay_follows_long_eta_but_is_capped() -> None:
    d = delay(0.0, 960.0, 0)
    assert d == P.max_first_delay == 900.0
    small = PollPolicy(max_first_delay=120.0)
    assert delay(0.0, 960.0, 0, small) == 120.0


def test_tiny_eta_still_waits_min_delay() -> None:
    assert delay(0.0, 0.1, 0) == P.min_delay


def test_early_poll_waits_for_rest_of_eta() -> None:
    # A webhook or reconcile made us poll early: don't start backing off yet.
    d = delay(100.0, 300.0, 1)
    rest = 300.0 * (1 + P.eta_margin) - 100.0
    assert d is not None and rest <= d <= rest + P.jitter * P.min_delay


def test_after_eta_backoff_grows_and_caps() -> None:
    policy = PollPolicy(jitter=0.0)
    delays = [delay(1000.0, 100.0, n, policy) for n in range(1, 15)]
    assert delays[0] == policy.min_delay
    assert delays[1] == pytest.approx(policy.min_delay * policy.backoff)
    assert all(a is not None and b is not None and a <= b for a, b in pairwise(delays))
    assert max(d for d in delays if d is not None) == policy.max_delay


def test_without_eta_backoff_starts_at_min_delay() -> None:
    policy = PollPolicy(jitter=0.0)
    assert delay(0.0, None, 0, policy) == policy.min_delay
    assert delay(5.0, None, 1, policy) == pytest.approx(policy.min_delay * policy.backoff)


def test_jitter_bounds() -> None:
    rng = random.Random(42)
    seen = [
        next_poll_delay(elapsed=500.0, eta=None, attempt=3, policy=P, rng=rng) for _ in range(2000)
    ]
    base = P.min_delay * P.backoff**3
    assert all(d is not None and base * 0.8 <= d <= base * 1.2 for d in seen)
    assert max(d for d in seen if d) - min(d for d in seen if d) > base * 0.3  # really spread


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    elapsed=st.floats(min_value=0, max_value=5000),
    eta=st.one_of(st.none(), st.floats(min_value=0, max_value=5000)),
    attempt=st.integers(min_value=0, max_value=200),
    seed=st.integers(),
)
def test_never_past_deadline_never_negative_never_above_caps(
    elapsed: float, eta: float | None, attempt: int, seed: int
) -> None:
    d = next_poll_delay(
        elapsed=elapsed, eta=eta, attempt=attempt, policy=P, rng=random.Random(seed)
    )
    if elapsed >= P.deadline:
        assert d is None
        return
    assert d is not None
    assert 0 < d <= P.deadline - elapsed + 1e-9
    assert d <= max(P.max_first_delay, P.max_delay)


def test_deadline_returns_time_left_then_none() -> None:
    assert delay(1799.0, None, 20) == pytest.approx(1.0)
    assert delay(1800.0, None, 20) is None
    assert delay(5000.0, 100.0, 0) is None


def test_median_fetches_per_job_with_accurate_eta_is_at_most_two() -> None:
    """Simulate jobs whose real duration is eta with ±10% noise; count fetches."""
    rng = random.Random(7)
    counts = []
    for _ in range(2000):
        eta = rng.uniform(30, 600)
        done_at = eta * rng.uniform(0.9, 1.1)
        elapsed, attempt = 0.0, 0
        while True:
            d = next_poll_delay(elapsed=elapsed, eta=eta, attempt=attempt, policy=P, rng=rng)
            assert d is not None
            elapsed += d
            attempt += 1
            if elapsed >= done_at:
                break
        counts.append(attempt)
    assert statistics.median(counts) <= 2
    assert statistics.mean(counts) < 3


def test_from_settings_maps_fields() -> None:
    from worker.settings import WorkerSettings

    settings = WorkerSettings(  # type: ignore[call-arg]
        _env_file=None,
        poll_min_delay=1.5,
        poll_max_delay=45.0,
        poll_backoff=2.0,
        poll_jitter=0.1,
        poll_deadline_seconds=99.0,
    )
    p = PollPolicy.from_settings(settings)
    assert (p.min_delay, p.max_delay, p.backoff, p.jitter, p.deadline) == (
        1.5,
        45.0,
        2.0,
        0.1,
        99.0,
    )
    assert p.max_first_delay == 900.0


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        PollPolicy(min_delay=10, max_delay=5)
    with pytest.raises(ValueError):
        PollPolicy(jitter=1.5)
    with pytest.raises(ValueError):
        PollPolicy(backoff=0.5)


# -- retry_delay ---------------------------------------------------------------------------


def test_retry_delay_exponential_and_capped() -> None:
    rng = random.Random(1)
    got = [retry_delay(n, 2.0, 60.0, rng, jitter=0.0) for n in range(8)]
    assert got == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


def test_retry_delay_jitter_bounds() -> None:
    rng = random.Random(3)
    for n in range(6):
        raw = min(2.0 * 2**n, 60.0)
        for _ in range(200):
            d = retry_delay(n, 2.0, 60.0, rng)
            assert raw * 0.8 <= d <= min(raw * 1.2, 60.0)


def test_retry_after_is_a_floor_even_above_cap() -> None:
    rng = random.Random(5)
    for _ in range(200):
        assert 30.0 <= retry_delay(0, 2.0, 60.0, rng, retry_after=30.0) <= 32.0
        assert retry_delay(0, 2.0, 10.0, rng, retry_after=120.0) >= 120.0
    # A small retry_after does not shorten a longer backoff.
    assert retry_delay(5, 2.0, 60.0, random.Random(0), retry_after=1.0, jitter=0.0) == 60.0


def _fetches_and_lateness(
    policy: PollPolicy, seed: int = 3, renders: tuple[float, float] = (20.0, 40.0)
) -> tuple[float, float]:
    """Mean fetches and mean lateness of ``policy`` over renders whose eta is off by up to
    10 % either way (what the simulator's ``--eta-noise 0.1`` does)."""
    rng = random.Random(seed)
    fetches, late = [], []
    for _ in range(2000):
        render = rng.uniform(*renders)
        eta = render * (1 + rng.uniform(-0.1, 0.1))
        t, n = 0.0, 0
        while True:
            d = next_poll_delay(elapsed=t, eta=eta, attempt=n, policy=policy, rng=rng)
            assert d is not None
            t, n = t + d, n + 1
            if t >= render:
                break
        fetches.append(n)
        late.append(t - render)
    return statistics.mean(fetches), statistics.mean(late)


def test_default_sees_long_renders_twice_as_soon_as_the_old_policy() -> None:
    # The old defaults: 5 % after eta, then 2 s growing by 1.6. Their p95 lateness on
    # 120-180 s renders was 22 s (issue 10 wants <= 15 s after the render ended).
    old = PollPolicy(eta_margin=0.05, min_delay=2.0, backoff=1.6)
    f_old, late_old = _fetches_and_lateness(old, renders=(120.0, 180.0))
    f_new, late_new = _fetches_and_lateness(P, renders=(120.0, 180.0))
    assert late_new < late_old / 1.5
    assert f_new < f_old + 1


def test_when_waiting_looks_before_the_eta_then_every_second_and_a_half() -> None:
    from worker.settings import WorkerSettings

    settings = WorkerSettings(poll_jitter=0.0)
    base = PollPolicy.from_settings(settings)
    tight = base.when_waiting(settings)
    assert tight.deadline == base.deadline and tight.max_delay == base.max_delay
    first = delay(0.0, 100.0, 0, tight)
    assert first == pytest.approx(100.0 * (1 + settings.poll_waiting_eta_margin))
    assert delay(200.0, 100.0, 1, tight) == pytest.approx(settings.poll_waiting_min_delay)
    assert delay(200.0, 100.0, 2, tight) == pytest.approx(
        settings.poll_waiting_min_delay * settings.poll_waiting_backoff
    )
    # The trade: renders are seen sooner for a bounded number of extra fetches.
    f_base, late_base = _fetches_and_lateness(base)
    f_tight, late_tight = _fetches_and_lateness(tight)
    assert late_tight < late_base / 2
    assert f_base < f_tight < f_base + 2
    # A short render's steps shrink with its eta, down to a floor.
    assert base.when_waiting(settings, 10.0).min_delay == pytest.approx(0.5)
    assert base.when_waiting(settings, 1.0).min_delay == pytest.approx(0.25)
    assert base.when_waiting(settings, 300.0).min_delay == settings.poll_waiting_min_delay
    # Never looser than the policy it tightens (fast test clocks stay fast).
    fast = PollPolicy(min_delay=0.3, backoff=1.1, eta_margin=-0.2).when_waiting(settings)
    assert (fast.min_delay, fast.backoff, fast.eta_margin) == (0.3, 1.1, -0.2)


def test_eta_margin_is_bounded() -> None:
    with pytest.raises(ValueError, match="eta_margin"):
        PollPolicy(eta_margin=-0.6)
    assert PollPolicy(eta_margin=-0.1).eta_margin == -0.1
