"""REST handlers under /shipyard/api/deployer/: the deployer's API, for the JupyterLab panel.

Exactly as :mod:`server_ext.handlers.scheduler` does for the scheduler: the panel runs in the
browser on the user's server, which holds the server's hub token (``$JUPYTERHUB_API_TOKEN``,
scoped to the deployer); the browser never sees it. Each route here forwards to the same
route of the service as the server's user, through
:meth:`~server_ext.clients.deployer.client.DeployerClient.forward`, and passes the service's status,
JSON body and error body on unchanged, so the panel reads the service's own
``{"status", "message", "errors"}``. A deployer that is not configured or cannot be reached,
or an answer that is not the service's (the hub's page for a wrong URL), is a 502 in that
same schema, with a message that says why.

The handler is the scheduler's :class:`~server_ext.handlers.scheduler.SchedulerForwardHandler`
with another client (``client_class``, ``client_error``): the same ``@authorized`` methods (resource ``shipyard``; XSRF on
cookie-authenticated writes, as every jupyter-server ``APIHandler``), the same error schema,
the same 405 for a method a route does not list, the forwarding in a thread.

Only what the panel needs is forwarded, listed in :data:`ROUTES` with its methods: the list,
a deployment, a version, a version's lineage, metrics, and the traffic operations (rollback,
promote, split).

The lineage route matters for who asks: the deployer reads the tracking service and the
scheduler **as the caller**, with the ``Authorization`` header of the request it got
(:mod:`hub_ext.services.deployer.lineage`). A browser request to the deployer would carry
only the hub's cookie, and every link would be ``missing``; forwarded from here it carries
the server's own token (``$JUPYTERHUB_API_TOKEN``, the user's), so the chain resolves to
what that user may read, and no further.
Creating, scaling, deleting and sharing deployments, model traffic, OpenAPI, health and
Prometheus metrics are not: a new route here is a decision, never a side effect of a
catch-all proxy.
"""

from __future__ import annotations

from typing import Any

from ..clients.deployer.client import DeployerClient, DeployerError
from .scheduler import SchedulerForwardHandler

PREFIX = r"/shipyard/api/deployer"
#: One path segment of a name or version (never ``/`` or ``..``); the service validates
#: what it is, and its 404 for a malformed one is passed on like any answer of its own.
NAME = VERSION = r"([A-Za-z0-9_-]+)"

#: (route under PREFIX, the service's path with ``{}`` for the ids, methods forwarded).
ROUTES: list[tuple[str, str, tuple[str, ...]]] = [
    ("/deployments", "api/deployments", ("GET",)),
    (f"/deployments/{NAME}", "api/deployments/{}", ("GET",)),
    (f"/deployments/{NAME}/versions/{VERSION}", "api/deployments/{}/versions/{}", ("GET",)),
    (
        f"/deployments/{NAME}/versions/{VERSION}/lineage",
        "api/deployments/{}/versions/{}/lineage",
        ("GET",),
    ),
    (f"/deployments/{NAME}/metrics", "api/deployments/{}/metrics", ("GET",)),
    (f"/deployments/{NAME}/traffic", "api/deployments/{}/traffic", ("PUT",)),
    (f"/deployments/{NAME}/promote", "api/deployments/{}/promote", ("POST",)),
    (f"/deployments/{NAME}/rollback", "api/deployments/{}/rollback", ("POST",)),
]


class DeployerForwardHandler(SchedulerForwardHandler):
    """Forward one route of :data:`ROUTES` to the deployer as the server's user."""

    client_class = DeployerClient
    client_error = DeployerError


def deployer_routes() -> list[tuple[str, type, dict[str, Any]]]:
    """The handlers of :data:`ROUTES`, for the extension's route table."""
    return [
        (PREFIX + route, DeployerForwardHandler, {"target": target, "methods": methods})
        for route, target, methods in ROUTES
    ]
