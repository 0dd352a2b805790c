"""REST handlers of the alerts service: parse, call the core, serialise.

Routes, under ``/services/alerts/``:

- ``GET api/alerts``: the caller's alerts (an admin's: everyone's), open ones
  by default (``?include_resolved=true``, ``?state=``);
- ``GET api/alerts/{id}``: one alert; another user's answers as a missing one;
- ``GET api/targets``, ``PUT api/targets`` (``{"urls": [...]}``): the caller's
  own notification targets, shown redacted (they may hold tokens);
- ``openapi.json``, ``health`` (no login) and ``metrics`` (hub admins).

Whether a caller is an admin: a token's user model says so only when the
token may read it; otherwise the service asks the hub (``read:users``) and
keeps the answer briefly, as the audit service does.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from ..common.handlers import ServiceHandler
from ..common.web import HealthRoute, MetricsRoute, NotFoundRoute, OpenAPIRoute
from .core import AlertsCore, Caller
from .metrics import REQUESTS
from .models import ListAlertsQuery, SetTargets

#: Seconds an answer of the hub about a user's admin flag is reused.
ADMIN_CACHE_SECONDS = 60.0


class BaseHandler(ServiceHandler):
    """The shared service handler, for the alerts core."""

    service_name = "alerts"
    request_counter = REQUESTS
    core_setting = "alerts"
    max_body_bytes = 64 * 1024
    _admins: dict[str, tuple[float, bool]] = {}

    @property
    def core(self) -> AlertsCore:
        return self.settings["alerts"]

    async def _is_admin(self, user: dict[str, Any]) -> bool:
        if "admin" in user:
            return bool(user["admin"])
        name = user["name"]
        cached = self._admins.get(name)
        if cached and time.monotonic() - cached[0] < ADMIN_CACHE_SECONDS:
            return cached[1]
        auth = self.hub_auth
        request = HTTPRequest(
            f"{auth.api_url}/users/{name}",
            headers={"Authorization": f"token {auth.api_token}"},
            request_timeout=10,
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
            admin = bool(json.loads(response.body).get("admin"))
        except HTTPClientError as e:
            if e.code != 404:
                raise web.HTTPError(503, f"Cannot ask the hub who {name} is: {e}") from None
            admin = False
        self._admins[name] = (time.monotonic(), admin)
        return admin

    async def caller(self) -> Caller:
        """The hub user making the request; 401 without a login, 403 for a service."""
        user = self.hub_identity()
        if user.get("kind", "user") != "user":
            raise web.HTTPError(403, "Only hub users have alerts; services cannot call this.")
        return Caller(user["name"], await self._is_admin(user))


class AlertsHandler(BaseHandler):
    route_name = "alerts"

    async def get(self) -> None:
        caller = await self.caller()
        self.send(await self.core.list_alerts(caller, self.query(ListAlertsQuery)))


class AlertHandler(BaseHandler):
    route_name = "alert"

    async def get(self, alert_id: str) -> None:
        self.send(await self.core.get_alert(await self.caller(), alert_id))


class TargetsHandler(BaseHandler):
    route_name = "targets"

    async def get(self) -> None:
        self.send(await self.core.get_targets(await self.caller()))

    async def put(self) -> None:
        caller = await self.caller()
        request = self.parse(SetTargets)
        self.send(await self.core.set_targets(caller, request.urls))


class OpenAPIHandler(OpenAPIRoute, BaseHandler):
    """This service's OpenAPI document."""


class HealthHandler(HealthRoute, BaseHandler):
    """Whether the service is up."""


class MetricsHandler(MetricsRoute, BaseHandler):
    """Prometheus metrics, for hub admins."""


class NotFoundHandler(NotFoundRoute, BaseHandler):
    """Unknown paths under the prefix: a JSON 404 like every other error."""


#: (path under the prefix, handler): the REST API. ``openapi.py`` describes exactly these.
API_TABLE = [
    ("openapi.json", OpenAPIHandler),
    ("health", HealthHandler),
    ("metrics", MetricsHandler),
    ("api/alerts", AlertsHandler),
    ("api/alerts/([0-9a-f]{32})", AlertHandler),
    ("api/targets", TargetsHandler),
]


def routes(prefix: str) -> list[tuple[str, type[web.RequestHandler]]]:
    """The route table under the service prefix (``/services/alerts/``)."""
    return [(prefix + path, handler) for path, handler in API_TABLE]
