"""The Celery configuration the issue asks for, checked as data (no broker needed)."""

from __future__ import annotations

import pytest

from t2v_core.errors import ConfigError
from t2v_core.names import QUEUE_DOWNLOAD, QUEUE_MAINTENANCE, QUEUE_POLL, QUEUE_SUBMIT
from worker.celery_app import celery_config, longest_countdown
from worker.settings import WorkerSettings


def test_config_has_late_acks_events_and_one_queue_per_step() -> None:
    conf = celery_config(WorkerSettings())
    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is False  # no redelivery loop on a crash
    assert conf["task_ignore_result"] is True
    # Off unless asked for (Flower turns them on itself): a publish per task.
    assert conf["worker_send_task_events"] is False and conf["task_send_sent_event"] is False
    assert conf["worker_prefetch_multiplier"] == 1
    assert {q.name for q in conf["task_queues"]} == {
        QUEUE_SUBMIT,
        QUEUE_POLL,
        QUEUE_DOWNLOAD,
        QUEUE_MAINTENANCE,
    }
    assert conf["task_routes"]["t2v.poll"] == {"queue": QUEUE_POLL}
    assert conf["beat_schedule"]["t2v-reconcile"]["task"] == "t2v.reconcile"


def test_visibility_timeout_must_exceed_longest_countdown() -> None:
    settings = WorkerSettings()
    assert celery_config(settings)["broker_transport_options"][
        "visibility_timeout"
    ] > longest_countdown(settings)
    with pytest.raises(ConfigError, match="VISIBILITY_TIMEOUT"):
        celery_config(WorkerSettings(visibility_timeout=longest_countdown(settings)))


def test_api_key_is_secret_in_settings_repr() -> None:
    settings = WorkerSettings(modelslab_api_key="sk-live-very-secret")
    assert "sk-live-very-secret" not in repr(settings)
    assert "sk-live-very-secret" not in str(settings.model_dump())
    assert "sk-live-very-secret" not in str(celery_config(settings))
