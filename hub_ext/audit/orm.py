"""The trail's tables: one row per record, and the retention anchor.

``audit_records`` keeps the record exactly as hashed (``record``, its
canonical JSON) and, beside it, the columns that queries filter on (time,
action, actor, owner, target, outcome). ``shipyard audit verify`` recomputes
the hash from ``record`` and checks that the query columns say the same, so an
edit of either is found. ``audit_anchor`` holds one row: the ``seq`` and
``prev_hash`` of the first record kept after pruning.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class AuditRecord(Base):
    __tablename__ = "audit_records"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    action: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str | None] = mapped_column(String(255))
    owner: Mapped[str | None] = mapped_column(String(255))
    target: Mapped[str | None] = mapped_column(String(1024))
    outcome: Mapped[str] = mapped_column(String(16))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    record: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        Index("ix_audit_records_time", "time"),
        Index("ix_audit_records_actor", "actor"),
        Index("ix_audit_records_action", "action"),
    )


class AuditAnchor(Base):
    __tablename__ = "audit_anchor"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    prev_hash: Mapped[str] = mapped_column(String(64))
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
