"""The rules the scheduler's API models check, each in one place, with messages that say what to fix.

:mod:`.models` attaches these checks to its fields (``AfterValidator``) and builds the
fields' JSON schema from the same constants (a ``pattern``, a bound, an ``enum``), so the
OpenAPI document says what the checks do. This module holds no model.

- Job names are slugs (``^[a-z0-9]([-a-z0-9]*[a-z0-9])?$``, at most 63
  characters) because they end up in paths and Kubernetes object names
  (SECURITY rule 10).
- Parameters are data (SECURITY rule 4): names must be Python identifiers and
  not keywords, values JSON scalars, lists and objects. Papermill renders them
  as literals; a name such as ``os.system('x')`` is refused here, not escaped
  later. :func:`check_parameters` is the scheduler's only parameter rule: the API
  models, the parameters preview and the executors' ``RunSpec`` all call it.
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
- Numbers in a JSON body are strict (:func:`integral`: ``60.0`` is 60, as JSON
  Schema reads it, ``"60"`` is not a number); query strings, which are all text,
  have their own readers (:func:`query_bool`, :func:`query_int`).

Each check returns the value as stored (normalised: a cron expression's spaces, groups
sorted, duplicates dropped) or raises :class:`~pydantic_core.PydanticCustomError`, which
pydantic reports as a validation error of the field.
"""

from __future__ import annotations

import copy
import json
import keyword
import math
import re
import zoneinfo
from collections.abc import Collection, Mapping
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterBadDateError
from pydantic import AfterValidator, BaseModel
from pydantic_core import PydanticCustomError

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


def check_job_name(value: str) -> str:
    return _check_slug(value, "job name")


def check_profile(value: str) -> str:
    return _check_slug(value, "profile")


def check_job_id(value: str) -> str:
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


def check_glob(value: str) -> str:
    return _check_relative_path(value, "file glob", _GLOB, "data/*.csv")


def check_source_path(value: str) -> str:
    return _check_relative_path(value, "source path", _SOURCE_PATH, "reports/daily.ipynb")


def _check_parameter_value(value: Any, where: str, depth: int) -> None:
    if depth > MAX_PARAMETER_DEPTH:
        raise _error(
            "parameter_value",
            "parameter {where} nests deeper than {depth} levels",
            where=where,
            depth=MAX_PARAMETER_DEPTH,
        )
    if value is None or isinstance(value, (bool, int)):
        return
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            # a string the database could not store nor papermill write to its YAML file
            raise _error(
                "parameter_value",
                "parameter {where} is not valid Unicode text (a lone surrogate)",
                where=where,
            ) from None
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
                    "parameter {where} has the key {key!r}: JSON object keys must be strings",
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


def check_parameter_name(name: Any) -> str:
    """Return ``name``, or raise when papermill would not write it as a plain assignment.

    Papermill writes ``f"{name} = {value}"`` without escaping the name, so any name but an
    ASCII identifier that is not a keyword would be code (SECURITY rule 4).
    """
    if not isinstance(name, str) or not _PARAMETER_NAME.fullmatch(name) or keyword.iskeyword(name):
        raise _error(
            "parameter_name",
            "parameter name {name!r} is not a Python identifier: use letters, digits and "
            "underscores, not starting with a digit and not a keyword (e.g. 'learning_rate')",
            name=name,
        )
    return name


def check_parameter_value(name: str, value: Any) -> Any:
    """Return ``value``, or raise naming where in it something is not JSON data."""
    _check_parameter_value(value, name, 1)
    return value


