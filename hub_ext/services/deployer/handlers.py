"""REST handlers of the deployer service: parse, call the core, serialise.

The services' base for hub users' handlers
(:class:`~hub_ext.services.common.handlers.UserServiceHandler`, the scheduler's
too) does the common part: JSON in and out, the hub's identity (HubOAuth: a
token, or the hub's cookie for browsers, with
``access:services!service=deployer``), a JSON 401 without a login, and one
error translator (the common ``errors`` carry their status; pydantic's
``ValidationError`` is a 400 listing each bad field; anything else a 500 with
the traceback only in the log). Only the service's core, its request counter
and the caller's check differ here; the OpenAPI, health, metrics and 404 routes
are the shared ones of :mod:`hub_ext.services.common.web`.

Every ``api/deployments/{name}`` route also takes ``?owner=`` for hub admins
(a non-admin naming someone else gets the 404 of a missing deployment).
Model traffic has its own handlers and authorization (:mod:`.router`).
"""

from __future__ import annotations

from pydantic import ValidationError
from tornado import web

from ..common.errors import ServiceError
from ..common.handlers import UserServiceHandler
from ..common.web import HealthRoute, MetricsRoute, NotFoundRoute, OpenAPIRoute
from . import replica_metrics
from .core import DeployerCore
from .metrics import REQUESTS
from .models import (
    CreateDeployment,
    CreateVersion,
    Grants,
    ListDeploymentsQuery,
    PromoteVersion,
    RollbackVersion,
    SetTraffic,
    UpdateDeployment,
)


class BaseHandler(UserServiceHandler):
    """The services' JSON handler base for hub users, for the deployer's core."""

    service_name = "deployer"
    core_setting = "deployer"
    request_counter = REQUESTS
    non_user_message = "Deployments belong to hub users; a service may only invoke models."

    @property
    def core(self) -> DeployerCore:
        return self.settings[self.core_setting]

    @property
    def owner(self) -> str | None:
        return self.query(ListDeploymentsQuery).owner or None

    @property
    def audit_owner(self) -> str | None:
        # the deployment's owner when the answer does not say (a refusal): ?owner= or the caller
        user = self.current_user
        try:
            owner = self.owner
        except (ServiceError, ValidationError):  # the query was refused: the caller's own
            owner = None
        return owner or (user.get("name") if isinstance(user, dict) else None)


class DeploymentsHandler(BaseHandler):
    route_name = "deployments"
    audit_actions = {"POST": "deployment.create"}
    audit_target = "deployment/{result[name]}"

    async def get(self) -> None:
        caller = await self.caller()
        query = self.query(ListDeploymentsQuery)
        self.send(await self.core.list_deployments(caller, query.owner))

    async def post(self) -> None:
        caller = await self.caller()
        request = self.parse(CreateDeployment)
        self.send(await self.core.create_deployment(caller, request, self.owner), 201)


class DeploymentHandler(BaseHandler):
    route_name = "deployment"
    audit_actions = {"PATCH": "deployment.scale", "DELETE": "deployment.delete"}
    audit_target = "deployment/{0}"

    async def get(self, name: str) -> None:
        caller = await self.caller()
        self.send(await self.core.get_deployment(caller, name, self.owner))

    async def patch(self, name: str) -> None:
        caller = await self.caller()
        request = self.parse(UpdateDeployment)
        self.send(await self.core.scale(caller, name, request.replicas, self.owner))

    async def delete(self, name: str) -> None:
        caller = await self.caller()
        await self.core.delete(caller, name, self.owner)
        self.no_content()


class VersionsHandler(BaseHandler):
    route_name = "versions"
    audit_actions = {"POST": "deployment.create"}
    audit_target = "deployment/{0}"

    async def post(self, name: str) -> None:
        caller = await self.caller()
        request = self.parse(CreateVersion)
        self.send(await self.core.create_version(caller, name, request, self.owner), 201)


class VersionHandler(BaseHandler):
    route_name = "version"

    async def get(self, name: str, version: str) -> None:
        caller = await self.caller()
        self.send(await self.core.get_version(caller, name, int(version), self.owner))


class LineageHandler(BaseHandler):
    route_name = "lineage"

    async def get(self, name: str, version: str) -> None:
        caller = await self.caller()
        # the caller's own header, passed on so the other services answer as to the caller;
        # a cookie-authenticated request has none (the answer says so)
        authorization = self.request.headers.get("Authorization")
        self.send(
            await self.core.version_lineage(caller, name, int(version), self.owner, authorization)
        )


