"""The ``t2v`` command line where no service is needed: bad input, help, pass-through."""

from __future__ import annotations

import json
import sys
import types
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from click.testing import CliRunner

import producer.plugins as plugins_module
from producer.cli import cli

# Point at closed ports: these tests must fail before any service is touched.
ENV = {
    "T2V_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none",
    "T2V_BROKER_URL": "redis://127.0.0.1:1/0",
}


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
    path.write_text(
        '{"prompt": "ok"}\n\n{"prompt": "b", "width": 7}\nnot json\n'
        '# a comment\n{"prompt": "c", "key": "sk-secret"}\n'
    )
    code, out, _ = run("batch", str(path), "--json")
    assert code == 2
    data = json.loads(out)
    assert "nothing enqueued" in data["error"]
    assert [(e["line"], e["field"]) for e in data["errors"]] == [
        (3, "width"),
        (4, None),
        (6, "key"),
    ]
    assert "sk-secret" not in out


def test_passthrough_commands_hand_their_arguments_over(monkeypatch: pytest.MonkeyPatch) -> None:
    # Commands come from entry points (group t2v.commands); here, fake ones in a fake module.
    calls: list[tuple[str, list[str]]] = []
    plugin = types.ModuleType("fake_t2v_plugin")
    plugin.sim = lambda argv: calls.append(("simulator", argv)) or 0  # type: ignore[attr-defined]
    plugin.up = lambda argv: calls.append(("up", argv)) or 0  # type: ignore[attr-defined]
    plugin.demo = lambda argv: calls.append(("demo", argv)) or 4  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_t2v_plugin", plugin)
    entries = {
        name: EntryPoint(name, f"fake_t2v_plugin:{attr}", "t2v.commands")
        for name, attr in (("simulator", "sim"), ("up", "up"), ("demo", "demo"))
    }
    monkeypatch.setattr(plugins_module, "_plugins", lambda: entries)
    assert run("simulator", "--port", "9", "--help")[0] == 0
    assert run("up", "--no-flower")[0] == 0
    assert run("demo", "a cat", "--timeout", "5")[0] == 4
    assert calls == [
        ("simulator", ["--port", "9", "--help"]),
        ("up", ["--no-flower"]),
        ("demo", ["a cat", "--timeout", "5"]),
    ]


def test_a_missing_extra_exits_2_with_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "simulator", None)  # makes `import simulator` fail
    code, _, err = run("simulator")
    assert code == 2
    assert "t2v-queue[simulator]" in err
    monkeypatch.setattr(plugins_module, "_plugins", dict)  # not registered at all
    code, _, err = run("up", "--no-flower")
    assert code == 2
    assert "t2v-queue[worker]" in err


def test_batch_keys_a_line_by_its_id_else_by_its_canonical_json(tmp_path: Path) -> None:
    import hashlib

    from producer.batch import read_batch

    path = tmp_path / "jobs.jsonl"
    path.write_text(
        '{"prompt": "a", "num_frames": 8}\n'
        '{"id": "order-7", "prompt": "b"}\n'
        '{"num_frames":8,"prompt":"a"}\n'  # the same object, written differently
        '{"prompt": "c"}\n'
    )
    entries = read_batch(path)
    canonical = json.dumps({"prompt": "a", "num_frames": 8}, sort_keys=True, separators=(",", ":"))
    digest = "batch:" + hashlib.sha256(canonical.encode()).hexdigest()
    assert [(e.line, e.key, e.from_id) for e in entries] == [
        (1, digest, False),
        (2, "order-7", True),
        (3, digest + ":2", False),
        (4, "batch:" + hashlib.sha256(b'{"prompt":"c"}').hexdigest(), False),
    ]
    assert entries[1].request.prompt == "b"  # `id` is not a request field: taken out
    # The file's name is not part of a key; --no-dedupe keys nothing.
    other = tmp_path / "elsewhere.jsonl"
    other.write_text(path.read_text())
    assert [e.key for e in read_batch(other)] == [e.key for e in entries]
    assert [e.key for e in read_batch(path, dedupe=False)] == [None] * 4


def test_batch_ids_must_be_strings_and_one_id_one_request(tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text(
        '{"id": 7, "prompt": "a"}\n{"id": " ", "prompt": "b"}\n'
        f'{{"id": "{"x" * 256}", "prompt": "c"}}\n'
        '{"id": "d", "prompt": "d"}\n{"id": "d", "prompt": "d"}\n'
        '{"id": "d", "prompt": "other"}\n{"id": null, "prompt": "e", "fps": 99}\n'
    )
    code, out, _ = run("batch", str(path), "--json")
    assert code == 2
    data = json.loads(out)
    assert [(e["line"], e["field"]) for e in data["errors"]] == [
        (1, "id"),
        (2, "id"),
        (3, "id"),
        (6, "id"),
        (7, "id"),
        (7, "fps"),
    ]
    assert "line 6: id='d': also the id of line 4, with a different request" in data["error"]
    assert data["errors"][2]["reason"] == "must be at most 255 characters"


def test_batch_help_tells_how_lines_are_keyed() -> None:
    code, out, _ = run("batch", "--help")
    assert code == 0
    text = " ".join(out.split())
    for words in (
        'its "id" field',
        '"batch:" + the sha256',
        "enqueues only the lines not",
        "counts new and already there",
        "--no-dedupe makes every line a new job",
    ):
        assert words in text, words
