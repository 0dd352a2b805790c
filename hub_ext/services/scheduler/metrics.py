"""The scheduler's Prometheus metrics, defined once (served at ``metrics``).

Labels follow every Shipyard series (docs/observability.md): ``user`` is a job's owner,
``job_name`` its name (a pipeline step's job is ``<pipeline>/<step>``; not ``job``, which
is Prometheus's own target label, as kube-state-metrics names a Kubernetes Job's),
``profile`` the profile its runs use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REQUESTS = Counter(
    "shipyard_scheduler_requests",
    "Requests to the scheduler's REST API, by route, method and status code.",
    ["route", "method", "code"],
)
RUNS_FINISHED = Counter(
    "shipyard_scheduler_runs_finished",
    "Runs that ended, by job and how they ended.",
    ["user", "job_name", "profile", "status"],
)
RUNS_RUNNING = Gauge(
    "shipyard_scheduler_runs_running",
    "Runs this scheduler process is executing now.",
)
RUN_DURATION = Histogram(
    "shipyard_scheduler_run_duration_seconds",
    "Time from a run's start to its end, by profile and how it ended.",
    ["profile", "status"],
    buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
)
START_LATENCY = Histogram(
    "shipyard_scheduler_start_latency_seconds",
    "Time from a run becoming due (its tick, or when it was queued) to its start.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
ORPHANS = Counter(
    "shipyard_scheduler_orphaned_runs",
    "Runs declared orphaned because their worker stopped sending heartbeats.",
)
NOTIFICATIONS = Counter(
    "shipyard_scheduler_notifications",
    "Notifications sent, by channel (panel, email, webhook) and result.",
    ["channel", "result"],
)


class JobSchedule(Collector):
    """``shipyard_scheduler_job_next_fire_timestamp_seconds``, read from the database at scrape.

    The earliest cron tick of each job that is not paused and that no run has been made
    for yet. A scheduler that keeps up moves it into the future at each tick, so a value
    minutes in the past means the job missed its scheduled time (the alert rule
    ``ShipyardJobMissedSchedule``). Read at scrape time, so it is right after a restart
    and for ticks another scheduler replica claims.
    """

    def __init__(self, next_fires: Callable[[], Iterable[tuple[str, str, str, datetime]]]):
        self.next_fires = next_fires

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        for owner, name, profile, when in self.next_fires():
            family.add_metric([owner, name, profile], when.timestamp())
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "shipyard_scheduler_job_next_fire_timestamp_seconds",
            "Unix time of a job's next cron tick not yet run (in the past: the tick is late).",
            labels=["user", "job_name", "profile"],
        )


def register_job_schedule(next_fires: Callable[[], Iterable[tuple[str, str, str, datetime]]]):
    """Register :class:`JobSchedule` in the default registry (once per process); return it."""
    collector = JobSchedule(next_fires)
    REGISTRY.register(collector)
    return collector
