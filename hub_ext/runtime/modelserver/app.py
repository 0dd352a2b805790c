"""The ASGI app: MLflow's scoring routes over a :class:`~.server.ModelServer`, every error as JSON.

Routes:

- ``POST /invocations``: MLflow's scoring protocol, as ``mlflow models serve``
  speaks it (:mod:`.protocol`).
- ``GET /health`` (``ready`` 200; ``loading``, ``failed``, ``stopping`` 503),
  ``GET /ping`` and ``GET /version`` (what MLflow's ``ScoringServerClient`` calls),
  ``GET /metrics`` (Prometheus, own registry; none with ``--metrics off``) and
  ``GET /stats`` (JSON for the deployer).

:class:`RequireSecret` wraps the app when the deployer gave the replica a secret.
"""

from __future__ import annotations

import hmac
import json
import logging

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .contract import OPEN_PATHS, REPLICA_SECRET_HEADER
from .protocol import CONTENT_TYPE_JSON, ServingError
from .server import ModelServer

log = logging.getLogger("shipyard.modelserver")


class RequireSecret:
    """ASGI wrapper: every HTTP request but :data:`~.contract.OPEN_PATHS` must carry the replica secret."""

    def __init__(self, app, secret: str):
        self.app = app
        self.secret = secret.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            sent = next(
                (v for k, v in scope["headers"] if k == REPLICA_SECRET_HEADER.encode()), b""
            )
            if not hmac.compare_digest(sent, self.secret):
                await ServingError(
                    403,
                    "PERMISSION_DENIED",
                    "Call models through the deployer: /services/deployer/models/<owner>/<name>/",
                ).response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(server: ModelServer) -> Starlette:
    """The ASGI app: routes to ``server``'s methods, every error as JSON."""

    async def invocations(request: Request) -> Response:
        return await server.invoke(request)

    async def health(request: Request) -> Response:
        return server.health()

    async def ping(request: Request) -> Response:
        ready = server.state == "ready" and not server.stopping
        return Response("\n", 200 if ready else 503, media_type=CONTENT_TYPE_JSON)

    async def version(request: Request) -> Response:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        for dist in ("mlflow", "mlflow-skinny"):
            try:
                return Response(dist_version(dist), media_type=CONTENT_TYPE_JSON)
            except PackageNotFoundError:
                continue
        return Response("unknown", media_type=CONTENT_TYPE_JSON)

    async def stats(request: Request) -> Response:
        return Response(json.dumps(server.stats_body()), media_type=CONTENT_TYPE_JSON)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return ServingError(
            exc.status_code, "NOT_FOUND" if exc.status_code == 404 else "BAD_REQUEST", exc.detail
        ).response()

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s", request.url.path, exc_info=exc)
        return ServingError(
            500, "INTERNAL_ERROR", f"{type(exc).__name__}: internal error"
        ).response()

    routes = [
        Route("/invocations", invocations, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/ping", ping, methods=["GET"]),
        Route("/version", version, methods=["GET"]),
        Route("/stats", stats, methods=["GET"]),
    ]
    if server.metrics is not None:  # --metrics off: no /metrics (404)
        registry = server.metrics.registry

        async def metrics(request: Request) -> Response:
            server.drift_psi()
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

        routes.append(Route("/metrics", metrics, methods=["GET"]))
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=server.lifespan,
    )
