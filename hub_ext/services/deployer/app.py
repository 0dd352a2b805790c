"""The ``deployer`` hub service: MLflow models as hub-authenticated, versioned endpoints.

Run by JupyterHub as a managed service (``python -m hub_ext.services.deployer``,
see config/jupyterhub_config.py), or by hand beside a hub with the same
``JUPYTERHUB_*`` variables. It serves the REST API (:mod:`.handlers`) under
``/services/deployer/``, behind its front (:mod:`.front`), a process of its own
that holds the service's port, routes model traffic (:mod:`.router`) and outlives
a crash of this one; a backend (:mod:`.backend`: local processes or Kubernetes) runs the model
servers. Desired state is in the database (:mod:`.db`, SQLite or
PostgreSQL): a restart starts again every version that should serve.

Wiring only (STYLE rule 1): the traits say what can be configured; the work
is in :mod:`.core`, :mod:`.store`, :mod:`.front`, :mod:`.router` and the backends.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from urllib.parse import urlparse

from jupyterhub.traitlets import ByteSpecification
from prometheus_client import REGISTRY
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from traitlets import Bool, Float, Integer, List, Unicode, default
from traitlets.config import Application

from hub_ext import __version__
from hub_ext.host.local import LocalHost
from hub_ext.host.process import die_with_parent
from hub_ext.profiles.store import ProfileStore

from ..common.config import load_service_config
from ..common.handlers import MAX_DISCARD_BYTES
from ..common.plugins import PluginType
from ..common.secrets import SecretsResolver
from ..common.web import HubOAuth, make_app, stop_event
from .backend import BACKENDS, Backend
from .core import DeployerCore, HubDirectory, TrackingCredentials
from .db import make_engine, upgrade
from .front import FRONT_SERIES, LINGER, FrontLink, FrontMetrics
from .handlers import BaseHandler, NotFoundHandler, routes
from .lineage import LineageResolver
from .openapi import build_openapi
from .store import DeploymentStore


def _data_dir() -> Path:
    return Path(os.environ.get("SHIPYARD_DATA_DIR") or ".shipyard").resolve()


def _help(summary: str, example: str, detail: str = "") -> str:
    detail = f"\n\n        {detail}" if detail else ""
    return f"""
        {summary}{detail}

        Example::

            {example}

        .. versionadded:: 0.4
        """


class DeployerService(Application):
    """Model deployment: versions, traffic splits, circuit breakers, as a JupyterHub service."""

    name = "shipyard-deployer"
    version = __version__
    description = "Shipyard's deployer: MLflow models served behind the hub."

    config_file = Unicode(
        help=_help(
            "A Python config file (``c.DeployerService.x = ...``) loaded at start.",
            "python -m hub_ext.services.deployer --DeployerService.config_file=/etc/shipyard/deployer_config.py",
            "Defaults to ``$SHIPYARD_DEPLOYER_CONFIG``. The command line wins over the file.",
        )
    ).tag(config=True)

    @default("config_file")
    def _default_config_file(self):
        return os.environ.get("SHIPYARD_DEPLOYER_CONFIG", "")

    state_dir = Unicode(
        help=_help(
            "Folder of the service's own files (the SQLite database).",
            'c.DeployerService.state_dir = "/srv/shipyard/deployer"',
            "Defaults to ``deployer`` in ``$SHIPYARD_DATA_DIR``.",
        )
    ).tag(config=True)

    @default("state_dir")
    def _default_state_dir(self):
        return str(_data_dir() / "deployer")

    db_url = Unicode(
        help=_help(
            "The deployer's database: a SQLAlchemy URL, migrated at every start.",
            'c.DeployerService.db_url = "postgresql://deployer@db/deployer"',
            "SQLite in the state dir by default; PostgreSQL in production. Defaults to "
            "``$SHIPYARD_DEPLOYER_DB_URL`` when set.",
        )
    ).tag(config=True)

    @default("db_url")
    def _default_db_url(self):
        return (
            os.environ.get("SHIPYARD_DEPLOYER_DB_URL")
            or f"sqlite:///{self.state_dir}/deployer.sqlite"
        )

    backend_class = PluginType(
        "local",
        klass=Backend,
        entry_point_group="shipyard.deployer_backends",
        shipped=BACKENDS,
        help=_help(
            f"What runs the model servers: {', '.join(BACKENDS)}, or a dotted class name.",
            'c.DeployerService.backend_class = "kubernetes"',
            "``local`` runs each replica as a process of the owner's system account in a "
            "cgroup with the profile's limits (one machine); ``kubernetes`` runs a Deployment "
            "and a Service per version. Configure the chosen class with its own section "
            "(``c.LocalBackend.*``, ``c.KubernetesBackend.*``).",
        ),
    ).tag(config=True)

    profiles_file = Unicode(
        help=_help(
            "The profiles file: the same one the spawner reads.",
            'c.DeployerService.profiles_file = "/etc/shipyard/profiles.yaml"',
            "Defaults to ``$SHIPYARD_PROFILES``, else config/profiles.yaml. A deployment's "
            "replicas run with its profile's limits; users may only pick profiles open to "
            "their groups.",
        )
    ).tag(config=True)

    @default("profiles_file")
    def _default_profiles_file(self):
        return os.environ.get("SHIPYARD_PROFILES") or str(
            Path(__file__).resolve().parents[3] / "config" / "profiles.yaml"
        )

    tracking_url = Unicode(
        help=_help(
            "The tracking service's URL as model servers reach it (``MLFLOW_TRACKING_URI``).",
            'c.DeployerService.tracking_url = "http://127.0.0.1:8000/services/tracking"',
            "Each model server also gets a token of the deployment's owner, good only for "
            "the tracking service, so it reads ``models:/`` and ``runs:/`` URIs as the owner. "
            "Empty: none. Defaults to ``$SHIPYARD_DEPLOYER_TRACKING_URL``.",
        )
    ).tag(config=True)

    @default("tracking_url")
    def _default_tracking_url(self):
        return os.environ.get("SHIPYARD_DEPLOYER_TRACKING_URL", "")

    scheduler_url = Unicode(
        help=_help(
            "The scheduler service's URL, with its prefix, where the deployer reads lineage.",
            'c.DeployerService.scheduler_url = "http://127.0.0.1:8003/services/scheduler"',
            "A version's lineage (``GET .../versions/{version}/lineage``) reads the scheduler "
            "run and the pipeline run a model was deployed from here, with the caller's own "
            "token, never the deployer's. Empty: lineage stops at the MLflow run and says so. "
            "Defaults to ``$SHIPYARD_SCHEDULER_URL``, which the hub's config sets when the "
            "scheduler runs.",
        )
    ).tag(config=True)

    @default("scheduler_url")
    def _default_scheduler_url(self):
        return os.environ.get("SHIPYARD_SCHEDULER_URL", "")

    tracking_token_seconds = Integer(
        0,
        min=0,
        help=_help(
            "Lifetime of the owner's tracking token given to a version's model servers.",
            "c.DeployerService.tracking_token_seconds = 900",
            "0 (the default): the backend's longest start (``c.LocalBackend.start_timeout``, "
            "``c.KubernetesBackend.start_timeout``) plus 5 minutes. A token is made only when "
            "the replicas read the model through the tracking server (not for a local path, "
            "nor where the local backend has the version's copy), and revoked as soon as it is "
            "no longer needed: on the local backend once the version is ready or failed (later "
            "starts load the copy the first replica downloaded), on every backend when the "
            "version stops. **Kubernetes pods read the model at every start**: there the "
            "deployer makes a fresh token at half this lifetime and puts it in the version's "
            "Secret. The lifetime bounds what a token the deployer could not revoke (it died) "
            "is worth; the next deployer revokes it at its start.",
        ),
    ).tag(config=True)

    max_replicas = Integer(
        8,
        help=_help(
            "Most replicas a version may have (400 above it).",
            "c.DeployerService.max_replicas = 4",
        ),
    ).tag(config=True)

    drain_seconds = Float(
        10.0,
        help=_help(
            "Seconds between taking a version's traffic away and stopping it.",
            "c.DeployerService.drain_seconds = 30",
            "Requests the router sent to the old version before the switch finish in this "
            "time; then each replica gets SIGTERM and ``stop_grace`` seconds to finish.",
        ),
    ).tag(config=True)

    stop_grace = Float(
        20.0,
        help=_help(
            "Seconds a model server has between SIGTERM and SIGKILL.",
            "c.DeployerService.stop_grace = 30",
        ),
    ).tag(config=True)

    max_body_size = ByteSpecification(
        10 * 1024**2,
        help=_help(
            "Largest model request body (413 above it; what is over is never kept).",
            'c.DeployerService.max_body_size = "50M"',
            "Checked by the router and, again, by each model server (``--max-body-bytes``).",
        ),
    ).tag(config=True)

    request_timeout = Float(
        30.0,
        help=_help(
            "Seconds a model has to answer one request (504 after it).",
            "c.DeployerService.request_timeout = 60",
            "The model server's ``--timeout``; a replica that times out is replaced.",
        ),
    ).tag(config=True)

    max_concurrent_requests = Integer(
        512,
        help=_help(
            "Model requests the router forwards at once; more wait in its queue.",
            "c.DeployerService.max_concurrent_requests = 1024",
        ),
    ).tag(config=True)

    queue_timeout = Float(
        10.0,
        min=0,
        help=_help(
            "Seconds a model request waits for a replica while its version has none ready.",
            "c.DeployerService.queue_timeout = 15",
            "A replica that died (a crash, ``kill -9``, the OOM killer) or stopped is "
            "restarted by the backend in a few seconds; meanwhile requests to a version "
            "with no other ready replica wait for it instead of failing, and get 503 with "
            "``Retry-After`` only after this. Keep it above a replica's restart time: "
            "``LocalBackend.restart_backoff`` (1 s), the model server's start and the "
            "model's load (about 3 s on an idle machine for a small model; 6 to 11 s were "
            "measured on a loaded 2-core test machine). A version that is not ready "
            "(failed, stopped, starting) answers 503 at once. 0 never waits.",
        ),
    ).tag(config=True)

    max_queued_requests = Integer(
        256,
        min=0,
        help=_help(
            "Model requests that may wait for a replica at once (503 with Retry-After above).",
            "c.DeployerService.max_queued_requests = 1024",
            "Each waiting request holds its body in memory (up to ``max_body_size``) for "
            "up to ``queue_timeout`` seconds.",
        ),
    ).tag(config=True)

    max_discard_size = ByteSpecification(
        MAX_DISCARD_BYTES,
        help=_help(
            "Largest request body read and thrown away to answer a refused request.",
            'c.DeployerService.max_discard_size = "1G"',
            "A model request refused before its body is read (413 over ``max_body_size``, "
            "401, 403, 404, 415), and a REST API request over its limit (4 MiB: 413), is "
            "answered once the body has come: the hub's proxy sends a body without "
            "waiting for ``Expect: 100-continue``, and closing the connection under it "
            "turns the answer into the hub's HTML 503 page. Nothing of the body past the "
            "limit is kept. A body over this gets its connection closed instead.",
        ),
    ).tag(config=True)

    metrics_window = Float(
        60.0,
        min=5.0,
        help="""
        Seconds of requests a version's error rate and latency percentiles cover.

        What ``%deployments``, ``GET api/deployments/<name>/metrics``, the canary's
        judge and the alerts service's model rules read: a version's failures count
        against it for this long after the last one. Shorter notices a recovery sooner;
        longer smooths over a burst of errors. At least 5 seconds.

        Example::

            c.DeployerService.metrics_window = 300

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    breaker_threshold = Float(
        0.5,
        help=_help(
            "Error rate (0 to 1) over the breaker window that takes a version out of the split.",
            "c.DeployerService.breaker_threshold = 0.2",
            "Errors are 5xx answers (a model that raises, a timeout, no answer).",
        ),
    ).tag(config=True)

    breaker_window = Float(
        30.0,
        help=_help(
            "Seconds of requests the circuit breaker looks at.",
            "c.DeployerService.breaker_window = 60",
        ),
    ).tag(config=True)

    breaker_min_requests = Integer(
        20,
        help=_help(
            "Fewest requests in the window before the breaker may open.",
            "c.DeployerService.breaker_min_requests = 50",
        ),
    ).tag(config=True)

    breaker_cooldown = Float(
        30.0,
        help=_help(
            "Seconds an open breaker waits before probing the version with traffic again.",
            "c.DeployerService.breaker_cooldown = 60",
        ),
    ).tag(config=True)

    breaker_probes = Integer(
        5,
        help=_help(
            "Successful probe requests in a row that close a half-open breaker.",
            "c.DeployerService.breaker_probes = 10",
        ),
    ).tag(config=True)

    monitor_interval = Float(
        5.0,
        help=_help(
            "Seconds between two polls of the replicas' /stats (drift, model server counts).",
            "c.DeployerService.monitor_interval = 15",
        ),
    ).tag(config=True)

    data_quality = Bool(
        True,
        help=_help(
            "Whether each replica checks its inputs against the model's signature and "
            "training summary and counts the issues per version.",
            "c.DeployerService.data_quality = False",
            "Schema violations, missing values, values outside the training range and "
            "categories the training data never had are counted (``input_issues`` in a "
            "version's metrics, ``shipyard_deployer_model_input_issues_total``), never "
            "refused; off, replicas start with ``--data-quality off``. Applies to replicas "
            "started from then on.",
        ),
    ).tag(config=True)

    data_quality_margin = Float(
        0.0,
        min=0.0,
        help=_help(
            "How far outside its training range a numeric input may lie before it counts "
            "as out of range, as a share of the range's width.",
            "c.DeployerService.data_quality_margin = 0.1",
            "0 counts every value below the training minimum or above its maximum; 0.1 "
            "widens the range by a tenth of its width on both sides (``--data-quality-margin``).",
        ),
    ).tag(config=True)

    canary_interval = Float(
        1.0,
        help=_help(
            "Seconds between two judgements of the watched canaries (versions created with a "
            "canary policy): a threshold crossed rolls a canary back within this long.",
            "c.DeployerService.canary_interval = 2",
        ),
    ).tag(config=True)

    groups_cache_seconds = Float(
        30.0,
        help=_help(
            "Seconds a user's hub groups are cached (profiles, group grants).",
            "c.DeployerService.groups_cache_seconds = 300",
        ),
    ).tag(config=True)

    auth_cache_seconds = Integer(
        10,
        help=_help(
            "Seconds the hub's answer about a token is cached by the router.",
            "c.DeployerService.auth_cache_seconds = 60",
            "A revoked token keeps invoking models for up to this long; a shorter cache asks "
            "the hub more often.",
        ),
    ).tag(config=True)

    auth_stale_seconds = Float(
        300.0,
        help=_help(
            "Seconds the router keeps serving a token's last answer from the hub while the "
            "hub cannot be reached.",
            "c.DeployerService.auth_stale_seconds = 60",
            "While the hub is down (a crash, a restart), a token used in this window (plus "
            "``auth_cache_seconds``) keeps invoking models, with the caller's last known "
            "groups; a token not seen in it gets 503 with Retry-After until the hub is back. "
            "This is also how long a token revoked just before the outage may still invoke "
            "(nothing can be revoked while the hub is down). 0 turns it off: every model "
            "call whose token is not in the cache fails while the hub is down.",
        ),
    ).tag(config=True)

    service_url = Unicode(
        help=_help(
            "Where the service listens; the hub's proxy sends /services/deployer/ here.",
            'c.DeployerService.service_url = "http://127.0.0.1:8004"',
            "Defaults to ``$JUPYTERHUB_SERVICE_URL``.",
        )
    ).tag(config=True)

    @default("service_url")
    def _default_service_url(self):
        return os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8004")

    service_prefix = Unicode(
        help=_help(
            "The URL prefix the service is served under.",
            'c.DeployerService.service_prefix = "/services/deployer/"',
            "Defaults to ``$JUPYTERHUB_SERVICE_PREFIX``.",
        )
    ).tag(config=True)

    @default("service_prefix")
    def _default_service_prefix(self):
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/deployer/")

    stop_on_exit = Bool(
        True,
        help=_help(
            "Stop the model servers when the service stops (they start again with it).",
            "c.DeployerService.stop_on_exit = False",
            "Off, they keep running until the next start sweeps them (the router, and so "
            "the model endpoints, are down meanwhile either way).",
        ),
    ).tag(config=True)

    kill_children_on_exit = Bool(
        False,
        help=_help(
            "Die with the hub (Linux ``PR_SET_PDEATHSIG``) when run as its managed service.",
            "c.DeployerService.kill_children_on_exit = True",
            "Off by default: the deployer (and so its model servers) outlives a hub that "
            "crashes (kill -9), models keep answering through the proxy, and the next hub "
            "adopts it (``hub_ext/hub/app.py``). On, a crash of the hub stops every model until "
            "the next start.",
        ),
    ).tag(config=True)

    front_linger = Float(
        LINGER,
        help=_help(
            "Seconds the deployer's front keeps answering model requests without a deployer.",
            "c.DeployerService.front_linger = 3600",
            "The front (a process of its own that holds the service's port and routes model "
            "requests) outlives a deployer that crashes, and the next deployer takes it over. "
            "If none comes for this long (the hub is down too, and nobody starts it), the "
            "front exits and the port closes: a process without its manager does not live "
            "forever.",
        ),
    ).tag(config=True)

    @property
    def classes(self):  # the backends' options in --generate-config / --help-all
        return [DeployerService, Backend, LocalHost]

    # ------------------------------------------------------------ wiring

    def initialize(self, argv=None):
        super().initialize(argv)
        # the hub's c.LocalHost and c.KubePlacement (hub_ext/host/passing.py); this
        # service's file and command line win over them
        load_service_config(self, self.config_file)

    def _backend(self) -> Backend:
        """The configured backend; with ``c.LocalHost.placement = "container"`` the local one
        becomes :class:`~.local.containers.ContainerBackend`, as the hub's local spawner
        becomes its container spawner (another class configured is kept)."""
        chosen = self.backend_class
        if LocalHost(parent=self).placement == "container":
            from .local import LocalBackend
            from .local.containers import ContainerBackend

            if chosen is LocalBackend:
                self.log.info("Placement 'container': model replicas are podman containers")
                chosen = ContainerBackend
        return chosen(parent=self)

    monitors = List(
        Unicode(),
        ["alerts"],
        help="""
        Hub services that may read (GET) every user's deployments and their metrics as an admin would.

        The alerts service evaluates its rules from these answers; a monitor can
        change nothing (any other method answers 403, as for every service). Its
        token also needs ``access:services!service=deployer``
        (config/jupyterhub_config.py gives it to the alerts service). An empty list
        lets no service read.

        Example::

            c.DeployerService.monitors = []

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    def start(self) -> None:
        token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
        if not token:
            self.log.critical(
                "JUPYTERHUB_API_TOKEN is not set: the deployer runs as a JupyterHub service. "
                "Start it from the hub (c.JupyterHub.services) or give it the api_token of a "
                "service declared in the hub's config."
            )
            self.exit(2)
        if self.kill_children_on_exit and os.environ.get("JUPYTERHUB_SERVICE_NAME"):
            die_with_parent(signal.SIGTERM, exit_if_orphaned=True)
        Path(self.state_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        upgrade(self.db_url)
        prefix = self.service_prefix.rstrip("/") + "/"
        store = DeploymentStore(make_engine(self.db_url), prefix)
        api_url = os.environ.get("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api")
        directory = HubDirectory(api_url, token, self.groups_cache_seconds)
        hub_auth = HubOAuth(api_token=token, cache_max_age=self.auth_cache_seconds)
        backend = self._backend()
        front_settings = {
            "prefix": prefix,
            "max_body_bytes": int(self.max_body_size),
            "max_api_body": 2 * int(self.max_body_size) + 1024**2,
            "timeout": self.request_timeout,
            "max_clients": self.max_concurrent_requests,
            "queue_timeout": self.queue_timeout,
            "max_queued": self.max_queued_requests,
            "max_discard_bytes": int(self.max_discard_size),
            "auth_cache_seconds": self.auth_cache_seconds,
            "auth_stale_seconds": self.auth_stale_seconds,
            "groups_cache_seconds": self.groups_cache_seconds,
            "metrics_window": self.metrics_window,
            "breaker": {
                "window": self.breaker_window,
                "min_requests": self.breaker_min_requests,
                "threshold": self.breaker_threshold,
                "cooldown": self.breaker_cooldown,
                "probes": self.breaker_probes,
            },
        }
        url = urlparse(self.service_url)
        link = FrontLink(
            backend,
            Path(self.state_dir) / "front.sock",
            url.hostname or "127.0.0.1",
            url.port or 80,
            front_settings,
            {"api_url": api_url, "token": token},
            linger=self.front_linger,
        )
        # the model series are the front's: this process reports them as the front did
        for series in FRONT_SERIES:
            REGISTRY.unregister(series)
        REGISTRY.register(FrontMetrics(link))
        core = DeployerCore(
            store=store,
            backend=backend,
            router=link,
            profiles=ProfileStore.for_path(self.profiles_file),
            directory=directory,
            credentials=TrackingCredentials(
                api_url,
                token,
                self.tracking_url,
                self.tracking_token_seconds
                or int(backend.start_seconds) + TrackingCredentials.MARGIN,
                ledger=Path(self.state_dir) / "tracking-tokens.json",
            ),
            # the secrets service's URL comes from the hub's config (SHIPYARD_SECRETS_API_URL)
            secrets=SecretsResolver.from_environment(),
            lineage=LineageResolver(self.tracking_url, self.scheduler_url),
            drain_seconds=self.drain_seconds,
            stop_grace=self.stop_grace,
            max_replicas=self.max_replicas,
            timeout_seconds=self.request_timeout,
            max_body_bytes=int(self.max_body_size),
            data_quality=self.data_quality,
            data_quality_margin=self.data_quality_margin,
            monitor_interval=self.monitor_interval,
            canary_interval=self.canary_interval,
            # read once here: LocalBackend's default asks nvidia-smi (a subprocess)
            gpu_count=backend.gpu_count,
        )
        app = make_app(
            prefix,
            routes(prefix),
            base_handler=BaseHandler,
            not_found=NotFoundHandler,
            hub_auth=hub_auth,
            service_name="deployer",
            monitors=tuple(self.monitors),
            deployer=core,
            build_openapi=lambda prefix: build_openapi(prefix, self.max_replicas),
        )

        async def serve() -> None:
            # routes and adopted replicas first: from its first request on, the service
            # knows every deployment (never a 404 for one that exists) and serves those
            # whose replicas outlived the deployer before it
            await core.recover()
            app.settings["max_discard_bytes"] = int(self.max_discard_size)
            # the API on a loopback port of its own, which only the front calls; the
            # service's port is the front's, which outlives this process (front.py)
            server = HTTPServer(app, max_body_size=front_settings["max_api_body"])
            sockets = bind_sockets(0, "127.0.0.1")
            server.add_sockets(sockets)
            await link.open(f"http://127.0.0.1:{sockets[0].getsockname()[1]}")
            stop = stop_event()
            await core.start_wanted()
            monitor = asyncio.create_task(core.monitor())
            watch = asyncio.create_task(core.watch_canaries())
            self.log.info(
                "Deployer on %s (%s database, %s backend)",
                self.service_url,
                store.engine.dialect.name,
                type(backend).__name__,
            )
            await stop.wait()
            await link.close()  # the front closes the port and finishes its requests
            server.stop()
            monitor.cancel()
            watch.cancel()
            await core.close()
            if self.stop_on_exit:
                keys = {key for route in link.routes.values() for key in route.keys.values()}
                await asyncio.gather(*(backend.stop(k, core.stop_grace) for k in keys))
            await backend.close()

        try:
            asyncio.run(serve())
        finally:
            store.engine.dispose()
            self.log.info("Deployer stopped")


main = DeployerService.launch_instance
