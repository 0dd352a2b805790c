"""The audit service's OpenAPI document, from the models the handlers answer with."""

from __future__ import annotations

from typing import Any

from ..common.openapi import build_document
from .models import ErrorResponse, ListRecordsQuery, ListRecordsResponse, VerifyResponse

OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("openapi.json", "get"): {"summary": "This document.", "auth": False, "raw": "object"},
    ("health", "get"): {"summary": "Whether the service is up.", "auth": False, "raw": "object"},
    ("metrics", "get"): {
        "summary": "Prometheus metrics (hub admins, tokens with read:metrics).",
        "raw": "text/plain",
    },
    ("api/records", "get"): {
        "summary": "Audit records, newest first (hub admins).",
        "query": [
            {"name": name, "in": "query", "required": False, "schema": prop}
            for name, prop in ListRecordsQuery.model_json_schema()["properties"].items()
        ],
        "response": ListRecordsResponse,
    },
    ("api/verify", "get"): {
        "summary": "Check the hash chain of the file and the table (hub admins).",
        "response": VerifyResponse,
    },
}


def build_openapi(prefix: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the service under ``prefix``."""
    return build_document(
        OPERATIONS,
        error_model=ErrorResponse,
        title="Shipyard audit",
        description=(
            "The audit trail for hub admins: records of every privileged action, "
            "hash-chained; non-admins get 403."
        ),
        prefix=prefix,
        error_codes=("400", "401", "403", "404"),
    )
