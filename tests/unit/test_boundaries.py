"""Rules of the design checked on the source itself: no task sleeps, the simulator
shares no code with the client it tests, no module over 400 lines."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Everything a Celery task runs on a worker.
TASK_MODULES = [
    "tasks",
    "steps/runtime",
    "steps/submit",
    "steps/admit",
    "steps/poll",
    "steps/download",
    "steps/transitions",
    "steps/slots",
    "reconcile",
    "limiter",
    "limiter_scripts",
    "modelslab/__init__",
    "modelslab/client",
    "modelslab/answers",
    "modelslab/transport",
    "transfer",
    "pinning",
    "storage/__init__",
    "storage/keys",
    "storage/streams",
    "storage/local",
    "storage/s3",
    "probe",
    "policy",
    "netguard",
    "webhook",
    "celery_app",
]
# Packages whose every module a task runs: each must be listed above.
TASK_PACKAGES = ["steps", "modelslab", "storage"]


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


@pytest.mark.parametrize("package", TASK_PACKAGES)
def test_every_module_of_a_task_package_is_checked_for_sleeps(package: str) -> None:
    modules = {f"{package}/{p.stem}" for p in (ROOT / "worker" / package).glob("*.py")}
    assert modules - {"steps/__init__"} <= set(TASK_MODULES)


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
            offenders += [
                f"{path.name}: {n}" for n in names if n.split(".")[0] in ("producer", "worker")
            ]
    assert offenders == []


def _imports(package: str) -> list[tuple[str, str]]:
    """(file, imported module) for every import in ``package``'s source."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found += [(path.name, a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.append((path.name, node.module))
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("t2v_core", ("producer", "worker", "simulator", "boto3", "requests")),
        ("producer", ("worker", "simulator", "boto3", "requests")),
    ],
)
def test_the_shared_core_and_the_client_import_no_heavier_side(
    package: str, forbidden: tuple[str, ...]
) -> None:
    offenders = [
        f"{name}: {module}"
        for name, module in _imports(package)
        if module.split(".")[0] in forbidden
    ]
    assert offenders == []


MODULE_PATH = re.compile(r"^(worker|simulator)(\.\w+)+(:\w+)?$|^(worker|simulator):\w+$")


