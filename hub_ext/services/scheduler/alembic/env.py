"""Alembic environment of the scheduler database, driven by :func:`..db.upgrade`.

Alembic needs this file in the script location; the migration logic (no
``alembic.ini``, the service's engine, a lock held for the whole upgrade) is
:func:`hub_ext.services.common.migrations.run_migrations`, shared with the
deployer. The scheduler also checks, on SQLite, that an upgrade left no row
breaking a foreign key (dropping ``jobs`` in batch mode must not delete runs).
"""

from __future__ import annotations

from hub_ext.services.common.migrations import run_migrations
from hub_ext.services.scheduler.db import UPGRADE_LOCK_KEY, make_engine
from hub_ext.services.scheduler.orm import Base

run_migrations(Base.metadata, make_engine, UPGRADE_LOCK_KEY, check_foreign_keys=True)
