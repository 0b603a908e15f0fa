"""Fuzz targets: print the seed and budget at the start, a table of what ran at the end."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fuzz.budget import KINDS, PROFILE, SCALE, SEED, TALLIES


def pytest_sessionstart(session: pytest.Session) -> None:
    # Printed before anything runs (also under -q), so a run that hangs still has its seed.
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"t2v fuzz: profile={PROFILE} seed={SEED} budget={SCALE}x CI "
            f"(re-run: T2V_FUZZ_PROFILE={PROFILE} T2V_FUZZ_SEED={SEED})"
        )


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    name = report.nodeid.rsplit("::", 1)[-1].split("[", 1)[0]
    tally = TALLIES.get(name)
    if tally is None:
        return
    tally.seconds += report.duration
    if report.when == "call" or report.outcome != "passed":
        tally.outcome = report.outcome


def pytest_terminal_summary(terminalreporter: Any) -> None:
    ran = [t for t in TALLIES.values() if t.tried]
    if not ran:
        return
    write = terminalreporter.write_line
    write("")
    write(
        f"fuzz targets, profile={PROFILE}, seed={SEED} "
        f"(re-run: T2V_FUZZ_PROFILE={PROFILE} T2V_FUZZ_SEED={SEED})"
    )
    head = (
        f"{'target':<10} {'test':<38} {'budget':>7} {'tried':>7} {'failed':>6} {'secs':>7}  outcome"
    )
    write(head)
    write("-" * len(head))
    for t in sorted(ran, key=lambda t: (t.target, t.test)):
        write(
            f"{t.target:<10} {t.test:<38} {t.budget:>7} {t.tried:>7} {t.failed:>6} "
            f"{t.seconds:>7.1f}  {t.outcome}"
        )
    write(
        f"{'total':<10} {'':<38} {sum(t.budget for t in ran):>7} "
        f"{sum(t.tried for t in ran):>7} {sum(t.failed for t in ran):>6} "
        f"{sum(t.seconds for t in ran):>7.1f}"
    )
    write(
        "'tried' counts every call of the test body: explicit @example regressions, "
        "generated inputs and shrinking steps; 'failed' counts calls that raised."
    )
    for test in sorted(KINDS):
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(KINDS[test].items(), key=lambda x: -x[1]))
        write(f"  {test}: {kinds}")
