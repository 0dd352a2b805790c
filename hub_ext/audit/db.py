"""Engines and schema upgrades for the trail's database.

The same rules as the services' databases (see
``hub_ext/services/scheduler/db.py`` for the reasons): SQLite in WAL mode with
a busy timeout and SQLAlchemy-emitted ``BEGIN``; PostgreSQL through psycopg 3;
Alembic revisions in ``alembic/`` run without an ``alembic.ini`` through the
shared :func:`hub_ext.services.common.migrations.run_migrations`. The version
table is ``audit_alembic_version`` so the trail can share a PostgreSQL
database with a service without the two fighting over ``alembic_version``.

Writers need not wait for a busy database: they hold the trail's file lock
while they insert, so SQLite sees one writer at a time; readers (``list``,
``verify``) never block them in WAL mode.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

ALEMBIC_DIR = Path(__file__).with_name("alembic")
VERSION_TABLE = "audit_alembic_version"
SQLITE_BUSY_TIMEOUT = 30.0

#: PostgreSQL advisory lock keys: upgrades, and appends to the chain.
UPGRADE_LOCK_KEY = 0x5348_4950_5944_00A1
CHAIN_LOCK_KEY = 0x5348_4950_5944_00A2


def normalize_url(db_url: str) -> str:
    """``db_url`` with PostgreSQL URLs pointed at psycopg 3."""
    url = make_url(db_url)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def make_engine(db_url: str, **kwargs: Any) -> Engine:
    """An engine for the trail's database (SQLite pragmas as in the services)."""
    url = make_url(normalize_url(db_url))
    if url.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        return create_engine(url, **kwargs)
    connect_args = kwargs.pop("connect_args", {})
    connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT)
    connect_args.setdefault("check_same_thread", False)
    engine = create_engine(url, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
        if url.database and url.database != ":memory:":
            _use_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        mode = connection.get_execution_options().get("sqlite_begin", "")
        if mode not in ("", "DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
            raise ValueError(f"unknown sqlite_begin mode {mode!r}")
        connection.exec_driver_sql(f"BEGIN {mode}".strip())

    return engine


def _use_wal(cursor) -> None:
    for attempt in range(50):
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or attempt == 49:
                raise
            time.sleep(0.05 + 0.01 * attempt)


def alembic_config(db_url: str) -> Config:
    """Alembic configuration for the shipped revisions, without an ini file."""
    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    config.set_main_option("sqlalchemy.url", normalize_url(db_url).replace("%", "%%"))
    return config


def upgrade(db_url: str, revision: str = "head") -> None:
    """Create or upgrade the schema; safe on every start and from concurrent processes."""
    command.upgrade(alembic_config(db_url), revision)
