"""How one run of a scheduled notebook is executed: a local process or a Kubernetes Job.

:class:`~.base.Executor` is the interface the scheduler service calls;
:mod:`.local` and :mod:`.kubernetes` are its two implementations. They are
imported from their own modules (``kubernetes`` needs kubernetes_asyncio), so
importing this package loads neither: :func:`load_executor` imports the one
the service is configured with, by entry point name (group
``shipyard.executors``) or dotted class name (STYLE rule 5).
"""

from __future__ import annotations

from typing import Any

from hub_ext.plugins import plugin_class

from .base import (
    CellError,
    Executor,
    ExecutorError,
    ProgressCallback,
    RunReport,
    RunSpec,
    RunStatus,
)

#: The executors Shipyard ships, by entry point name (what ``executor_class`` takes).
EXECUTORS = {
    "local": "hub_ext.services.scheduler.executors.local:LocalExecutor",
    "kubernetes": "hub_ext.services.scheduler.executors.kubernetes:KubernetesExecutor",
}


def load_executor(name: str, **kwargs: Any) -> Executor:
    """Instantiate the executor called ``name`` (entry point or ``module.Class``).

    Raises
    ------
    ValueError
        Nothing of that name is installed; the message lists what is.
    """
    cls = plugin_class(
        name,
        group="shipyard.executors",
        shipped=EXECUTORS,
        base=Executor,
        kind="executor",
        not_a="an Executor subclass",
    )
    return cls(**kwargs)


__all__ = [
    "EXECUTORS",
    "load_executor",
    "CellError",
    "Executor",
    "ExecutorError",
    "ProgressCallback",
    "RunReport",
    "RunSpec",
    "RunStatus",
]
