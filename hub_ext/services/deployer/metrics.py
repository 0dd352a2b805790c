"""The deployer's metrics: Prometheus series (admins, at ``metrics``) and per-version windows.

Prometheus series are labelled ``owner``, ``name`` and ``version`` and
removed when a version stops, so a long-lived deployer does not keep series
of every version it ever ran. :class:`VersionWindow` keeps what the router
saw of one version over the last minute, which is what
``GET api/deployments/{name}/metrics`` reports (the model servers' own
``/stats`` add drift: :mod:`.core` polls them).
"""

from __future__ import annotations

import math
import time
from collections import deque

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "shipyard_deployer_requests",
    "Requests to the deployer's REST API, by route, method and status code.",
    ["route", "method", "code"],
)
MODEL_REQUESTS = Counter(
    "shipyard_deployer_model_requests",
    "Model requests routed to a version, by its answer's status code.",
    ["owner", "name", "version", "code"],
)
MODEL_LATENCY = Histogram(
    "shipyard_deployer_model_request_seconds",
    "Time from routing a model request to a version to its answer.",
    ["owner", "name", "version"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RETRIES = Counter(
    "shipyard_deployer_model_retries",
    "Model requests sent again to another replica after a connection error.",
    ["owner", "name", "version"],
)
BREAKER_OPEN = Gauge(
    "shipyard_deployer_breaker_open",
    "1 while a version's circuit breaker is open or half-open.",
    ["owner", "name", "version"],
)
REPLICAS_READY = Gauge(
    "shipyard_deployer_replicas_ready",
    "Healthy replicas of a version.",
    ["owner", "name", "version"],
)
TRAFFIC = Gauge(
    "shipyard_deployer_traffic_percent",
    "A version's share of its deployment's traffic split.",
    ["owner", "name", "version"],
)
DRIFT = Gauge(
    "shipyard_deployer_drift_psi",
    "Population stability index of a feature's inputs against the training data.",
    ["owner", "name", "version", "feature"],
)
VERSION_SERIES = (MODEL_LATENCY, RETRIES, BREAKER_OPEN, REPLICAS_READY, TRAFFIC)


def forget_version(owner: str, name: str, version: int, features=(), codes=()) -> None:
    """Remove a stopped version's series."""
    labels = (owner, name, str(version))
    for metric in VERSION_SERIES:
        try:
            metric.remove(*labels)
        except KeyError:
            pass
    for feature in features:
        try:
            DRIFT.remove(*labels, feature)
        except KeyError:
            pass
    for code in codes:
        try:
            MODEL_REQUESTS.remove(*labels, code)
        except KeyError:
            pass


def percentile(sorted_values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by nearest rank, or None without values."""
    if not sorted_values:
        return None
    rank = max(0, math.ceil(q * len(sorted_values)) - 1)
    return sorted_values[rank]


class VersionWindow:
    """Outcomes and latencies of one version's requests over the last ``seconds``."""

    def __init__(self, seconds: float = 60.0, clock=time.monotonic):
        self.seconds = seconds
        self.clock = clock
        self.requests = 0
        self.errors = 0
        self.codes: set[str] = set()
        self._events: deque[tuple[float, float, bool]] = deque()

    def record(self, latency: float, ok: bool, code: int) -> None:
        self.requests += 1
        self.errors += not ok
        self.codes.add(str(code))
        now = self.clock()
        self._events.append((now, latency, ok))
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._events and self._events[0][0] < now - self.seconds:
            self._events.popleft()

    def summary(self) -> dict:
        self._trim(self.clock())
        latencies = sorted(e[1] * 1000 for e in self._events)
        count = len(latencies)
        errors = sum(1 for e in self._events if not e[2])
        return {
            "requests": self.requests,
            "errors": self.errors,
            "window_seconds": self.seconds,
            "window_requests": count,
            "window_errors": errors,
            "rate": count / self.seconds,
            "error_rate": errors / count if count else 0.0,
            "latency_ms": {"p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99)},
        }
