"""The deployer's front: the process that answers model traffic, apart from its control plane.

Every model request goes to the deployer's port, which the hub's proxy sends
``/services/deployer/`` to. If the process that routes model requests were the
deployer itself, its death (a crash, ``kill -9``) would lose the requests it is
forwarding at that instant, and every request that comes until the next
deployer has started (seconds: the database, the backend's adoption of the
replicas). So the deployer is two processes:

- the **front** (this module, ``python -m hub_ext.services.deployer.front``):
  owns the listening socket, authorizes and routes model requests to the
  replicas itself (:class:`.router.ModelRouter`, with the circuit breakers and
  the per-version windows), and passes every other request (the REST API) to
  the control plane. It keeps no state that is not also the control plane's:
  the routing table and the replicas are pushed to it;
- the **control plane** (the deployer service the hub starts, :mod:`.app`):
  the REST API, the database, the backend that starts, watches and adopts the
  replicas. It listens on a loopback port of its own that only the front uses,
  pushes the routing table and the healthy replicas to the front
  (:class:`FrontLink`) and reads back what the front saw (breakers, windows,
  the model requests' Prometheus series) a quarter of a second after they change.

They talk over a Unix socket in the service's state folder (owner only, in a
0700 folder: only the service's account reaches it), one JSON object per line.
The control plane that connects first gets the listening socket with
``SCM_RIGHTS`` and keeps a duplicate, so that it can start a new front on the
same socket when the front dies; the front serves one control plane at a time.

What dies, and what callers see:

- the **control plane** (``kill -9``): the front goes on routing model requests
  to the replicas (which outlive it: :mod:`.local` adopts them) with the last
  table it was given; no model request fails. API requests wait for the next
  control plane (up to :data:`API_WAIT` seconds), and one the dead control plane
  was handling is sent again when that is safe (a read, or a connection it
  refused), else answered 503 with what to check. The next control plane adopts
  the front (connects, sends the table again) instead of starting another.
- the **front**: the control plane sees its connection close and starts a new
  front on the same socket at once; connections made meanwhile wait in the
  socket's backlog. Requests the front was forwarding at that instant are lost
  (the proxy does not resend them): the front is the smallest part there is, and
  does nothing but authorize and forward.
- a **clean stop** of the deployer (the hub's Ctrl-C) tells the front to stop:
  it closes the port, finishes the requests it has (up to
  :data:`DRAIN_SECONDS`) and exits, so a stopped Shipyard leaves nothing.
- no control plane for ``linger`` seconds (``c.DeployerService.front_linger``):
  the front exits, closing the port; a hub that is down that long has lost
  its services anyway, and a process without a manager must not live forever.

The front's environment is the deployer's without the hub's variables: its
hub token comes over the Unix socket (and a new control plane sends its own),
so no token is in its process's environment, and no process but the service
itself carries the service's name.

Rejected alternatives: a front that only holds the listening socket (the
control plane accepting on it; kept the backlog during restarts, but lost the
requests in flight); the proxy routing model paths to a process of their own
(a second route the hub would have to keep in configurable-http-proxy and in
every other proxy Shipyard may run behind); the control plane resending its
table over HTTP (one more authenticated endpoint, where a socket only the
service's account can open needs no token).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from tornado import httputil, web
from tornado.http1connection import HTTP1Connection
from tornado.httpclient import HTTPClientError, HTTPRequest, HTTPResponse
from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError
from tornado.simple_httpclient import SimpleAsyncHTTPClient

from hub_ext.audit import set_source
from hub_ext.host import telemetry

from ..common.handlers import HTTP_METHODS, EveryMethod
from ..common.hubapi import HubDirectory
from ..common.web import HubOAuth
from .breaker import Breakers
from .metrics import MODEL_LATENCY, MODEL_REQUESTS, RETRIES, forget_version
from .models import BreakerState, DescribeDeployment
from .router import ModelRouter, Route, error_body, model_routes

log = logging.getLogger("shipyard.deployer.front")

#: The Unix socket's name in the service's state folder.
SOCKET_NAME = "front.sock"
#: The listening socket's backlog: the connections that may wait for a front that
#: restarts (40 requests per second for 5 s is 200; the kernel caps it at somaxconn).
BACKLOG = 4096
#: Seconds the front serves without a control plane before it exits (the default of
#: ``c.DeployerService.front_linger``).
LINGER = 600.0
#: Seconds an API request waits for a control plane that is restarting.
API_WAIT = 30.0
#: Seconds an API request may take in the control plane.
API_TIMEOUT = 300.0
#: Seconds between two looks at whether the front has news for the control plane (new
#: requests, a breaker that moved): reported then, so the API's figures are this fresh.
STATS_SECONDS = 0.25
#: Seconds after which the front reports even without news (its windows slide).
STATS_QUIET_SECONDS = 2.0
#: Seconds between two looks at the backend's healthy replicas (sent when they changed).
PUSH_SECONDS = 0.05
#: Seconds a stopping front finishes the requests it has.
DRAIN_SECONDS = 10.0
#: Seconds a control plane waits for a front to answer on the Unix socket.
TAKE_TIMEOUT = 5.0
#: Longest Unix socket path (``sun_path``, with its terminating NUL).
MAX_UNIX_PATH = 107
#: Longest line on the Unix socket (the whole routing table is one).
MAX_MESSAGE = 256 * 1024**2
#: Headers that belong to one connection, never passed on (RFC 9110, 7.6.1).
HOP_HEADERS = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Content-Length",
    )
)
#: API requests that may be sent again to the next control plane after the one that
#: was handling them died: they change nothing.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: The model series the front keeps (and reports to the control plane's ``metrics``).
FRONT_SERIES = (MODEL_REQUESTS, MODEL_LATENCY, RETRIES)


def _message(**fields: Any) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"


@contextlib.contextmanager
def _reachable(path: Path) -> Iterator[str]:
    """A name of ``path`` short enough for a Unix socket address.

    A path over :data:`MAX_UNIX_PATH` bytes is named through an open descriptor
    of its folder (``/proc/self/fd/N/front.sock``), which binds and connects the
    same socket.
    """
    if len(os.fsencode(path)) <= MAX_UNIX_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def _receive(control: socket.socket) -> socket.socket | None:
    """The listening socket a front sends first on a new connection, or None."""
    try:
        message, fds, _, _ = socket.recv_fds(control, 16, 1)
    except OSError:
        return None
    if message != b"front" or not fds:
        for fd in fds:
            os.close(fd)
        return None
    listener = socket.socket(fileno=fds[0])
    listener.setblocking(False)
    return listener


def bind_listener(host: str, port: int) -> socket.socket:
    """The deployer's public listening socket."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(BACKLOG)
    listener.setblocking(False)
    return listener