class TrafficHandler(BaseHandler):
    route_name = "traffic"
    audit_actions = {"PUT": "deployment.traffic"}
    audit_target = "deployment/{0}"

    async def put(self, name: str) -> None:
        caller = await self.caller()
        request = self.parse(SetTraffic)
        self.send(await self.core.set_traffic(caller, name, request.as_versions(), self.owner))


class PromoteHandler(BaseHandler):
    route_name = "promote"
    audit_actions = {"POST": "deployment.promote"}
    audit_target = "deployment/{0}"

    async def post(self, name: str) -> None:
        caller = await self.caller()
        request = self.parse(PromoteVersion)
        self.send(
            await self.core.send_all(caller, name, request.version, self.owner, rollback=False)
        )


class RollbackHandler(BaseHandler):
    route_name = "rollback"
    audit_actions = {"POST": "deployment.rollback"}
    audit_target = "deployment/{0}"

    async def post(self, name: str) -> None:
        caller = await self.caller()
        request = self.parse(RollbackVersion)
        self.send(
            await self.core.send_all(caller, name, request.version, self.owner, rollback=True)
        )


class GrantsHandler(BaseHandler):
    route_name = "grants"
    audit_actions = {"PUT": "deployment.grant"}
    audit_target = "deployment/{0}"

    async def put(self, name: str) -> None:
        caller = await self.caller()
        request = self.parse(Grants)
        self.audit_details = request.model_dump()
        self.send(await self.core.set_grants(caller, name, request, self.owner))


class DeploymentMetricsHandler(BaseHandler):
    route_name = "deployment_metrics"

    async def get(self, name: str) -> None:
        caller = await self.caller()
        self.send(await self.core.deployment_metrics(caller, name, self.owner))


class OpenAPIHandler(OpenAPIRoute, BaseHandler):
    """This service's OpenAPI document."""


class HealthHandler(HealthRoute, BaseHandler):
    """Whether the service is up."""


class MetricsHandler(MetricsRoute, BaseHandler):
    """Prometheus metrics, for hub admins and tokens with ``read:metrics``."""


class ReplicaMetricsHandler(MetricsRoute, BaseHandler):
    """The ready replicas' own series, labelled with their deployment (:mod:`.replica_metrics`)."""

    route_name = "replica_metrics"

    async def metrics_body(self) -> bytes:
        core = self.core
        return await replica_metrics.scrape(list(core.router.routes.values()), core.backend)


class NotFoundHandler(NotFoundRoute, BaseHandler):
    """Unknown paths under the prefix: a JSON 404 like every other error."""


#: Deployment names in paths: the model's pattern (the body's name is validated by pydantic).
NAME = r"([a-z0-9][a-z0-9-]{0,39})"
VERSION = r"([1-9][0-9]{0,8})"

#: (path under the prefix, handler): the REST API. ``openapi.py`` describes exactly these.
API_TABLE = [
    ("openapi.json", OpenAPIHandler),
    ("health", HealthHandler),
    ("metrics", MetricsHandler),
    ("metrics/replicas", ReplicaMetricsHandler),
    ("api/deployments", DeploymentsHandler),
    (f"api/deployments/{NAME}", DeploymentHandler),
    (f"api/deployments/{NAME}/versions", VersionsHandler),
    (f"api/deployments/{NAME}/versions/{VERSION}", VersionHandler),
    (f"api/deployments/{NAME}/versions/{VERSION}/lineage", LineageHandler),
    (f"api/deployments/{NAME}/traffic", TrafficHandler),
    (f"api/deployments/{NAME}/promote", PromoteHandler),
    (f"api/deployments/{NAME}/rollback", RollbackHandler),
    (f"api/deployments/{NAME}/grants", GrantsHandler),
    (f"api/deployments/{NAME}/metrics", DeploymentMetricsHandler),
]


def routes(prefix: str) -> list[tuple[str, type[web.RequestHandler]]]:
    """The REST API's routes under the service prefix (``/services/deployer/``).

    Model traffic is the front's (:mod:`.front`): the control plane never routes it.
    """
    return [(prefix + path, handler) for path, handler in API_TABLE]
