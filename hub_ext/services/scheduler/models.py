"""The scheduler's API models (pydantic v2), named by verb: what clients send and receive.

These are the REST schema (STYLE rule 11, 18): handlers parse a body into one
of them, the store takes and returns them, and the OpenAPI document is
generated from them. The SQLAlchemy tables in :mod:`.orm` never import this
module; :mod:`.store` converts between the two in one place.

The rules the fields check (names, parameters, cron and time zones, paths, the
notify policy, bounds) live in :mod:`.validation`, each once; here each field type
(:data:`JobName`, :data:`Parameters`, ...) attaches its rule and says it in its JSON
schema too.

Unknown fields are errors on input models, so a typo (``timout_seconds``)
does not silently keep the default. Numbers and booleans are strict: ``"60"``
is not a number and ``1`` is not ``true`` (a number written ``60.0`` is 60, as
JSON Schema reads it). Query strings, which are all text, have their own
types (:data:`QueryBool`, :data:`QueryInt`): a boolean is ``true`` or
``false``, nothing else.

Every rule that a JSON schema can say is in the model's schema too (a
``pattern``, a bound, an ``enum``), built from the same constant the check
uses, so the OpenAPI document says what the service does (issue #14, point 5);
the rules it cannot say (a cron grammar, whether a time fires, the notebook's
declared parameters) are listed with their reasons in tests/test_api_contract.py.
"""

from __future__ import annotations

import keyword
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    model_validator,
)

from ..common.secrets import SecretNames
from .validation import (
    EMAIL_PATTERN,
    GLOB_PATTERN,
    GROUP_PATTERN,
    ID_PATTERN,
    MAX_EMAIL,
    MAX_KEEP_DAYS,
    MAX_KEEP_RUNS,
    MAX_NOTIFY_EMAILS,
    MAX_PARAMETER_DEPTH,
    MAX_PARAMETERS_BYTES,
    MAX_PATH,
    MAX_RETRIES,
    MAX_TIMEOUT_SECONDS,
    MAX_WEBHOOK_URL,
    OUTPUT_FORMATS,
    PARAMETER_NAME_PATTERN,
    SLUG_PATTERN,
    SOURCE_PATH_PATTERN,
    TIME_ZONES,
    WEBHOOK_URL_PATTERN,
    bounded,
    check_cron,
    check_emails,
    check_fires,
    check_glob,
    check_groups,
    check_job_id,
    check_job_name,
    check_no_nulls,
    check_output_formats,
    check_parameters,
    check_profile,
    check_source_path,
    check_timezone,
    check_triggers,
    check_webhook_url,
    integral,
    query_bool,
    query_int,
)


class ConcurrencyPolicy(str, Enum):
    """What a new run does while another run of the job is queued or running."""

    #: Start it anyway.
    allow = "allow"
    #: Do not start it: a tick is recorded as ``skipped``, a manual run is refused.
    forbid = "forbid"
    #: Cancel the older run and start the new one.
    replace = "replace"


class MissedRunPolicy(str, Enum):
    """What happens to cron ticks that passed while no scheduler was running."""

    #: Drop them; the job next runs at its next future tick.
    skip = "skip"
    #: Run once, for the latest missed tick.
    run_once = "run_once"


class RunStatus(str, Enum):
    """Where a run is in its life: the API's run status, and what an executor reports.

    Defined once, here, for both: :class:`DescribeRun` and :class:`ListRunsQuery` take
    every value, and an executor's :class:`~.executors.base.RunReport` one of the four
    ends it can see (``SUCCEEDED``, ``FAILED``, ``TIMED_OUT``, ``CANCELLED``); the service
    sets the others. The JSON values are the names in lower case.
    """

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    #: Its worker stopped sending heartbeats (crashed, or the machine went away).
    ORPHANED = "orphaned"
    #: A tick deliberately not run; ``reason`` says why.
    SKIPPED = "skipped"


class NotificationEvent(str, Enum):
    """How the run a notification is about ended."""

    succeeded = "succeeded"
    failed = "failed"
    timed_out = "timed_out"
    orphaned = "orphaned"
    cancelled = "cancelled"


