"""A process's identity and lifetime on Linux, and the private files that record it.

The hub adopts the services an earlier hub started, the tracking gateway adopts
its MLflow, and the scheduler checks whether an earlier worker still lives: each
records a pid with the start time the kernel gives it (field 22 of
``/proc/<pid>/stat``, clock ticks after boot), because a pid the system has given
to another process since must never be taken for it, and writes that record
whole and readable by its own account only (:func:`write_private`). Processes
that must not outlive their parent ask Linux for a signal when it dies
(:func:`die_with_parent`). These were written once per user; they are one here.

Rejected: ``psutil.Process.create_time()`` for the identity. It is the same
field turned into seconds since the epoch through the boot time, which is a
float that the kernel's clock adjustments can move; the tick count is exact.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path

try:  # looked up here, not between fork and exec, where loading a library may deadlock
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None

#: ``prctl`` option: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM, *, exit_if_orphaned: bool = False) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (``PR_SET_PDEATHSIG``).

    Safe between fork and exec (a user's process, :mod:`hub_ext.host.localproc`): it
    calls only ``prctl``, looked up at import.

    Parameters
    ----------
    sig : int
        The signal to receive: ``SIGTERM`` for a service that dies with the hub,
        ``SIGKILL`` for a user's process that dies with its service. Nothing
        happens where ``prctl`` is not available (not Linux).
    exit_if_orphaned : bool
        Exit now (status 0) when the parent has already died before the request
        took effect (the process was handed to init), which the signal would
        otherwise never tell. Not between fork and exec.
    """
    if _prctl is None:
        return
    _prctl(PR_SET_PDEATHSIG, int(sig))
    if exit_if_orphaned and os.getppid() == 1:
        sys.exit(0)


def read_stat(pid: int) -> tuple[str, str]:
    """``(state, start time)`` of process ``pid`` from ``/proc/<pid>/stat``.

    Raises
    ------
    FileNotFoundError
        No such process.
    OSError
        Another failure to read it (no ``/proc``).
    """
    stat = Path(f"/proc/{int(pid)}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the name, in parentheses, may hold spaces
    return fields[0], fields[19]


def process_identity(pid: int) -> tuple[str, str] | None:
    """``(state, start time)`` of process ``pid``; None if there is none.

    The start time (clock ticks after boot, field 22) tells a process from a later one
    that got the same pid.
    """
    try:
        return read_stat(pid)
    except (OSError, ValueError):
        return None


def start_time(pid: int) -> str | None:
    """Start time of process ``pid`` (field 22 of /proc/<pid>/stat); None if gone or a zombie."""
    identity = process_identity(pid)
    return None if identity is None or identity[0] in ("Z", "X") else identity[1]


def is_running(pid: int, started: str) -> bool:
    """Whether ``pid`` is still the process that started at ``started``, and not a zombie."""
    return start_time(pid) == started


def write_private(path: Path, data: str | bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path``, mode 0600, whole or not at all: a reader never sees half.

    The data goes into a new file beside ``path`` that is then renamed over it (or,
    ``exclusive``, linked to it, which fails with ``FileExistsError`` where ``path``
    exists: the first of several processes wins).

    Parameters
    ----------
    path : Path
        The file; its folder must exist.
    data : str or bytes
        What it holds (``str`` is written as UTF-8).
    exclusive : bool
        Refuse to replace an existing file.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        with os.fdopen(os.open(temporary, flags, 0o600), "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        if exclusive:
            os.link(temporary, path)
            temporary.unlink()
        else:
            os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
