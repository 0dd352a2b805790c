"""A pipeline's deploy step: score, gate, publish, roll out, as the pipeline's owner.

A ``type: deploy`` step of ``pipeline.yaml`` runs as a run of a built-in notebook
(``hub_ext/runtime/deploy_step.ipynb``) like any step: papermill in the owner's
account, with the owner's run token (``JUPYTERHUB_API_TOKEN`` with deployer access,
``SHIPYARD_DEPLOYER_URL``, ``MLFLOW_TRACKING_URI``/``MLFLOW_TRACKING_TOKEN``). Its
parameters cell gets the step's settings; its one code cell calls :func:`deploy`,
which:

1. scores the candidate (``mlflow.pyfunc.load_model(model_uri)``) on the held-out CSV
   (``data_path``, the gate's ``data`` file; ``target`` is the column to predict,
   every other column is an input);
2. finds production: the version of the owner's deployment ``name`` that takes the
   largest share of the traffic, loads its model the same way and scores it on the
   same rows;
3. decides with :func:`hub_ext.runtime.gate.decide` and prints the decision with both
   figures (the run's log shows it), then records the step's outputs
   (:data:`OUTPUTS`: ``decision``, ``reason``, ``metric``, ``candidate``,
   ``production``, ``version``, ``canary_state``, ``canary_reason``);
4. when it passed: registers the model as ``<owner>-<name>`` with its lineage
   (:class:`server_ext.clients.deployer.publish.ModelPublisher`, as ``%deploy`` does,
   plus the pipeline run and step), creates the deployment or a new version (with the
   step's canary policy), waits until the version is ready and, with a canary, until
   the deployer promoted or rolled it back (at most the window plus
   :data:`CANARY_MARGIN_SECONDS`).

**A refusal is a decision, not a failure**: the step succeeds with
``decision: refused`` and the figures. A pipeline that retrains nightly refuses most
nights by design; a failed step would make every such night a failed run, skip the
steps after it (a report, a notification step) and invite a "repair" that can only
refuse again. Steps after it branch on ``steps.<id>.outputs.decision`` instead. A
**crash** (the model is another user's or one the owner cannot read
(:func:`check_model_access`), it does not load, the data is missing or lacks the target
column, the metric is unknown, the deployer refuses or the version fails to start)
raises, so the step fails with the message. A canary the deployer rolled back is a decision
of the deployer's policy: the step succeeds with ``canary_state: rolled_back`` and
its reason, production keeps serving.

Rejected alternatives: scoring inside the scheduler (a model is code: it runs only
as its owner, SECURITY rule 5), and calling ``%deploy`` from the notebook (it takes
a model variable or a run, not a logged model's URI, and has no gate).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from typing import Any

from .gate import Decision, check_metric, decide, score
from .outputs import output

#: The outputs a deploy step records, with their types (``pipeline.yaml``'s names).
#: A copy of the scheduler's ``DEPLOY_OUTPUTS`` (pipelines/spec.py); a test keeps them equal.
OUTPUTS = {
    "decision": "string",
    "reason": "string",
    "metric": "json",
    "candidate": "json",
    "production": "json",
    "version": "json",
    "canary_state": "json",
    "canary_reason": "json",
}
#: Seconds the step waits for a new version to be ready.
READY_TIMEOUT_SECONDS = 600
#: Seconds beyond the canary's window the step waits for the deployer's verdict.
CANARY_MARGIN_SECONDS = 120
#: Requests a canary must see before its limits are judged (the deployer's policy field).
CANARY_MIN_REQUESTS = 20
#: Seconds between looks at a version or its canary.
POLL_SECONDS = 1.0
#: Canary states after which nothing changes any more.
CANARY_SETTLED = ("promoted", "rolled_back", "stopped")


class DeployStepError(RuntimeError):
    """The deploy step could not do its work; ``str()`` says what to fix."""


#: ``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` or ``models:/NAME/STAGE``: a registered
#: model; ``models:/m-ID``: a logged model (what ``log_model`` answers in MLflow 3).
_REGISTERED_URI = re.compile(r"^models:/(?!m-[0-9a-f]+$)([^/@\s]+)(?:/[^/\s]+|@[^/\s]+)$")
_LOGGED_URI = re.compile(r"^models:/(m-[0-9a-f]+)$")
#: ``runs:/RUN_ID/PATH``: a model a run logged.
_RUN_URI = re.compile(r"^runs:/([0-9a-f]{32})(?:/.*)?$")


def foreign_model(model_uri: str, user: str) -> str | None:
    """Why ``model_uri`` names a registered model ``user`` does not own, or None.

    Registered models made through Shipyard are named ``<owner>-<deployment>``
    (:func:`server_ext.clients.deployer.client.registered_name`), so a deploy step of
    ``user`` may only deploy a registered model whose name starts with ``user-``. What
    else the URI names (a run, a logged model) is checked with the tracking server, as
    the owner, by :func:`check_model_access`.
    """
    match = _REGISTERED_URI.fullmatch(model_uri)
    if match is None or match.group(1).startswith(f"{user}-"):
        return None
    name = match.group(1)
    return (
        f"the model to deploy, {model_uri}, is the registered model {name!r}, which is not "
        f"yours: a deploy step deploys only models you own (yours are registered as "
        f"'{user}-<deployment>'); record the URI your training step logged (info.model_uri "
        "of mlflow.<flavor>.log_model) or a registered model of yours"
    )


def check_model_access(model_uri: str, user: str, client: Any) -> None:
    """Refuse a model the owner does not own or cannot read, before anything is loaded.

    ``client`` is an ``mlflow.MlflowClient`` speaking for the owner (the run's token):
    the tracking server answers a run, logged model or registered model that is another
    user's (and not shared with the owner) as refused or missing.

    Raises
    ------
    DeployStepError
        Saying which model, whose it is not, and what to record instead.
    """
    why = foreign_model(model_uri, user)
    if why is not None:
        raise DeployStepError(why)
    checks: list[tuple[str, Callable[[], Any]]] = []
    if match := _REGISTERED_URI.fullmatch(model_uri):
        name = match.group(1)
        checks.append((f"the registered model {name!r}", lambda: client.get_registered_model(name)))
    elif match := _LOGGED_URI.fullmatch(model_uri):
        model_id = match.group(1)
        checks.append((f"the logged model {model_id}", lambda: client.get_logged_model(model_id)))
    elif match := _RUN_URI.fullmatch(model_uri):
        run_id = match.group(1)
        checks.append((f"the MLflow run {run_id}", lambda: client.get_run(run_id)))
    for what, check in checks:
        try:
            check()
        except Exception as exc:
            raise DeployStepError(
                f"the model to deploy, {model_uri}, is {what}, which is not one you can read "
                f"as {user} ({_first_line(exc)}): a deploy step deploys only models you own; "
                "record the URI your training step logged"
            ) from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


# ------------------------------------------------------------------ pure parts


def production_version(deployment: dict | None) -> dict | None:
    """The version of ``deployment`` taking the largest traffic share, or None.

    Ties go to the newer version; a deployment whose traffic is all at 0 (or None)
    has nothing in production.
    """
    if not deployment:
        return None
    shares = {int(v): p for v, p in (deployment.get("traffic") or {}).items() if p > 0}
    if not shares:
        return None
    number = max(shares, key=lambda v: (shares[v], v))
    for version in deployment.get("versions") or []:
        if version["version"] == number:
            return version
    return None


def canary_body(canary: dict | None) -> dict | None:
    """The deployer's canary policy for a step's ``canary`` (window in seconds)."""
    if not canary:
        return None
    return {
        "percent": int(canary["percent"]),
        "window_seconds": int(canary["window"]),
        "max_error_rate": canary.get("max_error_rate"),
        "max_latency_p99_ms": canary.get("max_latency_p99_ms"),
        "max_drift_psi": canary.get("max_drift_psi"),
        "min_requests": CANARY_MIN_REQUESTS,
    }


def pipeline_lineage(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The pipeline run and step the model was deployed from, as lineage entries."""
    env = os.environ if environ is None else environ
    found = {}
    for variable, key in (
        ("SHIPYARD_PIPELINE_RUN_ID", "pipeline_run_id"),
        ("SHIPYARD_PIPELINE_STEP", "pipeline_step"),
    ):
        if env.get(variable):
            found[key] = env[variable]
    return found


def deployed_by_this_step(deployment: dict | None, environ: dict[str, str] | None = None):
    """The version this same pipeline run's step made already, or None.

    A deploy step whose run lost its scheduler (``kill -9``) runs again; by then the
    version it created may exist. Found by its lineage (the pipeline run and step), it is
    followed instead of deployed a second time.
    """
    mine = pipeline_lineage(environ)
    if deployment is None or set(mine) != {"pipeline_run_id", "pipeline_step"}:
        return None
    for version in reversed(deployment.get("versions") or []):
        lineage = version.get("lineage") or {}
        if all(lineage.get(key) == value for key, value in mine.items()):
            return version
    return None


# ------------------------------------------------------------------ I/O parts


def read_holdout(data_path: str, target: str) -> tuple[Any, Any]:
    """The inputs and the target column of the held-out CSV."""
    import pandas

    if not data_path or not os.path.isfile(data_path):
        raise DeployStepError(
            f"the gate's held-out data {data_path!r} is not a file: the step that writes it "
            "must declare it under its files and write it into the run's workspace"
        )
    try:
        frame = pandas.read_csv(data_path)
    except Exception as exc:
        raise DeployStepError(f"cannot read the held-out data {data_path} as CSV: {exc}") from None
    if target not in frame.columns:
        raise DeployStepError(
            f"the held-out data {data_path} has no column {target!r} (its columns: "
            f"{', '.join(map(str, frame.columns))}): set the gate's target to the column "
            "the model predicts"
        )
    return frame.drop(columns=[target]), frame[target]


def model_score(model_uri: str, metric: str, inputs: Any, truth: Any, what: str) -> float:
    """``metric`` of the model at ``model_uri`` on the held-out rows."""
    import mlflow.pyfunc
    import numpy

    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except Exception as exc:
        raise DeployStepError(f"cannot load the {what} model {model_uri}: {exc}") from None
    try:
        predicted = model.predict(inputs)
    except Exception as exc:
        raise DeployStepError(
            f"the {what} model {model_uri} failed to predict the held-out data: {exc}"
        ) from None
    predicted = numpy.asarray(predicted)
    if predicted.ndim == 2 and predicted.shape[1] == 1:
        predicted = predicted[:, 0]
    try:
        return score(metric, numpy.asarray(truth), predicted)
    except ValueError as exc:
        raise DeployStepError(f"scoring the {what} model {model_uri}: {exc}") from None


def _publish(publisher: Any, registered: str, model_uri: str) -> tuple[str, dict]:
    """Register ``model_uri`` as a new version of ``registered``; its URI and lineage."""
    from server_ext.clients.deployer.client import REGISTRY_URI

    if REGISTRY_URI.fullmatch(model_uri):
        version, run_id = publisher.copy_version(model_uri, registered)
        lineage = publisher.run_lineage(run_id) if run_id else publisher.kernel_lineage(None)
    else:
        run_id = None
        try:
            from mlflow.models import get_model_info

            run_id = get_model_info(model_uri).run_id
        except Exception:  # a model without a run (a local path): lineage of this kernel
            run_id = None
        lineage = publisher.run_lineage(run_id) if run_id else publisher.kernel_lineage(None)
        lineage = {**lineage, **pipeline_lineage(), "model_uri": model_uri}
        version = publisher.register(model_uri, registered, lineage)
    lineage = {
        **lineage,
        **pipeline_lineage(),
        "registered_model": registered,
        "model_version": version,
    }
    return f"models:/{registered}/{version}", lineage


def _wait_canary(
    client: Any, name: str, number: int, window: int, sleep: Callable[[float], None]
) -> dict:
    """The version's canary once the deployer promoted, rolled back or stopped it."""
    deadline = time.monotonic() + window + CANARY_MARGIN_SECONDS
    while True:
        current = client.get_version(name, number)
        canary = current.get("canary") or {}
        if canary.get("state") in CANARY_SETTLED:
            return canary
        if time.monotonic() >= deadline:
            raise DeployStepError(
                f"the canary of version {number} of {name!r} is still "
                f"{canary.get('state') or 'unknown'} {window + CANARY_MARGIN_SECONDS} s after "
                "it started; the deployer goes on watching it (see its version page)"
            )
        sleep(POLL_SECONDS)


def deploy(
    model_uri: str,
    name: str,
    gate: dict | None,
    canary: dict | None,
    data_path: str | None,
    profile: str | None,
    target: str | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Run a deploy step (see the module docstring); return the outputs it recorded.

    Parameters
    ----------
    model_uri
        The candidate: an MLflow model URI (``runs:/...``, ``models:/...``).
    name
        The owner's deployment to deploy to.
    gate
        ``{"metric", "direction", "min_delta", "target"}`` or None (deploy without one).
    canary
        ``{"percent", "window" (seconds), "max_error_rate", "max_latency_p99_ms",
        "max_drift_psi"}`` or None.
    data_path
        The held-out CSV the gate scores on (None without a gate).
    profile
        The profile the deployment's replicas run in (None: the deployer's default).
    target
        The column to predict; default the gate's ``target``, else ``"target"``.

    Raises
    ------
    DeployStepError
        What the step could not do, with what to fix.
    """
    from server_ext.clients.deployer.client import (
        DeployerClient,
        DeployerError,
        check_name,
        hub_user,
    )

    if gate:  # what the file says is checked before anything is loaded or asked
        try:
            check_metric(gate["metric"])
        except ValueError as exc:
            raise DeployStepError(str(exc)) from None
    try:
        check_name(name)
        user = hub_user()
    except DeployerError as exc:
        raise DeployStepError(str(exc)) from None
    # another user's model is refused before it is loaded, scored or registered
    from mlflow import MlflowClient

    check_model_access(model_uri, user, MlflowClient())
    client = DeployerClient.from_environment()
    try:
        existing = client.find_deployment(name)
    except DeployerError as exc:
        raise DeployStepError(f"cannot reach the deployer: {exc}") from None
    serving = production_version(existing)
    inputs = None
    earlier = deployed_by_this_step(existing)
    if earlier is not None:
        number = earlier["version"]
        print(
            f"version {number} of {name!r} was deployed by this step before its scheduler "
            "restarted: following it, not deploying again",
            flush=True,
        )
        followed: dict[str, Any] = {
            "decision": "passed",
            "reason": f"passed before a scheduler restart: deployed as version {number}",
            "metric": gate["metric"] if gate else None,
            "candidate": None,
            "production": None,
            "version": number,
            "canary_state": None,
            "canary_reason": None,
        }
        followed.update(_follow(client, name, number, canary_body(canary), existing, sleep))
        for key, value in followed.items():
            output(key, value)
        return followed

    if gate:
        metric = gate["metric"]
        target = target or gate.get("target") or "target"
        inputs, truth = read_holdout(data_path or "", target)
        candidate = model_score(model_uri, metric, inputs, truth, "candidate")
        production = None
        if serving is not None:
            production = model_score(
                serving["model_uri"],
                metric,
                inputs,
                truth,
                f"production (version {serving['version']})",
            )
        decision = decide(
            metric, gate["direction"], float(gate.get("min_delta") or 0), candidate, production
        )
    else:
        decision = Decision("passed", "", float("nan"), None, "passed: the step has no gate")
    where = f"deploy {name!r}"
    if serving is not None:
        where += f" (version {serving['version']} in production)"
    print(f"{where}: {decision.reason}", flush=True)

    recorded: dict[str, Any] = {
        "decision": decision.decision,
        "reason": decision.reason,
        "metric": decision.metric or None,
        "candidate": decision.candidate if gate else None,
        "production": decision.production,
        "version": None,
        "canary_state": None,
        "canary_reason": None,
    }
    if decision.passed:
        recorded.update(
            _roll_out(client, user, name, model_uri, canary, profile, existing, inputs, sleep)
        )
    for key, value in recorded.items():
        output(key, value)
    return recorded


def _roll_out(
    client: Any,
    user: str,
    name: str,
    model_uri: str,
    canary: dict | None,
    profile: str | None,
    existing: dict | None,
    inputs: Any,
    sleep: Callable[[float], None],
) -> dict[str, Any]:
    """Publish the model, create its version, follow it: the outputs it adds."""
    from server_ext.clients.deployer.client import DeployerError, registered_name
    from server_ext.clients.deployer.publish import ModelPublisher, training_summary
    from server_ext.clients.tracking.client import TrackingClient, TrackingError

    errors = (DeployerError, TrackingError)
    try:
        publisher = ModelPublisher(TrackingClient.from_environment(), user)
        published_uri, lineage = _publish(publisher, registered_name(user, name), model_uri)
        print(f"registered {published_uri}", flush=True)
        body: dict[str, Any] = {"model_uri": published_uri, "lineage": lineage}
        if profile:
            body["profile"] = profile
        summary = training_summary(inputs) if inputs is not None else None
        if summary is not None:
            body["training_summary"] = summary
        signature = publisher.model_signature(published_uri)
        if signature is not None:
            body["signature"] = signature
        policy = canary_body(canary)
        canary_note = None
        if existing is None:
            created = client.create_deployment({"name": name, **body})
            number = created["versions"][-1]["version"]
            if policy is not None:
                canary_note = "no canary: the first version of a deployment takes all the traffic"
        else:
            if policy is not None:
                body["canary"] = policy
            number = client.create_version(name, body)["version"]
        print(f"version {number} of {name!r} created; waiting for it to be ready", flush=True)
    except errors as exc:
        raise DeployStepError(f"deploying {name!r}: {exc}") from None
    added = _follow(client, name, number, policy, existing, sleep)
    if canary_note is not None:
        added["canary_reason"] = canary_note
    return added


def _follow(
    client: Any,
    name: str,
    number: int,
    policy: dict | None,
    existing: dict | None,
    sleep: Callable[[float], None],
) -> dict[str, Any]:
    """Wait for version ``number`` to be ready, then for its canary's verdict: outputs."""
    from server_ext.clients.deployer.client import DeployerError
    from server_ext.clients.tracking.client import TrackingError

    errors = (DeployerError, TrackingError)
    try:
        for version in client.follow_version(name, number, POLL_SECONDS, READY_TIMEOUT_SECONDS):
            state = version["state"]
        if state != "ready":
            reason = version.get("reason") or "the deployer gave no reason"
            raise DeployStepError(
                f"version {number} of {name!r} {state}: {reason}; the version that served "
                "before keeps the traffic"
            )
    except errors as exc:
        raise DeployStepError(f"deploying {name!r}: {exc}") from None
    added: dict[str, Any] = {"version": number, "canary_reason": None}
    if policy is not None and existing is not None:
        print(f"version {number} is ready; its canary takes {policy['percent']} %", flush=True)
        try:
            result = _wait_canary(client, name, number, policy["window_seconds"], sleep)
        except errors as exc:
            raise DeployStepError(f"following the canary of {name!r}: {exc}") from None
        added["canary_state"] = result.get("state")
        added["canary_reason"] = result.get("reason")
        print(f"canary {result.get('state')}: {result.get('reason') or ''}", flush=True)
    else:
        print(f"version {number} is ready and takes all the traffic", flush=True)
    return added


# ------------------------------------------------------------------ the notebook

#: The built-in notebook every deploy step runs (checked in; :func:`notebook` makes it).
NOTEBOOK_NAME = "deploy_step.ipynb"

_INTRO = """\
# Deploy step

Shipyard runs this notebook for a pipeline's `type: deploy` step, as the pipeline's
owner. The parameters cell gets the step's settings from `pipeline.yaml`; the cell
below scores the candidate and the model in production on the gate's held-out data,
prints the decision with both figures, and deploys the candidate when it passed
(see `hub_ext/runtime/deploy_step.py`).
"""

_PARAMETERS = """\
model_uri = ""  # the candidate: the step's model reference, resolved
name = ""  # the deployment
gate = None  # {"metric", "direction", "min_delta", "target"} or None
canary = None  # {"percent", "window" (seconds), "max_error_rate", ...} or None
data_path = None  # the gate's held-out CSV, in the run's workspace
profile = None  # the profile the replicas run in
"""

_DEPLOY = """\
from hub_ext.runtime.deploy_step import deploy

deployed = deploy(model_uri, name, gate, canary, data_path, profile)
deployed
"""


def notebook() -> str:
    """The built-in deploy notebook as ``.ipynb`` text (nbformat 4)."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    cells = [
        nbformat.v4.new_markdown_cell(_INTRO),
        # without a final newline, as ruff formats a notebook's cells
        nbformat.v4.new_code_cell(_PARAMETERS.rstrip("\n")),
        nbformat.v4.new_code_cell(_DEPLOY.rstrip("\n")),
    ]
    cells[1].metadata["tags"] = ["parameters"]
    for index, cell in enumerate(cells):  # stable ids: the checked-in file never churns
        cell["id"] = f"deploy-{index}"
    nb.cells = cells
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


if __name__ == "__main__":  # python -m hub_ext.runtime.deploy_step: write the notebook
    from pathlib import Path

    path = Path(__file__).with_name(NOTEBOOK_NAME)
    path.write_text(notebook())
    print(f"wrote {path}")
