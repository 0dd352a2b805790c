"""The alerts service's OpenAPI document, from the pydantic models the handlers parse."""

from __future__ import annotations

from typing import Any

from ..common.openapi import build_document
from .models import (
    DescribeAlert,
    DescribeTargets,
    ErrorResponse,
    ListAlertsResponse,
    SetTargets,
)

_ID = {
    "name": "alert_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
    "description": "The alert episode's id.",
}

_QUERY = [
    {
        "name": "state",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": ["pending", "firing", "resolved"]},
        "description": "Only this state; by default pending and firing alerts.",
    },
    {
        "name": "include_resolved",
        "in": "query",
        "required": False,
        "schema": {"type": "boolean", "default": False},
        "description": "Also the resolved alerts.",
    },
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 100},
        "description": "At most this many alerts.",
    },
]

OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("openapi.json", "get"): {"summary": "This document.", "raw": "object", "auth": False},
    ("health", "get"): {"summary": "Whether the service is up.", "raw": "object", "auth": False},
    ("metrics", "get"): {"summary": "Prometheus metrics (hub admins).", "raw": "text/plain"},
    ("api/alerts", "get"): {
        "summary": "The caller's alerts (an admin's: everyone's), newest first.",
        "query": _QUERY,
        "response": ListAlertsResponse,
    },
    ("api/alerts/{alert_id}", "get"): {
        "summary": "One alert; another user's answers as a missing one.",
        "params": [_ID],
        "response": DescribeAlert,
    },
    ("api/targets", "get"): {
        "summary": "The caller's notification targets, redacted, and the schemes allowed.",
        "response": DescribeTargets,
    },
    ("api/targets", "put"): {
        "summary": "Replace the caller's notification targets (apprise URLs, checked).",
        "request": SetTargets,
        "response": DescribeTargets,
    },
}


def build_openapi(prefix: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the service served under ``prefix``."""
    return build_document(
        OPERATIONS,
        error_model=ErrorResponse,
        title="Shipyard alerts",
        description="Alerts Shipyard evaluates itself (models, jobs, disk), and where each "
        "user is told about theirs.",
        prefix=prefix,
        error_codes=("400", "401", "403", "404", "413"),
    )
