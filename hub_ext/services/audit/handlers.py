"""REST handlers of the audit service: admins only, JSON in and out, one error translator.

Authentication is the hub's (HubOAuth: a token or the hub's cookie);
authorization is one rule, checked by :meth:`BaseHandler.admin`: the caller
must be a hub admin. A token's user model carries ``admin`` only when the
token may read it (a server's token, as the JupyterLab panel uses, may not),
so when the field is missing the service asks the hub with its own token
(its role has ``read:users``) and caches the answer briefly. A non-admin
gets 403, a request without a login 401. Every read is itself recorded
(``audit.read``), refusals included, through the services' generic
mechanism (:mod:`hub_ext.services.common.audit`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from hub_ext.audit.query import QueryError, list_records, parse_filters
from hub_ext.audit.verify import verify

from ..common.errors import Invalid
from ..common.handlers import ServiceHandler
from ..common.web import HealthRoute, MetricsRoute, NotFoundRoute, OpenAPIRoute
from .metrics import REQUESTS
from .models import ListRecordsResponse, VerifyResponse

#: Seconds an answer of the hub about a user's admin flag is reused.
ADMIN_CACHE_SECONDS = 30.0


@dataclass(frozen=True)
class Caller:
    name: str
    admin: bool


class BaseHandler(ServiceHandler):
    """The services' JSON handler base, admins only."""

    service_name = "audit"
    core_setting = "audit"
    request_counter = REQUESTS
    _admins: dict[str, tuple[float, bool]] = {}

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, QueryError):  # a filter the admin can fix: 400 with the message
            e = Invalid(str(e))
        super()._handle_request_exception(e)

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
            if e.code == 404:
                admin = False
            else:
                raise web.HTTPError(503, f"Cannot ask the hub who {name} is: {e}") from None
        self._admins[name] = (time.monotonic(), admin)
        return admin

    async def caller(self) -> Caller:
        """The hub user making the request; 401 without a login."""
        user = self.hub_identity()
        if user.get("kind", "user") != "user":
            return Caller(user["name"], False)
        return Caller(user["name"], await self._is_admin(user))

    async def admin(self) -> Caller:
        """The caller if a hub admin; 401 without a login, 403 otherwise."""
        caller = await self.caller()
        if not caller.admin:
            raise web.HTTPError(403, "The audit trail is for hub admins.")
        return caller


class RecordsHandler(BaseHandler):
    route_name = "records"
    audit_actions = {"GET": "audit.read"}
    audit_target = "audit/records"

    async def get(self) -> None:
        await self.admin()
        args = self.query_arguments()  # the shared guard: number, length, Unicode, as sent
        unknown = sorted(set(args) - {"user", "action", "since", "limit", "before"})
        if unknown:
            raise QueryError(
                f"unknown filter(s) {', '.join(unknown)}: use user, action, since, limit, before"
            )
        filters = parse_filters(**args)
        self.audit_details = {k: v for k, v in args.items() if k in ("user", "action", "since")}
        records = await self.core.run(list_records, self.core.engine, filters)
        more = len(records) == filters.limit and records and records[-1]["seq"] > 1
        self.send(
            ListRecordsResponse.model_validate(
                {"records": records, "next_before": records[-1]["seq"] if more else None}
            )
        )


class VerifyHandler(BaseHandler):
    route_name = "verify"
    audit_actions = {"GET": "audit.read"}
    audit_target = "audit/verify"

    async def get(self) -> None:
        await self.admin()
        report = await self.core.run(verify, self.core.settings)
        self.audit_details = {"ok": report.ok, "problems": len(report.problems)}
        self.send(VerifyResponse.model_validate(report.to_dict()))


class OpenAPIHandler(OpenAPIRoute, BaseHandler):
    """The OpenAPI document, without a hub login."""


class HealthHandler(HealthRoute, BaseHandler):
    """Whether the service is up, without a hub login."""


class MetricsHandler(MetricsRoute, BaseHandler):
    """Prometheus metrics, for hub admins."""


class NotFoundHandler(NotFoundRoute, BaseHandler):
    """Unknown paths under the prefix: a JSON 404."""


def routes(prefix: str) -> list[tuple[str, type[web.RequestHandler]]]:
    """The route table under the service prefix (``/services/audit/``)."""
    table = [
        ("openapi.json", OpenAPIHandler),
        ("health", HealthHandler),
        ("metrics", MetricsHandler),
        ("api/records", RecordsHandler),
        ("api/verify", VerifyHandler),
    ]
    return [(prefix + path, handler) for path, handler in table]
