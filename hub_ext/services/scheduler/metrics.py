"""The scheduler's Prometheus metrics, defined once (served to admins at ``metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "shipyard_scheduler_requests",
    "Requests to the scheduler's REST API, by route, method and status code.",
    ["route", "method", "code"],
)
RUNS_FINISHED = Counter(
    "shipyard_scheduler_runs_finished",
    "Runs that ended, by how they ended.",
    ["status"],
)
RUNS_RUNNING = Gauge(
    "shipyard_scheduler_runs_running",
    "Runs this scheduler process is executing now.",
)
RUN_DURATION = Histogram(
    "shipyard_scheduler_run_duration_seconds",
    "Time from a run's start to its end, by how it ended.",
    ["status"],
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
