"""The ``audit`` hub service: the trail's REST API for admins, and its retention.

Run by JupyterHub as a managed service (``python -m hub_ext.services.audit``,
see config/jupyterhub_config.py, ``SHIPYARD_AUDIT_SERVICE``). It serves
``/services/audit/api/records`` and ``/services/audit/api/verify`` to hub
admins (:mod:`.handlers`), and runs retention (:func:`hub_ext.audit.retention.prune`)
every :attr:`AuditService.retention_interval` seconds, and, at start and with
each pass, copies into the table any record a writer left only in the file.

The service does not own the trail: every component writes it (one lock
serialises them); the service reads it and prunes it. Reads go through a
small thread pool, so the event loop never waits on the database or on a
``verify`` of a large trail.

Wiring only (STYLE rule 1): the settings of the trail itself are
:class:`hub_ext.audit.settings.AuditSettings` (``c.AuditSettings.*``).
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from sqlalchemy import Engine
from traitlets import Float, Unicode, default
from traitlets.config import Application

from hub_ext import __version__
from hub_ext.audit import get_writer, set_source
from hub_ext.audit.db import make_engine, upgrade
from hub_ext.audit.retention import prune
from hub_ext.audit.settings import AuditSettings

from ..common.web import HubOAuth, listen, make_app, stop_event
from .handlers import BaseHandler, NotFoundHandler, routes
from .openapi import build_openapi


class AuditCore:
    """What the handlers use: the settings, an engine, and a thread pool for blocking reads."""

    def __init__(self, settings: AuditSettings, engine: Engine):
        self.settings = settings
        self.engine = engine
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="audit")

    async def run(self, fn, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, partial(fn, *args))

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "trail": "on" if self.settings.enabled else "off"}


class AuditService(Application):
    """The audit trail's REST API for hub admins, and its retention."""

    name = "shipyard-audit"
    version = __version__
    description = "Shipyard's audit service: the audit trail for hub admins."
    classes = [AuditSettings]

    retention_interval = Float(
        3600.0,
        help="""
        Seconds between two retention passes (rotate the file, prune what is too old).

        Each pass also copies into the table any record a writer could only
        write to the file. Retention itself is ``c.AuditSettings.retention_days``.

        Example::

            c.AuditService.retention_interval = 600

        .. versionadded:: 0.12
        """,
    ).tag(config=True)

    service_url = Unicode(
        help="""
        Where the service listens; the hub's proxy sends /services/audit/ here.

        Defaults to ``$JUPYTERHUB_SERVICE_URL``.

        .. versionadded:: 0.12
        """
    ).tag(config=True)

    @default("service_url")
    def _default_service_url(self):
        return os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8006")

    service_prefix = Unicode(
        help="""
        The URL prefix the service is served under.

        Defaults to ``$JUPYTERHUB_SERVICE_PREFIX``.

        .. versionadded:: 0.12
        """
    ).tag(config=True)

    @default("service_prefix")
    def _default_service_prefix(self):
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/audit/")

    def _retention_pass(self) -> None:
        writer = get_writer()
        try:
            writer.sync_table()
        except Exception:
            self.log.exception("Could not copy pending audit records into the table")
        try:
            prune()
        except Exception:
            self.log.exception("Audit retention failed; the next pass retries")

    def start(self) -> None:
        set_source("audit")
        token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
        if not token:
            self.log.critical("JUPYTERHUB_API_TOKEN is not set: start the service from the hub.")
            self.exit(2)
        settings = AuditSettings(parent=self)
        settings.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        upgrade(settings.db_url)
        core = AuditCore(settings, make_engine(settings.db_url))
        prefix = self.service_prefix.rstrip("/") + "/"
        hub_auth = HubOAuth(api_token=token, cache_max_age=30)
        app = make_app(
            prefix,
            routes(prefix),
            base_handler=BaseHandler,
            not_found=NotFoundHandler,
            hub_auth=hub_auth,
            service_name="audit",
            audit=core,
            build_openapi=build_openapi,
        )

        async def retention_loop() -> None:
            while True:
                await core.run(self._retention_pass)
                await asyncio.sleep(self.retention_interval)

        async def serve() -> None:
            server = listen(app, self.service_url)
            stop = stop_event()
            task = asyncio.create_task(retention_loop())
            self.log.info(
                "Audit service on %s (trail in %s, %s table, retention %s days)",
                self.service_url,
                settings.directory,
                core.engine.dialect.name,
                settings.retention_days or "unlimited",
            )
            await stop.wait()
            server.stop()
            task.cancel()

        try:
            asyncio.run(serve())
        finally:
            core.pool.shutdown(wait=False)
            core.engine.dispose()
            self.log.info("Audit service stopped")


main = AuditService.launch_instance
