"""System accounts for hub users, so each user's server runs as its own Unix user.

When the hub runs as root, every hub user gets an account of their own the
first time they start a server (as The Littlest JupyterHub does): files in one
user's home are not readable by another, and a runaway process can be traced
to its owner. The account name comes from :func:`hub_ext.slugs.account_name`.
"""

from __future__ import annotations

import asyncio
import logging
import pwd
import shutil
import subprocess

log = logging.getLogger(__name__)

_locks: dict[str, asyncio.Lock] = {}


class AccountError(RuntimeError):
    """useradd failed; the message carries its output."""


def _create(account: str, home: str, comment: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(account)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    cmd = [
        useradd,
        "--create-home",
        "--home-dir",
        home,
        "--shell",
        "/bin/bash",
        "--user-group",
        "--comment",
        comment,
        account,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)  # noqa: S603 - fixed argv
    if result.returncode != 0:
        try:  # created meanwhile by another process
            return pwd.getpwnam(account)
        except KeyError:
            raise AccountError(
                f"Could not create system account {account!r}: {result.stderr.strip()}"
            ) from None
    log.info("Created system account %s (home %s)", account, home)
    return pwd.getpwnam(account)


async def ensure_account(account: str, home: str, comment: str) -> pwd.struct_passwd:
    """Return the passwd entry of ``account``, creating it (with ``home``) if missing."""
    lock = _locks.setdefault(account, asyncio.Lock())
    async with lock:
        return await asyncio.to_thread(_create, account, home, comment)


def delete_account(account: str) -> None:
    """Remove ``account`` and its home (used by tests and by admins' clean-up)."""
    userdel = shutil.which("userdel") or "/usr/sbin/userdel"
    subprocess.run([userdel, "--remove", account], capture_output=True)  # noqa: S603
