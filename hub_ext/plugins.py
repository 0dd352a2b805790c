"""Loading a service's pluggable class by name: an entry point, a shipped name, or a dotted path.

The deployer's backends (``c.DeployerService.backend_class``) and the
scheduler's executors (``c.SchedulerService.executor_class``) are chosen the
same way (STYLE rule 5), so one function resolves both; each service keeps
its own entry point group, shipped names and messages.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points


def plugin_class(
    name: str, *, group: str, shipped: Mapping[str, str], base: type, kind: str, not_a: str
) -> type:
    """The class called ``name``: an entry point of ``group``, a shipped name, or ``module.Class``.

    Entry points are read here, when the service starts, never at import.

    Parameters
    ----------
    name : str
        What the service is configured with.
    group : str
        The entry point group (``shipyard.executors``).
    shipped : Mapping[str, str]
        The classes Shipyard ships, by entry point name, as ``module:Class``;
        they load even where the package's entry points are not installed.
    base : type
        The class every plugin must subclass.
    kind : str
        What a plugin is called in the message for an unknown name (``"executor"``).
    not_a : str
        What a plugin must be, in the message for a class of the wrong kind
        (``"an Executor subclass"``).

    Returns
    -------
    type
        The subclass of ``base``, not yet instantiated.

    Raises
    ------
    ValueError
        Nothing of that name is installed (the message lists what is), or it is
        not a subclass of ``base``.
    """
    found = {ep.name: ep for ep in entry_points(group=group)}
    if name in found:
        cls = found[name].load()
    elif name in shipped:
        module, _, attr = shipped[name].partition(":")
        cls = getattr(importlib.import_module(module), attr)
    elif "." in name:
        module, _, attr = name.rpartition(".")
        cls = getattr(importlib.import_module(module), attr)
    else:
        known = sorted(set(found) | set(shipped))
        raise ValueError(f"unknown {kind} {name!r}: choose one of {', '.join(known)}")
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"{name!r} is not {not_a}")
    return cls
