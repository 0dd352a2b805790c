"""The secrets service's OpenAPI document, from the pydantic models the handlers parse.

Built by :func:`hub_ext.services.common.openapi.build_document` (STYLE rule
18); only the table of operations is this service's.
"""

from __future__ import annotations

from typing import Any

from ..common.openapi import build_document
from .models import (
    DescribeSecret,
    ErrorResponse,
    ListSecretsResponse,
    ResolveSecrets,
    ResolveSecretsResponse,
    SetSecret,
    SetSecretResponse,
)

_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$", "maxLength": 128},
    "description": "The secret's name: an environment variable name.",
}

OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("openapi.json", "get"): {"summary": "This document.", "raw": "object", "auth": False},
    ("health", "get"): {"summary": "Whether the service is up.", "raw": "object", "auth": False},
    ("metrics", "get"): {
        "summary": "Prometheus metrics (hub admins, tokens with read:metrics).",
        "raw": "text/plain",
    },
    ("api/secrets", "get"): {
        "summary": "The caller's secrets: names and times, never values.",
        "response": ListSecretsResponse,
    },
    ("api/secrets/{name}", "get"): {
        "summary": "One of the caller's secrets, without its value.",
        "params": [_NAME],
        "response": DescribeSecret,
    },
    ("api/secrets/{name}", "put"): {
        "summary": "Create (201) or replace (200) one of the caller's secrets.",
        "params": [_NAME],
        "request": SetSecret,
        "response": SetSecretResponse,
    },
    ("api/secrets/{name}", "delete"): {
        "summary": "Delete one of the caller's secrets.",
        "params": [_NAME],
        "status": 204,
    },
    ("api/resolve", "post"): {
        "summary": "The values a run or replica needs (the scheduler and deployer services only).",
        "request": ResolveSecrets,
        "response": ResolveSecretsResponse,
    },
}


def build_openapi(prefix: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the service served under ``prefix``."""
    return build_document(
        OPERATIONS,
        error_model=ErrorResponse,
        title="Shipyard secrets",
        description="Users' named secrets for their jobs and models. Values go in, and out "
        "only to the services that run jobs and models.",
        prefix=prefix,
        error_codes=("400", "401", "403", "404", "413"),
    )
