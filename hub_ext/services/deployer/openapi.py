"""The deployer's OpenAPI 3.1 document, generated from the pydantic models the handlers parse.

One source for the REST schema (STYLE rule 18): bodies come from
:mod:`.models`; a test checks that every route of :data:`.handlers.API_TABLE`
and every method it implements is described here. The document's builder
follows the scheduler's :func:`hub_ext.services.scheduler.openapi.build_openapi`
(the two could share it once it takes its operations as an argument).
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from hub_ext import __version__

from .models import (
    CreateDeployment,
    CreateVersion,
    DeploymentMetrics,
    DescribeDeployment,
    DescribeVersion,
    ErrorResponse,
    Grants,
    ListDeploymentsResponse,
    PromoteVersion,
    RollbackVersion,
    SetTraffic,
    UpdateDeployment,
)

NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "integer"}}
OWNER = {
    "name": "owner",
    "in": "query",
    "required": False,
    "description": "Another user's deployments (hub admins only).",
    "schema": {"type": "string"},
}
D = [NAME, OWNER]

#: (path, method) -> operation. ``auth`` False: no hub login.
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("openapi.json", "get"): {"summary": "This document.", "auth": False, "raw": "object"},
    ("health", "get"): {"summary": "Whether the service is up.", "auth": False, "raw": "object"},
    ("metrics", "get"): {"summary": "Prometheus metrics (hub admins).", "raw": "text/plain"},
    ("api/deployments", "get"): {
        "summary": "Your deployments (admins: ?owner=).",
        "params": [OWNER],
        "response": ListDeploymentsResponse,
    },
    ("api/deployments", "post"): {
        "summary": "Deploy a model: a new deployment with version 1 starting.",
        "params": [OWNER],
        "request": CreateDeployment,
        "response": DescribeDeployment,
        "status": 201,
    },
    ("api/deployments/{name}", "get"): {
        "summary": "One deployment.",
        "params": D,
        "response": DescribeDeployment,
    },
    ("api/deployments/{name}", "patch"): {
        "summary": "Scale: every running version gets this many replicas.",
        "params": D,
        "request": UpdateDeployment,
        "response": DescribeDeployment,
    },
    ("api/deployments/{name}", "delete"): {
        "summary": "Stop every version and delete the deployment.",
        "params": D,
        "status": 204,
    },
    ("api/deployments/{name}/versions", "post"): {
        "summary": "Deploy a new version; it takes the traffic (or canary_percent) when ready.",
        "params": D,
        "request": CreateVersion,
        "response": DescribeVersion,
        "status": 201,
    },
    ("api/deployments/{name}/versions/{version}", "get"): {
        "summary": "One version.",
        "params": [NAME, VERSION, OWNER],
        "response": DescribeVersion,
    },
    ("api/deployments/{name}/traffic", "put"): {
        "summary": "Set the traffic split over ready versions (sums to 100).",
        "params": D,
        "request": SetTraffic,
        "response": DescribeDeployment,
    },
    ("api/deployments/{name}/promote", "post"): {
        "summary": "All traffic to a version (started first if stopped).",
        "params": D,
        "request": PromoteVersion,
        "response": DescribeDeployment,
    },
    ("api/deployments/{name}/rollback", "post"): {
        "summary": "All traffic back to an earlier version (default: the previous one).",
        "params": D,
        "request": RollbackVersion,
        "response": DescribeDeployment,
    },
    ("api/deployments/{name}/grants", "put"): {
        "summary": "Who may invoke the deployment besides its owner.",
        "params": D,
        "request": Grants,
        "response": DescribeDeployment,
    },
    ("api/deployments/{name}/metrics", "get"): {
        "summary": "Per version: requests, rate, latency, errors, drift, breaker.",
        "params": D,
        "response": DeploymentMetrics,
    },
}


def build_openapi(prefix: str = "/services/deployer/") -> dict[str, Any]:
    """Return the OpenAPI 3.1 document for a service served under ``prefix``."""
    models = {ErrorResponse}
    for op in OPERATIONS.values():
        models.update(m for m in (op.get("request"), op.get("response")) if m is not None)
    ordered = sorted(models, key=lambda m: m.__name__)
    keys, schemas = models_json_schema(
        [(m, "validation") for m in ordered], ref_template="#/components/schemas/{model}"
    )
    ref = {m: keys[(m, "validation")]["$ref"] for m in ordered}
    error = {
        "description": "What went wrong and what to fix.",
        "content": {"application/json": {"schema": {"$ref": ref[ErrorResponse]}}},
    }
    paths: dict[str, dict[str, Any]] = {}
    for (path, method), op in OPERATIONS.items():
        if "response" in op:
            ok = {
                "description": op["summary"],
                "content": {"application/json": {"schema": {"$ref": ref[op["response"]]}}},
            }
        elif "raw" in op:
            media = "application/json" if op["raw"] == "object" else op["raw"]
            schema = {"type": "object"} if op["raw"] == "object" else {"type": "string"}
            ok = {"description": op["summary"], "content": {media: {"schema": schema}}}
        else:
            ok = {"description": op["summary"]}
        responses = {str(op.get("status", 200)): ok}
        for code in ("400", "401", "403", "404", "409"):
            responses[code] = error
        operation: dict[str, Any] = {
            "operationId": f"{method}_{path.replace('/', '_').replace('{', '').replace('}', '')}",
            "summary": op["summary"],
            "parameters": op.get("params", []),
            "responses": responses,
        }
        if "request" in op:
            operation["requestBody"] = {
                "required": method != "post" or op["request"] is not RollbackVersion,
                "content": {"application/json": {"schema": {"$ref": ref[op["request"]]}}},
            }
        if op.get("auth", True) is False:
            operation["security"] = []
        paths.setdefault(f"/{path}", {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Shipyard deployer",
            "version": __version__,
            "description": (
                "MLflow models served as hub-authenticated endpoints with immutable versions, "
                "traffic splits, promote and rollback. Model traffic: POST "
                "models/{owner}/{name}/invocations with a token that has custom:models:invoke."
            ),
        },
        "servers": [{"url": prefix.rstrip("/")}],
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                "hubToken": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "'token <hub API token>'",
                }
            },
        },
        "security": [{"hubToken": []}],
        "paths": paths,
    }
