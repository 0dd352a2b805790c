"""Notifications, output retention and run progress.

- ``jobs``: ``notify`` (JSON, ``{}`` for existing jobs: the policy's
  defaults), ``keep_runs`` and ``keep_days`` (NULL: keep every output).
- ``runs``: ``cells_done`` and ``cells_total`` (progress), ``outputs_deleted_at``
  (retention deleted the files; the run's record stays).
- ``notifications``: messages to users about runs that ended.

``jobs.notify`` is added with a server default so that existing rows get
``{}`` in the same statement, and the default is then dropped: the service
always writes the column, and the schema stays equal to the ORM's (no
server defaults anywhere). On SQLite, dropping a default rebuilds ``jobs``
by copy (batch mode); ``env.py`` switches foreign keys off for that, or
SQLite's ``DROP TABLE`` would cascade into ``triggers`` and ``runs``. Named
CHECK and UNIQUE constraints are reflected and kept by the rebuild.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _timestamp(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("notify", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )
        batch.add_column(sa.Column("keep_runs", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("keep_days", sa.Integer(), nullable=True))
    # A second batch: in one, SQLite's rebuild would copy rows into a ``notify``
    # that has already lost its default, and fail NOT NULL.
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("notify", existing_type=sa.JSON(), server_default=None)

    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("cells_done", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("cells_total", sa.Integer(), nullable=True))
        batch.add_column(_timestamp("outputs_deleted_at"))

    op.create_table(
        "notifications",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=True),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        _timestamp("created_at", nullable=False),
        _timestamp("read_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_notifications_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "event IN ('succeeded', 'failed', 'timed_out', 'orphaned', 'cancelled')",
            name=op.f("ck_notifications_event"),
        ),
    )
    op.create_index(
        op.f("ix_notifications_user_created_at"), "notifications", ["user", "created_at"]
    )
    op.create_index(op.f("ix_notifications_job_id"), "notifications", ["job_id"])


def downgrade() -> None:
    op.drop_table("notifications")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("outputs_deleted_at")
        batch.drop_column("cells_total")
        batch.drop_column("cells_done")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("keep_days")
        batch.drop_column("keep_runs")
        batch.drop_column("notify")
