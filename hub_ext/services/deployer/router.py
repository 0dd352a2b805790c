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

**While the hub is down** (a crash, a restart) the services keep running and
the models keep answering. A token the router identified in the last
``c.DeployerService.auth_stale_seconds`` (5 minutes) keeps its last answer
from the hub, and so do the caller's groups, until the hub answers again; a
token not seen in that window cannot be checked: **503** with ``Retry-After``
(never a 401 or 404: nothing was refused). Only a hub that cannot be reached
is answered from stale entries; any answer the hub gives (an unknown token, a
403, a 5xx) is used as it is. The window is also how long a token revoked
just before or during an outage may still invoke (the hub cannot revoke
anything while it is down).

**Where a request goes.** The split's versions are chosen by smooth
weighted round-robin (nginx's: exact shares over any 100 requests, no
bursts), skipping versions whose circuit breaker is open (:mod:`.breaker`)
or that have no healthy replica; a version's replicas are used in turn.
``…/v/{version}/invocations`` pins one version.

**Never failing a client for the deployer's reasons.** The body limit (413)
and the content type (415: JSON or CSV only, SECURITY rule 5) are checked
before forwarding. A request refused here while its body is still coming
(401, 403, 404, 413, 415) is answered only once that body has been read and
thrown away, up to ``c.DeployerService.max_discard_size``: the hub's proxy
(configurable-http-proxy) sends a body without waiting for
``Expect: 100-continue``, and a connection closed under it becomes the hub's
HTML 503 page instead of this JSON answer. Past that bound the connection is
closed. A body is never kept beyond the limit.

Model requests are predictions: **safe to send twice**. So a request whose
replica refuses the connection or drops it before answering (a replica that
got SIGTERM refuses new connections while it finishes the others; one killed
by ``kill -9`` or the OOM killer resets them), or answers 503 (a model server
that is stopping or loading says so, and has not run the request), is sent
once more, to another ready replica of the same version, else of another
version of the split. Tornado raises connection errors even with
``raise_error=False``, so they are caught as exceptions (:func:`_failure`).
A replica that failed so is passed over for :data:`SUSPECT_SECONDS` by every
request, until the backend notices it.
When no replica can take a request now but its version is ready (a replica
restarting), the request waits, in a queue of at most
``c.DeployerService.max_queued_requests``, for up to
``c.DeployerService.queue_timeout`` seconds; only then, or when the queue is
full, the caller gets 503 with ``Retry-After``. A timeout (the model took too
long) is never resent: 504. A version that is not ready (failed, stopped,
still starting) answers 503 at once: no replica is coming. Tokens are never
logged (only the path).

Rejected alternatives: resending any 5xx (a model that raises would run
twice for nothing, and a 500 is the model's answer); an unbounded queue (a
dead model would hold every client and its body); a notification from the
backend instead of looking at :meth:`Backend.endpoints` every
:data:`QUEUE_POLL_SECONDS` while requests wait (the backend interface has
none, and the look is an in-memory read).

Forwarding uses tornado's ``AsyncHTTPClient`` with ``max_clients`` sized by
``c.DeployerService.max_concurrent_requests``; the curl client (keep-alive
connections to replicas) when ``pycurl`` is installed, the simple client
(one loopback connection per request) otherwise.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from jupyterhub.services.auth import HubAuth, check_scopes
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.iostream import StreamClosedError

from hub_ext.audit import emit

from ..common.web import HUB_DOWN
from .backend import version_key
from .breaker import Breakers
from .metrics import MODEL_LATENCY, MODEL_REQUESTS, RETRIES, VersionWindow
from .models import DescribeDeployment

log = logging.getLogger("shipyard.deployer.router")

#: The scope a token needs to invoke models (defined in the hub's config).
INVOKE_SCOPE = "custom:models:invoke"
#: Request body types the model servers accept (MLflow's scoring protocol).
CONTENT_TYPES = ("application/json", "text/csv")
#: Seconds a replica that refused or dropped a connection is passed over by every request.
#: A replica that got SIGTERM refuses connections while the backend still lists it (until
#: its next health check); one that was killed is usually gone from the list at once.
SUSPECT_SECONDS = 2.0
#: Seconds between two looks at the backend's replicas while requests wait for one.
QUEUE_POLL_SECONDS = 0.05
#: Seconds a caller is told to wait (``Retry-After``) while the hub cannot be reached.
HUB_RETRY_SECONDS = 2
#: Most tokens (and users' groups) whose last answer from the hub is kept for an outage.
STALE_ENTRIES = 10_000


