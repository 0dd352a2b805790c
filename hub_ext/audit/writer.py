"""Appending to the trail: one lock, one line, one row.

:class:`TrailWriter` is the only code that writes records. For each event it

1. takes the trail's lock: a ``threading.Lock`` for the threads of this
   process, then ``fcntl.flock`` on ``audit.lock`` for the other processes on
   the machine (the hub, each service, the CLI), and on PostgreSQL also a
   transaction-scoped advisory lock around the insert;
2. reads the chain's head (the last line's ``seq`` and ``hash``; cached while
   the file's inode and size show that nobody else wrote since);
3. appends the sealed record as one line with one ``write`` on an
   ``O_APPEND`` descriptor, so a line is never interleaved with another;
4. inserts the same record into the table, first copying any records the
   table lacks (a writer that crashed or lost its database between steps 3
   and 4): every record reaches the table exactly once, in order
   (``seq`` is the primary key, and only the lock holder inserts).

The file is written before the table and is the record of truth: a record
that reached neither was never emitted (``emit`` logs the error), one that
reached the file reaches the table at the next write by any process. The
line is handed to the kernel (a crashed process loses nothing) but not
``fsync``-ed, which would cost milliseconds per record; a power cut can lose
the last records the kernel had not flushed, as for any log file.

Rejected: a background thread batching inserts (a crash would lose the
batch silently, and the table would lag the file for queries), a database
sequence for ``seq`` (it would not order the file), and writing through a
separate daemon (one more process to keep alive on one machine).

The writer never rewrites a line of ``audit.jsonl``; retention rotates the
whole file to a dated archive by rename (see :mod:`.retention`), so
``tail -F audit.jsonl`` follows the trail and a log shipper sends each line
unchanged, exactly once.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, text

from .chain import GENESIS, dumps_line, seal
from .db import CHAIN_LOCK_KEY, make_engine, upgrade
from .orm import AuditRecord
from .settings import AuditSettings

log = logging.getLogger(__name__)

#: Bytes read from the end of a file to find its last line.
TAIL_CHUNK = 65536


def parse_time(value: str) -> datetime:
    """The record's ``__timestamp__`` (ISO 8601, ``Z`` suffix) as an aware datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def row_values(record: dict[str, Any]) -> dict[str, Any]:
    """The table row of a sealed record."""
    return {
        "seq": record["seq"],
        "time": parse_time(record["__timestamp__"]),
        "action": record["action"],
        "actor": record.get("actor"),
        "owner": record.get("owner"),
        "target": record.get("target"),
        "outcome": record["outcome"],
        "prev_hash": record["prev_hash"],
        "hash": record["hash"],
        "record": json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
    }


def archive_paths(directory: Path) -> list[Path]:
    """The dated archives of the JSON-lines file, oldest first."""
    return sorted(directory.glob("audit-*.jsonl"))


def last_line(path: Path) -> str | None:
    """The last complete line of ``path``, or None if it has none."""
    try:
        with path.open("rb") as f:
            return _last_line(f.fileno())
    except FileNotFoundError:
        return None


def _last_line(fd: int) -> str | None:
    size = os.fstat(fd).st_size
    offset = size
    tail = b""
    while offset > 0:
        step = min(TAIL_CHUNK, offset)
        offset -= step
        tail = os.pread(fd, step, offset) + tail
        lines = tail.rstrip(b"\n").split(b"\n")
        if len(lines) > 1 or offset == 0:
            last = lines[-1].strip()
            return last.decode() if last else None
    return None


