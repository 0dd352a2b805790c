"""Recording the hub's own actions: users, groups, roles and tokens.

JupyterHub has no event hook for its REST API, but every request ends in the
application's ``log_function``. :func:`log_request` is set as
``c.JupyterHub.tornado_settings["log_function"]`` (see :func:`configure`):
it calls JupyterHub's own :func:`jupyterhub.log.log_request` (access log and
Prometheus metrics stay exactly as they were), then records each
state-changing request (POST, PUT, PATCH, DELETE) to the hub API that
matches a row of :data:`ROUTES` — once, after the outcome is known:

- 2xx/3xx: ``allowed``; 401/403: ``denied`` with JupyterHub's message;
  404: ``denied``, "not found" (JupyterHub answers 404 for objects a caller
  may not see); 400/409: ``failed`` with the message; 5xx: ``failed``.
- The actor is ``handler.current_user`` (a user, or a service by its token);
  the client is the request's address as JupyterHub resolved it (the proxy's
  ``X-Forwarded-For``).

Starting and stopping servers is recorded by the spawners, which know the
profile; only refused start/stop requests (which never reach a spawner) are
recorded here. Rejected alternatives: subclassing every API handler (a
JupyterHub upgrade adds handlers silently), and a proxy in front of the hub
(it would not know the actor).

The message of a refusal lives only in the exception JupyterHub turns into
the error body; :func:`configure` wraps ``APIHandler.write_error`` to keep it
on the handler (``_shipyard_audit_error``) for the log function.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

from jupyterhub.log import log_request as jupyterhub_log_request

from . import emit, set_source

#: (method, path under /hub/api, action); one action per pattern. Named
#: groups become the target: user, group, token.
ROUTES: list[tuple[str, str, str]] = [
    ("POST", r"/users", "user.create"),
    ("POST", r"/users/(?P<user>[^/]+)", "user.create"),
    ("PATCH", r"/users/(?P<user>[^/]+)", "user.update"),
    ("DELETE", r"/users/(?P<user>[^/]+)", "user.delete"),
    ("POST", r"/users/(?P<user>[^/]+)/tokens", "token.create"),
    ("DELETE", r"/users/(?P<user>[^/]+)/tokens/(?P<token>[^/]+)", "token.delete"),
    ("POST", r"/groups", "group.create"),
    ("POST", r"/groups/(?P<group>[^/]+)", "group.create"),
    ("DELETE", r"/groups/(?P<group>[^/]+)", "group.delete"),
    ("PUT", r"/groups/(?P<group>[^/]+)/properties", "group.update"),
    ("POST", r"/groups/(?P<group>[^/]+)/users", "group.members_add"),
    ("DELETE", r"/groups/(?P<group>[^/]+)/users", "group.members_remove"),
    # refusals only: started and stopped servers are recorded by the spawner
    ("POST", r"/users/(?P<user>[^/]+)/server", "server.start"),
    ("POST", r"/users/(?P<user>[^/]+)/servers/(?P<server>[^/]*)", "server.start"),
    ("DELETE", r"/users/(?P<user>[^/]+)/server", "server.stop"),
    ("DELETE", r"/users/(?P<user>[^/]+)/servers/(?P<server>[^/]*)", "server.stop"),
]

_COMPILED = [(m, re.compile(f"^{p}/?$"), a) for m, p, a in ROUTES]
_API = re.compile(r"/hub/api(/.*)$")
_SPAWNER_ACTIONS = {"server.start", "server.stop"}
#: request-body keys that may be recorded (names, flags, scopes: never a credential)
_TOKEN_KEYS = ("note", "scopes", "expires_in", "roles")


def match(method: str, path: str) -> tuple[str, dict[str, str]] | None:
    """The action and path parameters of an audited hub API request, or None."""
    m = _API.search(path)
    if not m:
        return None
    sub = m.group(1)
    for route_method, pattern, action in _COMPILED:
        if route_method == method:
            found = pattern.match(sub)
            if found:
                return action, {k: unquote(v) for k, v in found.groupdict().items()}
    return None


def _outcome(status: int, handler) -> tuple[str, str | None]:
    message = getattr(handler, "_shipyard_audit_error", None)
    if status < 400:
        return "allowed", None
    if status in (401, 403):
        return "denied", message or ("not authenticated" if status == 401 else "forbidden")
    if status == 404:
        return "denied", "not found"
    return "failed", message or f"HTTP {status}"


def _actor(handler) -> tuple[str | None, str]:
    try:
        user = handler.current_user
    except Exception:
        user = None
    if user is None:
        return None, "anonymous"
    kind = getattr(user, "kind", "user")
    return user.name, "service" if kind == "service" else "user"


def _body(handler) -> dict[str, Any]:
    try:
        body = json.loads(handler.request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def records_for(action: str, params: dict[str, str], body: dict[str, Any]) -> list[dict[str, Any]]:
    """Target, owner and details of each record one request makes (usually one)."""
    user, group = params.get("user"), params.get("group")
    if action == "user.create" and user is None:
        names = body.get("usernames") if isinstance(body.get("usernames"), list) else []
        return [
            {"target": f"user/{n}", "owner": str(n), "details": {"admin": bool(body.get("admin"))}}
            for n in names
        ] or [{"target": "user/", "owner": None, "details": None}]
    if action == "user.update":
        out = []
        fields = sorted(k for k in body if k != "admin")
        if fields:
            out.append({"target": f"user/{user}", "owner": user, "details": {"fields": fields}})
        if "admin" in body:
            out.append(
                {
                    "action": "role.change",
                    "target": f"user/{user}",
                    "owner": user,
                    "details": {"role": "admin", "granted": bool(body["admin"])},
                }
            )
        return out or [{"target": f"user/{user}", "owner": user, "details": None}]
    if action.startswith("server."):  # the same target as the spawner's records
        server = params.get("server")
        target = f"server/{user}/{server}" if server else f"server/{user}"
        return [{"target": target, "owner": user, "details": {"server": server or ""}}]
    if action.startswith("user."):
        return [{"target": f"user/{user}", "owner": user, "details": None}]
    if action == "token.create":
        details = {k: body[k] for k in _TOKEN_KEYS if k in body}
        return [{"target": f"token/{user}", "owner": user, "details": details or None}]
    if action == "token.delete":
        return [{"target": f"token/{params['token']}", "owner": user, "details": None}]
    if action == "group.create" and group is None:
        names = body.get("groups") if isinstance(body.get("groups"), list) else []
        return [{"target": f"group/{n}", "owner": None, "details": None} for n in names] or [
            {"target": "group/", "owner": None, "details": None}
        ]
    if action in ("group.members_add", "group.members_remove"):
        users = body.get("users") if isinstance(body.get("users"), list) else []
        return [{"target": f"group/{group}", "owner": None, "details": {"users": users}}]
    return [{"target": f"group/{group}", "owner": None, "details": None}]


def log_request(handler) -> None:
    """JupyterHub's access log, then the audit record of the request (never raises)."""
    jupyterhub_log_request(handler)
    try:
        record_request(handler)
    except Exception:  # emit never raises; this guards the parsing around it
        handler.log.exception("could not audit %s %s", handler.request.method, handler.request.path)


