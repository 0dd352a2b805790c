"""Deployments name the owner's secrets their replicas get: ``deployments.secrets``.

A JSON list of secret names (``[]`` for existing deployments); the values are
kept by the secrets service, never here. Added with a server default so
existing rows get ``[]``, which a second batch drops (the schema stays equal
to the ORM's, which has no server defaults).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(
            sa.Column("secrets", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
    with op.batch_alter_table("deployments") as batch:
        batch.alter_column("secrets", existing_type=sa.JSON(), server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("secrets")
