"""The Shipyard jupyter-server extension: routes only; handlers are in :mod:`server_ext.handlers`.

The server extension's entry point (``jupyter-config/`` enables ``server_ext``, whose
``_jupyter_server_extension_points`` names this module), so it stays at the package's top,
beside :mod:`server_ext.handlers`, :mod:`server_ext.clients` and :mod:`server_ext.magics`
rather than inside one of them: it wires the handlers and nothing else.
"""

from __future__ import annotations

from jupyter_server.extension.application import ExtensionApp

from hub_ext import __version__

from .handlers.alerts import alerts_routes
from .handlers.audit import audit_routes
from .handlers.deployer import deployer_routes
from .handlers.scheduler import scheduler_routes
from .handlers.server import ExperimentsHandler, ProfileHandler
from .handlers.usage import usage_routes


class ShipyardExtension(ExtensionApp):
    """Serves Shipyard's REST API under /shipyard/ in every user server."""

    name = "server_ext"
    version = __version__
    load_other_extensions = True

    def initialize_handlers(self):
        self.handlers.extend(
            [
                (r"/shipyard/api/profile", ProfileHandler),
                (r"/shipyard/api/experiments", ExperimentsHandler),
                *scheduler_routes(),
                *deployer_routes(),
                *audit_routes(),
                *usage_routes(),
                *alerts_routes(),
            ]
        )
