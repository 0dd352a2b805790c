"""Cron ticks across daylight-saving changes, and a clock that jumps back, on both databases."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from hub_ext.services.scheduler.cron import cron_next

from . import jobstore
from .jobstore import db_runs, make_job

# The shared fixtures, by assignment rather than import so that test arguments
# of the same name do not read as redefinitions.
database = jobstore.database
clock = jobstore.clock
store = jobstore.store

UTC = timezone.utc


def ticks(expression: str, tz: str, start: datetime, count: int) -> list[str]:
    out, when = [], start
    for _ in range(count):
        when = cron_next(expression, tz, when)
        out.append(when.strftime("%m-%d %H:%M"))
    return out


@pytest.mark.parametrize(
    ("expression", "start", "expected"),
    [
        # spring forward in Berlin, 2026-03-29 02:00 CET -> 03:00 CEST (01:00 UTC):
        # 02:30 does not exist that day and runs once, at 03:00 CEST
        ("30 2 * * *", datetime(2026, 3, 28, 12, tzinfo=UTC), ["03-29 01:00", "03-30 00:30"]),
        # fall back, 2026-10-25 03:00 CEST -> 02:00 CET (01:00 UTC): 02:30 happens
        # twice and runs once, at its first occurrence
        ("30 2 * * *", datetime(2026, 10, 24, 12, tzinfo=UTC), ["10-25 00:30", "10-26 01:30"]),
        # a fixed list of hours: 02:00 runs once, then 03:00 CET
        (
            "0 1-3 * * *",
            datetime(2026, 10, 24, 22, 50, tzinfo=UTC),
            ["10-24 23:00", "10-25 00:00", "10-25 02:00"],
        ),
        # every hour keeps elapsed time in both copies of the repeated hour
        (
            "*/30 * * * *",
            datetime(2026, 10, 24, 23, 50, tzinfo=UTC),
            ["10-25 00:00", "10-25 00:30", "10-25 01:00", "10-25 01:30"],
        ),
        ("0 9 * * *", datetime(2026, 3, 28, 12, tzinfo=UTC), ["03-29 07:00", "03-30 07:00"]),
    ],
)
def test_daylight_saving_changes_give_one_run_per_intended_tick(expression, start, expected):
    assert ticks(expression, "Europe/Berlin", start, len(expected)) == expected


def test_a_clock_that_jumps_back_does_not_fire_past_ticks_again(store, clock):  # noqa: F811
    job = make_job(
        store,
        concurrency_policy="allow",
        triggers=[{"kind": "cron", "expression": "0 * * * *"}],
    )
    t0 = clock.now.replace(minute=0, second=0) + timedelta(hours=1)
    assert len(store.claim_due(t0 + timedelta(seconds=5), "w1", limit=10)) == 1
    # NTP steps the clock back two hours: the tick already made is not made again
    assert store.claim_due(t0 - timedelta(hours=2), "w1", limit=10) == []
    assert store.claim_due(t0 + timedelta(seconds=30), "w1", limit=10) == []
    runs = db_runs(store, job.id)
    assert [r.tick for r in runs] == [t0]
    # and the next tick comes when its time comes
    assert len(store.claim_due(t0 + timedelta(hours=1, seconds=1), "w1", limit=10)) == 1
    assert len(db_runs(store, job.id)) == 2
