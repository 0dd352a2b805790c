"""REST handlers under /shipyard/api/scheduler/: the scheduler's API, for the JupyterLab panel.

The panel runs in the browser on the user's server, which holds the server's hub token
(``$JUPYTERHUB_API_TOKEN``, scoped to the scheduler); the browser never sees it. Each route
here forwards to the same route of the service as the server's user, through
:meth:`~server_ext.clients.scheduler.client.SchedulerClient.forward`, and passes the service's
status, JSON body and error body on unchanged, so the panel reads the service's own
``{"status", "message", "errors"}`` (one error schema, one translator: the service's). A
scheduler that is not configured or cannot be reached, or an answer that is not the service's
(the hub's page for a wrong URL), is a 502 in that same schema, with a message that says why.

Only what the panel needs is forwarded, listed in :data:`ROUTES` with its methods; the
service's webhook, OpenAPI, health and metrics routes are not. Every handler takes the
server's own authentication and ``@authorized`` (resource ``shipyard``), like
:mod:`server_ext.handlers.server`; tests/test_server_ext.py fails on any route that lets an
anonymous request through. A method a route does not list answers 405 once the request is
authorized. The forwarding runs in a thread of :data:`FORWARDERS`, so the server's event loop
never waits on the scheduler, and a preview asked while the panel's polls are out does not
queue behind them (or behind the server's own work in asyncio's small default pool, six
threads on a two-core machine).

Rejected alternative: a catch-all ``/shipyard/api/scheduler/(.*)`` proxy, which would make
every future route of the service reachable with the server's token without anyone deciding
so.
"""

from __future__ import annotations

import asyncio
import functools
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl, urlencode

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from ..clients.scheduler.client import SchedulerClient, SchedulerError, path_segment
from .server import AUTH_RESOURCE

PREFIX = r"/shipyard/api/scheduler"
#: One path segment of an id (the service's ids are hex; never ``..``).
ID = r"([A-Za-z0-9_-]+)"

#: The threads that forward the panel's requests to the services (scheduler, deployer, audit,
#: usage, alerts): enough for every poll of an open panel in two browser tabs plus what the
#: user asks.
FORWARDERS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="shipyard-forward")

#: (route under PREFIX, the service's path with ``{}`` for the id, methods forwarded).
ROUTES: list[tuple[str, str, tuple[str, ...]]] = [
    ("/profiles", "api/profiles", ("GET",)),
    ("/previews/cron", "api/previews/cron", ("POST",)),
    ("/previews/parameters", "api/previews/parameters", ("POST",)),
    ("/jobs", "api/jobs", ("GET", "POST")),
    (f"/jobs/{ID}", "api/jobs/{}", ("GET", "PATCH", "DELETE")),
    (f"/jobs/{ID}/runs", "api/jobs/{}/runs", ("GET", "POST")),
    (f"/jobs/{ID}/upcoming", "api/jobs/{}/upcoming", ("GET",)),
    (f"/jobs/{ID}/parameters", "api/jobs/{}/parameters", ("GET",)),
    (f"/jobs/{ID}/notebook", "api/jobs/{}/notebook", ("PUT",)),
    ("/runs", "api/runs", ("GET",)),
    (f"/runs/{ID}", "api/runs/{}", ("GET", "PATCH")),
    (f"/runs/{ID}/log", "api/runs/{}/log", ("GET",)),
    (f"/runs/{ID}/output", "api/runs/{}/output", ("GET",)),
    ("/notifications", "api/notifications", ("GET",)),
    (f"/notifications/{ID}", "api/notifications/{}", ("PATCH",)),
    ("/pipelines", "api/pipelines", ("GET", "POST")),
    (f"/pipelines/{ID}", "api/pipelines/{}", ("GET", "PUT", "PATCH", "DELETE")),
    (f"/pipelines/{ID}/runs", "api/pipelines/{}/runs", ("GET", "POST")),
    (f"/pipeline-runs/{ID}", "api/pipeline-runs/{}", ("GET", "PATCH")),
    (f"/pipeline-runs/{ID}/repair", "api/pipeline-runs/{}/repair", ("POST",)),
]


def without_cache_buster(query: str) -> str:
    """``query`` without the ``?<milliseconds>`` key JupyterLab adds to its GET requests.

    ``ServerConnection.makeRequest`` appends the current time as a bare key when requests
    are ``no-store`` (its default), so browsers never answer from a cache. The services
    refuse query parameters they do not know (a typo must not be silently ignored), so the
    forwarders drop that one key, and only that: an all-digit name with no value.
    """
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(k, v) for k, v in pairs if not (k.isdigit() and v == "")])


class SchedulerForwardHandler(ExtensionHandlerMixin, APIHandler):
    """Forward one route of :data:`ROUTES` to the scheduler as the server's user."""

    auth_resource = AUTH_RESOURCE
    #: The service's client (``from_environment()`` and ``forward()``), and the error it
    #: raises when the service is not configured or cannot be reached (a 502 here).
    client_class: Any = SchedulerClient
    client_error: type[Exception] = SchedulerError

    def initialize(self, name: str, target: str = "", methods: tuple[str, ...] = ()) -> None:
        super().initialize(name)
        self.target = target
        self.methods = methods

    @property
    def content_security_policy(self) -> str:
        # a forwarded HTML output is the user's notebook rendered: never run it on this origin
        return super().content_security_policy + "; sandbox"

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Errors of this side (no login, no scheduler) in the service's error schema."""
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, web.HTTPError) and error.log_message:
            message = error.log_message % error.args if error.args else error.log_message
        else:
            message = self._reason
        self.finish(json.dumps({"status": status_code, "message": message, "errors": []}))

    async def _forward(self, *ids: str) -> None:
        if self.request.method not in self.methods:
            raise web.HTTPError(405, f"{self.request.path} takes {', '.join(self.methods)}")
        try:
            client = self.client_class.from_environment()
            answer = await asyncio.get_running_loop().run_in_executor(
                FORWARDERS,
                functools.partial(
                    client.forward,
                    self.request.method,
                    self.target.format(*(path_segment(i) for i in ids)),
                    without_cache_buster(self.request.query),
                    self.request.body or None,
                ),
            )
        except self.client_error as exc:  # not configured, or not reachable
            raise web.HTTPError(502, "%s", exc.message) from None
        self.set_status(answer.status)
        self.set_header("Cache-Control", "no-store")
        if answer.status == 204:
            self.finish()
            return
        if "Content-Disposition" in answer.headers:
            self.set_header("Content-Disposition", answer.headers["Content-Disposition"])
        content_type = answer.headers.get("Content-Type", "application/json")
        self.finish(answer.body, set_content_type=content_type)

    @web.authenticated
    @authorized
    async def get(self, *ids: str) -> None:
        await self._forward(*ids)

    @web.authenticated
    @authorized
    async def post(self, *ids: str) -> None:
        await self._forward(*ids)

    @web.authenticated
    @authorized
    async def put(self, *ids: str) -> None:
        await self._forward(*ids)

    @web.authenticated
    @authorized
    async def patch(self, *ids: str) -> None:
        await self._forward(*ids)

    @web.authenticated
    @authorized
    async def delete(self, *ids: str) -> None:
        await self._forward(*ids)


def scheduler_routes() -> list[tuple[str, type, dict[str, Any]]]:
    """The handlers of :data:`ROUTES`, for the extension's route table."""
    return [
        (PREFIX + route, SchedulerForwardHandler, {"target": target, "methods": methods})
        for route, target, methods in ROUTES
    ]