def check_parameters(value: Mapping[str, Any]) -> dict[str, Any]:
    """Return a deep copy of ``value``, or raise naming the first bad entry.

    The one parameter rule of the scheduler: the API models attach it to their
    ``parameters`` fields, the parameters preview reads typed values with it, and an
    executor's :class:`~.executors.base.RunSpec` checks what it is given with it (a run's
    parameters come from the database, so a row written by an older service is checked
    again before papermill renders it). Names are identifiers (:func:`check_parameter_name`);
    values are what JSON carries (None, bool, int, finite float, valid Unicode text, lists
    and string-keyed dicts of those), because papermill renders exactly those as literals
    and anything else would reach the notebook as another type or not at all; the whole is
    at most :data:`MAX_PARAMETERS_BYTES` as JSON.

    Raises
    ------
    pydantic_core.PydanticCustomError
        A ``ValueError``: pydantic reports it as the field's error, other callers catch
        ``ValueError``.
    """
    if not isinstance(value, Mapping):
        raise _error(
            "parameters",
            "parameters must be a mapping of names to values, not a {type}",
            type=type(value).__name__,
        )
    for name, item in value.items():
        check_parameter_value(check_parameter_name(name), item)
    if len(json.dumps(value)) > MAX_PARAMETERS_BYTES:
        raise _error(
            "parameters_size",
            "parameters are larger than {limit} bytes as JSON: pass a path to a data file instead",
            limit=MAX_PARAMETERS_BYTES,
        )
    return copy.deepcopy(dict(value))


def check_cron(value: str) -> str:
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


def check_timezone(value: str) -> str:
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


def check_groups(value: list[str]) -> list[str]:
    for group in value:
        if not _GROUP.fullmatch(group):
            raise _error(
                "group",
                "{group!r} is not a hub group name (letters, digits and . @ + - _)",
                group=group,
            )
    return sorted(set(value))


def check_output_formats(value: list[str]) -> list[str]:
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


def check_emails(value: list[str]) -> list[str]:
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


def check_webhook_url(value: str) -> str:
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


def check_fires(expression: str, time_zone: str) -> None:
    """Refuse a (valid) cron expression that never fires in ``time_zone`` from now on."""
    start = datetime.now(timezone.utc).astimezone(ZoneInfo(time_zone))
    try:
        croniter(expression, start).get_next(datetime)
    except CroniterBadDateError:
        raise _error(
            "cron",
            "cron expression {value!r} never fires (e.g. the 30th of February)",
            value=expression,
        ) from None


def check_triggers(value: list[Any]) -> list[Any]:
    """At most MAX_TRIGGERS triggers, one webhook, none listed twice."""
    if len(value) > MAX_TRIGGERS:
        raise _error("triggers", "a job has at most {n} triggers", n=MAX_TRIGGERS)
    if sum(t.kind == "webhook" for t in value) > 1:
        raise _error("triggers", "a job has at most one webhook trigger (one secret per job)")
    dumped = [t.model_dump_json() for t in value]
    if len(set(dumped)) != len(dumped):
        raise _error("triggers", "the same trigger is listed twice")
    return value


def check_no_nulls(model: BaseModel, nullable: Collection[str]) -> None:
    """Refuse the fields sent as ``null`` in ``model`` but those in ``nullable``.

    A partial update keeps what is left out; ``null`` would clear a field that must have
    a value.
    """
    nulls = sorted(
        name for name in model.model_fields_set - set(nullable) if getattr(model, name) is None
    )
    if nulls:
        raise _error(
            "null",
            "{fields} cannot be null: leave a field out to keep its value",
            fields=", ".join(nulls),
        )


def bounded(low: int, high: int, what: str, why: str = "") -> AfterValidator:
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


def integral(value: Any) -> Any:
    # JSON Schema's "integer" is any number without a fraction: 60.0 is 60. A string,
    # a boolean or 60.5 is left for the strict check to refuse.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def query_bool(value: Any) -> Any:
    if value in ("true", "false"):
        return value == "true"
    if isinstance(value, bool):
        return value
    raise _error("query_bool", "must be true or false, not {value!r}", value=value)


def query_int(value: Any) -> Any:
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,9}", value):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _error(
        "query_int", "must be a whole number written in digits, not {value!r}", value=value
    )
