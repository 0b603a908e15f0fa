"""The deterministic model test of the state machine (see ``harness`` and ``invariants``).

``test_model_schedules`` runs ``T2V_MODEL_SCHEDULES`` schedules (default below) from base
seed ``T2V_MODEL_SEED`` (default: a fresh random one, printed) in two processes, and
fails with the seed, checks and trace of each failing schedule. Replay one exactly:

    T2V_MODEL_SEED=<seed> T2V_MODEL_SCHEDULES=1 .venv/bin/pytest tests/model -q

``T2V_MODEL_SKIP=check,...`` counts those checks' failures instead of failing on them
(while one finding is being fixed, the others still run).

The ``test_the_model_catches_*`` tests put one bug into the real code (monkeypatched for
the test only) and show the model reports it, with the check that should, on a seed where
the unchanged code passes that check.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import tests.model.harness as harness
from t2v_core.errors import TransientError
from t2v_core.states import JobStatus
from tests.model.harness import CHECKS, Bench, run_schedule
from tests.model.runner import run_many
from worker import reconcile as reconcile_module
from worker import steps
from worker.steps import download as download_module
from worker.steps import poll as poll_module
from worker.steps import slots as slots_module
from worker.steps import submit as submit_module
from worker.steps import transitions as transitions_module

DEFAULT_SCHEDULES = 2500  # ~2 min on 2 cores (~20-23 schedules/s); README.md here
SCHEDULES = int(os.environ.get("T2V_MODEL_SCHEDULES", DEFAULT_SCHEDULES))


def _skip_from_env() -> frozenset[str]:
    names = {n.strip() for n in os.environ.get("T2V_MODEL_SKIP", "").split(",") if n.strip()}
    unknown = names - set(CHECKS)
    if unknown:
        raise pytest.UsageError(
            f"T2V_MODEL_SKIP: unknown check(s) {sorted(unknown)}; known: {', '.join(CHECKS)}"
        )
    return frozenset(names)


@pytest.mark.slow
@pytest.mark.timeout(max(300, 60 + SCHEDULES // 4))
def test_model_schedules(capsys: pytest.CaptureFixture[str]) -> None:
    count = SCHEDULES
    seed_text = os.environ.get("T2V_MODEL_SEED", "")
    base = int(seed_text) if seed_text else random.SystemRandom().randrange(1, 10**9)
    workers = max(1, min(2, os.cpu_count() or 1, count))
    with capsys.disabled():
        print(
            f"\nmodel: base seed {base}, {count} schedules "
            f"(replay: T2V_MODEL_SEED={base} T2V_MODEL_SCHEDULES={count})",
            flush=True,
        )
    summary = run_many(base, count, workers=workers, skip=_skip_from_env(), verbose=count <= 5)
    with capsys.disabled():
        skipped = {k: v for k, v in summary.stats.items() if k.startswith("skipped_")}
        print(
            f"model: {count} schedules in {summary.seconds:.1f}s, {len(summary.failures)} "
            f"failing{'; ' + str(skipped) if skipped else ''}; exceptions raised by steps: "
            f"{dict(summary.exceptions.most_common(6))}",
            flush=True,
        )
    assert not summary.failures, summary.report()


# -- the model can fail ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Bench:
    return Bench(Path(tmp_path_factory.mktemp("model")))


Patch = tuple[Any, str, Any]  # (object, attribute, the buggy value)


@contextmanager
def _patched(patches: list[Patch]) -> Iterator[None]:
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    for obj, name, value in patches:
        setattr(obj, name, value)
    try:
        yield
    finally:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)


def _caught(bench: Bench, check: str, patches: list[Patch], seeds: range) -> int:
    """The first seed of ``seeds`` on which the model reports ``check`` with the bug in, and
    the unchanged code does not."""
    for seed in seeds:
        with _patched(patches):
            with_bug = run_schedule(seed, bench)
        if not any(v.startswith(f"[{check}]") for v in with_bug.violations):
            continue
        clean = run_schedule(seed, bench)
        if not any(v.startswith(f"[{check}]") for v in clean.violations):
            return seed
    raise AssertionError(
        f"the model did not catch the bug with check {check!r} in seeds "
        f"{seeds.start}..{seeds.stop - 1}"
    )


def test_the_model_catches_a_slot_released_one_write_too_early(bench: Bench) -> None:
    original = submit_module.after_submit

    def early(rt: steps.Runtime, rec: Any, result: Any) -> None:
        slots_module.release_slot(rt, rec.id)  # the bug: before the move to `processing`
        original(rt, rec, result)

    # The window is one limiter write wide (a submit's bookkeeping is one round trip):
    # seed 277 is the first from 160 on to land a crash or an interleaving in it.
    _caught(
        bench, "rendering_without_slot", [(submit_module, "after_submit", early)], range(200, 300)
    )


def test_the_model_catches_a_submit_that_ignores_a_known_provider_id(bench: Bench) -> None:
    original = steps.submit_step

    def careless(rt: steps.Runtime, job_id: str) -> None:
        rec = rt.store.get(job_id)
        if rec is not None and rec.status is JobStatus.PROCESSING:
            # The bug: a late or duplicate submit message for a job the provider already
            # took is sent again instead of being dropped.
            rt.client.submit({**rec.request, "model_id": rec.model_effective, "track_id": rec.id})
            return
        original(rt, job_id)

    _caught(bench, "submit_with_id", [(steps, "submit_step", careless)], range(200, 400))


def test_the_model_catches_a_park_replaced_by_a_fail(bench: Bench) -> None:
    def park_as_fail(rt: steps.Runtime, rec: Any, problem: Any) -> bool:
        return transitions_module.fail(rt, rec, problem)

    _caught(
        bench,
        "output_thrown_away",
        [
            (module, "park", park_as_fail)
            for module in (poll_module, download_module, reconcile_module)
        ],
        range(300, 500),
    )


def test_the_model_catches_a_blind_resubmit_of_a_lost_answer(bench: Bench) -> None:
    def at_once(rt: steps.Runtime, rec: Any, why: str) -> None:
        # The bug: an answer that was lost is treated as "not taken" and sent again now.
        submit_module.back_to_queue(rt, rec, TransientError(why), counts=True)

    _caught(bench, "not_recorded", [(submit_module, "outcome_unknown", at_once)], range(400, 700))


def test_the_model_catches_a_slot_limit_off_by_one_in_lua(bench: Bench) -> None:
    script = harness.limiter_module._ACQUIRE
    assert "for _, j in ipairs(first_k(free_slots(limit))) do" in script
    wrong = script.replace(
        "for _, j in ipairs(first_k(free_slots(limit))) do",
        "for _, j in ipairs(first_k(free_slots(limit) + 1)) do",
    )
    _caught(
        bench, "slots_over_limit", [(harness.limiter_module, "_ACQUIRE", wrong)], range(500, 700)
    )


def test_the_model_catches_a_freed_slot_that_wakes_nobody(bench: Bench) -> None:
    original = harness.AccountLimiter.release

    def release(self: harness.AccountLimiter, job_id: str | None) -> list[str]:
        original(self, job_id)
        return []  # the bug: the Lua script's list of who fits now is dropped

    _caught(bench, "slot_idle", [(harness.AccountLimiter, "release", release)], range(800, 1000))


def test_the_model_catches_an_admission_that_forgets_who_took_a_slot(bench: Bench) -> None:
    from worker.steps import admit as admit_module

    def forgetful(rt: steps.Runtime, job_ids: Any) -> None:
        schedule = rt.schedule
        # The bug: the jobs of a batch that took a slot are never sent on as t2v.submit.
        rt.schedule = lambda task, job_id, countdown: None  # type: ignore[method-assign]
        try:
            original(rt, job_ids)
        finally:
            rt.schedule = schedule  # type: ignore[method-assign]

    original = admit_module.admit_step
    _caught(bench, "slot_idle", [(steps, "admit_step", forgetful)], range(900, 1100))


def test_the_model_catches_a_job_that_reconcile_never_redrives(bench: Bench) -> None:
    original = reconcile_module._redrive

    def not_queued(rt: steps.Runtime, rec: Any, report: Any) -> None:
        if rec.status is JobStatus.QUEUED:
            return  # the bug: a queued job whose message was lost is never sent again
        original(rt, rec, report)

    _caught(bench, "lost", [(reconcile_module, "_redrive", not_queued)], range(600, 800))


def test_the_model_catches_the_api_key_in_an_error_message(bench: Bench) -> None:
    original = harness.FakeProvider.fetch

    def leaky(self: harness.FakeProvider, provider_id: str) -> Any:
        if self.world.faults_on and self.rng.random() < 0.3:
            # The bug: an error echoed from the server is not scrubbed of the key.
            raise TransientError(f"HTTP 502: {{'key': '{self.world.api_key}'}}")
        return original(self, provider_id)

    _caught(bench, "secret", [(harness.FakeProvider, "fetch", leaky)], range(700, 760))


def test_a_seed_replays_exactly(bench: Bench) -> None:
    for seed in (7, 8, 9):
        first, second = (
            run_schedule(seed, bench, verbose=True),
            run_schedule(seed, bench, verbose=True),
        )
        assert first.trace == second.trace
        assert first.violations == second.violations
