"""MLflow's usage telemetry, off in every process Shipyard starts unless the admin allows it.

MLflow (3.x) sends usage events to its telemetry host from every process that
imports it, unless ``MLFLOW_DISABLE_TELEMETRY`` or ``DO_NOT_TRACK`` is true
(``mlflow.telemetry.utils.is_telemetry_disabled``). Shipyard runs MLflow code in
the tracking service and its ``mlflow server``, in every model server, in every
kernel and in every scheduled run: on a default install each would try to reach a
host outside the machine, which an air-gapped site refuses (or waits on) and which
a privacy-minded one never agreed to. So the variables below are set in the
environment of every process Shipyard starts, and the admin turns telemetry back
on with one setting, :data:`SETTING` (``SHIPYARD_MLFLOW_TELEMETRY=1`` in the
hub's environment, which ``config/jupyterhub_config.py`` passes to its services).

An environment variable rather than a trait: the setting must reach processes of
several kinds (the hub's spawner, four services, the ``mlflow server`` child, runs
and replicas) that share no config class; the hub's config already hands its
``SHIPYARD_*`` settings to every service it starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

#: The admin's setting: 1 (or true, yes) lets MLflow send its usage telemetry.
SETTING = "SHIPYARD_MLFLOW_TELEMETRY"

#: What turns MLflow's telemetry off; ``DO_NOT_TRACK`` also quiets other tools that
#: honour the convention (https://consoledonottrack.com).
OFF = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def allowed(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the admin turned MLflow's telemetry on (:data:`SETTING`).

    Parameters
    ----------
    environ : mapping of str to str, optional
        Where to read the setting; this process's environment by default.

    Returns
    -------
    bool
    """
    value = (os.environ if environ is None else environ).get(SETTING, "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables a started process gets: :data:`OFF`, or only the setting when allowed.

    Parameters
    ----------
    environ : mapping of str to str, optional
        Where to read :data:`SETTING`; this process's environment by default.

    Returns
    -------
    dict of str to str
        With telemetry allowed, ``{SETTING: "1"}`` so that processes the started
        one starts (a service's runs and replicas) follow the same setting.
    """
    if allowed(environ):
        return {SETTING: "1"}
    return dict(OFF)
