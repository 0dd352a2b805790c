"""Initial schema: deployments and versions.

Written out in full rather than imported from the ORM: a revision describes
the schema of its time, and ``test_migrations_match_metadata`` proves that
the two agree today.

Revision ID: 0001
Revises:
Create Date: 2025-06-01 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _timestamp(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("profile", sa.String(63), nullable=False),
        sa.Column("replicas", sa.Integer(), nullable=False),
        sa.Column("traffic", sa.JSON(), nullable=False),
        sa.Column("previous_version", sa.Integer(), nullable=True),
        sa.Column("grants", sa.JSON(), nullable=False),
        _timestamp("created_at", nullable=False),
        _timestamp("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployments")),
        sa.UniqueConstraint("owner", "name", name=op.f("uq_deployments_owner_name")),
    )
    op.create_table(
        "versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("model_uri", sa.Text(), nullable=False),
        sa.Column("profile", sa.String(63), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("wanted", sa.Boolean(), nullable=False),
        sa.Column("pending_percent", sa.Integer(), nullable=True),
        sa.Column("training_summary", sa.JSON(), nullable=True),
        sa.Column("signature", sa.JSON(), nullable=True),
        sa.Column("lineage", sa.JSON(), nullable=True),
        _timestamp("created_at", nullable=False),
        _timestamp("ready_at"),
        _timestamp("stopped_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_versions")),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_versions_deployment_id_deployments"),
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "deployment_id", "version", name=op.f("uq_versions_deployment_id_version")
        ),
        sa.CheckConstraint(
            "state IN ('starting', 'ready', 'failed', 'stopped')", name=op.f("ck_versions_state")
        ),
        sa.CheckConstraint(
            "pending_percent IS NULL OR (pending_percent >= 0 AND pending_percent <= 100)",
            name=op.f("ck_versions_pending_percent"),
        ),
    )
    op.create_index(op.f("ix_versions_deployment_id"), "versions", ["deployment_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_versions_deployment_id"), table_name="versions")
    op.drop_table("versions")
    op.drop_table("deployments")
