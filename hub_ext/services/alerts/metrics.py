"""Prometheus metrics of the alerts service (``GET metrics``, for hub admins)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: Requests by route, method and status.
REQUESTS = Counter(
    "shipyard_alerts_requests_total",
    "Requests to the alerts service's API.",
    ["route", "method", "code"],
)

#: Alerts firing now, by rule.
FIRING = Gauge("shipyard_alerts_firing", "Alerts firing now, by rule.", ["rule"])

#: Transitions by rule and state (firing, resolved).
TRANSITIONS = Counter(
    "shipyard_alerts_transitions_total",
    "Alerts that started firing or resolved, by rule.",
    ["rule", "state"],
)

#: Notifications by recipient kind (admin, owner) and result (sent, failed, refused).
NOTIFICATIONS = Counter(
    "shipyard_alerts_notifications_total",
    "Alert notifications, by recipient and result.",
    ["recipient", "result"],
)

#: Evaluations by result (ok, or the source that could not be read).
EVALUATIONS = Counter(
    "shipyard_alerts_evaluations_total",
    "Rule evaluations, by result: ok, or the source that failed.",
    ["result"],
)

EVALUATION_SECONDS = Histogram(
    "shipyard_alerts_evaluation_seconds",
    "Time one evaluation of every rule took.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
