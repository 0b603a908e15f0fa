"""``priority``, ``tenant`` and ``labels`` on every job: its class in the account's slot
line, the tenant it is shared fairly with, and the caller's own key/values (filterable).

Revision ID: 0005_priority_tenant_labels
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005_priority_tenant_labels"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("t2v_jobs") as batch:
        batch.add_column(
            sa.Column("priority", sa.String(16), nullable=False, server_default="normal")
        )
        batch.add_column(sa.Column("tenant", sa.String(64)))
        batch.add_column(sa.Column("labels", sa.JSON()))
    op.create_index("ix_t2v_jobs_tenant_created", "t2v_jobs", ["tenant", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_t2v_jobs_tenant_created", table_name="t2v_jobs")
    with op.batch_alter_table("t2v_jobs") as batch:
        batch.drop_column("labels")
        batch.drop_column("tenant")
        batch.drop_column("priority")
