"""Experiment tracking from a kernel: a small typed MLflow client, and a spool that loses nothing.

The magics in :mod:`server_ext.magics` parse arguments and delegate here (STYLE rule 22).
Every MLflow call lives in :class:`TrackingClient`, so MLflow's errors are translated in one
place (:func:`_translated`) into :class:`TrackingError` subclasses whose message says what to do.

``log()`` never talks to the server. :meth:`Journal.log` appends one line per value to an
on-disk spool with a single ``write(2)`` (about a microsecond, so 10,000 values cost
milliseconds) and :class:`MetricSender`'s background thread sends them with
``MlflowClient.log_batch``, at most 1000 metrics per call. Rejected alternatives:

* ``mlflow.log_metric`` per value: one HTTP request per value; 10,000 values take minutes.
* MLflow's async logging (``synchronous=False``): an in-memory queue, lost when a kernel is
  killed, and it needs a fluent active run.
* buffering the spool and flushing it per batch: a kernel killed mid-loop loses up to a batch.
  A write per value puts every value in the OS before ``log()`` returns; there is no fsync
  (that guards against power loss, not a killed kernel, and costs milliseconds per call).

Each run is a *journal* in the spool directory (``$SHIPYARD_SPOOL_DIR`` or
``~/.shipyard/spool``): ``<id>.json`` says what the run is and how far sending got,
``<id>.metrics`` holds ``key<TAB>value<TAB>timestamp<TAB>step`` lines and ``<id>.files/``
the artifacts copied when the cell started. The process that owns a journal holds an
``flock`` on its metrics file; a journal that nobody holds belongs to a kernel that died, and
:meth:`MetricSender.recover` (run when the extension loads) finishes it. Runs carry the tag
``shipyard.spool_id``, so a replay never creates one twice, and MLflow's SQL stores ignore a
metric sent twice with the same key, value, timestamp and step, so resending the batch that
was in flight when a kernel died is harmless.

MLflow retries a refused connection 7 times with exponential backoff (about four minutes), so
every operation first opens a TCP connection to the server with a short timeout
(:meth:`TrackingClient.check`): a server that is down is reported in seconds, not minutes.
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
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

#: ``MlflowClient.log_batch`` takes at most 1000 metrics and 100 params or tags per call.
METRICS_PER_BATCH = 1000
PARAMS_PER_BATCH = 100
#: MLflow's limits on a param value and on a metric, param or tag name.
MAX_PARAM_VALUE = 6000
MAX_KEY = 250
PROBE_TIMEOUT = 3.0
SPOOL_TAG = "shipyard.spool_id"

# MLflow's own rule for metric names (mlflow.utils.validation), minus ":" which Windows lacks.
# Tabs and newlines are excluded, which keeps the spool's line format unambiguous.
_METRIC_KEY = re.compile(rf"[\w./ -]{{1,{MAX_KEY}}}")


def default_spool_dir() -> Path:
    """``$SHIPYARD_SPOOL_DIR``, or ``~/.shipyard/spool``."""
    return Path(os.environ.get("SHIPYARD_SPOOL_DIR") or Path.home() / ".shipyard" / "spool")


def display_url(uri: str) -> str:
    """``uri`` without a ``user:password@`` part and trailing slash, fit for messages and links."""
    parts = urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri.rstrip("/")
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc)).rstrip("/")


class TrackingError(Exception):
    """An error the user can act on: ``str()`` says what happened and what to do.

    ``code`` is MLflow's error code name (``RESOURCE_DOES_NOT_EXIST`` ...) when there is one.
    """

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code


class ServerUnavailable(TrackingError):
    """The server takes no requests now; sending later may work, so spooled data is kept."""


class Unreachable(ServerUnavailable):
    """Nothing answers at the server's address, or it answers 5xx (a gateway with no backend)."""

    def __init__(self, uri: str, detail: str):
        super().__init__(
            f"Cannot reach the tracking server {display_url(uri)} ({detail}). Check "
            "MLFLOW_TRACKING_URI, and ask your admin whether the tracking service is running."
        )


