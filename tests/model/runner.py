"""Run many schedules: in worker processes started with ``PYTHONHASHSEED=0`` (so set and
dict orders, and with them every schedule, are the same in every run), each with its own
SQLite file and fakeredis server, reused across its schedules.

``run_many`` returns a ``Summary``: counts, the failing schedules (seed, checks, trace), the
exceptions the code under test raised (a task that raises is acked and re-driven later: not
a failure by itself, but worth a look), and how long it took.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from tests.model.harness import Bench, run_schedule

REPLAY = "T2V_MODEL_SEED={seed} T2V_MODEL_SCHEDULES=1 .venv/bin/pytest tests/model -q"
TRACE_TAIL = 120  # trace lines kept per failing schedule


@dataclass
class Failure:
    seed: int
    violations: list[str]
    trace: list[str]


@dataclass
class Summary:
    base_seed: int
    count: int
    workers: int
    seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)
    exceptions: Counter[str] = field(default_factory=Counter)
    by_check: Counter[str] = field(default_factory=Counter)

    def report(self, max_failures: int = 5) -> str:
        lines = [
            f"model: {self.count} schedules from base seed {self.base_seed}, "
            f"{len(self.failures)} failing, {self.seconds:.1f}s on {self.workers} "
            f"process(es)"
        ]
        if self.by_check:
            lines.append(
                "failing checks: " + ", ".join(f"{k} x{v}" for k, v in self.by_check.most_common())
            )
        for f in self.failures[:max_failures]:
            lines.append("")
            lines.append(f"seed {f.seed}: " + "; ".join(f.violations))
            lines.append(f"  replay: {REPLAY.format(seed=f.seed)}")
        if self.failures:
            first = self.failures[0]
            lines.append("")
            lines.append(f"trace of seed {first.seed} (last {len(first.trace)} lines):")
            lines.extend(first.trace)
        if len(self.failures) > max_failures:
            lines.append(
                f"... and {len(self.failures) - max_failures} more failing seeds: "
                + ", ".join(str(f.seed) for f in self.failures[max_failures:50])
            )
        return "\n".join(lines)


_BENCH: Bench | None = None


def _init(directory: str) -> None:
    global _BENCH
    _BENCH = Bench(Path(directory) / f"p{os.getpid()}")


def _chunk(
    seeds: list[int], skip: frozenset[str], verbose: bool
) -> tuple[list[Failure], Counter[str], Counter[str]]:
    assert _BENCH is not None
    failures: list[Failure] = []
    stats: Counter[str] = Counter()
    exceptions: Counter[str] = Counter()
    for seed in seeds:
        result = run_schedule(seed, _BENCH, skip, verbose)
        stats.update(result.stats)
        exceptions.update(result.exceptions)
        if result.violations:
            tail = TRACE_TAIL * (5 if verbose else 1)
            failures.append(Failure(seed, result.violations, result.trace[-tail:]))
    return failures, stats, exceptions


def run_many(
    base_seed: int,
    count: int,
    *,
    workers: int = 2,
    skip: frozenset[str] = frozenset(),
    chunk: int = 10,
    verbose: bool = False,
) -> Summary:
    """``count`` schedules from ``base_seed`` in ``workers`` processes; ``verbose``: every
    write of every step in the traces (for replaying a few seeds)."""
    summary = Summary(base_seed, count, workers)
    seeds = [base_seed + i for i in range(count)]
    chunks = [seeds[i : i + chunk] for i in range(0, len(seeds), chunk)]
    started = time.perf_counter()
    saved = os.environ.get("PYTHONHASHSEED")
    os.environ["PYTHONHASHSEED"] = "0"  # the spawned interpreters read it at start
    try:
        with (
            tempfile.TemporaryDirectory(prefix="t2v-model-") as tmp,
            ProcessPoolExecutor(
                max_workers=workers,
                mp_context=get_context("spawn"),
                initializer=_init,
                initargs=(tmp,),
            ) as pool,
        ):
            futures = [pool.submit(_chunk, c, skip, verbose) for c in chunks]
            for future in as_completed(futures):
                failures, stats, exceptions = future.result()
                summary.failures.extend(failures)
                summary.stats.update(stats)
                summary.exceptions.update(exceptions)
    finally:
        if saved is None:
            os.environ.pop("PYTHONHASHSEED", None)
        else:
            os.environ["PYTHONHASHSEED"] = saved
    summary.failures.sort(key=lambda f: f.seed)
    for f in summary.failures:
        summary.by_check.update({v.split("]")[0].lstrip("[") for v in f.violations})
    summary.seconds = time.perf_counter() - started
    return summary
