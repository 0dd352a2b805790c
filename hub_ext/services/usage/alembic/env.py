"""Alembic environment of the usage database, driven by :func:`..db.upgrade`.

The migration logic is :func:`hub_ext.services.common.migrations.run_migrations`,
shared with the other services; this service keeps its own version table.
Revisions never import the ORM.
"""

from __future__ import annotations

from hub_ext.services.common.migrations import run_migrations
from hub_ext.services.usage.db import UPGRADE_LOCK_KEY, VERSION_TABLE, make_engine
from hub_ext.services.usage.orm import Base

run_migrations(Base.metadata, make_engine, UPGRADE_LOCK_KEY, version_table=VERSION_TABLE)
