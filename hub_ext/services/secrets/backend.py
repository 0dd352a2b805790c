"""Where secret values are kept: the interface, and how a backend is chosen by name.

Two backends ship (STYLE rule 5: ABC + a ``Type``-like trait + an entry point
group, ``shipyard.secret_backends``):

- ``database`` (:class:`~.database.DatabaseBackend`): a table in the
  service's database (SQLite or PostgreSQL), values encrypted with Fernet
  under a key file that is not in the database; the embedded default.
- ``kubernetes`` (:class:`~.kubernetes.KubernetesBackend`): one Kubernetes
  Secret per user; runs and replicas on Kubernetes get the values through
  ``secretKeyRef`` and the values never pass through Shipyard at run time.

A backend stores and reads; it does not check names, sizes or who asks (the
core does, once for every backend). Every method is async: a database backend
runs its queries in a thread, a Kubernetes backend awaits its API client.
"""

from __future__ import annotations

import abc
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from traitlets import MetaHasTraits
from traitlets.config import LoggingConfigurable

from ..common.plugins import check_interface, plugin_class

#: The backends Shipyard ships, by entry point name (what ``backend_class`` takes).
BACKENDS = {
    "database": "hub_ext.services.secrets.database:DatabaseBackend",
    "kubernetes": "hub_ext.services.secrets.kubernetes:KubernetesBackend",
}


@dataclass(frozen=True)
class SecretInfo:
    """A stored secret without its value."""

    name: str
    created_at: datetime
    updated_at: datetime


class _BackendMeta(MetaHasTraits, abc.ABCMeta):
    """Traits and abstract methods on one class (each alone is a metaclass)."""


class SecretBackend(LoggingConfigurable, metaclass=_BackendMeta):
    """Stores users' secret values. Subclasses implement every abstract method, as ``async def``."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # fail at import, not at the first request, on a method that is not a coroutine
        check_interface(
            cls, "SecretBackend", ("start", "list", "get", "put", "delete", "resolve", "count")
        )

    @abc.abstractmethod
    async def start(self) -> None:
        """Prepare the store (migrate a database, load keys); called once before serving."""

    @abc.abstractmethod
    async def list(self, owner: str) -> list[SecretInfo]:
        """The secrets of ``owner``, ordered by name."""

    @abc.abstractmethod
    async def get(self, owner: str, name: str) -> SecretInfo | None:
        """One secret of ``owner`` without its value; None if there is none of that name."""

    @abc.abstractmethod
    async def put(self, owner: str, name: str, value: str) -> tuple[SecretInfo, bool]:
        """Create or replace ``owner``'s secret ``name``; return it and whether it was created."""

    @abc.abstractmethod
    async def delete(self, owner: str, name: str) -> bool:
        """Delete ``owner``'s secret ``name``; False if there was none."""

    @abc.abstractmethod
    async def resolve(self, owner: str, names: Collection[str]) -> dict[str, str]:
        """The values of those of ``names`` that ``owner`` has (missing names are left out)."""

    @abc.abstractmethod
    async def count(self, owner: str) -> int:
        """How many secrets ``owner`` has."""

    async def health(self) -> dict[str, Any]:
        """Facts for the health route (never a value, a key or a URL with a password)."""
        return {"backend": type(self).__name__}

    async def close(self) -> None:
        """Release connections; called once when the service stops."""


def load_backend(name: str, **kwargs: Any) -> SecretBackend:
    """Instantiate the backend called ``name`` (entry point, shipped name or ``module.Class``).

    Raises
    ------
    ValueError
        Nothing of that name is installed; the message lists what is.
    """
    cls = plugin_class(
        name,
        group="shipyard.secret_backends",
        shipped=BACKENDS,
        base=SecretBackend,
        kind="secret backend",
        not_a="a SecretBackend subclass",
    )
    return cls(**kwargs)
