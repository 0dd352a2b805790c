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


def every_hour(expression: str) -> bool:
    """Whether the expression's hour field is ``*`` (or ``*/1``): it fires every hour."""
    if expression == "@hourly":
        return True
    fields = expression.split()
    return len(fields) == 5 and fields[1] in ("*", "*/1")


def cron_next(expression: str, tz: str, after: datetime) -> datetime:
    """Return the first tick strictly after ``after``, in UTC, under the DST rule.

    The rule for daylight-saving changes (one run per intended tick):

    - **Clocks go forward** (a local hour is skipped): a tick that falls in the
      gap runs once, at the first instant after it (``30 2 * * *`` runs at
      03:00 on that day); an expression firing every hour simply has one
      hour less that day.
    - **Clocks go back** (a local hour happens twice): a wall-clock time is
      run once, at its first occurrence, unless the expression fires every
      hour (hour field ``*``), which keeps firing by elapsed time in both
      copies of the hour, as its users expect of ``*/15 * * * *``.

    Parameters
    ----------
    expression : str
        A five-field cron expression (validated by :class:`~.models.CronTrigger`).
    tz : str
        IANA time zone the expression is read in (DST-aware).
    after : datetime
        Timezone-aware.
    """
    zone = ZoneInfo(tz)
    hourly = every_hour(expression)
    ticks = _local(expression, tz, after)
    for _ in range(1000):
        tick = ticks.get_next(datetime).astimezone(timezone.utc)
        local = tick.astimezone(zone)
        if hourly or local.fold == 0:
            return tick
        # the second copy of a repeated wall-clock time: already run at the first
        if local.replace(fold=0).astimezone(timezone.utc) == tick:
            return tick  # not actually ambiguous
    raise ValueError(f"cron expression {expression!r} has no tick after {after.isoformat()}")


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
