"""The pipeline file's model: what ``pipeline.yaml`` may say, as pydantic v2 models.

A pipeline is a DAG of notebook steps kept beside its notebooks in a
``pipeline.yaml``. This module holds its shape and the rules of each field;
the rules that need the whole file (a cycle, a ``needs`` or an input that names
no step or one that does not run before, duplicate keys, line numbers) are in
:mod:`.graph` and :mod:`.load`, and :func:`.load.load_pipeline` runs them all.

What the models reuse from the jobs' API models (:mod:`..models`), so a rule is
written once (STYLE rule 11): the pipeline's name is a slug like a job's, the
profile slugs, parameters (identifiers to JSON values, SECURITY rule 4),
retries (0 to 10), and the trigger kinds (cron with its time zone, webhook,
after a job). Two triggers are the pipeline's own: a file trigger that also
says how long the file must be quiet (``debounce_seconds``), and
``after_pipeline``, which names another pipeline.

Values a step hands on are references that read as the file's own paths:
``steps.train.outputs.model_uri`` is the ``model_uri`` entry of step
``train``'s ``outputs``, ``steps.ingest.files.table`` the ``table`` entry of
its ``files``. Output and file names are identifiers, so a reference splits on
its dots without ambiguity; a step's ``inputs`` map a parameter of its notebook
to such a reference, and papermill gets the value, or the file's path in the run
workspace, as that parameter.

Durations (``timeout``, a canary's ``window``) are whole seconds or a string of
days, hours, minutes and seconds (``"90s"``, ``"30m"``, ``"2h"``, ``"1h30m"``),
and are kept as seconds. Every step has a finite timeout (SECURITY rule 6).

Numbers are strict as in the jobs' models: ``"3"`` is not a number and ``yes``
(which YAML 1.1 reads as true) is not one either. Unknown fields are errors, so
a typo (``timout``) does not silently keep the default.

Editors check a file against the JSON schema generated from these models
(:mod:`.schema`, checked in as ``pipeline.schema.json``) when its first line is::

    # yaml-language-server: $schema=<path or URL of>/pipeline.schema.json

Rejected alternatives:

- ``outputs: {values: ..., files: ...}`` nested in one field: the references
  would no longer be the paths of what they name in the file.
- A ``type`` required on every step: notebook steps are the common case, so
  ``type`` defaults to ``notebook`` and only ``deploy`` steps say it.
- Validating the graph in a pydantic model validator: its errors carry no
  location inside the model, and every error here must point at the YAML node
  to fix (:mod:`.load` maps both kinds of error to lines).
"""

from __future__ import annotations

import copy
import keyword
import math
import re
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    Tag,
    WithJsonSchema,
    model_validator,
)
from pydantic import BaseModel as _BaseModel
from pydantic_core import PydanticCustomError

from hub_ext.runtime.gate import METRICS

from ..models import (
    AfterJobTrigger,
    CronTrigger,
    FileTrigger,
    Parameters,
    ProfileSlug,
    RetryAttempts,
    WebhookTrigger,
)
from ..validation import (
    MAX_PATH,
    MAX_TIMEOUT_SECONDS,
    PARAMETER_NAME_PATTERN,
    SLUG_PATTERN,
    SOURCE_PATH_PATTERN,
    check_parameter_name,
    check_triggers,
)

