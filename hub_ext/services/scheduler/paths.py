"""The one path resolver of the scheduler: a user's relative path, inside their home only.

The service runs as root on one machine and reads users' notebooks (to
snapshot them) and watches users' data files (file triggers). Every such path
comes from a user, so every one goes through :func:`open_in_home`, which
follows SECURITY rule 1 to the letter:

1. the path arrives decoded once (a JSON string), and is refused when empty,
   absolute, ``~``-relative, holding NUL or a ``..`` component;
2. it is joined to the home and opened *without following a symlink in its
   last component* (``O_NOFOLLOW``);
3. the file that was actually opened is named again through
   ``/proc/self/fd`` and checked to be inside the resolved home by path
   components (``/home/alice2`` is not inside ``/home/alice``), so a symlink
   in a middle component that points out, or one swapped in between check
   and open, is caught on what was opened rather than on what was checked.

Refusals are :class:`~.errors.NotFound` or :class:`~.errors.Invalid` with a
message that names only the path the user sent, never what it pointed to.

Rejected alternative: ``os.path.realpath`` then ``startswith(home)``, the
string-prefix check that let ``/home/alice2`` pass for ``/home/alice``, and
that checks a path which can change before it is opened.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from .errors import Invalid, NotFound, SchedulerError


class TooLarge(SchedulerError):
    """The file is larger than the service accepts."""

    status = 413


def check_relative(path: str, what: str = "path") -> PurePosixPath:
    """Return ``path`` as a relative POSIX path, or raise :class:`Invalid` saying why not."""
    if not isinstance(path, str) or not path or "\x00" in path or len(path) > 4096:
        raise Invalid(f"the {what} must be 1 to 4096 characters without NUL")
    pure = PurePosixPath(path)
    if pure.is_absolute() or path.startswith("~") or ".." in pure.parts:
        raise Invalid(
            f"the {what} {path!r} must be relative to your home directory and must not "
            "contain '..' (e.g. 'notebooks/report.ipynb')"
        )
    return pure


def _inside(child: str, parent: str) -> bool:
    return Path(child).parts[: len(Path(parent).parts)] == Path(parent).parts


def read_in_home(
    home: str | os.PathLike[str], path: str, limit: int, what: str = "notebook"
) -> bytes:
    """Read the regular file ``path`` (relative to ``home``), at most ``limit`` bytes.

    Raises
    ------
    Invalid
        The path is absolute, has ``..``, or is not a regular file.
    NotFound
        Nothing is there, or it resolves outside the home (the same answer:
        what lies outside a user's home is nobody's business here).
    TooLarge
        The file is larger than ``limit`` bytes.
    """
    relative = check_relative(path, f"{what} path")
    home_real = os.path.realpath(home)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(os.path.join(home_real, *relative.parts), flags)
    except OSError:
        # ELOOP (a symlink as the last component) answers as missing, too
        raise NotFound(f"no {what} at {path!r} in your home directory") from None
    try:
        opened = os.readlink(f"/proc/self/fd/{fd}")
        if not _inside(opened, home_real):
            raise NotFound(f"no {what} at {path!r} in your home directory")
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Invalid(f"{path!r} is not a file")
        if info.st_size > limit:
            raise TooLarge(
                f"the {what} {path!r} is {info.st_size} bytes, over the limit of {limit} bytes: "
                "clear large outputs, or read big data from a file in the notebook"
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise TooLarge(f"the {what} {path!r} is over the limit of {limit} bytes")
        return data
    finally:
        os.close(fd)


def glob_in_home(home: str | os.PathLike[str], pattern: str) -> Iterator[Path]:
    """Yield the regular files matching ``pattern`` under ``home``, never outside it.

    Symlinks are not followed (a link out of the home is not the user's data),
    and every match is checked by components against the resolved home.
    """
    relative = check_relative(pattern, "file glob")
    home_real = os.path.realpath(home)
    full = os.path.join(glob.escape(home_real), *relative.parts)
    for match in glob.iglob(full, recursive=True):
        try:
            info = os.lstat(match)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode):
            continue
        if not _inside(os.path.realpath(match), home_real):
            continue
        yield Path(match)
