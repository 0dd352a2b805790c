"""Jobs name the owner's secrets their runs get: ``jobs.secrets``.

A JSON list of secret names (``[]`` for existing jobs); the values are kept
by the secrets service, never here. Added with a server default so existing
rows get ``[]`` in the same statement, then the default is dropped (a second
batch, as in 0002: the schema stays equal to the ORM's, which has no server
defaults).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("secrets", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("secrets", existing_type=sa.JSON(), server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("secrets")
