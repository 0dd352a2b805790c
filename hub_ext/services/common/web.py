"""Tornado pieces both services' REST APIs share: standard routes and app wiring.

Shared because the scheduler and the deployer serve their APIs the same way:
the same OpenAPI, health, metrics and 404 routes, the same HubOAuth wiring of
the tornado application, the same request log line and the same shutdown on
SIGTERM/SIGINT. The handler base classes are
:class:`hub_ext.services.common.handlers.ServiceHandler` and, for services whose
callers are hub users with groups (scheduler, deployer),
:class:`hub_ext.services.common.handlers.UserServiceHandler`; the mixins here
expect their shared interface (``send``, ``caller``, ``core``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlparse

from jupyterhub.services import auth as hub_auth_module
from jupyterhub.services.auth import HubOAuthCallbackHandler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from tornado import web
from tornado.httpserver import HTTPServer

#: What a service answers a caller it cannot identify while the hub is down.
HUB_DOWN = "The hub is restarting: the caller cannot be checked now; retry in a few seconds."


class HubOAuth(hub_auth_module.HubOAuth):
    """JupyterHub's ``HubOAuth``, answering 503 (not 500) while the hub is unreachable.

    The services outlive a hub that crashes (``hub_ext/hub/app.py``). Meanwhile a token the
    service checked within its cache time (``cache_max_age``) still works; one it has not
    seen cannot be checked, and JupyterHub's ``HubAuth`` answers that with a 500 "Failed
    to connect to Hub API". That is not the service's fault and a retry in a moment
    works, so it is a 503 here. Every other answer is JupyterHub's.
    """

    async def _api_request(self, method, url, /, **kwargs):
        try:
            return await super()._api_request(method, url, **kwargs)
        except web.HTTPError as e:
            if e.status_code == 500 and (e.log_message or "").startswith("Failed to connect"):
                raise web.HTTPError(503, HUB_DOWN) from None
            raise


class OpenAPIRoute:
    """``GET openapi.json``: the service's OpenAPI document, without a hub login.

    Mix in before the service's base handler; the document is the
    application's ``openapi`` setting.
    """

    route_name = "openapi"

    def get_current_user(self):
        return None

    def get(self) -> None:
        self.send(self.settings["openapi"])


class HealthRoute:
    """``GET health``: the core's health report, without a hub login."""

    route_name = "health"

    def get_current_user(self):
        return None

    def get(self) -> None:
        self.send(self.core.health())


#: The JupyterHub scope that reads metrics: the hub's own ``/hub/metrics`` asks for it, and
#: so does every service's ``metrics`` (a Prometheus service's token, docs/observability.md).
METRICS_SCOPE = "read:metrics"


def may_read_metrics(identity: dict[str, Any]) -> bool:
    """Whether the hub model of a caller (user or service) holds :data:`METRICS_SCOPE`.

    The model is what the hub answered about the caller's token: its ``scopes`` are the
    token's, so a token an admin made for Prometheus with only this scope (and
    ``access:services``) reads every ``metrics`` and nothing else.
    """
    return METRICS_SCOPE in (identity.get("scopes") or ())


def metrics_only(identity: dict[str, Any]) -> bool:
    """Whether a caller's token may read metrics and do nothing else anywhere.

    Its scopes are :data:`METRICS_SCOPE` and services' access scopes (to pass the
    services' logins): a service that checks only its access scope (tracking) refuses
    such a caller everything but ``metrics``.
    """
    scopes = set(identity.get("scopes") or ())
    return (
        identity.get("kind") == "service"
        and METRICS_SCOPE in scopes
        and all(s == METRICS_SCOPE or s.startswith("access:services") for s in scopes)
    )


class MetricsRoute:
    """``GET metrics``: Prometheus metrics of the process.

    For tokens with JupyterHub's ``read:metrics`` scope (a Prometheus service's) and
    for hub admins (a browser's login, whose token has only the service's scopes).
    """

    route_name = "metrics"
    #: what the service's base handler gives (``ServiceHandler``)
    hub_identity: Callable[[], dict[str, Any]]

    async def get(self) -> None:
        if not may_read_metrics(self.hub_identity()):
            caller = await self.caller()
            if not caller.admin:
                raise web.HTTPError(
                    403, f"Metrics are for hub admins and tokens with the {METRICS_SCOPE} scope."
                )
        body = await self.metrics_body()
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(body)

    async def metrics_body(self) -> bytes:
        """The exposition text: the process's default registry."""
        return generate_latest()


