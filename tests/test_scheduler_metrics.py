"""The scheduler's job schedule series, read from a real database (SQLite and PostgreSQL).

``shipyard_scheduler_job_next_fire_timestamp_seconds`` is the earliest cron tick of each
job that is not paused and that no run was made for yet; the alert rule
``ShipyardJobMissedSchedule`` fires when it stays in the past.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hub_ext.services.scheduler.metrics import JobSchedule
from hub_ext.services.scheduler.models import UpdateJob

from . import jobstore
from .jobstore import HOURLY, T0, at, make_job

database = jobstore.database
clock = jobstore.clock
store = jobstore.store


def test_next_fires_are_the_pending_cron_ticks_of_jobs_not_paused(store):
    hourly = make_job(store, "alice", "hourly", triggers=[HOURLY])
    make_job(
        store, "alice", "both", triggers=[{"kind": "cron", "expression": "0 */2 * * *"}, HOURLY]
    )
    make_job(store, "bob", "by-hand")  # no trigger: no series
    paused = make_job(store, "bob", "paused", triggers=[HOURLY])
    store.update_job(paused.id, "bob", update=UpdateJob(paused=True))
    fires = {(o, n, p): when for o, n, p, when in store.next_fires()}
    # T0 is 10:30: the hourly tick is 11:00, the two-hourly one 12:00; a job's earliest counts
    assert fires == {("alice", "hourly", "tiny"): at(11), ("alice", "both", "tiny"): at(11)}
    assert all(when.tzinfo is not None for when in fires.values())

    registry = CollectorRegistry()
    registry.register(JobSchedule(store.next_fires))
    (family,) = text_string_to_metric_families(generate_latest(registry).decode())
    assert family.name == "shipyard_scheduler_job_next_fire_timestamp_seconds"
    samples = {(x.labels["user"], x.labels["job_name"]): x.value for x in family.samples}
    assert samples == {
        ("alice", "hourly"): at(11).timestamp(),
        ("alice", "both"): at(11).timestamp(),
    }
    assert hourly.id and T0 < at(11)
