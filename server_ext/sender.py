"""The background sender: spooled runs reach the tracking server, late if need be, never twice.

:class:`MetricSender` creates and ends the runs of ``%%track`` cells and sends what
:mod:`server_ext.spool` holds from one daemon thread, with ``MlflowClient.log_batch`` through
:class:`~server_ext.client.TrackingClient`, at most :data:`~server_ext.client.METRICS_PER_BATCH`
metrics per call. It is apart from the spool because it is the part that waits: on the
server, on backoff, on a cell's end; the spool is the part that must never wait.

* A server that fails is retried with exponential backoff (``min_backoff`` doubling up to
  ``max_backoff``) while cells keep running; :class:`Health` tells the user once per outage.
* :meth:`MetricSender.recover`, run when the extension loads, adopts the journals that
  killed kernels left and finishes them. Runs carry the tag ``shipyard.spool_id``, so a replay
  never creates one twice, and MLflow's SQL stores ignore a metric sent twice with the same
  key, value, timestamp and step, so resending the batch that was in flight when a kernel died
  is harmless.
* Data the server refuses is never retried forever: the journal is kept as
  ``<id>.json.rejected`` and the user is told where.
* The thread never keeps a kernel alive; :meth:`MetricSender.flush` tries once more at exit.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from .client import (
    METRICS_PER_BATCH,
    RunPlan,
    ServerUnavailable,
    TrackingClient,
    TrackingError,
    display_url,
)
from .spool import Journal


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


class MetricSender:
    """Starts and ends spooled runs, and sends their metrics from one background thread.

    Parameters
    ----------
    directory : Path
        The spool directory.
    finish_timeout : float
        How long the end of a tracked cell waits for its metrics to be sent.
    max_backoff : float
        The longest wait between two attempts to reach a failing server.
    poll : float
        How often values that do not fill a batch are sent.
    """

    def __init__(
        self, directory: Path, finish_timeout=60.0, max_backoff=30.0, poll=1.0, min_backoff=0.5
    ):
        self.directory = directory
        self.finish_timeout = finish_timeout
        self.max_backoff = max_backoff
        self.min_backoff = min_backoff
        self.poll = poll
        self.health = Health(directory)
        self._journals: list[Journal] = []
        self._clients: dict[str, TrackingClient] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start_run(
        self, client: TrackingClient, plan: RunPlan, files: dict[str, Path], texts: dict[str, str]
    ) -> Journal:
        """Spool a run and create it now if the server answers, else later in the background.

        Raises :class:`Refused` (and spools nothing) when MLflow rejects the run itself.
        """
        try:
            journal = Journal.create(self.directory, client.uri, plan, files, texts)
        except OSError as exc:
            raise TrackingError(
                f"Cannot write the metrics spool in {self.directory} ({exc.strerror or exc}): "
                "set SHIPYARD_SPOOL_DIR (or c.ShipyardMagics.spool_dir) to a writable directory."
            ) from None
        try:
            client.check()
            journal.set_run_id(client.create_run(plan))
            self._recovered(client.uri)
        except ServerUnavailable as exc:
            self.health.failed(client.uri, exc)
        except BaseException:
            journal.close()
            raise
        self._add(journal)
        return journal

    def end_run(self, journal: Journal, status: str, tags: dict[str, str]) -> None:
        """Record how the cell ended; wait for its metrics, then end the run on the server.

        Waits only while the server takes requests; otherwise the thread ends the run later.
        """
        journal.end(status, tags)
        self._wake.set()
        deadline = time.monotonic() + self.finish_timeout
        try:
            with journal.progress:
                while not journal.drained() and time.monotonic() < deadline:
                    if self.health.problem(journal.uri) or journal.backoff:
                        break
                    journal.progress.wait(0.1)
            if journal.drained() and not self.health.problem(journal.uri):
                with journal.io:
                    if self._finish(journal):
                        return
        finally:  # also when the wait is interrupted: the thread takes over
            journal.handoff = True
            self._wake.set()

    def recover(self) -> list[Journal]:
        """Adopt the journals of kernels that died; the thread sends what they left."""
        adopted = [j for h in sorted(self.directory.glob("*.json")) if (j := Journal.adopt(h))]
        for journal in adopted:
            self._add(journal)
        return adopted

    def flush(self, timeout: float) -> bool:
        """Try once more to send everything, for up to ``timeout`` seconds (at exit)."""
        with self._lock:
            journals = list(self._journals)
        for journal in journals:
            if not journal.ended:
                journal.end("KILLED", {})
            journal.handoff, journal.retry_at = True, 0.0
        self._wake.set()
        deadline = time.monotonic() + timeout
        while self._journals and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self._journals

    def _client(self, uri: str) -> TrackingClient:
        if uri not in self._clients:
            self._clients[uri] = TrackingClient(uri)
        return self._clients[uri]

    def _recovered(self, uri: str) -> None:
        """A request to ``uri`` worked: retry its runs now instead of after their backoff."""
        self.health.ok(uri)
        with self._lock:
            for journal in self._journals:
                if journal.uri == uri:
                    journal.backoff = journal.retry_at = 0.0
        self._wake.set()

    def _add(self, journal: Journal) -> None:
        journal.wake = self._wake.set
        with self._lock:
            self._journals.append(journal)
            if self._thread is None:
                import atexit

                self._thread = threading.Thread(target=self._loop, name="shipyard-metrics")
                self._thread.daemon = True  # never keeps a kernel alive; flush() runs at exit
                self._thread.start()
                atexit.register(self.flush, 3.0)
        self._wake.set()

    def _forget(self, journal: Journal, keep_as: str | None = None) -> None:
        with self._lock:
            if journal in self._journals:
                self._journals.remove(journal)
        journal.close(keep_as)

    def _loop(self) -> None:
        """Send when woken (a batch is full, a cell ended) or every ``poll`` seconds.

        A run whose server failed waits for its backoff, whatever wakes the thread.
        """
        while True:
            with self._lock:
                now = time.monotonic()
                waits = [j.retry_at - now for j in self._journals]
            timeout = max(min([*waits, self.poll]), 0.01) if waits else None
            woken = self._wake.wait(timeout)
            self._wake.clear()
            with self._lock:
                journals = list(self._journals)
            now = time.monotonic()
            for journal in journals:
                if journal.retry_at <= now or (woken and not journal.backoff):
                    self._advance(journal)

    def _advance(self, journal: Journal) -> None:
        """Create the run if needed, send what is pending, and end it once handed off."""
        if journal.run_id and not journal.pending and not (journal.handoff and journal.ended):
            journal.retry_at = time.monotonic() + self.poll
            return
        with journal.io:
            if journal not in self._journals:
                return  # end_run finished it meanwhile
            try:
                client = self._client(journal.uri)
                client.check()
                if journal.run_id is None:
                    journal.set_run_id(client.create_run(journal.plan, find_existing=True))
                while batch := journal.take(METRICS_PER_BATCH):
                    try:
                        client.log_metrics(journal.run_id, batch)
                    except BaseException:
                        journal.giveback(batch)
                        raise
                    journal.acked(len(batch))
            except ServerUnavailable as exc:
                self.health.failed(journal.uri, exc)
                journal.backoff = min(max(2 * journal.backoff, self.min_backoff), self.max_backoff)
                journal.retry_at = time.monotonic() + journal.backoff
                journal.notify()
                return
            except Exception as exc:  # refused data, or a bug: keep it, never retry forever
                self._reject(journal, exc)
                return
            self.health.ok(journal.uri)
            journal.backoff, journal.retry_at = 0.0, time.monotonic() + self.poll
            if journal.handoff and journal.ended:
                self._finish(journal)

    def _finish(self, journal: Journal) -> bool:
        """End the run on the server and delete its journal; False if the server is down."""
        try:
            self._client(journal.uri).finish(journal.run_id, journal.files, journal.state["end"])
        except ServerUnavailable as exc:
            self.health.failed(journal.uri, exc)
            return False
        except Exception as exc:
            self._reject(journal, exc)
            return True
        self._forget(journal)
        return True

    def _reject(self, journal: Journal, exc: Exception) -> None:
        self.health.note(
            f"The tracking server {display_url(journal.uri)} did not take run "
            f"{journal.run_id or journal.plan.spool_id}: {exc} Its data is kept in "
            f"{journal.header}.rejected and the files beside it; fix the cause and log it again."
        )
        self._forget(journal, keep_as=".rejected")
