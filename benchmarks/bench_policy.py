"""Benchmark (issue 10): how late the poll policy alone sees renders end, and at how many
fetches, with no broker, no worker and no load: the floor under ``bench_scale.py``'s
detection figures.

The in-flight setup of ``bench_scale.py inflight`` (renders 150 s +-12 %, the simulator's
eta off by up to 10 %), run through ``worker.policy.next_poll_delay`` with its defaults:
each poll comes exactly when asked, or ``--delivery`` seconds later (a broker's delay
chain). Also the first poll's margin a little earlier, to show what it would buy.

    .venv/bin/python benchmarks/bench_policy.py

Writes ``benchmarks/results/policy.json``. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_delays import percentiles, save_runs  # noqa: E402


def simulate(margin: float, delivery: float, renders: int, seed: int) -> dict[str, Any]:
    from worker.policy import PollPolicy, next_poll_delay

    policy = replace(PollPolicy(), eta_margin=margin)
    rng = random.Random(seed)
    late: list[float] = []
    fetches: list[int] = []
    for _ in range(renders):
        ends = 150.0 * (1 + 0.12 * rng.uniform(-1, 1))
        eta = max(1, round(ends * (1 + 0.1 * rng.uniform(-1, 1))))  # as the simulator says
        t, attempt = 0.0, 0
        while t < ends:
            delay = next_poll_delay(elapsed=t, eta=eta, attempt=attempt, policy=policy, rng=rng)
            assert delay is not None
            t += delay + delivery
            attempt += 1
        late.append(t - ends)
        fetches.append(attempt)
    return {
        "eta_margin": margin,
        "delivery_late_s": delivery,
        "renders": renders,
        "late_s": percentiles(late),
        "fetches_per_job": round(statistics.mean(fetches), 2),
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
