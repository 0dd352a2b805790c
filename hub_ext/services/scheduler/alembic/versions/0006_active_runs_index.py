"""An index of each job's active runs: ``ix_runs_active_job_id``.

The claim asks, for every queued run it may take, whether another run of the
same job is running or claimed (a ``forbid`` job runs once at a time). Most runs
have ended, so PostgreSQL's statistics make ``status IN ('running', 'queued')``
look rare, and the planner looked in the ``(status, not_before)`` index, scanning
every queued run of every job for each candidate: seconds per claim once
thousands of runs were queued (bench/scale.py, 10,000 hourly jobs). A partial
index of the active runs by job answers it with a few rows. Only an index: no
data changes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ACTIVE = "status IN ('running', 'queued')"


def upgrade() -> None:
    op.create_index(
        "ix_runs_active_job_id",
        "runs",
        ["job_id"],
        postgresql_where=sa.text(ACTIVE),
        sqlite_where=sa.text(ACTIVE),
    )


def downgrade() -> None:
    op.drop_index("ix_runs_active_job_id", table_name="runs")
