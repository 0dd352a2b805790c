"""The deployer's tables: deployments and their immutable versions (SQLAlchemy 2).

Storage only: these classes never import the API models of :mod:`.models`
(STYLE rule 11); :mod:`.store` converts between the two in one place. The
schema is created and changed only by the Alembic revisions in
``alembic/versions`` (STYLE rule 12); a test proves they produce exactly this
metadata on SQLite and PostgreSQL.

The database holds the *desired* state; what actually runs is the backend's
(:mod:`.backend`). That split is what lets a restarted deployer bring back
every version that should serve without anyone asking:

- ``versions.wanted``: the version should have replicas running (it serves
  traffic, or it is starting to take some). A stopped or failed version has
  it false.
- ``versions.pending_percent``: the share of traffic the version takes when
  it becomes ready (100 for a plain deploy, a promote or a rollback to a
  stopped version; the canary percent otherwise). Null once applied, so a
  restart never applies it twice.
- ``deployments.traffic``: ``{"<version>": percent}`` over ready versions,
  summing to 100 (empty while the first version starts).
- ``deployments.previous_version``: the version that had most of the traffic
  before the current one, which is what a rollback without a version goes
  back to.

- ``versions.canary_*``: a version created with a canary policy: the policy
  (JSON), where its watch is (``canary_state``), when it started and ends
  (fixed when the version first becomes ready, so a restarted deployer
  resumes the same window), the production version it is compared with and
  rolled back to, and the decision (reason, time, figures). A decision is
  recorded in the same transaction as the traffic it moves, and only from
  ``watching``: it is never taken twice.

Timestamps are :class:`hub_ext.services.common.orm.UTCDateTime` (UTC,
timezone-aware on both databases); states are short strings with CHECK
constraints, not native enums (a new value is a one-line migration).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from ..common.orm import NAMING_CONVENTION, UTCDateTime

#: What a version can be; ``starting`` becomes ``ready`` or ``failed``.
VERSION_STATES = ("starting", "ready", "failed", "stopped")
#: Where a canary's watch is; ``waiting`` becomes ``watching``, then one of the others.
CANARY_STATES = ("waiting", "watching", "promoted", "rolled_back", "stopped")


class Base(DeclarativeBase):
    """Declarative base of the deployer's tables, with fixed constraint names."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class Deployment(Base):
    """A named model endpoint of one owner: its versions, traffic split and grants."""

    __tablename__ = "deployments"
    __table_args__ = (UniqueConstraint("owner", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(63))
    profile: Mapped[str] = mapped_column(String(63))
    replicas: Mapped[int] = mapped_column(Integer)
    traffic: Mapped[dict[str, Any]] = mapped_column(JSON)
    previous_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    grants: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: Names of the owner's secrets the replicas get (never values: the secrets service has those).
    secrets: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    versions: Mapped[list[Version]] = relationship(
        back_populates="deployment",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Version.version",
    )


class Version(Base):
    """One immutable model version of a deployment, and whether it should run."""

    __tablename__ = "versions"
    __table_args__ = (
        UniqueConstraint("deployment_id", "version"),
        CheckConstraint(f"state IN ({', '.join(repr(s) for s in VERSION_STATES)})", name="state"),
        CheckConstraint(
            "pending_percent IS NULL OR (pending_percent >= 0 AND pending_percent <= 100)",
            name="pending_percent",
        ),
        CheckConstraint(
            f"canary_state IS NULL OR canary_state IN ({', '.join(repr(s) for s in CANARY_STATES)})",
            name="canary_state",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    deployment_id: Mapped[int] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    model_uri: Mapped[str] = mapped_column(Text)
    profile: Mapped[str] = mapped_column(String(63))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    wanted: Mapped[bool] = mapped_column(Boolean)
    pending_percent: Mapped[int | None] = mapped_column(Integer, nullable=True)
    training_summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    signature: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    lineage: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime]
    ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: The canary policy the version was created with (null: no watched canary).
    canary_policy: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    canary_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    canary_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    canary_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    canary_ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    canary_decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: The production version when the canary became ready: compared with, rolled back to.
    canary_baseline: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: ``{"canary": {...}, "baseline": {...}}``: the figures the decision was taken on.
    canary_figures: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    deployment: Mapped[Deployment] = relationship(back_populates="versions")
