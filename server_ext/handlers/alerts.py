"""REST handlers under /shipyard/api/alerts: the user's alerts and notification targets, for the
panel's Alerts section.

Exactly as :mod:`server_ext.handlers.usage` does for the usage service: each route forwards
to the same route of the alerts service as the server's user, with the server's own token
(``$JUPYTERHUB_API_TOKEN``), and passes the service's status, JSON body and error body on
unchanged. The service decides what the caller sees (a hub admin every alert, anyone else
the alerts about their own models and jobs; another user's alert answers 404): never a
decision of this server. An alerts service that is not running or not configured is a 502
in the same error schema, with a message that says why.

The handler is :class:`~server_ext.handlers.scheduler.SchedulerForwardHandler` with the
alerts client (``client_class``, ``client_error``): the same ``@authorized`` methods
(resource ``shipyard``), the same error schema, the same 405 for a method a route does not
list, the forwarding in a thread of the same pool. The alerts are read only; the targets
(where the user is told about theirs) are read (redacted, with the schemes allowed) and
replaced (``PUT``, checked by the service, whose 400 says which URL and why). The route takes
no user: the service answers the targets of the token's user, so this server reaches its own
user's targets and nobody else's. The service's OpenAPI, health and metrics routes are not
forwarded.
"""

from __future__ import annotations

from typing import Any

from ..clients.alerts import AlertsClient, AlertsError
from .scheduler import ID, SchedulerForwardHandler

PREFIX = r"/shipyard/api/alerts"

#: (route under PREFIX, the service's path, methods forwarded).
ROUTES: list[tuple[str, str, tuple[str, ...]]] = [
    ("", "api/alerts", ("GET",)),
    # before the id route, whose pattern "targets" matches too (an alert's id is 32 hex digits)
    ("/targets", "api/targets", ("GET", "PUT")),
    (f"/{ID}", "api/alerts/{}", ("GET",)),
]


class AlertsForwardHandler(SchedulerForwardHandler):
    """Forward one route of :data:`ROUTES` to the alerts service as the server's user."""

    client_class = AlertsClient
    client_error = AlertsError


def alerts_routes() -> list[tuple[str, type, dict[str, Any]]]:
    """The handlers of :data:`ROUTES`, for the extension's route table."""
    return [
        (PREFIX + route, AlertsForwardHandler, {"target": target, "methods": methods})
        for route, target, methods in ROUTES
    ]
