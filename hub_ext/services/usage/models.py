"""API models of the usage service (STYLE rule 11: apart from the tables)."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..common.models import ErrorResponse

__all__ = [
    "ErrorResponse",
    "IdleServer",
    "Recommendation",
    "UsageQuery",
    "UsageResponse",
    "UsageRow",
    "WasteQuery",
    "WasteResponse",
]


def parse_timestamp(value: str | float | None) -> float | None:
    """ISO 8601 (``2026-12-01``, ``2026-12-01T08:00:00Z``; UTC without a zone) or seconds
    since the epoch, as seconds since the epoch; None for none.

    Raises
    ------
    ValueError
        Neither, or out of the years 1970 to 5138.
    """
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{value!r} is neither an ISO 8601 date or time (2026-12-01, "
                "2026-12-01T08:00:00Z) nor seconds since the epoch"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        seconds = parsed.timestamp()
    if not (math.isfinite(seconds) and 0 <= seconds < MAX_TIMESTAMP):
        raise ValueError(f"{value!r} is not a time between 1970 and 5138")
    return seconds


#: Seconds since the epoch of the year 5138: far enough.
MAX_TIMESTAMP = 1e11


def _check_time(value: str | None) -> str | None:
    parse_timestamp(value)
    return value


class UsageQuery(BaseModel):
    """The query of ``GET api/usage``."""

    model_config = ConfigDict(extra="forbid")

    by: Literal["user", "group", "profile", "object", "kind", "day"] = Field(
        "user",
        description="What the rows are: users, groups, profiles, objects, kinds of object "
        "(server, run, step, replica, warm), or UTC days (`YYYY-MM-DD`, every day of the period "
        "oldest first, days without usage as zeros: a series to plot; at most "
        "366 days).",
    )
    since: str | None = Field(
        None,
        max_length=64,
        description="From (ISO 8601 or seconds since the epoch; UTC when no zone is given); "
        "30 days before `until` by default. Counted by whole hours.",
    )
    until: str | None = Field(
        None,
        max_length=64,
        description="Until (ISO 8601 or seconds since the epoch), excluded; now by default.",
    )
    user: str | None = Field(
        None,
        max_length=255,
        description="Only this user's usage (admins: anyone; a user: only their own name, "
        "another's answers 404).",
    )

    _times = field_validator("since", "until")(_check_time)


class UsageRow(BaseModel):
    """What one user, group, profile or object used over the period, and its cost."""

    key: str = Field(description="The user, group, profile, object, kind or day.")
    cpu_seconds: float
    cpu_hours: float
    mem_gib_hours: float = Field(description="Memory in use, integrated over time.")
    gpu_hours: float = Field(description="GPUs held, integrated over time.")
    wall_hours: float = Field(description="Time the cgroups existed, summed.")
    cost: float = Field(description="At the configured prices, in `currency`.")


class UsageResponse(BaseModel):
    by: str
    since: float
    until: float
    currency: str
    rows: list[UsageRow]


class WasteQuery(BaseModel):
    """The query of ``GET api/usage/waste``."""

    model_config = ConfigDict(extra="forbid")

    days: float | None = Field(
        None, gt=0, le=3660, description="The period right-sizing looks at (the service's default)."
    )
    user: str | None = Field(
        None,
        max_length=255,
        description="Only this user's servers and instances (as in api/usage).",
    )


class IdleServer(BaseModel):
    owner: str
    object: str
    profile: str
    gpus: int
    mem_bytes: int
    idle_hours: float
    message: str


class Recommendation(BaseModel):
    profile: str
    resource: Literal["memory", "cpu"]
    limit: float = Field(description="The profile's limit (bytes, or cores).")
    p95: float = Field(description="The p95 of its instances' peaks (bytes, or cores).")
    suggested: float = Field(description="A limit that would fit (bytes, or cores).")
    instances: int
    days: float
    message: str


class WasteResponse(BaseModel):
    days: float
    idle: list[IdleServer]
    rightsizing: list[Recommendation]
