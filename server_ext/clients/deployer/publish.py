"""Publishing models: a model of the kernel, a run's model or a registered version, put into
MLflow's registry as ``<user>-<name>`` with its lineage, ready for the deployer.

:class:`ModelPublisher` logs a model object of the kernel first (scikit-learn estimators
and ``mlflow.pyfunc.PythonModel`` instances); a run id or a ``models:/NAME/VERSION`` is
registered as it is. Every model version is tagged with its lineage (source run, notebook,
git commit, environment digest), read the way ``%%track`` reads them
(:mod:`server_ext.clients.tracking.lineage`) or, for a run, from the run's own tags. MLflow's
errors become :class:`~server_ext.clients.tracking.client.TrackingError` through the
tracking client's translator. The checks of what ``%deploy`` is given (:func:`describe_source`,
:func:`model_flavor`, :func:`check_example`) raise :class:`DeployerError` before anything
is logged.

The registry name carries the hub user because MLflow's registry has one namespace for the
whole hub: ``alice-churn`` and ``bob-churn`` never collide, and the tracking service gives
the creator of a registered model MANAGE on it. Rejected alternative: registering under the
deployment's name alone, where the first user to pick ``churn`` would own it for everyone.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..tracking.client import TrackingClient, TrackingError, _translated
from ..tracking.lineage import git_tags, installed_packages, lineage_tags, notebook_path
from .client import REGISTRY_URI, RUN_ID, DeployerError

#: The artifact name of models ``%deploy`` logs.
MODEL_ARTIFACT = "model"
#: Rows of the input example kept with a logged model (the whole frame feeds the drift summary).
EXAMPLE_ROWS = 5


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


def is_frame(value: Any) -> bool:
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(value, pandas.DataFrame)


def check_example(value: Any, ref: str) -> Any:
    """``value`` if it can be an input example: a DataFrame or an array of rows."""
    if is_frame(value) or (hasattr(value, "shape") and hasattr(value, "tolist")):
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
    if is_frame(example):
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

    Uses ``hub_ext.runtime.drift.summarize``, the same code the model server compares
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
        lineage.update(scheduled_lineage())
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


#: The scheduler's variables of a run (executors) and a pipeline step (its worker), and the
#: lineage keys they become: where a model deployed from a scheduled notebook came from.
SCHEDULED_VARIABLES = (
    ("SHIPYARD_PIPELINE_RUN_ID", "pipeline_run_id"),
    ("SHIPYARD_PIPELINE_STEP", "pipeline_step"),
    ("SHIPYARD_RUN_ID", "scheduler_run_id"),
    ("SHIPYARD_JOB_ID", "job_id"),
)


def scheduled_lineage(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The scheduler run (and pipeline run and step) this kernel runs in, when it is one."""
    env = os.environ if environ is None else environ
    return {key: env[variable] for variable, key in SCHEDULED_VARIABLES if env.get(variable)}


def signature_json(signature: Any) -> dict | None:
    """A ``ModelSignature`` as the JSON the deployer keeps (``{"inputs": "[...]", ...}``)."""
    return signature.to_dict() if signature is not None else None