def front_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The front's environment: the deployer's, without the hub's variables (its token)."""
    environ = os.environ if environ is None else environ
    return {
        **{k: v for k, v in environ.items() if not k.startswith("JUPYTERHUB_")},
        **telemetry.environment(environ),
    }


# ===================================================================== the front


class PushedEndpoints:
    """The healthy replicas the control plane last sent: the router's view of the backend."""

    def __init__(self) -> None:
        self.table: dict[str, tuple[list[str], dict[str, str]]] = {}

    def endpoints(self, key: str) -> list[str]:
        entry = self.table.get(key)
        return entry[0] if entry else []

    def request_headers(self, key: str) -> Mapping[str, str]:
        entry = self.table.get(key)
        return entry[1] if entry else {}

    def replace(self, table: Mapping[str, Any]) -> None:
        self.table = {k: (list(v["endpoints"]), dict(v["headers"])) for k, v in table.items()}


class Front:
    """The front's process: model requests to the replicas, the rest to the control plane."""

    def __init__(self, listener: socket.socket, control: socket.socket, linger: float = LINGER):
        self.listener = listener
        self.control = control
        self.linger = linger
        self.endpoints = PushedEndpoints()
        self.router: ModelRouter | None = None
        self.server: HTTPServer | None = None
        self.hub_auth: HubOAuth | None = None
        self.directory: HubDirectory | None = None
        #: the control plane's URL while one is connected, and how many have connected
        self.control_url: str | None = None
        self.generation = 0
        self.connected = asyncio.Event()
        #: API requests being passed on now
        self.active = 0
        #: the simple client: it streams a body (``body_producer``), the curl one does not
        self.control_client = SimpleAsyncHTTPClient(force_instance=True, max_clients=64)
        self.registry = CollectorRegistry(auto_describe=True)
        for series in FRONT_SERIES:
            self.registry.register(series)

    # ------------------------------------------------------------ lifetime

    async def run(self) -> None:
        """Serve control planes one after another; until told to stop, or ``linger`` alone."""
        loop = asyncio.get_running_loop()
        self.control.setblocking(False)
        while True:
            try:
                conn, _ = await asyncio.wait_for(loop.sock_accept(self.control), self.linger)
            except TimeoutError:
                log.warning("No deployer for %g s: the front exits", self.linger)
                await self._stop()
                return
            writer = await self._serve(conn)
            if writer is not None:  # told to stop: the control plane waits for the end
                await self._stop()
                writer.close()
                return

    async def _serve(self, conn: socket.socket) -> asyncio.StreamWriter | None:
        """One control plane's connection, until it ends; its writer when it said ``stop``."""
        try:
            socket.send_fds(conn, [b"front"], [self.listener.fileno()])
        except OSError:
            conn.close()
            return None
        reader, writer = await asyncio.open_unix_connection(sock=conn, limit=MAX_MESSAGE)
        stats = asyncio.create_task(self._report(writer))
        try:
            while line := await reader.readline():
                if self._apply(json.loads(line)) == "stop":
                    return writer
        except (ConnectionError, ValueError) as e:
            log.warning("The deployer's connection failed: %s", e)
        finally:
            stats.cancel()
            self.control_url = None
            self.connected.clear()
        writer.close()
        log.warning("The deployer is gone: model requests go on; the API waits for the next one")
        return None

    async def _stop(self) -> None:
        """Close the port, finish the requests in hand (up to :data:`DRAIN_SECONDS`)."""
        if self.server is not None:
            self.server.stop()
        with contextlib.suppress(OSError):
            self.listener.close()
        deadline = time.monotonic() + DRAIN_SECONDS
        while self._busy() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.server is not None:
            await self.server.close_all_connections()

    def _busy(self) -> bool:
        return self.active > 0 or bool(self.router and self.router.active)

    # ---------------------------------------------------- what it is told

    def _apply(self, message: dict[str, Any]) -> str:
        op = message.get("op")
        if op == "hello":
            self._hello(message)
        elif op == "routes":
            assert self.router is not None
            routes = [Route.from_wire(r) for r in message["routes"]]
            for key in set(self.router.routes) - {(r.owner, r.name) for r in routes}:
                self.router.remove(*key)
            for route in routes:
                self.router.update(route)
        elif op == "update":
            assert self.router is not None
            self.router.update(Route.from_wire(message["route"]))
        elif op == "remove":
            assert self.router is not None
            self.router.remove(message["owner"], message["name"])
        elif op == "endpoints":
            self.endpoints.replace(message["table"])
        elif op == "forget":
            assert self.router is not None
            window = self.router.windows.pop(message["key"], None)
            self.router.breakers.forget(message["key"])
            forget_version(
                message["owner"],
                message["name"],
                message["version"],
                codes=window.codes if window else (),
            )
        elif op == "ready":
            self._listen()
            self.connected.set()
        elif op == "stop":
            return "stop"
        return op or ""

    def _hello(self, message: dict[str, Any]) -> None:
        settings, hub = message["settings"], message["hub"]
        self.control_url = message["control_url"]
        self.generation += 1
        if self.hub_auth is None:
            # answers 503 (not 500) for a token it cannot check while the hub is down
            self.hub_auth = HubOAuth(
                api_token=hub["token"],
                api_url=hub["api_url"],
                cache_max_age=int(settings["auth_cache_seconds"]),
            )
            self.directory = HubDirectory(
                hub["api_url"], hub["token"], settings["groups_cache_seconds"]
            )
        else:  # a new control plane: its token, its settings
            self.hub_auth.api_token = hub["token"]
            self.hub_auth.api_url = hub["api_url"]
            self.hub_auth.cache_max_age = int(settings["auth_cache_seconds"])
            assert self.directory is not None
            self.directory.token = hub["token"]
            self.directory.api_url = hub["api_url"].rstrip("/")
            self.directory.ttl = settings["groups_cache_seconds"]
        breaker_settings = settings["breaker"]
        if self.router is None:
            self.router = ModelRouter(
                self.endpoints,
                Breakers(**breaker_settings),
                self.hub_auth,
                self.directory.groups_of,
                max_body_bytes=settings["max_body_bytes"],
                timeout=settings["timeout"],
                max_clients=settings["max_clients"],
                queue_timeout=settings["queue_timeout"],
                max_queued=settings["max_queued"],
                max_discard_bytes=settings["max_discard_bytes"],
                auth_stale_seconds=settings["auth_stale_seconds"],
                window_seconds=settings.get("metrics_window", 60.0),
            )
            self.prefix = settings["prefix"]
            self.max_api_body = settings["max_api_body"]
        else:
            router = self.router
            router.breakers.settings = breaker_settings
            router.set_window(settings.get("metrics_window", 60.0))
            router.max_body_bytes = settings["max_body_bytes"]
            router.timeout = settings["timeout"]
            router.queue_timeout = settings["queue_timeout"]
            router.max_queued = settings["max_queued"]
            router.max_discard_bytes = max(settings["max_discard_bytes"], router.max_body_bytes)
            router.last_identity.stale_seconds = settings["auth_stale_seconds"]
            router.last_groups.stale_seconds = settings["auth_stale_seconds"]

    @property
    def max_discard_bytes(self) -> int:
        """Largest body read to its end for the control plane to refuse (as it would)."""
        return self.router.max_discard_bytes if self.router else 0

    def _listen(self) -> None:
        """Start answering on the socket: once, when the first full table has come."""
        if self.server is not None:
            return
        app = web.Application(
            [*model_routes(self.prefix), (r"/.*", ControlHandler)],
            model_router=self.router,
            front=self,
            max_discard_bytes=self.router.max_discard_bytes if self.router else 0,
            log_function=_log_request,
        )
        self.server = HTTPServer(app, max_body_size=self.max_api_body)
        self.server.add_sockets([self.listener])
        log.info("The deployer's front answers on %s", self.listener.getsockname())

    # ------------------------------------------------------ what it reports

    async def _report(self, writer: asyncio.StreamWriter) -> None:
        """Send the breakers, windows and model series to the control plane when they moved.

        Looked at every :data:`STATS_SECONDS`, sent when a request was routed or a breaker
        changed since the last report, and at least every :data:`STATS_QUIET_SECONDS`.
        """
        last: Any = None
        sent = 0.0
        while True:
            await asyncio.sleep(STATS_SECONDS)
            if self.router is None:
                continue
            news = (
                sum(w.requests for w in self.router.windows.values()),
                tuple(
                    (key, self.router.breakers.describe(key).open)
                    for key in self.router.breakers.keys()
                ),
                self.router.queued,
            )
            if news == last and time.monotonic() - sent < STATS_QUIET_SECONDS:
                continue
            last, sent = news, time.monotonic()
            windows = {
                key: {**window.summary(), "codes": sorted(window.codes)}
                for key, window in self.router.windows.items()
            }
            breakers = {
                key: self.router.breakers.describe(key).model_dump(mode="json")
                for key in self.router.breakers.keys()
            }
            writer.write(
                _message(
                    op="stats",
                    windows=windows,
                    breakers=breakers,
                    metrics=generate_latest(self.registry).decode(),
                    queued=self.router.queued,
                )
            )
            await writer.drain()

    # ----------------------------------------------- the API, passed on

    async def _control(self, deadline: float, after: int = 0) -> str | None:
        """The URL of a connected control plane newer than ``after``; None past ``deadline``."""
        loop = asyncio.get_running_loop()
        while (url := self.control_url) is None or self.generation <= after:
            left = deadline - loop.time()
            if left <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.connected.wait(), min(left, 0.5))
            if self.connected.is_set() and self.generation <= after:
                await asyncio.sleep(min(0.05, left))
        return url

    async def pass_on(
        self, request: httputil.HTTPServerRequest, body: BodyStream | None
    ) -> HTTPResponse | None:
        """The control plane's answer to ``request``; None when no control plane answered.

        The body is streamed to the control plane as it comes (never kept here: the
        control plane reads a body past its limit to the end and refuses it, as it does
        without a front). A request the control plane did not get (a refused connection,
        before any of its body went) or that changes nothing is sent once more to the
        next control plane after one that died.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + API_WAIT
        after = 0
        self.active += 1
        try:
            for _ in range(2):
                url = await self._control(deadline, after)
                if url is None:
                    return None
                generation = self.generation
                try:
                    return await self._fetch(url, request, body)
                except (OSError, StreamClosedError, HTTPClientError) as e:
                    unsent = isinstance(e, ConnectionRefusedError) and not (body and body.taken)
                    if not unsent and request.method not in SAFE_METHODS:
                        log.warning("The deployer died during %s %s", request.method, request.path)
                        raise ControlLost from e
                    if body is not None and body.taken:
                        raise ControlLost from e  # its body is gone: it cannot go again
                    after = generation
            return None
        finally:
            self.active -= 1

    async def _fetch(
        self, url: str, request: httputil.HTTPServerRequest, body: BodyStream | None
    ) -> HTTPResponse:
        headers = httputil.HTTPHeaders()
        for name, value in request.headers.get_all():
            if name.lower() not in HOP_HEADERS or name.lower() == "content-length":
                headers.add(name, value)
        response = await self.control_client.fetch(
            HTTPRequest(
                url + request.uri,
                method=request.method,
                headers=headers,
                body_producer=(
                    (lambda write: asyncio.ensure_future(body.produce(write)))
                    if body is not None
                    else None
                ),
                allow_nonstandard_methods=True,
                follow_redirects=False,
                decompress_response=False,
                connect_timeout=5,
                request_timeout=API_TIMEOUT,
            ),
            raise_error=False,
        )
        if response.code == 599 and response.error is not None:
            raise response.error
        return response


class BodyStream:
    """A request body on its way from the caller to the control plane, a few chunks at a time."""

    def __init__(self, depth: int = 16):
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(depth)
        #: whether sending it has begun (it cannot be sent a second time then)
        self.taken = False

    async def put(self, chunk: bytes) -> None:
        await self.queue.put(chunk)  # the caller's connection waits while the queue is full

    def end(self) -> None:
        self.queue.put_nowait(None)

    async def produce(self, write) -> None:
        self.taken = True
        while (chunk := await self.queue.get()) is not None:
            await write(chunk)


class ControlLost(Exception):
    """The control plane died while it handled a request that is not safe to send again."""


def _log_request(handler: web.RequestHandler) -> None:
    """Errors only: 40 model requests a second are not the log's business."""
    status = handler.get_status()
    if status >= 500:
        logging.getLogger("tornado.access").warning(
            "%d %s %s %.1fms",
            status,
            handler.request.method,
            handler.request.path,  # never the query: it could carry a token
            1000 * handler.request.request_time(),
        )