#: A whole number in a JSON body: never a string ("60") or a boolean (true).
Whole = Annotated[StrictInt, BeforeValidator(integral)]


#: A boolean in a query string: ``true`` or ``false`` (what OpenAPI clients write), nothing
#: else; ``-1``, ``yes`` or ``1`` are refused rather than read as one or the other.
QueryBool = Annotated[bool, BeforeValidator(query_bool)]
#: A whole number in a query string, in digits.
QueryInt = Annotated[int, BeforeValidator(query_int)]


def _not_null(schema: dict[str, Any]) -> None:
    # An optional field that may not be sent as null: drop null from its schema
    # (pydantic writes ``X | None = None`` as anyOf [X, null] with default null).
    options = [o for o in schema.pop("anyOf", []) if o.get("type") != "null"]
    if len(options) == 1:
        schema.update(options[0])
    elif options:
        schema["anyOf"] = options
    schema.pop("default", None)


#: A field that may be left out but never sent as ``null`` (a PATCH keeps what is left out).
NOT_NULL = Field(default=None, json_schema_extra=_not_null)

JobName = Annotated[
    str,
    AfterValidator(check_job_name),
    Field(json_schema_extra={"pattern": SLUG_PATTERN, "minLength": 1, "maxLength": 63}),
]
ProfileSlug = Annotated[
    str,
    AfterValidator(check_profile),
    Field(json_schema_extra={"pattern": SLUG_PATTERN, "minLength": 1, "maxLength": 63}),
]
JobId = Annotated[
    str, AfterValidator(check_job_id), Field(json_schema_extra={"pattern": ID_PATTERN})
]
Parameters = Annotated[
    dict[str, Any],
    AfterValidator(check_parameters),
    Field(
        json_schema_extra={
            "propertyNames": {
                "pattern": PARAMETER_NAME_PATTERN,
                "not": {"enum": list(keyword.kwlist)},
            },
            "description": "Values for the notebook's parameters cell, by name: JSON values, "
            f"at most {MAX_PARAMETER_DEPTH} levels deep and {MAX_PARAMETERS_BYTES} bytes in all.",
        }
    ),
]
CronExpression = Annotated[
    str, AfterValidator(check_cron), Field(json_schema_extra={"minLength": 1, "maxLength": 255})
]
TimeZoneName = Annotated[
    str, AfterValidator(check_timezone), Field(json_schema_extra={"enum": list(TIME_ZONES)})
]
Glob = Annotated[
    str,
    AfterValidator(check_glob),
    Field(json_schema_extra={"pattern": GLOB_PATTERN, "minLength": 1, "maxLength": MAX_PATH}),
]
SourcePath = Annotated[
    str,
    AfterValidator(check_source_path),
    Field(
        json_schema_extra={"pattern": SOURCE_PATH_PATTERN, "minLength": 1, "maxLength": MAX_PATH}
    ),
]
Groups = Annotated[
    list[str],
    AfterValidator(check_groups),
    Field(max_length=50, json_schema_extra={"items": {"type": "string", "pattern": GROUP_PATTERN}}),
]
OutputFormats = Annotated[
    list[str],
    AfterValidator(check_output_formats),
    Field(json_schema_extra={"items": {"type": "string", "enum": list(OUTPUT_FORMATS)}}),
]
TimeoutSeconds = Annotated[
    Whole,
    bounded(1, MAX_TIMEOUT_SECONDS, "timeout_seconds", ": every run needs a finite timeout"),
    Field(json_schema_extra={"minimum": 1, "maximum": MAX_TIMEOUT_SECONDS}),
]
RetryAttempts = Annotated[
    Whole,
    bounded(0, MAX_RETRIES, "retry_attempts"),
    Field(json_schema_extra={"minimum": 0, "maximum": MAX_RETRIES}),
]
BackoffSeconds = Annotated[
    Whole,
    bounded(0, MAX_TIMEOUT_SECONDS, "retry_backoff_seconds"),
    Field(json_schema_extra={"minimum": 0, "maximum": MAX_TIMEOUT_SECONDS}),
]
KeepRuns = Annotated[
    Whole,
    bounded(1, MAX_KEEP_RUNS, "keep_runs", " (leave it out, or null, to keep every run's outputs)"),
    Field(json_schema_extra={"minimum": 1, "maximum": MAX_KEEP_RUNS}),
]
KeepDays = Annotated[
    Whole,
    bounded(1, MAX_KEEP_DAYS, "keep_days", " (leave it out, or null, to keep outputs of any age)"),
    Field(json_schema_extra={"minimum": 1, "maximum": MAX_KEEP_DAYS}),
]
Emails = Annotated[
    list[str],
    AfterValidator(check_emails),
    Field(
        json_schema_extra={
            "maxItems": MAX_NOTIFY_EMAILS,
            "items": {"type": "string", "pattern": EMAIL_PATTERN, "maxLength": MAX_EMAIL},
        }
    ),
]
WebhookUrl = Annotated[
    str,
    AfterValidator(check_webhook_url),
    Field(
        json_schema_extra={
            "maxLength": MAX_WEBHOOK_URL,
            "format": "uri",
            "pattern": WEBHOOK_URL_PATTERN,
            "description": "An http(s) URL whose host resolves to public addresses only "
            "(unless the admin allows private ones); checked when the job is saved and "
            "again, with the same resolution as the request, when it is called.",
        }
    ),
]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CronTrigger(_Input):
    """Run at the times of a cron expression, read in an IANA time zone (DST-aware)."""

    kind: Literal["cron"] = "cron"
    expression: CronExpression
    timezone: TimeZoneName = "UTC"

    @model_validator(mode="after")
    def _fires(self) -> CronTrigger:
        check_fires(self.expression, self.timezone)
        return self


