"""How the hub passes its host sections (``c.LocalHost``, ``c.KubePlacement``) on to its services.

Three configurable classes describe where users' code runs, for every part of
Shipyard that runs it: :class:`~hub_ext.host.local.LocalHost` on this machine
(the spawner's servers, the scheduler's runs, the deployer's replicas), with
:class:`~hub_ext.host.containers.ContainerPlacement` for their containers when
``c.LocalHost.placement = "container"``, and
:class:`~hub_ext.host.k8s.KubePlacement` on Kubernetes (the spawner's pods, the
scheduler's Jobs, the deployer's model servers, and the namespace of the
secrets service's Secrets). The spawner reads them from the hub's config; the
services are processes of their own, each with its own traitlets config. So
that an admin sets them once, in the hub's config file, the hub passes these
sections (:data:`PASSED_SECTIONS`) on to every managed service it starts, as
one JSON object in ``$SHIPYARD_HOST_CONFIG``::

    {"KubePlacement": {"namespace": "shipyard-jobs"}, "LocalHost": {"cgroup_parent": "lab"}}

(:func:`passed_on`, called by :class:`hub_ext.hub.app.ShipyardHub`), and each
service loads it before its own config file and command line
(:func:`inherited_config`, called by
:func:`hub_ext.services.common.config.load_service_config`), which may still
override a setting for that service alone. Only the top-level sections pass:
``c.KubeProfileSpawner.KubePlacement`` or ``c.LocalProfileSpawner.LocalHost``
configure the hub's own part alone, as traitlets' per-parent config says.

Why one variable for all the sections, and why a variable at all:

- Rejected alternative: command-line options appended to each service's
  command. The embedded config file that declares the services would append
  them, and would miss what a config file loaded after it sets
  (``tests/hub_config.py``, an admin's file that loads the embedded one),
  while the hub reads its whole config before it starts a service.
- Rejected alternative: one variable per section (what 0.16's development
  had for LocalHost, ``$SHIPYARD_LOCALHOST_CONFIG``). A new host section would
  need a new variable, a new reader in every service and a new line in the
  docs; here it is one more name in :data:`PASSED_SECTIONS`.
- The variable is part of what the hub fingerprints to decide whether a running
  service can be adopted (``ShipyardHub._fingerprint``): changing a passed
  setting restarts the services that received it.

``$SHIPYARD_LOCALHOST_CONFIG`` is not read any more, not even for one release:
no released Shipyard set it (it came and went within 0.16's development), and
a service started by an older hub with it is never adopted by a newer one (the
environment is part of the fingerprint above), so a process running this code
only sees the variable a hub running this code set.
"""

from __future__ import annotations

import json
import os

from traitlets.config import Config

#: The variable by which the hub passes its host sections to its services.
CONFIG_ENV = "SHIPYARD_HOST_CONFIG"

#: The sections of the hub's config that its services inherit: the classes that say where
#: users' code runs, configured once for the hub's spawner and the services alike.
PASSED_SECTIONS = ("LocalHost", "ContainerPlacement", "KubePlacement")


def passed_on(config: Config) -> dict[str, str]:
    """The environment that passes the hub's host sections on to a service.

    Parameters
    ----------
    config : Config
        The hub's whole config.

    Returns
    -------
    dict of str to str
        ``{CONFIG_ENV: json}`` with each of :data:`PASSED_SECTIONS` that sets
        something, or nothing when none does. A value that JSON cannot carry (a
        callable) is left out: it can only configure the hub's own part.
    """
    sections = {}
    for name in PASSED_SECTIONS:
        section = config[name] if name in config else {}
        values = {key: value for key, value in section.items() if _json_value(value)}
        if values:
            sections[name] = values
    return {CONFIG_ENV: json.dumps(sections, sort_keys=True)} if sections else {}


def inherited_config() -> Config:
    """The hub's host sections, as the hub passed them to this service.

    Returns
    -------
    Config
        Empty when the service was not started by a hub that sets any. A
        section other than :data:`PASSED_SECTIONS` is ignored.
    """
    raw = os.environ.get(CONFIG_ENV, "")
    sections = json.loads(raw) if raw else {}
    return Config(
        {
            name: values
            for name, values in sections.items()
            if name in PASSED_SECTIONS and isinstance(values, dict) and values
        }
    )


def _json_value(value) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
