"""Experiment tracking from a kernel: the typed MLflow client that the magics and the sender call.

The magics in :mod:`server_ext.magics` parse arguments and delegate here (STYLE rule 22).
Every MLflow call lives in :class:`TrackingClient`, so MLflow's errors are translated in one
place (:func:`_translated`) into :class:`TrackingError` subclasses whose message says what to
do, and the magics turn those into a ``UsageError`` without knowing MLflow. This is the only
module that imports ``mlflow`` (lazily: ``%load_ext`` must work, and say what to install, in an
environment without it). It is kept apart from the parts that call it:

* :mod:`~server_ext.clients.tracking.spool`: where ``log()`` puts values until the server
  has them;
* :mod:`~server_ext.clients.tracking.sender`: the background threads that send them with
  :class:`TrackingClient`;
* :mod:`~server_ext.clients.tracking.lineage`: what a ``%%track`` run records about where
  its cell ran.

The dataclasses here (:class:`RunPlan`, :class:`RunSummary` ...) are what passes between those
modules and the widgets, so none of them handles MLflow's entities.

MLflow retries a refused connection, a timeout and a 429 or 5xx answer 7 times with exponential
backoff, each attempt waiting up to 120 s (``MLFLOW_HTTP_REQUEST_*``): minutes before a call
fails, while a cell waits. Shipyard's own calls fail in seconds instead:

* every operation first opens a TCP connection to the server with a short timeout
  (:meth:`TrackingClient.check`), so a closed port is reported at once;
* its requests (and only its requests) get :data:`REQUEST_RETRIES` immediate retry (none
  for creating a run, which must not happen twice) and :data:`REQUEST_TIMEOUT` seconds per
  attempt (:func:`_bounded`). That covers what the probe cannot see: a proxy that takes the
  connection and answers 502/503/504 because the tracking service behind it is down, or a
  server that never answers. The sender (:mod:`~server_ext.clients.tracking.sender`) retries
  with its own backoff, in the background; a cell waits for a server only while it answers.

How the bound is applied, and what was rejected: MLflow reads these settings from the
environment on every request, and takes no per-client or per-call setting for them
(``MlflowClient`` and ``RestStore`` call ``http_request`` without ``max_retries`` or
``timeout``, and so do the artifact repositories). Setting the environment variables would
change the user's own ``mlflow`` calls in the same kernel, whose patient retries suit rate
limits; re-implementing MLflow's REST store and artifact uploads to pass the arguments would
copy private code that changes between releases. So the three settings read Shipyard's values
only while a :class:`TrackingClient` call runs on the current thread (a
:class:`~contextvars.ContextVar`), and the environment otherwise, exactly as before.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit, urlunsplit

#: ``MlflowClient.log_batch`` takes at most 1000 metrics and 100 params or tags per call.
METRICS_PER_BATCH = 1000
PARAMS_PER_BATCH = 100
#: MLflow's limits on a param value and on a metric, param or tag name.
MAX_PARAM_VALUE = 6000
MAX_KEY = 250
PROBE_TIMEOUT = 3.0
#: Shipyard's requests: immediate retries of a failed attempt (a dropped keep-alive
#: connection, a 503 of a restarting service), and seconds each attempt may take.
REQUEST_RETRIES = 1
REQUEST_TIMEOUT = 15
SPOOL_TAG = "shipyard.spool_id"
#: An MLflow run id: 32 lowercase hex digits.
RUN_ID = re.compile(r"[0-9a-f]{32}")
#: How many runs of one name :meth:`TrackingClient.find_run` looks at (it takes the newest).
MAX_SAME_NAME = 100


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


#: Answers of a proxy whose backend is down or slow: the server is unavailable, the data fine.
_GATEWAY_DOWN = frozenset({502, 503, 504})


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
        # retries used up on a 429 or 5xx answer: say which (urllib3 names it in the error)
        answered = re.search(r"too many (\d{3}) error responses", str(cause))
        return Unreachable(uri, f"HTTP {answered[1]}" if answered else type(cause).__name__)
    if down := statuses & _GATEWAY_DOWN:  # a gateway with nothing (answering) behind it
        return Unreachable(uri, f"HTTP {min(down)}")
    if "not in a valid JSON format" in message:  # e.g. a proxy's login page after a redirect
        return Unreachable(
            uri, "it answered with a web page, not MLflow's API; is the token valid?"
        )
    code = getattr(exc, "error_code", None)
    if code == "RESOURCE_DOES_NOT_EXIST":
        return NotFound(message, code)
    return Refused(refused.format(reason=message.rstrip(".")), code)


@contextlib.contextmanager
def _translated(uri: str, refused: str = "{reason}", bounded: bool = False) -> Iterator[None]:
    """Turn MLflow's, ``requests``' and artifact stores' exceptions into TrackingErrors.

    ``refused`` formats the message of a :class:`Refused` (``{reason}`` is MLflow's). With
    ``bounded``, MLflow's requests in the block follow Shipyard's retries and timeout
    (:func:`_bounded`).
    """
    from mlflow.exceptions import MlflowException

    try:
        with _bounded() if bounded else contextlib.nullcontext():
            yield
    except (MlflowException, OSError) as exc:  # requests' exceptions are OSErrors
        raise _classify(exc, uri, refused) from exc


#: The request settings of the Shipyard call running on this thread; None outside one.
_SHIPYARD_REQUEST: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "shipyard_request", default=None
)
_SCOPED_SETTINGS = (
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
)
_scoping = threading.Lock()
_scoped = False


@contextlib.contextmanager
def _bounded(retries: int = REQUEST_RETRIES) -> Iterator[None]:
    """MLflow's requests made in the block by this thread follow Shipyard's bounds.

    ``retries`` immediate retries, :data:`REQUEST_TIMEOUT` seconds per attempt. The first use
    makes MLflow's three request settings scoped: each reads Shipyard's value while
    :data:`_SHIPYARD_REQUEST` is set, and the environment (as MLflow always does) otherwise.
    Other threads, and this one outside the block, are unaffected. An MLflow without these
    settings keeps its own retries: slower, still correct.
    """
    global _scoped
    with _scoping:
        if not _scoped:
            from mlflow import environment_variables as settings

            for name in _SCOPED_SETTINGS:
                setting = getattr(settings, name, None)
                if setting is None or not callable(getattr(setting, "get_raw", None)):
                    continue

                def get_raw(environ=setting.get_raw, name=name):
                    ours = _SHIPYARD_REQUEST.get()
                    return ours[name] if ours else environ()

                setting.get_raw = get_raw
            _scoped = True
    token = _SHIPYARD_REQUEST.set(
        {
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries),
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT),
        }
    )
    try:
        yield
    finally:
        _SHIPYARD_REQUEST.reset(token)


class CreatedRun(NamedTuple):
    """A run the sender created: its id, its experiment's id and its name in MLflow."""

    run_id: str
    experiment_id: str
    name: str


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


def tracking_uri() -> str:
    """The tracking server in use: ``MLFLOW_TRACKING_URI`` or ``mlflow.set_tracking_uri``'s."""
    _require_mlflow()
    import mlflow

    return mlflow.get_tracking_uri()


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
        return cls(tracking_uri())

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
        with _translated(self.uri, bounded=True):
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
        with _translated(self.uri, refused, bounded=True):
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
        with _translated(self.uri, bounded=True):
            runs = self._mlflow.search_runs(
                [experiment_id], max_results=max_results, order_by=["attributes.start_time DESC"]
            )
        return [self._detail(run) for run in runs]

    def find_run(self, ref: str, experiment: str) -> tuple[RunDetail, int]:
        """The run ``ref`` names, as ``%runs`` shows it: a run id, or a run's name.

        An id is looked up anywhere; a name in the experiment named ``experiment``, where
        the newest run of that name wins (MLflow allows several). Returns the run and how
        many runs have the name.

        The hub's tracking gateway answers a run id it cannot find *or* that is another
        user's with 403, which reads like a refused token. Such a 403 is taken for "no run
        of yours" (SECURITY rule 3): the same token reads the experiment next, so a token
        that is really refused still fails, there, with that message.

        Raises
        ------
        NotFound
            no run has that id (readable by this token) or that name in ``experiment``.
        """
        self.check()
        looks_like_id = RUN_ID.fullmatch(ref) is not None
        if looks_like_id:
            try:
                with _translated(self.uri, bounded=True):
                    return self._detail(self._mlflow.get_run(ref)), 1
            except (NotFound, Refused, TokenRefused):
                pass  # perhaps a run named like an id; else "no run" below
        try:
            experiment_id, _ = self._experiment_id(experiment, create=False)
        except NotFound:
            if not looks_like_id:
                raise
            named = []
        else:
            named = self._runs_named(experiment_id, ref)
        if named:
            return self._detail(named[0]), len(named)
        if looks_like_id:
            raise NotFound(
                f"No run {ref!r}: no run you can read has that id, and no run in experiment "
                f"{experiment!r} has that name. %runs shows runs' names and ids."
            )
        raise NotFound(
            f"No run named {ref!r} in experiment {experiment!r}: %runs shows its runs' "
            "names and ids (a run id finds a run of any experiment)."
        )

    def _runs_named(self, experiment_id: str, name: str) -> list:
        """The runs called ``name`` in the experiment, newest first.

        MLflow's filter strings have no escape for a quote: quote with the kind ``name``
        lacks, and for a name with both, match ``LIKE`` with ``_`` for every quote (and
        backslash) and keep the exact matches.
        """
        if "'" not in name:
            where = f"attributes.run_name = '{name}'"
        elif '"' not in name:
            where = f'attributes.run_name = "{name}"'
        else:
            where = "attributes.run_name LIKE '{}'".format(re.sub(r"['\"\\]", "_", name))
        with _translated(self.uri, bounded=True):
            runs = self._mlflow.search_runs(
                [experiment_id],
                filter_string=where,
                max_results=MAX_SAME_NAME,
                order_by=["attributes.start_time DESC"],
            )
        return [run for run in runs if run.info.run_name == name]

    def run_metrics(self, run_id: str) -> dict[str, float]:
        """The latest value of each metric of the run."""
        with _translated(self.uri, bounded=True):
            return dict(self._mlflow.get_run(run_id).data.metrics)

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """``(step, value)`` of every value of one metric, in step order."""
        with _translated(self.uri, bounded=True):
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

    def create_run(self, plan: RunPlan, find_existing: bool = False) -> CreatedRun:
        """Create the planned run with its tags and params; return its id, experiment, name.

        With ``find_existing``, first look for a run already made from this plan (by its
        ``shipyard.spool_id`` tag): a kernel may have died after creating it.
        """
        from mlflow.entities import Param

        experiment_id, _ = self._experiment_id(plan.experiment, create=True)
        with _translated(self.uri, "MLflow refused the run: {reason}.", bounded=True):
            found = []
            if find_existing:
                found = self._mlflow.search_runs(
                    [experiment_id], filter_string=f"tags.`{SPOOL_TAG}` = '{plan.spool_id}'"
                )
            if found:
                info = found[0].info
            else:
                # never retried here: a retry after a lost answer would make a second run;
                # the sender's next attempt looks for this one by its spool id first
                with _bounded(retries=0):
                    run = self._mlflow.create_run(
                        experiment_id,
                        start_time=plan.start_time,
                        tags={**plan.tags, SPOOL_TAG: plan.spool_id},
                        run_name=plan.run_name,
                    )
                info = run.info
            params = [Param(k, v) for k, v in plan.params.items()]
            for i in range(0, len(params), PARAMS_PER_BATCH):
                self._mlflow.log_batch(info.run_id, params=params[i : i + PARAMS_PER_BATCH])
        return CreatedRun(info.run_id, experiment_id, info.run_name or info.run_id)

    def log_metrics(self, run_id: str, batch: list[tuple[str, float, int, int]]) -> None:
        """Send up to :data:`METRICS_PER_BATCH` ``(key, value, timestamp, step)`` in one call."""
        from mlflow.entities import Metric

        with _translated(self.uri, "MLflow refused the run's metrics: {reason}.", bounded=True):
            self._mlflow.log_batch(run_id, metrics=[Metric(*row) for row in batch])

    def finish(self, run_id: str, files: Path, end: dict) -> None:
        """Upload the spooled artifacts, set the end tags, and end the run with its status."""
        from mlflow.entities import RunStatus, RunTag

        with _translated(self.uri, "MLflow refused to end the run: {reason}.", bounded=True):
            if files.is_dir() and any(files.iterdir()):
                self._mlflow.log_artifacts(run_id, str(files))
            tags = [RunTag(k, v) for k, v in end["tags"].items()]
            if tags:
                self._mlflow.log_batch(run_id, tags=tags)
            # What MlflowClient.set_terminated does, without its two side effects: it prints
            # a link to the run (from the sender's thread that would land in whatever cell
            # runs then; the cell prints its own) after one more request to read the run,
            # and it shuts down async logging on the store, which the user's own mlflow
            # calls to this server share.
            self._mlflow._tracking_client.store.update_run_info(
                run_id,
                run_status=RunStatus.from_string(end["status"]),
                end_time=end["time"],
                run_name=None,
            )


def _require_mlflow() -> None:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise TrackingError(
            "MLflow is not installed in this environment: use a Shipyard environment "
            "(they include mlflow-skinny), or run %pip install mlflow-skinny."
        ) from None
