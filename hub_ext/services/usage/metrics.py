"""Prometheus metrics of the usage service (``GET metrics``, for hub admins)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: Requests by route, method and status.
REQUESTS = Counter(
    "shipyard_usage_requests_total",
    "Requests to the usage service's API.",
    ["route", "method", "code"],
)

#: The labels of the usage series: whose, in which profile, what kind of object (server,
#: run, step, replica, warm). Not the group: a user may be in several, and a sum over
#: groups would count them twice; the report groups by group (``--by group``).
USAGE_LABELS = ["user", "profile", "kind"]

#: CPU-seconds counted.
CPU_SECONDS = Counter(
    "shipyard_usage_cpu_seconds_total", "CPU-seconds counted from the cgroups.", USAGE_LABELS
)

#: Memory GiB-hours counted.
MEM_GIB_HOURS = Counter(
    "shipyard_usage_memory_gib_hours_total",
    "Memory GiB-hours counted from the cgroups.",
    USAGE_LABELS,
)

#: GPU-hours counted.
GPU_HOURS = Counter("shipyard_usage_gpu_hours_total", "GPU-hours held, counted.", USAGE_LABELS)

#: What the usage counted costs at the price table (in ``c.UsageService.currency``).
COST = Counter(
    "shipyard_usage_cost_total",
    "Cost of the usage counted, at the price table, in the configured currency.",
    USAGE_LABELS,
)

#: Cgroups sampled in the last pass.
LIVE = Gauge("shipyard_usage_live_cgroups", "Cgroups and pods whose counters the last pass read.")

#: Seconds a sampling pass took.
SAMPLE_SECONDS = Histogram(
    "shipyard_usage_sample_seconds", "Seconds one sampling pass over the ledger took."
)
