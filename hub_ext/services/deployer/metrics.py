"""The deployer's metrics: Prometheus series (admins, at ``metrics``) and per-version windows.

Prometheus series are labelled ``user`` (the owner), ``deployment`` and ``version`` (the
names every Shipyard series uses: docs/observability.md) and
removed when a version stops, so a long-lived deployer does not keep series
of every version it ever ran. :class:`VersionWindow` keeps what the router
saw of one version over the last minute, which is what
``GET api/deployments/{name}/metrics`` reports (the model servers' own
``/stats`` add drift and data-quality counts: :mod:`.core` polls them;
:class:`InputIssues` sums the latter over the replicas' lives).
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
    ["user", "deployment", "version", "code"],
)
MODEL_LATENCY = Histogram(
    "shipyard_deployer_model_request_duration_seconds",
    "Time from routing a model request to a version to its answer.",
    ["user", "deployment", "version"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RETRIES = Counter(
    "shipyard_deployer_model_retries",
    "Model requests sent again to another replica after a connection error.",
    ["user", "deployment", "version"],
)
BREAKER_OPEN = Gauge(
    "shipyard_deployer_breaker_open",
    "1 while a version's circuit breaker is open or half-open.",
    ["user", "deployment", "version"],
)
REPLICAS_READY = Gauge(
    "shipyard_deployer_replicas_ready",
    "Healthy replicas of a version.",
    ["user", "deployment", "version"],
)
TRAFFIC = Gauge(
    "shipyard_deployer_traffic_percent",
    "A version's share of its deployment's traffic split.",
    ["user", "deployment", "version"],
)
DRIFT = Gauge(
    "shipyard_deployer_drift_psi",
    "Population stability index of a feature's inputs against the training data.",
    ["user", "deployment", "version", "feature"],
)
INPUT_ISSUES = Counter(
    "shipyard_deployer_model_input_issues",
    "Input values with a data-quality issue seen by a version's replicas, by kind "
    "(schema_violation, missing_value, out_of_range, unseen_category) and feature.",
    ["user", "deployment", "version", "kind", "feature"],
)
INPUT_ROWS = Counter(
    "shipyard_deployer_model_input_rows",
    "Input rows a version's replicas checked for data quality.",
    ["user", "deployment", "version"],
)
VERSION_SERIES = (INPUT_ROWS, MODEL_LATENCY, RETRIES, BREAKER_OPEN, REPLICAS_READY, TRAFFIC)


def forget_version(owner: str, name: str, version: int, features=(), codes=(), issues=()) -> None:
    """Remove a stopped version's series (``issues``: its ``(kind, feature)`` pairs)."""
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
    for kind, feature in issues:
        try:
            INPUT_ISSUES.remove(*labels, kind, feature)
        except KeyError:
            pass


class InputIssues:
    """A version's data-quality counts, summed over its replicas' lives.

    Each replica reports its own totals since it started (``/stats``:
    ``rows_checked`` and ``input_issues``, ``{kind: {feature: count}}``); what grew
    since the last poll is added here and to :data:`INPUT_ISSUES`, so the counts
    never go down when a replica restarts or scales away. A replica whose
    ``rows_checked`` went down restarted: all it reports is new. A replica that
    does not answer one poll keeps its last totals until it answers again or
    leaves the version's endpoints.

    Parameters
    ----------
    labels : tuple of str
        ``(owner, name, version)`` of the Prometheus series.
    """

    def __init__(self, labels: tuple[str, str, str]):
        self.series_labels = labels
        self.rows = 0
        self.totals: dict[tuple[str, str], int] = {}
        self._last: dict[str, tuple[int, dict[tuple[str, str], int]]] = {}

    def update(self, replicas: dict[str, dict], endpoints) -> None:
        """Add what each replica counted since the last poll.

        Parameters
        ----------
        replicas : dict
            ``{endpoint: {"rows_checked": int, "input_issues": {kind: {feature: int}}}}``
            of the replicas that answered this poll.
        endpoints : iterable of str
            Every endpoint of the version now; the others are forgotten.
        """
        for endpoint in set(self._last) - set(endpoints):
            del self._last[endpoint]
        for endpoint, reported in replicas.items():
            rows = reported.get("rows_checked")
            rows = rows if isinstance(rows, int) and rows >= 0 else 0
            counts: dict[tuple[str, str], int] = {}
            for kind, by_feature in (reported.get("input_issues") or {}).items():
                if not isinstance(by_feature, dict):
                    continue
                for feature, count in by_feature.items():
                    if isinstance(count, int) and count > 0:
                        counts[(str(kind), str(feature))] = count
            last_rows, last_counts = self._last.get(endpoint, (0, {}))
            restarted = rows < last_rows
            if restarted:
                last_rows, last_counts = 0, {}
            if rows > last_rows:
                self.rows += rows - last_rows
                INPUT_ROWS.labels(*self.series_labels).inc(rows - last_rows)
            for key, count in counts.items():
                grew = count - last_counts.get(key, 0)
                if grew < 0:  # restarted and counted more since: all of it is new
                    grew = count
                if grew:
                    self.totals[key] = self.totals.get(key, 0) + grew
                    INPUT_ISSUES.labels(*self.series_labels, *key).inc(grew)
            self._last[endpoint] = (rows, counts)

    def report(self) -> dict[str, dict[str, int]]:
        """``{kind: {feature: count}}``, the REST form."""
        out: dict[str, dict[str, int]] = {}
        for (kind, feature), count in sorted(self.totals.items()):
            out.setdefault(kind, {})[feature] = count
        return out

    def labels(self) -> list[tuple[str, str]]:
        """The ``(kind, feature)`` pairs of the series this version has."""
        return list(self.totals)


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
