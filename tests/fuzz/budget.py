"""Budgets, seed and counters shared by the fuzz targets (see ``tests/fuzz/README.md``).

``T2V_FUZZ_PROFILE=ci`` (the default) runs each target's CI budget from the fixed seed
``CI_SEED``; ``T2V_FUZZ_PROFILE=fuzz`` (``make fuzz``) runs ``T2V_FUZZ_SCALE`` (20) times
that budget from ``T2V_FUZZ_SEED``, a fresh random seed unless given. The seed in use is
printed at the start and in the table at the end: re-run a failure with
``T2V_FUZZ_PROFILE=<profile> T2V_FUZZ_SEED=<seed>``. Hypothesis's example database is off
(``database=None``): nothing is written into the repository; a failing input found by
fuzzing is kept by adding it to the target as an ``@example``.
"""

from __future__ import annotations

import os
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis.errors import HypothesisException

PROFILE = os.environ.get("T2V_FUZZ_PROFILE", "ci").strip().lower() or "ci"
if PROFILE not in ("ci", "fuzz"):
    raise RuntimeError(f"T2V_FUZZ_PROFILE must be ci or fuzz, not {PROFILE!r}")
CI_SEED = 20240611
_seed_env = os.environ.get("T2V_FUZZ_SEED", "").strip()
SEED = int(_seed_env) if _seed_env else (CI_SEED if PROFILE == "ci" else random.randrange(2**32))
SCALE = int(os.environ.get("T2V_FUZZ_SCALE", "20")) if PROFILE == "fuzz" else 1
#: ``T2V_FUZZ_EXAMPLES_ONLY=1``: run only the kept regressions (the ``@example`` inputs).
EXAMPLES_ONLY = os.environ.get("T2V_FUZZ_EXAMPLES_ONLY", "") not in ("", "0")

_COMMON = {
    "deadline": None,
    "database": None,
    "print_blob": True,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
}
if EXAMPLES_ONLY:
    _COMMON["phases"] = [Phase.explicit]
settings.register_profile("t2v-ci", **_COMMON)
settings.register_profile("t2v-fuzz", **_COMMON)


@dataclass
class Tally:
    target: str
    test: str
    budget: int = 0
    tried: int = 0
    failed: int = 0
    first: float = 0.0
    last: float = 0.0
    outcome: str = "not run"
    seconds: float = 0.0


TALLIES: dict[str, Tally] = {}
#: What each target's inputs were classified as (``"parsed"``, ``"TransientError"``...).
KINDS: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

F = TypeVar("F", bound=Callable[..., Any])


def fuzz(target: str, ci_examples: int) -> Callable[[F], F]:
    """Settings, seed and counting for one fuzz test: ``ci_examples`` inputs in CI,
    ``SCALE`` times as many under ``make fuzz``. Put it above ``@given`` and the
    ``@example`` regressions (which run first, every time)."""
    budget = ci_examples * SCALE

    def wrap(test: F) -> F:
        tally = TALLIES.setdefault(test.__name__, Tally(target, test.__name__, budget))
        inner = test.hypothesis.inner_test  # type: ignore[attr-defined]

        def counted(*args: Any, **kwargs: Any) -> Any:
            now = time.perf_counter()
            tally.first = tally.first or now
            tally.tried += 1
            try:
                return inner(*args, **kwargs)
            except Exception as exc:
                # Hypothesis's own signals (an input it gave up on) are not failures.
                tally.failed += not isinstance(exc, HypothesisException)
                raise
            finally:
                tally.last = time.perf_counter()

        test.hypothesis.inner_test = counted  # type: ignore[attr-defined]
        configured = settings(settings.get_profile(f"t2v-{PROFILE}"), max_examples=budget)(test)
        return seed(SEED)(configured)  # type: ignore[no-any-return]

    return wrap


def classified(name: str, kind: str) -> None:
    """Count what one input of test ``name`` came out as (shown under the table)."""
    KINDS[name][kind] += 1