#: At most this many steps in one pipeline.
MAX_STEPS = 100
#: At most this many declared outputs, and as many files, per step.
MAX_OUTPUTS = 100
MAX_DESCRIPTION = 2000
#: A file trigger waits at most an hour for its file to be quiet.
MAX_DEBOUNCE_SECONDS = 3600
#: A canary runs between a minute and a week.
MIN_CANARY_WINDOW = 60
MAX_CANARY_WINDOW = 7 * 86_400
#: A duration as text: days, hours, minutes, seconds in that order, each at most once.
DURATION_PATTERN = r"^(?=\d)(?:\d+d)?(?:\d+h)?(?:\d+m)?(?:\d+s)?$"
_DURATION = re.compile(DURATION_PATTERN)
_UNIT_SECONDS = {"d": 86_400, "h": 3600, "m": 60, "s": 1}
_NAME = PARAMETER_NAME_PATTERN[1:-1]
_STEP = SLUG_PATTERN[1:-1].replace("(", "(?:")
#: ``steps.<step id>.outputs.<name>`` or ``steps.<step id>.files.<name>``.
REFERENCE_PATTERN = rf"^steps\.({_STEP})\.(outputs|files)\.({_NAME})$"
_REFERENCE = re.compile(REFERENCE_PATTERN)
FILE_REFERENCE_PATTERN = rf"^steps\.({_STEP})\.files\.({_NAME})$"
#: A notebook beside the pipeline file: relative, no ``..``, no hidden part, ``.ipynb``.
NOTEBOOK_PATTERN = SOURCE_PATH_PATTERN[:-1] + r"\.ipynb$"
_NOTEBOOK = re.compile(NOTEBOOK_PATTERN)
_SOURCE = re.compile(SOURCE_PATH_PATTERN)


def _error(kind: str, message: str, **context: Any) -> PydanticCustomError:
    # formatted here: pydantic would read braces in user input as fields of the message
    return PydanticCustomError(kind, message.format(**context))


def _slug(what: str, example: str) -> AfterValidator:
    pattern = re.compile(SLUG_PATTERN)

    def check(value: str) -> str:
        if not value or len(value) > 63 or not pattern.fullmatch(value):
            raise _error(
                "slug",
                "{what} {value!r} is not valid: use 1 to 63 lowercase letters, digits and "
                "dashes, starting and ending with a letter or digit (e.g. {example!r})",
                what=what,
                value=value,
                example=example,
            )
        return value

    return AfterValidator(check)


def _identifier(what: str, example: str) -> AfterValidator:
    pattern = re.compile(PARAMETER_NAME_PATTERN)

    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise _error(
                "name",
                "{what} {value!r} is not valid: use letters, digits and underscores, not "
                "starting with a digit (e.g. {example!r})",
                what=what,
                value=value,
                example=example,
            )
        return value

    return AfterValidator(check)


def _relative_path(what: str, pattern: re.Pattern[str], example: str) -> AfterValidator:
    def check(value: str) -> str:
        if not value or len(value) > MAX_PATH or "\x00" in value:
            raise _error("path", "{what} must be 1 to 4096 characters without NUL", what=what)
        parts = value.split("/")
        if value.startswith(("/", "~")) or ".." in parts:
            raise _error(
                "path",
                "{what} {value!r} must be relative to the folder of pipeline.yaml and must "
                "not contain '..' (e.g. {example!r})",
                what=what,
                value=value,
                example=example,
            )
        if "" in parts:
            raise _error(
                "path",
                "{what} {value!r} has an empty part ('//' or a '/' at an end)",
                what=what,
                value=value,
            )
        if not pattern.fullmatch(value):
            raise _error(
                "path",
                "{what} {value!r} is not valid: no part may start with '.' (hidden files "
                "and folders are not read){suffix} (e.g. {example!r})",
                what=what,
                value=value,
                example=example,
                suffix=", and it must end in '.ipynb'" if pattern is _NOTEBOOK else "",
            )
        return value

    return AfterValidator(check)


