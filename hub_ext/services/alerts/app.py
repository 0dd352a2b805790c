"""The ``alerts`` hub service: wiring only (STYLE rule 1).

Run by JupyterHub as a managed service (``python -m hub_ext.services.alerts``,
see config/jupyterhub_config.py). The traits say what can be configured; the
rules are in :mod:`.rules`, the loop in :mod:`.core`, the recipients in
:mod:`.notify`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from traitlets import Float, Unicode, default
from traitlets.config import Application

from hub_ext import __version__
from hub_ext.profiles.store import ProfileStore

from ..common.config import load_service_config
from ..common.web import HubOAuth, listen, make_app, stop_event
from .core import AlertsCore
from .handlers import BaseHandler, NotFoundHandler, routes
from .notify import AlertNotifier
from .openapi import build_openapi
from .rules import AlertRules
from .sources import Sources
from .store import AlertStore, KeyFileError


def _data_dir() -> Path:
    return Path(os.environ.get("SHIPYARD_DATA_DIR") or ".shipyard").resolve()


class AlertsService(Application):
    """Shipyard's own alerts: rules evaluated here, notified through apprise."""

    name = "shipyard-alerts"
    version = __version__
    description = "Shipyard's alerts: models, jobs and the disk, with no extra server."
    classes = [AlertRules, AlertNotifier]

    config_file = Unicode(
        help="""
        A Python config file (``c.AlertsService.x = ...``, ``c.AlertRules...``,
        ``c.AlertNotifier...``) loaded at start.

        Defaults to ``$SHIPYARD_ALERTS_CONFIG`` when set. Keep it private (0600)
        when it holds the admins' apprise URLs.

        Example::

            python -m hub_ext.services.alerts --AlertsService.config_file=/etc/shipyard/alerts_config.py

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    @default("config_file")
    def _default_config_file(self):
        return os.environ.get("SHIPYARD_ALERTS_CONFIG", "")

    evaluation_interval = Float(
        30.0,
        help="""
        Seconds between two evaluations of every rule.

        Each evaluation reads every user's deployments and jobs from the
        deployer and the scheduler; a rule's ``for`` duration is measured in
        evaluations, so it is only as precise as this interval.

        Example::

            c.AlertsService.evaluation_interval = 60

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    db_url = Unicode(
        help="""
        The alerts database: a SQLAlchemy URL (SQLite or PostgreSQL), migrated at every start.

        Defaults to ``$SHIPYARD_ALERTS_DB_URL``, else SQLite in the data dir.

        Example::

            c.AlertsService.db_url = "postgresql://alerts@db/shipyard"

        .. versionadded:: 0.18
        """
    ).tag(config=True)

    @default("db_url")
    def _default_db_url(self):
        return (
            os.environ.get("SHIPYARD_ALERTS_DB_URL")
            or f"sqlite:///{_data_dir() / 'alerts' / 'alerts.sqlite'}"
        )

    key_file = Unicode(
        help="""
        The Fernet key file that encrypts users' targets: made on first start, mode 0600.

        Defaults to ``alerts.key`` in ``$SHIPYARD_DATA_DIR``. A file others may read is refused.

        Example::

            c.AlertsService.key_file = "/etc/shipyard/alerts.key"

        .. versionadded:: 0.18
        """
    ).tag(config=True)

    @default("key_file")
    def _default_key_file(self):
        return str(_data_dir() / "alerts.key")

    data_dir = Unicode(
        help="""
        The folder whose file system the disk rule watches. Defaults to ``$SHIPYARD_DATA_DIR``.

        Example::

            c.AlertsService.data_dir = "/var/lib/shipyard"

        .. versionadded:: 0.18
        """
    ).tag(config=True)

    @default("data_dir")
    def _default_data_dir(self):
        return str(_data_dir())

    scheduler_url = Unicode(
        help="""
        The scheduler's API (``.../services/scheduler``); empty: no job rules.

        Defaults to ``$SHIPYARD_ALERTS_SCHEDULER_URL``. The scheduler must list
        this service in ``c.SchedulerService.monitors``.

        Example::

            c.AlertsService.scheduler_url = "http://127.0.0.1:8003/services/scheduler"

        .. versionadded:: 0.18
        """
    ).tag(config=True)

    @default("scheduler_url")
    def _default_scheduler_url(self):
        return os.environ.get("SHIPYARD_ALERTS_SCHEDULER_URL", "")

    deployer_url = Unicode(
        help="""
        The deployer's API (``.../services/deployer``); empty: no model rules.

        Defaults to ``$SHIPYARD_ALERTS_DEPLOYER_URL``. The deployer must list
        this service in ``c.DeployerService.monitors``.

        Example::

            c.AlertsService.deployer_url = "http://127.0.0.1:8004/services/deployer"

        .. versionadded:: 0.18
        """
    ).tag(config=True)

    @default("deployer_url")
    def _default_deployer_url(self):
        return os.environ.get("SHIPYARD_ALERTS_DEPLOYER_URL", "")

    usage_url = Unicode(
        help="""
        The usage service's API (``.../services/usage``); empty: no idle-GPU rule.

        Defaults to ``$SHIPYARD_ALERTS_USAGE_URL``. The usage service must list
        this service in ``c.UsageService.monitors``.

        Example::

            c.AlertsService.usage_url = "http://127.0.0.1:8007/services/usage"

        .. versionadded:: 0.18
        """
    ).tag(config=True)

    @default("usage_url")
    def _default_usage_url(self):
        return os.environ.get("SHIPYARD_ALERTS_USAGE_URL", "")

    profiles_file = Unicode(
        help="""
        The profiles file whose ``quotas`` the quota rule watches: the one the spawner reads.

        Defaults to ``$SHIPYARD_PROFILES`` (the hub's config passes the
        spawner's), else config/profiles.yaml. Re-read when it changes; empty:
        only the scheduler's group quotas are watched.

        Example::

            c.AlertsService.profiles_file = "/etc/shipyard/profiles.yaml"

        .. versionadded:: 0.18
        """
    ).tag(config=True)

    @default("profiles_file")
    def _default_profiles_file(self):
        return os.environ.get("SHIPYARD_PROFILES") or str(
            Path(__file__).resolve().parents[3] / "config" / "profiles.yaml"
        )

    service_url = Unicode(
        help="""
        Where the service listens; the hub's proxy sends /services/alerts/ here.

        Defaults to ``$JUPYTERHUB_SERVICE_URL``.

        Example::

            c.AlertsService.service_url = "http://127.0.0.1:8008"

        .. versionadded:: 0.18
        """
    ).tag(config=True)

    @default("service_url")
    def _default_service_url(self):
        return os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8008")

    service_prefix = Unicode(
        help="""
        The URL prefix the service is served under. Defaults to ``$JUPYTERHUB_SERVICE_PREFIX``.

        Example::

            c.AlertsService.service_prefix = "/services/alerts/"

        .. versionadded:: 0.18
        """
    ).tag(config=True)

    @default("service_prefix")
    def _default_service_prefix(self):
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/alerts/")

    def initialize(self, argv=None):
        super().initialize(argv)
        load_service_config(self, self.config_file)

    def start(self) -> None:
        token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
        if not token:
            self.log.critical(
                "JUPYTERHUB_API_TOKEN is not set: the alerts service runs as a JupyterHub "
                "service. Start it from the hub (c.JupyterHub.services)."
            )
            self.exit(2)
        try:
            store = AlertStore(self.db_url, Path(self.key_file))
        except KeyFileError as e:
            self.log.critical("%s", e)
            sys.exit(2)
        hub_api = os.environ.get("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api")
        core = AlertsCore(
            store,
            AlertRules(parent=self),
            AlertNotifier(parent=self),
            Sources(hub_api, token, self.scheduler_url, self.deployer_url, self.usage_url),
            self.data_dir,
            ProfileStore.for_path(self.profiles_file).get if self.profiles_file else None,
        )
        prefix = (
            self.service_prefix if self.service_prefix.endswith("/") else self.service_prefix + "/"
        )
        app = make_app(
            prefix,
            routes(prefix),
            base_handler=BaseHandler,
            not_found=NotFoundHandler,
            hub_auth=HubOAuth(api_token=token, cache_max_age=30),
            service_name="alerts",
            build_openapi=build_openapi,
            alerts=core,
        )

        async def serve() -> None:
            server = listen(app, self.service_url, max_body_size=64 * 1024)
            stop = stop_event()
            self.log.info(
                "Alerts service on %s, evaluating every %ss",
                self.service_url,
                self.evaluation_interval,
            )
            await core.run(self.evaluation_interval, stop)
            server.stop()
            store.close()

        asyncio.run(serve())
        self.log.info("Alerts service stopped")


main = AlertsService.launch_instance
