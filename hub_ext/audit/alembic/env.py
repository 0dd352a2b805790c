"""Alembic environment of the audit trail's database, driven by :func:`..db.upgrade`.

The migration logic is shared with the services
(:func:`hub_ext.services.common.migrations.run_migrations`); the trail keeps
its own version table so it can share a database with them.
"""

from __future__ import annotations

from hub_ext.audit.db import UPGRADE_LOCK_KEY, VERSION_TABLE, make_engine
from hub_ext.audit.orm import Base
from hub_ext.services.common.migrations import run_migrations

run_migrations(Base.metadata, make_engine, UPGRADE_LOCK_KEY, version_table=VERSION_TABLE)
