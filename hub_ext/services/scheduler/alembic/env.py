"""Alembic environment of the scheduler database, driven by :func:`..db.upgrade`.

There is no ``alembic.ini``: :func:`hub_ext.services.scheduler.db.alembic_config`
passes the URL, and the engine comes from :func:`~hub_ext.services.scheduler.db.make_engine`
so migrations see the same SQLite pragmas as the service. Upgrades hold a
lock for their whole transaction (PostgreSQL advisory lock; SQLite
``BEGIN IMMEDIATE``), so two replicas starting together migrate once. The
metadata is the ORM's, for ``alembic revision --autogenerate`` by developers;
revisions themselves never import it (a revision must keep describing the
schema of its time, whatever the ORM says later).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from hub_ext.services.scheduler.db import UPGRADE_LOCK_KEY, make_engine
from hub_ext.services.scheduler.orm import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    """Write the SQL of the migrations instead of running it (``alembic upgrade --sql``)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
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
                # Batch mode rebuilds a table by copy, drop and rename; with foreign
                # keys on, SQLite's DROP TABLE deletes the rows first and cascades
                # (dropping ``jobs`` would delete every run). The pragma only works
                # outside a transaction, hence on the driver connection before any.
                # https://www.sqlite.org/foreignkeys.html#fk_schemacommands
                connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                # SQLite cannot ALTER most things; batch mode copies the table.
                render_as_batch=sqlite,
            )
            with context.begin_transaction():
                if connection.dialect.name == "postgresql":
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"),
                        {"key": UPGRADE_LOCK_KEY},
                    )
                context.run_migrations()
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise RuntimeError(f"migration broke foreign keys: {broken[:10]}")
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
