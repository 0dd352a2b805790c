"""Model traffic: ``models/{owner}/{name}/invocations`` to the replicas of its versions.

Every request to a deployment goes through here, so this module is about
three things: who may call, where a request goes, and never failing a
client for the deployer's own reasons.

**Who may call** (SECURITY rule 2, default deny). A hub API token
(``Authorization: token …`` or ``Bearer …``; never a cookie, never ``?token=``)
is identified through :class:`~jupyterhub.services.auth.HubAuth`, whose
answers are cached for a few seconds so the hub is not asked per request.
Then, in this order:

1. no token, or one the hub does not know: **401**;
2. a token whose scopes lack ``custom:models:invoke`` for the deployment's
   owner (the scope may be filtered ``!user=<owner>``): **403**, whether or
   not the deployment exists, so the answer reveals nothing;
3. the caller is neither the owner, a hub admin, nor in the deployment's
   grants (users, groups, services), or there is no such deployment:
   **404**, identical for both (SECURITY rule 3: the caller may not know it
   exists).

**Where a request goes.** The split's versions are chosen by smooth
weighted round-robin (nginx's: exact shares over any 100 requests, no
bursts), skipping versions whose circuit breaker is open (:mod:`.breaker`)
or that have no healthy replica; a version's replicas are used in turn.
``…/v/{version}/invocations`` pins one version.

**Never failing a client for the deployer's reasons.** The body limit (413,
from ``Content-Length`` before anything is read, and while a chunked body
streams in) and the content type (415: JSON or CSV only, SECURITY rule 5)
are checked before forwarding. A connection error to one replica (it is
stopping, or died) is retried once on another healthy replica of the same
version, else of another version of the split: model requests are
predictions, safe to send twice. That retry is what keeps a rollout at zero
failed requests: a replica that got SIGTERM refuses new connections while it
finishes the requests it has. Tokens are never logged (only the path).

Forwarding uses tornado's ``AsyncHTTPClient`` with ``max_clients`` sized by
``c.DeployerService.max_concurrent_requests``; the curl client (keep-alive
connections to replicas) when ``pycurl`` is installed, the simple client
(one loopback connection per request) otherwise.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from jupyterhub.services.auth import HubAuth, check_scopes
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse

from hub_ext.audit import emit

from .backend import Backend, version_key
from .breaker import Breakers
from .metrics import MODEL_LATENCY, MODEL_REQUESTS, RETRIES, VersionWindow
from .models import DescribeDeployment

log = logging.getLogger("shipyard.deployer.router")

#: The scope a token needs to invoke models (defined in the hub's config).
INVOKE_SCOPE = "custom:models:invoke"
#: Request body types the model servers accept (MLflow's scoring protocol).
CONTENT_TYPES = ("application/json", "text/csv")


@dataclass
class Route:
    """What the router knows of one deployment: its split, versions and grants."""

    owner: str
    name: str
    traffic: dict[int, int]
    keys: dict[int, str]
    ready: set[int]
    users: frozenset[str]
    groups: frozenset[str]
    services: frozenset[str]
    weights: dict[int, int] = field(default_factory=dict)  # smooth WRR state

    @classmethod
    def of(cls, d: DescribeDeployment) -> Route:
        return cls(
            owner=d.owner,
            name=d.name,
            traffic={int(v): s for v, s in d.traffic.items()},
            keys={v.version: version_key(d.owner, d.name, v.version) for v in d.versions},
            ready={v.version for v in d.versions if v.state == "ready"},
            users=frozenset(d.grants.users),
            groups=frozenset(d.grants.groups),
            services=frozenset(d.grants.services),
        )


class ModelRouter:
    """The routing table and the forwarding of model requests (see the module docstring)."""

    def __init__(
        self,
        backend: Backend,
        breakers: Breakers,
        hub_auth: HubAuth,
        groups_of,
        max_body_bytes: int,
        timeout: float,
        max_clients: int = 256,
        window_seconds: float = 60.0,
    ):
        self.backend = backend
        self.breakers = breakers
        self.hub_auth = hub_auth
        self.groups_of = groups_of
        self.max_body_bytes = max_body_bytes
        self.timeout = timeout
        self.window_seconds = window_seconds
        self.routes: dict[tuple[str, str], Route] = {}
        self.windows: dict[str, VersionWindow] = {}
        self._turn: dict[str, int] = {}
        try:
            import pycurl  # noqa: F401

            impl = "tornado.curl_httpclient.CurlAsyncHTTPClient"
        except ImportError:
            impl = None
        AsyncHTTPClient.configure(impl, max_clients=max_clients)
        self.client = AsyncHTTPClient(force_instance=True, max_clients=max_clients)

    # ----------------------------------------------------------- the table

    def update(self, deployment: DescribeDeployment) -> None:
        old = self.routes.get((deployment.owner, deployment.name))
        route = Route.of(deployment)
        if old is not None and old.traffic == route.traffic:
            route.weights = old.weights
        self.routes[(deployment.owner, deployment.name)] = route

    def remove(self, owner: str, name: str) -> None:
        self.routes.pop((owner, name), None)

    def window(self, key: str) -> VersionWindow:
        window = self.windows.get(key)
        if window is None:
            window = self.windows[key] = VersionWindow(self.window_seconds)
        return window

    # ---------------------------------------------------------------- auth

    async def authorize(self, handler: web.RequestHandler, owner: str, name: str) -> Route:
        """The route of ``owner/name`` if the request's token may invoke it; else an HTTP error.

        A refusal is recorded in the audit trail (``model.invoke_denied``) with the caller,
        if the hub knows the token, and the reason the caller was given.
        """
        handler.invoker = None
        try:
            return await self._authorize(handler, owner, name)
        except web.HTTPError as e:
            if not handler.request.path.endswith("/invocations"):
                raise  # a refused health check is not a refused model call
            caller = handler.invoker or {}
            emit(
                "model.invoke_denied",
                actor=caller.get("name"),
                actor_kind=caller.get("kind", "user") if caller else "anonymous",
                target=f"deployment/{name}",
                owner=owner,
                outcome="denied",
                reason="not found" if e.status_code == 404 else e.log_message,
                client=handler.request.remote_ip,
                details={"status": e.status_code, "path": handler.request.path},
            )
            raise

    async def _authorize(self, handler: web.RequestHandler, owner: str, name: str) -> Route:
        match = HubAuth.auth_header_pat.match(handler.request.headers.get("Authorization", ""))
        if not match:
            raise web.HTTPError(
                401,
                "A hub API token is needed: send 'Authorization: token <token>' "
                "(in a Shipyard server, $JUPYTERHUB_API_TOKEN).",
            )
        model = await self.hub_auth.user_for_token(match.group(1), sync=False)
        if not model:
            raise web.HTTPError(401, "The hub does not know this token (expired or revoked?).")
        handler.invoker = model
        if not check_scopes({f"{INVOKE_SCOPE}!user={owner}"}, set(model.get("scopes") or ())):
            raise web.HTTPError(
                403,
                f"This token's scopes do not include {INVOKE_SCOPE} for models of {owner!r}: "
                "create a token with that scope.",
            )
        route = self.routes.get((owner, name))
        if route is None or not await self._granted(model, route):
            raise web.HTTPError(404, f"no deployment {owner}/{name}")
        return route

    async def _granted(self, model: dict[str, Any], route: Route) -> bool:
        who = model.get("name", "")
        if model.get("kind", "user") == "service":
            return who in route.services
        if who == route.owner or model.get("admin") or who in route.users:
            return True
        if route.groups:
            return bool(route.groups & set(await self.groups_of(who)))
        return False

    # ------------------------------------------------------------ choosing

    def candidates(self, route: Route, pinned: int | None = None) -> list[int]:
        """Versions a request may go to now: routable by breaker, with healthy replicas."""
        if pinned is not None:
            if pinned in route.ready and self.backend.endpoints(route.keys[pinned]):
                return [pinned]
            return []
        live = [
            v
            for v, share in route.traffic.items()
            if share > 0 and v in route.keys and self.backend.endpoints(route.keys[v])
        ]
        closed = [v for v in live if self.breakers[route.keys[v]].routable()]
        for v in live:  # an open breaker serves only when nothing else can
            self.breakers[route.keys[v]].serving = not closed
        return closed or live

    @staticmethod
    def pick(route: Route, candidates: list[int]) -> int:
        """Smooth weighted round-robin over the candidates' shares."""
        total = 0
        best = None
        for v in candidates:
            share = route.traffic.get(v, 0) or 1
            total += share
            route.weights[v] = route.weights.get(v, 0) + share
            if best is None or route.weights[v] > route.weights[best]:
                best = v
        route.weights[best] -= total
        return best

    def _endpoint(self, key: str, exclude: str | None = None) -> str | None:
        endpoints = [e for e in self.backend.endpoints(key) if e != exclude]
        if not endpoints:
            return None
        turn = self._turn.get(key, 0)
        self._turn[key] = turn + 1
        return endpoints[turn % len(endpoints)]

    # ---------------------------------------------------------- forwarding

    async def _fetch(self, key: str, endpoint: str, body: bytes, content_type: str) -> HTTPResponse:
        request = HTTPRequest(
            endpoint.rstrip("/") + "/invocations",
            method="POST",
            body=body,
            headers={
                "Content-Type": content_type,
                "Accept": "application/json",
                **self.backend.request_headers(key),
            },
            connect_timeout=5,
            request_timeout=self.timeout + 5,
            decompress_response=False,
            follow_redirects=False,
        )
        return await self.client.fetch(request, raise_error=False)

    @staticmethod
    def _unreachable(response: HTTPResponse) -> bool:
        """A connection error (refused, reset, closed): safe to send elsewhere. Not a timeout."""
        return response.code == 599 and "timeout" not in str(response.error).lower()

    async def forward(
        self, route: Route, body: bytes, content_type: str, pinned: int | None = None
    ) -> tuple[int, int, str, bytes]:
        """Send a request; return ``(version, status, content_type, body)``."""
        candidates = self.candidates(route, pinned)
        if not candidates:
            return (
                0,
                503,
                "application/json",
                _error_body(
                    503,
                    "UNAVAILABLE",
                    "The model has no ready replica right now (starting, or failed: see "
                    "GET api/deployments/<name>); try again shortly.",
                ),
            )
        version = self.pick(route, candidates) if pinned is None else pinned
        key = route.keys[version]
        endpoint = self._endpoint(key)
        started = time.perf_counter()
        response = await self._fetch(key, endpoint, body, content_type)
        if self._unreachable(response):
            retry_version, retry_endpoint = version, self._endpoint(key, exclude=endpoint)
            if retry_endpoint is None and pinned is None:
                others = [v for v in self.candidates(route) if v != version]
                if others:
                    retry_version = self.pick(route, others)
                    retry_endpoint = self._endpoint(route.keys[retry_version])
            if retry_endpoint is not None:
                RETRIES.labels(route.owner, route.name, str(version)).inc()
                log.info("Retrying %s/%s v%d on another replica", route.owner, route.name, version)
                version, key = retry_version, route.keys[retry_version]
                response = await self._fetch(key, retry_endpoint, body, content_type)
        elapsed = time.perf_counter() - started
        if response.code == 599:
            timed_out = not self._unreachable(response)
            status = 504 if timed_out else 502
            reply = _error_body(
                status,
                "TIMEOUT" if timed_out else "UNAVAILABLE",
                "The model did not answer in time." if timed_out else "No replica answered.",
            )
            reply_type = "application/json"
        else:
            status = response.code
            reply = response.body or b""
            reply_type = response.headers.get("Content-Type", "application/json")
        ok = status < 500
        self.breakers[key].record(ok)
        self.window(key).record(elapsed, ok, status)
        labels = (route.owner, route.name, str(version))
        MODEL_REQUESTS.labels(*labels, str(status)).inc()
        MODEL_LATENCY.labels(*labels).observe(elapsed)
        return version, status, reply_type, reply


