"""docker-compose.yml, the operating side: graceful stops, healthchecks, the metrics ports.

Like tests/unit/test_compose.py (whose readers these reuse), each check returns its problems,
the real file must have none, and a broken copy proves each check can fail.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import yaml

from tests.unit.test_compose import (
    REPO,
    argv_of,
    celery_services,
    env_of,
    interpolate,
    load_compose,
    services,
)
from worker.settings import WorkerSettings

PROMETHEUS_CONFIG = REPO / "ops" / "prometheus" / "prometheus.yml"
# One-shot or on-demand services need no healthcheck; beat's liveness is an alert (its
# process being up says nothing about its ticks: T2VReconcileNotTicking).
NO_HEALTHCHECK = {"init", "cli", "beat", "prometheus"}


def setting_default(name: str) -> Any:
    return WorkerSettings.model_fields[name].default


def seconds(duration: Any) -> float:
    """Compose's duration (`660s`, `11m`, `1m30s`, or a number of seconds)."""
    if isinstance(duration, int | float):
        return float(duration)
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)", str(duration))
    assert parts and "".join(n + u for n, u in parts) == str(duration), duration
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}
    return sum(float(n) * scale[u] for n, u in parts)


def check_stop_grace(compose: Mapping[str, Any]) -> list[str]:
    """Every service that runs tasks waits longer than a task may run before it kills."""
    limit = float(WorkerSettings.model_fields["task_time_limit"].default)
    problems = []
    for name, call in celery_services(compose):
        if not call.runs_tasks:
            continue
        svc = services(compose)[name]
        env_limit = interpolate(env_of(svc).get("T2V_TASK_TIME_LIMIT", "")) or limit
        grace = seconds(svc.get("stop_grace_period", "10s"))
        if grace <= float(env_limit):
            problems.append(f"{name}: stop_grace_period {grace:.0f}s <= task limit {env_limit}s")
    return problems


def check_healthchecks(compose: Mapping[str, Any]) -> list[str]:
    return [
        f"{name}: no healthcheck"
        for name, svc in services(compose).items()
        if name not in NO_HEALTHCHECK
        and not (svc.get("healthcheck") or {}).get("test")
        and not (svc.get("healthcheck") or {}).get("disable")
    ]


def _scrape_targets() -> dict[str, set[tuple[str, int]]]:
    """job -> {(host, port)} of ops/prometheus/prometheus.yml."""
    jobs: dict[str, set[tuple[str, int]]] = {}
    for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]:
        found = jobs.setdefault(job["job_name"], set())
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                found.add((host, int(port)))
        for dns in job.get("dns_sd_configs", []):
            found |= {(n, int(dns["port"])) for n in dns["names"]}
    return jobs


def check_metrics_ports(compose: Mapping[str, Any]) -> list[str]:
    """The exporter and every worker serve on the ports the code and prometheus.yml use."""
    problems = []
    svcs = services(compose)
    targets = _scrape_targets()
    exporters = [n for n, s in svcs.items() if argv_of(s)[1:3] == ["-m", "worker.metrics"]]
    if len(exporters) != 1:
        problems.append(f"expected exactly one `python -m worker.metrics`, found {exporters}")
    for name in exporters:
        env = {k: interpolate(v) for k, v in env_of(svcs[name]).items()}
        port = int(env.get("T2V_METRICS_PORT") or setting_default("metrics_port"))
        if port != setting_default("metrics_port"):
            problems.append(f"{name}: serves on {port}, the code's default is 9840")
        if "0.0.0.0" not in argv_of(svcs[name]):
            problems.append(f"{name}: listens on loopback only: Prometheus cannot reach it")
        if (name, port) not in targets.get("t2v-exporter", set()):
            problems.append(f"prometheus.yml: t2v-exporter does not scrape {name}:{port}")
    for name, call in celery_services(compose):
        if not call.runs_tasks:
            continue
        env = {k: interpolate(v) for k, v in env_of(svcs[name]).items()}
        port = int(env.get("T2V_WORKER_METRICS_PORT") or setting_default("worker_metrics_port"))
        if (name, port) not in targets.get("t2v-worker", set()):
            problems.append(f"prometheus.yml: t2v-worker does not scrape {name}:{port}")
        multiproc = env.get("PROMETHEUS_MULTIPROC_DIR")
        if not multiproc:
            problems.append(f"{name}: prefork children need PROMETHEUS_MULTIPROC_DIR")
        elif multiproc not in (svcs[name].get("tmpfs") or []):
            problems.append(f"{name}: PROMETHEUS_MULTIPROC_DIR {multiproc} is not a fresh tmpfs")
    return problems


CHECKS: list[Callable[[Mapping[str, Any]], list[str]]] = [
    check_stop_grace,
    check_healthchecks,
    check_metrics_ports,
]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_compose_is_operable(compose: dict[str, Any], check: Callable[..., list[str]]) -> None:
    assert check(compose) == []


def test_durations_follow_compose() -> None:
    assert seconds("660s") == 660 and seconds("11m") == 660 and seconds("1m30s") == 90
    assert seconds(5) == 5


def _svc(name: str, **changes: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(c: dict[str, Any]) -> None:
        for key, value in changes.items():
            if value is None:
                c["services"][name].pop(key, None)
            else:
                c["services"][name][key] = value

    return mutate


def _env(name: str, key: str, value: str | None) -> Callable[[dict[str, Any]], None]:
    def mutate(c: dict[str, Any]) -> None:
        env = env_of(c["services"][name])
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
        c["services"][name]["environment"] = env

    return mutate


MUTATIONS = {
    "default 10 s grace": (_svc("worker", stop_grace_period=None), check_stop_grace),
    "grace equal to the limit": (_svc("maintenance", stop_grace_period="10m"), check_stop_grace),
    "limit raised above the grace": (
        _env("worker", "T2V_TASK_TIME_LIMIT", "900"),
        check_stop_grace,
    ),
    "worker without healthcheck": (_svc("worker", healthcheck=None), check_healthchecks),
    "exporter without healthcheck": (_svc("exporter", healthcheck=None), check_healthchecks),
    "exporter on another port": (_env("exporter", "T2V_METRICS_PORT", "9808"), check_metrics_ports),
    "exporter on loopback": (
        _svc("exporter", command=["python", "-m", "worker.metrics"]),
        check_metrics_ports,
    ),
    "no exporter": (lambda c: c["services"].pop("exporter"), check_metrics_ports),
    "worker metrics on another port": (
        _env("worker", "T2V_WORKER_METRICS_PORT", "9808"),
        check_metrics_ports,
    ),
    "no multiprocess dir": (
        _env("worker", "PROMETHEUS_MULTIPROC_DIR", None),
        check_metrics_ports,
    ),
    "multiprocess dir not a tmpfs": (_svc("maintenance", tmpfs=None), check_metrics_ports),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_check_rejects_broken_compose(compose: dict[str, Any], name: str) -> None:
    mutate, check = MUTATIONS[name]
    broken = copy.deepcopy(compose)
    mutate(broken)
    assert check(broken), f"{check.__name__} accepted: {name}"
