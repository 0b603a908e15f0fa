"""Create the job table ``t2v_jobs`` and its indexes.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "t2v_jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("idempotency_key", sa.String(255), unique=True),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("model_requested", sa.String(64)),
        sa.Column("model_effective", sa.String(32), nullable=False),
        sa.Column("provider_id", sa.String(64)),
        sa.Column("eta_seconds", sa.Float()),
        sa.Column("future_links", sa.JSON()),
        sa.Column("source_urls", sa.JSON()),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("submit_count", sa.Integer(), nullable=False),
        sa.Column("poll_count", sa.Integer(), nullable=False),
        sa.Column("download_attempts", sa.Integer(), nullable=False),
        sa.Column("retry_count", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("error_kind", sa.String(32)),
        sa.Column("next_check_at", tz),
        sa.Column("deadline_at", tz),
        sa.Column("created_at", tz, nullable=False),
        sa.Column("updated_at", tz, nullable=False),
        sa.Column("queued_at", tz),
        sa.Column("submitting_at", tz),
        sa.Column("processing_at", tz),
        sa.Column("downloading_at", tz),
        sa.Column("succeeded_at", tz),
        sa.Column("failed_at", tz),
        sa.Column("cancelled_at", tz),
    )
    op.create_index("ix_t2v_jobs_status_created", "t2v_jobs", ["status", "created_at"])
    op.create_index("ix_t2v_jobs_created", "t2v_jobs", ["created_at"])
    op.create_index("ix_t2v_jobs_status_next_check", "t2v_jobs", ["status", "next_check_at"])
    op.create_index("ix_t2v_jobs_provider_id", "t2v_jobs", ["provider_id"])


def downgrade() -> None:
    op.drop_table("t2v_jobs")
