"""docker-compose.yml and ops/Dockerfile, checked against the code they start (no Docker).

Docker cannot run here, so a renamed setting, queue, flag or extra would only show up when
someone runs ``docker compose up``. Each check below is a function returning a list of
problems; the tests assert the real files have none, and the mutation tests prove each check
rejects a broken copy, so none of them can pass vacuously.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from t2v_core import names as states
from worker.settings import WorkerSettings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "ops" / "Dockerfile"
PYPROJECT = REPO / "pyproject.toml"
DEV_LOCK = REPO / "requirements.lock"

API_KEY_VAR = "T2V_MODELSLAB_API_KEY"
ALL_QUEUES = {getattr(states, name) for name in dir(states) if name.startswith("QUEUE_")}
# T2V_METRICS_PORT / T2V_WORKER_METRICS_PORT: the metrics ports of issue 12, added to
# WorkerSettings by the metrics branch; accepted by name until it is merged (then drop them).
SETTINGS_VARS = {f"T2V_{name.upper()}" for name in WorkerSettings.model_fields}
# The simulator's flags as the brief fixed them, used only if its parser is not importable.
SIMULATOR_FLAGS_FALLBACK = {
    "--host",
    "--port",
    "--keys",
    "--seed",
    "--render-mean",
    "--render-spread",
    "--eta-noise",
    "--instant-share",
    "--queue-limit",
    "--media-dir",
    "--public-url",
    "--faults",
}

# -- compose interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, $VAR, $$ ----
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _expand(text: str, env: Mapping[str, str], seen: set[str]) -> str:
    """Compose's interpolation of ``text``; records every variable named in ``seen``."""
    out, i = [], 0
    while i < len(text):
        if not text.startswith("$", i):
            out.append(text[i])
            i += 1
            continue
        if text.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        if text.startswith("${", i):
            depth, j = 1, i + 2
            while j < len(text) and depth:  # find the matching brace (defaults may nest)
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            body = text[i + 2 : j - 1]
            m = _NAME.match(body)
            assert m, f"bad interpolation {text[i:j]!r}"
            name, rest = m.group(0), body[m.end() :]
            seen.add(name)
            op = next((o for o in (":-", ":?", "-", "?") if rest.startswith(o)), "")
            arg = rest[len(op) :]
            value = env.get(name)
            if op.startswith(":") and not value:
                value = None
            if value is not None:
                out.append(value)
            elif op in (":-", "-"):
                out.append(_expand(arg, env, seen))
            elif op in (":?", "?"):
                _expand(arg, env, seen)
                out.append(f"<required:{name}>")
            i = j
            continue
        m = _NAME.match(text, i + 1)
        if m:
            seen.add(m.group(0))
            out.append(env.get(m.group(0), ""))
            i = m.end()
        else:
            out.append("$")
            i += 1
    return "".join(out)


def interpolate(text: str, env: Mapping[str, str] | None = None) -> str:
    """What compose makes of ``text`` with ``env`` (default: nothing set, defaults apply)."""
    return _expand(text, env or {}, set())


def referenced_vars(node: Any) -> set[str]:
    """Every variable a compose value interpolates, nested defaults included."""
    seen: set[str] = set()
    if isinstance(node, str):
        _expand(node, {}, seen)
    elif isinstance(node, Mapping):
        for key, value in node.items():
            seen |= referenced_vars(key) | referenced_vars(value)
    elif isinstance(node, list):
        for value in node:
            seen |= referenced_vars(value)
    return seen


# -- reading services --------------------------------------------------------------------
def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def services(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose.get("services") or {})


def argv_of(service: Mapping[str, Any]) -> list[str]:
    command = service.get("command") or []
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    return [interpolate(a) for a in argv]


