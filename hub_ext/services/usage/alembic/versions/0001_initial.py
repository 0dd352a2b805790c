"""Usage accounting: cgroup instances and their hourly usage.

Revision ID: 0001
Revises:
Create Date: 2026-12-07 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_instances",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("object", sa.String(512), nullable=False),
        sa.Column("profile", sa.String(63), nullable=False),
        sa.Column("parent", sa.String(255), nullable=False),
        sa.Column("cgroup", sa.String(255), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("cpu_limit", sa.Float(), nullable=True),
        sa.Column("mem_limit", sa.BigInteger(), nullable=True),
        sa.Column("started", sa.Float(), nullable=False),
        sa.Column("ended", sa.Float(), nullable=True),
        sa.Column("last_at", sa.Float(), nullable=False),
        sa.Column("last_cpu_usec", sa.BigInteger(), nullable=False),
        sa.Column("last_mem", sa.BigInteger(), nullable=True),
        sa.Column("peak_mem", sa.BigInteger(), nullable=False),
        sa.Column("peak_cores", sa.Float(), nullable=False),
        sa.Column("last_busy_at", sa.Float(), nullable=True),
        sa.Column("cpu_seconds", sa.Float(), nullable=False),
        sa.Column("mem_gib_hours", sa.Float(), nullable=False),
        sa.Column("gpu_hours", sa.Float(), nullable=False),
        sa.Column("wall_seconds", sa.Float(), nullable=False),
        sa.Column("readings", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_usage_instances_owner", "usage_instances", ["owner"])
    op.create_index("ix_usage_instances_profile", "usage_instances", ["profile"])
    op.create_index("ix_usage_instances_ended", "usage_instances", ["ended"])
    op.create_table(
        "usage_hours",
        sa.Column("instance_id", sa.String(32), nullable=False),
        sa.Column("hour", sa.BigInteger(), nullable=False),
        sa.Column("cpu_seconds", sa.Float(), nullable=False),
        sa.Column("mem_gib_hours", sa.Float(), nullable=False),
        sa.Column("gpu_hours", sa.Float(), nullable=False),
        sa.Column("wall_seconds", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["instance_id"], ["usage_instances.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("instance_id", "hour"),
    )
    op.create_index("ix_usage_hours_hour", "usage_hours", ["hour"])


def downgrade() -> None:
    op.drop_index("ix_usage_hours_hour", table_name="usage_hours")
    op.drop_table("usage_hours")
    op.drop_index("ix_usage_instances_ended", table_name="usage_instances")
    op.drop_index("ix_usage_instances_profile", table_name="usage_instances")
    op.drop_index("ix_usage_instances_owner", table_name="usage_instances")
    op.drop_table("usage_instances")