class TrailWriter:
    """Appends sealed records to the JSON-lines file and the table (see module docstring)."""

    def __init__(self, settings: AuditSettings):
        self.settings = settings
        # Re-entrant: retention appends its own record while it holds the lock.
        self._lock = threading.RLock()
        self._depth = 0
        self._pid = os.getpid()
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._fd_ino: int | None = None
        # (inode, size) of the file after our last write, and the head it ended with
        self._cached: tuple[int, int] | None = None
        self._head: tuple[int, str] = (0, GENESIS)
        self._engine: Engine | None = None
        self._conn: Connection | None = None
        # the seq this writer last inserted into the table
        self._table_head: int | None = None

    # -- locking ---------------------------------------------------------

    def _ensure_dir(self) -> None:
        directory = self.settings.path
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if directory.stat().st_mode & 0o077:
            directory.chmod(0o700)

    def _after_fork(self) -> None:
        # A forked child shares the parent's open file descriptions, and with
        # them the parent's flock: it must open its own.
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._lock_fd = self._fd = self._fd_ino = self._cached = None
            self._conn = self._table_head = None
            if self._engine is not None:
                self._engine.dispose(close=False)
                self._engine = None

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the trail's lock (this process's threads and every other writer)."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._after_fork()
            if self._lock_fd is None:
                self._ensure_dir()
                self._lock_fd = os.open(
                    self.settings.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
                )
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            self._depth = 1
            try:
                yield
            finally:
                self._depth = 0
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    # -- the file ----------------------------------------------------------

    def _open_current(self) -> int:
        """The descriptor of ``audit.jsonl``, reopened if it was rotated or removed."""
        path = self.settings.jsonl_path
        try:
            ino = path.stat().st_ino
        except FileNotFoundError:
            ino = None
        if self._fd is None or ino != self._fd_ino:
            if self._fd is not None:
                os.close(self._fd)
            self._ensure_dir()
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._fd_ino = os.fstat(self._fd).st_ino
            self._cached = None
        return self._fd

    def read_head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the last record written; call with the lock held."""
        fd = self._open_current()
        st = os.fstat(fd)
        if self._cached == (st.st_ino, st.st_size):
            return self._head
        line = None
        if st.st_size:
            with self.settings.jsonl_path.open("rb") as f:
                line = _last_line(f.fileno())
        if line is None:
            # a freshly rotated file: the chain goes on from the newest archive
            for archive in reversed(archive_paths(self.settings.path)):
                line = last_line(archive)
                if line is not None:
                    break
        if line is None:
            return 0, GENESIS
        try:
            last = json.loads(line)
            return int(last["seq"]), str(last["hash"])
        except (ValueError, KeyError, TypeError) as e:
            raise RuntimeError(
                f"the last line of {self.settings.jsonl_path} is not an audit record ({e}); "
                "run `shipyard audit verify`"
            ) from e

    def append_locked(self, event: dict[str, Any]) -> dict[str, Any]:
        """Seal ``event``, append it to the file and the table; call with the lock held."""
        seq, prev = self.read_head()
        record = seal(event, seq + 1, prev)
        fd = self._open_current()
        data = dumps_line(record).encode()
        written = os.write(fd, data)
        if written != len(data):  # a full disk; the partial line is reported by verify
            raise OSError(f"short write to {self.settings.jsonl_path}: {written} of {len(data)}")
        st = os.fstat(fd)
        self._cached = (st.st_ino, st.st_size)
        self._head = (record["seq"], record["hash"])
        try:
            self._insert(record)
        except Exception:
            log.exception(
                "audit record %d is in %s but not yet in the table; the next write copies it",
                record["seq"],
                self.settings.jsonl_path,
            )
        return record

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        """Seal and write one event (takes the lock)."""
        with self.locked():
            return self.append_locked(event)

    # -- the table -----------------------------------------------------------

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._ensure_dir()
            upgrade(self.settings.db_url)
            self._engine = make_engine(self.settings.db_url)
            db_file = self._engine.url.database
            if self._engine.url.get_backend_name() == "sqlite" and db_file:
                for suffix in ("", "-wal", "-shm"):
                    p = Path(db_file + suffix)
                    if p.exists() and p.stat().st_mode & 0o077:
                        p.chmod(0o600)
        return self._engine

    def _connection(self) -> Connection:
        # one connection kept open per writer: a pool checkout and a new transaction
        # object per record cost more than the insert itself on SQLite
        if self._conn is None:
            self._conn = self.engine.connect()
        return self._conn

    def _insert(self, record: dict[str, Any]) -> None:
        try:
            conn = self._connection()
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CHAIN_LOCK_KEY})
                rows = []
                if self._table_head != record["seq"] - 1:
                    # someone else wrote since our last insert: check that the table
                    # caught up with the file, and copy what it lacks
                    top = conn.execute(select(func.max(AuditRecord.seq))).scalar()
                    if top is not None and top >= record["seq"]:
                        raise RuntimeError(
                            f"the table already holds record {top} >= {record['seq']}: "
                            "the file and the table disagree; run `shipyard audit verify`"
                        )
                    if top is not None and top < record["seq"] - 1:
                        rows = [row_values(r) for r in self.records_between(top, record["seq"])]
                rows.append(row_values(record))
                conn.execute(insert(AuditRecord), rows)
        except Exception:
            self._table_head = None
            if self._conn is not None:
                self._conn.invalidate()
                self._conn = None
            raise
        self._table_head = record["seq"]

    def sync_table(self) -> int:
        """Copy into the table the records of the file it lacks; returns how many."""
        with self.locked():
            seq, _ = self.read_head()
            with self.engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CHAIN_LOCK_KEY})
                top = conn.execute(select(func.max(AuditRecord.seq))).scalar() or 0
                if top >= seq:
                    return 0
                rows = [row_values(r) for r in self.records_between(top, seq + 1)]
                if rows:
                    conn.execute(insert(AuditRecord), rows)
                return len(rows)

    def records_between(self, after: int, before: int) -> list[dict[str, Any]]:
        """Records of the files with ``after < seq < before``, in order."""
        found = []
        for path in [*archive_paths(self.settings.path), self.settings.jsonl_path]:
            if not path.exists():
                continue
            with path.open(encoding="utf-8") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                        seq = int(record["seq"])
                    except (ValueError, KeyError, TypeError):
                        continue
                    if after < seq < before:
                        found.append(record)
        return found

    def close(self) -> None:
        """Close the descriptors and the engine (tests; a new writer opens them again)."""
        with self._lock:
            for fd in (self._fd, self._lock_fd):
                if fd is not None and self._pid == os.getpid():
                    os.close(fd)
            self._fd = self._lock_fd = self._fd_ino = self._cached = None
            if self._conn is not None:
                self._conn.close()
            self._conn = self._table_head = None
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None
