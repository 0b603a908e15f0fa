"""Every metric name that ops/ queries is one our processes export.

The Grafana dashboard, the alert rules and KEDA's prometheus triggers are PromQL strings: a
renamed metric would only show as an empty panel or an alert that can never fire. This test
pulls every metric name out of those queries and checks it against what the exporter and the
workers expose, and that the dashboard shows every metric we export.

``exported_sample_names()`` scrapes the state exporter's registry and the workers'
instruments in-process; ``CATALOGUE`` (issue 12's list) is checked against that scrape.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "ops" / "grafana" / "t2v-dashboard.json"
ALERTS = REPO / "ops" / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = REPO / "ops" / "prometheus" / "prometheus.yml"
KEDA_COMPONENTS = REPO / "ops" / "k8s" / "components"

# The metric catalogue of issue 12 (names as exported; histograms in seconds).
CATALOGUE: dict[str, set[str]] = {
    "counter": {
        "t2v_jobs_enqueued_total",
        "t2v_jobs_succeeded_total",
        "t2v_jobs_failed_total",
        "t2v_jobs_parked_total",
        "t2v_paid_submissions_total",
        "t2v_submit_answers_lost_total",
        "t2v_provider_rate_limited_total",
        "t2v_fetches_total",
        "t2v_webhook_deliveries_total",
        "t2v_stored_bytes_total",
    },
    "histogram": {
        "t2v_job_queued_seconds",
        "t2v_slot_wait_seconds",
        "t2v_render_seconds",
        "t2v_detection_lateness_seconds",
        "t2v_download_seconds",
        "t2v_task_cpu_seconds",
    },
    "gauge": {
        "t2v_queue_length",
        "t2v_jobs",
        "t2v_slots_in_use",
        "t2v_slots_limit",
        "t2v_slots_effective_limit",
        "t2v_jobs_waiting_for_slot",
        "t2v_oldest_waiting_job_age_seconds",
        "t2v_last_reconcile_timestamp_seconds",
    },
}
# Series Prometheus makes itself for every target.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def exported_sample_names(tmp_path: Path) -> set[str]:
    """Sample names a scrape of our exporter and of a worker shows: the state exporter's
    registry over a real SQLite table and a Redis line, and the workers' instruments (the
    ``# TYPE`` lines, so a labelled counter no event has moved yet is there too)."""
    import fakeredis
    from prometheus_client import REGISTRY, generate_latest

    from t2v_core.db import make_engine
    from t2v_core.store import JobStore
    from worker import instruments
    from worker.limiter import AccountLimiter
    from worker.metrics import render_metrics, state_registry

    store = JobStore(make_engine(f"sqlite:///{tmp_path / 'jobs.sqlite3'}"))
    store.create_schema()
    redis = fakeredis.FakeRedis()
    instruments.instruments()  # registered on first use
    text = render_metrics(state_registry(store, redis, AccountLimiter(redis, 3)))
    text += generate_latest(REGISTRY).decode()
    store.engine.dispose()
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names |= (
                {f"{name}_{s}" for s in ("bucket", "sum", "count")}
                if kind == "histogram"
                else {name}
            )
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_the_catalogue_is_what_a_scrape_shows(tmp_path: Path) -> None:
    scraped = exported_sample_names(tmp_path)
    for kind, families in CATALOGUE.items():
        for family in families:
            sample = f"{family}_count" if kind == "histogram" else family
            assert sample in scraped, f"{kind} {family} is not exported"


# -- PromQL: which identifiers are metric names ------------------------------------------------
_FUNCTIONS_AND_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan",
}  # fmt: skip
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # label lists
    names = set()
    for m in _IDENT.finditer(text):
        name = m.group(0)
        before = text[: m.start()].rstrip()
        after = text[m.end() :].lstrip()
        if after.startswith("(") or name.lower() in _FUNCTIONS_AND_KEYWORDS:
            continue  # a function call or a keyword
        if before.endswith(("$", "{{")) or re.match(r"\d", name):
            continue
        if re.fullmatch(r"\d+[smhdwy]", name) or before[-1:].isdigit():
            continue
        names.add(name)
    return names


