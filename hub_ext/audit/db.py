"""Engines and schema upgrades for the trail's database.

The services' engines (:func:`hub_ext.services.common.db.make_engine`, which
gives the reasons): SQLite in WAL mode with a busy timeout and
SQLAlchemy-emitted ``BEGIN``; PostgreSQL through psycopg 3;
Alembic revisions in ``alembic/`` run without an ``alembic.ini`` through the
shared :func:`hub_ext.services.common.migrations.run_migrations`. The version
table is ``audit_alembic_version`` so the trail can share a PostgreSQL
database with a service without the two fighting over ``alembic_version``.

Writers need not wait for a busy database: they hold the trail's file lock
while they insert, so SQLite sees one writer at a time; readers (``list``,
``verify``) never block them in WAL mode.
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

from hub_ext.services.common import db as common_db
from hub_ext.services.common.db import make_engine, normalize_url

__all__ = ["make_engine", "normalize_url", "upgrade", "alembic_config"]

ALEMBIC_DIR = Path(__file__).with_name("alembic")
VERSION_TABLE = "audit_alembic_version"

#: PostgreSQL advisory lock keys: upgrades, and appends to the chain.
UPGRADE_LOCK_KEY = 0x5348_4950_5944_00A1
CHAIN_LOCK_KEY = 0x5348_4950_5944_00A2


def alembic_config(db_url: str) -> Config:
    """An Alembic configuration for this database's revisions, without an ini file."""
    return common_db.alembic_config(ALEMBIC_DIR, db_url)


def upgrade(db_url: str, revision: str = "head") -> None:
    """Create the schema, or upgrade it to ``revision``; safe on every start and concurrently."""
    common_db.upgrade(ALEMBIC_DIR, db_url, revision)
