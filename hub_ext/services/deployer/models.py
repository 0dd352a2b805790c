"""The deployer's API models (pydantic v2), named by verb: what clients send and receive.

The REST schema (STYLE rules 11 and 18): handlers parse bodies into these,
the core and store take and return them, and :mod:`.openapi` is generated
from them. :mod:`.orm` never imports this module.

Validation happens here, once, with messages that say what to fix:

- Deployment names are slugs, ``[a-z0-9][a-z0-9-]{0,39}``, without ``--``
  and not ending in ``-``: they become part of process, cgroup and
  Kubernetes names (SECURITY rule 10), and ``--`` is the separator of
  :func:`.backend.version_key`.
- A model URI is one the model server can load (:data:`MODEL_URI_SCHEMES`):
  ``models:/`` and ``runs:/`` (read through the tracking service with the
  owner's token), ``mlflow-artifacts:/``, or a model directory on this
  machine (``file:/`` or an absolute path, for the local backend); without
  whitespace or control characters. Anything else (``javascript:``,
  ``s3://`` without the cloud clients in the environments, a relative path)
  is refused when the deployment is made, not failed at the replica's start.
  The model server reads it as the owner: the URI gives nobody access to
  anything the owner cannot read.
- Replicas, percentages and versions are whole numbers (``true`` and ``"1"``
  are not 1; ``1.0`` is, as JSON Schema reads it).
- Each rule a JSON schema can say is in the model's schema too, from the same
  constant, so the OpenAPI document says what the service does; the replica
  limit is the service's setting (``DeployerService.max_replicas``), written
  into the document when the service starts (:func:`.openapi.build_openapi`).
- Free-form documents (training summary, signature, lineage) are JSON objects
  of bounded size.

Unknown fields are errors on input models, so a typo (``replica``) does not
silently keep the default.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..common.models import ErrorResponse
from ..common.secrets import SecretNames

__all__ = [
    "BreakerState",
    "CanaryFigures",
    "CanaryPolicy",
    "CanaryWatch",
    "CreateDeployment",
    "CreateVersion",
    "DeploymentMetrics",
    "DescribeDeployment",
    "DescribeLineage",
    "DescribeVersion",
    "ErrorResponse",
    "Grants",
    "ListDeploymentsQuery",
    "ListDeploymentsResponse",
    "PromoteVersion",
    "RollbackVersion",
    "SetTraffic",
    "UpdateDeployment",
    "VersionMetrics",
]

#: A deployment name: lowercase words joined by single dashes (at most 40 characters).
NAME_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
MAX_NAME = 40
_NAME = re.compile(NAME_PATTERN)
PROFILE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_PROFILE = re.compile(PROFILE_PATTERN)
#: What the model server loads (mlflow.artifacts.download_artifacts, then
#: mlflow.pyfunc.load_model): registry and run URIs through the tracking service, its
#: artifact proxy, and a local model directory. MLflow's other stores (s3, gs, wasbs,
#: hdfs...) need cloud clients that no Shipyard environment installs.
MODEL_URI_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/", "file:/", "/")
MODEL_URI_PATTERN = r"^(?:models:/|runs:/|mlflow-artifacts:/|file:/|/)[^\s\x00-\x1f\x7f]*$"
_MODEL_URI = re.compile(MODEL_URI_PATTERN)
PRINCIPAL_PATTERN = r"^[^\x00-\x1f\x7f/]{1,255}$"
_PRINCIPAL = re.compile(PRINCIPAL_PATTERN)
#: Traffic split keys: version numbers as the path writes them.
VERSION_KEY_PATTERN = r"^[1-9][0-9]{0,8}$"
MAX_VERSION = 999_999_999
MAX_REPLICAS = 64
MAX_URI = 2048
MAX_DOCUMENT_BYTES = 1024**2
MAX_GRANTS = 200

VersionState = Literal["starting", "ready", "failed", "stopped"]
#: Where a canary's watch is: see :class:`CanaryWatch`.
CanaryState = Literal["waiting", "watching", "promoted", "rolled_back", "stopped"]
MIN_CANARY_WINDOW = 10
MAX_CANARY_WINDOW = 86_400
MAX_MIN_REQUESTS = 1_000_000_000


def _error(kind: str, message: str, **context: Any) -> PydanticCustomError:
    return PydanticCustomError(kind, message, context)


def _check_name(value: str) -> str:
    if len(value) > MAX_NAME or not _NAME.fullmatch(value):
        raise _error(
            "deployment_name",
            "'{value}' is not a deployment name: use 1 to 40 lowercase letters, digits and "
            "single dashes, starting with a letter or digit and not ending with a dash "
            "(for example 'churn-model')",
            value=value,
        )
    return value


def _check_profile(value: str) -> str:
    if len(value) > 63 or not _PROFILE.fullmatch(value):
        raise _error(
            "profile", "'{value}' is not a profile slug (see GET api/profiles)", value=value
        )
    return value


def _check_uri(value: str) -> str:
    if not value or len(value) > MAX_URI:
        raise _error("model_uri", f"a model URI has 1 to {MAX_URI} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise _error("model_uri", "a model URI has no spaces or control characters")
    if not _MODEL_URI.fullmatch(value):
        raise _error(
            "model_uri",
            "'{value}' is not a model the model server can load: use 'models:/<name>/<version>', "
            "'runs:/<run id>/<path>', 'mlflow-artifacts:/...', or the absolute path of a model "
            "directory on this machine",
            value=value,
        )
    return value


def _check_document(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and len(json.dumps(value)) > MAX_DOCUMENT_BYTES:
        raise _error("document_size", f"this document is over {MAX_DOCUMENT_BYTES} bytes of JSON")
    return value


def _check_principals(values: list[str]) -> list[str]:
    for value in values:
        if not _PRINCIPAL.fullmatch(value):
            raise _error(
                "principal",
                "'{value}' is not a hub user, group or service name (1 to 255 characters, "
                "no '/' or control characters)",
                value=value,
            )
    return sorted(set(values))


def _integral(value: Any) -> Any:
    # JSON Schema's "integer" is any number without a fraction: 2.0 is 2
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: A whole number in a JSON body: never a string ("2") or a boolean (true).
Whole = Annotated[StrictInt, BeforeValidator(_integral)]


def _bounds(schema: dict[str, Any]) -> None:
    # pydantic writes a bound behind a BeforeValidator under its own name (ge, le)
    for ours, theirs in (("ge", "minimum"), ("le", "maximum")):
        if ours in schema:
            schema[theirs] = schema.pop(ours)


def _whole(low: int, high: int) -> Any:
    return Annotated[Whole, Field(ge=low, le=high, json_schema_extra=_bounds)]


DeploymentName = Annotated[
    str,
    AfterValidator(_check_name),
    Field(json_schema_extra={"pattern": NAME_PATTERN, "minLength": 1, "maxLength": MAX_NAME}),
]
ProfileSlug = Annotated[
    str,
    AfterValidator(_check_profile),
    Field(json_schema_extra={"pattern": PROFILE_PATTERN, "minLength": 1, "maxLength": 63}),
]
ModelURI = Annotated[
    str,
    AfterValidator(_check_uri),
    Field(json_schema_extra={"pattern": MODEL_URI_PATTERN, "minLength": 1, "maxLength": MAX_URI}),
]
Document = Annotated[dict[str, Any] | None, AfterValidator(_check_document)]
Replicas = _whole(1, MAX_REPLICAS)
Percent = _whole(0, 100)
VersionNumber = _whole(1, MAX_VERSION)
Principals = Annotated[
    list[str],
    Field(
        max_length=MAX_GRANTS,
        json_schema_extra={
            "items": {"type": "string", "pattern": PRINCIPAL_PATTERN},
        },
    ),
    AfterValidator(_check_principals),
]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


#: Doc of the deployments' ``secrets`` fields.
SECRETS_DOC = (
    "Names of the owner's secrets (the secrets service) the replicas get as environment "
    "variables; names only, never values. Only the owner may set them. A version whose "
    "secret is missing fails to start, naming it."
)


class CreateDeployment(_Input):
    """A new deployment and its version 1."""

    name: DeploymentName
    model_uri: ModelURI
    profile: ProfileSlug | None = Field(
        None, description="The profile the replicas run in; your default profile if left out."
    )
    replicas: Replicas = 1
    training_summary: Document = None
    signature: Document = None
    lineage: Document = None
    secrets: SecretNames = Field(default_factory=list, description=SECRETS_DOC)


#: JSON numbers (never a string or a boolean, never NaN or infinite) within bounds.
CanaryWindow = Annotated[
    float, Field(strict=True, allow_inf_nan=False, ge=MIN_CANARY_WINDOW, le=MAX_CANARY_WINDOW)
]
Share = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=1)]
Positive = Annotated[float, Field(strict=True, allow_inf_nan=False, gt=0)]
CanaryPercent = Annotated[Whole, Field(ge=1, le=99, json_schema_extra=_bounds)]
MinRequests = Annotated[Whole, Field(ge=0, le=MAX_MIN_REQUESTS, json_schema_extra=_bounds)]


class CanaryPolicy(_Input):
    """A canary the deployer watches: promoted when its window passes clean, else rolled back.

    Each threshold left out (or null) is not checked; the canary's breaker opening
    always rolls it back.
    """

    percent: CanaryPercent = Field(
        description="Share of the traffic (1 to 99) the version takes while it is watched."
    )
    window_seconds: CanaryWindow = Field(
        description=f"How long the canary is watched once ready ({MIN_CANARY_WINDOW} to "
        f"{MAX_CANARY_WINDOW} seconds); it is promoted at the end unless a threshold was crossed."
    )
    max_error_rate: Share | None = Field(
        None, description="Roll back when the share of failed (5xx) requests goes over this."
    )
    max_latency_p99_ms: Positive | None = Field(
        None, description="Roll back when the 99th percentile latency (ms) goes over this."
    )
    max_drift_psi: Positive | None = Field(
        None, description="Roll back when any feature's population stability index goes over this."
    )
    min_requests: MinRequests = Field(
        20,
        description="Requests the canary must have seen before a threshold is judged; fewer "
        "over the whole window rolls it back (not enough traffic to judge it).",
    )


class CreateVersion(_Input):
    """A new version of a deployment; it takes the traffic when it is ready."""

    model_uri: ModelURI
    profile: ProfileSlug | None = Field(
        None, description="The profile of this version; the deployment's if left out."
    )
    canary_percent: Percent | None = Field(
        None,
        description="Share of the traffic the version takes when ready; all of it if left out. "
        "0 keeps it ready but unrouted (call it at .../v/<version>/invocations).",
    )
    canary: CanaryPolicy | None = Field(
        None,
        description="A watched canary: the version takes `percent` of the traffic when ready, "
        "and the deployer promotes it or rolls it back by itself (not with canary_percent).",
    )
    training_summary: Document = None
    signature: Document = None
    lineage: Document = None
    secrets: SecretNames | None = Field(
        None,
        description=SECRETS_DOC + " Given, the list replaces the deployment's (for every "
        "replica started from now on); left out, the deployment keeps its list.",
    )

    @model_validator(mode="after")
    def _one_canary(self) -> CreateVersion:
        if self.canary is not None and self.canary_percent is not None:
            raise _error(
                "canary",
                "canary and canary_percent: give one of them, not both (canary.percent is the "
                "share of traffic of a watched canary; canary_percent one nobody watches)",
            )
        return self


class UpdateDeployment(_Input):
    """Scale a deployment: every running version gets this many replicas."""

    replicas: Replicas


class SetTraffic(_Input):
    """The whole traffic split: ready versions and their percentages, summing to 100."""

    split: dict[str, Percent] = Field(
        min_length=1, json_schema_extra={"propertyNames": {"pattern": VERSION_KEY_PATTERN}}
    )

    @model_validator(mode="after")
    def _valid(self) -> SetTraffic:
        for key in self.split:
            if not re.fullmatch(VERSION_KEY_PATTERN, key):
                raise _error(
                    "split", "'{key}' is not a version number: use keys like \"1\"", key=key
                )
        total = sum(self.split.values())
        if total != 100:
            raise _error("split", "the percentages sum to {total}, not 100", total=total)
        return self

    def as_versions(self) -> dict[int, int]:
        return {int(k): v for k, v in self.split.items() if v > 0}


class PromoteVersion(_Input):
    """Send all traffic to one ready (or stopped: it is started first) version."""

    version: VersionNumber


class RollbackVersion(_Input):
    """Send all traffic back to an earlier version; by default the one that served before."""

    version: VersionNumber | None = None


class Grants(_Input):
    """Who may invoke the deployment besides its owner (and hub admins)."""

    users: Principals = Field(default_factory=list)
    groups: Principals = Field(default_factory=list)
    services: Principals = Field(default_factory=list)


class ListDeploymentsQuery(_Input):
    """``?owner=``: whose deployments (admins only; others see their own)."""

    owner: str | None = Field(default=None, max_length=255)


class BreakerState(BaseModel):
    """The version's circuit breaker: open takes it out of the traffic split."""

    open: bool = False
    reason: str | None = None
    since: datetime | None = None
    serving: bool = Field(
        False,
        description="Open but still serving: it is the only version there is to route to.",
    )


