"""The Shipyard jupyter-server extension: routes only; logic lives in handlers and client."""

from __future__ import annotations

from jupyter_server.extension.application import ExtensionApp

from hub_ext import __version__

from .audit_handlers import audit_routes
from .deploy_handlers import deployer_routes
from .handlers import ExperimentsHandler, ProfileHandler
from .scheduler_handlers import scheduler_routes


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
            ]
        )
