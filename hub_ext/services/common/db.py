"""Engines and schema upgrades for the services' databases: SQLite or PostgreSQL.

Moved here from the scheduler so that every service (scheduler, deployer,
secrets) talks to its database the same way without importing another
service's package:

- **SQLite** (the embedded default) runs in WAL mode, so readers never block
  the writer, with a busy timeout, so a second process waits for the write
  lock instead of failing with ``database is locked``. Foreign keys are
  switched on (SQLite leaves them off). The driver's own transaction handling
  is turned off and SQLAlchemy emits ``BEGIN`` itself: an engine derived with
  ``execution_options(sqlite_begin="IMMEDIATE")`` takes the write lock at the
  start of its transactions, which is what makes a read-then-write atomic
  across processes. Without it, two deferred transactions both read, and the
  second write fails with ``SQLITE_BUSY_SNAPSHOT`` regardless of the busy
  timeout. See
  https://docs.sqlalchemy.org/en/20/dialects/sqlite.html#serializable-isolation-savepoints-transactional-ddl
- **PostgreSQL** uses psycopg 3; a ``postgresql://`` URL is rewritten to
  ``postgresql+psycopg://`` so admins can paste the usual form.
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

#: Seconds a SQLite connection waits for another process's write lock.
SQLITE_BUSY_TIMEOUT = 30.0


def normalize_url(db_url: str) -> str:
    """Return ``db_url`` with PostgreSQL URLs pointed at the psycopg 3 driver.

    Parameters
    ----------
    db_url : str
        A SQLAlchemy URL: ``sqlite:///path``, ``postgresql://...`` or
        ``postgresql+psycopg://...``.
    """
    url = make_url(db_url)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def make_engine(db_url: str, **kwargs: Any) -> Engine:
    """Create an engine for a service's database.

    Parameters
    ----------
    db_url : str
        SQLite or PostgreSQL URL (see :func:`normalize_url`).
    **kwargs
        Passed on to :func:`sqlalchemy.create_engine`.

    Returns
    -------
    sqlalchemy.Engine
        For SQLite, transactions begin with ``BEGIN``, or ``BEGIN IMMEDIATE``
        on an engine derived with ``execution_options(sqlite_begin="IMMEDIATE")``.
    """
    url = make_url(normalize_url(db_url))
    if url.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        return create_engine(url, **kwargs)

    connect_args = kwargs.pop("connect_args", {})
    connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT)
    # Connections move between the service's worker threads, one at a time.
    connect_args.setdefault("check_same_thread", False)
    engine = create_engine(url, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN, below
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
        if url.database and url.database != ":memory:":
            _use_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable in WAL mode, and faster
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        mode = connection.get_execution_options().get("sqlite_begin", "")
        if mode not in ("", "DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
            raise ValueError(f"unknown sqlite_begin mode {mode!r}")
        connection.exec_driver_sql(f"BEGIN {mode}".strip())

    return engine


def _use_wal(cursor) -> None:
    """Switch the database file to WAL once; later connections find it so.

    Switching needs a moment without other connections, and SQLite does not
    apply the busy timeout to it: connections opening together (replicas
    starting, the first requests) retry briefly instead of failing.
    """
    for attempt in range(50):
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or attempt == 49:
                raise
            time.sleep(0.05 + 0.01 * attempt)


def alembic_config(alembic_dir: Path, db_url: str) -> Config:
    """An Alembic configuration for the revisions in ``alembic_dir``, without an ini file.

    This is the ``alembic.ini`` equivalent of every Shipyard database: the script
    location and the URL (``%`` doubled, since ConfigParser interpolates: a password may
    hold one). The engine itself comes from the service's ``make_engine``, which its
    ``env.py`` calls (:func:`hub_ext.services.common.migrations.run_migrations`).
    """
    config = Config()
    config.set_main_option("script_location", str(alembic_dir))
    config.set_main_option("sqlalchemy.url", normalize_url(db_url).replace("%", "%%"))
    return config


def upgrade(alembic_dir: Path, db_url: str, revision: str = "head") -> None:
    """Create the schema of ``alembic_dir``'s revisions, or upgrade it to ``revision``.

    Safe on every start and from processes starting together: the ``env.py`` holds a lock
    for the whole transaction (an advisory lock on PostgreSQL, the write lock on SQLite).
    """
    command.upgrade(alembic_config(alembic_dir, db_url), revision)