class CanaryFigures(BaseModel):
    """What the front saw of one version: over its last minute, and its requests in all."""

    error_rate: float | None = Field(default=None, description="Share of failed (5xx) requests.")
    latency_p99_ms: float | None = None
    requests: int = Field(
        default=0, description="Requests the version answered since it took traffic."
    )
    drift_psi_max: float | None = Field(
        default=None, description="The largest population stability index of any feature."
    )


class CanaryWatch(BaseModel):
    """The deployer's watch of a canary version and its decision."""

    policy: CanaryPolicy
    state: CanaryState = Field(
        description="waiting: not ready yet; watching: ready, until the window ends; promoted "
        "or rolled_back: the deployer's decision; stopped: the traffic was changed by hand "
        "during the window, which ended the watch."
    )
    reason: str | None = Field(None, description="Why it was decided or stopped, with figures.")
    started_at: datetime | None = None
    ends_at: datetime | None = None
    decided_at: datetime | None = None
    canary: CanaryFigures = Field(default_factory=lambda: CanaryFigures())
    baseline: CanaryFigures | None = Field(
        None, description="The same figures of the production version it is compared with."
    )
    baseline_version: int | None = Field(
        None, description="The production version a rollback returns the traffic to."
    )


class DescribeVersion(BaseModel):
    """One immutable version of a deployment."""

    version: int
    model_uri: str
    profile: str
    state: VersionState
    reason: str | None = None
    created_at: datetime
    ready_at: datetime | None = None
    stopped_at: datetime | None = None
    pending_percent: int | None = Field(
        None, description="The share of traffic the version takes once ready."
    )
    breaker: BreakerState = Field(default_factory=BreakerState)
    canary: CanaryWatch | None = Field(
        None, description="The watch of a version created with a canary policy; null otherwise."
    )
    signature: dict[str, Any] | None = None
    lineage: dict[str, Any] | None = None


