"""Audit records of the tracking gateway: permission grants, revokes and group shares.

MLflow decides these requests itself (MANAGE on the experiment or model); the
gateway sees each one pass and records it once, when it finishes, with the
status MLflow answered: 2xx ``allowed``, 401/403 ``denied``, 404 ``denied``
(not found), anything else ``failed``. A share is the tag ``shipyard.groups``
set or deleted on an experiment or registered model (see :mod:`.shares`);
other tags are not audited. Only names, ids and permission levels from the
request body are recorded.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hub_ext.audit import emit

from ..common.audit import outcome_of
from .shares import TAG

_V = r"/(?:ajax-)?api/[23]\.0/mlflow/"
#: (pattern, action) for POST/PATCH/DELETE requests; first match wins.
ROUTES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(_V + r"users/permissions/grant"), "tracking.permission_grant"),
    (re.compile(_V + r"users/permissions/revoke"), "tracking.permission_revoke"),
    (
        re.compile(_V + r"(?:experiments|registered-models)/permissions/(?:create|update)"),
        "tracking.permission_grant",
    ),
    (
        re.compile(_V + r"(?:experiments|registered-models)/permissions/delete"),
        "tracking.permission_revoke",
    ),
    (
        re.compile(
            _V + r"(?:experiments/(?:set-experiment-tag|delete-tag)"
            r"|registered-models/(?:set-tag|delete-tag))"
        ),
        "tracking.share",
    ),
)
_KEYS = ("experiment_id", "name", "username", "permission", "resource_type", "resource_id", "value")


def _target(path: str, body: dict[str, Any]) -> str:
    if body.get("experiment_id"):
        return f"experiment/{body['experiment_id']}"
    if "registered-models" in path and body.get("name"):
        return f"model/{body['name']}"
    if body.get("resource_type") and body.get("resource_id"):
        return f"{body['resource_type']}/{body['resource_id']}"
    return "tracking/"


def record(handler, path: str) -> None:
    """Emit the record of a finished gateway request if it grants, revokes or shares."""
    if handler.request.method not in ("POST", "PATCH", "DELETE"):
        return
    path = "/" + path.lstrip("/")
    action = next((a for pattern, a in ROUTES if pattern.fullmatch(path)), None)
    if action is None:
        return
    try:
        body = json.loads(handler.request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        body = {}
    if not isinstance(body, dict):
        body = {}
    if action == "tracking.share" and body.get("key") != TAG:
        return
    user = handler.current_user or {}
    status = handler.get_status()
    outcome, reason = outcome_of(status, getattr(handler, "audit_reason", None))
    details = {k: body[k] for k in _KEYS if k in body and isinstance(body[k], str | int)}
    if action == "tracking.share":
        details["groups"] = sorted(g for g in str(body.get("value") or "").split(",") if g.strip())
        details.pop("value", None)
        if path.endswith("delete-tag"):
            details["removed"] = True
    else:
        details.pop("value", None)
    emit(
        action,
        actor=user.get("name"),
        actor_kind=("service" if user.get("kind") == "service" else "user")
        if user
        else "anonymous",
        target=_target(path, body),
        owner=None,
        outcome=outcome,
        reason=reason,
        client=handler.request.remote_ip,
        details=dict(details, status=status),
    )