class FileTrigger(_Input):
    """Run when a file matching a glob (relative to the owner's home) appears or changes."""

    kind: Literal["file"] = "file"
    glob: Glob


class WebhookTrigger(_Input):
    """Run when the job's webhook is called with its secret.

    The secret is made by the service and shown once, in the response of the
    create or update that added the trigger (``DescribeJob.webhook_secret``);
    only its SHA-256 is stored.
    """

    kind: Literal["webhook"] = "webhook"


class AfterJobTrigger(_Input):
    """Run after a run of another job (one the owner can see) succeeds."""

    kind: Literal["after_job"] = "after_job"
    upstream_job_id: JobId


Trigger = Annotated[
    CronTrigger | FileTrigger | WebhookTrigger | AfterJobTrigger, Field(discriminator="kind")
]


Triggers = Annotated[list[Trigger], AfterValidator(check_triggers)]


class NotifyPolicy(_Input):
    """Whom the scheduler tells when a run of the job ends, and about which endings."""

    #: Tell about runs that ``failed``, ``timed_out`` or were ``orphaned``.
    on_failure: StrictBool = True
    #: Tell about runs that ``succeeded``.
    on_success: StrictBool = False
    #: Up to 10 addresses to mail.
    emails: Emails = Field(default_factory=list)
    #: An http(s) URL to POST a JSON description of the ended run to.
    webhook_url: WebhookUrl | None = None


#: Doc shared by the retention fields of CreateJob, UpdateJob and DescribeJob.
RETENTION_DOC = (
    "Retention of outputs: a finished run's outputs (notebook, exports, log) are deleted when "
    "it is not among the job's newest ``keep_runs`` finished runs that still have outputs, or "
    "it ended more than ``keep_days`` days ago. Run records themselves are kept (history), "
    "with ``outputs_deleted_at`` set. None keeps everything."
)


#: Doc shared by the ``secrets`` fields of CreateJob, UpdateJob and DescribeJob.
SECRETS_DOC = (
    "Names of the owner's secrets (the secrets service) the runs get as environment "
    "variables; names only, never values. Only the owner may set them: a group the job is "
    "shared with sees the names, never the values. A run fails, naming it, when a secret "
    "is missing."
)


