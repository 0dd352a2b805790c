"""The scheduler's API models (pydantic v2), named by verb: what clients send and receive.

These are the REST schema (STYLE rule 11, 18): handlers parse a body into one
of them, the store takes and returns them, and the OpenAPI document is
generated from them. The SQLAlchemy tables in :mod:`.orm` never import this
module; :mod:`.store` converts between the two in one place.

Validation happens here, once, with messages that say what to fix:

- Job names are slugs (``^[a-z0-9]([-a-z0-9]*[a-z0-9])?$``, at most 63
  characters) because they end up in paths and Kubernetes object names
  (SECURITY rule 10).
- Parameters are data (SECURITY rule 4): names must be Python identifiers and
  not keywords, values JSON scalars, lists and objects. Papermill renders them
  as literals; a name such as ``os.system('x')`` is refused here, not escaped
  later.
- Cron expressions are standard five-field cron (or ``@hourly`` and friends)
  checked with croniter, and must fire at least once; time zones are IANA
  names checked with :mod:`zoneinfo`. Six-field croniter expressions (with
  seconds) are refused: minute resolution is what cron users expect and what
  the scheduler's tick arithmetic assumes.
- Timeouts are finite (1 s to 24 h, SECURITY rule 6); retries 0 to 10.
- File globs and the informational source path are relative and never
  contain ``..`` (SECURITY rule 1): they are resolved in the owner's home by
  the one path resolver, never here.
- Notification e-mail addresses are plausible ``local@domain`` addresses
  without spaces, commas or angle brackets (nothing that could add a header
  or a second recipient); webhook URLs are http(s) with a host and never
  carry ``user:password@`` (SECURITY rule 8: secrets stay out of URLs, which
  end up in job descriptions and logs).

Unknown fields are errors on input models, so a typo (``timout_seconds``)
does not silently keep the default.
"""

from __future__ import annotations

import json
import keyword
import math
import re
from datetime import datetime, timezone
from enum import Enum
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterBadDateError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from ..common.secrets import SecretNames