class NotFoundRoute:
    """Unknown paths under the prefix: a JSON 404 like every other error.

    Answered by the methods, not in ``prepare``: once a body sent with the request has
    come (an answer before it would close the connection under the hub's proxy).
    """

    def _not_found(self, *args: Any) -> None:
        raise web.HTTPError(404, "No such endpoint; the API is described at openapi.json.")

    get = head = post = put = patch = delete = options = _not_found
    _method_not_allowed = _not_found  # any other method (QUERY): not found either


def make_app(
    prefix: str,
    routes: Iterable[tuple[str, type[web.RequestHandler]]],
    *,
    base_handler: type[web.RequestHandler],
    not_found: type[web.RequestHandler],
    hub_auth: HubOAuth,
    service_name: str,
    build_openapi: Callable[[str], dict[str, Any]],
    **settings: Any,
) -> web.Application:
    """Return a service's tornado application, behind the hub's OAuth.

    Parameters
    ----------
    prefix : str
        The service's URL prefix, ending in ``/``; the OAuth callback is under it.
    routes : iterable of (str, handler class)
        The service's routes, already under the prefix.
    base_handler : handler class
        The service's base handler; it (and the OAuth callback) get ``hub_auth``.
    not_found : handler class
        The handler of every other path.
    hub_auth : jupyterhub.services.auth.HubOAuth
        The hub's authenticator for the service's token.
    service_name : str
        The service's name: its request log is ``shipyard.<service_name>``.
    build_openapi : callable
        ``build_openapi(prefix)``: the service's OpenAPI document, served by
        :class:`OpenAPIRoute` (the ``openapi`` setting).
    **settings
        More application settings (the core under the service's name).

    Returns
    -------
    tornado.web.Application
        The application, not yet listening.
    """
    app = web.Application(
        [(prefix + "oauth_callback", HubOAuthCallbackHandler), *routes],
        default_handler_class=not_found,
        hub_auth=hub_auth,
        cookie_secret=os.urandom(32),
        log_function=request_logger(f"shipyard.{service_name}"),
        openapi=build_openapi(prefix),
        **settings,
    )
    base_handler.hub_auth = hub_auth
    HubOAuthCallbackHandler.hub_auth = hub_auth
    return app


def listen(
    app: web.Application,
    service_url: str,
    max_discard_bytes: int | None = None,
    **options: Any,
) -> HTTPServer:
    """Start serving ``app`` where the hub's proxy sends the service's traffic.

    Parameters
    ----------
    app : tornado.web.Application
        The service's application (:func:`make_app`).
    service_url : str
        The service's URL (``JUPYTERHUB_SERVICE_URL``); port 80 and 127.0.0.1
        where it names none.
    max_discard_bytes : int, optional
        Largest request body the service's handlers read, throwing away what is
        over their limit, to answer it with a JSON 413 (the application's
        ``max_discard_bytes`` setting; by default
        :data:`~hub_ext.services.common.handlers.MAX_DISCARD_BYTES`).
    **options
        More ``HTTPServer`` options (``xheaders``; ``max_body_size``, which bounds
        only the bodies of handlers that do not stream them, such as the OAuth
        callback: a :class:`~hub_ext.services.common.handlers.ServiceHandler`
        raises it to the discard bound).

    Returns
    -------
    tornado.httpserver.HTTPServer
        The listening server; ``stop()`` it to stop accepting.
    """
    if max_discard_bytes is not None:
        app.settings["max_discard_bytes"] = max_discard_bytes
    url = urlparse(service_url)
    return app.listen(url.port or 80, url.hostname or "127.0.0.1", **options)


def request_logger(name: str) -> Callable[[web.RequestHandler], None]:
    """Return a tornado ``log_function`` that logs each request to the logger ``name``.

    Parameters
    ----------
    name : str
        The logger's name.

    Returns
    -------
    callable
        ``log(handler)``: one line a request, 5xx as warnings, 4xx as info, the
        rest as debug.
    """

    def log_request(handler: web.RequestHandler) -> None:
        # Never log query strings or headers: tokens and what a user typed stay out of
        # logs (SECURITY rule 8).
        status = handler.get_status()
        level = "warning" if status >= 500 else "info" if status >= 400 else "debug"
        getattr(logging.getLogger(name), level)(
            "%d %s %s %.1fms",
            status,
            handler.request.method,
            handler.request.path,
            1000 * handler.request.request_time(),
        )

    return log_request


def stop_event() -> asyncio.Event:
    """Return an event set on SIGTERM or SIGINT; call it in the running event loop.

    Returns
    -------
    asyncio.Event
        Set when the process is asked to stop.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