def _error_body(status: int, code: str, message: str) -> bytes:
    return json.dumps({"status": status, "error_code": code, "message": message}).encode()


class _ModelHandler(web.RequestHandler):
    """JSON errors, no cookies, the security headers of the API."""

    @property
    def router(self) -> ModelRouter:
        return self.settings["model_router"]

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", "frame-ancestors 'none'")

    def check_xsrf_cookie(self) -> None:
        return  # token-authenticated only: cookies are never read here

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, web.HTTPError) and error.log_message:
            message = error.log_message % error.args if error.args else error.log_message
        elif status_code >= 500:
            message = "Internal error in the deployer; the admin finds the details in its log."
        else:
            message = self._reason
        codes = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}
        code = codes.get(status_code, "BAD_REQUEST" if status_code < 500 else "INTERNAL_ERROR")
        code = {413: "REQUEST_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}.get(status_code, code)
        self.set_header("Content-Type", "application/json")
        self.finish(_error_body(status_code, code, message))

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, web.HTTPError) and value.status_code < 500:
            return  # answered as JSON; the access log has the status
        super().log_exception(typ, value, tb)


@web.stream_request_body
class InvocationHandler(_ModelHandler):
    """``POST models/{owner}/{name}[/v/{version}]/invocations``."""

    async def prepare(self) -> None:
        owner, name, *rest = self.path_args
        self.pinned = int(rest[0]) if rest and rest[0] else None
        self.route = await self.router.authorize(self, owner, name)
        if self.request.method != "POST":
            return
        if self.pinned is not None and self.pinned not in self.route.keys:
            raise web.HTTPError(404, f"deployment {owner}/{name} has no version {self.pinned}")
        limit = self.router.max_body_bytes
        length = self.request.headers.get("Content-Length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            raise web.HTTPError(413, f"The request body is over the limit of {limit} bytes.")
        media = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media not in CONTENT_TYPES:
            raise web.HTTPError(
                415,
                f"Send the inputs as application/json or text/csv, not {media or 'no type'!r}.",
            )
        self.media = self.request.headers["Content-Type"]
        self.chunks: list[bytes] = []
        self.size = 0

    def data_received(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size <= self.router.max_body_bytes:
            self.chunks.append(chunk)
        else:
            self.chunks = []

    async def post(self, owner: str, name: str, version: str | None = None) -> None:
        if self.size > self.router.max_body_bytes:
            raise web.HTTPError(
                413, f"The request body is over the limit of {self.router.max_body_bytes} bytes."
            )
        served, status, content_type, body = await self.router.forward(
            self.route, b"".join(self.chunks), self.media, self.pinned
        )
        self.set_status(status)
        self.set_header("Content-Type", content_type)
        if served:
            self.set_header("X-Shipyard-Model-Version", str(served))
        self.finish(body)


class ModelHealthHandler(_ModelHandler):
    """``GET models/{owner}/{name}/health``: 200 while some version of the split can answer."""

    async def get(self, owner: str, name: str) -> None:
        route = await self.router.authorize(self, owner, name)
        versions = {
            str(v): {
                "traffic": route.traffic.get(v, 0),
                "replicas_ready": len(self.router.backend.endpoints(key)),
                "breaker_open": self.router.breakers.describe(key).open,
            }
            for v, key in sorted(route.keys.items())
            if v in route.ready
        }
        ready = bool(self.router.candidates(route))
        self.set_status(200 if ready else 503)
        self.set_header("Content-Type", "application/json")
        self.finish({"status": "ready" if ready else "unavailable", "versions": versions})


def model_routes(prefix: str) -> list[tuple[str, type[web.RequestHandler]]]:
    """Model traffic routes under the service prefix."""
    base = prefix + r"models/([^/]+)/([a-z0-9-]+)"
    return [
        (base + r"/invocations()", InvocationHandler),
        (base + r"/v/([1-9][0-9]{0,8})/invocations", InvocationHandler),
        (base + r"/health", ModelHealthHandler),
    ]
