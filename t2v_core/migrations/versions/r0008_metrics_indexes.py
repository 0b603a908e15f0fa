"""Indexes for the metrics exporter: jobs that reached a final state after a time, so a
scrape counts only the recent ones (``worker.state_counts``), never the whole table.

Revision ID: 0008_metrics_indexes
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision: str = "0008_metrics_indexes"
down_revision: str | None = "0007_due_indexes"
branch_labels: str | None = None
depends_on: str | None = None

INDEXES = {
    "ix_t2v_jobs_status_succeeded": ["status", "succeeded_at"],
    "ix_t2v_jobs_status_failed": ["status", "failed_at"],
    "ix_t2v_jobs_status_cancelled": ["status", "cancelled_at"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "t2v_jobs", columns)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="t2v_jobs")
