"""The deployer's OpenAPI 3.1 document, generated from the pydantic models the handlers parse.

One source for the REST schema (STYLE rule 18): bodies come from
:mod:`.models`; a test checks that every route of :data:`.handlers.API_TABLE`
and every method it implements is described here. The document itself is
built by :func:`hub_ext.services.common.openapi.build_document`, as the
scheduler's. What depends on the service's settings (the most replicas a
version may have) is written in when the service starts, so the document a
client reads is the one the service enforces.
"""

from __future__ import annotations

from typing import Any

from ..common.openapi import ERROR_CODES, build_document
from .models import (
    MAX_NAME,
    MAX_VERSION,
    NAME_PATTERN,
    CreateDeployment,
    CreateVersion,
    DeploymentMetrics,
    DescribeDeployment,
    DescribeLineage,
    DescribeVersion,
    ErrorResponse,
    Grants,
    ListDeploymentsResponse,
    PromoteVersion,
    RollbackVersion,
    SetTraffic,
    UpdateDeployment,
)

NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": NAME_PATTERN, "maxLength": MAX_NAME},
}
VERSION = {
    "name": "version",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_VERSION},
}
OWNER = {
    "name": "owner",
    "in": "query",
    "required": False,
    "description": "Another user's deployments (hub admins only).",
    "schema": {"type": "string", "maxLength": 255},
}
D = [NAME, OWNER]

#: (path, method) -> operation. ``auth`` False: no hub login.
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("openapi.json", "get"): {"summary": "This document.", "auth": False, "raw": "object"},
    ("health", "get"): {"summary": "Whether the service is up.", "auth": False, "raw": "object"},
    ("metrics", "get"): {
        "summary": "Prometheus metrics (hub admins, tokens with read:metrics).",
        "raw": "text/plain",
    },
    ("metrics/replicas", "get"): {
        "summary": "The ready model replicas' own Prometheus series, labelled user, "
        "deployment, version and replica (hub admins, tokens with read:metrics).",
        "raw": "text/plain",
    },
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
        "summary": "Deploy a new version; it takes the traffic (canary_percent, or a watched "
        "canary's percent) when ready.",
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
    ("api/deployments/{name}/versions/{version}/lineage", "get"): {
        "summary": "Where the version came from: registered model version, MLflow run, "
        "scheduler run, pipeline run and step, notebook digest and parameters, input files "
        "with their SHA-256 (read as the caller; unknown links are listed in missing).",
        "params": [NAME, VERSION, OWNER],
        "response": DescribeLineage,
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


def _body_required(method: str, op: dict[str, Any]) -> bool:
    # a body whose every field may be left out may be left out itself (a rollback to the
    # previous version, grants to nobody): the handlers read no body as {}
    return any(field.is_required() for field in op["request"].model_fields.values())


def build_openapi(
    prefix: str = "/services/deployer/", max_replicas: int | None = None
) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document for a service served under ``prefix``.

    Parameters
    ----------
    prefix : str
        Where the service is served.
    max_replicas : int, optional
        The service's ``max_replicas``: the ``maximum`` of every ``replicas`` field
        (the models' own bound, 64, is the most any service may set).
    """
    document = build_document(
        OPERATIONS,
        error_model=ErrorResponse,
        title="Shipyard deployer",
        description=(
            "MLflow models served as hub-authenticated endpoints with immutable versions, "
            "traffic splits, promote and rollback. Model traffic: POST "
            "models/{owner}/{name}/invocations with a token that has custom:models:invoke."
        ),
        prefix=prefix,
        error_codes=(*ERROR_CODES, "413"),  # a body over the REST API's 4 MiB
        body_required=_body_required,
    )
    if max_replicas is not None:
        for name in ("CreateDeployment", "UpdateDeployment"):
            replicas = document["components"]["schemas"][name]["properties"]["replicas"]
            replicas["maximum"] = min(replicas["maximum"], max_replicas)
    return document
