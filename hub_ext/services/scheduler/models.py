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

import json
import keyword
import math
import re
import zoneinfo
from datetime import datetime, timezone
from enum import Enum
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterBadDateError
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
from pydantic_core import PydanticCustomError

from ..common.secrets import SecretNames

SLUG_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_SLUG = re.compile(SLUG_PATTERN)
#: Job, run and notification ids: what :func:`.queueing.new_id` makes.
ID_PATTERN = r"^[0-9a-f]{32}$"
_HEX32 = re.compile(ID_PATTERN)
#: Hub group names, in ASCII: a JSON schema's ``\w`` (ECMA) is ASCII, Python's is not.
GROUP_PATTERN = r"^[A-Za-z0-9_.@+-]{1,255}$"
_GROUP = re.compile(GROUP_PATTERN)
#: A relative path of the owner's home, as the one resolver (:mod:`.paths`) reads it: not
#: absolute, not ``~``, no empty, ``..`` or hidden (``.name``) component. Hidden files and
#: folders are refused as jupyter-server's contents API refuses them by default
#: (``allow_hidden``): what a user cannot open in JupyterLab is not scheduled either.
SOURCE_PATH_PATTERN = r"^[^/.~\x00][^/\x00]*(?:/[^/.\x00][^/\x00]*)*$"
_SOURCE_PATH = re.compile(SOURCE_PATH_PATTERN)
#: A file glob: relative, not ``~``, no empty or ``..`` component (hidden ones are fine:
#: a file trigger may watch a dot-folder a tool writes to).
_GLOB_PART = r"(?:[^/.\x00][^/\x00]*|\.|\.[^/.\x00][^/\x00]*|\.\.[^/\x00]+)"
GLOB_PATTERN = (
    r"^(?:[^/.~\x00][^/\x00]*|\.|\.[^/.\x00][^/\x00]*|\.\.[^/\x00]+)"
    + r"(?:/"
    + _GLOB_PART
    + r")*$"
)
_GLOB = re.compile(GLOB_PATTERN)
MAX_PATH = 4096
#: A parameter name: an ASCII Python identifier (not a keyword, checked apart).
PARAMETER_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,99}$"
_PARAMETER_NAME = re.compile(PARAMETER_NAME_PATTERN)
#: The IANA time zones this machine knows (tzdata is a dependency: the same everywhere).
TIME_ZONES = tuple(sorted(zoneinfo.available_timezones()))
_TIME_ZONES = frozenset(TIME_ZONES)
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
#: the local part, and a dotted domain of letters, digits and dashes; at most
#: 254 characters (RFC 5321's path), which keeps the domain under 253.
EMAIL_PATTERN = (
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
_EMAIL = re.compile(EMAIL_PATTERN)
MAX_EMAIL = 254
#: An http(s) URL with a host (a name, an IPv4 address or a bracketed IPv6 one), an
#: optional port up to 65535, no ``user:password@``, no spaces or control characters.
_PORT = r"(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
WEBHOOK_URL_PATTERN = (
    r"^[Hh][Tt][Tt][Pp][Ss]?://"
    r"(?:[^\s/?#@:\[\]\\\x00-\x1f\x7f]+|\[[0-9A-Fa-f:.]{2,45}\])"
    rf"(?::{_PORT})?"
    r"(?:[/?#][^\s\x00-\x1f\x7f]*)?$"
)
_WEBHOOK_URL = re.compile(WEBHOOK_URL_PATTERN)


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


def _check_relative_path(value: str, what: str, pattern: re.Pattern[str], example: str) -> str:
    if not value or len(value) > MAX_PATH or "\x00" in value:
        raise _error("path", "{what} must be 1 to 4096 characters without NUL", what=what)
    path = PurePosixPath(value)
    if path.is_absolute() or value.startswith("~") or ".." in path.parts:
        raise _error(
            "path",
            "{what} {value!r} must be relative to your home directory and must not contain "
            "'..' (e.g. {example!r})",
            what=what,
            value=value,
            example=example,
        )
    if "" in value.split("/"):
        raise _error(
            "path",
            "{what} {value!r} has an empty part ('//' or a '/' at an end)",
            what=what,
            value=value,
        )
    if not pattern.fullmatch(value):
        raise _error(
            "path",
            "{what} {value!r} is in a hidden folder or names a hidden file (a part starting "
            "with '.'): JupyterLab does not show or open those, so the scheduler does not "
            "read them either; move the notebook out of it (e.g. {example!r})",
            what=what,
            value=value,
            example=example,
        )
    return value


def _check_glob(value: str) -> str:
    return _check_relative_path(value, "file glob", _GLOB, "data/*.csv")


def _check_source_path(value: str) -> str:
    return _check_relative_path(value, "source path", _SOURCE_PATH, "reports/daily.ipynb")


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
        if not _PARAMETER_NAME.fullmatch(name) or keyword.iskeyword(name):
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
        if value not in _TIME_ZONES:  # ZoneInfo also opens paths such as 'Europe/../UTC'
            raise ZoneInfoNotFoundError(value)
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
        if len(address) > MAX_EMAIL or not _EMAIL.fullmatch(address):
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
    if not _WEBHOOK_URL.fullmatch(value):
        raise _error(
            "webhook_url",
            "notify.webhook_url is not an http or https URL with a host name or address and "
            "a port up to 65535 ({example})",
            example=example,
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


def _integral(value: Any) -> Any:
    # JSON Schema's "integer" is any number without a fraction: 60.0 is 60. A string,
    # a boolean or 60.5 is left for the strict check to refuse.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: A whole number in a JSON body: never a string ("60") or a boolean (true).
Whole = Annotated[StrictInt, BeforeValidator(_integral)]


def _query_bool(value: Any) -> Any:
    if value in ("true", "false"):
        return value == "true"
    if isinstance(value, bool):
        return value
    raise _error("query_bool", "must be true or false, not {value!r}", value=value)


def _query_int(value: Any) -> Any:
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,9}", value):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _error(
        "query_int", "must be a whole number written in digits, not {value!r}", value=value
    )


