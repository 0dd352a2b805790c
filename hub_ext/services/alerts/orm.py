"""SQLAlchemy tables of the alerts service; never imports the API models (STYLE rule 11).

- ``alerts``: one row per episode of an alert: its key (rule and labels), the
  owner, pending → firing → resolved with the times, and whether each
  notification went out. An episode is open while ``state`` is pending or
  firing; at most one open episode per key.
- ``alert_targets``: a user's own notification targets (apprise URLs), as one
  Fernet token (they may hold passwords or webhook tokens).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Float, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True)}


class Alert(Base):
    """One episode of an alert."""

    __tablename__ = "alerts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(512), index=True)
    rule: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str | None] = mapped_column(String(255), index=True)
    #: The labels as sorted JSON (``{"deployment": "iris", "version": "2"}``).
    labels: Mapped[str] = mapped_column(Text)
    severity: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text)
    value: Mapped[float | None] = mapped_column(Float)
    #: pending, firing or resolved.
    state: Mapped[str] = mapped_column(String(16), index=True)
    pending_since: Mapped[datetime]
    started_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    notified_firing: Mapped[bool] = mapped_column(Boolean, default=False)
    notified_resolved: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime]


class Targets(Base):
    """A user's notification targets, encrypted."""

    __tablename__ = "alert_targets"

    owner: Mapped[str] = mapped_column(String(255), primary_key=True)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime]
