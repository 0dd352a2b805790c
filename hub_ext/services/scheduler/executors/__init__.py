"""How one run of a scheduled notebook is executed: a local process or a Kubernetes Job.

:class:`~.base.Executor` is the interface the scheduler service calls;
:mod:`.local` and :mod:`.kubernetes` are its two implementations. They are
imported from their own modules (``kubernetes`` needs kubernetes_asyncio), so
importing this package loads neither.
"""

from .base import (
    CellError,
    Executor,
    ExecutorError,
    ProgressCallback,
    RunReport,
    RunSpec,
    RunStatus,
)

__all__ = [
    "CellError",
    "Executor",
    "ExecutorError",
    "ProgressCallback",
    "RunReport",
    "RunSpec",
    "RunStatus",
]
