"""Engines and schema upgrades for the scheduler's database.

One function makes every engine (:func:`make_engine`) so that the service, its
workers, the migrations and the tests all talk to the database the same way:

- **SQLite** (the embedded default) runs in WAL mode, so readers never block
  the writer, with a busy timeout, so a second process waits for the write
  lock instead of failing with ``database is locked``. Foreign keys are
  switched on (SQLite leaves them off), so deleting a job deletes its triggers
  and runs. The driver's own transaction handling is turned off and
  SQLAlchemy emits ``BEGIN`` itself: an engine derived with
  ``execution_options(sqlite_begin="IMMEDIATE")`` takes the write lock at the
  start of its transactions, which is what makes a claim (read due ticks, then
  write runs) atomic across processes. Without it, two deferred transactions
  both read, and the second write fails with ``SQLITE_BUSY_SNAPSHOT``
  regardless of the busy timeout. See
  https://docs.sqlalchemy.org/en/20/dialects/sqlite.html#serializable-isolation-savepoints-transactional-ddl
- **PostgreSQL** (production) uses psycopg 3; a ``postgresql://`` URL is
  rewritten to ``postgresql+psycopg://`` so admins can paste the usual form.

:func:`upgrade` runs the Alembic revisions shipped in ``alembic/`` without an
``alembic.ini`` (the service calls it on start, like JupyterHub's
``upgrade-db``). Rejected alternative: ``metadata.create_all`` on start, which
cannot change an existing schema and leads to hand-written ``ALTER TABLE``
(jupyter-scheduler's ``update_db_schema``; STYLE rule 12).
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

# The engine is shared by every service (moved to services/common); re-exported here.
from ..common import db as common_db
from ..common.db import SQLITE_BUSY_TIMEOUT, make_engine, normalize_url

__all__ = [
    "ALEMBIC_DIR",
    "SQLITE_BUSY_TIMEOUT",
    "UPGRADE_LOCK_KEY",
    "alembic_config",
    "make_engine",
    "normalize_url",
    "upgrade",
]

ALEMBIC_DIR = Path(__file__).with_name("alembic")

#: Key of the PostgreSQL advisory lock that serialises concurrent upgrades
#: (two service replicas starting at once). Any fixed 64-bit number will do.
UPGRADE_LOCK_KEY = 0x5348_4950_5944_0001


def alembic_config(db_url: str) -> Config:
    """An Alembic configuration for this database's revisions, without an ini file."""
    return common_db.alembic_config(ALEMBIC_DIR, db_url)


def upgrade(db_url: str, revision: str = "head") -> None:
    """Create the schema, or upgrade it to ``revision``; safe on every start and concurrently."""
    common_db.upgrade(ALEMBIC_DIR, db_url, revision)