def _module_strings(package: str) -> list[str]:
    """String constants in ``package`` that name a module of the worker or the simulator
    (``"worker.devstack.stack"``, ``"simulator:main"``): an import by string."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and MODULE_PATH.match(node.value)
            ):
                found.append(f"{path.name}:{node.lineno}: {node.value!r}")
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in ("import_module", "__import__"):
                    found.append(f"{path.name}:{node.lineno}: {name}(...)")
    return found


@pytest.mark.parametrize("package", ["t2v_core", "producer"])
def test_the_client_names_no_worker_or_simulator_module_by_string(package: str) -> None:
    # `t2v up` and friends come from entry points the worker and simulator register
    # (pyproject.toml), not from importlib strings in the client.
    assert _module_strings(package) == []


def test_the_string_check_finds_an_import_by_string(tmp_path: Path) -> None:
    assert MODULE_PATH.match("worker.devstack.stack") and MODULE_PATH.match("simulator:main")
    assert not MODULE_PATH.match("worker") and not MODULE_PATH.match("t2v-queue[worker]")


@pytest.mark.parametrize(
    ("path", "forbidden"),
    [
        # The answer normaliser is pure: the HTTP client in modelslab/client.py does the talking.
        ("worker/modelslab/answers.py", ("requests", "urllib3", "httpx", "http", "aiohttp")),
    ],
)
def test_a_pure_module_imports_no_io_library(path: str, forbidden: tuple[str, ...]) -> None:
    tree = ast.parse((ROOT / path).read_text())
    modules = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    modules += [
        n.module
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module and not n.level
    ]
    assert [m for m in modules if m.split(".")[0] in forbidden] == []


def test_only_the_s3_backend_imports_boto3() -> None:
    offenders = [
        f"{name}: {module}"
        for name, module in _imports("worker")
        if module.split(".")[0] in ("boto3", "botocore", "s3transfer")
    ]
    assert offenders and {o.split(":")[0] for o in offenders} == {"s3.py"}


def test_redis_key_and_queue_names_are_spelled_only_in_names_py() -> None:
    # One module owns every name on the wire: a "t2v:..." key or a "t2v.<step>" queue
    # written as a literal anywhere else is a second definition waiting to drift.
    wire = ("t2v:", "t2v.submit", "t2v.poll", "t2v.download", "t2v.maintenance", "t2v.reconcile")
    offenders = []
    for package in ("t2v_core", "producer", "worker", "web"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "names.py" or "migrations" in path.parts:
                continue
            tree = ast.parse(path.read_text())
            # Docstrings and logger names are prose, not names on the wire.
            skip = {
                id(n.body[0].value)
                for n in ast.walk(tree)
                if isinstance(n, ast.Module | ast.FunctionDef | ast.ClassDef)
                and n.body
                and isinstance(n.body[0], ast.Expr)
            }
            skip |= {
                id(n.args[0])
                for n in ast.walk(tree)
                if isinstance(n, ast.Call)
                and isinstance(n.func, ast.Attribute)
                and n.func.attr == "getLogger"
                and n.args
            }
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and id(node) not in skip
                    and any(node.value.startswith(w) for w in wire)
                ):
                    offenders.append(f"{package}/{path.name}:{node.lineno}: {node.value!r}")
    assert offenders == []


MAX_MODULE_LINES = 400


def _long_modules(root: Path, packages: tuple[str, ...], limit: int) -> list[str]:
    """``package/path.py: N lines`` for every module of ``packages`` over ``limit`` lines."""
    found = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            lines = len(path.read_text().splitlines())
            if lines > limit:
                found.append(f"{path.relative_to(root).as_posix()}: {lines} lines")
    return found


def test_every_module_is_under_400_lines() -> None:
    # A newcomer reads a module in one sitting: one concern a file, each under 400 lines.
    packages = ("t2v_core", "producer", "worker", "simulator", "web")
    long = _long_modules(ROOT, packages, MAX_MODULE_LINES)
    assert long == [], f"over {MAX_MODULE_LINES} lines (split by concern): {long}"


def test_the_line_counter_finds_a_long_module(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "short.py").write_text("x = 1\n" * 400)
    (tmp_path / "pkg" / "sub" / "long.py").write_text("x = 1\n" * 401)
    assert _long_modules(tmp_path, ("pkg",), 400) == ["pkg/sub/long.py: 401 lines"]


# `t2v web` reads the table (producer, t2v_core) and serves media (worker.storage only):
# no worker step, settings or client, so it can never hold the ModelsLab API key.
WEB_MAY_IMPORT_FROM_WORKER = ("worker.storage",)


def test_web_imports_only_the_client_the_core_and_storage() -> None:
    offenders = [
        f"{name}: {module}"
        for name, module in _imports("web")
        if module.split(".")[0] == "simulator"
        or (module.split(".")[0] == "worker" and not module.startswith(WEB_MAY_IMPORT_FROM_WORKER))
    ]
    assert offenders == []
    assert ("media.py", "worker.storage") in _imports("web")  # the check looks at something


def test_web_never_names_the_api_key() -> None:
    # The key lives in worker.settings.WorkerSettings only; the web server reads the shared
    # Settings (which have none) and the saved request (which never carries it).
    names = ("modelslab_api_key", "WorkerSettings", "get_worker_settings")
    offenders = [
        f"{path.name}: {name}"
        for path in sorted((ROOT / "web").rglob("*.py"))
        for name in names
        if name in path.read_text()
    ]
    assert offenders == []


def test_web_templates_are_autoescaped() -> None:
    from web.views import environment

    env = environment()
    assert env.from_string("{{ x }}").render(x="<script>") == "&lt;script&gt;"
    assert sorted(env.list_templates()) == [
        "base.html",
        "job.html",
        "list.html",
        "login.html",
        "missing.html",
    ]
    assert "| safe" not in "".join(p.read_text() for p in (ROOT / "web" / "templates").iterdir())
