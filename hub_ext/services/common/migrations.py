"""The body of the services' Alembic ``env.py`` files, shared.

Alembic needs an ``env.py`` in each script location, so each service keeps
one; they only differ by their database module (engine, lock key, version
table) and their ORM metadata, so the migration logic is here, once:

- no ``alembic.ini``: the service's ``db.alembic_config`` passes the URL, and
  the engine comes from the service's ``make_engine``, so migrations see the
  same SQLite pragmas as the service;
- an upgrade is one transaction, begun here, holding a lock from start to
  end (PostgreSQL advisory lock; SQLite ``BEGIN IMMEDIATE``), so two replicas
  starting together migrate once;
- the metadata is the ORM's, for ``alembic revision --autogenerate`` by
  developers; revisions themselves never import it (a revision must keep
  describing the schema of its time, whatever the ORM says later).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alembic import context
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Engine


def run_migrations(
    target_metadata: MetaData,
    make_engine: Callable[[str], Engine],
    lock_key: int,
    *,
    version_table: str | None = None,
    check_foreign_keys: bool = False,
) -> None:
    """Run (or, in offline mode, write the SQL of) the migrations of the current Alembic context.

    Call it from a service's ``env.py``, where :data:`alembic.context` is set up.

    Parameters
    ----------
    target_metadata : sqlalchemy.MetaData
        The service's ORM metadata (for autogenerate).
    make_engine : callable
        ``make_engine(url)``: the service's engine, with its pragmas.
    lock_key : int
        Key of the PostgreSQL advisory lock held for the whole upgrade.
    version_table : str, optional
        Alembic's version table; Alembic's default (``alembic_version``) if None.
    check_foreign_keys : bool, optional
        On SQLite, fail the upgrade (rolled back) if it left rows that break a
        foreign key.
    """
    options: dict[str, Any] = {"target_metadata": target_metadata}
    if version_table is not None:
        options["version_table"] = version_table
    url = context.config.get_main_option("sqlalchemy.url")
    if context.is_offline_mode():
        _run_offline(url, options)
    else:
        _run_online(url, options, make_engine, lock_key, check_foreign_keys)


def _run_offline(url: str | None, options: dict[str, Any]) -> None:
    # Write the SQL of the migrations instead of running it (``alembic upgrade --sql``).
    context.configure(url=url, literal_binds=True, render_as_batch=True, **options)
    with context.begin_transaction():
        context.run_migrations()


def _run_online(
    url: str | None,
    options: dict[str, Any],
    make_engine: Callable[[str], Engine],
    lock_key: int,
    check_foreign_keys: bool,
) -> None:
    engine = make_engine(url)
    try:
        with engine.execution_options(sqlite_begin="IMMEDIATE").connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                # Batch mode rebuilds a table by copy, drop and rename; with foreign
                # keys on, SQLite's DROP TABLE deletes the rows first and cascades
                # (dropping a parent table would delete every child row). The pragma
                # only works outside a transaction, hence on the driver connection
                # before any.
                # https://www.sqlite.org/foreignkeys.html#fk_schemacommands
                connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
            # One transaction for the whole upgrade, begun here rather than by
            # Alembic: Alembic treats SQLite's DDL as non-transactional and
            # commits after each revision, which would release the write lock
            # between revisions and let a second process, waiting on it, run
            # the next revision again ("table ... already exists"). In a
            # transaction it did not begin, Alembic runs every revision inside.
            with connection.begin():
                if connection.dialect.name == "postgresql":
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key}
                    )
                # SQLite cannot ALTER most things; batch mode copies the table.
                context.configure(connection=connection, render_as_batch=sqlite, **options)
                with context.begin_transaction():
                    context.run_migrations()
                if sqlite and check_foreign_keys:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise RuntimeError(f"migration broke foreign keys: {broken[:10]}")
    finally:
        engine.dispose()
