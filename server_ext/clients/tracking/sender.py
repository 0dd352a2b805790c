"""The background sender: spooled runs reach the tracking server, late if need be, never twice.

:class:`MetricSender` creates and ends the runs of ``%%track`` cells and sends what
:mod:`~server_ext.clients.tracking.spool` holds, with ``MlflowClient.log_batch`` through
:class:`~server_ext.clients.tracking.client.TrackingClient`, at most
:data:`~server_ext.clients.tracking.client.METRICS_PER_BATCH` metrics per call. It is apart from the spool because it is the part that waits: on the
server, on backoff, on a cell's end; the spool is the part that must never wait.

* Each tracking server has its own daemon thread, a *lane*, the only thread that talks to
  that server about spooled runs. A server that hangs holds up its own runs and no other
  server's: with one thread for all servers, every run waited behind the slowest one. In a
  lane one request is in flight at a time, so each run's values arrive in order.
* A cell does not wait for the server: the lane creates its run, copies its snapshot and
  artifacts and ends it in the background, so ``%%track`` adds about a millisecond to a cell.
  Three waits remain, each while the server answers. The kernel's first run on a server waits
  at its start until the run is created, so that a refused token or a server that is down is
  said in the cell that met it (later problems are said at the next tracked cell). A run of a
  scheduled job waits at its end until it is complete, because the job's notebook ends right
  after and the scheduler records the run. And :meth:`MetricSender.settle` and
  :meth:`MetricSender.run_id_of` wait for what the user asks about (``%runs``, ``%deploy``'s
  source run). A wait stops as soon as a request fails, when a step (create the run, send a
  batch, end the run) goes unanswered for ``answer_timeout`` seconds, or after
  ``finish_timeout``; the lane goes on in the background, and :class:`Health` tells the user
  once per outage. Requests fail in seconds, not after MLflow's minutes of retries (see
  :mod:`server_ext.clients.tracking.client`).
* The git commit and dirty state (two ``git`` processes, about 10 ms) are read on a thread
  beside the cell, when it starts; the lane adds them to the run before creating it.
* A server that fails is retried with exponential backoff (``min_backoff`` doubling up to
  ``max_backoff``) while cells keep running.
* :meth:`MetricSender.recover`, run when the extension loads, adopts the journals that
  killed kernels left and finishes them. Runs carry the tag ``shipyard.spool_id``, and a run
  whose creation may have reached the server is looked up by it before it is created again,
  so a replay never creates one twice; MLflow's SQL stores ignore a metric sent twice with
  the same key, value, timestamp and step, so resending the batch that was in flight when a
  kernel died is harmless.
* Data the server refuses is never retried forever: the journal is kept as
  ``<id>.json.rejected`` and the user is told where. A run refused while its cell waits for it
  (the kernel's first on a server) is an error of that cell instead, and nothing is kept.
* The threads never keep a kernel alive; :meth:`MetricSender.flush` tries once more at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import time
from concurrent.futures import Future
from pathlib import Path

from .client import (
    METRICS_PER_BATCH,
    RunPlan,
    ServerUnavailable,
    TrackingClient,
    TrackingError,
    Unreachable,
    display_url,
)
from .spool import Journal

#: Seconds a cell waits for one step of the server (create its run, take a batch, end the
#: run) before it stops waiting and the step is left to the background.
ANSWER_TIMEOUT = 5.0
#: Seconds the lane waits for the tags read beside a cell (``git``) before creating its run.
LATER_TAGS_TIMEOUT = 15.0
#: Seconds a new run is left alone after its cell starts, unless the cell ends or fills a
#: batch first: the lane's requests would take the GIL from the cell's first moments.
QUIET_START = 0.2


def _tags_of(future: Future) -> dict[str, str]:
    """The tags a cell's thread read (the git state); none if that failed or hung."""
    try:
        return future.result(timeout=LATER_TAGS_TIMEOUT)
    except Exception:  # noqa: BLE001 - lineage degrades to less, never to a lost run
        return {}


