"""ops/k8s rendered offline and checked: Kubernetes schemas, KEDA's fields, and our rules.

No cluster here. `kubectl kustomize` (Debian's kubectl, kustomize built in; `.ci/run` installs
it) renders each overlay; `kubernetes-validate --strict` checks every built-in object against
the schemas of a pinned Kubernetes version (strict: a misplaced field fails). It knows no
CRDs, so the KEDA ScaledObjects are checked against the fields KEDA documents (below). The
rest are the project's rules: graceful stop above the task time limit, one beat, the API key
only from the Secret and only in pods that run tasks, Flower behind auth and never exposed.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from t2v_core.names import QUEUE_DOWNLOAD, QUEUE_POLL, QUEUE_SUBMIT, QUEUES
from tests.conftest import need
from tests.unit.test_compose import SETTINGS_VARS, CeleryCall, celery_call
from worker.settings import WorkerSettings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "ops" / "k8s"
OVERLAYS = {"production": "redis", "production-rabbitmq": "rabbitmq"}
K8S_VERSION = "1.32.0"  # the kubectl Debian ships here; bump both together
API_KEY_VAR = "T2V_MODELSLAB_API_KEY"
# T2V_REDIS_URL: the shared-state Redis when the broker is RabbitMQ (issue 10 adds it).
KNOWN_VARS = SETTINGS_VARS | {"T2V_REDIS_URL"}
PER_JOB_QUEUES = {QUEUE_SUBMIT, QUEUE_POLL, QUEUE_DOWNLOAD}

# -- KEDA's documented fields (keda.sh docs 2.16: reference/scaledobject-spec, scalers/redis,
# scalers/rabbitmq-queue, scalers/prometheus). Required keys first, then every allowed key
# (rabbitmq's deprecated `queueLength` left out on purpose: `mode` + `value` replace it).
KEDA_SPEC_FIELDS = {
    "scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
    "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers",
}  # fmt: skip
KEDA_TARGET_FIELDS = {"apiVersion", "kind", "name", "envSourceContainerName"}
KEDA_FALLBACK_FIELDS = {"failureThreshold", "replicas"}
KEDA_ADVANCED_FIELDS = {"restoreToOriginalReplicaCount", "horizontalPodAutoscalerConfig",
                        "scalingModifiers"}  # fmt: skip
KEDA_HPA_CONFIG_FIELDS = {"name", "behavior"}
KEDA_TRIGGER_FIELDS = {"type", "metadata", "name", "useCachedMetrics", "authenticationRef",
                       "metricType"}  # fmt: skip
KEDA_TRIGGERS: dict[str, tuple[set[str], set[str]]] = {
    "redis": (
        {"listName", "listLength"},
        {
            "address", "host", "port", "usernameFromEnv", "passwordFromEnv", "listName",
            "listLength", "activationListLength", "keyName", "keyValue", "activationValue",
            "enableTLS", "unsafeSsl", "databaseIndex", "addressFromEnv", "hostFromEnv",
            "portFromEnv",
        },
    ),
    "rabbitmq": (
        {"queueName", "mode", "value"},
        {
            "host", "protocol", "mode", "value", "activationValue", "queueName", "vhostName",
            "hostFromEnv", "usernameFromEnv", "passwordFromEnv", "unsafeSsl", "useRegex",
            "pageSize", "operation", "timeout", "excludeUnacknowledged",
        },
    ),
    "prometheus": (
        {"serverAddress", "query", "threshold"},
        {
            "serverAddress", "query", "threshold", "activationThreshold", "namespace",
            "customHeaders", "ignoreNullValues", "queryParameters", "unsafeSsl", "authModes",
        },
    ),
}  # fmt: skip
KEDA_NUMBERS = {"listLength", "activationListLength", "value", "activationValue", "threshold",
                "activationThreshold", "databaseIndex"}  # fmt: skip


# -- rendering ------------------------------------------------------------------------------
def render(path: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    need(kubectl is not None, "kubectl not installed (apt-get install kubectl)")
    assert kubectl is not None
    result = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(K8S / "overlays" / name) for name in OVERLAYS}


def of_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def pod_spec(deploy: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deploy["spec"]["template"]["spec"]
    return spec


def containers(deploy: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod_spec(deploy)["containers"])


def celery_of(deploy: dict[str, Any]) -> CeleryCall | None:
    c = containers(deploy)[0]
    return celery_call([str(a) for a in [*c.get("command", []), *c.get("args", [])]])


def env_names(container: dict[str, Any]) -> set[str]:
    return {e["name"] for e in container.get("env", [])}


def config_maps_used(deploy: dict[str, Any], objs: list[dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = {}
    maps = of_kind(objs, "ConfigMap")
    for c in containers(deploy):
        for src in c.get("envFrom", []):
            if "configMapRef" in src:
                data |= maps[src["configMapRef"]["name"]].get("data", {})
    return data


# -- the checks: each returns its problems -------------------------------------------------------
def check_schemas(objs: list[dict[str, Any]]) -> list[str]:
    problems = []
    for obj in objs:
        if obj["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: check_keda
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc}")
    return problems


def _unknown(where: str, obj: Any, allowed: set[str]) -> list[str]:
    if not isinstance(obj, dict):
        return [f"{where}: not a mapping"]
    return [f"{where}: unknown field {k!r}" for k in sorted(set(obj) - allowed)]


def check_keda(objs: list[dict[str, Any]], broker: str) -> list[str]:
    deployments = of_kind(objs, "Deployment")
    scaled = of_kind(objs, "ScaledObject")
    if not scaled:
        return ["no ScaledObject"]
    problems = []
    for name, so in scaled.items():
        where = f"ScaledObject/{name}"
        if so["apiVersion"] != "keda.sh/v1alpha1":
            problems.append(f"{where}: apiVersion {so['apiVersion']}")
        spec = so["spec"]
        problems += _unknown(where, spec, KEDA_SPEC_FIELDS)
        problems += _unknown(f"{where}.scaleTargetRef", spec["scaleTargetRef"], KEDA_TARGET_FIELDS)
        problems += _unknown(f"{where}.fallback", spec.get("fallback", {}), KEDA_FALLBACK_FIELDS)
        advanced = spec.get("advanced", {})
        problems += _unknown(f"{where}.advanced", advanced, KEDA_ADVANCED_FIELDS)
        problems += _unknown(
            f"{where}.advanced.hpa",
            advanced.get("horizontalPodAutoscalerConfig", {}),
            KEDA_HPA_CONFIG_FIELDS,
        )
        target = deployments.get(spec["scaleTargetRef"].get("name", ""))
        if target is None or spec["scaleTargetRef"].get("kind", "Deployment") != "Deployment":
            problems.append(f"{where}: scales no Deployment of this overlay")
            continue
        if "replicas" in target["spec"]:
            problems.append(f"{where}: the target sets replicas (each apply would reset KEDA's)")
        lo, hi = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
            problems.append(f"{where}: replicas {lo}..{hi} (need 1 <= min <= max)")
        if "cooldownPeriod" not in spec or "maxReplicaCount" not in spec:
            problems.append(f"{where}: set cooldownPeriod and maxReplicaCount")
        call = celery_of(target)
        consumed = call.queues if call else set()
        env = env_names(containers(target)[0]) | set(config_maps_used(target, objs))
        watched, kinds = set(), set()
        for i, trig in enumerate(spec.get("triggers") or []):
            tw = f"{where}.triggers[{i}]"
            problems += _unknown(tw, trig, KEDA_TRIGGER_FIELDS)
            kind, meta = trig.get("type"), trig.get("metadata") or {}
            kinds.add(kind)
            if kind not in KEDA_TRIGGERS:
                problems.append(f"{tw}: trigger type {kind!r} not checked here")
                continue
            required, allowed = KEDA_TRIGGERS[kind]
            problems += _unknown(f"{tw}.metadata", meta, allowed)
            problems += [f"{tw}: missing {k}" for k in sorted(required - set(meta))]
            for key in KEDA_NUMBERS & set(meta):
                if not (isinstance(meta[key], str) and re.fullmatch(r"\d+(\.\d+)?", meta[key])):
                    problems.append(f"{tw}: {key} must be a quoted number, got {meta[key]!r}")
            for key in ("hostFromEnv", "addressFromEnv", "passwordFromEnv", "usernameFromEnv"):
                if key in meta and meta[key] not in env:
                    problems.append(
                        f"{tw}: {key} {meta[key]} is not set on {target['metadata']['name']}"
                    )
            queue = meta.get("listName") or meta.get("queueName")
            if kind in ("redis", "rabbitmq"):
                if queue not in consumed:
                    problems.append(f"{tw}: watches {queue!r}, which the target does not consume")
                watched.add(queue)
            if kind == "rabbitmq" and meta.get("mode") not in ("QueueLength", "MessageRate"):
                problems.append(f"{tw}: mode {meta.get('mode')!r}")
        if broker not in kinds:
            problems.append(f"{where}: no {broker} trigger")
        if "prometheus" not in kinds:
            problems.append(f"{where}: no trigger on jobs waiting (prometheus)")
        problems += [f"{where}: queue {q} not watched" for q in sorted(PER_JOB_QUEUES - watched)]
    return problems


def check_workloads(objs: list[dict[str, Any]]) -> list[str]:
    """Security context, resources and graceful stop of every Deployment."""
    problems = []
    limit = float(WorkerSettings.model_fields["task_time_limit"].default)
    for name, deploy in of_kind(objs, "Deployment").items():
        spec = pod_spec(deploy)
        if spec.get("securityContext", {}).get("runAsNonRoot") is not True:
            problems.append(f"{name}: runAsNonRoot is not set")
        mounts_ok = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for c in containers(deploy):
            sc = c.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{name}/{c['name']}: root filesystem writable")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{name}/{c['name']}: allowPrivilegeEscalation not false")
            res = c.get("resources", {})
            if not (res.get("requests") and res.get("limits", {}).get("memory")):
                problems.append(f"{name}/{c['name']}: no requests or memory limit")
            paths = {m["mountPath"] for m in c.get("volumeMounts", []) if m["name"] in mounts_ok}
            if "/tmp" not in paths:
                problems.append(f"{name}/{c['name']}: no writable /tmp (emptyDir)")
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            multiproc = env.get("PROMETHEUS_MULTIPROC_DIR")
            if multiproc and multiproc not in paths:
                problems.append(f"{name}: PROMETHEUS_MULTIPROC_DIR {multiproc} is no emptyDir")
        call = celery_of(deploy)
        if call and call.runs_tasks:
            cm = config_maps_used(deploy, objs)
            task_limit = float(cm.get("T2V_TASK_TIME_LIMIT", limit))
            grace = spec.get("terminationGracePeriodSeconds", 30)
            if grace <= task_limit:
                problems.append(f"{name}: terminationGracePeriodSeconds {grace} <= {task_limit}")
            if not containers(deploy)[0].get("lifecycle", {}).get("preStop"):
                problems.append(f"{name}: no preStop")
            env = env_names(containers(deploy)[0])
            if "PROMETHEUS_MULTIPROC_DIR" not in env:
                problems.append(f"{name}: prefork children need PROMETHEUS_MULTIPROC_DIR")
    return problems


def check_topology(objs: list[dict[str, Any]]) -> list[str]:
    """One beat; every queue consumed; the exporter, webhook and PDB wired up."""
    problems = []
    deployments = of_kind(objs, "Deployment")
    calls = {n: c for n, d in deployments.items() if (c := celery_of(d)) is not None}
    beats = [n for n, c in calls.items() if c.runs_beat]
    if len(beats) != 1:
        problems.append(f"expected exactly one beat, found {beats}")
    for name in beats:
        spec = deployments[name]["spec"]
        if spec.get("replicas") != 1 or spec.get("strategy", {}).get("type") != "Recreate":
            problems.append(f"{name}: beat needs replicas 1 and strategy Recreate")
    consumed = {q for c in calls.values() if c.runs_tasks for q in c.queues}
    problems += [f"no Deployment consumes {q}" for q in sorted(set(QUEUES) - consumed)]
    problems += [f"unknown queue {q}" for q in sorted(consumed - set(QUEUES))]
    services = of_kind(objs, "Service")

    def serving(argv: list[str], port: int) -> list[str]:
        found = []
        for name, d in deployments.items():
            c = containers(d)[0]
            if c.get("command", [])[: len(argv)] == argv:
                found.append(name)
                labels = d["spec"]["template"]["metadata"]["labels"]
                ports = {p["containerPort"] for p in c.get("ports", [])}
                if port not in ports:
                    problems.append(f"{name}: port {port} not declared")
                if not any(
                    s["spec"].get("selector", {}).items() <= labels.items()
                    and any(p["port"] == port for p in s["spec"]["ports"])
                    for s in services.values()
                ):
                    problems.append(f"{name}: no Service on port {port}")
        return found

    exporters = serving(["python", "-m", "worker.metrics"], 9840)
    if len(exporters) != 1 or deployments[exporters[0]]["spec"].get("replicas") != 1:
        problems.append(f"expected one exporter Deployment with one replica, found {exporters}")
    if not serving(["python", "-m", "worker.webhook"], 8080):
        problems.append("no webhook receiver")
    pdbs = of_kind(objs, "PodDisruptionBudget")
    workers = [d for n, d in deployments.items() if n in calls and calls[n].queues & PER_JOB_QUEUES]
    for d in workers:
        labels = d["spec"]["template"]["metadata"]["labels"]
        if not any(
            p["spec"]["selector"]["matchLabels"].items() <= labels.items() for p in pdbs.values()
        ):
            problems.append(f"{d['metadata']['name']}: no PodDisruptionBudget")
    return problems


def check_secrets_and_settings(objs: list[dict[str, Any]]) -> list[str]:
    """The API key only from a Secret, only where tasks run; settings names that exist."""
    problems = []
    for name, cm in of_kind(objs, "ConfigMap").items():
        data = cm.get("data", {})
        problems += [
            f"ConfigMap {name}: unknown setting {k}" for k in sorted(set(data) - KNOWN_VARS)
        ]
        problems += [
            f"ConfigMap {name}: holds a secret {k}"
            for k in data
            if re.search(r"API_KEY|SECRET|PASSWORD|DATABASE_URL|BROKER_URL|BASIC_AUTH", k)
        ]
    for name, deploy in of_kind(objs, "Deployment").items():
        call = celery_of(deploy)
        runs_tasks = bool(call and call.runs_tasks)
        for c in containers(deploy):
            for e in c.get("env", []):
                if e["name"].startswith("T2V_") and e["name"] not in KNOWN_VARS:
                    problems.append(f"{name}: unknown setting {e['name']}")
                secretish = re.search(
                    r"API_KEY|SECRET|PASSWORD|DATABASE_URL|BROKER_URL|BASIC_AUTH", e["name"]
                )
                if secretish and "secretKeyRef" not in e.get("valueFrom", {}):
                    problems.append(f"{name}: {e['name']} not from a Secret")
            has_key = API_KEY_VAR in env_names(c)
            if has_key and not runs_tasks:
                problems.append(f"{name}: gets {API_KEY_VAR} but runs no tasks")
            if runs_tasks and not has_key:
                problems.append(f"{name}: runs tasks without {API_KEY_VAR}")
    return problems


def check_private(objs: list[dict[str, Any]]) -> list[str]:
    """Flower behind auth; Flower and every /metrics port never leave the cluster."""
    problems = []
    deployments = of_kind(objs, "Deployment")
    services = of_kind(objs, "Service")
    flowers = {n: d for n, d in deployments.items() if (c := celery_of(d)) and c.sub == "flower"}
    if not flowers:
        problems.append("no Flower")
    private_labels = []
    for name, d in flowers.items():
        c = containers(d)[0]
        call = celery_of(d)
        assert call is not None
        auth = call.option("--basic-auth", "--basic-auth")
        env = {e["name"]: e for e in c.get("env", [])}
        from_secret = "secretKeyRef" in env.get("FLOWER_BASIC_AUTH", {}).get("valueFrom", {})
        if not from_secret and not (auth and ":" in auth):
            problems.append(f"{name}: Flower without basic auth from a Secret")
        private_labels.append(d["spec"]["template"]["metadata"]["labels"])
    for d in deployments.values():
        ports = {p.get("name") for p in containers(d)[0].get("ports", [])}
        if "metrics" in ports:
            private_labels.append(d["spec"]["template"]["metadata"]["labels"])
    private_services = {
        n
        for n, s in services.items()
        if any(s["spec"].get("selector", {}).items() <= lab.items() for lab in private_labels)
    }
    for n in private_services:
        if services[n]["spec"].get("type", "ClusterIP") != "ClusterIP":
            problems.append(f"Service {n}: {services[n]['spec']['type']} exposes a private port")
    for name, ing in of_kind(objs, "Ingress").items():
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                backend = path["backend"]["service"]["name"]
                if backend in private_services:
                    problems.append(f"Ingress {name}: routes to private Service {backend}")
                if path["path"].rstrip("/") in ("", "/metrics") or "metrics" in path["path"]:
                    problems.append(f"Ingress {name}: exposes {path['path']}")
    policies = of_kind(objs, "NetworkPolicy").values()
    for labels in private_labels:
        if not any(_selects(p["spec"]["podSelector"], labels) for p in policies):
            problems.append(f"pods {labels}: no NetworkPolicy keeps them private")
    return problems


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        value = labels.get(expr["key"])
        if expr["operator"] == "In" and value not in expr["values"]:
            return False
    return True


CHECKS: dict[str, Callable[[list[dict[str, Any]]], list[str]]] = {
    "schemas": check_schemas,
    "workloads": check_workloads,
    "topology": check_topology,
    "secrets_and_settings": check_secrets_and_settings,
    "private": check_private,
}


# -- the tests ---------------------------------------------------------------------------------
def test_kubernetes_version_is_bundled() -> None:
    from kubernetes_validate.utils import all_versions

    assert K8S_VERSION in all_versions()


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
@pytest.mark.parametrize("check", sorted(CHECKS))
def test_overlay_passes(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, check: str
) -> None:
    assert CHECKS[check](rendered[overlay]) == []


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_scaled_object_matches_keda_docs(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objs = rendered[overlay]
    assert check_keda(objs, OVERLAYS[overlay]) == []
    assert all(o["metadata"].get("namespace") == "t2v" for o in objs)


def test_kubernetes_validate_cli_strict(
    tmp_path: Path, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    """The command the README shows, on the rendered built-in objects."""
    exe = str(Path(sys.executable).parent / "kubernetes-validate")
    for overlay, objs in rendered.items():
        out = tmp_path / f"{overlay}.yaml"
        out.write_text(
            yaml.safe_dump_all([o for o in objs if not o["apiVersion"].startswith("keda.sh/")])
        )
        result = subprocess.run(
            [exe, "--strict", "--quiet", "-k", K8S_VERSION, str(out)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr


# -- each check rejects a broken copy ------------------------------------------------------------
def _deploy(objs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return of_kind(objs, "Deployment")[name]


def _scaled(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(iter(of_kind(objs, "ScaledObject").values()))


def _set_env(
    name: str, var: str, entry: dict[str, Any] | None
) -> Callable[[list[dict[str, Any]]], None]:
    def mutate(objs: list[dict[str, Any]]) -> None:
        c = containers(_deploy(objs, name))[0]
        c["env"] = [e for e in c.get("env", []) if e["name"] != var]
        if entry is not None:
            c["env"].append({"name": var, **entry})

    return mutate


MUTATIONS: dict[str, tuple[Callable[[list[dict[str, Any]]], None], str]] = {
    "misplaced field": (
        lambda o: pod_spec(_deploy(o, "t2v-worker")).update(gracePeriod=5),
        "schemas",
    ),
    "wrong type": (lambda o: _deploy(o, "t2v-beat")["spec"].update(replicas="1"), "schemas"),
    "short grace": (
        lambda o: pod_spec(_deploy(o, "t2v-worker")).update(terminationGracePeriodSeconds=60),
        "workloads",
    ),
    "no preStop": (lambda o: containers(_deploy(o, "t2v-worker"))[0].pop("lifecycle"), "workloads"),
    "root filesystem writable": (
        lambda o: containers(_deploy(o, "t2v-flower"))[0]["securityContext"].update(
            readOnlyRootFilesystem=False
        ),
        "workloads",
    ),
    "root allowed": (
        lambda o: pod_spec(_deploy(o, "t2v-exporter"))["securityContext"].pop("runAsNonRoot"),
        "workloads",
    ),
    "no memory limit": (
        lambda o: containers(_deploy(o, "t2v-webhook"))[0]["resources"].pop("limits"),
        "workloads",
    ),
    "multiproc dir not mounted": (
        lambda o: containers(_deploy(o, "t2v-worker"))[0].update(
            volumeMounts=[{"name": "tmp", "mountPath": "/tmp"}]
        ),
        "workloads",
    ),
    "beat rolling": (
        lambda o: _deploy(o, "t2v-beat")["spec"].update(strategy={"type": "RollingUpdate"}),
        "topology",
    ),
    "two beats": (lambda o: _deploy(o, "t2v-beat")["spec"].update(replicas=2), "topology"),
    "maintenance queue unconsumed": (
        lambda o: [o.remove(d) for d in [_deploy(o, "t2v-maintenance")]],
        "topology",
    ),
    "exporter without Service": (
        lambda o: [o.remove(s) for s in [of_kind(o, "Service")["t2v-exporter"]]],
        "topology",
    ),
    "API key in the ConfigMap": (
        lambda o: next(iter(of_kind(o, "ConfigMap").values()))["data"].update({API_KEY_VAR: "sk"}),
        "secrets_and_settings",
    ),
    "API key as a plain value": (
        _set_env("t2v-worker", API_KEY_VAR, {"value": "sk-live"}),
        "secrets_and_settings",
    ),
    "API key given to Flower": (
        _set_env(
            "t2v-flower", API_KEY_VAR, {"valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
        ),
        "secrets_and_settings",
    ),
    "unknown setting": (
        lambda o: next(iter(of_kind(o, "ConfigMap").values()))["data"].update(T2V_SLOTS="5"),
        "secrets_and_settings",
    ),
    "Flower without auth": (_set_env("t2v-flower", "FLOWER_BASIC_AUTH", None), "private"),
    "Flower behind an Ingress": (
        lambda o: of_kind(o, "Ingress")["t2v-webhook"]["spec"]["rules"][0]["http"]["paths"].append(
            {
                "path": "/flower",
                "pathType": "Prefix",
                "backend": {"service": {"name": "t2v-flower", "port": {"number": 5555}}},
            }
        ),
        "private",
    ),  # fmt: skip
    "exporter as a LoadBalancer": (
        lambda o: of_kind(o, "Service")["t2v-exporter"]["spec"].update(type="LoadBalancer"),
        "private",
    ),
    "no NetworkPolicy": (
        lambda o: [o.remove(p) for p in list(of_kind(o, "NetworkPolicy").values())],
        "private",
    ),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_check_rejects_broken_manifests(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    mutate, check = MUTATIONS[name]
    broken = copy.deepcopy(rendered["production"])
    mutate(broken)
    assert CHECKS[check](broken), f"{check} accepted: {name}"


def _trigger(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(t for t in _scaled(objs)["spec"]["triggers"] if t["type"] == kind)


KEDA_MUTATIONS: dict[str, tuple[str, Callable[[list[dict[str, Any]]], None]]] = {
    "unknown spec field": ("production", lambda o: _scaled(o)["spec"].update(minReplicas=1)),
    "field of the HPA, not KEDA": (
        "production",
        lambda o: _scaled(o)["spec"].update(scaleDownDelay=60),
    ),
    "target with fixed replicas": (
        "production",
        lambda o: _deploy(o, "t2v-worker")["spec"].update(replicas=2),
    ),
    "min above max": ("production", lambda o: _scaled(o)["spec"].update(minReplicaCount=20)),
    "no cooldown": ("production", lambda o: _scaled(o)["spec"].pop("cooldownPeriod")),
    "target missing": (
        "production",
        lambda o: _scaled(o)["spec"]["scaleTargetRef"].update(name="t2v-workers"),
    ),
    "redis without listName": (
        "production",
        lambda o: _trigger(o, "redis")["metadata"].pop("listName"),
    ),
    "redis misspelt key": (
        "production",
        lambda o: _trigger(o, "redis")["metadata"].update(listLenght="5"),
    ),
    "redis number unquoted": (
        "production",
        lambda o: _trigger(o, "redis")["metadata"].update(listLength=5),
    ),
    "queue not consumed": (
        "production",
        lambda o: _trigger(o, "redis")["metadata"].update(listName="celery"),
    ),
    "a queue not watched": (
        "production",
        lambda o: _scaled(o)["spec"].update(
            triggers=[
                t
                for t in _scaled(o)["spec"]["triggers"]
                if t["metadata"].get("listName") != QUEUE_DOWNLOAD
            ]
        ),
    ),  # fmt: skip
    "no jobs-waiting trigger": (
        "production",
        lambda o: _scaled(o)["spec"].update(
            triggers=[t for t in _scaled(o)["spec"]["triggers"] if t["type"] != "prometheus"]
        ),
    ),
    "prometheus without threshold": (
        "production",
        lambda o: _trigger(o, "prometheus")["metadata"].pop("threshold"),
    ),
    "rabbitmq host from an unset variable": (
        "production-rabbitmq",
        lambda o: _trigger(o, "rabbitmq")["metadata"].update(hostFromEnv="RABBITMQ_URL"),
    ),
    "rabbitmq bad mode": (
        "production-rabbitmq",
        lambda o: _trigger(o, "rabbitmq")["metadata"].update(mode="Length"),
    ),
    "rabbitmq deprecated queueLength": (
        "production-rabbitmq",
        lambda o: _trigger(o, "rabbitmq")["metadata"].update(queueLength="20"),
    ),
    "unknown trigger field": (
        "production-rabbitmq",
        lambda o: _trigger(o, "rabbitmq").update(auth={"name": "x"}),
    ),
}


@pytest.mark.parametrize("name", sorted(KEDA_MUTATIONS))
def test_keda_check_rejects_broken_scaled_object(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    overlay, mutate = KEDA_MUTATIONS[name]
    broken = copy.deepcopy(rendered[overlay])
    mutate(broken)
    assert check_keda(broken, OVERLAYS[overlay]), f"accepted: {name}"
