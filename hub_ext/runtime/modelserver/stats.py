"""What a replica reports about its traffic: ``/stats`` for the deployer, ``/metrics`` for Prometheus.

Both are fed once per answered invocation (:meth:`RequestStats.record`,
:meth:`Metrics.observe`); the Prometheus series live in a registry of their own, so a
replica exports only them, not the process and platform collectors of the default one.
A replica does not know which deployment it serves: the deployer adds the ``user``,
``deployment``, ``version`` and ``replica`` labels when it passes these series on to
Prometheus (``GET metrics/replicas``, :mod:`hub_ext.services.deployer.replica_metrics`).
With ``--metrics off`` the server keeps no :class:`Metrics` (and serves no ``/metrics``);
``/stats`` stays. ``bench/accounting.py`` measures what the series cost per call.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: ``/stats`` window, seconds
WINDOW_SECONDS = 60


class RequestStats:
    """Totals and a sliding window of latencies for ``/stats``.

    Errors are 5xx answers other than 503 (loading or stopping: the deployer knows
    those states from ``/health``, and they are not the model's failures).
    """

    def __init__(self, window: float = WINDOW_SECONDS):
        self.window = window
        self.requests = 0
        self.errors = 0
        self._recent: deque[tuple[float, float, bool]] = deque(maxlen=200_000)

    def record(self, seconds: float, status: int) -> None:
        error = status >= 500 and status != 503
        self.requests += 1
        self.errors += error
        self._recent.append((time.monotonic(), seconds * 1000.0, error))

    def snapshot(self) -> dict:
        cutoff = time.monotonic() - self.window
        while self._recent and self._recent[0][0] < cutoff:
            self._recent.popleft()
        latencies = sorted(r[1] for r in self._recent)

        def pct(q: float) -> float:
            if not latencies:
                return 0.0
            return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 3)

        return {
            "requests": self.requests,
            "errors": self.errors,
            "latency_ms": {"p50": pct(0.5), "p99": pct(0.99)},
            "window": {
                "seconds": self.window,
                "requests": len(latencies),
                "errors": sum(1 for r in self._recent if r[2]),
            },
        }


class Metrics:
    """The Prometheus series, in a registry of their own."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "shipyard_model_requests",
            "Invocations answered, by HTTP status code.",
            ["code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "shipyard_model_request_duration_seconds",
            "Time from reading an invocation to answering it.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "shipyard_model_batch_rows",
            "Rows per predict call.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096),
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "shipyard_model_batch_requests",
            "Requests per predict call.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.drift = Gauge(
            "shipyard_model_drift_psi",
            "Population stability index of each input feature against the training data.",
            ["feature"],
            registry=self.registry,
        )
        self.input_issues = Counter(
            "shipyard_model_input_issues",
            "Input values with a data-quality issue, by kind (schema_violation, "
            "missing_value, out_of_range, unseen_category) and feature.",
            ["kind", "feature"],
            registry=self.registry,
        )
        self.input_rows = Counter(
            "shipyard_model_input_rows",
            "Input rows checked for data quality.",
            registry=self.registry,
        )
        self._by_status: dict[int, Any] = {}
        self._issues: dict[tuple[str, str], Any] = {}

    def declare_inputs(self, pairs) -> None:
        """Create each ``(kind, feature)`` series at 0, so that rates see their first issue."""
        for kind, feature in pairs:
            self._issues[(kind, feature)] = self.input_issues.labels(kind=kind, feature=feature)

    def observe_inputs(self, counts: dict[tuple[str, str], int], rows: int) -> None:
        """Add one request's (or batch's) data-quality counts."""
        self.input_rows.inc(rows)
        for key, count in counts.items():
            child = self._issues.get(key)
            if child is None:
                child = self._issues[key] = self.input_issues.labels(kind=key[0], feature=key[1])
            child.inc(count)

    def observe(self, seconds: float, status: int) -> None:
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self.requests.labels(code=str(status))
        child.inc()
        self.latency.observe(seconds)