class HubUnreachable(web.HTTPError):
    """503: the hub cannot be reached and has no recent answer for this caller."""

    def __init__(self) -> None:
        super().__init__(503, HUB_DOWN)


def _hub_unreachable(error: BaseException) -> bool:
    """Whether ``error`` says the hub could not be reached (not an answer of the hub's).

    ``HubOAuth`` (:mod:`..common.web`) turns a failed connection into a 503 with
    :data:`HUB_DOWN`; the groups lookup raises the HTTP client's own errors.
    """
    if isinstance(error, web.HTTPError):
        return error.status_code == 503 and error.log_message == HUB_DOWN
    if isinstance(error, HTTPClientError):
        return error.code == 599
    return isinstance(error, OSError | StreamClosedError | TimeoutError)


class LastGood:
    """The hub's last answer per key, served for ``stale_seconds`` while it is unreachable."""

    def __init__(self, stale_seconds: float, limit: int = STALE_ENTRIES):
        self.stale_seconds = stale_seconds
        self.limit = limit
        self._entries: dict[str, tuple[float, Any]] = {}

    def put(self, key: str, value: Any) -> None:
        if self.stale_seconds <= 0:
            return
        self._entries.pop(key, None)  # re-inserted last: the dict stays oldest first
        self._entries[key] = (time.monotonic(), value)
        if len(self._entries) > self.limit:
            horizon = time.monotonic() - self.stale_seconds
            self._entries = {k: v for k, v in self._entries.items() if v[0] >= horizon}
            while len(self._entries) > self.limit:
                del self._entries[next(iter(self._entries))]

    def drop(self, key: str) -> None:
        self._entries.pop(key, None)

    def get(self, key: str) -> Any:
        """The value kept for ``key`` if it is recent enough; else raise :class:`HubUnreachable`."""
        entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry[0] > self.stale_seconds:
            raise HubUnreachable()
        return entry[1]


@dataclass
class Answer:
    """The router's answer to one model request."""

    status: int
    body: bytes
    content_type: str = "application/json"
    #: the version that answered; 0 when none did
    version: int = 0
    headers: dict[str, str] = field(default_factory=dict)


def _failure(error: BaseException) -> str | None:
    """How a request to a replica ended without an answer, or None for any other error.

    ``"unreachable"``: the connection was refused, reset or closed before an answer, or
    could not be made in time; safe to send elsewhere (model calls are predictions).
    ``"timeout"``: the model did not answer in time; never resent. Tornado's simple
    client raises ``ConnectionRefusedError`` and ``HTTPStreamClosedError``, the curl
    client ``CurlError``; both raise ``HTTPTimeoutError``-like 599 errors for timeouts
    ("Timeout while connecting" and curl's "Connection timed out" are unreachable).
    """
    if isinstance(error, TimeoutError):
        return "timeout"
    no_answer = isinstance(error, HTTPClientError) and error.code == 599
    if not (no_answer or isinstance(error, OSError | StreamClosedError)):
        return None
    text = str(error).lower()
    if ("timeout" in text or "timed out" in text) and "connect" not in text:
        return "timeout"
    return "unreachable"


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

    def to_wire(self) -> dict[str, Any]:
        """The route as JSON, for the deployer's front (:mod:`.front`)."""
        return {
            "owner": self.owner,
            "name": self.name,
            "traffic": {str(v): s for v, s in self.traffic.items()},
            "keys": {str(v): k for v, k in self.keys.items()},
            "ready": sorted(self.ready),
            "users": sorted(self.users),
            "groups": sorted(self.groups),
            "services": sorted(self.services),
        }

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> Route:
        return cls(
            owner=wire["owner"],
            name=wire["name"],
            traffic={int(v): s for v, s in wire["traffic"].items()},
            keys={int(v): k for v, k in wire["keys"].items()},
            ready=set(wire["ready"]),
            users=frozenset(wire["users"]),
            groups=frozenset(wire["groups"]),
            services=frozenset(wire["services"]),
        )


class Replicas(Protocol):
    """What the router reads of the replicas: the backend's, as the front was last told."""

    def endpoints(self, key: str) -> list[str]: ...

    def request_headers(self, key: str) -> Mapping[str, str]: ...


