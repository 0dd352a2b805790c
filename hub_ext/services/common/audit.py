"""Audit records of the services' REST APIs, declared per handler as data.

A handler names the actions its methods perform and the target they act on::

    class JobHandler(BaseHandler):
        audit_actions = {"PATCH": job_patch_action, "DELETE": "job.delete"}
        audit_target = "job/{0}"          # {0}: the first path argument

and the base handler's ``on_finish`` calls :func:`record`, which emits one
record after the outcome is known: 2xx/3xx ``allowed``; 401/403 ``denied``
with the message the client got; 404 ``denied`` "not found" (another user's
object answers 404 like a missing one, SECURITY rule 3); other 4xx
``failed`` with the message; 5xx ``failed``. The owner comes from the
answer (``owner`` of the job or deployment) when there is one.

Why in ``on_finish`` rather than calls in each handler: a handler that
raises (a denial) would need a ``try`` around every call to record its
refusal, and a new route would silently go unrecorded; here the outcome is
the status the client saw, whatever path produced it, and the route table
says in one place what is audited. Rejected: recording in the core (it does
not see the client address, and reads such as downloads never reach a
write there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from hub_ext.audit import emit

#: An action, or a function of the handler that returns one (e.g. from the body).
Action = str | Callable[[Any], str | None]


_RESULT_KEYS = ("id", "name", "owner", "job_id", "version")


def _result_dict(result: Any) -> dict[str, Any]:
    """The identifying fields of an answer (or of the object it wraps: ``{"job": ...}``)."""
    if isinstance(result, BaseModel):
        found = {k: getattr(result, k, None) for k in _RESULT_KEYS}
        if found["owner"] is None:
            for value in vars(result).values():
                if isinstance(value, BaseModel) and getattr(value, "owner", None):
                    return {k: getattr(value, k, None) for k in _RESULT_KEYS}
        return found
    return result if isinstance(result, dict) else {}


def _actor(handler) -> tuple[str | None, str]:
    try:
        user = handler.current_user
    except Exception:
        user = None
    if not user:
        return None, "anonymous"
    kind = user.get("kind", "user") if isinstance(user, dict) else "user"
    name = user.get("name") if isinstance(user, dict) else str(user)
    return name, "service" if kind == "service" else "user"


def outcome_of(status: int, reason: str | None) -> tuple[str, str | None]:
    """``(outcome, reason)`` of a finished request."""
    if status < 400:
        return "allowed", None
    if status in (401, 403):
        return "denied", reason or "forbidden"
    if status == 404:
        return "denied", "not found"
    return "failed", reason or f"HTTP {status}"


def record(handler) -> None:
    """Emit the audit record of a finished request if its handler declares one."""
    actions: dict[str, Action] = getattr(handler, "audit_actions", None) or {}
    action = actions.get(handler.request.method)
    if action is None:
        return
    if callable(action):
        action = action(handler)
        if action is None:
            return
    status = handler.get_status()
    outcome, reason = outcome_of(status, getattr(handler, "audit_reason", None))
    result = _result_dict(getattr(handler, "audit_result", None)) if status < 400 else {}
    args = [str(a) for a in handler.path_args]
    try:
        target = handler.audit_target.format(*args, result=result)
    except (IndexError, KeyError, AttributeError):
        target = handler.audit_target.split("/")[0] + "/" + (args[0] if args else "")
    if target.endswith("/None"):
        target = target[: -len("None")]
    actor, actor_kind = _actor(handler)
    owner = result.get("owner") or getattr(handler, "audit_owner", None)
    details = dict(getattr(handler, "audit_details", None) or {})
    if result.get("version") is not None:
        details.setdefault("version", result["version"])
    if result.get("id") and not target.endswith(str(result["id"])):
        details.setdefault("id", result["id"])
    emit(
        action,
        actor=actor,
        actor_kind=actor_kind,
        target=target,
        owner=owner,
        outcome=outcome,
        reason=reason,
        client=handler.request.remote_ip,
        details=dict(details, status=status),
    )
