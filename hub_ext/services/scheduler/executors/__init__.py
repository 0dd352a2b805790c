"""How one run of a scheduled notebook is executed: a local process or a Kubernetes Job.

:class:`~.base.Executor` is the interface the scheduler service calls;
:mod:`.local` and :mod:`.kubernetes` are its two implementations. They are
imported from their own modules (``kubernetes`` needs kubernetes_asyncio), so
importing this package loads neither: the service's ``executor_class`` trait
(:class:`~hub_ext.services.common.plugins.PluginType`) imports the one it is
configured with, by entry point name (group ``shipyard.executors``) or dotted
class name (STYLE rule 5), as the deployer's ``backend_class`` does.
"""

from __future__ import annotations

from .base import (
    CellError,
    Executor,
    ExecutorError,
    ProgressCallback,
    RunReport,
    RunSpec,
)

#: The executors Shipyard ships, by entry point name (what ``executor_class`` takes).
EXECUTORS = {
    "local": "hub_ext.services.scheduler.executors.local:LocalExecutor",
    "container": "hub_ext.services.scheduler.executors.containers:ContainerExecutor",
    "kubernetes": "hub_ext.services.scheduler.executors.kubernetes:KubernetesExecutor",
}


__all__ = [
    "EXECUTORS",
    "CellError",
    "Executor",
    "ExecutorError",
    "ProgressCallback",
    "RunReport",
    "RunSpec",
]
