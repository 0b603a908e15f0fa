"""When to poll again, and how long to wait after a transient failure: pure arithmetic.

The poll task asks ``next_poll_delay`` for a countdown and re-enqueues itself with it;
nothing here sleeps, reads a clock or touches a broker. Randomness comes in as an
``random.Random`` so tests can seed it.

The first poll after a submit waits for the provider's ``eta`` give or take a small
margin (``eta_margin``, a little before it by default: an eta off by 10 % either way is
otherwise seen up to 15 % late, 25 s on a 150 s render). Later polls back off from
``min_delay`` by ``backoff`` per attempt, capped at ``max_delay``, jittered by ``±jitter``
so a batch of jobs submitted together does not poll in lockstep. With etas off by up to
10 %, renders of 120-180 s are seen 5 s (median) and 11 s (p95) after they end, for 2.0
fetches per job (``benchmarks/bench_scale.py inflight``); the old +5 % margin and 2 s x 1.6
backoff gave 7.5 s and 22 s for 1.5 fetches. ``min_delay`` is also the shortest first
wait. No delay
goes past the deadline, and no countdown exceeds ``max(max_first_delay, max_delay)``,
which must stay below the broker's visibility timeout (a longer countdown would be
redelivered by Redis before it is due; ``worker.celery_app`` checks this at start-up).

While jobs wait for an account slot and every slot is held, a render seen late is a slot
left idle that somebody waits for, and a fetch costs a few milliseconds of CPU:
``PollPolicy.when_waiting`` looks a little before the eta and then every 1.5 s or so
(growing slowly), instead of 5 s apart. With etas off by up to 10 % and 30 s renders that
keeps the provider's slots busy about 96.5 % of the time instead of 93 %, for 1.9 fetches
a job. Looking every second from 3 % before the eta (the earlier defaults) kept them 97 %
busy for 2.25 fetches; behind a small account a fetch is a task's cold wake-up, about 8 ms
of worker CPU, so that was 20 % more polls for 0.7 % of the slots
(``benchmarks/bench_policy.py``'s waiting runs, ``benchmarks/bench_scale.py backlog``).

Never: call ``time.sleep``, import Celery, or read ``os.environ``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker.settings import WorkerSettings

__all__ = ["PollPolicy", "next_poll_delay", "retry_delay"]


# While jobs wait, the first step after the eta poll is at most this fraction of the eta
# (0.5 s for a 10 s render, where 1 s left the slots 94 % busy instead of 96 %), and never
# below the floor.
WAITING_STEP_OF_ETA = 0.05
WAITING_STEP_FLOOR = 0.25


@dataclass(frozen=True)
class PollPolicy:
    min_delay: float = 5.0
    max_delay: float = 60.0
    backoff: float = 1.4
    jitter: float = 0.2
    deadline: float = 1800.0
    # The first wait follows eta even when eta is long, but never beyond this.
    max_first_delay: float = 900.0
    # The first poll comes this fraction after eta (negative: before it).
    eta_margin: float = -0.02

    def __post_init__(self) -> None:
        if self.min_delay < 0 or self.max_delay <= 0 or self.min_delay > self.max_delay:
            raise ValueError("need 0 <= min_delay <= max_delay and max_delay > 0")
        if self.backoff < 1.0:
            raise ValueError("backoff must be >= 1")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError("jitter must be in [0, 1)")
        if self.deadline <= 0 or self.max_first_delay <= 0:
            raise ValueError("deadline and max_first_delay must be positive")
        if not -0.5 <= self.eta_margin <= 1.0:
            raise ValueError("eta_margin must be in [-0.5, 1]")

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> PollPolicy:
        """The policy from worker settings, as they are.

        Nothing is clamped here: ``worker.celery_app`` refuses to start when the
        longest countdown (``max(max_first_delay, max_delay)``) does not fit inside the
        broker's visibility timeout, so a wrong setting fails loudly instead of being
        quietly changed.
        """
        return cls(
            min_delay=settings.poll_min_delay,
            max_delay=settings.poll_max_delay,
            backoff=settings.poll_backoff,
            jitter=settings.poll_jitter,
            deadline=settings.poll_deadline_seconds,
            max_first_delay=float(getattr(settings, "poll_max_first_delay", cls.max_first_delay)),
            eta_margin=float(getattr(settings, "poll_eta_margin", cls.eta_margin)),
        )

    def when_waiting(self, settings: WorkerSettings, eta: float | None = None) -> PollPolicy:
        """The policy while jobs wait for an account slot: the ``poll_waiting_*`` settings
        (look ``poll_waiting_eta_margin`` around the eta, then from
        ``poll_waiting_min_delay`` by ``poll_waiting_backoff``), never looser than this
        policy; every other bound stays. A short render's first step is shorter still
        (``WAITING_STEP_OF_ETA`` of its eta, at least ``WAITING_STEP_FLOOR``): the eta's
        error, and so the wait worth cutting, shrinks with it."""
        min_delay = min(settings.poll_waiting_min_delay, self.min_delay)
        if eta is not None and eta > 0:
            min_delay = min(min_delay, max(WAITING_STEP_FLOOR, WAITING_STEP_OF_ETA * eta))
        return replace(
            self,
            eta_margin=min(settings.poll_waiting_eta_margin, self.eta_margin),
            min_delay=min_delay,
            backoff=min(settings.poll_waiting_backoff, self.backoff),
        )


def next_poll_delay(
    *,
    elapsed: float,
    eta: float | None,
    attempt: int,
    policy: PollPolicy,
    rng: random.Random,
) -> float | None:
    """Seconds until the next fetch, or None when the deadline has passed (fail the job).

    ``elapsed``: seconds since the provider accepted the job. ``attempt``: fetches done
    so far (0 = the first poll after submit). While ``elapsed`` is short of the eta (plus
    margin) the wait is the rest of the eta, whatever the attempt number, so an early
    poll (webhook, reconcile) does not start the backoff too soon.
    """
    remaining = policy.deadline - elapsed
    if remaining <= 0:
        return None
    target = None if eta is None or eta <= 0 else eta * (1.0 + policy.eta_margin)
    if target is not None and elapsed < target:
        # Only positive jitter here: the margin already says how early to look.
        wait = (target - elapsed) + rng.uniform(0.0, policy.jitter * policy.min_delay)
        delay = min(max(wait, policy.min_delay), policy.max_first_delay)
    else:
        step = max(attempt - 1, 0) if target is not None else max(attempt, 0)
        base = min(policy.min_delay * policy.backoff ** min(step, 64), policy.max_delay)
        delay = base * (1.0 + rng.uniform(-policy.jitter, policy.jitter))
        delay = min(max(delay, 0.0), policy.max_delay)
    return min(delay, remaining)


def retry_delay(
    attempt: int,
    base: float,
    cap: float,
    rng: random.Random,
    retry_after: float | None = None,
    *,
    jitter: float = 0.2,
) -> float:
    """Countdown before retry number ``attempt`` (0 = the first retry) of a transient error.

    Exponential from ``base`` doubling, capped at ``cap``, jittered ``±jitter``. The
    server's ``retry_after`` is a floor (honoured even above ``cap``), plus a little
    positive jitter so workers refused together do not all return in the same second.
    """
    raw = min(base * 2.0 ** min(max(attempt, 0), 64), cap)
    delay = min(raw * (1.0 + rng.uniform(-jitter, jitter)), cap)
    delay = max(delay, 0.0)
    if retry_after is not None and retry_after > 0:
        spread = min(max(base, 1.0), retry_after * jitter)
        delay = max(delay, retry_after + rng.uniform(0.0, spread))
    return delay
