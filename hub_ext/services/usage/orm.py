"""SQLAlchemy tables of the usage service; never imports the API models (STYLE rule 11).

- ``usage_instances``: one row per cgroup instance (a server started once, a run, a
  step, a replica): its labels, its totals, and the last reading counted (the
  cumulative CPU counter, memory, time), against which the next is counted;
- ``usage_hours``: what each instance used in each hour (by the hour of the
  reading), for reports over any period.

Times are seconds since the epoch (floats), the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, ForeignKey, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Instance(Base):
    """One cgroup instance and what was counted of it."""

    __tablename__ = "usage_instances"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    owner: Mapped[str] = mapped_column(String(255), index=True)
    object: Mapped[str] = mapped_column(String(512))
    profile: Mapped[str] = mapped_column(String(63), index=True)
    parent: Mapped[str] = mapped_column(String(255))
    cgroup: Mapped[str] = mapped_column(String(255))
    gpus: Mapped[int] = mapped_column(Integer)
    cpu_limit: Mapped[float | None] = mapped_column(Float, nullable=True)
    mem_limit: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    started: Mapped[float] = mapped_column(Float)
    #: set once the last reading is counted (or the cgroup was lost)
    ended: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)
    last_at: Mapped[float] = mapped_column(Float)
    last_cpu_usec: Mapped[int] = mapped_column(BigInteger)
    last_mem: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    peak_mem: Mapped[int] = mapped_column(BigInteger)
    peak_cores: Mapped[float] = mapped_column(Float)
    last_busy_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    cpu_seconds: Mapped[float] = mapped_column(Float)
    mem_gib_hours: Mapped[float] = mapped_column(Float)
    gpu_hours: Mapped[float] = mapped_column(Float)
    wall_seconds: Mapped[float] = mapped_column(Float)
    readings: Mapped[int] = mapped_column(Integer)


class Hour(Base):
    """What one instance used in one hour."""

    __tablename__ = "usage_hours"

    instance_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("usage_instances.id", ondelete="CASCADE"), primary_key=True
    )
    #: the hour's start, seconds since the epoch
    hour: Mapped[int] = mapped_column(BigInteger, primary_key=True, index=True)
    cpu_seconds: Mapped[float] = mapped_column(Float)
    mem_gib_hours: Mapped[float] = mapped_column(Float)
    gpu_hours: Mapped[float] = mapped_column(Float)
    wall_seconds: Mapped[float] = mapped_column(Float)
