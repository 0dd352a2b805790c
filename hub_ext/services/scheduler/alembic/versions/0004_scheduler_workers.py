"""A lease per scheduler identity: ``scheduler_workers``.

A restarted scheduler process (same ``SchedulerService.instance_id``) takes
over its identity's row and, in the same transaction, recovers the runs its
dead predecessor's worker id had claimed: at once, rather than after
``stale_after`` without heartbeats. A new table, so nothing existing changes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scheduler_workers",
        sa.Column("identity", sa.String(255), nullable=False),
        sa.Column("worker_id", sa.String(255), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("identity", name=op.f("pk_scheduler_workers")),
    )


def downgrade() -> None:
    op.drop_table("scheduler_workers")
