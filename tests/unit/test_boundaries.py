"""Rules of the design checked on the source itself: no task sleeps, and the simulator
shares no code with the client it tests."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Everything a Celery task runs on a worker.
TASK_MODULES = ["tasks", "steps", "reconcile", "limiter", "modelslab", "download", "storage",
                "probe", "policy", "netguard", "webhook", "celery_app"]


def _sleep_calls(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "sleep":
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("module", TASK_MODULES)
def test_no_task_code_sleeps(module: str) -> None:
    assert _sleep_calls(ROOT / "worker" / f"{module}.py") == []


def test_the_checker_finds_a_sleep(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import time\n\ndef poll():\n    time.sleep(5)\n")
    assert _sleep_calls(bad) == [4]


def test_simulator_imports_nothing_from_producer_or_worker() -> None:
    offenders = []
    for path in sorted((ROOT / "simulator").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names
                          if n.split(".")[0] in ("producer", "worker")]
    assert offenders == []