class Health:
    """Which servers fail now, and what the user has not been told yet (once per outage)."""

    def __init__(self, spool: Path):
        self._spool = spool
        self._lock = threading.Lock()
        self._problems: dict[str, ServerUnavailable] = {}
        self._told: set[str] = set()
        self._notes: list[str] = []

    def failed(self, uri: str, exc: ServerUnavailable) -> None:
        with self._lock:
            if type(self._problems.get(uri)) is not type(exc):
                self._told.discard(uri)
            self._problems[uri] = exc

    def ok(self, uri: str) -> None:
        with self._lock:
            self._problems.pop(uri, None)
            self._told.discard(uri)

    def problem(self, uri: str) -> ServerUnavailable | None:
        return self._problems.get(uri)

    def note(self, message: str) -> None:
        with self._lock:
            self._notes.append(message)

    def news(self) -> list[str]:
        """Messages not shown yet: one per outage, plus rejected runs."""
        with self._lock:
            out = [
                f"{exc} Tracked cells still run: their runs and metrics are kept in "
                f"{self._spool} and sent when the server takes them (retried in the background, "
                "and again when a kernel next loads the extension)."
                for uri, exc in self._problems.items()
                if uri not in self._told
            ]
            self._told.update(self._problems)
            out += self._notes
            self._notes.clear()
        return out


class _Lane:
    """One tracking server: its journals, and its thread's request in flight."""

    def __init__(self, uri: str, client: TrackingClient | None):
        self.uri = uri
        self.client = client  # made by the lane's thread when None (mlflow may be missing)
        self.journals: list[Journal] = []
        self.wake = threading.Event()
        self.asked_at: float | None = None  # time.monotonic() when the step in flight began

    @contextlib.contextmanager
    def asking(self):
        """Mark one step of requests in flight, for :meth:`stalled`."""
        self.asked_at = time.monotonic()
        try:
            yield
        finally:
            self.asked_at = None

    def stalled(self, limit: float) -> bool:
        """Whether the step in flight has waited for an answer longer than ``limit`` seconds."""
        asked = self.asked_at
        return asked is not None and time.monotonic() - asked > limit