@web.stream_request_body
class ControlHandler(web.RequestHandler):
    """Every request that is not a model request: to the control plane, as it came.

    The body is streamed in and passed on as bytes: never parsed here (a form body
    tornado cannot parse is the control plane's to refuse, in its JSON).
    """

    #: every method, the ones no route implements too: the control plane answers those
    #: (a 405 with the route's ``Allow``)
    SUPPORTED_METHODS = EveryMethod(HTTP_METHODS)

    def __getattr__(self, name: str):
        method = self.__dict__.get("request") and self.request.method
        if method and name == method.lower() and name.isalpha():
            return self._pass
        raise AttributeError(name)

    def prepare(self) -> None:
        front: Front = self.settings["front"]
        headers = self.request.headers
        has_body = headers.get("Content-Length", "0") != "0" or (
            "chunked" in headers.get("Transfer-Encoding", "").lower()
        )
        self.body = BodyStream() if has_body else None
        if has_body:
            # the control plane reads a body past its limit to the end before it refuses it
            # (so that the refusal reaches the caller through the proxy): so may the front
            connection = self.request.connection
            assert isinstance(connection, HTTP1Connection)
            connection.set_max_body_size(front.max_discard_bytes)
        self.answer = asyncio.ensure_future(front.pass_on(self.request, self.body))

    async def data_received(self, chunk: bytes) -> None:
        if self.body is not None:
            await self.body.put(chunk)

    def on_connection_close(self) -> None:
        self.answer.cancel()

    def check_xsrf_cookie(self) -> None:
        return  # the control plane checks what it serves

    def compute_etag(self) -> None:
        return None

    async def _pass(self, *args: str) -> None:
        if self.body is not None:
            self.body.end()
        try:
            response = await self.answer
        except asyncio.CancelledError:
            if not self.answer.cancelled():
                raise
            return  # the caller closed its connection (on_connection_close): nobody to answer
        except ControlLost:
            self._unavailable(
                "The deployer restarted while it handled this request, which may or may not "
                "have been applied: check with GET api/deployments/<name>, then retry."
            )
            return
        if response is None:
            self._unavailable("The deployer is restarting; retry in a few seconds.")
            return
        self.set_status(response.code, response.reason)
        self.clear_header("Content-Type")
        for name, value in response.headers.get_all():
            if name.lower() not in HOP_HEADERS and name not in ("Server", "Date"):
                self.add_header(name, value)
        if response.code in (204, 304) or self.request.method == "HEAD":
            self.finish()  # no body, whatever a Content-Length said
        else:
            self.finish(response.body or b"")

    def _unavailable(self, message: str) -> None:
        self.set_status(503)
        self.set_header("Content-Type", "application/json")
        self.set_header("Retry-After", "2")
        self.finish(error_body(503, "UNAVAILABLE", message))

    get = head = post = delete = patch = put = options = _pass


