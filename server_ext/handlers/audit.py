"""REST handlers under /shipyard/api/audit/: the audit trail, for the panel's admin section.

Exactly as :mod:`server_ext.handlers.scheduler` does for the scheduler: each route forwards
to the same route of the audit service as the server's user, with the server's own token
(``$JUPYTERHUB_API_TOKEN``, which the hub scopes to ``access:services!service=audit``), and
passes the service's status, JSON body and error body on unchanged. The service decides
who may read the trail (hub admins only): a user who is not an admin gets the service's own
403 through here, never a decision of this server. An audit service that is not running or
not configured is a 502 in the same error schema, with a message that says why.

The handler is :class:`~server_ext.handlers.scheduler.SchedulerForwardHandler` with the
audit client (``client_class``, ``client_error``): the same ``@authorized`` methods
(resource ``shipyard``), the same error schema, the same 405 for a method a route does not
list, the forwarding in a thread. Only the two read routes the panel needs are forwarded;
the service's OpenAPI, health and metrics routes are not.
"""

from __future__ import annotations

from typing import Any

from ..clients.audit import AuditClient, AuditError
from .scheduler import SchedulerForwardHandler

PREFIX = r"/shipyard/api/audit"

#: (route under PREFIX, the service's path, methods forwarded).
ROUTES: list[tuple[str, str, tuple[str, ...]]] = [
    ("/records", "api/records", ("GET",)),
    ("/verify", "api/verify", ("GET",)),
]


class AuditForwardHandler(SchedulerForwardHandler):
    """Forward one route of :data:`ROUTES` to the audit service as the server's user."""

    client_class = AuditClient
    client_error = AuditError


def audit_routes() -> list[tuple[str, type, dict[str, Any]]]:
    """The handlers of :data:`ROUTES`, for the extension's route table."""
    return [
        (PREFIX + route, AuditForwardHandler, {"target": target, "methods": methods})
        for route, target, methods in ROUTES
    ]
