"""Reading the trail's table: filters shared by the CLI and the REST API.

Both ``shipyard audit list`` and ``GET /services/audit/api/records`` parse
their filters with :func:`parse_filters`, so a bad value gets the same
message from both (the caller turns :class:`QueryError` into a CLI error or
a 400). Records come newest first; ``before`` (a ``seq``) pages backwards
through them without the skew of an offset while new records arrive.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Engine, or_, select

from .actions import ACTIONS
from .orm import AuditRecord

RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
MAX_LIMIT = 1000


class QueryError(ValueError):
    """A filter value the caller must fix; the message says how."""


@dataclass
class Filters:
    user: str | None = None
    action: str | None = None
    since: datetime | None = None
    before: int | None = None
    limit: int = 100


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """An ISO time (``2026-01-31``, ``2026-01-31T12:00Z``) or a relative one (``2h``, ``7d``)."""
    value = value.strip()
    now = now or datetime.now(timezone.utc)
    m = RELATIVE.match(value.lower())
    if m:
        return now - timedelta(**{UNITS[m.group(2)]: int(m.group(1))})
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(
            f"since={value!r} is not a time: give an ISO time (2026-01-31 or "
            "2026-01-31T12:00:00Z) or an age like 30m, 2h, 7d, 4w"
        ) from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def parse_action(value: str) -> str:
    """A known action (``job.create``) or family (``job``); anything else is an error."""
    value = value.strip().lower()
    families = {a.split(".")[0] for a in ACTIONS}
    if value in ACTIONS or value in families:
        return value
    raise QueryError(
        f"action={value!r} is not an audited action; give one of "
        f"{', '.join(sorted(families))} or a full name such as job.create "
        "(`shipyard audit actions` lists them)"
    )


def parse_filters(
    *,
    user: str | None = None,
    action: str | None = None,
    since: str | None = None,
    before: str | int | None = None,
    limit: str | int | None = None,
) -> Filters:
    """Check and convert the filters of a listing; raises :class:`QueryError`."""
    f = Filters()
    if user is not None:
        user = user.strip()
        if not user or len(user) > 255:
            raise QueryError("user must be a user name of 1 to 255 characters")
        f.user = user
    if action:
        f.action = parse_action(action)
    if since:
        f.since = parse_since(since)
    if before not in (None, ""):
        try:
            f.before = int(before)
        except (TypeError, ValueError):
            raise QueryError(
                f"before={before!r}: give the seq of a record (a whole number)"
            ) from None
        if f.before < 1:
            raise QueryError("before must be 1 or more")
    if limit not in (None, ""):
        try:
            f.limit = int(limit)
        except (TypeError, ValueError):
            raise QueryError(
                f"limit={limit!r}: give a whole number from 1 to {MAX_LIMIT}"
            ) from None
        if not 1 <= f.limit <= MAX_LIMIT:
            raise QueryError(f"limit must be from 1 to {MAX_LIMIT}, not {f.limit}")
    return f


def list_records(engine: Engine, filters: Filters) -> list[dict[str, Any]]:
    """Records matching ``filters``, newest first, as stored (with seq and hashes)."""
    q = select(AuditRecord.record).order_by(AuditRecord.seq.desc()).limit(filters.limit)
    if filters.user:
        q = q.where(or_(AuditRecord.actor == filters.user, AuditRecord.owner == filters.user))
    if filters.action:
        if "." in filters.action:
            q = q.where(AuditRecord.action == filters.action)
        else:
            q = q.where(AuditRecord.action.like(f"{filters.action}.%"))
    if filters.since:
        q = q.where(AuditRecord.time >= filters.since)
    if filters.before:
        q = q.where(AuditRecord.seq < filters.before)
    with engine.connect() as conn:
        return [json.loads(r) for r in conn.execute(q).scalars()]