# ======================================================= the control plane's end


class FrontMetrics(Collector):
    """The front's model series, as it last reported them, in the control plane's registry."""

    def __init__(self, link: FrontLink):
        self.link = link

    def collect(self):
        yield from text_string_to_metric_families(self.link.metrics)


class FrontLink:
    """The control plane's end: the routing table and replicas out, breakers and windows in.

    It stands where the router stood in the control plane: :class:`.core.DeployerCore`
    updates its routes and reads a version's window and breaker through it.
    """

    def __init__(
        self,
        backend,
        path: Path,
        host: str,
        port: int,
        settings: dict[str, Any],
        hub: dict[str, str],
        linger: float = LINGER,
    ):
        self.backend = backend
        self.path = Path(path)
        self.host, self.port = host, port
        self.settings = settings
        self.hub = hub
        self.linger = linger
        self.routes: dict[tuple[str, str], Route] = {}
        #: what the front last reported
        self.windows: dict[str, dict[str, Any]] = {}
        self.breakers: dict[str, dict[str, Any]] = {}
        self.metrics = ""
        self.control_url = ""
        self._listener: socket.socket | None = None
        self._child: subprocess.Popen | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._sent: dict[str, Any] | None = None
        self._tasks: list[asyncio.Task] = []
        self._closing = False

    # --------------------------------------------------- what core calls

    def update(self, deployment: DescribeDeployment) -> None:
        route = Route.of(deployment)
        self.routes[(route.owner, route.name)] = route
        self._push_endpoints()
        self._send(op="update", route=route.to_wire())

    def remove(self, owner: str, name: str) -> None:
        self.routes.pop((owner, name), None)
        self._send(op="remove", owner=owner, name=name)

    def summary(self, key: str) -> dict[str, Any]:
        """What the front saw of version ``key`` over its window (empty before any request)."""
        return {k: v for k, v in self.windows.get(key, {}).items() if k != "codes"}

    def breaker(self, key: str) -> BreakerState:
        return BreakerState.model_validate(self.breakers.get(key) or {})

    def forget(self, owner: str, name: str, version: int, key: str) -> None:
        """A stopped version: the front drops its breaker, window and series."""
        self.windows.pop(key, None)
        self.breakers.pop(key, None)
        self._send(op="forget", key=key, owner=owner, name=name, version=version)

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    # ------------------------------------------------------------ lifetime

    async def open(self, control_url: str) -> None:
        """Take over the running front, or start one; send it everything; keep it current."""
        self.control_url = control_url
        await self._connect()
        self._tasks = [
            asyncio.create_task(self._read()),
            asyncio.create_task(self._push_loop()),
        ]

    async def close(self) -> None:
        """A clean stop: the front closes the port, finishes its requests and exits."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self._writer is not None:
            with contextlib.suppress(OSError, ConnectionError):
                self._writer.write(_message(op="stop"))
                await self._writer.drain()
            assert self._reader is not None
            with contextlib.suppress(OSError, ConnectionError, TimeoutError):
                # closed when the front has finished its requests and exited
                await asyncio.wait_for(self._reader.read(), DRAIN_SECONDS + 5)
            self._writer.close()
        if self._listener is not None:
            self._listener.close()
        if self._child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._child.wait(5)

    async def _connect(self) -> None:
        conn = await asyncio.to_thread(self._take)
        conn.setblocking(False)
        self._reader, self._writer = await asyncio.open_unix_connection(
            sock=conn, limit=MAX_MESSAGE
        )
        self._sent = None
        self._send(op="hello", control_url=self.control_url, settings=self.settings, hub=self.hub)
        self._send(op="routes", routes=[r.to_wire() for r in self.routes.values()])
        self._push_endpoints()
        self._send(op="ready")
        await self._writer.drain()

    def _take(self) -> socket.socket:
        """A connection to the running front, or to a new one on the (held) socket."""
        with _reachable(self.path) as path:
            conn = self._try(path)
            if conn is not None:
                return conn
            if self._listener is None:
                self._listener = bind_listener(self.host, self.port)
            self._start(path)
            conn = self._try(path)
            if conn is None:
                raise RuntimeError(f"the deployer's front did not answer on {self.path}")
            return conn

    def _try(self, path: str) -> socket.socket | None:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # one control plane at a time: while another has the front, this one gets no
        # socket here and binds the port itself, which fails as two deployers always did
        conn.settimeout(TAKE_TIMEOUT)
        try:
            conn.connect(path)
            listener = _receive(conn)
        except OSError:
            listener = None
        if listener is None:
            conn.close()
            return None
        if self._listener is None:
            self._listener = listener  # kept, to start another front on it
        else:
            listener.close()  # the same socket as ours
        conn.settimeout(None)
        return conn

    def _start(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)
        try:
            server.bind(path)  # owner only: only the service's account reaches it
        finally:
            os.umask(old)
        server.listen(4)
        assert self._listener is not None
        if self._child is not None:
            self._child.poll()  # a front of ours that died: reaped
        self._child = subprocess.Popen(  # noqa: S603 - our own module, with our own Python
            [
                sys.executable,
                "-m",
                "hub_ext.services.deployer.front",
                "--listen-fd",
                str(self._listener.fileno()),
                "--control-fd",
                str(server.fileno()),
                "--path",
                str(self.path),
                "--linger",
                str(self.linger),
            ],
            pass_fds=(self._listener.fileno(), server.fileno()),
            stdin=subprocess.DEVNULL,
            env=front_environment(),
            start_new_session=True,  # not stopped with the deployer's process group
        )
        server.close()
        log.info("Started the deployer's front (pid %d)", self._child.pid)

    # ----------------------------------------------------------- traffic

    def _send(self, **message: Any) -> None:
        if self._writer is None or self._writer.is_closing():
            return  # sent whole at the next connection
        self._writer.write(_message(**message))

    def _push_endpoints(self) -> None:
        """The healthy replicas of every routed version, when they changed."""
        table = {
            key: {
                "endpoints": self.backend.endpoints(key),
                "headers": dict(self.backend.request_headers(key)),
            }
            for route in self.routes.values()
            for key in route.keys.values()
        }
        if table != self._sent and self.connected:
            self._send(op="endpoints", table=table)
            self._sent = table

    async def _push_loop(self) -> None:
        while True:
            await asyncio.sleep(PUSH_SECONDS)
            self._push_endpoints()
            if self._writer is not None:
                with contextlib.suppress(OSError, ConnectionError):
                    await self._writer.drain()

    async def _read(self) -> None:
        """The front's reports; a front that is gone is started again on the same socket."""
        backoff = 0.1
        while True:
            assert self._reader is not None
            try:
                line = await self._reader.readline()
            except (OSError, ConnectionError, ValueError):
                line = b""
            if line:
                report = json.loads(line)
                if report.get("op") == "stats":
                    self.windows = report["windows"]
                    self.breakers = report["breakers"]
                    self.metrics = report["metrics"]
                backoff = 0.1
                continue
            if self._closing:
                return
            if self._writer is not None:
                self._writer.close()
            log.warning("The deployer's front is gone: starting another on the same socket")
            while True:
                try:
                    await self._connect()
                    break
                except (OSError, RuntimeError) as e:
                    log.error(
                        "Could not start the deployer's front (%s); again in %g s", e, backoff
                    )
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--linger", type=float, default=LINGER)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="[%(levelname)1.1s %(asctime)s.%(msecs).03d %(name)s] %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )
    set_source("deployer")
    listener = socket.socket(fileno=args.listen_fd)
    listener.setblocking(False)
    control = socket.socket(fileno=args.control_fd)
    try:
        asyncio.run(Front(listener, control, args.linger).run())
    finally:
        with contextlib.suppress(OSError):
            os.unlink(args.path)


if __name__ == "__main__":
    main()
