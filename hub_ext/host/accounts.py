"""System accounts for hub users, so each user's server runs as its own Unix user.

When the hub runs as root, every hub user gets an account of their own the
first time they start a server (as The Littlest JupyterHub does): files in one
user's home are not readable by another, and a runaway process can be traced
to its owner. The account name comes from :func:`hub_ext.host.slugs.account_name`.

Homes are private (mode 0700) whatever the host's ``HOME_MODE`` and umask say:
useradd on a stock Debian made them 0755, so one user's kernel could list and read
another user's notebooks. :func:`make_home_private` also repairs homes made before
that, each time an account is looked up for a server, a run or a model; and every
process Shipyard starts as a user runs with :data:`USER_UMASK`, so what it saves is
the user's alone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import shutil
import stat
import subprocess

log = logging.getLogger(__name__)

_locks: dict[str, asyncio.Lock] = {}

#: The umask of every process started as a user (servers, kernels, runs, model
#: servers): files they create are readable by their owner alone.
USER_UMASK = 0o077


def make_home_private(entry: pwd.struct_passwd) -> None:
    """Make ``entry``'s home readable by its owner alone (0700); nothing if it is already.

    Only a real directory owned by the account is changed: a home shared on purpose
    (``/`` or another account's folder, as some admins configure) is left as it is.
    """
    try:
        info = os.lstat(entry.pw_dir)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != entry.pw_uid:
        return
    if info.st_mode & 0o077:
        os.chmod(entry.pw_dir, stat.S_IMODE(info.st_mode) & 0o700)
        log.info("Made the home of %s private (%s)", entry.pw_name, entry.pw_dir)


class AccountError(RuntimeError):
    """useradd failed; the message carries its output."""


def _create(account: str, home: str, comment: str) -> pwd.struct_passwd:
    try:
        entry = pwd.getpwnam(account)
    except KeyError:
        pass
    else:
        make_home_private(entry)
        return entry
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
    entry = pwd.getpwnam(account)
    make_home_private(entry)
    return entry


async def ensure_account(account: str, home: str, comment: str) -> pwd.struct_passwd:
    """Return the passwd entry of ``account``, creating it (with ``home``) if missing.

    Its home is private (0700) on return, also when it existed before.
    """
    lock = _locks.setdefault(account, asyncio.Lock())
    async with lock:
        return await asyncio.to_thread(_create, account, home, comment)


def delete_account(account: str) -> None:
    """Remove ``account`` and its home (used by tests and by admins' clean-up)."""
    userdel = shutil.which("userdel") or "/usr/sbin/userdel"
    subprocess.run([userdel, "--remove", account], capture_output=True)  # noqa: S603
