"""Shipyard inside a user's Jupyter server and its kernels.

- :mod:`server_ext.clients`: one client per service (tracking, scheduler, deployer,
  secrets, audit), the only way to reach one;
- :mod:`server_ext.magics`: the magics, one module per family, and their widgets;
- :mod:`server_ext.handlers`: the REST API under /shipyard/api/ for the JupyterLab panel;
- :mod:`server_ext.extension`: the jupyter-server extension that serves those handlers.
"""

from hub_ext import __version__


def load_ipython_extension(ip):
    """``%load_ext server_ext``: the magics and ``log()``, see :mod:`server_ext.magics`."""
    from .magics import load_ipython_extension

    load_ipython_extension(ip)


def _jupyter_labextension_paths():
    """The JupyterLab extension built from labextension/ (``jupyter labextension develop``)."""
    return [{"src": "labextension", "dest": "shipyard-jupyterlab"}]


def _jupyter_server_extension_points():
    from .extension import ShipyardExtension

    return [{"module": "server_ext.extension", "app": ShipyardExtension}]


__all__ = ["__version__"]
