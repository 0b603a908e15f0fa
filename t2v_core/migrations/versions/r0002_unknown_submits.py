"""Count submits whose answer was lost (``unknown_submits``), to bound blind resubmits.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("t2v_jobs") as batch:
        batch.add_column(
            sa.Column("unknown_submits", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("t2v_jobs") as batch:
        batch.drop_column("unknown_submits")
