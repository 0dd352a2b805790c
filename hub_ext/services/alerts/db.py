"""Engines and schema upgrades for the alerts database.

The engine is the shared :func:`hub_ext.services.common.db.make_engine`
(SQLite in WAL mode with a busy timeout; PostgreSQL through psycopg 3). The
revisions record themselves in ``alerts_alembic_version``, so the service
may share one PostgreSQL database with the others without reading their
revision. :func:`upgrade` runs on every start (STYLE rule 12).
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

from ..common import db as common_db
from ..common.db import make_engine

__all__ = ["ALEMBIC_DIR", "UPGRADE_LOCK_KEY", "VERSION_TABLE", "make_engine", "upgrade"]

ALEMBIC_DIR = Path(__file__).with_name("alembic")

#: Alembic's revision table of this service.
VERSION_TABLE = "alerts_alembic_version"

#: PostgreSQL advisory lock serialising concurrent upgrades (secrets: ...0005).
UPGRADE_LOCK_KEY = 0x5348_4950_5944_0008


def alembic_config(db_url: str) -> Config:
    """An Alembic configuration for this database's revisions, without an ini file."""
    return common_db.alembic_config(ALEMBIC_DIR, db_url)


def upgrade(db_url: str, revision: str = "head") -> None:
    """Create the schema, or upgrade it to ``revision``; safe on every start and concurrently."""
    common_db.upgrade(ALEMBIC_DIR, db_url, revision)