def parse_duration(value: Any) -> Any:
    """Return ``value`` in seconds when it is a duration string or a whole float, else as is.

    ``"1h30m"`` is 5400; a string that is not a duration raises, naming the forms; what is
    not a string is left for the strict integer check (``true`` is refused there).
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not _DURATION.fullmatch(text):
        raise _error(
            "duration",
            "{value!r} is not a duration: write whole seconds (90) or days, hours, minutes "
            "and seconds in that order, e.g. '90s', '30m', '2h', '1h30m'",
            value=value,
        )
    return sum(
        int(number) * _UNIT_SECONDS[unit] for number, unit in re.findall(r"(\d+)([dhms])", text)
    )


def _duration_range(what: str, low: int, high: int) -> AfterValidator:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise _error(
                "duration_range",
                "{what} must be between {low} and {high} seconds, not {value}",
                what=what,
                low=low,
                high=high,
                value=value,
            )
        return value

    return AfterValidator(check)


def _duration_schema(low: int, high: int) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": low, "maximum": high},
                {"type": "string", "pattern": DURATION_PATTERN},
            ],
            "description": f"Whole seconds, or a duration such as '30m' or '2h' "
            f"({low} to {high} seconds).",
        }
    )


def _number_range(what: str, low: float, high: float | None, *, low_open: bool = False) -> Any:
    """The check of a bounded number, and its bounds for the JSON schema."""

    def check(value: float) -> float:
        ok = math.isfinite(value) and (value > low if low_open else value >= low)
        if high is not None:
            ok = ok and value <= high
        if not ok:
            above = f"above {low}" if low_open else f"at least {low}"
            upto = "" if high is None else f" and at most {high}"
            raise _error(
                "range",
                "{what} must be {above}{upto}, not {value}",
                what=what,
                above=above,
                upto=upto,
                value=value,
            )
        return value

    bounds: dict[str, Any] = {"exclusiveMinimum" if low_open else "minimum": low}
    if high is not None:
        bounds["maximum"] = high
    return AfterValidator(check), Field(json_schema_extra=bounds)


def _not_null(schema: dict[str, Any]) -> None:
    # An optional limit that is left out rather than written null: its schema says the
    # number only (pydantic writes ``X | None = None`` as anyOf [X, null]).
    options = [o for o in schema.pop("anyOf", []) if o.get("type") != "null"]
    schema.update(options[0])
    schema.pop("default", None)


def _strict_number(value: Any) -> Any:
    # JSON numbers only: not "0.5" (text) and not true (YAML's yes).
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _error("number", "must be a number, not {value!r}", value=value)
    return value


StepId = Annotated[
    str,
    _slug("step id", "train"),
    Field(json_schema_extra={"pattern": SLUG_PATTERN, "minLength": 1, "maxLength": 63}),
]
PipelineName = Annotated[
    str,
    _slug("pipeline name", "nightly-training"),
    Field(json_schema_extra={"pattern": SLUG_PATTERN, "minLength": 1, "maxLength": 63}),
]
DeploymentName = Annotated[
    str,
    _slug("deployment name", "churn-model"),
    Field(json_schema_extra={"pattern": SLUG_PATTERN, "minLength": 1, "maxLength": 63}),
]


def _own_deployment(value: Any) -> Any:
    """Refuse ``owner/name``: a deploy step deploys to its pipeline owner's deployments."""
    if isinstance(value, str) and "/" in value:
        owner, _, name = value.rpartition("/")
        raise _error(
            "foreign_deployment",
            "{value!r} names the deployment {name!r} of user {owner!r}: a deploy step deploys "
            "only to deployments of the pipeline's owner, named without an owner (and "
            "registered as '<owner>-<name>'); write the name alone, e.g. name: {example}",
            value=value,
            name=name,
            owner=owner.lstrip("~@"),
            example=name or "churn-model",
        )
    return value


