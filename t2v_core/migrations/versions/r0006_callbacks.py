"""Completion callbacks: what to notify (``on_done``, ``on_done_queue``, ``callback_url``)
and the at-least-once record of each notification (``callback_status``/``callback_seq``:
which one is pending; ``callback_due_at``: due and not yet delivered, the index reconcile
reads; ``callback_delivered_at``, ``on_done_sent_at``, ``callback_attempts``,
``callback_error``).

Revision ID: 0006_callbacks
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006_callbacks"
down_revision: str | None = "0005_priority_tenant_labels"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("t2v_jobs") as batch:
        batch.add_column(sa.Column("on_done", sa.String(200)))
        batch.add_column(sa.Column("on_done_queue", sa.String(200)))
        batch.add_column(sa.Column("callback_url", sa.Text()))
        batch.add_column(sa.Column("callback_status", sa.String(16)))
        batch.add_column(
            sa.Column("callback_seq", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("callback_due_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("callback_delivered_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("on_done_sent_at", sa.DateTime(timezone=True)))
        batch.add_column(
            sa.Column("callback_attempts", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("callback_error", sa.Text()))
    op.create_index("ix_t2v_jobs_callback_due", "t2v_jobs", ["callback_due_at"])
    op.create_index("ix_t2v_jobs_on_done_sent", "t2v_jobs", ["on_done_sent_at"])


def downgrade() -> None:
    op.drop_index("ix_t2v_jobs_on_done_sent", table_name="t2v_jobs")
    op.drop_index("ix_t2v_jobs_callback_due", table_name="t2v_jobs")
    with op.batch_alter_table("t2v_jobs") as batch:
        for column in (
            "callback_error",
            "callback_attempts",
            "on_done_sent_at",
            "callback_delivered_at",
            "callback_due_at",
            "callback_seq",
            "callback_status",
            "callback_url",
            "on_done_queue",
            "on_done",
        ):
            batch.drop_column(column)
