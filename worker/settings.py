"""Worker-only settings: the API key, the poll policy, download limits.

Extends ``t2v_core.settings.Settings`` (same `T2V_` prefix). The API key is a
``SecretStr``: its ``repr``/``str`` never show it, so it cannot leak into a log line by
accident; only the ModelsLab client calls ``get_secret_value()``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from t2v_core.fairness import parse_tenant_weights
from t2v_core.settings import Settings


class WorkerSettings(Settings):
    modelslab_api_key: SecretStr | None = Field(None, description="the account key; worker only")
    modelslab_base_url: str = Field("https://modelslab.com/api/v6")
    download_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="hosts allowed for downloads even when private/loopback (comma separated)",
    )
    webhook_secret: SecretStr | None = Field(
        None, description="the last path segment of T2V_WEBHOOK_URL; the receiver checks it"
    )

    callback_secret: SecretStr | None = Field(
        None, description="whsec_... key signing HTTP completion callbacks (Standard Webhooks)"
    )
    callback_max_attempts: int = Field(
        12, ge=1, description="tries of one HTTP callback before it is given up (recorded)"
    )
    callback_retry_base: float = Field(2.0, gt=0, description="first callback retry delay; doubles")
    callback_retry_max: float = Field(600.0, gt=0, description="cap on that delay")
    callback_timeout: float = Field(10.0, gt=0, description="seconds one callback POST may take")
    callback_replay_window: float = Field(
        3600.0,
        ge=0,
        description="after Redis lost its data, on_done tasks published this recently are sent"
        " again (a wipe may have taken them before the application's worker did)",
    )

    # HTTP
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(30.0, gt=0)

    # Polling: first wait follows the provider's eta, then jittered backoff, capped.
    poll_max_first_delay: float = Field(
        900.0, gt=0, description="cap on the first, eta-timed wait (below the visibility timeout)"
    )
    poll_eta_margin: float = Field(
        -0.02,
        ge=-0.5,
        le=1.0,
        description="the first poll comes this fraction after the provider's eta (negative:"
        " before it)",
    )
    poll_min_delay: float = Field(5.0, ge=0)
    poll_max_delay: float = Field(60.0, gt=0)
    poll_backoff: float = Field(1.4, ge=1.0)
    poll_jitter: float = Field(0.2, ge=0, le=1)
    # While jobs wait for an account slot, a render seen late idles a paid slot: look
    # around the eta and then more often (``PollPolicy.when_waiting``).
    poll_waiting_eta_margin: float = Field(
        -0.02,
        ge=-0.5,
        le=1.0,
        description="while jobs wait for a slot, the first poll comes this fraction after the"
        " eta (negative: before it)",
    )
    poll_waiting_min_delay: float = Field(
        1.5, ge=0, description="while jobs wait for a slot, the first delay after the eta poll"
    )
    poll_waiting_backoff: float = Field(
        1.2, ge=1.0, description="while jobs wait for a slot, the growth of that delay"
    )
    submit_unknown_wait: float = Field(
        1800.0,
        ge=0,
        description="seconds a submit whose answer was lost waits (for a webhook) before it is"
        " resubmitted; never at once, so a lost answer is not paid twice",
    )
    lost_submit_hold: float | None = Field(
        None,
        gt=0,
        description="seconds a submit whose answer was lost keeps its account slot (as long as"
        " its render could still run); unset: 1.5 x the longest recent eta for the model + 30 s",
    )
    parked_retry_base: float = Field(
        300.0, gt=0, description="first automatic retry of a parked job; doubles each time"
    )
    parked_retry_max: float = Field(3600.0, gt=0, description="cap on that backoff")
    max_unknown_resubmits: int = Field(
        1, ge=0, description="resubmits after lost answers before failing the job instead"
    )
    claim_lease: float = Field(60.0, gt=0, description="seconds a step holds its job while running")
    download_claim_lease: float = Field(
        120.0,
        gt=0,
        description="seconds a download holds its job before reconcile may send it again (a"
        " worker killed mid-download is re-driven after this; a second copy is harmless)",
    )
    claim_slack: float = Field(5.0, ge=0, description="how early a countdown may fire (clock skew)")
    reconcile_grace: float = Field(60.0, ge=0, description="how overdue a step is before re-drive")
    max_redrives: int = Field(5, ge=1, description="re-drives without progress before failing")
    submit_max_attempts: int = Field(
        8, ge=1, description="transient submit failures before failing"
    )
    transient_base_delay: float = Field(2.0, ge=0, description="first retry delay after a 5xx etc.")

    # Downloads
    download_max_bytes: int = Field(512 * 1024 * 1024, gt=0)
    download_not_found_window: float = Field(
        300.0, ge=0, description="seconds a 404 on an output link is retried before failing"
    )
    download_max_attempts: int = Field(10, ge=1)
    probe_videos: bool = Field(True, description="ffprobe each stored video and store a poster")
    download_inline: bool = Field(
        True,
        description="a poll that finds its render finished downloads it in the same task when"
        " this worker also consumes t2v.download (one task per job fewer); false: always"
        " through the t2v.download queue",
    )
    submit_inline: bool = Field(
        True,
        description="a step that frees an account slot submits the job it lets in itself when"
        " this worker also consumes t2v.submit (one task per job fewer); false: always"
        " through the t2v.submit queue",
    )

    # The slot line's fair share: "acme=3,trial=1" (a tenant not named weighs 1).
    tenant_weights: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict,
        description="TENANT=WEIGHT,... : a tenant's share of the account's slots in its class",
    )

    # Celery
    visibility_timeout: float = Field(
        3600.0, gt=0, description="Redis redelivery timeout; must exceed every countdown"
    )
    worker_prefetch_multiplier: int = Field(1, ge=1)
    task_events: bool = Field(
        False,
        description="send Celery task events from the start (Flower turns them on itself"
        " when it runs; off, a job costs about 10 % less worker CPU)",
    )
    task_time_limit: float = Field(600.0, gt=0)
    reconcile_interval: float = Field(
        10.0, gt=0, description="beat runs reconcile this often (it reads only what is due)"
    )

    # Metrics (README "Metrics"): the worker host's counters, and the state exporter.
    worker_metrics_port: int = Field(
        9841, ge=0, le=65535, description="the worker's /metrics (all its processes); 0: off"
    )
    worker_metrics_host: str = Field("127.0.0.1", description="0.0.0.0 to be scraped remotely")
    metrics_port: int = Field(9840, ge=1, le=65535, description="python -m worker.metrics")

    @field_validator("download_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    @field_validator("tenant_weights", mode="before")
    @classmethod
    def _parse_weights(cls, value: object) -> object:
        if isinstance(value, str):
            return parse_tenant_weights(value)
        return value


@lru_cache(maxsize=1)
def get_worker_settings() -> WorkerSettings:
    return WorkerSettings()
