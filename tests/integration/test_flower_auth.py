"""Flower as every shipped configuration starts it answers 401 without credentials.

docker-compose.yml and the Kubernetes Flower Deployment (ops/k8s, production overlay) are read,
their Flower command and environment taken as written, and a real `celery flower` started
with them on loopback (only the listen address and port changed, the broker pointed at the
test's Redis, the secrets filled in). Pages and `/api/*` must answer 401 without credentials
and with a wrong password, 200 with the right ones. `/metrics` and `/healthcheck` answer
without auth by Flower's design: that is asserted too, as the reason the manifests keep Flower
on the private network (ClusterIP + NetworkPolicy, compose: 127.0.0.1 only).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.unit.test_compose import env_of, interpolate, load_compose, services
from tests.unit.test_k8s import K8S, celery_of, containers, of_kind, render
from worker.devstack import processes

pytestmark = pytest.mark.slow

USER, PASSWORD = "ops", "flower-test-pw"
PROTECTED = ["/", "/tasks", "/workers", "/broker", "/api/tasks", "/api/task/types"]
OPEN_BY_DESIGN = ["/metrics", "/healthcheck"]

Config = tuple[list[str], dict[str, str]]


def compose_flower(redis_url: str) -> Config:
    svc = services(load_compose())["flower"]
    secrets = {"FLOWER_USER": USER, "FLOWER_PASSWORD": PASSWORD}
    argv = [interpolate(a, secrets) for a in svc["command"]]
    env = {k: interpolate(v, secrets) for k, v in env_of(svc).items()}
    env["T2V_BROKER_URL"] = redis_url
    return argv, env


def k8s_flower(redis_url: str) -> Config:
    objs = render(K8S / "overlays" / "production")
    flowers = [
        d
        for d in of_kind(objs, "Deployment").values()
        if getattr(celery_of(d), "sub", "") == "flower"
    ]
    assert len(flowers) == 1
    deploy = flowers[0]
    c = containers(deploy)[0]
    secret = {"FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}", "T2V_BROKER_URL": redis_url}
    env: dict[str, str] = {}
    maps = of_kind(objs, "ConfigMap")
    for src in c.get("envFrom", []):
        env |= maps[src["configMapRef"]["name"]]["data"]
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "t2v-secrets"
            env[e["name"]] = secret[ref["key"]]
    return [*c["command"], *c.get("args", [])], env


def on_loopback(argv: list[str], port: int) -> list[str]:
    """The same command, listening on 127.0.0.1:port, run by this interpreter."""
    assert argv[0] == "celery", argv
    out, seen = [sys.executable, "-m", "celery"], set()
    for arg in argv[1:]:
        flag = arg.split("=", 1)[0]
        if flag in ("--address", "--port"):
            seen.add(flag)
            arg = "--address=127.0.0.1" if flag == "--address" else f"--port={port}"
        out.append(arg)
    assert seen == {"--address", "--port"}, argv
    return out


def answers(url: str, auth: tuple[str, str] | None) -> dict[str, int]:
    return {
        path: requests.get(url + path, auth=auth, timeout=10, allow_redirects=False).status_code
        for path in PROTECTED + OPEN_BY_DESIGN
    }


def run_flower(config: Config, tmp_path: Path, name: str) -> processes.ManagedProcess:
    argv, env = config
    port = processes.free_port()
    env = {k: v for k, v in env.items() if not k.startswith("T2V_MODELSLAB")}
    proc = processes.spawn(name, on_loopback(argv, port), env=env, log_dir=tmp_path)
    processes.wait_for_port("127.0.0.1", port, 30, proc)
    proc.url = f"http://127.0.0.1:{port}"
    return proc


SHIPPED: dict[str, Callable[[str], Config]] = {
    "docker-compose": compose_flower,
    "k8s-production": k8s_flower,
}


@pytest.mark.parametrize("shipped", sorted(SHIPPED))
def test_shipped_flower_refuses_without_credentials(
    shipped: str, redis_url: str, tmp_path: Path
) -> None:
    flower = run_flower(SHIPPED[shipped](redis_url), tmp_path, f"flower-{shipped}")
    try:
        anonymous = answers(flower.url, None)
        wrong = answers(flower.url, (USER, "not-the-password"))
        right = {
            p: requests.get(flower.url + p, auth=(USER, PASSWORD), timeout=10).status_code
            for p in ["/tasks", "/api/tasks"]
        }
    finally:
        flower.stop()
    assert {p: anonymous[p] for p in PROTECTED} == dict.fromkeys(PROTECTED, 401)
    assert {p: wrong[p] for p in PROTECTED} == dict.fromkeys(PROTECTED, 401)
    assert right == {"/tasks": 200, "/api/tasks": 200}
    # open by Flower's design: why Flower stays on the private network
    assert {p: anonymous[p] for p in OPEN_BY_DESIGN} == dict.fromkeys(OPEN_BY_DESIGN, 200)


def test_a_flower_without_auth_would_be_caught(redis_url: str, tmp_path: Path) -> None:
    """The same check on a Flower started without auth finds pages open."""
    argv, env = compose_flower(redis_url)
    env.pop("FLOWER_BASIC_AUTH")
    flower = run_flower((argv, env), tmp_path, "flower-open")
    try:
        anonymous = answers(flower.url, None)
    finally:
        flower.stop()
    # pages open to anyone; /api stays 401 (Flower 2 closes its API when no auth is set,
    # unless FLOWER_UNAUTHENTICATED_API is) -- the pages alone show every task and worker
    assert anonymous["/tasks"] == 200 and anonymous["/workers"] == 200
    assert anonymous["/api/tasks"] == 401
