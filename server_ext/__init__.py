"""Shipyard inside a user's Jupyter server: REST handlers under /shipyard/, magics, widgets."""

from hub_ext import __version__


def load_ipython_extension(ip):
    """``%load_ext server_ext``: the tracking magics and ``log()``, see :mod:`server_ext.magics`."""
    from .magics import load_ipython_extension

    load_ipython_extension(ip)


def _jupyter_labextension_paths():
    """The JupyterLab extension built from labextension/ (``jupyter labextension develop``)."""
    return [{"src": "labextension", "dest": "shipyard-jupyterlab"}]


def _jupyter_server_extension_points():
    from .extension import ShipyardExtension

    return [{"module": "server_ext.extension", "app": ShipyardExtension}]


__all__ = ["__version__"]
