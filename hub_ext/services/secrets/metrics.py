"""Prometheus metrics of the secrets service (``GET metrics``, for hub admins)."""

from __future__ import annotations

from prometheus_client import Counter

#: Requests by route, method and status code (labelled like every service's).
REQUESTS = Counter(
    "shipyard_secrets_requests_total",
    "Requests to the secrets service's API.",
    ["route", "method", "code"],
)

#: Resolve calls by outcome: allowed, missing (a name the owner has not set), denied.
RESOLVED = Counter(
    "shipyard_secrets_resolved_total",
    "Secret resolutions for runs and replicas, by outcome.",
    ["outcome"],
)