class MetricSender:
    """Starts and ends spooled runs, and sends their metrics from one thread per server.

    Parameters
    ----------
    directory : Path
        The spool directory.
    finish_timeout : float
        The longest a tracked cell waits, at its end, for its run to be complete.
    max_backoff : float
        The longest wait between two attempts to reach a failing server.
    poll : float
        How often values that do not fill a batch are sent.
    min_backoff : float
        The first wait after a failed attempt.
    answer_timeout : float
        How long a cell waits for one unanswered step before it stops waiting.
    """

    def __init__(
        self,
        directory: Path,
        finish_timeout=60.0,
        max_backoff=30.0,
        poll=1.0,
        min_backoff=0.5,
        answer_timeout=ANSWER_TIMEOUT,
    ):
        self.directory = directory
        self.finish_timeout = finish_timeout
        self.max_backoff = max_backoff
        self.min_backoff = min_backoff
        self.poll = poll
        self.answer_timeout = answer_timeout
        self.health = Health(directory)
        self._lanes: dict[str, _Lane] = {}
        self._lock = threading.Lock()  # the lanes and their journal lists
        self._at_exit = False
        self._created_on: set[str] = set()  # servers that created a run of this kernel

    def start_run(
        self,
        client: TrackingClient,
        plan: RunPlan,
        files: dict[str, Path],
        texts: dict[str, str],
        later_tags: Future | None = None,
    ) -> Journal:
        """Spool a run for the lane to create; wait for it only on the kernel's first run there.

        ``later_tags``, when given, is a future of more tags (the git state) that the lane
        adds to the run before creating it. On a first run, raises the error (and spools
        nothing) when MLflow rejects the run itself.
        """
        try:
            journal = Journal.create(self.directory, client.uri, plan, files, texts)
        except OSError as exc:
            raise TrackingError(
                f"Cannot write the metrics spool in {self.directory} ({exc.strerror or exc}): "
                "set SHIPYARD_SPOOL_DIR (or c.ShipyardMagics.spool_dir) to a writable directory."
            ) from None
        journal.later_tags = later_tags
        if client.uri in self._created_on:
            # The lane's requests hold the GIL in turns with the cell: let the cell's own
            # first moments run alone (a short cell ends first, and its end wakes the lane).
            journal.quiet_until = journal.retry_at = time.monotonic() + QUIET_START
            self._add(journal, client)
            return journal
        try:
            client.check()
        except ServerUnavailable as exc:  # nothing listens: do not even wait for the lane
            self.health.failed(client.uri, exc)
            self._add(journal, client)
            return journal
        journal.starting = True
        self._add(journal, client)
        interrupted = True
        try:
            self._wait(journal, lambda: journal.run_id is not None or journal.refusal is not None)
            interrupted = False
        finally:
            with journal.progress:  # from here on, the lane rejects a refused run itself
                journal.starting = False
            if journal.refusal is not None:  # the lane let it go: the cell's error
                journal.close()
            elif interrupted:  # the cell never ran: its run ends KILLED
                journal.end("KILLED", {})
                journal.wake()
        if journal.refusal is not None:
            raise journal.refusal
        return journal

    def end_run(
        self, journal: Journal, status: str, tags: dict[str, str], wait: bool = False
    ) -> None:
        """Record how the cell ended; the lane sends what is left and ends the run.

        With ``wait``, wait while the server answers for the run to be complete.
        """
        journal.end(status, tags)
        if journal.wake:
            journal.wake()
        if wait:
            self._wait(journal, lambda: journal.closed)

    def run_id_of(self, journal: Journal) -> str | None:
        """The run's id on the server: wait while the server answers for the run to exist."""
        if journal.run_id is None and not journal.closed and journal.uri in self._lanes:
            self._wait(journal, lambda: journal.run_id is not None or journal.closed)
        return journal.run_id

    def settle(self) -> bool:
        """Wait while the servers answer for this kernel's ended runs to be complete.

        For what reads runs back (``%runs``, ``%compare``): a run whose cell has ended is
        shown as it ended, not half sent. Returns whether every ended run is complete.
        """
        with self._lock:
            ended = [j for lane in self._lanes.values() for j in lane.journals if j.ended]
        for journal in ended:
            self._wait(journal, lambda journal=journal: journal.closed)
        return all(journal.closed for journal in ended)

    def check_stalls(self) -> None:
        """Mark the servers whose step in flight went unanswered for ``answer_timeout``.

        A cell no longer waits for its run's end, so a server that stops answering after
        the cell started is found here, when the next cell asks what to tell the user.
        """
        with self._lock:
            lanes = list(self._lanes.values())
        for lane in lanes:
            if lane.stalled(self.answer_timeout):
                said = f"no answer in {self.answer_timeout:g} s"
                self.health.failed(lane.uri, Unreachable(lane.uri, said))

    def recover(self) -> list[Journal]:
        """Adopt the journals of kernels that died; their lanes send what they left."""
        adopted = [j for h in sorted(self.directory.glob("*.json")) if (j := Journal.adopt(h))]
        for journal in adopted:
            self._add(journal)
        return adopted

    def flush(self, timeout: float) -> bool:
        """Try once more to send everything, for up to ``timeout`` seconds (at exit)."""
        with self._lock:
            lanes = list(self._lanes.values())
            journals = [journal for lane in lanes for journal in lane.journals]
        for journal in journals:
            if not journal.ended:
                journal.end("KILLED", {})
            journal.retry_at = 0.0
        for lane in lanes:
            lane.wake.set()
        deadline = time.monotonic() + timeout
        while any(lane.journals for lane in lanes) and time.monotonic() < deadline:
            time.sleep(0.05)
        return not any(lane.journals for lane in lanes)

    def _wait(self, journal: Journal, done) -> None:
        """Wait until ``done()`` while the server answers; hand over to the lane otherwise.

        Stops at once when this run's last attempt failed (it is in backoff), when the lane's
        step in flight has waited ``answer_timeout`` (the user is warned, as for an outage),
        or after ``finish_timeout``.
        """
        lane = self._lanes[journal.uri]
        deadline = time.monotonic() + self.finish_timeout
        with journal.progress:
            while not done():
                if journal.backoff or time.monotonic() >= deadline:
                    return
                if lane.stalled(self.answer_timeout):
                    said = f"no answer in {self.answer_timeout:g} s"
                    self.health.failed(journal.uri, Unreachable(journal.uri, said))
                    return
                journal.progress.wait(0.05)

    def _add(self, journal: Journal, client: TrackingClient | None = None) -> None:
        with self._lock:
            lane = self._lanes.get(journal.uri)
            if lane is None:
                lane = self._lanes[journal.uri] = _Lane(journal.uri, client)
                name = f"shipyard-metrics-{len(self._lanes)}"
                # daemon: never keeps a kernel alive; flush() runs at exit
                threading.Thread(target=self._loop, args=(lane,), name=name, daemon=True).start()
                if not self._at_exit:
                    atexit.register(self.flush, 3.0)
                    self._at_exit = True
            journal.wake = lane.wake.set
            lane.journals.append(journal)
        lane.wake.set()

    def _forget(self, lane: _Lane, journal: Journal, keep_as: str | None = None) -> None:
        with self._lock:
            if journal in lane.journals:
                lane.journals.remove(journal)
        journal.close(keep_as)

    def _loop(self, lane: _Lane) -> None:
        """Send when woken (a batch is full, a cell ended) or every ``poll`` seconds.

        A run whose server failed waits for its backoff, whatever wakes the thread.
        """
        while True:
            with self._lock:
                now = time.monotonic()
                waits = [j.retry_at - now for j in lane.journals]
            timeout = max(min([*waits, self.poll]), 0.01) if waits else None
            woken = lane.wake.wait(timeout)
            lane.wake.clear()
            with self._lock:
                journals = list(lane.journals)
            now = time.monotonic()
            for journal in journals:
                if journal.retry_at <= now or (woken and not journal.backoff and journal.due(now)):
                    self._advance(lane, journal)

    def _advance(self, lane: _Lane, journal: Journal) -> None:
        """Create the run if needed, send what is pending, and end it once its cell ended."""
        ended = journal.ended  # read first: every value of an ended run is pending by now
        if journal.run_id and not journal.pending and not ended:
            journal.retry_at = time.monotonic() + self.poll
            return
        creating = journal.run_id is None
        try:
            if lane.client is None:
                lane.client = TrackingClient(lane.uri)
            client = lane.client
            if creating and journal.later_tags is not None:
                journal.add_tags(_tags_of(journal.later_tags))
                journal.later_tags = None
            with lane.asking():
                client.check()
                if creating:
                    # after an attempt that may have reached the server, look for its run
                    find, journal.tried = journal.tried, True
                    created = client.create_run(journal.plan, find_existing=find)
                    journal.set_run_id(created.run_id, created.experiment_id, created.name)
                    self._created_on.add(lane.uri)
            creating = False
            journal.notify()
            while batch := journal.take(METRICS_PER_BATCH):
                try:
                    with lane.asking():
                        client.log_metrics(journal.run_id, batch)
                except BaseException:
                    journal.giveback(batch)
                    raise
                journal.acked(len(batch))
            if ended:
                journal.stage_texts()
                with lane.asking():
                    client.finish(journal.run_id, journal.files, journal.state["end"])
        except ServerUnavailable as exc:
            self.health.failed(lane.uri, exc)
            journal.backoff = min(max(2 * journal.backoff, self.min_backoff), self.max_backoff)
            journal.retry_at = time.monotonic() + journal.backoff
            journal.notify()
            return
        except Exception as exc:  # refused data, or a bug: keep it, never retry forever
            if not (creating and self._refuse_start(lane, journal, exc)):
                self._reject(lane, journal, exc)
            return
        self._answered(lane)
        journal.backoff, journal.retry_at = 0.0, time.monotonic() + self.poll
        if ended:
            self._forget(lane, journal)

    def _answered(self, lane: _Lane) -> None:
        """The server took a request: its other runs are retried now, not after their backoff."""
        if self.health.problem(lane.uri):
            with self._lock:
                for journal in lane.journals:
                    journal.backoff = journal.retry_at = 0.0
        self.health.ok(lane.uri)

    def _refuse_start(self, lane: _Lane, journal: Journal, exc: Exception) -> bool:
        """Give a run refused while its cell waits back to the cell, which raises; else False."""
        with journal.progress:
            if not journal.starting:
                return False
            journal.refusal = exc
            with self._lock:
                lane.journals.remove(journal)
            journal.progress.notify_all()
        return True

    def _reject(self, lane: _Lane, journal: Journal, exc: Exception) -> None:
        self.health.note(
            f"The tracking server {display_url(journal.uri)} did not take run "
            f"{journal.run_id or journal.plan.spool_id}: {exc} Its data is kept in "
            f"{journal.header}.rejected and the files beside it; fix the cause and log it again."
        )
        self._forget(lane, journal, keep_as=".rejected")
