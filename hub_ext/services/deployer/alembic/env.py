"""Alembic environment of the deployer database, driven by :func:`..db.upgrade`.

As the scheduler's: no ``alembic.ini`` (:func:`hub_ext.services.deployer.db.alembic_config`
passes the URL), the engine from ``make_engine``, and a lock held for the whole
upgrade (PostgreSQL advisory lock; SQLite ``BEGIN IMMEDIATE``) so replicas
starting together migrate once. Revisions never import the ORM.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from hub_ext.services.deployer.db import UPGRADE_LOCK_KEY, VERSION_TABLE, make_engine
from hub_ext.services.deployer.orm import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    """Write the SQL of the migrations instead of running it (``alembic upgrade --sql``)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        version_table=VERSION_TABLE,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on a live database."""
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.execution_options(sqlite_begin="IMMEDIATE").connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                # see the scheduler's env.py: batch mode must not cascade deletes
                connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=sqlite,
                version_table=VERSION_TABLE,
            )
            with context.begin_transaction():
                if connection.dialect.name == "postgresql":
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": UPGRADE_LOCK_KEY}
                    )
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