class ModelRouter:
    """The routing table and the forwarding of model requests (see the module docstring)."""

    def __init__(
        self,
        backend: Replicas,
        breakers: Breakers,
        hub_auth: HubAuth,
        groups_of,
        max_body_bytes: int,
        timeout: float,
        max_clients: int = 256,
        window_seconds: float = 60.0,
        queue_timeout: float = 10.0,
        max_queued: int = 256,
        max_discard_bytes: int = 128 * 1024**2,
        auth_stale_seconds: float = 300.0,
    ):
        self.backend = backend
        self.breakers = breakers
        self.hub_auth = hub_auth
        self.groups_of = groups_of
        self.max_body_bytes = max_body_bytes
        self.timeout = timeout
        self.window_seconds = window_seconds
        self.queue_timeout = queue_timeout
        self.max_queued = max_queued
        self.max_discard_bytes = max(max_discard_bytes, max_body_bytes)
        #: the hub's last answers (identities, groups), for while it cannot be reached
        self.last_identity = LastGood(auth_stale_seconds)
        self.last_groups = LastGood(auth_stale_seconds)
        #: requests waiting for a replica now, and requests being routed
        self.queued = 0
        self.active = 0
        #: replica URL -> until when it is passed over (it refused or dropped a connection)
        self._suspects: dict[str, float] = {}
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

    def update(self, route: Route) -> None:
        old = self.routes.get((route.owner, route.name))
        if old is not None and old.traffic == route.traffic:
            route.weights = old.weights
        self.routes[(route.owner, route.name)] = route

    def remove(self, owner: str, name: str) -> None:
        self.routes.pop((owner, name), None)

    def set_window(self, seconds: float) -> None:
        """Cover ``seconds`` from now on, in every version's window and in new ones."""
        self.window_seconds = seconds
        for window in self.windows.values():
            window.seconds = seconds

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
            if not handler.request.path.endswith("/invocations") or e.status_code >= 500:
                raise  # a refused health check, or the hub unreachable: not a refused call
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
        model = await self._identify(match.group(1))
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

    async def _identify(self, token: str) -> dict[str, Any] | None:
        """The hub's model of ``token`` (None: unknown); its last one while the hub is down."""
        key = hashlib.sha256(token.encode("utf8", "replace")).hexdigest()
        try:
            model = await self.hub_auth.user_for_token(token, sync=False)
        except Exception as e:
            if not _hub_unreachable(e):
                raise
            return self.last_identity.get(key)
        if model:
            self.last_identity.put(key, model)
        else:
            self.last_identity.drop(key)
        return model

    async def _groups(self, who: str) -> set[str]:
        """The hub groups of user ``who``; their last known ones while the hub is down."""
        try:
            groups = set(await self.groups_of(who))
        except Exception as e:
            if not _hub_unreachable(e):
                raise
            return self.last_groups.get(who)
        self.last_groups.put(who, groups)
        return groups

    async def _granted(self, model: dict[str, Any], route: Route) -> bool:
        who = model.get("name", "")
        if model.get("kind", "user") == "service":
            return who in route.services
        if who == route.owner or model.get("admin") or who in route.users:
            return True
        if route.groups:
            return bool(route.groups & await self._groups(who))
        return False

    # ------------------------------------------------------------ choosing

    def _usable(self, key: str, exclude: frozenset[str] | set[str] = frozenset()) -> list[str]:
        """The healthy replicas of ``key`` a request may go to: not suspect, not excluded."""
        endpoints = self.backend.endpoints(key)
        if not self._suspects and not exclude:
            return endpoints
        now = time.monotonic()
        return [e for e in endpoints if e not in exclude and self._suspects.get(e, 0) <= now]

    def _suspect(self, endpoint: str) -> None:
        now = time.monotonic()
        self._suspects = {e: t for e, t in self._suspects.items() if t > now}
        self._suspects[endpoint] = now + SUSPECT_SECONDS

    def candidates(
        self,
        route: Route,
        pinned: int | None = None,
        exclude: frozenset[str] | set[str] = frozenset(),
    ) -> list[int]:
        """Versions a request may go to now: routable by breaker, with usable replicas."""
        if pinned is not None:
            if pinned in route.ready and self._usable(route.keys[pinned], exclude):
                return [pinned]
            return []
        live = [
            v
            for v, share in route.traffic.items()
            if share > 0 and v in route.keys and self._usable(route.keys[v], exclude)
        ]
        closed = [v for v in live if self.breakers[route.keys[v]].routable()]
        for v in live:  # an open breaker serves only when nothing else can
            self.breakers[route.keys[v]].serving = not closed
        return closed or live

    @staticmethod
    def _expected(route: Route, pinned: int | None) -> bool:
        """Whether replicas should be serving the request (its version is ready): worth a wait."""
        if pinned is not None:
            return pinned in route.ready
        return any(share > 0 and v in route.ready for v, share in route.traffic.items())

    def _servable(self, route: Route, pinned: int | None, exclude: set[str]) -> bool:
        """Whether some replica could take the request now (no side effect on the breakers)."""
        versions = [pinned] if pinned is not None else [v for v, s in route.traffic.items() if s]
        return any(v in route.keys and self._usable(route.keys[v], exclude) for v in versions)

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

    def _endpoint(self, key: str, exclude: frozenset[str] | set[str] = frozenset()) -> str | None:
        endpoints = self._usable(key, exclude)
        if not endpoints:
            return None
        turn = self._turn.get(key, 0)
        self._turn[key] = turn + 1
        return endpoints[turn % len(endpoints)]

    def _choose(
        self, route: Route, pinned: int | None, exclude: set[str], prefer: int | None = None
    ) -> tuple[int, str] | None:
        """A version and one of its replicas for the request, or None when none can take it.

        A resent request stays with its version (``prefer``) while that has another replica.
        """
        if prefer is not None and prefer in route.keys:
            endpoint = self._endpoint(route.keys[prefer], exclude)
            if endpoint is not None:
                return prefer, endpoint
        candidates = self.candidates(route, pinned, exclude)
        if not candidates:
            return None
        version = self.pick(route, candidates) if pinned is None else pinned
        endpoint = self._endpoint(route.keys[version], exclude)
        return (version, endpoint) if endpoint is not None else None

    async def _queue(
        self, route: Route, pinned: int | None, exclude: set[str], deadline: float
    ) -> Route | None:
        """Wait for a replica that can take the request; its route then, None past ``deadline``.

        Also returns when the version is no longer ready (nothing to wait for). A replica
        this request tried that left the backend's list and came back is a new process:
        it may be tried again.
        """
        loop = asyncio.get_running_loop()
        self.queued += 1
        try:
            while (left := deadline - loop.time()) > 0:
                await asyncio.sleep(min(QUEUE_POLL_SECONDS, left))
                current = self.routes.get((route.owner, route.name))
                if current is None:
                    return None
                if exclude:
                    listed = {e for k in current.keys.values() for e in self.backend.endpoints(k)}
                    for gone in exclude - listed:
                        exclude.discard(gone)
                        self._suspects.pop(gone, None)
                if not self._expected(current, pinned) or self._servable(current, pinned, exclude):
                    return current
            return None
        finally:
            self.queued -= 1

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
        response = await self.client.fetch(request, raise_error=False)
        if response.code == 599 and response.error is not None:  # not an HTTP answer
            raise response.error
        return response

    def _unavailable(self, message: str, retry: bool = True) -> Answer:
        """503; with ``Retry-After`` when a replica is expected back."""
        headers = {"Retry-After": str(max(1, math.ceil(self.queue_timeout)))} if retry else {}
        return Answer(503, error_body(503, "UNAVAILABLE", message), headers=headers)

    async def forward(
        self, route: Route, body: bytes, content_type: str, pinned: int | None = None
    ) -> Answer:
        """Send a request to a replica (see the module docstring); return the answer."""
        self.active += 1
        try:
            return await self._forward(route, body, content_type, pinned)
        finally:
            self.active -= 1

    async def _forward(
        self, route: Route, body: bytes, content_type: str, pinned: int | None
    ) -> Answer:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.queue_timeout
        tried: set[str] = set()
        resent_from: int | None = None
        started: float | None = None
        while True:
            chosen = self._choose(route, pinned, tried, prefer=resent_from)
            if chosen is None:
                if not self._expected(route, pinned):
                    return self._unavailable(
                        "The model has no ready replica (starting, or failed: see "
                        "GET api/deployments/<name>).",
                        retry=False,
                    )
                if self.queued >= self.max_queued:
                    return self._unavailable(
                        f"The model's replicas are restarting and {self.max_queued} requests "
                        "wait for them already; try again shortly."
                    )
                waited = await self._queue(route, pinned, tried, deadline)
                if waited is None:
                    return self._unavailable(
                        f"No replica of the model became ready within {self.queue_timeout:g} "
                        "seconds (restarting, or failing: see GET api/deployments/<name>); "
                        "try again shortly."
                    )
                route = waited
                continue
            version, endpoint = chosen
            key = route.keys[version]
            if started is None:
                started = time.perf_counter()
            failure = response = None
            try:
                response = await self._fetch(key, endpoint, body, content_type)
            except Exception as e:
                failure = _failure(e)
                if failure is None:
                    raise
                unserved, reason = failure == "unreachable", f"did not answer ({e})"
            else:
                # a model server answers 503 only when it did not run the request (stopping,
                # loading): as safe to send elsewhere as a refused connection
                unserved, reason = response.code == 503, "answered 503 (stopping or loading)"
            if unserved and resent_from is None:
                # never served: sent once more, elsewhere (model calls are predictions)
                tried.add(endpoint)
                self._suspect(endpoint)
                resent_from = version
                RETRIES.labels(route.owner, route.name, str(version)).inc()
                log.info(
                    "Resending a request to %s/%s v%d: its replica %s %s",
                    route.owner,
                    route.name,
                    version,
                    endpoint,
                    reason,
                )
                continue
            if failure == "unreachable":
                self._suspect(endpoint)
            break
        elapsed = time.perf_counter() - started
        if failure is not None:
            timed_out = failure == "timeout"
            answer = Answer(
                504 if timed_out else 502,
                error_body(
                    504 if timed_out else 502,
                    "TIMEOUT" if timed_out else "UNAVAILABLE",
                    "The model did not answer in time." if timed_out else "No replica answered.",
                ),
                version=version,
            )
        else:
            answer = Answer(
                response.code,
                response.body or b"",
                response.headers.get("Content-Type", "application/json"),
                version=version,
            )
        ok = answer.status < 500
        self.breakers[key].record(ok)
        self.window(key).record(elapsed, ok, answer.status)
        labels = (route.owner, route.name, str(version))
        MODEL_REQUESTS.labels(*labels, str(answer.status)).inc()
        MODEL_LATENCY.labels(*labels).observe(elapsed)
        return answer