#: A deploy step's deployment: always one of its owner's (``owner/name`` is refused).
OwnDeploymentName = Annotated[DeploymentName, BeforeValidator(_own_deployment)]
OutputName = Annotated[
    str,
    _identifier("output name", "model_uri"),
    Field(json_schema_extra={"pattern": PARAMETER_NAME_PATTERN}),
]
#: An input is a notebook parameter: the jobs' one parameter-name rule (SECURITY rule 4).
InputName = Annotated[str, AfterValidator(check_parameter_name)]
NotebookPath = Annotated[
    str,
    _relative_path("notebook", _NOTEBOOK, "notebooks/train.ipynb"),
    Field(json_schema_extra={"pattern": NOTEBOOK_PATTERN, "maxLength": MAX_PATH}),
]
WorkspacePath = Annotated[
    str,
    _relative_path("file", _SOURCE, "out/model.pkl"),
    Field(json_schema_extra={"pattern": SOURCE_PATH_PATTERN, "maxLength": MAX_PATH}),
]
Timeout = Annotated[
    int,
    Field(strict=True),
    BeforeValidator(parse_duration),
    _duration_range("timeout", 1, MAX_TIMEOUT_SECONDS),
    _duration_schema(1, MAX_TIMEOUT_SECONDS),
]
CanaryWindow = Annotated[
    int,
    Field(strict=True),
    BeforeValidator(parse_duration),
    _duration_range("canary window", MIN_CANARY_WINDOW, MAX_CANARY_WINDOW),
    _duration_schema(MIN_CANARY_WINDOW, MAX_CANARY_WINDOW),
]
_MIN_DELTA_CHECK, _MIN_DELTA_SCHEMA = _number_range("min_delta", 0, None)
_ERROR_RATE_CHECK, _ERROR_RATE_SCHEMA = _number_range("max_error_rate", 0, 1)
_LATENCY_CHECK, _LATENCY_SCHEMA = _number_range("max_latency_p99_ms", 0, None, low_open=True)
_DRIFT_CHECK, _DRIFT_SCHEMA = _number_range("max_drift_psi", 0, None, low_open=True)
MinDelta = Annotated[float, BeforeValidator(_strict_number), _MIN_DELTA_CHECK, _MIN_DELTA_SCHEMA]
ErrorRate = Annotated[float, BeforeValidator(_strict_number), _ERROR_RATE_CHECK, _ERROR_RATE_SCHEMA]
LatencyMs = Annotated[float, BeforeValidator(_strict_number), _LATENCY_CHECK, _LATENCY_SCHEMA]
DriftPsi = Annotated[float, BeforeValidator(_strict_number), _DRIFT_CHECK, _DRIFT_SCHEMA]


