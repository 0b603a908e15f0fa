"""Priorities, tenants and labels: what is refused (field and reason), the tenant weights
setting, and the cost of a slot per flow. Pure logic, no server."""

from __future__ import annotations

import pytest

from t2v_core.errors import RequestInvalid
from t2v_core.fairness import (
    LABEL_VALUE_MAX,
    LABELS_MAX,
    JobOptions,
    check_job_options,
    flow_cost,
    flow_name,
    item_options,
    job_option_errors,
    parse_label_filter,
    parse_tenant_weights,
)


@pytest.mark.parametrize("priority", ["interactive", "normal", "bulk"])
def test_the_three_classes_pass(priority: str) -> None:
    check_job_options(priority, "acme", {"order": "1234"})


@pytest.mark.parametrize(
    ("priority", "tenant", "labels", "field"),
    [
        ("urgent", None, None, "priority"),
        ("Normal", None, None, "priority"),
        (None, None, None, "priority"),
        ("normal", "", None, "tenant"),
        ("normal", "a" * 65, None, "tenant"),
        ("normal", "acme corp", None, "tenant"),
        ("normal", 7, None, "tenant"),
        ("normal", None, ["order"], "labels"),
        ("normal", None, {f"k{i}": "v" for i in range(LABELS_MAX + 1)}, "labels"),
        ("normal", None, {"order": 1234}, "labels.order"),
        ("normal", None, {"order": "x" * (LABEL_VALUE_MAX + 1)}, "labels.order"),
        ("normal", None, {"k" * 64: "v"}, "labels." + "k" * 64),
        ("normal", None, {"bad key": "v"}, "labels.bad key"),
        ("normal", None, {"-lead": "v"}, "labels.-lead"),
    ],
)
def test_bad_options_are_refused_with_the_field_and_the_reason(
    priority: object, tenant: object, labels: object, field: str
) -> None:
    with pytest.raises(RequestInvalid) as caught:
        check_job_options(priority, tenant, labels)
    assert [e.field for e in caught.value.field_errors] == [field]
    assert caught.value.field_errors[0].reason


def test_label_limits_are_inclusive() -> None:
    labels = {f"k{i}": "v" * LABEL_VALUE_MAX for i in range(LABELS_MAX)}
    labels["a" * 63] = labels.pop("k0")
    assert job_option_errors("bulk", "t" * 64, labels) == []


def test_item_options_take_the_items_own_then_the_calls() -> None:
    call = JobOptions("bulk", "acme", {"batch": "7"})
    opts, errors = item_options(3, call, [None, JobOptions(priority="interactive"), None])
    assert errors == []
    assert [o["priority"] for o in opts] == ["bulk", "interactive", "bulk"]
    assert {o["tenant"] for o in opts} == {"acme"}


def test_item_options_name_the_bad_item_by_index() -> None:
    _, errors = item_options(2, JobOptions("normal"), [None, JobOptions(tenant="no spaces")])
    assert [e.field for e in errors] == ["[1].tenant"]
    _, errors = item_options(2, JobOptions("urgent"), None)
    assert [e.field for e in errors] == ["priority"]  # the call's, once, not per item
    _, errors = item_options(2, JobOptions("normal"), [None])
    assert [e.field for e in errors] == ["options"]


def test_tenant_weights_setting() -> None:
    assert parse_tenant_weights("acme=3,trial=1") == {"acme": 3.0, "trial": 1.0}
    assert parse_tenant_weights(" acme = 2.5 , ") == {"acme": 2.5}
    assert parse_tenant_weights("") == {}
    for bad in ("acme", "acme=x", "acme=0", "acme=-1", "acme=5000"):
        with pytest.raises(ValueError, match="T2V_TENANT_WEIGHTS"):
            parse_tenant_weights(bad)


def test_worker_settings_read_the_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.settings import WorkerSettings

    monkeypatch.setenv("T2V_TENANT_WEIGHTS", "acme=3,trial=1")
    settings = WorkerSettings(_env_file=None)  # type: ignore[call-arg]
    assert settings.tenant_weights == {"acme": 3.0, "trial": 1.0}


def test_a_slot_costs_less_for_a_heavier_flow() -> None:
    weights = {"acme": 3.0}
    assert flow_cost("bulk", "acme", weights) == pytest.approx(flow_cost("bulk", "x", weights) / 3)
    assert flow_cost("interactive", None, {}) < flow_cost("normal", None, {})
    assert flow_cost("normal", None, {}) < flow_cost("bulk", None, {})
    assert flow_name("bulk", "acme") == "bulk/acme" and flow_name(None, None) == "normal/"


def test_label_filter_from_the_command_line() -> None:
    assert parse_label_filter(["order=1234", "who=a=b"]) == {"order": "1234", "who": "a=b"}
    with pytest.raises(RequestInvalid, match="KEY=VALUE"):
        parse_label_filter(["order"])
