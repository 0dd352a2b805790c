"""The scheduler's tables: jobs, their triggers and runs, notifications, workers (SQLAlchemy 2).

These classes are storage only. They never import the API models of
:mod:`.models` (STYLE rule 11, as jupyter-scheduler keeps ``orm.py`` apart from
``models.py``); the one place that converts between the two is :mod:`.store`.
The schema is created and changed only by the Alembic revisions in
``alembic/versions`` (STYLE rule 12); a test proves they produce exactly this
metadata on SQLite and PostgreSQL.

Choices worth knowing:

- Every timestamp is stored in UTC and read back timezone-aware
  (:class:`UTCDateTime`). SQLite has no time zone type; storing naive UTC there
  keeps ``next_fire_at <= now`` a correct comparison of equal-format strings.
- ``runs`` has ``UNIQUE (trigger_id, tick, attempt)``: one cron tick can never
  make two first attempts, even when two scheduler processes race (SECURITY
  rule 7). Manual runs have no trigger and no tick; SQL treats those NULLs as
  distinct, so they never collide.
- ``jobs.version`` is SQLAlchemy's ``version_id_col``: every UPDATE of a job
  increments it and checks the version it read, so two concurrent edits cannot
  silently overwrite each other (the loser gets :class:`~.errors.Conflict`).
- Each run copies what it runs (notebook digest, parameters, profile, timeout,
  job version): a run queued before an edit runs what was scheduled, and its
  record says exactly what that was.
- Policies and statuses are short strings with CHECK constraints rather than
  native enums: adding a value later is a one-line migration on both
  databases, where a PostgreSQL ``ENUM`` needs ``ALTER TYPE`` outside a
  transaction.
- Retention deletes a run's output *files*, never its row: the run's record
  stays (history), with ``outputs_deleted_at`` saying when its files went.
- ``scheduler_workers`` holds one lease per scheduler *identity* (a name
  stable across restarts of one process slot, see ``worker.py``): the worker
  id that holds it now. A new process of the same identity takes the lease
  over and knows its predecessor is dead, so the runs recorded as claimed by
  that worker id are recovered at once, not after ``stale_after``.
- ``notifications.run_id`` has no foreign key, like ``runs.retry_of``: it is
  a record of what happened, and a notification must not block anything.
  ``job_id`` does have one (``ON DELETE CASCADE``): deleting a job deletes
  what was said about it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from ..common.orm import NAMING_CONVENTION, UTCDateTime

CONCURRENCY_POLICIES = ("allow", "forbid", "replace")
MISSED_RUN_POLICIES = ("skip", "run_once")
TRIGGER_KINDS = ("cron", "file", "webhook", "after_job")
#: The runs still to finish: what the index ``ix_runs_active_job_id`` holds.
ACTIVE_RUNS = "status IN ('running', 'queued')"
#: ``skipped`` records a tick that was deliberately not run (the concurrency
#: policy ``forbid``, or a missed tick under ``skip``), so users see why.
RUN_STATUSES = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "timed_out",
    "orphaned",
    "skipped",
)
#: Statuses a run never leaves.
FINAL_STATUSES = ("succeeded", "failed", "cancelled", "timed_out", "orphaned", "skipped")
#: A pipeline run's states, and its steps' (``reused``: carried over by a repair).
PIPELINE_RUN_STATUSES = ("running", "succeeded", "failed", "cancelled")
STEP_STATUSES = ("pending", "running", "succeeded", "failed", "skipped", "cancelled", "reused")
#: What a notification can be about: how a run ended.
NOTIFICATION_EVENTS = ("succeeded", "failed", "timed_out", "orphaned", "cancelled")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    """Declarative base of the scheduler's tables, with fixed constraint names."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[str]: JSON()}