def _reference(pattern: re.Pattern[str], what: str, example: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise _error(
                "reference",
                "{value!r} is not {what}: write steps.<step id>.{kinds}.<name> (e.g. {example!r})",
                value=value,
                what=what,
                kinds="outputs|files" if pattern is _REFERENCE else "files",
                example=example,
            )
        return value

    return AfterValidator(check)


Reference = Annotated[
    str,
    _reference(
        _REFERENCE, "a reference to a step's output or file", "steps.train.outputs.model_uri"
    ),
    Field(json_schema_extra={"pattern": REFERENCE_PATTERN}),
]
FileReference = Annotated[
    str,
    _reference(
        re.compile(FILE_REFERENCE_PATTERN),
        "a reference to a step's file",
        "steps.split.files.holdout",
    ),
    Field(json_schema_extra={"pattern": FILE_REFERENCE_PATTERN}),
]


def split_reference(reference: str) -> tuple[str, str, str]:
    """Return ``(step id, "outputs" or "files", name)`` of a valid reference."""
    match = _REFERENCE.fullmatch(reference)
    if match is None:
        raise ValueError(f"{reference!r} is not a step reference")
    step, kind, name = match.groups()
    return step, kind, name


class BaseModel(_BaseModel):
    """A part of the pipeline file: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")


class RunIf(str, Enum):
    """When a step runs, given how the steps it needs ended."""

    #: Every step it needs succeeded (the default).
    all_succeeded = "all_succeeded"
    #: At least one step it needs failed (a clean-up or alert step).
    any_failed = "any_failed"
    #: Once every step it needs has ended, however.
    always = "always"


class OutputType(str, Enum):
    """The JSON type of a value a step declares as output."""

    string = "string"
    number = "number"
    integer = "integer"
    boolean = "boolean"
    #: Any JSON value (an object or list, say).
    json = "json"


class Direction(str, Enum):
    """Whether a larger or a smaller gate metric is better."""

    maximize = "maximize"
    minimize = "minimize"


class PipelineFileTrigger(FileTrigger):
    """Run when a file matching a glob appears or changes, once it has been quiet a while."""

    debounce_seconds: Annotated[
        float,
        BeforeValidator(_strict_number),
        Field(ge=0, le=MAX_DEBOUNCE_SECONDS, allow_inf_nan=False),
    ] = Field(
        default=30,
        description="How long the file must stay unchanged before the pipeline runs "
        f"(0 to {MAX_DEBOUNCE_SECONDS} seconds), so a file still being written does not "
        "start it.",
    )


class AfterPipelineTrigger(BaseModel):
    """Run after a run of another pipeline (one the owner can see) succeeds."""

    kind: Literal["after_pipeline"] = Field(
        default="after_pipeline", description="Run after another pipeline."
    )
    pipeline: PipelineName = Field(description="The name of the pipeline to follow.")


PipelineTrigger = Annotated[
    CronTrigger | PipelineFileTrigger | WebhookTrigger | AfterJobTrigger | AfterPipelineTrigger,
    Field(discriminator="kind"),
]


def _unique(what: str) -> AfterValidator:
    def check(value: list[str]) -> list[str]:
        seen: set[str] = set()
        for item in value:
            if item in seen:
                raise _error("duplicate", "{what} lists {item!r} twice", what=what, item=item)
            seen.add(item)
        return value

    return AfterValidator(check)


#: The keys of outputs, files and inputs: identifiers, in the schema too.
_NAMED: dict[str, Any] = {"propertyNames": {"pattern": PARAMETER_NAME_PATTERN}}

#: The keys of inputs: parameter names, as the jobs' parameters say them.
_PARAMETER_NAMES: dict[str, Any] = {
    "propertyNames": {
        "pattern": PARAMETER_NAME_PATTERN,
        "not": {"enum": list(keyword.kwlist)},
    }
}

_STEP_DOCS = {
    "needs": "Ids of the steps that must end before this one starts (fan-in); steps that "
    "need the same step run in parallel (fan-out).",
    "run_if": "When this step runs, given how the steps in needs ended.",
    "profile": "The resource profile it runs with; the pipeline's profile when left out.",
}


class NotebookStep(BaseModel):
    """A step that runs a notebook with papermill."""

    type: Literal["notebook"] = Field(
        default="notebook", description="A notebook step; the default, so it may be left out."
    )
    notebook: NotebookPath = Field(description="The notebook, relative to pipeline.yaml's folder.")
    parameters: Parameters = Field(
        default_factory=dict,
        description="Values for the notebook's parameters cell; they override the "
        "pipeline's parameters of the same name.",
    )
    profile: ProfileSlug | None = Field(default=None, description=_STEP_DOCS["profile"])
    needs: Annotated[list[StepId], _unique("needs")] = Field(
        default_factory=list, description=_STEP_DOCS["needs"]
    )
    run_if: RunIf = Field(default=RunIf.all_succeeded, description=_STEP_DOCS["run_if"])
    retries: RetryAttempts = Field(default=0, description="How often a failed run is retried.")
    timeout: Timeout = Field(default=3600, description="How long a run of the step may take.")
    outputs: Annotated[
        dict[OutputName, OutputType], Field(max_length=MAX_OUTPUTS, json_schema_extra=_NAMED)
    ] = Field(
        default_factory=dict,
        description="Values the notebook records for later steps, by name, with their type.",
    )
    files: Annotated[
        dict[OutputName, WorkspacePath], Field(max_length=MAX_OUTPUTS, json_schema_extra=_NAMED)
    ] = Field(
        default_factory=dict,
        description="Files the notebook writes for later steps, by name: paths relative to "
        "the run workspace.",
    )
    inputs: Annotated[dict[InputName, Reference], Field(json_schema_extra=_PARAMETER_NAMES)] = (
        Field(
            default_factory=dict,
            description="Notebook parameters taken from steps that run before this one: "
            "parameter name -> steps.<id>.outputs.<name> (the value) or steps.<id>.files.<name> "
            "(the file's path).",
        )
    )

    @model_validator(mode="after")
    def _inputs_are_not_parameters(self) -> NotebookStep:
        both = sorted(set(self.inputs) & set(self.parameters))
        if both:
            raise _error(
                "input_and_parameter",
                "{names} is set both in parameters and in inputs: keep one",
                names=", ".join(both),
            )
        return self


def _check_metric(value: str) -> str:
    if value not in METRICS:
        raise _error(
            "metric",
            "{value!r} is not a metric a gate computes: use one of {names}",
            value=value,
            names=", ".join(METRICS),
        )
    return value


class Gate(BaseModel):
    """Deploy only when the new model beats the deployed one on held-out data."""

    metric: Annotated[
        str,
        AfterValidator(_check_metric),
        WithJsonSchema({"type": "string", "enum": list(METRICS)}),
    ] = Field(
        description="The metric the gate compares: "
        + ", ".join(METRICS)
        + " (hub_ext/runtime/gate.py says what each is)."
    )
    direction: Direction = Field(description="Whether a larger or a smaller metric is better.")
    min_delta: MinDelta = Field(
        default=0.0,
        description="How much better the new model must be (0 or more, in the metric's unit).",
    )
    data: FileReference = Field(
        description="The held-out data to score both models on: steps.<id>.files.<name>."
    )
    target: Annotated[str, Field(min_length=1, max_length=255)] = Field(
        default="target",
        description="The column of the held-out data (a CSV file) the models predict; every "
        "other column is an input.",
    )


class Canary(BaseModel):
    """Send part of the traffic to the new model for a while, and roll back on a breach.

    At least one of the ``max_*`` limits must be set: a canary that checks nothing is
    only a delay.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["max_error_rate"]},
                {"required": ["max_latency_p99_ms"]},
                {"required": ["max_drift_psi"]},
            ]
        }
    )

    percent: Annotated[int, Field(strict=True, ge=1, le=99)] = Field(
        description="The share of requests (1 to 99 %) the new model answers during the canary."
    )
    window: CanaryWindow = Field(description="How long the canary runs before promotion.")
    max_error_rate: ErrorRate | None = Field(
        default=None,
        json_schema_extra=_not_null,
        description="The largest share of failed requests (0 to 1) tolerated.",
    )
    max_latency_p99_ms: LatencyMs | None = Field(
        default=None,
        json_schema_extra=_not_null,
        description="The largest 99th-percentile latency tolerated, in ms.",
    )
    max_drift_psi: DriftPsi | None = Field(
        default=None,
        json_schema_extra=_not_null,
        description="The largest population stability index of the inputs tolerated.",
    )

    @model_validator(mode="after")
    def _checks_something(self) -> Canary:
        if (self.max_error_rate, self.max_latency_p99_ms, self.max_drift_psi) == (None,) * 3:
            raise _error(
                "canary",
                "a canary needs at least one limit: set max_error_rate, max_latency_p99_ms "
                "or max_drift_psi",
            )
        return self


