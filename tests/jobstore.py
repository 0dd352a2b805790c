"""The scheduler's job store on a real database, for the tests of the store and its users.

:func:`database` is a migrated SQLite or PostgreSQL database per module (both, by
parameter), :func:`store` a :class:`JobStore` on it, emptied for each test, with a
settable :class:`Clock` starting at :data:`T0`. A module takes the fixtures by assignment
(``store = jobstore.store``), so that test arguments of the same name do not read as
redefinitions.
"""

from __future__ import annotations

import contextlib
import json
from datetime import datetime, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from hub_ext.services.scheduler.db import make_engine, upgrade
from hub_ext.services.scheduler.models import CreateJob
from hub_ext.services.scheduler.orm import Base, Run, Trigger
from hub_ext.services.scheduler.store import JobStore, SnapshotStore

from .conftest import postgres_database

UTC = timezone.utc
#: A Monday, 10:30 UTC.
T0 = datetime(2030, 1, 7, 10, 30, tzinfo=UTC)
HOURLY = {"kind": "cron", "expression": "0 * * * *"}


def notebook(source: str = "x = 1") -> bytes:
    cell = {
        "cell_type": "code",
        "source": source,
        "metadata": {"tags": ["parameters"]},
        "outputs": [],
        "execution_count": None,
    }
    return json.dumps(
        {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    ).encode()


NOTEBOOK = notebook()


class Clock:
    """A settable clock for the store."""

    def __init__(self, now: datetime = T0):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def fresh_database(kind: str, tmp_path):
    if kind == "sqlite":
        return contextlib.nullcontext(f"sqlite:///{tmp_path}/fresh.sqlite")
    return postgres_database()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(request, tmp_path_factory):
    """A migrated database per module and kind."""
    with fresh_database(request.param, tmp_path_factory.mktemp("db")) as url:
        upgrade(url)
        yield url


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(database, tmp_path, clock):
    engine = make_engine(database)
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())
    yield JobStore(engine, SnapshotStore(tmp_path / "snapshots"), clock=clock)
    engine.dispose()


def make_job(store: JobStore, owner: str = "alice", name: str = "report", **fields):
    data = fields.pop("notebook", NOTEBOOK)
    groups = fields.pop("groups", ())
    return store.create_job(
        owner, CreateJob(name=name, profile="tiny", **fields), data, groups=groups
    )


def db_runs(store: JobStore, job_id: str | None = None) -> list[Run]:
    with Session(store.engine) as session:
        stmt = select(Run).order_by(Run.queued_at, Run.attempt, Run.id)
        if job_id:
            stmt = stmt.where(Run.job_id == job_id)
        return list(session.scalars(stmt))


def db_trigger(store: JobStore, trigger_id: str) -> Trigger:
    with Session(store.engine) as session:
        return session.get(Trigger, trigger_id)


def at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return T0.replace(hour=hour, minute=minute, second=second)
