"""The Celery configuration the issue asks for, checked as data (no broker needed)."""

from __future__ import annotations

import pytest

from t2v_core.errors import ConfigError
from t2v_core.names import (
    QUEUE_CALLBACKS,
    QUEUE_DOWNLOAD,
    QUEUE_MAINTENANCE,
    QUEUE_POLL,
    QUEUE_SUBMIT,
)
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
        QUEUE_CALLBACKS,
    }
    assert conf["task_routes"]["t2v.poll"] == {"queue": QUEUE_POLL}
    assert conf["task_routes"]["t2v.callback"] == {"queue": QUEUE_CALLBACKS}
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


AMQP = "amqp://guest:guest@127.0.0.1:5672/t2v"


def test_rabbitmq_needs_t2v_redis_url_at_start() -> None:
    with pytest.raises(ConfigError, match="T2V_REDIS_URL"):
        celery_config(WorkerSettings(broker_url=AMQP, redis_url=None))


def test_rabbitmq_gets_quorum_queues_on_a_topic_exchange_and_native_delays() -> None:
    from celery.utils.quorum_queues import detect_quorum_queues

    settings = WorkerSettings(broker_url=AMQP, redis_url="redis://127.0.0.1:6379/3")
    # No visibility timeout on RabbitMQ: a short one is no error there.
    conf = celery_config(settings.model_copy(update={"visibility_timeout": 1.0}))
    assert "visibility_timeout" not in conf["broker_transport_options"]
    assert conf["worker_detect_quorum_queues"] is True
    assert conf["broker_native_delayed_delivery_queue_type"] == "quorum"
    for queue in conf["task_queues"]:
        assert queue.queue_arguments == {"x-queue-type": "quorum"}
        assert queue.exchange.type == "topic"  # native delayed delivery refuses direct ones
    from celery import Celery

    probe = Celery(set_as_current=False)
    probe.conf.update(task_queues=conf["task_queues"])
    assert detect_quorum_queues(probe, "amqp")[0]


def test_shared_redis_url_follows_a_redis_broker_or_t2v_redis_url() -> None:
    from t2v_core.brokers import shared_redis_url

    redis_broker = WorkerSettings(broker_url="redis://10.0.0.1:6379/0")
    assert shared_redis_url(redis_broker) == "redis://10.0.0.1:6379/0"
    both = WorkerSettings(broker_url=AMQP, redis_url="redis://10.0.0.2:6379/1")
    assert shared_redis_url(both) == "redis://10.0.0.2:6379/1"
    with pytest.raises(ConfigError, match="T2V_REDIS_URL"):
        shared_redis_url(WorkerSettings(broker_url=AMQP, redis_url="amqp://x/"))


def test_pool_options_size_postgres_pools_and_turn_prepares_off_for_pgbouncer() -> None:
    from t2v_core.db import pool_options

    pg = "postgresql+psycopg://u@127.0.0.1:6432/t2v"
    opts = pool_options(
        WorkerSettings(database_url=pg, db_pool_size=1, db_max_overflow=2, db_pgbouncer=True)
    )
    assert opts == {
        "pool_size": 1,
        "max_overflow": 2,
        "pool_timeout": 30.0,
        "connect_args": {"prepare_threshold": None},
    }
    assert "connect_args" not in pool_options(WorkerSettings(database_url=pg))
    assert pool_options(WorkerSettings(database_url="sqlite:///:memory:")) == {}


def test_downloads_and_submits_run_in_place_only_on_a_worker_that_consumes_their_queue() -> None:
    from t2v_core.names import TASK_DOWNLOAD, TASK_SUBMIT
    from worker.tasks import app, inline_steps

    queues = app.amqp.queues
    before = queues._consume_from
    try:
        assert inline_steps(True, True) == {TASK_DOWNLOAD, TASK_SUBMIT}  # no -Q: every queue
        assert inline_steps(False, False) == frozenset()
        assert inline_steps(False, True) == {TASK_SUBMIT}
        queues.select([QUEUE_POLL])  # a host started with -Q t2v.poll
        assert inline_steps(True, True) == frozenset()
        queues.select([QUEUE_POLL, QUEUE_DOWNLOAD])
        assert inline_steps(True, True) == {TASK_DOWNLOAD}
        queues.select([QUEUE_POLL, QUEUE_SUBMIT])
        assert inline_steps(True, True) == {TASK_SUBMIT}
    finally:
        queues._consume_from = before


def test_countdowns_through_rabbitmqs_delay_chain_leave_early_and_never_below_zero() -> None:
    from worker.tasks import AMQP_DELAY_LEAD, broker_countdown, lead_for

    assert lead_for("amqp://guest:guest@127.0.0.1:5672/t2v") == AMQP_DELAY_LEAD == 1.0
    assert lead_for("redis://127.0.0.1:6379/0") == 0.0  # the worker holds the message itself
    assert broker_countdown(10.0, 1.0) == 9.0
    assert broker_countdown(0.4, 1.0) == 0.0  # due at once
    assert broker_countdown(0.0, 1.0) == 0.0
    assert broker_countdown(-3.0, 0.0) == 0.0
    assert broker_countdown(12.34567, 0.0) == 12.346


def test_rabbitmq_needs_a_claim_slack_that_covers_the_early_polls() -> None:
    amqp = {"broker_url": "amqp://guest:guest@127.0.0.1:5672/t2v", "redis_url": "redis://x"}
    with pytest.raises(ConfigError, match="T2V_CLAIM_SLACK"):
        celery_config(WorkerSettings(**amqp, claim_slack=0.5))
    assert celery_config(WorkerSettings(**amqp, claim_slack=1.0))["task_acks_late"]
