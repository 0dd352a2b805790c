"""The metrics spool: where ``log()`` puts values until the tracking server has them.

``log()`` never talks to the server. :meth:`Journal.log` appends one line per value to an
on-disk spool with a single ``write(2)`` (about a microsecond, so 10,000 values cost
milliseconds), and :class:`~server_ext.clients.tracking.sender.MetricSender` sends them from a
background thread. Rejected alternatives:

* ``mlflow.log_metric`` per value: one HTTP request per value; 10,000 values take minutes.
* MLflow's async logging (``synchronous=False``): an in-memory queue, lost when a kernel is
  killed, and it needs a fluent active run.
* buffering the spool and flushing it per batch: a kernel killed mid-loop loses up to a batch.
  A write per value puts every value in the OS before ``log()`` returns; there is no fsync
  (that guards against power loss, not a killed kernel, and costs milliseconds per call).

Each run is a *journal* in the spool directory (``$SHIPYARD_SPOOL_DIR`` or
``~/.shipyard/spool``): ``<id>.json`` says what the run is and how far sending got,
``<id>.metrics`` holds ``key<TAB>value<TAB>timestamp<TAB>step`` lines and ``<id>.files/``
the artifacts: files copied when the cell started, and the texts the header holds (the
cell's source, the package list), written there by the sender before it uploads them.
The process that owns a journal holds an ``flock`` on its metrics file; a journal that
nobody holds belongs to a kernel that died, and :meth:`Journal.adopt` reads it back so
that the next kernel can finish it.

This module owns the file format and its locking, and nothing else: it makes no request,
so ``log()``'s hot path cannot block on the network. Metric names and values are checked here,
before a line is written: a value MLflow would refuse is then reported by the ``log()`` call
that made it, not later as a whole run the server rejected.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import operator
import os
import posixpath
import re
import shutil
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import asdict
from pathlib import Path

from .client import MAX_KEY, METRICS_PER_BATCH, MetricError, RunPlan

# MLflow's own rule for metric names (mlflow.utils.validation), minus ":" which Windows lacks.
# Tabs and newlines are excluded, which keeps the spool's line format unambiguous.
_METRIC_KEY = re.compile(rf"[\w./ -]{{1,{MAX_KEY}}}")


def default_spool_dir() -> Path:
    """``$SHIPYARD_SPOOL_DIR``, or ``~/.shipyard/spool``."""
    return Path(os.environ.get("SHIPYARD_SPOOL_DIR") or Path.home() / ".shipyard" / "spool")


def _metric_key(key: object) -> str:
    if (
        isinstance(key, str)
        and _METRIC_KEY.fullmatch(key)
        and posixpath.normpath(key) == key
        and not key.startswith(("/", ".."))
        and key != "."
    ):
        return key
    raise MetricError(
        f"log(): {key!r} is not a metric name MLflow accepts. Use letters, digits, _ - . / "
        f"and spaces, at most {MAX_KEY} characters: log(loss=0.3) or log(**{{'val/loss': 0.3}})."
    )


def _metric_value(key: str, value: object) -> float:
    if not isinstance(value, (str, bytes)):
        try:
            return float(value)  # int, bool, numpy and torch scalars
        except (TypeError, ValueError, OverflowError):
            pass
    raise MetricError(
        f"log({key}=...): metric values must be numbers, not {type(value).__name__}. "
        f"Pass a number, e.g. log({key}=float(x))."
    )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Journal:
    """One run's spool: its plan and progress, its metric lines, its artifacts.

    Create one with :meth:`create` (a new run) or :meth:`adopt` (one a dead kernel left).
    :meth:`log` is the hot path of ``log()``; the sender uses :meth:`take`, :meth:`acked`,
    :meth:`giveback`. This process holds an ``flock`` on the metrics file until
    :meth:`close`. A run whose :meth:`end` is recorded is the sender's to end on the server.
    """

    def __init__(self, header: Path, state: dict, fd: int, records=()):
        self.header = header
        self.state = state
        self._fd = fd
        self.pending: deque[tuple[str, float, int, int]] = deque(records)
        self.total = state["sent"] + len(self.pending)
        # The sender's bookkeeping (one thread per server talks to it about this run):
        self.backoff = 0.0  # seconds; 0 while the server takes our requests
        self.retry_at = 0.0  # time.monotonic() of the next attempt
        self.wake = None  # set by the sender: called when a batch is ready
        self.tried = False  # a request to create the run was sent: look for it before another
        self.starting = False  # its cell waits for the run to be created (guarded by progress)
        self.refusal: Exception | None = None  # why the server refused to create the run
        # tags to add before the run is created (the git state, read beside the cell)
        self.later_tags: Future[dict[str, str]] | None = None
        self.quiet_until = 0.0  # time.monotonic() before which only its end or a batch wakes it
        self.closed = False
        self.progress = threading.Condition()  # notified on every step the sender makes
        self._lock = threading.Lock()  # file order == queue order; one state writer
        self._steps: dict[str, int] = {}
        self._keys: set[str] = set()
        self._signalled = False

    metrics = property(lambda self: self.header.with_suffix(".metrics"))
    files = property(lambda self: self.header.with_suffix(".files"))
    uri = property(lambda self: self.state["uri"])
    run_id = property(lambda self: self.state["run_id"])
    plan = property(lambda self: RunPlan(**self.state["plan"]))
    ended = property(lambda self: self.state["end"] is not None)

    @classmethod
    def create(
        cls, directory: Path, uri: str, plan: RunPlan, files: dict[str, Path], texts: dict[str, str]
    ) -> Journal:
        """Start a journal: lock the metrics file, copy the artifacts, then write the header.

        The header comes last, so a journal another process can see is always locked or whole.
        """
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        header = directory / f"{plan.spool_id}.json"
        fd = os.open(header.with_suffix(".metrics"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        staged = header.with_suffix(".files")
        for name, source in files.items():
            (staged / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, staged / name)
        # the texts go in the header, one write; the sender writes them out before uploading
        state = {
            "uri": uri,
            "plan": asdict(plan),
            "run_id": None,
            "sent": 0,
            "end": None,
            "texts": texts,
        }
        journal = cls(header, state, fd)
        journal.save()
        return journal

    @classmethod
    def adopt(cls, header: Path) -> Journal | None:
        """The journal at ``header`` if its kernel is gone (nobody holds its lock), else None."""
        try:
            fd = os.open(header.with_suffix(".metrics"), os.O_WRONLY | os.O_APPEND)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            state = json.loads(header.read_text())  # after the lock: the owner may just have ended
            lines = header.with_suffix(".metrics").read_text().splitlines()[state["sent"] :]
            RunPlan(**state["plan"]), state["uri"], state["run_id"], state["end"]  # all there?
        except (OSError, ValueError, KeyError, TypeError):  # in use, gone, or not ours to read
            os.close(fd)
            return None
        records = []
        for line in lines:
            try:
                key, value, ts, step = line.split("\t")
                records.append((key, float(value), int(ts), int(step)))
            except ValueError:  # the last line, torn by the kill
                continue
        journal = cls(header, state, fd, records)
        if state["end"] is None:  # its kernel died in the middle of the cell
            died = int(os.stat(fd).st_mtime * 1000)
            journal.end("KILLED", {"shipyard.recovered": "true"}, died)
        journal.tried = True  # the dead kernel may have created the run
        return journal

    def log(self, metrics: dict[str, object], step: int | None) -> None:
        """Spool one value per metric; all are checked before any is written.

        This is ``log()``'s hot path (a few microseconds): names are checked once per run,
        and the lines go to the file in one ``write(2)``.
        """
        rows = []
        for key, value in metrics.items():
            if key not in self._keys:
                self._keys.add(_metric_key(key))
            rows.append((key, value if type(value) is float else _metric_value(key, value)))
        if step is not None:
            try:
                step = operator.index(step)
            except TypeError:
                raise MetricError(f"log(step={step!r}): step must be an integer.") from None
        ts = time.time_ns() // 1_000_000
        steps = self._steps
        with self._lock:
            out, text = [], []
            for key, value in rows:
                s = steps.get(key, 0) if step is None else step
                steps[key] = s + 1
                out.append((key, value, ts, s))
                text.append(f"{key}\t{value!r}\t{ts}\t{s}\n")
            os.write(self._fd, "".join(text).encode())
            self.pending.extend(out)
            self.total += len(out)
        if not self._signalled and len(self.pending) >= METRICS_PER_BATCH and self.wake:
            self._signalled = True
            self.wake()

    def take(self, n: int) -> list[tuple[str, float, int, int]]:
        """Up to ``n`` unsent values, oldest first (``log()`` only appends on the other end)."""
        self._signalled = False
        batch = []
        with contextlib.suppress(IndexError):
            while len(batch) < n:
                batch.append(self.pending.popleft())
        return batch

    def giveback(self, batch: list) -> None:
        self.pending.extendleft(reversed(batch))

    def acked(self, n: int) -> None:
        with self._lock:
            self.state["sent"] += n
            self._save()
        self.notify()

    def set_run_id(self, run_id: str, experiment_id: str, name: str) -> None:
        with self._lock:
            self.state.update(run_id=run_id, experiment_id=experiment_id, run_name=name)
            self._save()

    def add_tags(self, tags: dict[str, str]) -> None:
        """Add tags to the plan of a run not created yet (what was read beside its cell)."""
        with self._lock:
            self.state["plan"]["tags"].update(tags)
            self._save()

    def end(self, status: str, tags: dict[str, str], when: int | None = None) -> None:
        with self._lock:
            self.state["end"] = {"status": status, "time": when or _now_ms(), "tags": tags}
            self._save()

    def stage_texts(self) -> None:
        """Write the run's texts (cell source, package list) beside its files, to upload."""
        for name, text in self.state.get("texts", {}).items():
            (self.files / name).parent.mkdir(parents=True, exist_ok=True)
            (self.files / name).write_text(text, encoding="utf-8")

    def due(self, now: float) -> bool:
        """Whether a woken sender should work on this run now (see ``quiet_until``)."""
        return now >= self.quiet_until or self.ended or len(self.pending) >= METRICS_PER_BATCH

    def drained(self) -> bool:
        return self.run_id is not None and self.state["sent"] >= self.total

    def notify(self) -> None:
        with self.progress:
            self.progress.notify_all()

    def save(self) -> None:
        with self._lock:
            self._save()

    def _save(self) -> None:
        tmp = self.header.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.header)

    def close(self, keep_as: str | None = None) -> None:
        """Delete the journal (its run is complete), or keep it renamed ``<id>.json<keep_as>``."""
        if keep_as:
            self.header.rename(self.header.with_name(self.header.name + keep_as))
        else:
            self.header.unlink(missing_ok=True)
            self.metrics.unlink(missing_ok=True)
            shutil.rmtree(self.files, ignore_errors=True)
        os.close(self._fd)  # releases the lock, last
        self.closed = True
        self.notify()
