"""The usage service's OpenAPI document, from the models the handlers answer with."""

from __future__ import annotations

from typing import Any

from ..common.openapi import build_document
from .models import ErrorResponse, UsageQuery, UsageResponse, WasteQuery, WasteResponse


def _query(model) -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "query", "required": False, "schema": prop}
        for name, prop in model.model_json_schema()["properties"].items()
    ]


OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("openapi.json", "get"): {"summary": "This document.", "auth": False, "raw": "object"},
    ("health", "get"): {"summary": "Whether the service is up.", "auth": False, "raw": "object"},
    ("metrics", "get"): {"summary": "Prometheus metrics (hub admins).", "raw": "text/plain"},
    ("api/usage", "get"): {
        "summary": "Usage and cost by user, group, profile or object (admins: everyone's; "
        "users: their own).",
        "query": _query(UsageQuery),
        "response": UsageResponse,
    },
    ("api/usage/waste", "get"): {
        "summary": "Idle servers holding resources, and limits far above use, with what "
        "would fit (admins: everyone's; users: their own).",
        "query": _query(WasteQuery),
        "response": WasteResponse,
    },
}


def build_openapi(prefix: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the service under ``prefix``."""
    return build_document(
        OPERATIONS,
        error_model=ErrorResponse,
        title="Shipyard usage",
        description=(
            "What servers, runs, pipeline steps and model replicas used (CPU-seconds, memory "
            "GiB-hours, GPU-hours), its cost, and right-sizing. A user sees only their own."
        ),
        prefix=prefix,
        error_codes=("400", "401", "403", "404"),
    )
