"""The ``database`` secret backend: values encrypted with Fernet in the service's database.

The embedded default. Values are encrypted before they reach SQLAlchemy and
decrypted only for :meth:`DatabaseBackend.resolve` (the scheduler's and
deployer's call); listing and describing never decrypt. The key is in a file
(:mod:`.keys`), not in the database, so the database alone reveals names and
times, never values. Queries run in a thread: the event loop never blocks on
the database (STYLE rule 13).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Collection
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from traitlets import Unicode, default

from .backend import SecretBackend, SecretInfo
from .db import make_engine, upgrade
from .keys import Keys, decrypt, encrypt, load_or_create
from .orm import Secret


def _data_dir() -> Path:
    return Path(os.environ.get("SHIPYARD_DATA_DIR") or ".shipyard").resolve()


def _info(row: Secret) -> SecretInfo:
    return SecretInfo(row.name, row.created_at, row.updated_at)


class DatabaseBackend(SecretBackend):
    """Secrets in a SQL table (SQLite or PostgreSQL), encrypted under a key file."""

    db_url = Unicode(
        help="""
        The secrets database: a SQLAlchemy URL (SQLite or PostgreSQL).

        SQLite in the data dir by default; PostgreSQL in production. Defaults
        to ``$SHIPYARD_SECRETS_DB_URL`` when set. Migrated at every start.
        Values in it are encrypted; the key is the :attr:`key_file`, never
        the database.

        Example::

            c.DatabaseBackend.db_url = "postgresql://secrets@db/shipyard"

        .. versionadded:: 0.4
        """
    ).tag(config=True)

    @default("db_url")
    def _default_db_url(self):
        return (
            os.environ.get("SHIPYARD_SECRETS_DB_URL")
            or f"sqlite:///{_data_dir() / 'secrets' / 'secrets.sqlite'}"
        )

    key_file = Unicode(
        help="""
        The Fernet key file that encrypts the values: made on first start, mode 0600.

        One key a line; the first encrypts, all decrypt, and every value is
        re-encrypted under the first at the next start (rotation: add a new
        first line, restart, then remove the old line). Keep a copy apart from
        the database's backups. Defaults to ``$SHIPYARD_SECRETS_KEY_FILE``,
        else ``secrets.key`` in ``$SHIPYARD_DATA_DIR``. A file others may read
        is refused.

        Example::

            c.DatabaseBackend.key_file = "/etc/shipyard/secrets.key"

        .. versionadded:: 0.4
        """
    ).tag(config=True)

    @default("key_file")
    def _default_key_file(self):
        return os.environ.get("SHIPYARD_SECRETS_KEY_FILE") or str(_data_dir() / "secrets.key")

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._keys: Keys | None = None
        self._sessions: sessionmaker[Session] | None = None
        self._engine = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await asyncio.to_thread(self._start)

    def _start(self) -> None:
        self._keys = load_or_create(Path(self.key_file))
        if self.db_url.startswith("sqlite:///"):
            Path(self.db_url[len("sqlite:///") :]).parent.mkdir(
                parents=True, exist_ok=True, mode=0o700
            )
        upgrade(self.db_url)
        self._engine = make_engine(self.db_url)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        if self._keys.count > 1:
            self._rotate()

    def _rotate(self) -> None:
        """Re-encrypt every value under the first key (see the key file's help)."""
        with self._sessions.begin() as session:
            rows = session.scalars(select(Secret)).all()
            for row in rows:
                row.ciphertext = self._keys.rotate(bytes(row.ciphertext))
        self.log.info("Re-encrypted %d secret values under the key file's first key", len(rows))

    async def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    async def health(self) -> dict[str, Any]:
        name = self._engine.dialect.name if self._engine is not None else None
        return {"backend": "database", "database": name}

    # ------------------------------------------------------------ queries

    def _row(self, session: Session, owner: str, name: str) -> Secret | None:
        return session.scalar(select(Secret).where(Secret.owner == owner, Secret.name == name))

    async def list(self, owner: str) -> list[SecretInfo]:
        def run() -> list[SecretInfo]:
            with self._sessions() as session:
                rows = session.scalars(
                    select(Secret).where(Secret.owner == owner).order_by(Secret.name)
                )
                return [_info(r) for r in rows]

        return await asyncio.to_thread(run)

    async def get(self, owner: str, name: str) -> SecretInfo | None:
        def run() -> SecretInfo | None:
            with self._sessions() as session:
                row = self._row(session, owner, name)
                return _info(row) if row is not None else None

        return await asyncio.to_thread(run)

    async def count(self, owner: str) -> int:
        def run() -> int:
            with self._sessions() as session:
                return session.scalar(
                    select(func.count()).select_from(Secret).where(Secret.owner == owner)
                )

        return await asyncio.to_thread(run)

    async def put(self, owner: str, name: str, value: str) -> tuple[SecretInfo, bool]:
        token = encrypt(self._keys, owner, name, value)

        def run() -> tuple[SecretInfo, bool]:
            now = datetime.now(timezone.utc)
            for _ in range(3):  # a concurrent create of the same name: retry as an update
                try:
                    with self._sessions.begin() as session:
                        row = self._row(session, owner, name)
                        if row is None:
                            row = Secret(
                                owner=owner,
                                name=name,
                                ciphertext=token,
                                created_at=now,
                                updated_at=now,
                            )
                            session.add(row)
                            session.flush()
                            return _info(row), True
                        row.ciphertext = token
                        row.updated_at = now
                        session.flush()
                        return _info(row), False
                except IntegrityError:
                    continue
            raise RuntimeError(f"could not store {owner}'s secret {name!r}: it kept changing")

        return await asyncio.to_thread(run)

    async def delete(self, owner: str, name: str) -> bool:
        def run() -> bool:
            with self._sessions.begin() as session:
                result = session.execute(
                    delete(Secret).where(Secret.owner == owner, Secret.name == name)
                )
                return result.rowcount > 0

        return await asyncio.to_thread(run)

    async def resolve(self, owner: str, names: Collection[str]) -> dict[str, str]:
        def run() -> dict[str, bytes]:
            with self._sessions() as session:
                rows = session.scalars(
                    select(Secret).where(Secret.owner == owner, Secret.name.in_(list(names)))
                )
                return {r.name: bytes(r.ciphertext) for r in rows}

        tokens = await asyncio.to_thread(run)
        return {name: decrypt(self._keys, owner, name, token) for name, token in tokens.items()}
