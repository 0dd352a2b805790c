"""The embedded default's files: the data dir, generated credentials and tokens.

Secrets are generated on first start, written with mode 0600 in a 0700 data
dir, and never logged: ``shipyard up`` prints the admin credentials once, when
it creates them, and ``shipyard credentials`` shows them again to whoever can
read the file. There is no shared user password: each user has their own
(:mod:`hub_ext.auth.native`).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from hub_ext.host.process import write_private

ADMIN_USER = "admin"


def data_dir() -> Path:
    """``$SHIPYARD_DATA_DIR``, else ``.shipyard`` in the working directory; created 0700."""
    path = Path(os.environ.get("SHIPYARD_DATA_DIR") or ".shipyard").resolve()
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _read_private(path: Path) -> str:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        path.chmod(0o600)  # repair, never serve a world-readable secret
    return path.read_text()


@dataclass(frozen=True)
class Credentials:
    """The first admin's login; every other user has a password of their own."""

    admin_user: str
    admin_password: str


def load_or_create_credentials(directory: Path) -> tuple[Credentials, bool]:
    """The hub's login credentials, generated on first use. Returns (credentials, created).

    A file written before per-user login also held a shared ``user_password``: it is
    removed from the file, since nothing accepts it any more.
    """
    path = directory / "credentials.json"
    if path.exists():
        stored = json.loads(_read_private(path))
        if "user_password" in stored:
            stored.pop("user_password")
            path.write_text(json.dumps(stored, indent=2))
        return Credentials(
            admin_user=stored["admin_user"], admin_password=stored["admin_password"]
        ), False
    creds = Credentials(
        admin_user=ADMIN_USER,
        # 43 characters: well past any password policy, within bcrypt's 72 bytes
        admin_password=secrets.token_urlsafe(32),
    )
    try:
        write_private(path, json.dumps(asdict(creds), indent=2), exclusive=True)
    except FileExistsError:  # another process won the race
        return load_or_create_credentials(directory)
    return creds, True


def load_or_create_token(directory: Path, name: str) -> str:
    """A hub service token kept in ``directory/name`` (0600), generated on first use."""
    path = directory / name
    if path.exists():
        return _read_private(path).strip()
    token = secrets.token_hex(32)
    try:
        write_private(path, token, exclusive=True)
    except FileExistsError:
        return _read_private(path).strip()
    return token