class Job(Base):
    """A notebook snapshot, how to run it, and who may see it."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner", "name"),
        CheckConstraint(_in("concurrency_policy", CONCURRENCY_POLICIES), name="concurrency_policy"),
        CheckConstraint(_in("missed_run_policy", MISSED_RUN_POLICIES), name="missed_run_policy"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255))
    #: A job's name; a pipeline step's job is ``<pipeline>/<step>`` (a job name has no ``/``).
    name: Mapped[str] = mapped_column(String(160))
    #: The pipeline whose step this job runs (hidden from the job list), and the step.
    pipeline_id: Mapped[str | None] = mapped_column(
        ForeignKey("pipelines.id", ondelete="CASCADE"), index=True
    )
    step: Mapped[str | None] = mapped_column(String(63))
    #: sha256 of the .ipynb bytes in the :class:`~.store.SnapshotStore`.
    notebook_digest: Mapped[str] = mapped_column(String(64))
    #: Where the user's notebook lives; informational only, never read.
    source_path: Mapped[str | None] = mapped_column(String(4096))
    parameters: Mapped[dict[str, Any]]
    profile: Mapped[str] = mapped_column(String(63))
    timeout_seconds: Mapped[int] = mapped_column(Integer)
    #: Retries after the first attempt (0 = run once).
    retry_attempts: Mapped[int] = mapped_column(Integer)
    retry_backoff_seconds: Mapped[int] = mapped_column(Integer)
    concurrency_policy: Mapped[str] = mapped_column(String(16))
    missed_run_policy: Mapped[str] = mapped_column(String(16))
    output_formats: Mapped[list[str]]
    shared_with_groups: Mapped[list[str]]
    paused: Mapped[bool] = mapped_column(Boolean)
    #: Whom to tell when a run ends: the API model ``NotifyPolicy`` as JSON
    #: (``{}``, from before notifications, means its defaults).
    notify: Mapped[dict[str, Any]]
    #: Retention of outputs: keep those of the newest ``keep_runs`` finished
    #: runs, and none older than ``keep_days`` days; NULL keeps everything.
    keep_runs: Mapped[int | None] = mapped_column(Integer)
    keep_days: Mapped[int | None] = mapped_column(Integer)
    #: Names of the owner's secrets the runs get (never values; the secrets service has those).
    secrets: Mapped[list[str]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    version: Mapped[int] = mapped_column(Integer)

    triggers: Mapped[list[Trigger]] = relationship(
        back_populates="job",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Trigger.created_at, Trigger.id",
    )
    runs: Mapped[list[Run]] = relationship(
        back_populates="job", cascade="all, delete-orphan", passive_deletes=True, lazy="raise"
    )

    __mapper_args__ = {"version_id_col": version}


class Trigger(Base):
    """What starts runs of a job.

    ``spec`` by kind: ``cron`` ``{"expression", "timezone"}``; ``file``
    ``{"glob"}``; ``webhook`` ``{"secret_sha256"}`` (the hash of the per-job
    secret, never the secret); ``after_job`` ``{"upstream_job_id"}``.
    """

    __tablename__ = "triggers"
    __table_args__ = (CheckConstraint(_in("kind", TRIGGER_KINDS), name="kind"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]]
    #: The next cron tick not yet turned into a run (cron only).
    next_fire_at: Mapped[datetime | None] = mapped_column(index=True)
    last_fired_at: Mapped[datetime | None]
    created_at: Mapped[datetime]

    job: Mapped[Job] = relationship(back_populates="triggers")


class Run(Base):
    """One attempt at running a job's notebook."""

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("trigger_id", "tick", "attempt"),
        CheckConstraint(_in("status", RUN_STATUSES), name="status"),
        CheckConstraint("attempt >= 1", name="attempt"),
        Index(None, "job_id", "status"),
        Index(None, "status", "not_before"),
        # A job's active runs, for the claim's "is another run of this job busy?"
        # (:mod:`.claims`): most runs have ended, so the planner otherwise judges
        # "status IN (running, queued)" rare and scans every queued run per candidate.
        Index(
            "ix_runs_active_job_id",
            "job_id",
            postgresql_where=text(ACTIVE_RUNS),
            sqlite_where=text(ACTIVE_RUNS),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    job_version: Mapped[int] = mapped_column(Integer)
    #: NULL for manual runs, and for runs of a trigger removed since.
    trigger_id: Mapped[str | None] = mapped_column(
        ForeignKey("triggers.id", ondelete="SET NULL"), index=True
    )
    #: The scheduled time of a cron run; NULL otherwise.
    tick: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer)
    #: The run this attempt retries (lineage only, so no foreign key).
    retry_of: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    parameters: Mapped[dict[str, Any]]
    notebook_digest: Mapped[str] = mapped_column(String(64))
    profile: Mapped[str] = mapped_column(String(63))
    timeout_seconds: Mapped[int] = mapped_column(Integer)
    queued_at: Mapped[datetime]
    #: A worker may claim the run from this time on (the tick, or now + backoff).
    not_before: Mapped[datetime]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[datetime | None]
    #: Set when the run must stop (concurrency policy ``replace``, a user's cancel).
    cancel_requested_at: Mapped[datetime | None]
    output_path: Mapped[str | None] = mapped_column(String(4096))
    log_path: Mapped[str | None] = mapped_column(String(4096))
    env_digest: Mapped[str | None] = mapped_column(String(128))
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    #: Progress reported by the worker while the run executes (code cells).
    cells_done: Mapped[int | None] = mapped_column(Integer)
    cells_total: Mapped[int | None] = mapped_column(Integer)
    #: When retention deleted the output and log files (their paths are then NULL).
    outputs_deleted_at: Mapped[datetime | None]
    #: The pipeline run this run is a step of, and the step.
    pipeline_run_id: Mapped[str | None] = mapped_column(
        ForeignKey("pipeline_runs.id", ondelete="CASCADE"), index=True
    )
    step: Mapped[str | None] = mapped_column(String(63))

    job: Mapped[Job] = relationship(back_populates="runs", lazy="raise")


