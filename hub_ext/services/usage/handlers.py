"""REST handlers of the usage service: JSON in and out, one error translator.

Authentication is the hub's (HubOAuth: a token or the hub's cookie). The rule
is one: a hub admin reads everyone's usage; any other user reads only their
own, and another user's answers as a missing one (404), never as empty rows.
The hub services the app's ``monitors`` setting names (the alerts service)
read everyone's, as an admin. A token's user model carries ``admin`` and ``groups`` only when the token may
read them (a server's token may not), so the service asks the hub with its own
token (its role has ``read:users``) and caches the answer briefly.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from ..common.errors import Invalid, NotFound
from ..common.handlers import ServiceHandler
from ..common.web import HealthRoute, MetricsRoute, NotFoundRoute, OpenAPIRoute
from . import metrics
from .models import UsageQuery, UsageResponse, WasteQuery, WasteResponse, parse_timestamp

#: Seconds an answer of the hub about a user (admin flag, groups) is reused.
USER_CACHE_SECONDS = 30.0

#: The period of a report without ``since``, in days.
DEFAULT_DAYS = 30

#: The longest period of a ``by=day`` series, in days (one row a day).
MAX_SERIES_DAYS = 366


@dataclass(frozen=True)
class Caller:
    name: str
    admin: bool


class BaseHandler(ServiceHandler):
    """The services' JSON handler base; callers are hub users."""

    service_name = "usage"
    core_setting = "usage"
    request_counter = metrics.REQUESTS
    _users: dict[str, tuple[float, dict[str, Any]]] = {}

    async def hub_user(self, name: str) -> dict[str, Any]:
        """The hub's model of user ``name`` (``{}`` for none), cached briefly."""
        cached = self._users.get(name)
        if cached and time.monotonic() - cached[0] < USER_CACHE_SECONDS:
            return cached[1]
        auth = self.hub_auth
        request = HTTPRequest(
            f"{auth.api_url}/users/{name}",
            headers={"Authorization": f"token {auth.api_token}"},
            request_timeout=10,
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
            model = json.loads(response.body)
        except HTTPClientError as e:
            if e.code != 404:
                raise web.HTTPError(503, f"Cannot ask the hub who {name} is: {e}") from None
            model = {}
        self._users[name] = (time.monotonic(), model)
        return model

    async def caller(self) -> Caller:
        """The hub user making the request; 401 without a login, 403 for a service."""
        user = self.hub_identity()
        if user.get("kind", "user") != "user":
            if user.get("name") in self.settings.get("monitors", ()) and self.request.method in (
                "GET",
                "HEAD",
            ):
                # a monitoring service (the alerts service) reads everyone's usage as an
                # admin would; the app's ``monitors`` trait names it
                return Caller(user["name"], True)
            raise web.HTTPError(403, "Usage is read by hub users; services cannot.")
        if "admin" in user:
            return Caller(user["name"], bool(user["admin"]))
        return Caller(user["name"], bool((await self.hub_user(user["name"])).get("admin")))

    async def owner_filter(self, caller: Caller, user: str | None) -> str | None:
        """Whose usage the caller reads: None (everyone's) for an admin without ``user``."""
        if caller.admin:
            return user
        if user is not None and user != caller.name:
            raise NotFound(f"no usage of user {user!r}")
        return caller.name


class UsageHandler(BaseHandler):
    route_name = "usage"

    async def get(self) -> None:
        caller = await self.caller()
        query = self.query(UsageQuery)
        owner = await self.owner_filter(caller, query.user)
        until = parse_timestamp(query.until)
        until = time.time() if until is None else until
        since = parse_timestamp(query.since)
        since = until - DEFAULT_DAYS * 86400 if since is None else since
        if since >= until:
            raise Invalid("since must be before until")
        if query.by == "day" and until - since > MAX_SERIES_DAYS * 86400:
            raise Invalid(
                f"by=day covers at most {MAX_SERIES_DAYS} days: give a later since or an "
                "earlier until"
            )
        rows = await self.core.report(query.by, since, until, owner)
        self.send(
            UsageResponse.model_validate(
                {
                    "by": query.by,
                    "since": since,
                    "until": until,
                    "currency": self.core.currency,
                    "rows": rows,
                }
            )
        )


class WasteHandler(BaseHandler):
    route_name = "waste"

    async def get(self) -> None:
        caller = await self.caller()
        query = self.query(WasteQuery)
        owner = await self.owner_filter(caller, query.user)
        days = query.days or self.core.rightsizing_days
        self.send(WasteResponse.model_validate(await self.core.waste(days, owner)))


class OpenAPIHandler(OpenAPIRoute, BaseHandler):
    """The OpenAPI document, without a hub login."""


class HealthHandler(HealthRoute, BaseHandler):
    """Whether the service is up, without a hub login."""


class MetricsHandler(MetricsRoute, BaseHandler):
    """Prometheus metrics, for hub admins."""


class NotFoundHandler(NotFoundRoute, BaseHandler):
    """Unknown paths under the prefix: a JSON 404."""


def routes(prefix: str) -> list[tuple[str, type[web.RequestHandler]]]:
    """The route table under the service prefix (``/services/usage/``)."""
    table = [
        ("openapi.json", OpenAPIHandler),
        ("health", HealthHandler),
        ("metrics", MetricsHandler),
        ("api/usage", UsageHandler),
        ("api/usage/waste", WasteHandler),
    ]
    return [(prefix + path, handler) for path, handler in table]