#: A boolean in a query string: ``true`` or ``false`` (what OpenAPI clients write), nothing
#: else; ``-1``, ``yes`` or ``1`` are refused rather than read as one or the other.
QueryBool = Annotated[bool, BeforeValidator(_query_bool)]
#: A whole number in a query string, in digits.
QueryInt = Annotated[int, BeforeValidator(_query_int)]


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
    AfterValidator(_check_job_name),
    Field(json_schema_extra={"pattern": SLUG_PATTERN, "minLength": 1, "maxLength": 63}),
]
ProfileSlug = Annotated[
    str,
    AfterValidator(_check_profile),
    Field(json_schema_extra={"pattern": SLUG_PATTERN, "minLength": 1, "maxLength": 63}),
]
JobId = Annotated[
    str, AfterValidator(_check_job_id), Field(json_schema_extra={"pattern": ID_PATTERN})
]
Parameters = Annotated[
    dict[str, Any],
    AfterValidator(_check_parameters),
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
    str, AfterValidator(_check_cron), Field(json_schema_extra={"minLength": 1, "maxLength": 255})
]
TimeZoneName = Annotated[
    str, AfterValidator(_check_timezone), Field(json_schema_extra={"enum": list(TIME_ZONES)})
]
Glob = Annotated[
    str,
    AfterValidator(_check_glob),
    Field(json_schema_extra={"pattern": GLOB_PATTERN, "minLength": 1, "maxLength": MAX_PATH}),
]
SourcePath = Annotated[
    str,
    AfterValidator(_check_source_path),
    Field(
        json_schema_extra={"pattern": SOURCE_PATH_PATTERN, "minLength": 1, "maxLength": MAX_PATH}
    ),
]
Groups = Annotated[
    list[str],
    AfterValidator(_check_groups),
    Field(max_length=50, json_schema_extra={"items": {"type": "string", "pattern": GROUP_PATTERN}}),
]
OutputFormats = Annotated[
    list[str],
    AfterValidator(_check_output_formats),
    Field(json_schema_extra={"items": {"type": "string", "enum": list(OUTPUT_FORMATS)}}),
]
TimeoutSeconds = Annotated[
    Whole,
    _bounded(1, MAX_TIMEOUT_SECONDS, "timeout_seconds", ": every run needs a finite timeout"),
    Field(json_schema_extra={"minimum": 1, "maximum": MAX_TIMEOUT_SECONDS}),
]
RetryAttempts = Annotated[
    Whole,
    _bounded(0, MAX_RETRIES, "retry_attempts"),
    Field(json_schema_extra={"minimum": 0, "maximum": MAX_RETRIES}),
]
BackoffSeconds = Annotated[
    Whole,
    _bounded(0, MAX_TIMEOUT_SECONDS, "retry_backoff_seconds"),
    Field(json_schema_extra={"minimum": 0, "maximum": MAX_TIMEOUT_SECONDS}),
]
KeepRuns = Annotated[
    Whole,
    _bounded(
        1, MAX_KEEP_RUNS, "keep_runs", " (leave it out, or null, to keep every run's outputs)"
    ),
    Field(json_schema_extra={"minimum": 1, "maximum": MAX_KEEP_RUNS}),
]
KeepDays = Annotated[
    Whole,
    _bounded(1, MAX_KEEP_DAYS, "keep_days", " (leave it out, or null, to keep outputs of any age)"),
    Field(json_schema_extra={"minimum": 1, "maximum": MAX_KEEP_DAYS}),
]
Emails = Annotated[
    list[str],
    AfterValidator(_check_emails),
    Field(
        json_schema_extra={
            "maxItems": MAX_NOTIFY_EMAILS,
            "items": {"type": "string", "pattern": EMAIL_PATTERN, "maxLength": MAX_EMAIL},
        }
    ),
]
WebhookUrl = Annotated[
    str,
    AfterValidator(_check_webhook_url),
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
