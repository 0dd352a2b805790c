"""Shipyard: everything that runs beside JupyterHub (profiles, spawners, services, CLI)."""

__version__ = "0.1.0"