class TokenRefused(ServerUnavailable):
    """401 or 403. Retried all the same: a new token in the environment is used at once."""

    def __init__(self, uri: str, status: int, detail: str | None = None):
        said = f": {detail[:200]}" if detail else ""
        super().__init__(
            f"The tracking server {display_url(uri)} refused the token (HTTP {status}{said}). "
            "MLFLOW_TRACKING_TOKEN is missing, expired or lacks access: restart your server "
            "from the hub to get a fresh token, or ask the experiment's owner to share it."
        )


class NotFound(TrackingError):
    """No such run or experiment."""


class Refused(TrackingError):
    """The server rejected a value (a name, a parameter); retrying the same data cannot help."""


class MetricError(TrackingError, ValueError):
    """``log()`` got a name or value MLflow cannot store."""


class TrackingWarning(UserWarning):
    """Shown once per outage, and when the server rejected a run's data."""


def _classify(exc: Exception, uri: str, refused: str) -> TrackingError:
    """The :class:`TrackingError` for an exception of MLflow, ``requests`` or the filesystem."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        body = getattr(exc, "json", None)  # RestException: a proxy's JSON error keeps its status
        statuses = {exc.get_http_status_code(), body.get("status") if isinstance(body, dict) else 0}
        cause = exc.__context__  # MLflow re-raises transport errors without "from"
        message = exc.message
        if message.startswith(f"{exc.error_code}: "):
            message = message[len(exc.error_code) + 2 :]
    else:
        response = getattr(exc, "response", None)
        statuses = {getattr(response, "status_code", 0)}
        cause, message = exc, str(exc)
    for status in (401, 403):
        if status in statuses:  # the gateway's or MLflow's own words, when it sent JSON
            detail = message if isinstance(getattr(exc, "json", None), dict) else None
            return TokenRefused(uri, status, detail)
    if isinstance(cause, requests.RequestException) and not (
        isinstance(cause, requests.HTTPError) and statuses & {400, 404, 409, 413, 422}
    ):
        return Unreachable(uri, type(cause).__name__)
    if "not in a valid JSON format" in message:  # e.g. a proxy's login page after a redirect
        return Unreachable(
            uri, "it answered with a web page, not MLflow's API; is the token valid?"
        )
    code = getattr(exc, "error_code", None)
    if code == "RESOURCE_DOES_NOT_EXIST":
        return NotFound(message, code)
    return Refused(refused.format(reason=message.rstrip(".")), code)


@contextlib.contextmanager
def _translated(uri: str, refused: str = "{reason}") -> Iterator[None]:
    """Turn MLflow's, ``requests``' and artifact stores' exceptions into TrackingErrors.

    ``refused`` formats the message of a :class:`Refused` (``{reason}`` is MLflow's).
    """
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, OSError) as exc:  # requests' exceptions are OSErrors
        raise _classify(exc, uri, refused) from exc


@dataclass(frozen=True)
class ExperimentRef:
    """An experiment, its MLflow UI page, and whether this call created it."""

    id: str
    name: str
    url: str | None
    created: bool = False


@dataclass(frozen=True)
class RunSummary:
    """What ``%runs`` shows of a run (times in epoch milliseconds, metrics' latest values)."""

    run_id: str
    name: str
    status: str
    start_time: int | None
    end_time: int | None
    metrics: dict[str, float]
    url: str | None


@dataclass(frozen=True)
class RunDetail(RunSummary):
    """A run with its parameters, for ``%compare``."""

    experiment_id: str = ""
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunPlan:
    """What a run is, in a form that can be written to the spool and created much later."""

    experiment: str
    run_name: str | None
    params: dict[str, str]
    tags: dict[str, str]
    start_time: int
    spool_id: str = field(default_factory=lambda: uuid.uuid4().hex)


class TrackingClient:
    """The MLflow calls the magics and the sender make, against one tracking server.

    Parameters
    ----------
    uri : str
        The tracking URI, usually ``mlflow.get_tracking_uri()`` (from ``MLFLOW_TRACKING_URI``).
        MLflow sends ``MLFLOW_TRACKING_TOKEN`` as a bearer token itself.
    """

    def __init__(self, uri: str):
        _require_mlflow()
        from mlflow import MlflowClient

        self.uri = uri
        self._mlflow = MlflowClient(tracking_uri=uri)

    @classmethod
    def from_environment(cls) -> TrackingClient:
        """The server of ``MLFLOW_TRACKING_URI`` (or of ``mlflow.set_tracking_uri``)."""
        _require_mlflow()
        import mlflow

        return cls(mlflow.get_tracking_uri())

    def check(self) -> None:
        """Raise :class:`Unreachable` within seconds if nothing answers at the server's address."""
        parts = urlsplit(self.uri)
        if parts.scheme not in ("http", "https"):
            return  # a local store (sqlite, files) is always there
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            with socket.create_connection((parts.hostname, port), timeout=PROBE_TIMEOUT):
                pass
        except (OSError, ValueError) as exc:
            raise Unreachable(self.uri, getattr(exc, "strerror", None) or str(exc)) from None

    def ui_url(self, experiment_id: str, run_id: str | None = None) -> str | None:
        """The MLflow UI page of an experiment or run; None for a local store.

        ``$SHIPYARD_TRACKING_UI_URL`` overrides the base where the browser reaches the UI
        at another address than the kernel reaches the server.
        """
        base = os.environ.get("SHIPYARD_TRACKING_UI_URL") or self.uri
        if not base.startswith(("http://", "https://", "/")):
            return None
        url = f"{display_url(base)}/#/experiments/{experiment_id}"
        return f"{url}/runs/{run_id}" if run_id else url

    def use_experiment(self, name: str) -> ExperimentRef:
        """Find or create the experiment ``name`` and make it mlflow's active one too."""
        import mlflow

        self.check()
        experiment_id, created = self._experiment_id(name, create=True)
        with _translated(self.uri):
            mlflow.set_experiment(experiment_id=experiment_id)
        return ExperimentRef(experiment_id, name, self.ui_url(experiment_id), created)

    def experiment(self, name: str) -> ExperimentRef:
        """The existing experiment ``name``."""
        self.check()
        experiment_id, _ = self._experiment_id(name, create=False)
        return ExperimentRef(experiment_id, name, self.ui_url(experiment_id))

    def _experiment_id(self, name: str, create: bool) -> tuple[str, bool]:
        refused = (
            f"MLflow refused the experiment name {name!r}: {{reason}}. "
            "Choose a non-empty name of at most 500 characters."
        )
        with _translated(self.uri, refused):
            found = self._mlflow.get_experiment_by_name(name)
            if found is None and create:
                try:
                    return self._mlflow.create_experiment(name), True
                except Exception as exc:  # another kernel created it first: use theirs
                    if getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
                        raise
                    found = self._mlflow.get_experiment_by_name(name)
        if found is None:
            raise NotFound(
                f"No experiment named {name!r} on {display_url(self.uri)}: check the name, "
                f"or create it with %experiment {name}."
            )
        if found.lifecycle_stage == "deleted":
            raise Refused(
                f"The experiment {name!r} was deleted. Restore it in the MLflow UI (or with "
                f"MlflowClient().restore_experiment({found.experiment_id!r})), or choose "
                "another name."
            )
        return found.experiment_id, False

    def recent_runs(self, experiment_id: str, max_results: int) -> list[RunSummary]:
        """The experiment's runs, newest first."""
        self.check()
        with _translated(self.uri):
            runs = self._mlflow.search_runs(
                [experiment_id], max_results=max_results, order_by=["attributes.start_time DESC"]
            )
        return [self._detail(run) for run in runs]

    def run(self, run_id: str) -> RunDetail:
        """One run; :class:`NotFound` with advice when there is no such run."""
        self.check()
        try:
            with _translated(self.uri):
                return self._detail(self._mlflow.get_run(run_id))
        except (NotFound, Refused):  # a malformed id is refused rather than not found
            raise NotFound(
                f"No run {run_id!r} on {display_url(self.uri)}: check the id with %runs."
            ) from None

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """``(step, value)`` of every value of one metric, in step order."""
        with _translated(self.uri):
            history = self._mlflow.get_metric_history(run_id, key)
        return [(m.step, m.value) for m in sorted(history, key=lambda m: (m.step, m.timestamp))]

    def _detail(self, run) -> RunDetail:
        info = run.info
        return RunDetail(
            run_id=info.run_id,
            name=info.run_name or info.run_id,
            status=info.status,
            start_time=info.start_time,
            end_time=info.end_time,
            metrics=dict(run.data.metrics),
            url=self.ui_url(info.experiment_id, info.run_id),
            experiment_id=info.experiment_id,
            params=dict(run.data.params),
        )

    def create_run(self, plan: RunPlan, find_existing: bool = False) -> str:
        """Create the planned run with its tags and params; return its id.

        With ``find_existing``, first look for a run already made from this plan (by its
        ``shipyard.spool_id`` tag): a kernel may have died after creating it.
        """
        from mlflow.entities import Param

        experiment_id, _ = self._experiment_id(plan.experiment, create=True)
        with _translated(self.uri, "MLflow refused the run: {reason}."):
            found = []
            if find_existing:
                found = self._mlflow.search_runs(
                    [experiment_id], filter_string=f"tags.`{SPOOL_TAG}` = '{plan.spool_id}'"
                )
            if found:
                run_id = found[0].info.run_id
            else:
                run = self._mlflow.create_run(
                    experiment_id,
                    start_time=plan.start_time,
                    tags={**plan.tags, SPOOL_TAG: plan.spool_id},
                    run_name=plan.run_name,
                )
                run_id = run.info.run_id
            params = [Param(k, v) for k, v in plan.params.items()]
            for i in range(0, len(params), PARAMS_PER_BATCH):
                self._mlflow.log_batch(run_id, params=params[i : i + PARAMS_PER_BATCH])
        return run_id

    def log_metrics(self, run_id: str, batch: list[tuple[str, float, int, int]]) -> None:
        """Send up to :data:`METRICS_PER_BATCH` ``(key, value, timestamp, step)`` in one call."""
        from mlflow.entities import Metric

        with _translated(self.uri, "MLflow refused the run's metrics: {reason}."):
            self._mlflow.log_batch(run_id, metrics=[Metric(*row) for row in batch])

    def finish(self, run_id: str, files: Path, end: dict) -> None:
        """Upload the spooled artifacts, set the end tags, and end the run with its status."""
        from mlflow.entities import RunTag

        with _translated(self.uri, "MLflow refused to end the run: {reason}."):
            if files.is_dir() and any(files.iterdir()):
                self._mlflow.log_artifacts(run_id, str(files))
            tags = [RunTag(k, v) for k, v in end["tags"].items()]
            if tags:
                self._mlflow.log_batch(run_id, tags=tags)
            self._mlflow.set_terminated(run_id, end["status"], end["time"])


def _require_mlflow() -> None:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise TrackingError(
            "MLflow is not installed in this environment: use a Shipyard environment "
            "(they include mlflow-skinny), or run %pip install mlflow-skinny."
        ) from None


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
    :meth:`close`.
    """

    def __init__(self, header: Path, state: dict, fd: int, records=()):
        self.header = header
        self.state = state
        self._fd = fd
        self.pending: deque[tuple[str, float, int, int]] = deque(records)
        self.total = state["sent"] + len(self.pending)
        self.handoff = False  # the sender may end the run: its cell is over, or its kernel died
        self.backoff = 0.0  # seconds; 0 while the server takes our requests
        self.retry_at = 0.0  # time.monotonic() of the next attempt
        self.wake = None  # set by the sender: called when a batch is ready
        self.io = threading.Lock()  # one thread talks to the server about this run at a time
        self.progress = threading.Condition()
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
        for name, text in texts.items():
            (staged / name).parent.mkdir(parents=True, exist_ok=True)
            (staged / name).write_text(text, encoding="utf-8")
        state = {"uri": uri, "plan": asdict(plan), "run_id": None, "sent": 0, "end": None}
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
        journal.handoff = True
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

    def set_run_id(self, run_id: str) -> None:
        with self._lock:
            self.state["run_id"] = run_id
            self._save()

    def end(self, status: str, tags: dict[str, str], when: int | None = None) -> None:
        with self._lock:
            self.state["end"] = {"status": status, "time": when or _now_ms(), "tags": tags}
            self._save()

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
        self.notify()


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
