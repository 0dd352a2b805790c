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

from alembic import command
from alembic.config import Config

from ..common.db import make_engine, normalize_url

__all__ = ["ALEMBIC_DIR", "UPGRADE_LOCK_KEY", "VERSION_TABLE", "make_engine", "upgrade"]

ALEMBIC_DIR = Path(__file__).with_name("alembic")

#: Alembic's revision table of this service (not the default ``alembic_version``).
VERSION_TABLE = "deployer_alembic_version"

#: PostgreSQL advisory lock serialising concurrent upgrades (another key than the scheduler's).
UPGRADE_LOCK_KEY = 0x5348_4950_5944_0002


def alembic_config(db_url: str) -> Config:
    """Return an Alembic configuration for the shipped revisions, without an ini file.

    This is the ``alembic.ini`` equivalent: the script location and the URL
    (``%`` doubled, since ConfigParser interpolates).
    """
    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    config.set_main_option("sqlalchemy.url", normalize_url(db_url).replace("%", "%%"))
    return config


def upgrade(db_url: str, revision: str = "head") -> None:
    """Create the schema, or upgrade it to ``revision``; safe on every start and concurrently."""
    command.upgrade(alembic_config(db_url), revision)
