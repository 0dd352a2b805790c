"""Initial schema: jobs, triggers, runs.

Written out in full rather than imported from the ORM: a revision describes
the schema of its time, and the test ``test_migrations_match_metadata`` proves
that the two agree today.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
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
        "jobs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("notebook_digest", sa.String(64), nullable=False),
        sa.Column("source_path", sa.String(4096), nullable=True),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("profile", sa.String(63), nullable=False),
        sa.Column("timeout_seconds", sa.Integer(), nullable=False),
        sa.Column("retry_attempts", sa.Integer(), nullable=False),
        sa.Column("retry_backoff_seconds", sa.Integer(), nullable=False),
        sa.Column("concurrency_policy", sa.String(16), nullable=False),
        sa.Column("missed_run_policy", sa.String(16), nullable=False),
        sa.Column("output_formats", sa.JSON(), nullable=False),
        sa.Column("shared_with_groups", sa.JSON(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        _timestamp("created_at", nullable=False),
        _timestamp("updated_at", nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("owner", "name", name=op.f("uq_jobs_owner_name")),
        sa.CheckConstraint(
            "concurrency_policy IN ('allow', 'forbid', 'replace')",
            name=op.f("ck_jobs_concurrency_policy"),
        ),
        sa.CheckConstraint(
            "missed_run_policy IN ('skip', 'run_once')", name=op.f("ck_jobs_missed_run_policy")
        ),
    )
    op.create_table(
        "triggers",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        _timestamp("next_fire_at"),
        _timestamp("last_fired_at"),
        _timestamp("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_triggers")),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_triggers_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.CheckConstraint(
            "kind IN ('cron', 'file', 'webhook', 'after_job')", name=op.f("ck_triggers_kind")
        ),
    )
    op.create_index(op.f("ix_triggers_job_id"), "triggers", ["job_id"])
    op.create_index(op.f("ix_triggers_next_fire_at"), "triggers", ["next_fire_at"])
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("job_version", sa.Integer(), nullable=False),
        sa.Column("trigger_id", sa.String(32), nullable=True),
        _timestamp("tick"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("retry_of", sa.String(32), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("notebook_digest", sa.String(64), nullable=False),
        sa.Column("profile", sa.String(63), nullable=False),
        sa.Column("timeout_seconds", sa.Integer(), nullable=False),
        _timestamp("queued_at", nullable=False),
        _timestamp("not_before", nullable=False),
        _timestamp("started_at"),
        _timestamp("ended_at"),
        sa.Column("claimed_by", sa.String(255), nullable=True),
        _timestamp("heartbeat_at"),
        _timestamp("cancel_requested_at"),
        sa.Column("output_path", sa.String(4096), nullable=True),
        sa.Column("log_path", sa.String(4096), nullable=True),
        sa.Column("env_digest", sa.String(128), nullable=True),
        sa.Column("mlflow_run_id", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_runs_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["trigger_id"],
            ["triggers.id"],
            name=op.f("fk_runs_trigger_id_triggers"),
            ondelete="SET NULL",
        ),
        sa.UniqueConstraint(
            "trigger_id", "tick", "attempt", name=op.f("uq_runs_trigger_id_tick_attempt")
        ),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', "
            "'timed_out', 'orphaned', 'skipped')",
            name=op.f("ck_runs_status"),
        ),
        sa.CheckConstraint("attempt >= 1", name=op.f("ck_runs_attempt")),
    )
    op.create_index(op.f("ix_runs_job_id_status"), "runs", ["job_id", "status"])
    op.create_index(op.f("ix_runs_status_not_before"), "runs", ["status", "not_before"])
    op.create_index(op.f("ix_runs_trigger_id"), "runs", ["trigger_id"])


def downgrade() -> None:
    op.drop_table("runs")
    op.drop_table("triggers")
    op.drop_table("jobs")