class DescribeDeployment(BaseModel):
    """A deployment: its versions, traffic split and grants."""

    owner: str
    name: str
    url: str = Field(description="Where to POST predictions (routed by the traffic split).")
    profile: str
    replicas: int
    traffic: dict[str, int]
    previous_version: int | None = None
    versions: list[DescribeVersion]
    grants: Grants
    secrets: list[str] = Field(default_factory=list, description=SECRETS_DOC)
    created_at: datetime
    updated_at: datetime


class ListDeploymentsResponse(BaseModel):
    deployments: list[DescribeDeployment]


class VersionMetrics(BaseModel):
    """What the router saw for one version over the last window, and its model servers' stats."""

    state: VersionState
    breaker: BreakerState
    traffic: int = 0
    replicas_ready: int = 0
    requests: int = Field(
        0, description="Requests routed to the version since the deployer started."
    )
    errors: int = 0
    window_seconds: float = 60
    window_requests: int = 0
    window_errors: int = 0
    rate: float = Field(0.0, description="Requests per second over the window.")
    error_rate: float = Field(0.0, description="Share of the window's requests that failed (5xx).")
    latency_ms: dict[str, float | None] = Field(default_factory=lambda: {"p50": None, "p99": None})
    drift: dict[str, float] = Field(
        default_factory=dict, description="Population stability index per feature."
    )
    rows_seen: int = 0
    rows_checked: int = Field(
        0, description="Input rows the version's replicas checked for data quality."
    )
    input_issues: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="Input values with a data-quality issue, by kind (schema_violation, "
        "missing_value, out_of_range, unseen_category) and feature, summed over the "
        "version's replicas since the deployer started watching it; only non-zero counts.",
    )