#: What a deploy step records for the steps after it (hub_ext/runtime/deploy_step.py
#: records them; its ``OUTPUTS`` is a copy a test keeps equal): ``decision`` is
#: ``passed`` or ``refused``; ``metric``, ``candidate`` and ``production`` the gate's
#: figures (null without a gate, ``production`` null with nothing in production);
#: ``version`` the new version (null when refused); ``canary_state`` and
#: ``canary_reason`` the deployer's verdict on the canary (null without one).
DEPLOY_OUTPUTS: dict[str, OutputType] = {
    "decision": OutputType.string,
    "reason": OutputType.string,
    "metric": OutputType.json,
    "candidate": OutputType.json,
    "production": OutputType.json,
    "version": OutputType.json,
    "canary_state": OutputType.json,
    "canary_reason": OutputType.json,
}
#: A deploy step's run may take this long, plus its canary's window.
DEPLOY_TIMEOUT_SECONDS = 1800


class DeployStep(BaseModel):
    """A step that deploys a model a step before it made, behind a gate and a canary.

    It runs as a run of Shipyard's built-in deploy notebook, as the pipeline's owner
    (:mod:`hub_ext.runtime.deploy_step`), and records :data:`DEPLOY_OUTPUTS`.
    """

    type: Literal["deploy"] = Field(description="A deploy step: say it, it is not the default.")
    model: Reference = Field(
        description="The model to deploy: an output or file of a step that runs before, "
        "e.g. steps.train.outputs.model_uri."
    )
    name: OwnDeploymentName = Field(
        description="The deployment's name: one of yours, without an owner (e.g. churn-model)."
    )
    profile: ProfileSlug | None = Field(default=None, description=_STEP_DOCS["profile"])
    needs: Annotated[list[StepId], _unique("needs")] = Field(
        default_factory=list, description=_STEP_DOCS["needs"]
    )
    run_if: RunIf = Field(default=RunIf.all_succeeded, description=_STEP_DOCS["run_if"])
    gate: Gate | None = Field(
        default=None, description="Deploy only if the model beats the deployed one."
    )
    canary: Canary | None = Field(
        default=None, description="Roll out to part of the traffic first, with limits."
    )

    @property
    def outputs(self) -> dict[str, OutputType]:
        """The values every deploy step records (:data:`DEPLOY_OUTPUTS`)."""
        return dict(DEPLOY_OUTPUTS)

    @property
    def files(self) -> dict[str, str]:
        """A deploy step writes no files for later steps."""
        return {}

    @property
    def timeout(self) -> int:
        """How long its run may take: :data:`DEPLOY_TIMEOUT_SECONDS` plus the canary's window."""
        return DEPLOY_TIMEOUT_SECONDS + (self.canary.window if self.canary else 0)


