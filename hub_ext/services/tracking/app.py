"""The ``tracking`` hub service: a managed MLflow server behind hub login.

Run by JupyterHub as a managed service (``python -m hub_ext.services.tracking``,
see config/jupyterhub_config.py). It starts MLflow on a loopback port
(:mod:`.mlflow_process`) and serves the gateway (:mod:`.gateway`) on the
service's URL, so MLflow is reachable only as ``/services/tracking/`` through
the hub. The MLflow UI opens from the hub's *Services* menu.

State: MLflow's runs, experiments and registry in ``backend_store_uri``
(SQLite in the data dir, or PostgreSQL), its users and permissions in
``auth_db_uri``, artifacts under ``artifacts_destination``. A restart loses
nothing: the service holds no state of its own.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuthCallbackHandler
from tornado import web
from traitlets import Integer, Unicode, default
from traitlets.config import Application

from ... import __version__
from ..common.web import HubOAuth
from .gateway import GatewayHandler, MetricsHandler
from .mlflow_process import MlflowServer
from .shares import ShareSync
from .ui import SCRIPT_PATH, XsrfScriptHandler


def _data_dir() -> Path:
    return Path(os.environ.get("SHIPYARD_DATA_DIR") or ".shipyard").resolve()


class TrackingService(Application):
    """MLflow behind the hub's authentication, with MLflow's permission model."""

    name = "shipyard-tracking"
    version = __version__
    description = "Shipyard's tracking service: a managed MLflow server behind hub login."

    state_dir = Unicode(
        help="""
        Folder of the service's own files: MLflow's auth config (0600), its log.

        Defaults to ``tracking`` in ``$SHIPYARD_DATA_DIR``.

        Example::

            c.TrackingService.state_dir = "/srv/shipyard/tracking"

        .. versionadded:: 0.2
        """
    ).tag(config=True)

    @default("state_dir")
    def _default_state_dir(self):
        return str(_data_dir() / "tracking")

    backend_store_uri = Unicode(
        help="""
        Where MLflow keeps experiments, runs, metrics and the model registry.

        A SQLAlchemy URL: SQLite in the state dir by default, PostgreSQL in
        production (``postgresql://user@host/db``). Defaults to
        ``$SHIPYARD_TRACKING_DB_URL`` when set. Hub-side only: users never see it.

        Example::

            c.TrackingService.backend_store_uri = "postgresql://mlflow@db/mlflow"

        .. versionadded:: 0.2
        """
    ).tag(config=True)

    @default("backend_store_uri")
    def _default_backend_store_uri(self):
        return os.environ.get("SHIPYARD_TRACKING_DB_URL") or f"sqlite:///{self.state_dir}/mlflow.db"

    auth_db_uri = Unicode(
        help="""
        Where MLflow's permission store keeps users and grants (a SQLAlchemy URL).

        Defaults to ``$SHIPYARD_TRACKING_AUTH_DB_URL``, else SQLite in the state dir.

        Example::

            c.TrackingService.auth_db_uri = "postgresql://mlflow@db/mlflow_auth"

        .. versionadded:: 0.2
        """
    ).tag(config=True)

    @default("auth_db_uri")
    def _default_auth_db_uri(self):
        return (
            os.environ.get("SHIPYARD_TRACKING_AUTH_DB_URL")
            or f"sqlite:///{self.state_dir}/mlflow-auth.db"
        )

    artifacts_destination = Unicode(
        help="""
        Where MLflow stores artifacts (a folder, or any MLflow artifact store URI: s3://…).

        Clients never write there themselves: artifacts go through the gateway
        (``mlflow-artifacts:/``), so MLflow checks each upload and download
        against the experiment's permissions. Users cannot choose another
        location for an experiment.

        Example::

            c.TrackingService.artifacts_destination = "s3://bucket/mlflow"

        .. versionadded:: 0.2
        """
    ).tag(config=True)

    @default("artifacts_destination")
    def _default_artifacts_destination(self):
        return os.environ.get("SHIPYARD_TRACKING_ARTIFACTS") or str(
            Path(self.state_dir) / "artifacts"
        )

    service_url = Unicode(
        help="""
        Where the gateway listens; JupyterHub's proxy sends /services/tracking/ here.

        Defaults to ``$JUPYTERHUB_SERVICE_URL``, set by the hub for a managed service.

        .. versionadded:: 0.2
        """
    ).tag(config=True)

    @default("service_url")
    def _default_service_url(self):
        return os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8002")

    service_prefix = Unicode(
        help="""
        The URL prefix the service is served under (``/services/tracking/``).

        Defaults to ``$JUPYTERHUB_SERVICE_PREFIX``.

        .. versionadded:: 0.2
        """
    ).tag(config=True)

    @default("service_prefix")
    def _default_service_prefix(self):
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/tracking/")

    mlflow_workers = Integer(
        1,
        help="""
        Worker processes of the MLflow server.

        One suits a small team; raise it when many clients log at once.

        Example::

            c.TrackingService.mlflow_workers = 4

        .. versionadded:: 0.2
        """,
    ).tag(config=True)

    request_timeout = Integer(
        600,
        help="""
        Seconds the gateway waits for MLflow to answer one request (large artifacts take time).

        Example::

            c.TrackingService.request_timeout = 1800

        .. versionadded:: 0.2
        """,
    ).tag(config=True)

    max_body_size = Integer(
        2 * 1024**3,
        help="""
        Largest request body (an artifact upload) the gateway accepts, in bytes.

        Larger artifacts use MLflow's multipart upload, in parts under this size.

        Example::

            c.TrackingService.max_body_size = 512 * 1024**2

        .. versionadded:: 0.2
        """,
    ).tag(config=True)

    def make_app(self, mlflow: MlflowServer) -> web.Application:
        prefix = (
            self.service_prefix if self.service_prefix.endswith("/") else self.service_prefix + "/"
        )
        # identities (and so group memberships) are cached for 30 s per token
        hub_auth = HubOAuth(api_token=os.environ.get("JUPYTERHUB_API_TOKEN", ""), cache_max_age=30)
        return web.Application(
            [
                (prefix + "oauth_callback", HubOAuthCallbackHandler),
                (prefix + "shipyard/metrics", MetricsHandler),
                (prefix + SCRIPT_PATH, XsrfScriptHandler),
                (prefix + "(.*)", GatewayHandler),
            ],
            hub_auth=hub_auth,
            cookie_secret=os.urandom(32),
            mlflow_url=mlflow.url,
            gateway_secret=mlflow.secret,
            service_prefix=prefix,
            request_timeout=self.request_timeout,
            mlflow_ready=False,
            shares=ShareSync(mlflow.url, mlflow.static_prefix, mlflow.secret),
        )

    def mlflow_server(self) -> MlflowServer:
        return MlflowServer(
            backend_store_uri=self.backend_store_uri,
            auth_db_uri=self.auth_db_uri,
            artifacts_destination=self.artifacts_destination,
            static_prefix=self.service_prefix.rstrip("/"),
            state_dir=Path(self.state_dir),
            workers=self.mlflow_workers,
        )

    def start(self) -> None:
        # no dying with the hub: a hub that crashes leaves the gateway and MLflow
        # serving, and the next hub adopts them (hub_ext/hub/app.py); MLflow outlives the
        # gateway too, and a restarted gateway adopts it (mlflow_process.py)
        mlflow = self.mlflow_server()
        mlflow.prepare()
        app = self.make_app(mlflow)
        # the handlers find HubOAuth as self.hub_auth through the application settings
        GatewayHandler.hub_auth = app.settings["hub_auth"]
        MetricsHandler.hub_auth = app.settings["hub_auth"]
        XsrfScriptHandler.hub_auth = app.settings["hub_auth"]
        HubOAuthCallbackHandler.hub_auth = app.settings["hub_auth"]
        url = urlparse(self.service_url)
        failed = False

        async def serve() -> None:
            nonlocal failed
            server = app.listen(
                url.port or 80, url.hostname or "127.0.0.1", max_body_size=self.max_body_size
            )
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            # the gateway answers at once (503 "starting" until MLflow is up), so the
            # hub, which waits for its managed services, starts without waiting on MLflow
            how = f"adopting MLflow (pid {mlflow.pid})" if mlflow.adopted else "starting MLflow"
            self.log.info("Gateway on %s; %s on %s", self.service_url, how, mlflow.url)
            try:
                await asyncio.to_thread(mlflow.start)
            except RuntimeError as e:
                self.log.critical("MLflow did not start: %s", e)
                server.stop()
                raise SystemExit(1) from None
            app.settings["mlflow_ready"] = True
            self.log.info(
                "MLflow (pid %s%s) is up (%s store)",
                mlflow.pid,
                ", adopted" if mlflow.adopted else "",
                mlflow.backend_store_uri.split(":")[0],
            )
            ended = loop.create_future()
            watching = _watch_exit(loop, mlflow.pid, ended)
            try:
                await asyncio.wait(
                    [asyncio.ensure_future(stop.wait()), ended],
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                watching()
            server.stop()
            if ended.done() and not stop.is_set():
                # the hub restarts the service, which starts a new MLflow
                self.log.critical("MLflow (pid %s) exited: stopping the service", mlflow.pid)
                failed = True

        try:
            asyncio.run(serve())
        finally:
            # a clean stop (the hub's Ctrl-C, SIGTERM) stops MLflow; a kill -9 of this
            # process does not, and the next gateway adopts it
            mlflow.stop()
            self.log.info("Tracking service stopped")
        if failed:
            raise SystemExit(1)


def _watch_exit(loop: asyncio.AbstractEventLoop, pid: int, ended: asyncio.Future):
    """Resolve ``ended`` when process ``pid`` exits (a pidfd; MLflow may not be a child).

    Returns the function that stops watching. Without pidfds (Linux before 5.3)
    nothing is watched.
    """
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return lambda: None

    def exited() -> None:
        loop.remove_reader(fd)
        if not ended.done():
            ended.set_result(None)

    loop.add_reader(fd, exited)

    def unwatch() -> None:
        loop.remove_reader(fd)
        os.close(fd)

    return unwatch


main = TrackingService.launch_instance
