"""Settings shared by application code and workers, from `T2V_` environment variables.

Built once (``get_settings()``), validated when built, passed in; nothing reads
``os.environ`` at import time. The worker extends this with what only it may know
(the API key, poll policy, download limits) in ``worker.settings.WorkerSettings``:
an application that imports ``producer`` never holds the key.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="T2V_", env_file=".env", extra="ignore", frozen=True
    )

    broker_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Celery broker: redis://... or amqp://... (RabbitMQ, quorum queues)",
    )
    redis_url: str | None = Field(
        None,
        description="Redis of the shared state (slot line, locks, eta lists); default: the"
        " broker URL when the broker is Redis, required when it is not",
    )
    database_url: str = Field(
        "sqlite:///var/t2v.sqlite3",
        description="job records: SQLite file, or postgresql+psycopg://... in production",
    )
    storage_url: str = Field(
        "./var/videos",
        description="local directory (plain path or file:///abs/path) or s3://bucket/prefix",
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, SeaweedFS, R2)"
    )
    webhook_url: str | None = Field(
        None, description="public URL of our webhook receiver; when set, submissions carry it"
    )
    broker_send_timeout: float = Field(
        5.0, gt=0, description="seconds enqueue waits for the broker before raising EnqueueError"
    )
    default_wait_timeout: float = Field(
        900.0, gt=0, description="seconds `Job.wait()` and `t2v wait` wait by default"
    )
    account_slots: int = Field(5, ge=1, description="queued requests the account allows (5/10/15)")
    poll_deadline_seconds: float = Field(
        1800.0,
        gt=0,
        description="a render still processing after this is parked (held for retry); also"
        " the new deadline of a retried one",
    )
    db_pool_size: int = Field(
        5, ge=1, description="PostgreSQL connections each process keeps open (its pool)"
    )
    db_max_overflow: int = Field(
        5, ge=0, description="PostgreSQL connections a process may open beyond its pool"
    )
    db_pool_timeout: float = Field(
        30.0, gt=0, description="seconds a process waits for a free pooled connection"
    )
    db_pgbouncer: bool = Field(
        False,
        description="the database URL is a PgBouncer in transaction mode: no server-side"
        " prepared statements (psycopg prepare_threshold=None)",
    )
    # Completion callbacks (t2v_core.callbacks): defaults for jobs that name none.
    on_done: str | None = Field(
        None, description="Celery task of the application sent [job_id, status] when a job ends"
    )
    on_done_queue: str | None = Field(
        None, description="queue for on_done tasks (unset: Celery's default queue, 'celery')"
    )
    callback_url: str | None = Field(
        None, description="HTTP URL POSTed a signed JSON body when a job ends"
    )
    callback_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="hosts/IPs/networks a callback URL may name though private (comma separated)",
    )
    auto_migrate: bool = Field(
        True, description="bring the job table to the newest schema on first use in a process"
    )

    @field_validator("callback_allowed_hosts", mode="before")
    @classmethod
    def _split_callback_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    @field_validator("database_url")
    @classmethod
    def _sqlite_dir(cls, value: str) -> str:
        # A relative SQLite path needs its directory; create it so a fresh clone just works.
        prefix = "sqlite:///"
        if value.startswith(prefix) and value != "sqlite:///:memory:":
            path = Path(value[len(prefix) :])
            path.parent.mkdir(parents=True, exist_ok=True)
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