class CreateJob(_Input):
    """A new job; the notebook's bytes travel beside it (a multipart upload or a path).

    ``keep_runs`` and ``keep_days`` set the retention of outputs
    (:data:`RETENTION_DOC`); None, the default, keeps everything.
    """

    name: JobName
    profile: ProfileSlug
    source_path: SourcePath | None = None
    parameters: Parameters = Field(default_factory=dict)
    timeout_seconds: TimeoutSeconds = 3600
    retry_attempts: RetryAttempts = 0
    retry_backoff_seconds: BackoffSeconds = 60
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.forbid
    missed_run_policy: MissedRunPolicy = MissedRunPolicy.run_once
    output_formats: OutputFormats = Field(default_factory=lambda: ["ipynb"])
    shared_with_groups: Groups = Field(default_factory=list)
    paused: StrictBool = False
    triggers: Triggers = Field(default_factory=list)
    notify: NotifyPolicy = Field(default_factory=NotifyPolicy)
    keep_runs: KeepRuns | None = Field(default=None, description=RETENTION_DOC)
    keep_days: KeepDays | None = Field(default=None, description=RETENTION_DOC)
    secrets: SecretNames = Field(default_factory=list, description=SECRETS_DOC)


#: Fields of :class:`UpdateJob` that may be sent as ``null`` (to clear them).
NULLABLE_UPDATE_FIELDS = frozenset({"source_path", "expected_version", "keep_runs", "keep_days"})


class UpdateJob(_Input):
    """A change to a job: only the fields sent change; ``triggers`` replaces the whole list.

    Send ``expected_version`` (the ``version`` you read) to refuse the update
    with 409 when someone changed the job since. ``notify`` replaces the whole
    policy; ``keep_runs`` and ``keep_days`` sent as ``null`` keep everything
    again.
    """

    name: JobName | None = NOT_NULL
    profile: ProfileSlug | None = NOT_NULL
    source_path: SourcePath | None = None
    parameters: Parameters | None = NOT_NULL
    timeout_seconds: TimeoutSeconds | None = NOT_NULL
    retry_attempts: RetryAttempts | None = NOT_NULL
    retry_backoff_seconds: BackoffSeconds | None = NOT_NULL
    concurrency_policy: ConcurrencyPolicy | None = NOT_NULL
    missed_run_policy: MissedRunPolicy | None = NOT_NULL
    output_formats: OutputFormats | None = NOT_NULL
    shared_with_groups: Groups | None = NOT_NULL
    paused: StrictBool | None = NOT_NULL
    triggers: Triggers | None = NOT_NULL
    notify: NotifyPolicy | None = NOT_NULL
    keep_runs: KeepRuns | None = Field(default=None, description=RETENTION_DOC)
    keep_days: KeepDays | None = Field(default=None, description=RETENTION_DOC)
    secrets: SecretNames | None = Field(
        default=None, description=SECRETS_DOC, json_schema_extra=_not_null
    )
    expected_version: Whole | None = None

    @model_validator(mode="after")
    def _no_null_for_required(self) -> UpdateJob:
        check_no_nulls(self, NULLABLE_UPDATE_FIELDS)
        return self

    def changes(self) -> dict[str, Any]:
        """Return the fields sent, as they would be stored, without ``expected_version``."""
        return {
            name: getattr(self, name)
            for name in sorted(self.model_fields_set - {"expected_version"})
        }


class DescribeTrigger(BaseModel):
    """A job's trigger as stored, with its schedule state."""

    id: str
    trigger: Trigger
    next_fire_at: datetime | None = None
    last_fired_at: datetime | None = None


class DescribeJob(BaseModel):
    """A job as a caller sees it."""

    id: str
    owner: str
    name: str
    notebook_digest: str
    source_path: str | None
    parameters: dict[str, Any]
    profile: str
    timeout_seconds: int
    retry_attempts: int
    retry_backoff_seconds: int
    concurrency_policy: ConcurrencyPolicy
    missed_run_policy: MissedRunPolicy
    output_formats: list[str]
    shared_with_groups: list[str]
    paused: bool
    created_at: datetime
    updated_at: datetime
    version: int
    triggers: list[DescribeTrigger]
    notify: NotifyPolicy
    keep_runs: int | None = Field(description=RETENTION_DOC)
    keep_days: int | None = Field(description=RETENTION_DOC)
    secrets: list[str] = Field(default_factory=list, description=SECRETS_DOC)
    #: True when the caller sees the job through a group share (no edits).
    read_only: bool = False
    #: The webhook secret, only in the response of the call that made it; never again.
    webhook_secret: str | None = None