def record_request(handler) -> None:
    """Emit the records of one finished hub API request, if it is audited."""
    request = handler.request
    if request.method not in ("POST", "PUT", "PATCH", "DELETE"):
        return
    found = match(request.method, request.path)
    if found is None:
        return
    action, params = found
    status = handler.get_status()
    if action in _SPAWNER_ACTIONS and status not in (401, 403, 404):
        return  # the spawner records it (a refusal never reaches the spawner)
    outcome, reason = _outcome(status, handler)
    actor, actor_kind = _actor(handler)
    for rec in records_for(action, params, _body(handler)):
        emit(
            rec.get("action", action),
            actor=actor,
            actor_kind=actor_kind,
            target=rec["target"],
            owner=rec["owner"],
            outcome=outcome,
            reason=reason,
            client=request.remote_ip,
            details=dict(rec["details"] or {}, status=status),
        )


def _keep_error_message() -> None:
    """Wrap ``APIHandler.write_error`` so the log function can read the refusal's message."""
    from jupyterhub.apihandlers.base import APIHandler
    from tornado import web

    original = APIHandler.write_error
    if getattr(original, "_shipyard_audit", False):
        return

    def write_error(self, status_code, **kwargs):
        exc = (kwargs.get("exc_info") or (None, None, None))[1]
        if isinstance(exc, web.HTTPError):
            message = getattr(exc, "jupyterhub_message", None) or exc.log_message or exc.reason
            if message and exc.args[2:]:
                try:
                    message = message % exc.args[2:]
                except (TypeError, ValueError):
                    pass
            self._shipyard_audit_error = str(message)[:300] if message else None
        return original(self, status_code, **kwargs)

    write_error._shipyard_audit = True
    APIHandler.write_error = write_error


def configure(c) -> None:
    """Record the hub's API actions: set the log function in ``c.JupyterHub.tornado_settings``."""
    set_source("hub")
    _keep_error_message()
    settings = c.JupyterHub.tornado_settings
    if not isinstance(settings, dict):
        settings = {}
    settings = dict(settings)
    settings["log_function"] = log_request
    c.JupyterHub.tornado_settings = settings
