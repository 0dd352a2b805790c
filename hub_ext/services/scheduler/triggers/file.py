"""File triggers: a job runs when a file matching its glob arrives in its owner's home.

The row keeps the ``glob`` (:class:`FileKind`); the service's
:class:`FileWatcher` watches it and fires through
:meth:`~.firing.Firing.fire_trigger`, which accepts this kind only
(:attr:`FileKind.fired_by_service`).

The watcher scans every file trigger's glob every ``interval`` seconds
(through :func:`.paths.glob_in_home`: never outside the home, never through
a link). A file *arrives* when its modification time is at or after the
trigger's creation and it has stopped changing (the same size and time on
two scans, so a file still being copied does not fire half-written). The
run gets two parameters: ``trigger_path`` (the file's absolute path) and
``trigger_sha256`` (its digest).

A pipeline's file trigger (``debounce_seconds``) fires in **batches** instead:
one pipeline run for all the files that arrived since its last batch, once the
newest of them has not changed for ``debounce_seconds``, with two parameters,
``trigger_paths`` and ``trigger_sha256s`` (in path order). The batch's newest
modification time is the firing's tick, so a restarted watcher starts from
there: a file is in exactly one batch.

Nothing is kept in memory that a restart would lose: the file's
modification time is the run's ``tick``, and the store queues one run per
(trigger, tick), so a restarted watcher re-scans and fires exactly the
arrivals it has not fired yet, including those that came while it was down.

Rejected alternative: inotify. It needs a watch per directory of every
user's globs, misses what arrived while the service was down, and does not
work on the network file systems homes often live on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from ..errors import SchedulerError
from ..models import FileTrigger
from ..orm import Job, Run, Trigger
from ..paths import glob_in_home
from .base import TriggerKind

if TYPE_CHECKING:
    from ..store import JobStore

log = logging.getLogger("shipyard.scheduler.files")

#: Files whose digest is computed per scan at most; the rest wait for the next scan.
MAX_FIRES_PER_SCAN = 100
#: Matches looked at per trigger and scan (a glob over a huge tree must not stall the rest).
MAX_MATCHES = 10_000


class FileKind(TriggerKind):
    """``file``: see the module docstring."""

    name = "file"
    model = FileTrigger
    fired_by_service = True

    def spec(self, model: FileTrigger) -> tuple[dict[str, Any], None]:
        spec: dict[str, Any] = {"glob": model.glob}
        debounce = getattr(model, "debounce_seconds", None)  # a pipeline's file trigger
        if debounce is not None:
            spec["debounce_seconds"] = debounce
        return spec, None

    def describe(self, spec: dict[str, Any]) -> FileTrigger:
        return FileTrigger.model_construct(glob=spec["glob"])


@dataclass(frozen=True)
class Watched:
    """A file trigger of an unpaused job, as the watcher needs it."""

    trigger_id: str
    job_id: str
    owner: str
    glob: str
    created: datetime
    #: a pipeline's trigger: one run per batch of new files, ``debounce`` seconds quiet
    batch: bool = False
    debounce: float = 0.0
    #: the newest file a batch trigger has fired for (its firing's tick)
    last_tick: datetime | None = None


def file_triggers(store: JobStore) -> list[Watched]:
    """Every file trigger of an unpaused job (a pipeline's with its last batch's tick)."""
    last = select(func.max(Run.tick)).where(Run.trigger_id == Trigger.id).scalar_subquery()
    with store._read.begin() as session:  # noqa: SLF001 - the store's own read sessions
        rows = session.execute(
            select(
                Trigger.id,
                Job.id,
                Job.owner,
                Trigger.spec,
                Trigger.created_at,
                Job.pipeline_id,
                Job.step,
                last,
            )
            .join(Job, Trigger.job_id == Job.id)
            .where(Trigger.kind == FileKind.name, Job.paused.is_(False))
        ).all()
    return [
        Watched(
            t,
            j,
            owner,
            spec["glob"],
            created,
            batch=pipeline is not None and step is None,
            debounce=float(spec.get("debounce_seconds") or 0),
            last_tick=tick,
        )
        for t, j, owner, spec, created, pipeline, step, tick in rows
    ]


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _microseconds(when: datetime) -> int:
    """``when`` in whole microseconds since the epoch, exactly (no float on the way)."""
    return (when - _EPOCH) // timedelta(microseconds=1)


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FileWatcher:
    """Scans the file triggers' globs and fires their jobs; see the module docstring."""

    def __init__(
        self,
        store: JobStore,
        home_of: Callable[[str], str | None],
        interval: float,
        wake: Callable[[], None] | None = None,
    ):
        self.store = store
        self.home_of = home_of
        self.interval = interval
        self.wake = wake or (lambda: None)
        self._seen: dict[tuple[str, str], tuple[int, int]] = {}
        #: (trigger, path, mtime) already handed to the store: not asked again.
        self._fired: set[tuple[str, str, int]] = set()
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                fired = await asyncio.to_thread(self.scan)
                if fired:
                    self.wake()
            except Exception:
                log.exception("Scanning the file triggers failed; trying again")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)

    def scan(self) -> int:
        """One pass over every file trigger; returns how many runs were queued."""
        fired = 0
        seen: dict[tuple[str, str], tuple[int, int]] = {}
        for watched in file_triggers(self.store):
            trigger_id, job_id, pattern = watched.trigger_id, watched.job_id, watched.glob
            home = self.home_of(watched.owner)
            if home is None or not os.path.isdir(home):
                continue
            if watched.batch:
                try:
                    fired += self._scan_batch(watched, home)
                except SchedulerError as e:
                    log.warning("File trigger %s of job %s: %s", trigger_id, job_id, e)
                continue
            since = watched.created.timestamp()
            try:
                matches = glob_in_home(home, pattern)
                for n, path in enumerate(matches):
                    if n >= MAX_MATCHES:
                        log.warning(
                            "Trigger %s: glob %r matches too many files", trigger_id, pattern
                        )
                        break
                    try:
                        info = os.lstat(path)
                    except OSError:
                        continue
                    if info.st_mtime < since:
                        continue
                    key, state = (trigger_id, str(path)), (info.st_mtime_ns, info.st_size)
                    seen[key] = state
                    if self._seen.get(key) != state or fired >= MAX_FIRES_PER_SCAN:
                        continue  # new or still changing: look again next scan
                    done = (trigger_id, str(path), info.st_mtime_ns)
                    if done in self._fired:
                        continue
                    fired += self._fire(trigger_id, job_id, str(path), info.st_mtime_ns)
                    self._fired.add(done)
            except SchedulerError as e:
                log.warning("File trigger %s of job %s: %s", trigger_id, job_id, e)
        self._seen = seen
        return fired

    def _scan_batch(self, watched: Watched, home: str) -> int:
        """A pipeline's trigger: the files new since its last batch, once they are quiet.

        New: modified after the trigger was made and after the newest file of the last
        batch (the firing's tick, in the database: a restart fires nothing twice).
        Quiet: the newest of them is ``debounce`` seconds old, so files copied one after
        another make one batch. Compared in microseconds, the database's precision.
        """
        since = max(
            _microseconds(watched.created),
            _microseconds(watched.last_tick) + 1 if watched.last_tick else 0,
        )
        new: list[tuple[str, int]] = []
        for n, path in enumerate(glob_in_home(home, watched.glob)):
            if n >= MAX_MATCHES:
                log.warning("Trigger %s: glob %r matches too many files", watched.trigger_id, path)
                break
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode) and info.st_mtime_ns // 1000 >= since:
                new.append((str(path), info.st_mtime_ns // 1000))
        if not new:
            return 0
        newest = max(mtime for _, mtime in new)
        if time.time_ns() // 1000 - newest < watched.debounce * 1e6:
            return 0  # still arriving
        done = (watched.trigger_id, "", newest)
        if done in self._fired:
            return 0
        paths = sorted(path for path, _ in new)[:MAX_FIRES_PER_SCAN]
        try:
            digests = [sha256_of(path) for path in paths]
        except OSError:
            return 0  # one went away meanwhile: the next scan sees the batch as it is
        tick = datetime.fromtimestamp(newest / 1e6, timezone.utc)
        try:
            self.store.fire_trigger(
                watched.trigger_id,
                f"{len(paths)} new file(s) matching {watched.glob}",
                tick=tick,
                parameters={"trigger_paths": paths, "trigger_sha256s": digests},
            )
        except SchedulerError as e:
            log.info("File trigger %s not fired: %s", watched.trigger_id, e)
            return 0
        self._fired.add(done)
        log.info("%d new file(s) fired pipeline trigger %s", len(paths), watched.trigger_id)
        return 1

    def _fire(self, trigger_id: str, job_id: str, path: str, mtime_ns: int) -> int:
        tick = datetime.fromtimestamp(mtime_ns / 1e9, timezone.utc)
        try:
            digest = sha256_of(path)
        except OSError:
            return 0
        try:
            run = self.store.fire_trigger(
                trigger_id,
                f"file {os.path.basename(path)} arrived",
                tick=tick,
                parameters={"trigger_path": path, "trigger_sha256": digest},
            )
        except SchedulerError as e:
            log.info("File trigger %s of job %s not fired: %s", trigger_id, job_id, e)
            return 0
        new = run.tick == tick and run.status.value == "queued" and run.reason.startswith("file")
        if new:
            log.info("File %s fired job %s (run %s)", path, job_id, run.id)
        return int(new)