def error_body(status: int, code: str, message: str) -> bytes:
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
        if isinstance(error, HubUnreachable):
            code = "UNAVAILABLE"
            self.set_header("Retry-After", str(HUB_RETRY_SECONDS))
        self.set_header("Content-Type", "application/json")
        self.finish(error_body(status_code, code, message))

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, web.HTTPError) and value.status_code < 500:
            return  # answered as JSON; the access log has the status
        super().log_exception(typ, value, tb)


@web.stream_request_body
class InvocationHandler(_ModelHandler):
    """``POST models/{owner}/{name}[/v/{version}]/invocations``.

    A request refused before its body is read keeps its refusal until the body has
    come and been thrown away (up to the router's ``max_discard_bytes``): closing the
    connection under a proxy still sending it would lose the answer (module docstring).
    """

    async def prepare(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.refusal: web.HTTPError | None = None
        if self.request.method == "POST":
            # read a refused or oversized body to its end (thrown away), up to this bound
            self.request.connection.set_max_body_size(self.router.max_discard_bytes)
        try:
            await self._admit()
        except web.HTTPError as e:
            if not self._body_follows():
                raise
            self.refusal = e

    def _body_follows(self) -> bool:
        """Whether a body is coming that the refusal can wait for (not past the bound)."""
        if self.request.method != "POST":
            return False
        length = self.request.headers.get("Content-Length")
        if length is None:
            return "chunked" in self.request.headers.get("Transfer-Encoding", "").lower()
        return length.isdigit() and 0 < int(length) <= self.router.max_discard_bytes

    async def _admit(self) -> None:
        owner, name, *rest = self.path_args
        self.pinned = int(rest[0]) if rest and rest[0] else None
        self.route = await self.router.authorize(self, owner, name)
        if self.request.method != "POST":
            return
        if self.pinned is not None and self.pinned not in self.route.keys:
            raise web.HTTPError(404, f"deployment {owner}/{name} has no version {self.pinned}")
        length = self.request.headers.get("Content-Length")
        if length is not None and (
            not length.isdigit() or int(length) > self.router.max_body_bytes
        ):
            raise self._too_large()
        media = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media not in CONTENT_TYPES:
            raise web.HTTPError(
                415,
                f"Send the inputs as application/json or text/csv, not {media or 'no type'!r}.",
            )
        self.media = self.request.headers["Content-Type"]

    def _too_large(self) -> web.HTTPError:
        return web.HTTPError(
            413, f"The request body is over the limit of {self.router.max_body_bytes} bytes."
        )

    def data_received(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.refusal is None and self.size <= self.router.max_body_bytes:
            self.chunks.append(chunk)
        else:
            self.chunks = []  # never kept: read only so the answer reaches the client

    async def post(self, owner: str, name: str, version: str | None = None) -> None:
        if self.refusal is not None:
            raise self.refusal
        if self.size > self.router.max_body_bytes:
            raise self._too_large()
        answer = await self.router.forward(
            self.route, b"".join(self.chunks), self.media, self.pinned
        )
        self.set_status(answer.status)
        self.set_header("Content-Type", answer.content_type)
        for header, value in answer.headers.items():
            self.set_header(header, value)
        if answer.version:
            self.set_header("X-Shipyard-Model-Version", str(answer.version))
        self.finish(answer.body)


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
