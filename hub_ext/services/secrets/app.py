"""The ``secrets`` hub service: users' named secrets for their jobs and models.

Run by JupyterHub as a managed service (``python -m hub_ext.services.secrets``,
see config/jupyterhub_config.py), or by hand beside a hub with the same
``JUPYTERHUB_*`` variables. It serves the REST API (:mod:`.handlers`) under
``/services/secrets/``; the values live in a backend (:mod:`.backend`):
encrypted in a database by default, Kubernetes Secrets on Kubernetes.

Wiring only (STYLE rule 1): the traits say what can be configured; the rules
are in :mod:`.core`.
"""

from __future__ import annotations

import asyncio
import os
import sys

from jupyterhub.traitlets import ByteSpecification
from traitlets import Integer, List, Unicode, default
from traitlets.config import Application

from hub_ext import __version__

from ..common.config import load_service_config
from ..common.handlers import MAX_DISCARD_BYTES
from ..common.web import HubOAuth, listen, make_app, stop_event
from .backend import BACKENDS, load_backend
from .core import SecretsCore
from .database import DatabaseBackend
from .handlers import BaseHandler, NotFoundHandler, routes
from .keys import KeyFileError
from .kubernetes import KubernetesBackend
from .openapi import build_openapi


class SecretsService(Application):
    """Users' secrets, resolved for their runs and replicas by the scheduler and deployer."""

    name = "shipyard-secrets"
    version = __version__
    description = "Shipyard's secrets: users' named secrets for jobs and models."
    classes = [DatabaseBackend, KubernetesBackend]

    config_file = Unicode(
        "",
        help="""
        A Python config file (``c.SecretsService.x = ...``) loaded at start.

        Defaults to ``$SHIPYARD_SECRETS_CONFIG`` when set.

        Example::

            python -m hub_ext.services.secrets --SecretsService.config_file=/etc/shipyard/secrets_config.py

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    @default("config_file")
    def _default_config_file(self):
        return os.environ.get("SHIPYARD_SECRETS_CONFIG", "")

    backend_class = Unicode(
        "database",
        help=f"""
        Where values are kept: one of {", ".join(BACKENDS)}, or a dotted class name.

        ``database`` encrypts them with Fernet in a SQL database (configure
        ``c.DatabaseBackend.*``); ``kubernetes`` keeps one Kubernetes Secret per
        user, which runs and replicas read through ``secretKeyRef``
        (``c.KubernetesBackend.*``). Defaults to ``$SHIPYARD_SECRETS_BACKEND``
        when set.

        Example::

            c.SecretsService.backend_class = "kubernetes"

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    @default("backend_class")
    def _default_backend_class(self):
        return os.environ.get("SHIPYARD_SECRETS_BACKEND") or "database"

    max_value_size = ByteSpecification(
        64 * 1024,
        help="""
        Largest secret value, in bytes (UTF-8); a bigger one is refused with 413.

        Values become environment variables, which the kernel limits
        (128 KiB a variable on Linux); keep it below that.

        Example::

            c.SecretsService.max_value_size = "16K"

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    max_discard_size = ByteSpecification(
        MAX_DISCARD_BYTES,
        help="""
        Largest request body read, and thrown away, to answer a body over the limit with 413.

        A body over the limit (six times ``max_value_size`` and 64 KiB: a value
        JSON-escaped) is read and dropped, then the request gets the JSON 413: the
        hub's proxy sends a body without waiting for ``Expect: 100-continue``, and
        closing the connection under it turns the answer into the hub's HTML 503
        page. A body over this bound gets its connection closed instead. Reading
        costs bandwidth, never memory.

        Example::

            c.SecretsService.max_discard_size = "16M"

        .. versionadded:: 0.12
        """,
    ).tag(config=True)

    max_secrets_per_user = Integer(
        100,
        help="""
        Most secrets one user may keep; setting one more is refused with 400.

        Example::

            c.SecretsService.max_secrets_per_user = 20

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    resolvers = List(
        Unicode(),
        ["scheduler", "deployer"],
        help="""
        Hub services that may resolve values for runs and replicas (``POST api/resolve``).

        Any other caller, users and admins included, gets 403, recorded as a
        denied ``secret.use``. Each resolver's token also needs
        ``access:services!service=secrets`` (config/jupyterhub_config.py
        gives it to the scheduler and deployer).

        Example::

            c.SecretsService.resolvers = ["scheduler"]

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    service_url = Unicode(
        help="""
        Where the service listens; the hub's proxy sends /services/secrets/ here.

        Defaults to ``$JUPYTERHUB_SERVICE_URL``.

        Example::

            c.SecretsService.service_url = "http://127.0.0.1:8005"

        .. versionadded:: 0.4
        """
    ).tag(config=True)

    @default("service_url")
    def _default_service_url(self):
        return os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8005")

    service_prefix = Unicode(
        help="""
        The URL prefix the service is served under. Defaults to ``$JUPYTERHUB_SERVICE_PREFIX``.

        Example::

            c.SecretsService.service_prefix = "/services/secrets/"

        .. versionadded:: 0.4
        """
    ).tag(config=True)

    @default("service_prefix")
    def _default_service_prefix(self):
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/secrets/")

    def initialize(self, argv=None):
        super().initialize(argv)
        load_service_config(self, self.config_file)

    def start(self) -> None:
        token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
        if not token:
            self.log.critical(
                "JUPYTERHUB_API_TOKEN is not set: the secrets service runs as a JupyterHub "
                "service. Start it from the hub (c.JupyterHub.services)."
            )
            self.exit(2)
        backend = load_backend(self.backend_class, parent=self)
        core = SecretsCore(
            backend,
            max_value_bytes=int(self.max_value_size),
            max_secrets_per_user=self.max_secrets_per_user,
            resolvers=self.resolvers,
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
            service_name="secrets",
            build_openapi=build_openapi,
            secrets=core,
        )

        async def serve() -> None:
            try:
                await backend.start()
            except KeyFileError as e:
                self.log.critical("%s", e)
                sys.exit(2)
            server = listen(
                app,
                self.service_url,
                max_discard_bytes=int(self.max_discard_size),
                max_body_size=core.max_request_bytes,
            )
            stop = stop_event()
            self.log.info(
                "Secrets service on %s (%s backend)", self.service_url, self.backend_class
            )
            await stop.wait()
            server.stop()
            await backend.close()

        asyncio.run(serve())
        self.log.info("Secrets service stopped")


main = SecretsService.launch_instance
