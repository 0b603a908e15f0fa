"""The ``t2v`` command line where no service is needed: bad input, help, pass-through."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from producer.cli import cli

# Point at closed ports: these tests must fail before any service is touched.
ENV = {"T2V_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none",
       "T2V_BROKER_URL": "redis://127.0.0.1:1/0"}


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=ENV)
    return result.exit_code, result.stdout, result.stderr


def test_help_documents_the_exit_codes() -> None:
    code, out, _ = run("--help")
    assert code == 0
    for line in ("0  succeeded", "1  the job failed", "2  bad usage", "3  timed out"):
        assert line in out
    code, out, _ = run("submit", "--help")
    assert code == 0 and "3  timed out" in out


def test_bad_input_exits_2_naming_the_field() -> None:
    code, _, err = run("submit", "a cat", "--width", "1024", "--frames", "30")
    assert code == 2
    assert "width=1024: must be at most 512" in err and "num_frames=30" in err


def test_bad_input_with_json_is_machine_readable() -> None:
    code, out, _ = run("submit", "  ", "--json")
    assert code == 2
    data = json.loads(out)
    assert data["exit_code"] == 2
    assert data["errors"][0]["field"] == "prompt"


def test_usage_errors_exit_2() -> None:
    assert run("submit")[0] == 2
    assert run("list", "--status", "nope")[0] == 2
    assert run("list", "--since", "yesterday")[0] == 2


def test_an_invalid_batch_file_names_each_bad_line_and_enqueues_nothing(tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"prompt": "ok"}\n\n{"prompt": "b", "width": 7}\nnot json\n'
                    '# a comment\n{"prompt": "c", "key": "sk-secret"}\n')
    code, out, _ = run("batch", str(path), "--json")
    assert code == 2
    data = json.loads(out)
    assert "nothing enqueued" in data["error"]
    assert [(e["line"], e["field"]) for e in data["errors"]] == [
        (3, "width"), (4, None), (6, "key")]
    assert "sk-secret" not in out


def test_passthrough_commands_hand_their_arguments_over(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, list[str]]] = []
    sim = types.ModuleType("simulator")
    sim.main = lambda argv: calls.append(("simulator", argv)) or 0  # type: ignore[attr-defined]
    stack = types.ModuleType("worker.stack")
    stack.up_main = lambda argv: calls.append(("up", argv)) or 0  # type: ignore[attr-defined]
    stack.demo_main = lambda argv: calls.append(("demo", argv)) or 4  # type: ignore[attr-defined]
    worker = types.ModuleType("worker")
    worker.stack = stack  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "simulator", sim)
    monkeypatch.setitem(sys.modules, "worker", worker)
    monkeypatch.setitem(sys.modules, "worker.stack", stack)
    assert run("simulator", "--port", "9", "--help")[0] == 0
    assert run("up", "--no-flower")[0] == 0
    assert run("demo", "a cat", "--timeout", "5")[0] == 4
    assert calls == [("simulator", ["--port", "9", "--help"]), ("up", ["--no-flower"]),
                     ("demo", ["a cat", "--timeout", "5"])]


def test_a_missing_extra_exits_2_with_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "simulator", None)  # makes `import simulator` fail
    code, _, err = run("simulator")
    assert code == 2
    assert "t2v-queue[simulator]" in err