def _step_type(value: Any) -> str:
    if isinstance(value, dict):
        return "deploy" if value.get("type") == "deploy" else "notebook"
    return str(getattr(value, "type", "notebook"))


Step = Annotated[
    Annotated[NotebookStep, Tag("notebook")] | Annotated[DeployStep, Tag("deploy")],
    Discriminator(_step_type),
]


class Pipeline(BaseModel):
    """A pipeline: notebook steps and the order they run in (``pipeline.yaml``)."""

    model_config = ConfigDict(
        title="Shipyard pipeline",
        json_schema_extra={"$comment": "Generated from pipelines/spec.py; do not edit."},
    )

    name: PipelineName = Field(description="The pipeline's name, unique for its owner.")
    description: Annotated[str, Field(max_length=MAX_DESCRIPTION)] = Field(
        default="", description="What the pipeline is for, in a sentence or a paragraph."
    )
    profile: ProfileSlug | None = Field(
        default=None, description="The profile of the steps that name none."
    )
    parameters: Parameters = Field(
        default_factory=dict,
        description="Defaults for every notebook step's parameters (a step's own win).",
    )
    triggers: Annotated[list[PipelineTrigger], AfterValidator(check_triggers)] = Field(
        default_factory=list, description="What starts a run besides a manual start."
    )
    paused: StrictBool = Field(
        default=False, description="When true, triggers do not start runs (manual runs do)."
    )
    steps: Annotated[
        dict[StepId, Step],
        Field(
            min_length=1,
            max_length=MAX_STEPS,
            json_schema_extra={
                "propertyNames": {"pattern": SLUG_PATTERN, "minLength": 1, "maxLength": 63}
            },
        ),
    ] = Field(
        description="The steps by id, in the order they are listed (which breaks ties in "
        "the run order)."
    )

    def profile_of(self, step_id: str) -> str | None:
        """Return the profile step ``step_id`` runs with: its own, else the pipeline's."""
        return self.steps[step_id].profile or self.profile

    def parameters_of(self, step_id: str) -> dict[str, Any]:
        """Return the parameters notebook step ``step_id`` is given before its inputs.

        The pipeline's parameters, overridden by the step's own of the same name (a
        shallow merge: a step's dict replaces the pipeline's whole). A deploy step has
        none.
        """
        step = self.steps[step_id]
        if not isinstance(step, NotebookStep):
            return {}
        return {**copy.deepcopy(self.parameters), **copy.deepcopy(step.parameters)}
