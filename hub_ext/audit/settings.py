"""Where the audit trail lives and how long it is kept: one configurable.

Every process that writes the trail (the hub, each hub-managed service, the
``shipyard`` CLI) builds :class:`AuditSettings` from its environment: the hub
passes the ``SHIPYARD_AUDIT*`` variables into each service's ``environment``
(config/jupyterhub_config.py), so all writers agree on one file and one table
without a configuration file of their own. The traits can still be set from
a config file (``c.AuditSettings.retention_days = 90``) where a component
loads one; the environment only supplies the defaults.
"""

from __future__ import annotations

import os
from pathlib import Path

from traitlets import Bool, Integer, Unicode, default, validate
from traitlets.config import Configurable


def _data_dir() -> Path:
    return Path(os.environ.get("SHIPYARD_DATA_DIR") or ".shipyard").resolve()


class AuditSettings(Configurable):
    """Settings of the audit trail, read by every writer and reader."""

    enabled = Bool(
        help="""Record audited actions.

        Off only for benchmarks and tests that measure the cost of the trail:
        with the trail off, nothing is recorded and ``emit`` returns at once.
        Default from ``SHIPYARD_AUDIT`` (``0``, ``false`` or ``no`` turn it off).

        Example::

            c.AuditSettings.enabled = True

        .. versionadded:: 0.12
        """,
    ).tag(config=True)

    @default("enabled")
    def _default_enabled(self) -> bool:
        return os.environ.get("SHIPYARD_AUDIT", "1").strip().lower() not in ("0", "false", "no")

    directory = Unicode(
        help="""Directory of the trail's JSON-lines file, its archives, lock and SQLite database.

        Created with mode 0700; the files in it are 0600. Every writer on the
        machine must use the same directory: its lock file serialises the hash
        chain across processes. Default from ``SHIPYARD_AUDIT_DIR``, else
        ``$SHIPYARD_DATA_DIR/audit``.

        Example::

            c.AuditSettings.directory = "/var/lib/shipyard/audit"

        .. versionadded:: 0.12
        """,
    ).tag(config=True)

    @default("directory")
    def _default_directory(self) -> str:
        env = os.environ.get("SHIPYARD_AUDIT_DIR")
        return str(Path(env).resolve() if env else _data_dir() / "audit")

    db_url = Unicode(
        help="""SQLAlchemy URL of the database that holds the trail's table, for queries.

        SQLite (``audit.sqlite`` in :attr:`directory`) by default; PostgreSQL
        with ``postgresql://user:password@host/db``. The table mirrors the
        JSON-lines file record by record; ``shipyard audit verify`` checks both
        and their agreement. Default from ``SHIPYARD_AUDIT_DB_URL``.

        Example::

            c.AuditSettings.db_url = "postgresql://shipyard@db/shipyard"

        .. versionadded:: 0.12
        """,
    ).tag(config=True)

    @default("db_url")
    def _default_db_url(self) -> str:
        return os.environ.get("SHIPYARD_AUDIT_DB_URL") or (
            f"sqlite:///{Path(self.directory) / 'audit.sqlite'}"
        )

    retention_days = Integer(
        help="""Days an audit record is kept; 0 keeps every record forever.

        Pruning (run by the audit service every hour and by
        ``shipyard audit prune``) rotates the JSON-lines file into a dated
        archive, deletes archives whose newest record is older than this, and
        deletes the same records from the table; it records the first kept
        record's ``prev_hash`` as the new anchor (an ``audit.retention``
        record and an anchor row), so ``shipyard audit verify`` still passes.
        Default from ``SHIPYARD_AUDIT_RETENTION_DAYS``, else 365.

        Example::

            c.AuditSettings.retention_days = 90

        .. versionadded:: 0.12
        """,
    ).tag(config=True)

    @default("retention_days")
    def _default_retention_days(self) -> int:
        raw = os.environ.get("SHIPYARD_AUDIT_RETENTION_DAYS", "").strip()
        if not raw:
            return 365
        try:
            days = int(raw)
        except ValueError:
            days = -1
        if days < 0:
            raise ValueError(
                f"SHIPYARD_AUDIT_RETENTION_DAYS={raw!r}: give a whole number of days "
                "(0 (keep forever) or more)"
            )
        return days

    @validate("retention_days")
    def _check_retention_days(self, proposal):
        if proposal["value"] < 0:
            raise ValueError("retention_days must be 0 (keep forever) or a positive number of days")
        return proposal["value"]

    @property
    def path(self) -> Path:
        """The directory as a path."""
        return Path(self.directory)

    @property
    def jsonl_path(self) -> Path:
        """The current JSON-lines file (``audit.jsonl``)."""
        return self.path / "audit.jsonl"

    @property
    def lock_path(self) -> Path:
        """The lock file that serialises writers."""
        return self.path / "audit.lock"