def _dashboard_exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    def walk(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            for target in panel.get("targets", []):
                yield f"panel {panel['title']!r}", target["expr"]
            yield from walk(panel.get("panels", []))

    yield from walk(dashboard["panels"])
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        if var.get("type") == "query":
            text = query["query"] if isinstance(query, dict) else str(query)
            inner = re.fullmatch(r"label_values\((.*?)(,\s*\w+)?\)", text.strip())
            yield f"variable {var['name']!r}", inner.group(1) if inner else text


def _alert_exprs() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            yield f"alert {rule.get('alert') or rule.get('record')}", rule["expr"]


def _keda_exprs() -> Iterator[tuple[str, str]]:
    for path in sorted(KEDA_COMPONENTS.glob("*/*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict) or doc.get("kind") != "ScaledObject":
                continue
            for trigger in doc["spec"]["triggers"]:
                if trigger["type"] == "prometheus":
                    yield f"{path.name} trigger {trigger.get('name')}", trigger["metadata"]["query"]


def all_queries() -> list[tuple[str, str]]:
    return [*_dashboard_exprs(json.loads(DASHBOARD.read_text())), *_alert_exprs(), *_keda_exprs()]


def unknown_names(queries: list[tuple[str, str]], exported: set[str]) -> list[str]:
    return [
        f"{where}: {name}"
        for where, expr in queries
        for name in sorted(metric_names(expr))
        if name not in exported | SYNTHETIC
    ]


# -- the tests ------------------------------------------------------------------------------
def test_every_queried_metric_is_exported(tmp_path: Path) -> None:
    queries = all_queries()
    assert len(queries) > 40  # the dashboard, the alerts and the KEDA trigger were all read
    assert unknown_names(queries, exported_sample_names(tmp_path)) == []


def test_the_dashboard_shows_every_exported_metric() -> None:
    shown = {
        name for _, expr in _dashboard_exprs(json.loads(DASHBOARD.read_text()))
        for name in metric_names(expr)
    }  # fmt: skip
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in shown}
    missing = {
        f for kind in CATALOGUE.values() for f in kind if f not in shown and f not in families
    }
    assert missing == set()


def test_up_is_asked_only_of_our_scrape_jobs() -> None:
    jobs = {
        job["job_name"] for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]
    }
    assert {"t2v-worker", "t2v-exporter", "t2v-webhook"} <= jobs
    asked = {m for _, expr in all_queries() for m in re.findall(r'\bup\{[^}]*job="([^"]+)"', expr)}
    assert asked and asked <= jobs


def test_dashboard_panels_have_a_datasource_and_unique_ids() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (queue) (t2v_queue_length{queue=~"a|b"})', {"t2v_queue_length"}),
        (
            "histogram_quantile(0.95, sum by (le, model) (rate(x_bucket[$__rate_interval])))",
            {"x_bucket"},
        ),
        (
            "time() - max(t2v_last_reconcile_timestamp_seconds) > 300",
            {"t2v_last_reconcile_timestamp_seconds"},
        ),
        ("a > 0 and on() b < bool c offset 5m", {"a", "b", "c"}),
        ("min_over_time(deriv(q[5m])[15m:1m]) > 0", {"q"}),
        ('absent(up{job="t2v-worker"} == 1)', {"up"}),
    ],
)
def test_metric_names_are_pulled_out_of_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_a_renamed_metric_is_caught(tmp_path: Path) -> None:
    queries = [("panel", "sum(rate(t2v_jobs_failed[5m]))"), ("alert", "t2v_queue_lenght > 0")]
    assert len(unknown_names(queries, exported_sample_names(tmp_path))) == 2
    # and a histogram is only asked for by its sample names
    assert unknown_names([("p", "rate(t2v_render_seconds[5m])")], exported_sample_names(tmp_path))
