"""Cron arithmetic in the trigger's time zone, returning UTC.

Triggers store a five-field expression and an IANA time zone; the database
stores UTC. Ticks are computed in the local zone (so ``0 9 * * *`` stays at
9:00 across daylight-saving changes) and converted back to UTC here, in one
place, so the store never mixes the two.

croniter does the calendar work; these helpers only fix the edges it leaves
to callers (``get_prev`` is strictly before its start, and ticks fall on
whole minutes).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from croniter import croniter


def _local(expression: str, tz: str, when: datetime) -> croniter:
    return croniter(expression, when.astimezone(ZoneInfo(tz)))


def cron_next(expression: str, tz: str, after: datetime) -> datetime:
    """Return the first tick strictly after ``after``, in UTC.

    Parameters
    ----------
    expression : str
        A five-field cron expression (validated by :class:`~.models.CronTrigger`).
    tz : str
        IANA time zone the expression is read in (DST-aware).
    after : datetime
        Timezone-aware.
    """
    return _local(expression, tz, after).get_next(datetime).astimezone(timezone.utc)


def cron_latest(expression: str, tz: str, at: datetime) -> datetime:
    """Return the last tick at or before ``at``, in UTC.

    croniter's ``get_prev`` is strictly before its start, and ticks fall on
    whole minutes, so it starts from the minute after ``at``'s.
    """
    start = at.astimezone(timezone.utc).replace(second=0, microsecond=0) + timedelta(minutes=1)
    return _local(expression, tz, start).get_prev(datetime).astimezone(timezone.utc)


def cron_count(expression: str, tz: str, first: datetime, last: datetime, cap: int) -> int:
    """Count the ticks from ``first`` to ``last`` inclusive, stopping at ``cap``."""
    ticks = _local(expression, tz, first - timedelta(seconds=1))
    count = 0
    while count < cap and ticks.get_next(datetime) <= last:
        count += 1
    return count
