"""REST handlers under /shipyard/api/usage: usage, cost and waste, for the panel's Usage section.

Exactly as :mod:`server_ext.handlers.scheduler` does for the scheduler: each route forwards
to the same route of the usage service as the server's user, with the server's own token
(``$JUPYTERHUB_API_TOKEN``), and passes the service's status, JSON body and error body on
unchanged. The service decides what the caller sees (a hub admin everyone's usage, anyone
else their own; another user's answers 404): never a decision of this server. A usage
service that is not running or not configured is a 502 in the same error schema, with a
message that says why.

The handler is :class:`~server_ext.handlers.scheduler.SchedulerForwardHandler` with the
usage client (``client_class``, ``client_error``): the same ``@authorized`` methods
(resource ``shipyard``), the same error schema, the same 405 for a method a route does not
list, the forwarding in a thread of the same pool. Only the two read routes the panel needs
are forwarded; the service's OpenAPI, health and metrics routes are not.
"""

from __future__ import annotations

from typing import Any

from ..clients.usage import UsageClient, UsageError
from .scheduler import SchedulerForwardHandler

PREFIX = r"/shipyard/api/usage"

#: (route under PREFIX, the service's path, methods forwarded).
ROUTES: list[tuple[str, str, tuple[str, ...]]] = [
    ("", "api/usage", ("GET",)),
    ("/waste", "api/usage/waste", ("GET",)),
]


class UsageForwardHandler(SchedulerForwardHandler):
    """Forward one route of :data:`ROUTES` to the usage service as the server's user."""

    client_class = UsageClient
    client_error = UsageError


def usage_routes() -> list[tuple[str, type, dict[str, Any]]]:
    """The handlers of :data:`ROUTES`, for the extension's route table."""
    return [
        (PREFIX + route, UsageForwardHandler, {"target": target, "methods": methods})
        for route, target, methods in ROUTES
    ]
