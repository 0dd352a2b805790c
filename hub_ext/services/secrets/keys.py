"""The encryption key of the database backend: a file beside, never in, the database.

Values are encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from the
``cryptography`` package that JupyterHub already depends on) so that a copy
of the database, a backup or a PostgreSQL dump holds no readable value.

- **The key file** holds one url-safe base64 Fernet key per line (``#`` starts
  a comment). It is made on first start with mode 0600 (``O_EXCL``, so two
  replicas starting together cannot each write their own); a file that others
  may read is refused, not silently fixed: its key must be considered leaked.
- **Rotation** (:class:`cryptography.fernet.MultiFernet`): put a new key on the
  first line and keep the old ones below; the first key encrypts, every key
  decrypts, and the backend re-encrypts every value under the first key at its
  next start, after which the old lines can be removed.
- **Binding**: the plaintext is ``owner NUL name NUL value``, checked on
  decryption, so a ciphertext moved to another row (another user's, another
  name) fails instead of handing one user's value to another's run.

Rejected: deriving the key from a passphrase in an environment variable
(it would be inherited by every process the hub starts), and keeping the key
in the database (a dump would then hold both).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class KeyFileError(Exception):
    """The key file cannot be used; the message says what to fix."""


class Keys(MultiFernet):
    """The key file's keys: the first encrypts, every one decrypts; ``count`` says how many."""

    def __init__(self, fernets: list[Fernet]):
        super().__init__(fernets)
        self.count = len(fernets)


def load_or_create(path: Path) -> Keys:
    """Return the keys of ``path``, creating the file with one new key (0600) if missing.

    Parameters
    ----------
    path : Path
        The key file.

    Raises
    ------
    KeyFileError
        The file is readable by others, not a plain file, or holds no valid key.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(
                "# Shipyard secrets key: the first key encrypts, every key decrypts.\n"
                "# Keep a copy apart from the database's backups; without it no value can be read.\n"
                + Fernet.generate_key().decode()
                + "\n"
            )
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise KeyFileError(f"cannot open the secrets key file {path}: {e.strerror}") from None
    with os.fdopen(fd) as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"the secrets key file {path} is not a plain file")
        if info.st_mode & 0o077:
            raise KeyFileError(
                f"the secrets key file {path} is readable by others (mode "
                f"{stat.S_IMODE(info.st_mode):04o}): consider its keys leaked, put a new key "
                "on its first line, and make it 0600"
            )
        lines = [line.strip() for line in f.read().splitlines()]
    keys = []
    for number, line in enumerate(lines, 1):
        if not line or line.startswith("#"):
            continue
        try:
            keys.append(Fernet(line.encode()))
        except (ValueError, TypeError):
            raise KeyFileError(
                f"line {number} of the secrets key file {path} is not a Fernet key "
                "(32 url-safe base64-encoded bytes)"
            ) from None
    if not keys:
        raise KeyFileError(f"the secrets key file {path} holds no key")
    return Keys(keys)


def _plaintext(owner: str, name: str, value: str) -> bytes:
    return f"{owner}\0{name}\0{value}".encode()


def encrypt(keys: MultiFernet, owner: str, name: str, value: str) -> bytes:
    """The Fernet token of ``value``, bound to ``owner`` and ``name``."""
    return keys.encrypt(_plaintext(owner, name, value))


def decrypt(keys: MultiFernet, owner: str, name: str, token: bytes) -> str:
    """The value in ``token``; raise :class:`KeyFileError` if no key fits or it is bound elsewhere."""
    try:
        plain = keys.decrypt(bytes(token)).decode()
    except (InvalidToken, UnicodeDecodeError):
        raise KeyFileError(
            f"the value of {owner}'s secret {name!r} cannot be decrypted with the key file's "
            "keys (was the key file replaced?)"
        ) from None
    prefix = f"{owner}\0{name}\0"
    if not plain.startswith(prefix):
        raise KeyFileError(f"the stored value of {owner}'s secret {name!r} belongs to another row")
    return plain[len(prefix) :]
