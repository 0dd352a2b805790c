"""Model deployment from a kernel or the server: the deployer's client, and publishing models.

Two halves, both used by ``%deploy`` and ``%deployments`` in :mod:`server_ext.magics` (which
only parse arguments and show progress, STYLE rule 22):

* :class:`DeployerClient`, the one client of the deployer service (hub service ``deployer`` at
  ``<hub>/services/deployer/``, contract section 2, :mod:`hub_ext.services.deployer`). It is
  the scheduler's client in shape (:mod:`server_ext.scheduler_client`; both extend
  :class:`~server_ext.service_client.ServiceClient`, which holds what they share): the same
  order for the URL (``$SHIPYARD_DEPLOYER_URL``, else ``$JUPYTERHUB_PUBLIC_HUB_URL`` with
  ``/services/deployer``), the same token (``$JUPYTERHUB_API_TOKEN``, the server's own, which
  the hub scopes to ``access:services!service=deployer`` and ``custom:models:invoke``), only
  ever in the ``Authorization`` header, and one translator (:meth:`DeployerClient._refusal`)
  that turns every answer that is not a success into a :class:`DeployerError` whose ``str()``
  is the service's own ``message``. :meth:`DeployerClient.forward` serves the server
  extension's handlers (:mod:`server_ext.deploy_handlers`).
* :class:`ModelPublisher`, which puts a model into MLflow's registry as
  ``<user>-<name>``: a model object of the kernel is logged first (scikit-learn estimators
  and ``mlflow.pyfunc.PythonModel`` instances), a run id or a ``models:/NAME/VERSION`` is
  registered as it is. Every model version is tagged with its lineage (source run,
  notebook, git commit, environment digest), read the way ``%%track`` reads them
  (:mod:`server_ext.lineage`) or, for a run, from the run's own tags. MLflow's errors become
  :class:`~server_ext.client.TrackingError` through the tracking client's translator.

The registry name carries the hub user because MLflow's registry has one namespace for the
whole hub: ``alice-churn`` and ``bob-churn`` never collide, and the tracking service gives
the creator of a registered model MANAGE on it. Rejected alternative: registering under the
deployment's name alone, where the first user to pick ``churn`` would own it for everyone.

Code examples printed for a deployed model never contain a token (SECURITY rule 8): they
read ``$JUPYTERHUB_API_TOKEN`` from the environment, which every Shipyard server and kernel
has and whose scopes include ``custom:models:invoke``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .client import TrackingClient, TrackingError, _translated
from .lineage import git_tags, installed_packages, lineage_tags, notebook_path
from .service_client import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from .service_client import FORWARDED_HEADERS as FORWARDED_HEADERS
from .service_client import Forwarded as Forwarded
from .service_client import ServiceClient, ServiceError

#: The prefix the deployer serves under, behind the hub's proxy and on its own port alike.
SERVICE_PATH = "/services/deployer"
#: A deployment's name (the service's ``DeploymentName``): a slug without ``--`` or a final ``-``.
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
#: An MLflow run id.
RUN_ID = re.compile(r"^[0-9a-f]{32}$")
#: ``models:/NAME/VERSION`` in MLflow's registry.
REGISTRY_URI = re.compile(r"^models:/([^/\s]+)/([1-9][0-9]*)$")
#: The artifact name of models ``%deploy`` logs.
MODEL_ARTIFACT = "model"
#: Rows of the input example kept with a logged model (the whole frame feeds the drift summary).
EXAMPLE_ROWS = 5
#: A version in one of these states has stopped changing.
SETTLED = ("ready", "failed", "stopped")


class DeployerError(ServiceError):
    """A refusal or failure of the deployer the user can act on; ``str()`` is the message.

    As :class:`~server_ext.service_client.ServiceError`: ``message``, the HTTP ``status``
    (None when the deployer was not reached) and the service's per-field ``errors``.
    """


# ------------------------------------------------------------------- names and URLs


def check_name(name: str) -> str:
    """``name`` if it is a deployment name (the service's rule, checked before any work)."""
    if not NAME.fullmatch(name) or "--" in name or name.endswith("-"):
        raise DeployerError(
            f"{name!r} is not a deployment name: use 1 to 40 lowercase letters, digits and "
            "single dashes, starting with a letter or digit and not ending with a dash, e.g. "
            "--name churn-model."
        )
    return name


def registered_name(user: str, name: str) -> str:
    """The registry name of ``user``'s deployment ``name``: ``<user>-<name>``."""
    return f"{user}-{name}"


def hub_user(environ: dict[str, str] | None = None) -> str:
    """The hub user this kernel belongs to (``$JUPYTERHUB_USER``)."""
    user = (os.environ if environ is None else environ).get("JUPYTERHUB_USER")
    if not user:
        raise DeployerError(
            "Cannot tell which hub user you are: JUPYTERHUB_USER is not set. %deploy works in "
            "a server started from the hub."
        )
    return user


def normalise_url(url: str) -> str:
    """``url`` without a trailing slash, with the service prefix when it has no path.

    Raises
    ------
    DeployerError
        For a URL that is not http(s), or that carries a credential: tokens go in a header.
    """
    return DeployerClient.normalise_url(url)


def deployer_url(environ: dict[str, str] | None = None) -> str:
    """Where this server reaches the deployer: ``$SHIPYARD_DEPLOYER_URL``, else the hub's."""
    return DeployerClient.service_url(environ)


def path_segment(value: str) -> str:
    """A name as one quoted path segment: never a way into another route."""
    return DeployerClient.path_segment(value)


def _owner(owner: str | None) -> dict[str, str] | None:
    """``?owner=``: whose deployment an admin means (the caller's own without it)."""
    return {"owner": owner} if owner else None


# ---------------------------------------------------------------- the REST client


class DeployerClient(ServiceClient):
    """The deployer's REST API, one method per call, each returning the service's JSON.

    Parameters as :class:`~server_ext.service_client.ServiceClient`'s, ``url`` being e.g.
    ``https://hub.example.org/services/deployer``.

    Examples
    --------
    >>> client = DeployerClient.from_environment()  # doctest: +SKIP
    >>> [d["name"] for d in client.list_deployments()]  # doctest: +SKIP
    ['churn']
    """

    service = "deployer"
    service_path = SERVICE_PATH
    url_variable = "SHIPYARD_DEPLOYER_URL"
    error = DeployerError
    token_advice = "in JUPYTERHUB_API_TOKEN"
    refused_token_advice = "Restart your server from the hub to get a fresh one."
    segment_noun = "a deployment name"

    def public_url(self, path: str) -> str:
        """A path the service answers with (``Deployment.url``) as a full URL on its origin."""
        parts = urlsplit(self.url)
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))

    # ---------------------------------------------------------- deployments

    def list_deployments(self, owner: str | None = None) -> list[dict]:
        """``GET api/deployments``: the user's deployments (an admin's ``owner``'s)."""
        return self._call("GET", "api/deployments", params=_owner(owner))["deployments"]

    def get_deployment(self, name: str, owner: str | None = None) -> dict:
        """``GET api/deployments/{name}`` (an admin's ``owner``'s)."""
        return self._call("GET", f"api/deployments/{path_segment(name)}", params=_owner(owner))

    def find_deployment(self, name: str) -> dict | None:
        """The deployment ``name`` of the user, or None when there is none."""
        try:
            return self.get_deployment(name)
        except DeployerError as exc:
            if exc.status == 404 and not exc.message.startswith("Nothing answers at"):
                return None
            raise

    def create_deployment(self, body: dict) -> dict:
        """``POST api/deployments``: a new deployment, its version 1 ``starting``."""
        return self._call("POST", "api/deployments", json=body)

    def create_version(self, name: str, body: dict) -> dict:
        """``POST api/deployments/{name}/versions``: a new version, ``starting``."""
        return self._call("POST", f"api/deployments/{path_segment(name)}/versions", json=body)

    def get_version(self, name: str, version: int, owner: str | None = None) -> dict:
        """``GET api/deployments/{name}/versions/{v}`` (an admin's ``owner``'s)."""
        return self._call(
            "GET",
            f"api/deployments/{path_segment(name)}/versions/{int(version)}",
            params=_owner(owner),
        )

    def scale(self, name: str, replicas: int) -> dict:
        """``PATCH api/deployments/{name}``: every running version gets ``replicas``."""
        return self._call(
            "PATCH", f"api/deployments/{path_segment(name)}", json={"replicas": replicas}
        )

    def delete(self, name: str) -> None:
        """``DELETE api/deployments/{name}``: every version stopped, the name free again."""
        self._call("DELETE", f"api/deployments/{path_segment(name)}")

    def set_traffic(self, name: str, split: dict[int, int]) -> dict:
        """``PUT api/deployments/{name}/traffic``: the whole split, summing to 100."""
        body = {"split": {str(v): p for v, p in split.items()}}
        return self._call("PUT", f"api/deployments/{path_segment(name)}/traffic", json=body)

    def promote(self, name: str, version: int) -> dict:
        """``POST api/deployments/{name}/promote``: all traffic to ``version``."""
        return self._call(
            "POST", f"api/deployments/{path_segment(name)}/promote", json={"version": version}
        )

    def rollback(self, name: str, version: int | None = None, owner: str | None = None) -> dict:
        """``POST api/deployments/{name}/rollback``: all traffic back (default: the previous)."""
        body = {"version": version} if version is not None else {}
        return self._call(
            "POST",
            f"api/deployments/{path_segment(name)}/rollback",
            json=body,
            params=_owner(owner),
        )

    def metrics(self, name: str, owner: str | None = None) -> dict:
        """``GET api/deployments/{name}/metrics``: ``{"versions": {"1": VersionMetrics}}``."""
        return self._call(
            "GET", f"api/deployments/{path_segment(name)}/metrics", params=_owner(owner)
        )

    def follow_version(
        self,
        name: str,
        version: int,
        interval: float = 1.0,
        timeout: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Iterator[dict]:
        """The version each time its state changes, until it is ready, failed or stopped.

        Raises
        ------
        DeployerError
            When ``timeout`` seconds pass first; the version goes on starting.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        while True:
            current = self.get_version(name, version)
            if current["state"] != last:
                last = current["state"]
                yield current
            if current["state"] in SETTLED:
                return
            if deadline is not None and time.monotonic() > deadline:
                raise DeployerError(
                    f"Version {version} of {name!r} is still {current['state']} after "
                    f"{timeout:.0f} s; it goes on starting: %deployments shows how it ends."
                )
            sleep(interval)


# ----------------------------------------------------------------- what users see


def endpoint_url(client: DeployerClient, deployment: dict) -> str:
    """The deployment's invocation URL (routed by its traffic split)."""
    return client.public_url(deployment["url"])


def example_payload(example: Any = None, signature: dict | None = None) -> dict:
    """A request body for the model: the first row of the input example when there is one.

    A DataFrame row is sent as ``dataframe_split`` (columns named, as MLflow's scoring
    protocol reads it), an array row as ``inputs``. Without an example, a row of zeros in the
    signature's columns; without a signature, a one-value row ``[[0.0]]``.
    """
    with contextlib.suppress(Exception):
        if _is_frame(example):
            row = example.head(1).to_json(orient="split", index=False)
            return {"dataframe_split": json.loads(row)}
        if hasattr(example, "tolist"):
            rows = example[:1].tolist()
            return {"inputs": json.loads(json.dumps(rows, default=str).replace("NaN", "null"))}
    columns = [c.get("name") for c in _signature_columns(signature)]
    if columns and all(columns):
        data = [[0 for _ in columns]]
        return {"dataframe_split": {"columns": columns, "data": data}}
    return {"inputs": [[0.0]]}


def _signature_columns(signature: dict | None) -> list[dict]:
    inputs = (signature or {}).get("inputs")
    if isinstance(inputs, str):
        with contextlib.suppress(ValueError):
            inputs = json.loads(inputs)
    return [c for c in inputs or [] if isinstance(c, dict)]


def curl_example(url: str, payload: dict) -> str:
    """A ``curl`` command that calls the model with the token from the environment."""
    body = shlex.quote(json.dumps(payload, separators=(",", ":")))
    return (
        f'curl -X POST -H "Authorization: token $JUPYTERHUB_API_TOKEN" '
        f'-H "Content-Type: application/json" -d {body} {shlex.quote(url)}'
    )


def python_example(url: str, payload: dict) -> str:
    """Python that calls the model with the token from the environment."""
    return (
        "import os, requests\n"
        f"response = requests.post(\n"
        f"    {url!r},\n"
        '    headers={"Authorization": f"token {os.environ[\'JUPYTERHUB_API_TOKEN\']}"},\n'
        f"    json={json.dumps(payload)},\n"
        "    timeout=30,\n"
        ")\n"
        'print(response.json()["predictions"])'
    )


@dataclass(frozen=True)
class VersionRow:
    """One version of a deployment as ``%deployments`` shows it."""

    deployment: dict
    version: dict
    stats: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.deployment["name"]

    @property
    def traffic(self) -> int:
        return int(self.deployment.get("traffic", {}).get(str(self.version["version"]), 0))

    @property
    def state(self) -> str:
        return self.version["state"]

    @property
    def health(self) -> str:
        """``2/2 ready`` replicas of a running version; empty for others."""
        if self.state not in ("ready", "starting"):
            return ""
        ready = self.stats.get("replicas_ready")
        if ready is None:
            return ""
        return f"{ready}/{self.deployment.get('replicas', 1)} ready"

    @property
    def rate(self) -> float | None:
        return self.stats.get("rate")

    @property
    def error_rate(self) -> float | None:
        return self.stats.get("error_rate")

    def latency(self, which: str) -> float | None:
        return (self.stats.get("latency_ms") or {}).get(which)

    @property
    def drift(self) -> tuple[str, float] | None:
        """The feature with the largest population stability index, and the index."""
        scores = {k: v for k, v in (self.stats.get("drift") or {}).items() if v is not None}
        if not scores:
            return None
        feature = max(scores, key=lambda k: scores[k])
        return feature, float(scores[feature])

    @property
    def breaker(self) -> dict:
        return self.stats.get("breaker") or self.version.get("breaker") or {}


def version_rows(client: DeployerClient, deployments: list[dict] | None = None) -> list[VersionRow]:
    """Every version of the user's deployments, newest first per deployment, with its metrics."""
    rows = []
    for deployment in client.list_deployments() if deployments is None else deployments:
        try:
            stats = client.metrics(deployment["name"], deployment.get("owner")).get("versions", {})
        except DeployerError:  # deleted meanwhile, or metrics unavailable: show the rest
            stats = {}
        for version in sorted(deployment["versions"], key=lambda v: -v["version"]):
            rows.append(VersionRow(deployment, version, stats.get(str(version["version"]), {})))
    return rows


def rollback_target(deployment: dict) -> int:
    """The version a rollback sends the traffic to: the one taking (or about to take) it all."""
    for version in deployment["versions"]:
        if version.get("pending_percent") == 100:
            return version["version"]
    return int(max(deployment["traffic"].items(), key=lambda item: item[1])[0])


def number(value: float | None, digits: int = 3) -> str:
    """``value`` shortly, or empty."""
    return "" if value is None else f"{value:.{digits}g}"


def percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def breaker_text(breaker: dict) -> str:
    if not breaker.get("open"):
        return "closed"
    reason = f": {breaker['reason']}" if breaker.get("reason") else ""
    return f"open{' (still serving)' if breaker.get('serving') else ''}{reason}"


def drift_text(row: VersionRow) -> str:
    drift = row.drift
    return f"{drift[1]:.2f} ({drift[0]})" if drift else ""


def deployments_text(rows: list[VersionRow]) -> str:
    """A plain-text table of the versions: the ``%deployments`` fallback without ipywidgets."""
    if not rows:
        return "No deployments yet: deploy a model with %deploy MODEL --name NAME."
    table = [
        ("NAME", "V", "TRAFFIC", "STATE", "HEALTH", "REQ/S", "P50 MS", "P99 MS", "ERRORS",
         "DRIFT", "BREAKER"),
    ]  # fmt: skip
    for row in rows:
        state = row.state
        if row.version.get("reason") and state in ("failed", "stopped"):
            state += f": {row.version['reason']}"
        table.append(
            (
                row.name,
                str(row.version["version"]),
                f"{row.traffic}%",
                state[:60],
                row.health,
                number(row.rate),
                number(row.latency("p50")),
                number(row.latency("p99")),
                percent(row.error_rate),
                drift_text(row),
                breaker_text(row.breaker)[:60],
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in table
    )


# ------------------------------------------------------------- publishing models


@dataclass(frozen=True)
class Published:
    """A model version in the registry, ready for the deployer."""

    model_uri: str  # models:/<user>-<name>/<version>
    registered_name: str
    version: str
    lineage: dict[str, str]
    signature: dict | None = None
    logged_run_id: str | None = None  # the run %deploy logged the model in, if it did


def is_variable(ref: str) -> bool:
    return ref.isidentifier()


def describe_source(ref: str, namespace: dict) -> str:
    """``variable``, ``run`` or ``registry``: what kind of MODEL ``ref`` is.

    Raises
    ------
    DeployerError
        When it is none of them, saying which forms there are.
    """
    if is_variable(ref) and ref in namespace:
        return "variable"
    if RUN_ID.fullmatch(ref):
        return "run"
    if ref.startswith("models:/"):
        if not REGISTRY_URI.fullmatch(ref):
            raise DeployerError(
                f"{ref!r} is not a registered model version: write models:/NAME/VERSION, e.g. "
                "models:/alice-churn/3."
            )
        return "registry"
    if is_variable(ref):
        raise DeployerError(
            f"No variable named {ref!r} in this notebook: run the cell that trains the model "
            "first (or check the name), or give an MLflow run id (32 hex digits) or "
            "models:/NAME/VERSION."
        )
    raise DeployerError(
        f"{ref!r} is not a model: give a variable holding a model, an MLflow run id "
        "(32 hex digits, see %runs) or models:/NAME/VERSION."
    )


def model_flavor(obj: Any, ref: str) -> str:
    """The MLflow flavor ``%deploy`` logs ``obj`` with: ``sklearn`` or ``pyfunc``.

    scikit-learn estimators and pipelines must be fitted; any ``mlflow.pyfunc.PythonModel``
    is logged as a pyfunc. Other objects are refused with what to do instead.
    """
    sk_base = sys.modules.get("sklearn.base")
    if sk_base is not None and isinstance(obj, sk_base.BaseEstimator):
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        try:
            check_is_fitted(obj)
        except NotFittedError:
            raise DeployerError(
                f"{ref} is a {type(obj).__name__} that is not fitted yet: call {ref}.fit(X, y) "
                "first, then deploy it."
            ) from None
        return "sklearn"
    pyfunc = sys.modules.get("mlflow.pyfunc")
    if pyfunc is None and "mlflow" in sys.modules:
        import mlflow.pyfunc as pyfunc
    if pyfunc is not None and isinstance(obj, pyfunc.PythonModel):
        return "pyfunc"
    kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
    raise DeployerError(
        f"{ref} is a {kind}, which %deploy cannot log: it logs fitted scikit-learn estimators "
        "and pipelines, and mlflow.pyfunc.PythonModel instances. Wrap this model in a "
        "PythonModel (its predict(context, model_input) calls yours), or log it with its "
        "MLflow flavor (mlflow.<flavor>.log_model(...)) and deploy the run id."
    )


def _is_frame(value: Any) -> bool:
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(value, pandas.DataFrame)


def check_example(value: Any, ref: str) -> Any:
    """``value`` if it can be an input example: a DataFrame or an array of rows."""
    if _is_frame(value) or (hasattr(value, "shape") and hasattr(value, "tolist")):
        if len(value) == 0:
            raise DeployerError(f"--input-example {ref} has no rows: give the training data.")
        return value
    raise DeployerError(
        f"--input-example {ref} is a {type(value).__name__}: give a pandas DataFrame or a "
        "NumPy array of input rows (the training data X, or a sample of it)."
    )


def as_frame(example: Any) -> Any:
    """The example as a DataFrame (columns ``"0"``, ``"1"`` ... for an array), or None."""
    if example is None:
        return None
    if _is_frame(example):
        return example
    try:
        import pandas
    except ImportError:
        return None
    frame = pandas.DataFrame(example)
    frame.columns = [str(c) for c in frame.columns]
    return frame


def training_summary(example: Any) -> dict | None:
    """The drift module's summary of the training inputs (contract section 1), or None.

    Uses ``hub_ext.services.deployer.drift.summarize``, the same code the model server compares
    its inputs with. Without an example (or without pandas) there is no summary, and the
    deployment shows no drift.
    """
    frame = as_frame(example)
    if frame is None:
        return None
    try:
        from hub_ext.runtime.drift import summarize
    except ImportError:  # a Shipyard older than the drift module: deploy without drift
        return None
    return json.loads(json.dumps(summarize(frame), default=float))


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """MLflow's chatter kept out of the cell's output, which shows the stages instead.

    MLflow logs INFO lines (view run at ...), prints to stderr (registered model ...) and
    warns, on every sklearn model, that cloudpickle is unsafe to load from strangers: here
    the model is the user's and is loaded only as the user (SECURITY rule 5).
    """
    levels = {}
    for name, level in (("mlflow", logging.WARNING), ("mlflow.sklearn", logging.ERROR)):
        logger = logging.getLogger(name)
        levels[logger] = logger.level
        logger.setLevel(level)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for logger, level in levels.items():
            logger.setLevel(level)


class ModelPublisher:
    """Log and register models in MLflow as the user, with their lineage.

    Parameters
    ----------
    tracking : TrackingClient
        The tracking server of this kernel (``TrackingClient.from_environment()``).
    user : str
        The hub user; models are registered as ``<user>-<name>``.
    """

    def __init__(self, tracking: TrackingClient, user: str):
        self.tracking = tracking
        self.user = user
        self._mlflow = tracking._mlflow

    # -------------------------------------------------------------- lineage

    def kernel_lineage(self, source_run: str | None) -> dict[str, str]:
        """What this kernel knows: its notebook, the git commit there, its environment."""
        notebook = notebook_path()
        lineage: dict[str, str] = {}
        if source_run:
            lineage["run_id"] = source_run
        if notebook:
            lineage["notebook"] = str(notebook)
        git = git_tags(notebook.parent if notebook else Path.cwd())
        if git:
            lineage["git_commit"] = git["mlflow.source.git.commit"]
            lineage["git_dirty"] = git["shipyard.git.dirty"]
        for variable, key in (("SHIPYARD_ENV_DIGEST", "env_digest"), ("SHIPYARD_ENV", "env")):
            if os.environ.get(variable):
                lineage[key] = os.environ[variable]
        return lineage

    def run_lineage(self, run_id: str) -> dict[str, str]:
        """What the run recorded (``%%track`` tags), else what this kernel knows."""
        with _translated(self.tracking.uri):
            tags = self._mlflow.get_run(run_id).data.tags
        lineage = self.kernel_lineage(run_id)
        if tags.get("mlflow.source.name", "").endswith(".ipynb"):  # else a script's name
            lineage["notebook"] = tags["mlflow.source.name"]
        for tag, key in (
            ("mlflow.source.git.commit", "git_commit"),
            ("shipyard.git.dirty", "git_dirty"),
            ("shipyard.env_digest", "env_digest"),
            ("shipyard.env", "env"),
        ):
            if tags.get(tag):
                lineage[key] = tags[tag]
        return lineage

    @staticmethod
    def lineage_tags(lineage: dict[str, str]) -> dict[str, str]:
        """The model version's tags: ``shipyard.source_run_id``, ``shipyard.notebook`` ..."""
        names = {"run_id": "shipyard.source_run_id"}
        return {names.get(k, f"shipyard.{k}"): str(v) for k, v in lineage.items()}

    # -------------------------------------------------------------- signature

    def run_signature(self, run_id: str) -> Any:
        """A signature from the training dataset the run recorded (``mlflow.log_input``)."""
        from mlflow.models import ModelSignature
        from mlflow.types import Schema

        try:
            with _translated(self.tracking.uri):
                inputs = self._mlflow.get_run(run_id).inputs
        except TrackingError:
            return None
        found = list(getattr(inputs, "dataset_inputs", None) or [])

        def training_first(item) -> int:
            context = {t.key: t.value for t in item.tags}.get("mlflow.data.context")
            return 0 if context == "training" else 1

        for item in sorted(found, key=training_first):
            with contextlib.suppress(Exception):
                schema = json.loads(item.dataset.schema)
                colspec = schema.get("mlflow_colspec", schema)
                return ModelSignature(inputs=Schema.from_json(json.dumps(colspec)))
        return None

    @staticmethod
    def example_signature(model: Any, flavor: str, example: Any) -> Any:
        """The signature of ``model`` on ``example``: its inputs, and outputs when it predicts."""
        from mlflow.models import infer_signature

        output = None
        if flavor == "sklearn":
            with contextlib.suppress(Exception):
                output = model.predict(example[:EXAMPLE_ROWS])
        return infer_signature(example, output)

    # ------------------------------------------------------------ publishing

    def log(
        self,
        model: Any,
        flavor: str,
        experiment: str,
        run_name: str,
        source_run: str | None,
        signature: Any = None,
        example: Any = None,
    ) -> tuple[str, str]:
        """Log ``model`` as ``model`` of a run; return the run's id and the model's URI.

        The run is the one active in the kernel (``mlflow.start_run()`` left open), or a new
        run ``run_name`` in ``experiment``, tagged like a ``%%track`` run and with the source
        run it came from.
        """
        import mlflow

        self.tracking.check()
        active = mlflow.active_run()
        refused = "MLflow refused the model: {reason}."
        with _translated(self.tracking.uri, refused), _quiet_mlflow():
            if active is not None:
                run_context = contextlib.nullcontext(active)
            else:
                experiment_id, _ = self.tracking._experiment_id(experiment, create=True)
                tags = lineage_tags(notebook_path(), installed_packages())
                if source_run:
                    tags["shipyard.source_run_id"] = source_run
                run_context = mlflow.start_run(
                    experiment_id=experiment_id, run_name=run_name, tags=tags
                )
            kept = example[:EXAMPLE_ROWS] if example is not None else None
            with run_context as run:
                if flavor == "sklearn":
                    import mlflow.sklearn

                    info = mlflow.sklearn.log_model(
                        model,
                        name=MODEL_ARTIFACT,
                        signature=signature,
                        input_example=kept,
                        # cloudpickle, not MLflow 3's skops default: model servers run the
                        # profile's environment, which need not have skops
                        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
                        # the flavor's own pins (scikit-learn, cloudpickle as installed here):
                        # left out, MLflow infers them by loading the model in a fresh
                        # Python process, which costs ~4 s of every %deploy
                        pip_requirements=mlflow.sklearn.get_default_pip_requirements(
                            include_cloudpickle=True
                        ),
                    )
                else:
                    import mlflow.pyfunc

                    info = mlflow.pyfunc.log_model(
                        name=MODEL_ARTIFACT,
                        python_model=model,
                        signature=signature,
                        input_example=kept,
                    )
        return run.info.run_id, info.model_uri

    def run_model_uri(self, run_id: str) -> str:
        """The model a run logged: its logged model (``models:/m-...``) or ``runs:/<id>/model``."""
        try:
            with _translated(self.tracking.uri):
                run = self._mlflow.get_run(run_id)
        except TrackingError:
            raise DeployerError(
                f"No run {run_id!r} on {self.tracking.uri}: check the id with %runs."
            ) from None
        with _translated(self.tracking.uri):
            models = list(
                self._mlflow.search_logged_models(
                    experiment_ids=[run.info.experiment_id],
                    filter_string=f"source_run_id = '{run_id}'",
                )
            )
            if models:
                models.sort(key=lambda m: (m.name != MODEL_ARTIFACT, -(m.creation_timestamp or 0)))
                return f"models:/{models[0].model_id}"
            names = {a.path for a in self._mlflow.list_artifacts(run_id, MODEL_ARTIFACT)}
        if f"{MODEL_ARTIFACT}/MLmodel" in names:
            return f"runs:/{run_id}/{MODEL_ARTIFACT}"
        raise DeployerError(
            f"Run {run_id} has no logged model: log one in it with "
            f"mlflow.<flavor>.log_model(model, name={MODEL_ARTIFACT!r}), or deploy the model "
            "variable itself."
        )

    def register(self, source_uri: str, name: str, lineage: dict[str, str]) -> str:
        """A new version of registered model ``name`` from ``source_uri``; its version."""
        import mlflow

        refused = f"MLflow refused to register the model as {name!r}: {{reason}}."
        with _translated(self.tracking.uri, refused), _quiet_mlflow():
            mv = mlflow.register_model(
                source_uri, name, await_registration_for=120, tags=self.lineage_tags(lineage)
            )
        return str(mv.version)

    def copy_version(self, uri: str, name: str) -> tuple[str, str | None]:
        """Register ``models:/OTHER/V`` as a version of ``name`` (itself when it is one).

        Returns the version and the source run of the copied version.
        """
        other, version = REGISTRY_URI.fullmatch(uri).groups()
        refused = f"MLflow refused {uri}: {{reason}}."
        try:
            with _translated(self.tracking.uri, refused):
                mv = self._mlflow.get_model_version(other, version)
        except TrackingError as exc:
            raise DeployerError(
                f"No model version {uri} that you can read ({exc}): check the name and version "
                "in the MLflow UI's Models page."
            ) from None
        if other == name:
            return str(mv.version), mv.run_id
        lineage = self.run_lineage(mv.run_id) if mv.run_id else self.kernel_lineage(None)
        lineage["copied_from"] = uri
        # the version's source (a logged model's models:/m-... URI, or an artifact location)
        # registered again: MLflow resolves it as for any other registration
        copied = self.register(mv.source, name, lineage)
        return copied, mv.run_id

    def model_signature(self, uri: str) -> dict | None:
        """The signature a registered or logged model carries, as JSON, or None."""
        with contextlib.suppress(Exception):
            from mlflow.models import get_model_info

            signature = get_model_info(uri).signature
            return signature.to_dict() if signature is not None else None
        return None


def signature_json(signature: Any) -> dict | None:
    """A ``ModelSignature`` as the JSON the deployer keeps (``{"inputs": "[...]", ...}``)."""
    return signature.to_dict() if signature is not None else None
