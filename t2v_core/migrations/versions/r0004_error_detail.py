"""``error_detail``: the structured part of a job's error (what was waited for, how many
tries, the provider's status), beside ``error`` (the message) and ``error_kind``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("t2v_jobs") as batch:
        batch.add_column(sa.Column("error_detail", sa.JSON()))


def downgrade() -> None:
    with op.batch_alter_table("t2v_jobs") as batch:
        batch.drop_column("error_detail")
