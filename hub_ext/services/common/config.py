"""How a service reads its configuration: what the hub passed on, its file, its command line.

Every service is a traitlets Application started by the hub with
``--config <file>`` (``$SHIPYARD_<SERVICE>_CONFIG``) and, for some, options on its
command line. :func:`load_service_config` loads them in one order for all: what the
hub passed on first (its host sections, ``c.LocalHost`` and ``c.KubePlacement``:
:func:`hub_ext.host.passing.inherited_config`), then the service's own file, then its
command line, each winning over the one before.

Every service inherits the host sections, not only those that start users' code: the
secrets service's Kubernetes backend keeps users' Secrets in ``c.KubePlacement.namespace``,
where the scheduler's Jobs and the deployer's model servers read them, and a section a
service has no class for is simply never read.
"""

from __future__ import annotations

from traitlets.config import Application

from hub_ext.host.passing import inherited_config


def load_service_config(app: Application, config_file: str) -> None:
    """Load the hub's host sections, ``config_file``, then the command line again into ``app``.

    Call it from the service's ``initialize`` after ``super().initialize(argv)`` (which
    parsed the command line), with the service's ``config_file`` setting.
    """
    inherited = inherited_config()
    if inherited:
        app.update_config(inherited)
    if config_file:
        app.load_config_file(config_file)
    app.update_config(app.cli_config)  # the command line wins over the file
