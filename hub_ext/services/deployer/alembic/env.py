"""Alembic environment of the deployer database, driven by :func:`..db.upgrade`.

Alembic needs this file in the script location; the migration logic (no
``alembic.ini``, the service's engine, a lock held for the whole upgrade so
replicas starting together migrate once) is
:func:`hub_ext.services.common.migrations.run_migrations`, shared with the
scheduler. The deployer keeps its own version table. Revisions never import the ORM.
"""

from __future__ import annotations

from hub_ext.services.common.migrations import run_migrations
from hub_ext.services.deployer.db import UPGRADE_LOCK_KEY, VERSION_TABLE, make_engine
from hub_ext.services.deployer.orm import Base

run_migrations(Base.metadata, make_engine, UPGRADE_LOCK_KEY, version_table=VERSION_TABLE)