class UpdateJobResponse(BaseModel):
    """The updated job and what the update changed."""

    job: DescribeJob
    #: Names of the fields whose value changed (``notebook_digest`` for a new notebook).
    changed: list[str]
    notebook_changed: bool


#: A page token: opaque, base64url as :func:`.convert.encode_token` writes it.
PageToken = Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z0-9_-]+$")]


class ListJobsQuery(_Input):
    """Which jobs to list: the caller's own, plus those shared with their groups."""

    #: Only this owner's jobs (admins see anyone's; others see what is shared).
    owner: str | None = Field(default=None, max_length=255, json_schema_extra=_not_null)
    name_prefix: str | None = Field(default=None, max_length=63, json_schema_extra=_not_null)
    paused: QueryBool | None = Field(default=None, json_schema_extra=_not_null)
    include_shared: QueryBool = True
    limit: QueryInt = Field(default=50, ge=1, le=200)
    next_token: PageToken | None = Field(default=None, json_schema_extra=_not_null)


class ListJobsResponse(BaseModel):
    """A page of jobs, ordered by owner and name; ``next_token`` fetches the next page."""

    jobs: list[DescribeJob]
    next_token: str | None = None


class CreateRun(_Input):
    """A manual run; ``parameters`` override the job's for this run only."""

    parameters: Parameters = Field(default_factory=dict)


class DescribeRun(BaseModel):
    """One attempt at running a job, with what it ran and where its outputs are."""

    id: str
    job_id: str
    job_version: int
    trigger_id: str | None
    tick: datetime | None
    status: RunStatus
    attempt: int
    retry_of: str | None
    reason: str
    parameters: dict[str, Any]
    notebook_digest: str
    profile: str
    timeout_seconds: int
    queued_at: datetime
    not_before: datetime
    started_at: datetime | None
    ended_at: datetime | None
    claimed_by: str | None
    heartbeat_at: datetime | None
    cancel_requested_at: datetime | None
    output_path: str | None
    log_path: str | None
    env_digest: str | None
    mlflow_run_id: str | None
    #: Code cells executed so far, and in all, as the worker last reported.
    cells_done: int | None
    cells_total: int | None
    #: When retention deleted the outputs (``output_path`` and ``log_path`` are then None).
    outputs_deleted_at: datetime | None
    #: The pipeline run this run is a step of, and the step (None for a job's own runs).
    pipeline_run_id: str | None = None
    step: str | None = None


class ListRunsQuery(_Input):
    """Which runs to list, newest first."""

    job_id: JobId | None = Field(default=None, json_schema_extra=_not_null)
    status: RunStatus | None = Field(default=None, json_schema_extra=_not_null)
    limit: QueryInt = Field(default=50, ge=1, le=500)
    next_token: PageToken | None = Field(default=None, json_schema_extra=_not_null)


class ListRunsResponse(BaseModel):
    """A page of runs, newest first; ``next_token`` fetches the next page."""

    runs: list[DescribeRun]
    next_token: str | None = None


class DescribeNotification(BaseModel):
    """A message to the caller about a run that ended."""

    id: str
    #: The job, or None for a notification about no particular job.
    job_id: str | None
    run_id: str | None
    event: NotificationEvent
    message: str
    created_at: datetime
    #: When the caller marked it read; None while unread.
    read_at: datetime | None


class ListNotificationsResponse(BaseModel):
    """The caller's notifications, newest first."""

    notifications: list[DescribeNotification]


class ListNotificationsQuery(_Input):
    """``?unread=true``: only the notifications not yet marked read."""

    unread: QueryBool = False


class UpcomingQuery(_Input):
    """``?count=``: how many of the next cron times (1 to 50)."""

    count: QueryInt = Field(default=3, ge=1, le=50)


class LogQuery(_Input):
    """``?offset=``: the byte of the log to read from."""

    offset: QueryInt = Field(default=0, ge=0)


class OutputQuery(_Input):
    """``?format=``: the run's output notebook (``ipynb``) or its HTML export (``html``)."""

    format: Literal["ipynb", "html"] = "ipynb"
