"""Pipelines: ``pipelines``, ``pipeline_runs``, ``pipeline_steps``; jobs and runs of steps.

A pipeline's steps run as jobs of their own (``jobs.pipeline_id``, ``jobs.step``),
so every step run is a run like any other (claims, retries, timeouts, quotas,
logs); ``runs.pipeline_run_id`` and ``runs.step`` say which pipeline run a run
belongs to. A step's job is named ``<pipeline>/<step>``, so ``jobs.name`` is
wider (a job's own name has no ``/``, so the two never collide).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

STEP_STATUSES = ("pending", "running", "succeeded", "failed", "skipped", "cancelled", "reused")
RUN_STATUSES = ("running", "succeeded", "failed", "cancelled")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.create_table(
        "pipelines",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("source_path", sa.String(4096), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipelines")),
        sa.UniqueConstraint("owner", "name", name=op.f("uq_pipelines_owner_name")),
    )
    op.create_table(
        "pipeline_runs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("pipeline_id", sa.String(32), nullable=False),
        sa.Column("pipeline_version", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("repair_of", sa.String(32), nullable=True),
        sa.Column("workspace", sa.String(4096), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(_in("status", RUN_STATUSES), name=op.f("ck_pipeline_runs_status")),
        sa.ForeignKeyConstraint(
            ["pipeline_id"],
            ["pipelines.id"],
            name=op.f("fk_pipeline_runs_pipeline_id_pipelines"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipeline_runs")),
    )
    op.create_index(
        op.f("ix_pipeline_runs_pipeline_id_created_at"),
        "pipeline_runs",
        ["pipeline_id", "created_at"],
    )
    op.create_table(
        "pipeline_steps",
        sa.Column("pipeline_run_id", sa.String(32), nullable=False),
        sa.Column("step", sa.String(63), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(_in("status", STEP_STATUSES), name=op.f("ck_pipeline_steps_status")),
        sa.ForeignKeyConstraint(
            ["pipeline_run_id"],
            ["pipeline_runs.id"],
            name=op.f("fk_pipeline_steps_pipeline_run_id_pipeline_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pipeline_run_id", "step", name=op.f("pk_pipeline_steps")),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("name", existing_type=sa.String(63), type_=sa.String(160))
        batch.add_column(sa.Column("pipeline_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("step", sa.String(63), nullable=True))
        batch.create_foreign_key(
            op.f("fk_jobs_pipeline_id_pipelines"),
            "pipelines",
            ["pipeline_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch.create_index(op.f("ix_jobs_pipeline_id"), ["pipeline_id"])
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("pipeline_run_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("step", sa.String(63), nullable=True))
        batch.create_foreign_key(
            op.f("fk_runs_pipeline_run_id_pipeline_runs"),
            "pipeline_runs",
            ["pipeline_run_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch.create_index(op.f("ix_runs_pipeline_run_id"), ["pipeline_run_id"])


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_index(op.f("ix_runs_pipeline_run_id"))
        batch.drop_constraint(op.f("fk_runs_pipeline_run_id_pipeline_runs"), type_="foreignkey")
        batch.drop_column("step")
        batch.drop_column("pipeline_run_id")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index(op.f("ix_jobs_pipeline_id"))
        batch.drop_constraint(op.f("fk_jobs_pipeline_id_pipelines"), type_="foreignkey")
        batch.drop_column("step")
        batch.drop_column("pipeline_id")
        batch.alter_column("name", existing_type=sa.String(160), type_=sa.String(63))
    op.drop_table("pipeline_steps")
    op.drop_index(op.f("ix_pipeline_runs_pipeline_id_created_at"), table_name="pipeline_runs")
    op.drop_table("pipeline_runs")
    op.drop_table("pipelines")
