"""Benchmark (issue 10): how late the poll policy alone sees renders end, and at how many
fetches, with no broker, no worker and no load: the floor under ``bench_scale.py``'s
detection figures.

The in-flight setup of ``bench_scale.py inflight`` (renders 150 s +-12 %, the simulator's
eta off by up to 10 %), run through ``worker.policy.next_poll_delay`` with its defaults:
each poll comes exactly when asked, or ``--delivery`` seconds later (a broker's delay
chain). Also the first poll's margin a little earlier, to show what it would buy.

And the policy while jobs wait for a slot (``PollPolicy.when_waiting``), in the setup of
``bench_scale.py backlog`` (renders of 30 s and of 10 s, lognormal with a spread of 0.2 as
the simulator draws them, eta off by up to 10 %, each poll 0.15 s late): fetches per job
against the seconds a render is seen late, which is a provider slot left idle while jobs
wait. A fetch costs about 8 ms of worker CPU behind a small account (a task's wake-up);
a second seen late is a thirtieth of a 30 s render's slot.

    .venv/bin/python benchmarks/bench_policy.py

Writes ``benchmarks/results/policy.json`` and ``policy-waiting.json``. Not a test:
nothing is asserted.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_delays import percentiles, save_runs  # noqa: E402

if TYPE_CHECKING:
    from worker.policy import PollPolicy


def poll_until(
    ends: float, eta: int, policy: PollPolicy, rng: random.Random, delivery: float
) -> tuple[float, int]:
    """Poll a render that ends at ``ends`` as ``policy`` asks, each poll ``delivery`` s
    late: when it is seen over, and after how many fetches."""
    from worker.policy import next_poll_delay

    t, attempt = 0.0, 0
    while t < ends:
        delay = next_poll_delay(elapsed=t, eta=eta, attempt=attempt, policy=policy, rng=rng)
        assert delay is not None
        t += delay + delivery
        attempt += 1
    return t, attempt


def simulate(margin: float, delivery: float, renders: int, seed: int) -> dict[str, Any]:
    from worker.policy import PollPolicy

    policy = replace(PollPolicy(), eta_margin=margin)
    rng = random.Random(seed)
    late: list[float] = []
    fetches: list[int] = []
    for _ in range(renders):
        ends = 150.0 * (1 + 0.12 * rng.uniform(-1, 1))
        eta = max(1, round(ends * (1 + 0.1 * rng.uniform(-1, 1))))  # as the simulator says
        seen, attempts = poll_until(ends, eta, policy, rng, delivery)
        late.append(seen - ends)
        fetches.append(attempts)
    return {
        "eta_margin": margin,
        "delivery_late_s": delivery,
        "renders": renders,
        "late_s": percentiles(late),
        "fetches_per_job": round(statistics.mean(fetches), 2),
    }


def simulate_waiting(
    margin: float, step: float, render_mean: float, renders: int, seed: int, delivery: float = 0.15
) -> dict[str, Any]:
    """``when_waiting`` with ``T2V_POLL_WAITING_ETA_MARGIN=margin`` and
    ``T2V_POLL_WAITING_MIN_DELAY=step`` (the other settings as they are)."""
    from worker.policy import PollPolicy
    from worker.settings import WorkerSettings

    settings = WorkerSettings.model_construct(
        poll_waiting_eta_margin=margin, poll_waiting_min_delay=step
    )
    base = PollPolicy.from_settings(settings)  # as the worker builds it (``Runtime.policy``)
    rng = random.Random(seed)
    sigma = 0.2
    late: list[float] = []
    fetches: list[int] = []
    for _ in range(renders):
        ends = rng.lognormvariate(math.log(render_mean) - sigma * sigma / 2, sigma)
        eta = max(1, round(ends * (1 + 0.1 * rng.uniform(-1, 1))))
        policy = base.when_waiting(settings, eta)
        seen, attempts = poll_until(ends, eta, policy, rng, delivery)
        late.append(seen - ends)
        fetches.append(attempts)
    mean_late = statistics.mean(late)
    return {
        "render_mean_s": render_mean,
        "waiting_eta_margin": margin,
        "waiting_min_delay": step,
        "renders": renders,
        "fetches_per_job": round(statistics.mean(fetches), 3),
        "late_s": {"mean": round(mean_late, 3), **percentiles(late)},
        # The share of a slot's time lost to seeing its render late (one job at a time).
        "slot_idle_share": round(mean_late / (render_mean + mean_late), 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--renders", type=int, default=20000)
    parser.add_argument("--delivery", type=float, default=1.4, help="a broker's lateness (s)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    runs = [
        simulate(margin, delivery, args.renders, args.seed)
        for margin in (-0.02, -0.04, -0.06)
        for delivery in (0.0, args.delivery)
    ]
    save_runs(
        "policy.json",
        "the poll policy's own detection lateness (issue 10)",
        "renders 150 s +-12 %, eta off by up to 10 %; polls when the policy asks"
        " (default eta_margin -0.02), plus delivery_late_s each",
        runs,
    )
    waiting = [
        simulate_waiting(margin, step, mean, args.renders, args.seed)
        for mean in (30.0, 10.0)
        for margin in (-0.03, -0.02)
        for step in (1.0, 1.5)
    ]
    save_runs(
        "policy-waiting.json",
        "the poll policy while jobs wait for a slot: fetches against slot idle (issue 10)",
        "renders of 30 s and 10 s, lognormal spread 0.2, eta off by up to 10 %, each poll"
        " 0.15 s late; T2V_POLL_WAITING_ETA_MARGIN and T2V_POLL_WAITING_MIN_DELAY as given"
        " (the waiting margin is never above the in-flight one, -0.02)",
        waiting,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
