"""`parked`: paid renders our own limits held for retry (``parked_at``, ``park_count``,
``expires_at``: after it the provider no longer keeps the output, so parking ends).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("t2v_jobs") as batch:
        batch.add_column(sa.Column("parked_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("park_count", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("t2v_jobs") as batch:
        batch.drop_column("park_count")
        batch.drop_column("expires_at")
        batch.drop_column("parked_at")
