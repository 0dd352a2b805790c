"""Engines and schema upgrades for the deployer's database.

The engine is the shared :func:`hub_ext.services.common.db.make_engine`
(SQLite in WAL mode with a busy timeout and foreign keys on; PostgreSQL
through psycopg 3), so both services talk to their databases the same way.
What differs is only where the Alembic revisions are and which table records
the schema's revision: ``deployer_alembic_version``, so the two services can
even share one PostgreSQL database without reading each other's revision.

:func:`upgrade` runs on every start (like JupyterHub's ``upgrade-db``), never
``metadata.create_all`` (STYLE rule 12).
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

from ..common import db as common_db
from ..common.db import make_engine

__all__ = ["ALEMBIC_DIR", "UPGRADE_LOCK_KEY", "VERSION_TABLE", "make_engine", "upgrade"]

ALEMBIC_DIR = Path(__file__).with_name("alembic")

#: Alembic's revision table of this service (not the default ``alembic_version``).
VERSION_TABLE = "deployer_alembic_version"

#: PostgreSQL advisory lock serialising concurrent upgrades (another key than the scheduler's).
UPGRADE_LOCK_KEY = 0x5348_4950_5944_0002


def alembic_config(db_url: str) -> Config:
    """An Alembic configuration for this database's revisions, without an ini file."""
    return common_db.alembic_config(ALEMBIC_DIR, db_url)


def upgrade(db_url: str, revision: str = "head") -> None:
    """Create the schema, or upgrade it to ``revision``; safe on every start and concurrently."""
    common_db.upgrade(ALEMBIC_DIR, db_url, revision)