class DeploymentMetrics(BaseModel):
    versions: dict[str, VersionMetrics]


# ------------------------------------------------------------------ lineage


class LineageVersion(BaseModel):
    """The deployment version the chain starts from."""

    owner: str
    name: str
    version: int
    model_uri: str
    state: VersionState
    created_at: datetime


class LineageModelVersion(BaseModel):
    """The MLflow registry's model version the deployment version serves."""

    name: str
    version: str
    run_id: str | None = Field(None, description="The run the registry says made it.")


class LineageRun(BaseModel):
    """The MLflow run that trained the model, read through the tracking service as the caller."""

    run_id: str
    experiment_id: str | None = None
    status: str | None = None
    params: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(
        default_factory=dict, description="Each metric's latest value."
    )
    notebook: str | None = Field(None, description="``mlflow.source.name``: the notebook's path.")
    cell_source: str | None = Field(None, description="The ``%%track`` cell (``cell.py``).")
    git_commit: str | None = None
    git_dirty: str | None = None
    env: str | None = None
    env_digest: str | None = None
    tags: dict[str, str] = Field(
        default_factory=dict, description="Its ``mlflow.source.*`` and ``shipyard.*`` tags."
    )


class LineageSchedulerRun(BaseModel):
    """The scheduler run (a job's, or a pipeline step's) the model was deployed from."""

    id: str
    job_id: str
    status: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    notebook_digest: str
    env_digest: str | None = None
    mlflow_run_id: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None