class PipelineRecord(Base):
    """A pipeline: its file's validated content, and where the file is."""

    __tablename__ = "pipelines"
    __table_args__ = (UniqueConstraint("owner", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(63))
    #: ``pipeline.yaml`` relative to the owner's home (read again on an update).
    source_path: Mapped[str] = mapped_column(String(4096))
    #: The file as validated (:class:`~.pipelines.spec.Pipeline` as JSON) and its sha256.
    spec: Mapped[dict[str, Any]]
    digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    version: Mapped[int] = mapped_column(Integer)

    __mapper_args__ = {"version_id_col": version}


class PipelineRunRecord(Base):
    """One run of a pipeline: its steps' states are in ``pipeline_steps``."""

    __tablename__ = "pipeline_runs"
    __table_args__ = (
        CheckConstraint(_in("status", PIPELINE_RUN_STATUSES), name="status"),
        Index(None, "pipeline_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    pipeline_id: Mapped[str] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"))
    pipeline_version: Mapped[int] = mapped_column(Integer)
    #: The pipeline's spec as this run runs it (an edit later changes no running run).
    spec: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    #: The pipeline parameters given for this run (over the file's defaults).
    parameters: Mapped[dict[str, Any]]
    #: The run this one repairs (its succeeded steps are reused), lineage only.
    repair_of: Mapped[str | None] = mapped_column(String(32))
    #: The folder the steps share (files between steps), one per run.
    workspace: Mapped[str] = mapped_column(String(4096))
    created_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]


class PipelineStepRecord(Base):
    """One step of one pipeline run: its state, its latest run, what it recorded."""

    __tablename__ = "pipeline_steps"
    __table_args__ = (CheckConstraint(_in("status", STEP_STATUSES), name="status"),)

    pipeline_run_id: Mapped[str] = mapped_column(
        ForeignKey("pipeline_runs.id", ondelete="CASCADE"), primary_key=True
    )
    step: Mapped[str] = mapped_column(String(63), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    #: The step's latest run (its attempts are runs of the step's job).
    run_id: Mapped[str | None] = mapped_column(String(32))
    #: Values the step recorded (``output(name, value)``), by name.
    outputs: Mapped[dict[str, Any]]
    #: Files the step declared: name -> ``{"path", "sha256"}``.
    files: Mapped[dict[str, Any]]
    reason: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]


class Notification(Base):
    """A message to a user about a run that ended, shown until they mark it read."""

    __tablename__ = "notifications"
    __table_args__ = (
        CheckConstraint(_in("event", NOTIFICATION_EVENTS), name="event"),
        # Serves both "this user's notifications" and "newest first"; a
        # separate index on ``user`` alone would be a redundant prefix of it.
        Index(None, "user", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user: Mapped[str] = mapped_column(String(255))
    #: NULL for a notification about no particular job.
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    #: The run it is about (a record only, so no foreign key).
    run_id: Mapped[str | None] = mapped_column(String(32))
    event: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    read_at: Mapped[datetime | None]


class SchedulerWorker(Base):
    """The lease of one scheduler identity: which process (worker id) holds it, since when."""

    __tablename__ = "scheduler_workers"

    #: ``SchedulerService.instance_id``: stable across restarts, one live process each.
    identity: Mapped[str] = mapped_column(String(255), primary_key=True)
    #: The worker id (``host:pid:random``) of the process that holds it; runs'
    #: ``claimed_by`` name the same ids.
    worker_id: Mapped[str] = mapped_column(String(255))
    started_at: Mapped[datetime]
    #: Renewed while the process lives (every heartbeat interval).
    renewed_at: Mapped[datetime]
