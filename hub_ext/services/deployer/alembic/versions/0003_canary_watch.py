"""Versions created with a canary policy are watched: ``versions.canary_*``.

The policy (JSON), the watch's state, its start and end (so a restarted
deployer resumes the same window), the production version it is compared with
and rolled back to, and the decision's reason, time and figures. All nullable:
existing versions have no watch.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

STATES = "'waiting', 'watching', 'promoted', 'rolled_back', 'stopped'"


def upgrade() -> None:
    with op.batch_alter_table("versions") as batch:
        batch.add_column(sa.Column("canary_policy", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("canary_state", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("canary_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("canary_started_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("canary_ends_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("canary_decided_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("canary_baseline", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("canary_figures", sa.JSON(), nullable=True))
        batch.create_check_constraint(
            op.f("ck_versions_canary_state"), f"canary_state IS NULL OR canary_state IN ({STATES})"
        )


def downgrade() -> None:
    with op.batch_alter_table("versions") as batch:
        batch.drop_constraint(op.f("ck_versions_canary_state"), type_="check")
        for column in (
            "canary_figures",
            "canary_baseline",
            "canary_decided_at",
            "canary_ends_at",
            "canary_started_at",
            "canary_reason",
            "canary_state",
            "canary_policy",
        ):
            batch.drop_column(column)
