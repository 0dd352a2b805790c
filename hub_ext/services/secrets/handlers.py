"""REST handlers of the secrets service: parse, call the core, serialise.

Built on :class:`hub_ext.services.common.handlers.ServiceHandler` (the hub's
identity, JSON in and out, one error translator). Routes, under
``/services/secrets/``:

- ``GET api/secrets``: the caller's secrets (names and times, never values);
- ``GET api/secrets/{name}``, ``PUT api/secrets/{name}`` (``{"value": ...}``;
  201 created, 200 replaced), ``DELETE api/secrets/{name}`` (204);
- ``POST api/resolve``: values for a run or replica, for the scheduler and
  deployer services only (403 for anyone else);
- ``openapi.json``, ``health`` (no login) and ``metrics`` (hub admins).

A value is only ever in a PUT's body and a resolve's answer: never in a URL
(SECURITY rule 8), and request bodies are never logged.
"""

from __future__ import annotations

from tornado import web

from ..common.handlers import ServiceHandler
from ..common.web import HealthRoute, MetricsRoute, NotFoundRoute, OpenAPIRoute
from .core import Caller, SecretsCore
from .metrics import REQUESTS
from .models import ResolveSecrets, SetSecret


class BaseHandler(ServiceHandler):
    """The shared service handler, for the secrets core."""

    service_name = "secrets"
    request_counter = REQUESTS
    core_setting = "secrets"

    @property
    def core(self) -> SecretsCore:
        return self.settings["secrets"]

    @property
    def max_body_bytes(self) -> int:  # type: ignore[override]
        return self.core.max_request_bytes

    async def caller(self) -> Caller:
        """The hub user or service making the request; a JSON 401 without a login."""
        model = self.hub_identity()
        return Caller(
            name=model["name"],
            kind=model.get("kind", "user"),
            admin=bool(model.get("admin")),
            client=self.client_address,
        )


class SecretsHandler(BaseHandler):
    route_name = "secrets"

    async def get(self) -> None:
        self.send(await self.core.list_secrets(await self.caller()))


class SecretHandler(BaseHandler):
    route_name = "secret"

    async def get(self, name: str) -> None:
        self.send(await self.core.get_secret(await self.caller(), name))

    async def put(self, name: str) -> None:
        caller = await self.caller()
        request = self.parse(SetSecret)
        result = await self.core.set_secret(caller, name, request.value)
        self.send(result, 201 if result.created else 200)

    async def delete(self, name: str) -> None:
        await self.core.delete_secret(await self.caller(), name)
        self.no_content()


class ResolveHandler(BaseHandler):
    route_name = "resolve"

    async def post(self) -> None:
        caller = await self.caller()
        request = self.parse(ResolveSecrets)
        self.send(await self.core.resolve(caller, request))


class OpenAPIHandler(OpenAPIRoute, BaseHandler):
    """This service's OpenAPI document."""


class HealthHandler(HealthRoute, BaseHandler):
    """Whether the service is up."""

    async def get(self) -> None:
        self.send(await self.core.health())


class MetricsHandler(MetricsRoute, BaseHandler):
    """Prometheus metrics, for hub admins."""


class NotFoundHandler(NotFoundRoute, BaseHandler):
    """Unknown paths under the prefix: a JSON 404 like every other error."""


def routes(prefix: str) -> list[tuple[str, type[web.RequestHandler]]]:
    """The route table under the service prefix (``/services/secrets/``)."""
    table = [
        ("openapi.json", OpenAPIHandler),
        ("health", HealthHandler),
        ("metrics", MetricsHandler),
        ("api/secrets", SecretsHandler),
        ("api/secrets/([^/]+)", SecretHandler),
        ("api/resolve", ResolveHandler),
    ]
    return [(prefix + path, handler) for path, handler in table]
