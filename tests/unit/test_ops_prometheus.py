"""ops/prometheus: the alert rules and the scrape config, checked by Prometheus's own promtool.

`promtool check rules`, `promtool check config` and `promtool test rules` (the unit tests in
alerts.test.yml) run for real; Debian's `prometheus` package gives promtool and `.ci/run`
installs it. Besides, every alert must have a test where it fires and one where it does not,
a runbook section, and the unit tests must bite: a rule with a changed threshold fails them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import need

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "ops" / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
ALERT_TESTS = PROM_DIR / "alerts.test.yml"
CONFIG = PROM_DIR / "prometheus.yml"
RUNBOOK = REPO / "ops" / "RUNBOOK.md"


def promtool(*args: str, cwd: Path = PROM_DIR) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    need(exe is not None, "promtool not installed (apt-get install prometheus)")
    assert exe is not None
    return subprocess.run(
        [exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def alert_rules() -> dict[str, dict[str, Any]]:
    rules = {}
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rules[rule["alert"]] = rule
    return rules


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", ALERTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_check_config() -> None:
    result = promtool("check", "config", CONFIG.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    result = promtool("test", "rules", ALERT_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def cases_by_alert() -> dict[str, dict[str, int]]:
    """alert -> how many unit-test evaluations expect it firing / not firing."""
    counts: dict[str, dict[str, int]] = {}
    for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            kind = "firing" if case.get("exp_alerts") else "silent"
            per = counts.setdefault(case["alertname"], {"firing": 0, "silent": 0})
            per[kind] += 1
    return counts


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    counts = cases_by_alert()
    assert set(counts) == set(alert_rules())
    assert {a: c for a, c in counts.items() if not (c["firing"] and c["silent"])} == {}


def test_every_alert_has_severity_summary_and_a_runbook_section() -> None:
    runbook = RUNBOOK.read_text()
    headings = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", runbook, re.M)
    }
    for name, rule in alert_rules().items():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor == name.lower() and anchor in headings, name


@pytest.mark.parametrize(
    ("alert", "old", "new"),
    [
        ("T2VOldestWaitingJobTooOld", "> 900", "> 9000"),
        ("T2VSlotsIdleWhileJobsWait", "max(t2v_slots_in_use) <", "max(t2v_slots_in_use) <="),
        ("T2VNoWorkerAlive", "2m", "20m"),
        ("T2VHighFailureRate", ">= 5", ">= 1"),
    ],
)
def test_the_unit_tests_catch_a_changed_rule(
    tmp_path: Path, alert: str, old: str, new: str
) -> None:
    """A rule edited behind the tests' back fails `promtool test rules`."""
    text = ALERTS.read_text()
    start = text.index(f"- alert: {alert}")
    end = text.find("- alert:", start + 1)
    end = len(text) if end < 0 else end
    block = text[start:end]
    assert old in block
    (tmp_path / ALERTS.name).write_text(text[:start] + block.replace(old, new, 1) + text[end:])
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    assert promtool("check", "rules", ALERTS.name, cwd=tmp_path).returncode == 0
    result = promtool("test", "rules", ALERT_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0
    assert alert in result.stdout + result.stderr


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    (tmp_path / "alerts.yml").write_text(ALERTS.read_text().replace("deriv(", "derive(", 1))
    assert promtool("check", "rules", "alerts.yml", cwd=tmp_path).returncode != 0


def test_dashboard_and_keda_queries_parse(tmp_path: Path) -> None:
    """Every PromQL string of the dashboard and the KEDA triggers parses (as promtool sees
    it), Grafana's variables filled in as Grafana would."""
    from tests.unit.test_ops_metric_names import all_queries

    rules = []
    for i, (where, expr) in enumerate(all_queries()):
        expr = expr.replace("$__rate_interval", "5m").replace("$model", ".*")
        rules.append({"record": f"check:q{i}", "expr": expr, "labels": {"where": where[:60]}})
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    result = promtool("check", "rules", path.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "broken.yml"
    rules[0]["expr"] = rules[0]["expr"] + " +"
    broken.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    assert promtool("check", "rules", broken.name, cwd=tmp_path).returncode != 0