def env_of(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


@dataclass
class CeleryCall:
    app: str | None
    sub: str | None
    args: list[str] = field(default_factory=list)

    def option(self, short: str, long: str) -> str | None:
        for i, arg in enumerate(self.args):
            if arg in (short, long) and i + 1 < len(self.args):
                return self.args[i + 1]
            if arg.startswith(long + "="):
                return arg.split("=", 1)[1]
            if arg.startswith(short) and len(arg) > len(short) and not arg.startswith("--"):
                return arg[len(short) :]
        return None

    @property
    def queues(self) -> set[str]:
        raw = self.option("-Q", "--queues")
        return {q.strip() for q in raw.split(",") if q.strip()} if raw else set()

    @property
    def runs_beat(self) -> bool:
        return self.sub == "beat" or (
            self.sub == "worker" and any(a in ("-B", "--beat") for a in self.args)
        )

    @property
    def runs_tasks(self) -> bool:
        return self.sub == "worker"


def celery_call(argv: list[str]) -> CeleryCall | None:
    if argv[:1] == ["celery"]:
        rest = argv[1:]
    elif argv[:3] in (["python", "-m", "celery"], ["python3", "-m", "celery"]):
        rest = argv[3:]
    else:
        return None
    app, i = None, 0
    while i < len(rest) and rest[i].startswith("-"):
        arg = rest[i]
        if arg in ("-A", "--app"):
            app, i = rest[i + 1] if i + 1 < len(rest) else None, i + 2
            continue
        if arg.startswith("--app="):
            app = arg.split("=", 1)[1]
        elif arg.startswith("-A"):
            app = arg[2:]
        elif arg in ("-b", "--broker", "--workdir", "--config", "--loader", "--result-backend"):
            i += 1
        i += 1
    sub = rest[i] if i < len(rest) else None
    return CeleryCall(app=app, sub=sub, args=rest[i + 1 :])


def celery_services(compose: Mapping[str, Any]) -> Iterator[tuple[str, CeleryCall]]:
    for name, svc in services(compose).items():
        call = celery_call(argv_of(svc))
        if call is not None:
            yield name, call


# -- the checks: each returns its problems -------------------------------------------------
def check_settings_vars(compose: Mapping[str, Any]) -> list[str]:
    problems = []
    for name, svc in services(compose).items():
        used = {k for k in env_of(svc) if k.startswith("T2V_")}
        used |= {v for v in referenced_vars(svc) if v.startswith("T2V_")}
        problems += [
            f"{name}: {v} is not a WorkerSettings field" for v in sorted(used - SETTINGS_VARS)
        ]
    return problems


def check_celery_apps(compose: Mapping[str, Any]) -> list[str]:
    import worker

    problems = [] if hasattr(worker, "app") else ["the worker module exposes no `app`"]
    for name, call in celery_services(compose):
        if call.app != "worker":
            problems.append(f"{name}: celery -A {call.app!r}, expected 'worker'")
    return problems


def check_queues(compose: Mapping[str, Any]) -> list[str]:
    problems, consumed = [], set()
    for name, call in celery_services(compose):
        if not call.runs_tasks:
            continue
        if not call.queues:
            problems.append(f"{name}: a worker without -Q takes Celery's default queue only")
        problems += [f"{name}: unknown queue {q!r}" for q in sorted(call.queues - ALL_QUEUES)]
        consumed |= call.queues
    problems += [f"no service consumes {q}" for q in sorted(ALL_QUEUES - consumed)]
    return problems


def check_single_beat(compose: Mapping[str, Any]) -> list[str]:
    beats = [name for name, call in celery_services(compose) if call.runs_beat]
    if len(beats) != 1:
        return [f"expected exactly one beat, found {beats}"]
    svc = services(compose)[beats[0]]
    replicas = (svc.get("deploy") or {}).get("replicas", 1)
    return [] if replicas == 1 else [f"{beats[0]}: beat with {replicas} replicas"]


def check_api_key_scope(compose: Mapping[str, Any]) -> list[str]:
    task_runners = {name for name, call in celery_services(compose) if call.runs_tasks}
    problems = []
    for name, svc in services(compose).items():
        holds = API_KEY_VAR in env_of(svc) or API_KEY_VAR in referenced_vars(svc)
        if holds and name not in task_runners:
            problems.append(f"{name}: gets {API_KEY_VAR} but runs no tasks")
    problems += [
        f"{name}: runs tasks without {API_KEY_VAR}"
        for name in sorted(task_runners)
        if API_KEY_VAR not in env_of(services(compose)[name])
    ]
    return problems


def check_flower(compose: Mapping[str, Any]) -> list[str]:
    flowers = [(name, call) for name, call in celery_services(compose) if call.sub == "flower"]
    if not flowers:
        return ["no Flower service"]
    problems = []
    for name, call in flowers:
        auth = call.option("--basic-auth", "--basic-auth") or call.option("--auth", "--auth")
        # Flower also reads its options from FLOWER_* variables (the password off the argv)
        auth = auth or interpolate(env_of(services(compose)[name]).get("FLOWER_BASIC_AUTH", ""))
        user, _, password = (auth or "").partition(":")
        if not (user and password):
            problems.append(f"{name}: Flower without --basic-auth user:password")
        for port in services(compose)[name].get("ports") or []:
            spec = str(port)
            if isinstance(port, Mapping):
                if port.get("host_ip") != "127.0.0.1":
                    problems.append(f"{name}: port {port} not bound to 127.0.0.1")
            elif not spec.startswith("127.0.0.1:"):
                problems.append(f"{name}: port {spec!r} published beyond 127.0.0.1")
    return problems


def simulator_flags() -> set[str]:
    try:
        from simulator import config
    except ImportError:
        return SIMULATOR_FLAGS_FALLBACK
    return {f"--{flag}" for flag in config._FLAGS}


def check_simulator(compose: Mapping[str, Any]) -> list[str]:
    problems, known = [], simulator_flags()
    for name, svc in services(compose).items():
        argv = argv_of(svc)
        if argv[1:3] != ["-m", "simulator"]:
            continue
        flags = {a.split("=", 1)[0] for a in argv[3:] if a.startswith("--")}
        problems += [f"{name}: python -m simulator has no {f}" for f in sorted(flags - known)]
        try:  # the real parser also checks the values (types, ranges)
            from simulator.config import parse_config
        except ImportError:
            continue
        try:
            parse_config(argv[3:], environ={})
        except SystemExit:
            problems.append(f"{name}: the simulator rejects {argv[3:]}")
    return problems


def check_celery_flags(compose: Mapping[str, Any]) -> list[str]:
    """Every option of a `celery` subcommand exists (Flower's come from tornado options)."""
    from celery.bin.celery import celery as celery_cli

    problems = []
    for name, call in celery_services(compose):
        cmd = celery_cli.commands.get(call.sub or "")
        if cmd is None:
            problems.append(f"{name}: no `celery {call.sub}` command")
            continue
        if call.sub == "flower":
            from flower.options import options

            known = {f"--{opt}" for opt in options._options}
        else:
            known = {o for p in cmd.params for o in (*p.opts, *getattr(p, "secondary_opts", ()))}
        for arg in call.args:
            flag = arg.split("=", 1)[0]
            is_flag = flag.startswith("--") or re.fullmatch(r"-[A-Za-z]", flag)
            if is_flag and flag not in known:
                problems.append(f"{name}: celery {call.sub} has no {flag}")
    return problems


def check_wiring(compose: Mapping[str, Any]) -> list[str]:
    """Services point at each other by names that exist; downloads may reach the simulator."""
    svcs = services(compose)
    problems = []
    for name, svc in svcs.items():
        env = {k: interpolate(v) for k, v in env_of(svc).items()}
        for var in (
            "T2V_BROKER_URL",
            "T2V_DATABASE_URL",
            "T2V_S3_ENDPOINT_URL",
            "T2V_MODELSLAB_BASE_URL",
        ):
            if var in env and urlparse(env[var]).hostname not in svcs:
                problems.append(f"{name}: {var} points at no service: {env[var]}")
        base = urlparse(env.get("T2V_MODELSLAB_BASE_URL", "")).hostname
        if base in svcs:
            allowed = {h.strip() for h in env.get("T2V_DOWNLOAD_ALLOWED_HOSTS", "").split(",")}
            if base not in allowed:
                problems.append(f"{name}: downloads from {base} not in T2V_DOWNLOAD_ALLOWED_HOSTS")
            sim_argv = argv_of(svcs[base])
            if "--public-url" in sim_argv:
                public = urlparse(sim_argv[sim_argv.index("--public-url") + 1]).hostname
                if public not in allowed:
                    problems.append(f"{name}: simulator links name {public}, not allowed")
        if env.get("AWS_ACCESS_KEY_ID") and "T2V_S3_ENDPOINT_URL" in env:
            s3 = svcs.get(urlparse(env["T2V_S3_ENDPOINT_URL"]).hostname or "", {})
            for volume in s3.get("volumes") or []:
                source = str(volume).split(":", 1)[0]
                if source.endswith(".json"):
                    config = json.loads((REPO / source).read_text())
                    pairs = {
                        (c["accessKey"], c["secretKey"])
                        for ident in config["identities"]
                        for c in ident["credentials"]
                    }
                    if (env["AWS_ACCESS_KEY_ID"], env.get("AWS_SECRET_ACCESS_KEY")) not in pairs:
                        problems.append(f"{name}: AWS keys are not in {source}")
    return problems


def check_dockerfile(dockerfile: str) -> list[str]:
    dockerfile = dockerfile.replace("\\\n", " ")  # join continuation lines
    pyproject = tomllib.loads(PYPROJECT.read_text())
    extras = set(pyproject["project"]["optional-dependencies"])
    problems = []
    installs = re.findall(r"pip install[^\n]*?\.\[([^\]]+)\]", dockerfile)
    if not installs:
        problems.append("the Dockerfile pip-installs no `.[extras]`")
    for group in installs:
        problems += [
            f"extra {e!r} not in pyproject" for e in group.split(",") if e.strip() not in extras
        ]
    problems += check_dockerfile_lock(
        dockerfile, [e.strip() for g in installs for e in g.split(",") if e.strip() in extras]
    )
    copied = set()
    for line in dockerfile.splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"]:
            copied |= {p.strip("./").rstrip("/") for p in parts[1:-1] if not p.startswith("--")}
    if "." in {p.split()[1] for p in dockerfile.splitlines() if p.startswith("COPY ")}:
        return problems  # COPY . copies everything (.dockerignore decides)
    includes = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    problems += [
        f"package {p} not copied" for p in (i.rstrip("*") for i in includes) if p not in copied
    ]
    for needed in ("pyproject.toml", pyproject["project"].get("readme")):
        if needed and needed not in copied:
            problems.append(f"{needed} not copied (pip install needs it)")
    if not re.search(r"^USER\s+(?!root\b|0\b)\S+", dockerfile, re.M):
        problems.append("the image runs as root")
    if re.search(r"^(ENV|ARG)\s+[^\n]*(API_KEY|SECRET|PASSWORD)", dockerfile, re.M):
        problems.append("a secret is baked into the image")
    return problems


def check_dockerfile_lock(
    dockerfile: str, extras: list[str], read: Callable[[str], str] | None = None
) -> list[str]:
    """The image installs its dependencies from a hashed lock, then the project with --no-deps.

    ``read`` returns a lock's text by its path in the repository (the real file by default).
    """
    read = read or (lambda path: (REPO / path).read_text())
    problems = []
    locks = re.findall(r"pip install\s[^\n&;]*?--require-hashes\s[^\n&;]*?-r\s+(\S+)", dockerfile)
    if not locks:
        problems.append("the Dockerfile installs no lock with `pip install --require-hashes -r`")
    project = [
        m.start() for m in re.finditer(r"pip install[^\n]*?\s'?\.(\[|'|\s|$)", dockerfile, re.M)
    ]
    for line in re.findall(r"pip install[^\n]*?\s'?\.(?:\[[^\]]*\])?'?(?:\s|$)", dockerfile):
        if "--no-deps" not in line:
            problems.append(f"the project is installed with its dependencies: {line.strip()!r}")
    copied = {
        p
        for line in dockerfile.splitlines()
        if line.startswith("COPY ")
        for p in line.split()[1:-1]
    }
    for lock in locks:
        if lock not in copied and "." not in copied:
            problems.append(f"{lock} is installed but not copied into the image")
        if project and dockerfile.find(f"-r {lock}") > min(project):
            problems.append(f"{lock} is installed after the project")
        try:
            text = read(lock)
        except FileNotFoundError:
            problems.append(f"{lock} does not exist")
            continue
        problems += [f"{lock}: {p}" for p in check_lock_covers(text, extras)]
    return problems


def _pins(lock_text: str) -> tuple[dict[str, str], list[str]]:
    """name -> version of a pip-compile --generate-hashes lock, and its unhashed pins."""
    pins: dict[str, str] = {}
    unhashed = []
    for block in re.split(r"\n(?=\S)", lock_text):
        head = block.split("\\", 1)[0].strip()
        if not head or head.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", head)
        if not m:
            unhashed.append(head)
            continue
        pins[_canonical(m.group(1))] = m.group(2)
        if "--hash=sha256:" not in block:
            unhashed.append(head)
    return pins, unhashed


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def check_lock_covers(lock_text: str, extras: list[str]) -> list[str]:
    """Every requirement of the project and of ``extras`` is pinned, hashed and in range."""
    from packaging.requirements import Requirement

    pyproject = tomllib.loads(PYPROJECT.read_text())["project"]
    pins, unhashed = _pins(lock_text)
    problems = [f"not a hashed `name==version` pin: {p!r}" for p in unhashed]
    todo = [(r, None) for r in pyproject["dependencies"]]
    todo += [(r, e) for e in extras for r in pyproject["optional-dependencies"].get(e, [])]
    seen: set[str] = set()
    while todo:
        spec, extra = todo.pop()
        req = Requirement(spec)
        if req.marker and not req.marker.evaluate({"extra": extra or ""}):
            continue
        name = _canonical(req.name)
        if name == _canonical(pyproject["name"]):  # t2v-queue[postgres,...]: its own extras
            todo += [
                (r, e)
                for e in req.extras
                if e not in seen
                for r in pyproject["optional-dependencies"][e]
            ]
            seen |= req.extras
            continue
        if name not in pins:
            problems.append(f"{req.name} ({spec}) is not pinned")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{req.name}=={pins[name]} is outside pyproject's {spec!r}")
    return problems


ALL_CHECKS: list[Callable[[Mapping[str, Any]], list[str]]] = [
    check_settings_vars,
    check_celery_apps,
    check_queues,
    check_single_beat,
    check_api_key_scope,
    check_flower,
    check_simulator,
    check_celery_flags,
    check_wiring,
]


# -- the real files -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


def test_compose_spec_shape(compose: dict[str, Any]) -> None:
    assert "version" not in compose  # obsolete in the compose spec
    assert {"redis", "postgres", "s3", "simulator", "worker", "beat", "flower"} <= set(
        services(compose)
    )
    assert "healthcheck" in services(compose)["postgres"]


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
def test_compose_matches_the_code(compose: dict[str, Any], check: Callable[..., list[str]]) -> None:
    assert check(compose) == []


def test_dockerfile_matches_pyproject() -> None:
    assert check_dockerfile(DOCKERFILE.read_text()) == []


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert {".venv", "var", ".git", ".env"} <= ignored


def test_interpolation_follows_compose_rules() -> None:
    assert interpolate("${A:-x}") == "x"
    assert interpolate("${A:-x}", {"A": ""}) == "x"
    assert interpolate("${A-x}", {"A": ""}) == ""
    assert interpolate("${A:-${B:-y}}") == "y"
    assert interpolate("$$HOME ${A}", {"A": "1"}) == "$HOME 1"
    assert interpolate("${A:?need A}") == "<required:A>"
    assert referenced_vars(["${A:-${B}}", {"k": "$C"}]) == {"A", "B", "C"}


# -- each check rejects a broken copy ---------------------------------------------------------
def _set_command(svc: str, old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def mutate(c: dict[str, Any]) -> None:
        cmd = c["services"][svc]["command"]
        c["services"][svc]["command"] = [new if a == old else a.replace(old, new) for a in cmd]

    return mutate


def _set_env(svc: str, key: str, value: str) -> Callable[[dict[str, Any]], None]:
    def mutate(c: dict[str, Any]) -> None:
        c["services"][svc]["environment"] = {**env_of(c["services"][svc]), key: value}

    return mutate


def _drop_service(svc: str) -> Callable[[dict[str, Any]], None]:
    def mutate(c: dict[str, Any]) -> None:
        del c["services"][svc]

    return mutate


def _add_beat_flag(svc: str) -> Callable[[dict[str, Any]], None]:
    def mutate(c: dict[str, Any]) -> None:
        c["services"][svc]["command"] = [*c["services"][svc]["command"], "-B"]

    return mutate


def _set_ports(svc: str, ports: list[Any]) -> Callable[[dict[str, Any]], None]:
    def mutate(c: dict[str, Any]) -> None:
        c["services"][svc]["ports"] = ports

    return mutate


MUTATIONS = {
    "unknown T2V_ variable": (
        _set_env("worker", "T2V_BROKER", "redis://redis"),
        check_settings_vars,
    ),
    "T2V_ variable in a command": (
        _set_command("worker", "${WORKER_CONCURRENCY:-4}", "${T2V_CONCURRENCY:-4}"),
        check_settings_vars,
    ),
    "wrong celery app": (_set_command("worker", "worker", "workers"), check_celery_apps),
    "wrong queue name": (_set_command("worker", "t2v.poll", "t2v.polls"), check_queues),
    "queue left unconsumed": (_drop_service("maintenance"), check_queues),
    "no beat": (_drop_service("beat"), check_single_beat),
    "two beats": (_add_beat_flag("maintenance"), check_single_beat),
    "API key given to flower": (_set_env("flower", API_KEY_VAR, "k"), check_api_key_scope),
    "API key passed to the simulator": (
        _set_env("simulator", "SIM_KEYS", "${T2V_MODELSLAB_API_KEY}"),
        check_api_key_scope,
    ),
    "worker without API key": (
        lambda c: c["services"]["worker"]["environment"].pop(API_KEY_VAR),
        check_api_key_scope,
    ),
    "flower without auth": (
        lambda c: c["services"]["flower"]["environment"].pop("FLOWER_BASIC_AUTH"),
        check_flower,
    ),
    "flower with a user but no password": (
        _set_env("flower", "FLOWER_BASIC_AUTH", "${FLOWER_USER:-admin}:"),
        check_flower,
    ),
    "flower on all interfaces": (_set_ports("flower", ["5555:5555"]), check_flower),
    "flower long-form port": (
        _set_ports("flower", [{"target": 5555, "published": 5555}]),
        check_flower,
    ),
    "unknown simulator flag": (
        _set_command("simulator", "--public-url", "--public-uri"),
        check_simulator,
    ),
    "bad simulator value": (_set_command("simulator", "8765", "port"), check_simulator),
    "unknown celery flag": (
        _set_command("worker", "--without-gossip", "--no-gossip"),
        check_celery_flags,
    ),
    "unknown flower flag": (
        _set_command("flower", "--address=0.0.0.0", "--adress=0.0.0.0"),
        check_celery_flags,
    ),
    "downloads from simulator refused": (
        _set_env("worker", "T2V_DOWNLOAD_ALLOWED_HOSTS", ""),
        check_wiring,
    ),
    "broker at no service": (
        _set_env("worker", "T2V_BROKER_URL", "redis://rediss:6379/0"),
        check_wiring,
    ),
    "S3 keys out of sync": (_set_env("worker", "AWS_SECRET_ACCESS_KEY", "other"), check_wiring),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_check_rejects_broken_compose(compose: dict[str, Any], name: str) -> None:
    mutate, check = MUTATIONS[name]
    broken = copy.deepcopy(compose)
    mutate(broken)
    assert check(broken), f"{check.__name__} accepted: {name}"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("'.[worker,postgres,simulator]'", "'.[worker,postgresql,simulator]'"),
        ("COPY simulator ./simulator\n", ""),
        ("COPY pyproject.toml README.md ./", "COPY pyproject.toml ./"),
        ("USER t2v", "USER root"),
        ("ENV PYTHONUNBUFFERED=1", "ENV T2V_MODELSLAB_API_KEY=sk-1 PYTHONUNBUFFERED=1"),
        # the lock: installed with hashes, copied, before the project, which adds nothing
        (
            "pip install --require-hashes -r requirements-image.lock",
            "pip install -r requirements-image.lock",
        ),
        ("RUN pip install --require-hashes -r requirements-image.lock\n", ""),
        ("COPY requirements-image.lock ./\n", ""),
        ("pip install --no-deps '.[", "pip install '.["),
        ("requirements-image.lock", "requirements-missing.lock"),
        # the image's lock made without an extra the Dockerfile names
        ("'.[worker,postgres,simulator]'", "'.[worker,postgres,simulator,dev]'"),
    ],
)
def test_check_rejects_broken_dockerfile(old: str, new: str) -> None:
    text = DOCKERFILE.read_text()
    assert old in text
    assert check_dockerfile(text.replace(old, new))


def test_check_rejects_project_installed_before_the_lock() -> None:
    text = DOCKERFILE.read_text()
    lock_run = "RUN pip install --require-hashes -r requirements-image.lock\n"
    moved = text.replace(lock_run, "").replace("USER t2v", lock_run + "USER t2v")
    assert moved != text
    assert "installed after the project" in "\n".join(check_dockerfile(moved))


def _image_lock() -> str:
    return (REPO / "requirements-image.lock").read_text()


@pytest.mark.parametrize(
    ("name", "mutate"),
    [
        ("a pin dropped", lambda t: re.sub(r"\nboto3==.*?(?=\n\S)", "", t, flags=re.S)),
        ("a version outside the range", lambda t: re.sub(r"\ncelery==\S+", "\ncelery==4.4.7", t)),
        (
            "a pin without hashes",
            lambda t: re.sub(r"(\nrequests==\S+) \\\n(\s+--hash=\S+( \\)?\n)+", r"\1\n", t),
        ),
        ("a range instead of a pin", lambda t: t.replace("\nclick==", "\nclick>=")),
    ],
)
def test_check_rejects_broken_lock(name: str, mutate: Callable[[str], str]) -> None:
    text = _image_lock()
    broken = mutate(text)
    assert broken != text, name
    assert check_lock_covers(text, ["worker", "postgres", "simulator"]) == []
    assert check_lock_covers(broken, ["worker", "postgres", "simulator"]), name


def test_locks_pin_every_requirement_with_hashes() -> None:
    assert check_lock_covers(DEV_LOCK.read_text(), ["dev"]) == []


def test_image_lock_agrees_with_the_dev_lock() -> None:
    """`make lock` makes the image's lock from the dev lock: the same version of everything."""
    image, _ = _pins(_image_lock())
    dev, _ = _pins(DEV_LOCK.read_text())
    assert image and set(image) <= set(dev)
    assert {n: v for n, v in image.items() if dev[n] != v} == {}
