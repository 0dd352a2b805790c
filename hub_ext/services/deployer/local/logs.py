"""A version's log: what its replicas print, and the backend's own notes, in one file.

One file per version, ``<key>.log`` in ``c.LocalBackend.log_dir``, kept after the
version stops so its owner can read why it failed (:meth:`LocalBackend.log_tail`).
A replica's output reaches it through :class:`ReplicaOutput`, which reads the
replica's FIFO (:mod:`.process`) line by line and keeps the last lines in memory
for the reason of a failed start (:mod:`.health`).

The log is opened by the service and never through a link: the folder is the
service's, but a version's owner names the version, and a log that followed a
link planted there would write wherever the link points.
"""

from __future__ import annotations

import asyncio
import collections
import io
import os
import stat
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

from ...common.scrub import Scrubber
from ..backend import DeployFailed

#: Lines of a replica's own output kept in memory, for the reason of a failed start.
TAIL_LINES = 40
#: A longer line of a model server's output is cut in the log.
MAX_LINE = 16 * 2**10


class VersionLog:
    """What a version's replicas print, each line stamped and marked with its replica.

    One file per version, ``<key>.log`` in the service's log folder, opened by
    the service (never through a link) and appended to across restarts. When
    it passes ``limit`` bytes it becomes ``<key>.log.1`` (replacing the one
    before) and a new file starts: at most twice the limit per version is kept,
    and the newest lines always are.
    """

    def __init__(self, path: Path, limit: int, secrets: Mapping[str, str] | None = None):
        self.path = path
        self.limit = max(1024, limit)
        # the replicas' secrets never reach the file (nor the tail a failure shows)
        self.scrub = Scrubber(secrets or {}).text
        self.file: io.FileIO | None = None
        self.size = 0
        self._open()

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.path, flags, 0o600)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            os.close(fd)
            raise DeployFailed(f"The log {self.path} is not a plain file of its own; remove it.")
        self.file = os.fdopen(fd, "ab", buffering=0)
        self.size = info.st_size

    def line(self, source: str, text: str) -> None:
        """Append one line from ``source`` (``r0``, ``r1``… or ``shipyard``)."""
        if self.file is None:
            return
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        data = f"{stamp} {source} | {text}\n".encode("utf-8", "replace")
        if self.size + len(data) > self.limit:
            self.file.close()
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            self._open()
            assert self.file is not None  # _open raises or opens it
        self.file.write(data)
        self.size += len(data)

    def note(self, text: str) -> None:
        """A line of the backend's own (starts, exits, restarts)."""
        self.line("shipyard", text)

    def close(self) -> None:
        """Close the file; later lines are dropped (the version is gone)."""
        if self.file is not None:
            self.file.close()
            self.file = None


def read_tail(path: Path, lines: int = 100, chunk: int = 64 * 2**10) -> str:
    """The last ``lines`` lines of a version log (never following a link)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - chunk))
        text = f.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


class ReplicaOutput(asyncio.Protocol):
    """A replica's output (its FIFO), line by line, into the version log and a short tail.

    ``ended`` is set when no process writes to the FIFO any more (the replica and
    every process it started have exited) and every line has been written.
    """

    def __init__(self, log: VersionLog, source: str):
        loop = asyncio.get_running_loop()
        self.log = log
        self.source = source
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.ended = loop.create_future()
        self._partial = bytearray()

    def data_received(self, data: bytes) -> None:
        self._partial += data
        while b"\n" in self._partial or len(self._partial) > MAX_LINE:
            line, sep, rest = self._partial.partition(b"\n")
            if not sep:
                line, rest = self._partial[:MAX_LINE], self._partial[MAX_LINE:]
            self._partial = bytearray(rest)
            self._emit(bytes(line))

    def _emit(self, raw: bytes) -> None:
        text = self.log.scrub(raw.decode("utf-8", "replace").rstrip("\r"))
        self.tail.append(text)
        self.log.line(self.source, text)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._partial:
            self._emit(bytes(self._partial))
            self._partial.clear()
        if not self.ended.done():
            self.ended.set_result(None)

    def last_lines(self, count: int = 10) -> str:
        """The replica's last ``count`` lines, for the reason of a failed start."""
        return "\n".join(list(self.tail)[-count:])
