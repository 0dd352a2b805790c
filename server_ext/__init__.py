"""Shipyard inside a user's Jupyter server: REST handlers under /shipyard/, magics, widgets."""

from hub_ext import __version__


def _jupyter_server_extension_points():
    from .extension import ShipyardExtension

    return [{"module": "server_ext.extension", "app": ShipyardExtension}]


__all__ = ["__version__"]