class LineageStep(BaseModel):
    """The pipeline step that deployed the model, as the pipeline run recorded it."""

    step: str
    status: str
    run_id: str | None = None
    outputs: dict[str, Any] = Field(default_factory=dict)


class LineagePipelineRun(BaseModel):
    """The pipeline run the model came from."""

    id: str
    pipeline_id: str
    pipeline_name: str
    status: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    ended_at: datetime | None = None
    step: LineageStep | None = None


class LineageNotebook(BaseModel):
    """The notebook that ran: its path, the digest of the scheduler's snapshot, its parameters."""

    path: str | None = None
    digest: str | None = Field(None, description="The scheduler run's ``notebook_digest``.")
    parameters: dict[str, Any] = Field(default_factory=dict)


class LineageFile(BaseModel):
    """An input file of the pipeline run, with its SHA-256."""

    path: str
    sha256: str | None = None
    source: str = Field(
        description="``step:<step>/<name>`` (a file a step left) or ``trigger`` (the files "
        "that started the run)."
    )


LineageLink = Literal[
    "model_version", "mlflow_run", "scheduler_run", "pipeline_run", "notebook", "inputs"
]


class LineageMissing(BaseModel):
    """A link of the chain that could not be resolved, and why."""

    link: Literal[
        "model_version", "mlflow_run", "scheduler_run", "pipeline_run", "notebook", "inputs"
    ]
    reason: str


class DescribeLineage(BaseModel):
    """Where a deployment version came from, as far as it can be followed.

    Each link is null when it is not known; ``missing`` then says which and why.
    """

    version: LineageVersion
    recorded: dict[str, Any] = Field(
        default_factory=dict, description="The version's lineage document, as deployed."
    )
    model_version: LineageModelVersion | None = None
    mlflow_run: LineageRun | None = None
    scheduler_run: LineageSchedulerRun | None = None
    pipeline_run: LineagePipelineRun | None = None
    notebook: LineageNotebook | None = None
    inputs: list[LineageFile] = Field(default_factory=list)
    missing: list[LineageMissing] = Field(default_factory=list)
