"""The ``usage`` hub service: usage accounting, cost, and right-sizing.

Run by JupyterHub as a managed service (``python -m hub_ext.services.usage``,
see config/jupyterhub_config.py, ``SHIPYARD_USAGE``). Every
:attr:`UsageService.sample_interval` seconds it reads the counters of every
cgroup in the usage ledger (:mod:`hub_ext.host.usage`: the servers', runs',
pipeline steps' and model replicas' cgroups, labelled by the process that
made them) and, on Kubernetes with :attr:`UsageService.prometheus_url` set, what
the pods used from Prometheus (:mod:`.kubernetes`), and counts them once into its
database (:mod:`.store`). It serves
``/services/usage/api/usage`` (usage and cost by user, group, profile or
object) and ``api/usage/waste`` (idle servers, right-sizing) to hub users:
admins read everyone's, users their own (:mod:`.handlers`).

Where the counters come from, what is counted and what is not:
docs/observability.md.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from traitlets import Dict, Float, List, Unicode, default
from traitlets.config import Application

from hub_ext import __version__
from hub_ext.host.local import LocalHost
from hub_ext.host.usage import UsageLedger

from ..common.config import load_service_config
from ..common.hubapi import HubDirectory
from ..common.web import HubOAuth, listen, make_app, stop_event
from .accounting import Prices
from .core import UsageCore
from .db import make_engine, upgrade
from .handlers import BaseHandler, NotFoundHandler, routes
from .kubernetes import PrometheusPods
from .openapi import build_openapi
from .store import UsageStore


def _data_dir() -> Path:
    return Path(os.environ.get("SHIPYARD_DATA_DIR", ".shipyard")).resolve()


class UsageService(Application):
    """Usage accounting of servers, runs, steps and replicas; cost; right-sizing."""

    name = "shipyard-usage"
    version = __version__
    description = "Shipyard's usage service: what each server, run and model used, and its cost."
    classes = [LocalHost]

    config_file = Unicode(
        "",
        help="""
        A Python config file (``c.UsageService.x = ...``) loaded at start.

        Defaults to ``$SHIPYARD_USAGE_CONFIG`` when set.

        Example::

            python -m hub_ext.services.usage --UsageService.config_file=/etc/shipyard/usage_config.py

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    @default("config_file")
    def _default_config_file(self):
        return os.environ.get("SHIPYARD_USAGE_CONFIG", "")

    db_url = Unicode(
        help="""
        The usage database: a SQLAlchemy URL (SQLite or PostgreSQL), migrated at every start.

        Defaults to ``$SHIPYARD_USAGE_DB_URL``, else ``usage/usage.sqlite`` in the data dir.

        Example::

            c.UsageService.db_url = "postgresql://usage@db/shipyard"

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    @default("db_url")
    def _default_db_url(self):
        return (
            os.environ.get("SHIPYARD_USAGE_DB_URL")
            or f"sqlite:///{_data_dir() / 'usage' / 'usage.sqlite'}"
        )

    sample_interval = Float(
        15.0,
        help="""
        Seconds between two readings of every cgroup's counters.

        CPU time is exact whatever the interval (the kernel's counter is
        cumulative, and a cgroup's last reading is taken as it is removed);
        memory GiB-hours are integrated from the samples, so a shorter interval
        follows memory more closely, at the cost of reading more files.

        Example::

            c.UsageService.sample_interval = 30

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    cpu_hour_price = Float(
        0.0,
        help="""
        Price of one CPU-hour (one core busy for an hour), in :attr:`currency`.

        Example::

            c.UsageService.cpu_hour_price = 0.04

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    gib_hour_price = Float(
        0.0,
        help="""
        Price of one GiB-hour of memory in use, in :attr:`currency`.

        Example::

            c.UsageService.gib_hour_price = 0.005

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    gpu_hour_price = Float(
        0.0,
        help="""
        Price of one GPU-hour (a GPU held, used or not), in :attr:`currency`.

        Example::

            c.UsageService.gpu_hour_price = 2.5

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    profile_prices = Dict(
        help="""
        Prices of particular profiles, by profile slug: ``cpu_hour``, ``gib_hour``
        and ``gpu_hour``, each optional (the global price for the others).

        Example::

            c.UsageService.profile_prices = {"a100": {"gpu_hour": 3.2}}

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    currency = Unicode(
        "USD",
        help="""
        The currency the prices are in, shown beside costs.

        Example::

            c.UsageService.currency = "EUR"

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    idle_after = Float(
        3600.0,
        help="""
        Seconds a live server must have used (almost) no CPU to be reported as
        idle in ``api/usage/waste`` (GPU holders first).

        Example::

            c.UsageService.idle_after = 7200

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    busy_cores = Float(
        0.05,
        help="""
        CPU use, in cores over a sampling interval, above which a server counts
        as busy (below it, as idle).

        Example::

            c.UsageService.busy_cores = 0.1

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    rightsizing_days = Float(
        30.0,
        help="""
        Days of instances right-sizing looks at by default (``?days=`` overrides).

        Example::

            c.UsageService.rightsizing_days = 14

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    monitors = List(
        Unicode(),
        ["alerts"],
        help="""
        Hub services that may read (GET) every user's usage and waste as an admin would.

        The alerts service reads ``api/usage/waste`` for its idle-GPU rule; a
        monitor can change nothing (any other method is refused). Its token also
        needs ``access:services!service=usage`` (config/jupyterhub_config.py gives
        it to the alerts service when both run). An empty list lets no service read.

        Example::

            c.UsageService.monitors = []

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    prometheus_url = Unicode(
        "",
        help="""
        On Kubernetes: the cluster's Prometheus, from which each pass reads what
        Shipyard's pods used (cAdvisor's CPU and memory series, kube-state-metrics'
        labels, phases and requests; docs/observability.md). Empty (the default):
        no pod is counted, only the ledger's cgroups.

        Example::

            c.UsageService.prometheus_url = "http://prometheus-server.monitoring:80"

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    prometheus_token_file = Unicode(
        "",
        help="""
        A file holding a bearer token sent to :attr:`prometheus_url` (read at each
        pass, so a rotated token is picked up); empty: no ``Authorization`` header.

        Example::

            c.UsageService.prometheus_token_file = "/var/run/secrets/prometheus/token"

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    kubernetes_namespace = Unicode(
        help="""
        The namespace of the pods counted from :attr:`prometheus_url`: the servers',
        runs' and replicas' namespace.

        Defaults to the namespace the service runs in (its service account's), else
        ``default``.

        Example::

            c.UsageService.kubernetes_namespace = "shipyard"

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    @default("kubernetes_namespace")
    def _default_kubernetes_namespace(self):
        path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        try:
            return path.read_text().strip() or "default"
        except OSError:
            return "default"

    service_url = Unicode(
        help="""
        Where the service listens; the hub's proxy sends /services/usage/ here.

        Defaults to ``$JUPYTERHUB_SERVICE_URL``.

        .. versionadded:: 0.18
        """
    ).tag(config=True)

    @default("service_url")
    def _default_service_url(self):
        return os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8007")

    service_prefix = Unicode(
        help="""
        The URL prefix the service is served under.

        Defaults to ``$JUPYTERHUB_SERVICE_PREFIX``.

        .. versionadded:: 0.18
        """
    ).tag(config=True)

    @default("service_prefix")
    def _default_service_prefix(self):
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/usage/")

    def initialize(self, argv=None):
        super().initialize(argv)
        load_service_config(self, self.config_file)

    def make_core(self, hub_api_url: str = "", token: str = "") -> UsageCore:
        """The core over this service's settings (the ledger and parents of ``c.LocalHost``)."""
        host = LocalHost(parent=self)
        if self.db_url.startswith("sqlite:///"):
            Path(self.db_url.removeprefix("sqlite:///")).parent.mkdir(
                parents=True, exist_ok=True, mode=0o700
            )
        upgrade(self.db_url)
        directory = HubDirectory(hub_api_url, token) if hub_api_url else None
        return UsageCore(
            UsageLedger(host.usage_dir),
            [host.cgroup_parent_of(part) for part in ("", "jobs", "models")],
            UsageStore(make_engine(self.db_url), busy_cores=self.busy_cores),
            prices=Prices(self.cpu_hour_price, self.gib_hour_price, self.gpu_hour_price),
            profile_prices=self.profile_prices,
            currency=self.currency,
            idle_after=self.idle_after,
            rightsizing_days=self.rightsizing_days,
            groups_of=directory.groups_of if directory else None,
            pods=(
                PrometheusPods(
                    self.prometheus_url, self.kubernetes_namespace, self.prometheus_token_file
                )
                if self.prometheus_url
                else None
            ),
        )

    def start(self) -> None:
        token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
        if not token:
            self.log.critical("JUPYTERHUB_API_TOKEN is not set: start the service from the hub.")
            self.exit(2)
        hub_auth = HubOAuth(api_token=token, cache_max_age=30)
        core = self.make_core(hub_auth.api_url, token)
        prefix = self.service_prefix.rstrip("/") + "/"
        app = make_app(
            prefix,
            routes(prefix),
            base_handler=BaseHandler,
            not_found=NotFoundHandler,
            hub_auth=hub_auth,
            service_name="usage",
            monitors=tuple(self.monitors),
            build_openapi=build_openapi,
            usage=core,
        )

        async def sample_loop() -> None:
            while True:
                try:
                    await core.run(core.sample)
                except Exception:
                    self.log.exception("Usage sampling failed; the next pass retries")
                await asyncio.sleep(self.sample_interval)

        async def serve() -> None:
            server = listen(app, self.service_url)
            stop = stop_event()
            task = asyncio.create_task(sample_loop())
            self.log.info(
                "Usage service on %s (ledger %s, parents %s, %s database, every %g s)",
                self.service_url,
                core.ledger.directory,
                ", ".join(core.parents),
                core.store.engine.dialect.name,
                self.sample_interval,
            )
            if core.pods is not None:
                self.log.info(
                    "Pods of namespace %s counted from %s", core.pods.namespace, core.pods.url
                )
            await stop.wait()
            server.stop()
            task.cancel()

        try:
            asyncio.run(serve())
        finally:
            core.pool.shutdown(wait=False)
            core.store.engine.dispose()
            self.log.info("Usage service stopped")


main = UsageService.launch_instance
