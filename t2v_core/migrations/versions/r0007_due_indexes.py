"""``ix_t2v_jobs_active_due``: the rows reconcile may find due, and only those.

A partial index on (status, next_check_at) over the states reconcile reads (queued,
submitting, processing, downloading, parked, cancelled) with a ``next_check_at``: its size
follows the active jobs, not the table (finished rows, the bulk of a big table, are not in
it), and each of reconcile's per-state queries is one range scan of it, in due order,
stopped at its limit.

Revision ID: 0007_due_indexes
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007_due_indexes"
down_revision: str | None = "0006_callbacks"
branch_labels: str | None = None
depends_on: str | None = None

DUE_STATES = ("queued", "submitting", "processing", "downloading", "parked", "cancelled")
WHERE = sa.text(
    "next_check_at IS NOT NULL AND status IN (" + ", ".join(f"'{s}'" for s in DUE_STATES) + ")"
)


def upgrade() -> None:
    op.create_index(
        "ix_t2v_jobs_active_due",
        "t2v_jobs",
        ["status", "next_check_at"],
        postgresql_where=WHERE,
        sqlite_where=WHERE,
    )


def downgrade() -> None:
    op.drop_index("ix_t2v_jobs_active_due", table_name="t2v_jobs")
