"""Shipyard: everything that runs beside JupyterHub (profiles, spawners, services, CLI)."""

try:  # written by the build from labextension/package.json, the one place the version lives
    from ._version import __version__
except ImportError:  # a source tree nobody installed: `make install` writes it
    import warnings

    warnings.warn(
        "hub_ext/_version.py is missing: install Shipyard (make install) to set its version",
        stacklevel=2,
    )
    __version__ = "0.0.0+unknown"