SLUG_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_SLUG = re.compile(SLUG_PATTERN)
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_GROUP = re.compile(r"^[\w.@+-]{1,255}$")
#: ``@reboot`` is refused: a service restart is not an event users schedule on.
CRON_ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
#: nbconvert exporters a run may also write; ``ipynb`` is always written.
OUTPUT_FORMATS = ("ipynb", "html", "pdf", "webpdf", "markdown", "script", "latex", "rst")
MAX_PARAMETERS_BYTES = 64 * 1024
MAX_PARAMETER_DEPTH = 32
MAX_TRIGGERS = 20
MAX_TIMEOUT_SECONDS = 86_400
MAX_RETRIES = 10
MAX_KEEP_RUNS = 10_000
MAX_KEEP_DAYS = 3650
MAX_NOTIFY_EMAILS = 10
MAX_WEBHOOK_URL = 2048
#: A plausible address, not RFC 5322: no spaces, commas, quotes or brackets in
#: the local part, and a dotted domain of letters, digits and dashes.
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}"
    r"@(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
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
    """Where a run is in its life."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    timed_out = "timed_out"
    #: Its worker stopped sending heartbeats (crashed, or the machine went away).
    orphaned = "orphaned"
    #: A tick deliberately not run; ``reason`` says why.
    skipped = "skipped"


class NotificationEvent(str, Enum):
    """How the run a notification is about ended."""

    succeeded = "succeeded"
    failed = "failed"
    timed_out = "timed_out"
    orphaned = "orphaned"
    cancelled = "cancelled"


def _error(kind: str, message: str, **context: Any) -> PydanticCustomError:
    # Formatted here, with Python's format spec (``!r``), and passed without a
    # context: pydantic would otherwise re-read braces in user input as fields.
    return PydanticCustomError(kind, message.format(**context))


def _check_slug(value: str, what: str) -> str:
    if not value or len(value) > 63 or not _SLUG.fullmatch(value):
        raise _error(
            "slug",
            "{what} {value!r} is not a valid name: use 1 to 63 lowercase letters, digits "
            "and dashes, starting and ending with a letter or digit (e.g. 'daily-report')",
            what=what,
            value=value,
        )
    return value


def _check_job_name(value: str) -> str:
    return _check_slug(value, "job name")


def _check_profile(value: str) -> str:
    return _check_slug(value, "profile")


def _check_job_id(value: str) -> str:
    if not _HEX32.fullmatch(value):
        raise _error("job_id", "{value!r} is not a job id (32 lowercase hex digits)", value=value)
    return value


def _check_relative_path(value: str, what: str) -> str:
    if not value or len(value) > 4096 or "\x00" in value:
        raise _error("path", "{what} must be 1 to 4096 characters without NUL", what=what)
    path = PurePosixPath(value)
    if path.is_absolute() or value.startswith("~") or ".." in path.parts:
        raise _error(
            "path",
            "{what} {value!r} must be relative to your home directory and must not contain "
            "'..' (e.g. 'data/*.csv')",
            what=what,
            value=value,
        )
    return value


def _check_glob(value: str) -> str:
    return _check_relative_path(value, "file glob")


def _check_source_path(value: str) -> str:
    return _check_relative_path(value, "source path")


def _check_parameter_value(value: Any, where: str, depth: int) -> None:
    if depth > MAX_PARAMETER_DEPTH:
        raise _error(
            "parameter_value",
            "parameter {where} nests deeper than {depth} levels",
            where=where,
            depth=MAX_PARAMETER_DEPTH,
        )
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _error(
                "parameter_value",
                "parameter {where} is {value}: JSON has no NaN or infinity",
                where=where,
                value=value,
            )
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_parameter_value(item, f"{where}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _error(
                    "parameter_value",
                    "parameter {where} has a non-string key {key!r}: JSON object keys are strings",
                    where=where,
                    key=key,
                )
            _check_parameter_value(item, f"{where}[{key!r}]", depth + 1)
        return
    raise _error(
        "parameter_value",
        "parameter {where} is a {type}: values must be JSON (string, number, boolean, null, "
        "list or object)",
        where=where,
        type=type(value).__name__,
    )


def _check_parameters(value: dict[str, Any]) -> dict[str, Any]:
    for name, item in value.items():
        if not name.isidentifier() or keyword.iskeyword(name) or len(name) > 100:
            raise _error(
                "parameter_name",
                "parameter name {name!r} is not a Python identifier: use letters, digits and "
                "underscores, not starting with a digit and not a keyword (e.g. 'learning_rate')",
                name=name,
            )
        _check_parameter_value(item, name, 1)
    if len(json.dumps(value)) > MAX_PARAMETERS_BYTES:
        raise _error(
            "parameters_size",
            "parameters are larger than {limit} bytes as JSON: pass a path to a data file instead",
            limit=MAX_PARAMETERS_BYTES,
        )
    return value


def _check_cron(value: str) -> str:
    expression = " ".join(value.split())
    fields = expression.split(" ")
    if expression.startswith("@"):
        if expression not in CRON_ALIASES:
            raise _error(
                "cron",
                "cron expression {value!r} is not valid: the @ forms are {aliases}",
                value=value,
                aliases=", ".join(CRON_ALIASES),
            )
        return expression
    if len(fields) != 5:
        raise _error(
            "cron",
            "cron expression {value!r} has {n} fields, not 5: use 'minute hour day-of-month "
            "month day-of-week' (e.g. '30 6 * * 1-5' for 06:30 on weekdays)",
            value=value,
            n=len(fields),
        )
    try:
        croniter(expression)
    except (ValueError, KeyError) as e:  # croniter's CroniterBadCronError is a ValueError
        raise _error(
            "cron", "cron expression {value!r} is not valid: {detail}", value=value, detail=str(e)
        ) from None
    return expression


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise _error(
            "timezone",
            "unknown time zone {value!r}: use an IANA name such as 'Europe/Paris' or 'UTC'",
            value=value,
        ) from None
    return value


def _check_groups(value: list[str]) -> list[str]:
    for group in value:
        if not _GROUP.fullmatch(group):
            raise _error(
                "group",
                "{group!r} is not a hub group name (letters, digits and . @ + - _)",
                group=group,
            )
    return sorted(set(value))


def _check_output_formats(value: list[str]) -> list[str]:
    for fmt in value:
        if fmt not in OUTPUT_FORMATS:
            raise _error(
                "output_format",
                "unknown output format {fmt!r}: choose from {choices}",
                fmt=fmt,
                choices=", ".join(OUTPUT_FORMATS),
            )
    # ipynb is always written: it is the run's record, the other formats are views of it.
    return ["ipynb"] + sorted(set(value) - {"ipynb"})


def _check_emails(value: list[str]) -> list[str]:
    if len(value) > MAX_NOTIFY_EMAILS:
        raise _error(
            "emails",
            "notify.emails lists {n} addresses; at most {limit} are allowed (use a mailing list)",
            n=len(value),
            limit=MAX_NOTIFY_EMAILS,
        )
    for address in value:
        if not _EMAIL.fullmatch(address):
            raise _error(
                "email",
                "{address!r} is not an e-mail address: use one address of the form "
                "local@domain, without spaces, commas or a display name "
                "(e.g. 'alice@example.org')",
                address=address,
            )
    return list(dict.fromkeys(value))  # the same address twice gets one mail


def _check_webhook_url(value: str) -> str:
    example = "e.g. 'https://hooks.example.org/shipyard'"
    if len(value) > MAX_WEBHOOK_URL:
        raise _error(
            "webhook_url",
            "notify.webhook_url is longer than {limit} characters",
            limit=MAX_WEBHOOK_URL,
        )
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise _error(
            "webhook_url",
            "notify.webhook_url must not contain spaces or control characters ({example})",
            example=example,
        )
    try:
        url = urlsplit(value)
        url.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        url = None
    # The URL is never echoed: it may hold a credential, malformed or not.
    if url is None or url.scheme not in ("http", "https") or not url.hostname:
        raise _error(
            "webhook_url",
            "notify.webhook_url is not an http or https URL with a host ({example})",
            example=example,
        )
    if "@" in url.netloc:
        raise _error(
            "webhook_url",
            "notify.webhook_url must not contain a user name or password (user:password@host): "
            "secrets stay out of URLs, which are shown in the job and logged; remove that part "
            "and have the receiving endpoint accept the scheduler's requests without it",
        )
    return value


def _bounded(low: int, high: int, what: str, why: str = "") -> AfterValidator:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise _error(
                "range",
                "{what} must be between {low} and {high}, not {value}{why}",
                what=what,
                low=low,
                high=high,
                value=value,
                why=why,
            )
        return value

    return AfterValidator(check)


JobName = Annotated[str, AfterValidator(_check_job_name), Field(max_length=63)]
ProfileSlug = Annotated[str, AfterValidator(_check_profile), Field(max_length=63)]
JobId = Annotated[str, AfterValidator(_check_job_id)]
Parameters = Annotated[dict[str, Any], AfterValidator(_check_parameters)]
CronExpression = Annotated[str, AfterValidator(_check_cron)]
TimeZoneName = Annotated[str, AfterValidator(_check_timezone)]
Glob = Annotated[str, AfterValidator(_check_glob)]
SourcePath = Annotated[str, AfterValidator(_check_source_path)]
Groups = Annotated[list[str], AfterValidator(_check_groups), Field(max_length=50)]
OutputFormats = Annotated[list[str], AfterValidator(_check_output_formats)]
TimeoutSeconds = Annotated[
    int,
    _bounded(1, MAX_TIMEOUT_SECONDS, "timeout_seconds", ": every run needs a finite timeout"),
    Field(json_schema_extra={"minimum": 1, "maximum": MAX_TIMEOUT_SECONDS}),
]
RetryAttempts = Annotated[
    int,
    _bounded(0, MAX_RETRIES, "retry_attempts"),
    Field(json_schema_extra={"minimum": 0, "maximum": MAX_RETRIES}),
]
BackoffSeconds = Annotated[
    int,
    _bounded(0, MAX_TIMEOUT_SECONDS, "retry_backoff_seconds"),
    Field(json_schema_extra={"minimum": 0, "maximum": MAX_TIMEOUT_SECONDS}),
]
KeepRuns = Annotated[
    int,
    _bounded(
        1, MAX_KEEP_RUNS, "keep_runs", " (leave it out, or null, to keep every run's outputs)"
    ),
    Field(json_schema_extra={"minimum": 1, "maximum": MAX_KEEP_RUNS}),
]
KeepDays = Annotated[
    int,
    _bounded(1, MAX_KEEP_DAYS, "keep_days", " (leave it out, or null, to keep outputs of any age)"),
    Field(json_schema_extra={"minimum": 1, "maximum": MAX_KEEP_DAYS}),
]
Emails = Annotated[
    list[str],
    AfterValidator(_check_emails),
    Field(json_schema_extra={"maxItems": MAX_NOTIFY_EMAILS}),
]
WebhookUrl = Annotated[
    str,
    AfterValidator(_check_webhook_url),
    Field(json_schema_extra={"maxLength": MAX_WEBHOOK_URL, "format": "uri"}),
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
        start = datetime.now(timezone.utc).astimezone(ZoneInfo(self.timezone))
        try:
            croniter(self.expression, start).get_next(datetime)
        except CroniterBadDateError:
            raise _error(
                "cron",
                "cron expression {value!r} never fires (e.g. the 30th of February)",
                value=self.expression,
            ) from None
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


def _check_triggers(value: list[Any]) -> list[Any]:
    if len(value) > MAX_TRIGGERS:
        raise _error("triggers", "a job has at most {n} triggers", n=MAX_TRIGGERS)
    if sum(t.kind == "webhook" for t in value) > 1:
        raise _error("triggers", "a job has at most one webhook trigger (one secret per job)")
    dumped = [t.model_dump_json() for t in value]
    if len(set(dumped)) != len(dumped):
        raise _error("triggers", "the same trigger is listed twice")
    return value


Triggers = Annotated[list[Trigger], AfterValidator(_check_triggers)]


class NotifyPolicy(_Input):
    """Whom the scheduler tells when a run of the job ends, and about which endings."""

    #: Tell about runs that ``failed``, ``timed_out`` or were ``orphaned``.
    on_failure: bool = True
    #: Tell about runs that ``succeeded``.
    on_success: bool = False
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
    paused: bool = False
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

    name: JobName | None = None
    profile: ProfileSlug | None = None
    source_path: SourcePath | None = None
    parameters: Parameters | None = None
    timeout_seconds: TimeoutSeconds | None = None
    retry_attempts: RetryAttempts | None = None
    retry_backoff_seconds: BackoffSeconds | None = None
    concurrency_policy: ConcurrencyPolicy | None = None
    missed_run_policy: MissedRunPolicy | None = None
    output_formats: OutputFormats | None = None
    shared_with_groups: Groups | None = None
    paused: bool | None = None
    triggers: Triggers | None = None
    notify: NotifyPolicy | None = None
    keep_runs: KeepRuns | None = Field(default=None, description=RETENTION_DOC)
    keep_days: KeepDays | None = Field(default=None, description=RETENTION_DOC)
    secrets: SecretNames | None = Field(default=None, description=SECRETS_DOC)
    expected_version: int | None = None

    @model_validator(mode="after")
    def _no_null_for_required(self) -> UpdateJob:
        nulls = sorted(
            name
            for name in self.model_fields_set - NULLABLE_UPDATE_FIELDS
            if getattr(self, name) is None
        )
        if nulls:
            raise _error(
                "null",
                "{fields} cannot be null: leave a field out to keep its value",
                fields=", ".join(nulls),
            )
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


class ListJobsQuery(_Input):
    """Which jobs to list: the caller's own, plus those shared with their groups."""

    #: Only this owner's jobs (admins see anyone's; others see what is shared).
    owner: str | None = None
    name_prefix: str | None = Field(default=None, max_length=63)
    paused: bool | None = None
    include_shared: bool = True
    limit: int = Field(default=50, ge=1, le=200)
    next_token: str | None = Field(default=None, max_length=1024)


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


class ListRunsQuery(_Input):
    """Which runs to list, newest first."""

    job_id: JobId | None = None
    status: RunStatus | None = None
    limit: int = Field(default=50, ge=1, le=500)
    next_token: str | None = Field(default=None, max_length=1024)


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
