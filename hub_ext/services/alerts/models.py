"""API models of the alerts service (pydantic), apart from the ORM (STYLE rule 11)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from ..common.models import ErrorResponse

__all__ = [
    "AlertState",
    "DescribeAlert",
    "DescribeTargets",
    "ErrorResponse",
    "ListAlertsQuery",
    "ListAlertsResponse",
    "SetTargets",
]

AlertState = Literal["pending", "firing", "resolved"]

#: Most targets one user may keep.
MAX_TARGETS = 10


def _query_bool(value: Any) -> Any:
    # ``true`` or ``false`` as OpenAPI clients write them; ``1`` or ``yes`` are refused
    if value in ("true", "false"):
        return value == "true"
    if isinstance(value, bool):
        return value
    raise PydanticCustomError("query_bool", f"must be true or false, not {value!r}")


def _query_int(value: Any) -> Any:
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,9}", value):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise PydanticCustomError("query_int", f"must be a whole number in digits, not {value!r}")


QueryBool = Annotated[bool, BeforeValidator(_query_bool)]
QueryInt = Annotated[int, BeforeValidator(_query_int)]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DescribeAlert(BaseModel):
    """One episode of an alert, as its owner (or an admin) sees it."""

    id: str
    key: str = Field(description="The alert's stable key: its rule and labels.")
    rule: str
    owner: str | None = Field(description="The user it is about; None for platform alerts.")
    labels: dict[str, str]
    severity: str
    summary: str
    value: float | None
    state: AlertState
    pending_since: datetime
    started_at: datetime | None
    resolved_at: datetime | None


class ListAlertsQuery(_Input):
    """Which alerts to list: open ones by default, newest first."""

    state: AlertState | None = Field(
        default=None, description="Only this state; by default pending and firing ones."
    )
    include_resolved: QueryBool = Field(default=False, description="Also the resolved ones.")
    limit: QueryInt = Field(default=100, ge=1, le=500)


class ListAlertsResponse(BaseModel):
    """The caller's alerts (an admin's: everyone's), newest first."""

    alerts: list[DescribeAlert]


class SetTargets(_Input):
    """The caller's notification targets: apprise URLs (``PUT api/targets``)."""

    urls: list[str] = Field(
        max_length=MAX_TARGETS,
        description="Apprise URLs (mailto://, json://, slack://, msteams://, matrix://, ...), "
        "each checked when set; stored encrypted and never answered back in full.",
    )


class DescribeTargets(BaseModel):
    """The caller's targets, each shown by its scheme and host only (they may hold tokens)."""

    targets: list[str]
    updated_at: datetime | None
    schemes: list[str] = Field(
        description="The apprise schemes a target may use here (the admin's "
        "``AlertNotifier.user_schemes``), for a form's hint; any other is refused with a 400."
    )
