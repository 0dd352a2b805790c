"""A service's pluggable class: chosen by name with an entry-point trait, checked once.

The scheduler's executors (``c.SchedulerService.executor_class``), the deployer's
backends (``c.DeployerService.backend_class``) and the secrets service's backends
are chosen the same way (STYLE rule 5), as JupyterHub chooses spawners: a trait
(:class:`PluginType`, JupyterHub's ``EntryPointType``) that takes an entry point
name of the service's group, a class Shipyard ships, or ``module.Class``. Entry
points are read when the trait is set or the service starts, never at import.

Every plugin base class checks its subclasses' interface when they are defined
(STYLE rule 6) with :func:`check_interface`, so a missing ``async`` fails at
import, not at the first run that reaches it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points

from jupyterhub.traitlets import EntryPointType


class PluginType(EntryPointType):
    """``EntryPointType`` that also knows the shipped classes before they are installed.

    Parameters
    ----------
    shipped : Mapping[str, str]
        The classes Shipyard ships, by entry point name, as ``module:Class``; they
        load even where the package's entry points are not installed (a checkout
        run without ``pip install``).
    """

    def __init__(self, *args, shipped: Mapping[str, str], **kwargs):
        self.shipped = dict(shipped)
        super().__init__(*args, **kwargs)

    def _resolve_string(self, string):
        registry = self.load_entry_points()
        if string.lower() in registry:
            return registry[string.lower()].load()
        if string.lower() in self.shipped:
            string = self.shipped[string.lower()].replace(":", ".")
        return super()._resolve_string(string)


def plugin_class(
    name: str, *, group: str, shipped: Mapping[str, str], base: type, kind: str, not_a: str
) -> type:
    """The class called ``name``: an entry point of ``group``, a shipped name, or ``module.Class``.

    For a service whose setting is a plain name (the secrets service's
    ``backend_class``, which an environment variable may set).

    Parameters
    ----------
    name : str
        What the service is configured with.
    group : str
        The entry point group (``shipyard.secret_backends``).
    shipped : Mapping[str, str]
        The classes Shipyard ships, by entry point name, as ``module:Class``.
    base : type
        The class every plugin must subclass.
    kind : str
        What a plugin is called in the message for an unknown name (``"backend"``).
    not_a : str
        What a plugin must be, in the message for a class of the wrong kind.

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


def check_interface(
    cls: type, base: str, async_names: Iterable[str], sync_names: Iterable[str] = ()
) -> None:
    """Fail unless each method of the interface is an instance method of the right kind.

    Called from a plugin base class's ``__init_subclass__``.

    Parameters
    ----------
    cls : type
        The subclass being defined.
    base : str
        The base class's name, for the message.
    async_names, sync_names : iterable of str
        The methods that must be ``async def`` and those that must be a plain ``def``.

    Raises
    ------
    TypeError
        A method is of the wrong kind, a classmethod or a staticmethod.
    """
    async_names = tuple(async_names)
    for name in (*async_names, *sync_names):
        attr = inspect.getattr_static(cls, name)
        wrong_kind = isinstance(attr, classmethod | staticmethod)
        if wrong_kind or inspect.iscoroutinefunction(attr) != (name in async_names):
            kind = "an `async def`" if name in async_names else "a plain `def`"
            raise TypeError(f"{cls.__name__}.{name} must be {kind} instance method, as in {base}")
