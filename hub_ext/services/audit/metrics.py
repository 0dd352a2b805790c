"""Prometheus metrics of the audit service (``GET metrics``, for hub admins)."""

from __future__ import annotations

from prometheus_client import Counter

#: Requests by route, method and status code (labelled like every service's).
REQUESTS = Counter(
    "shipyard_audit_requests_total",
    "Requests to the audit service's API, by route, method and status code.",
    ["route", "method", "code"],
)
