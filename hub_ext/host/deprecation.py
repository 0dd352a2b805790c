"""Settings that moved to a configurable shared by several parts: one release of grace.

:class:`~hub_ext.host.local.LocalHost` (accounts, cgroups, environments, GPUs) and
:class:`~hub_ext.host.k8s.KubePlacement` (namespace, image, uid/gid) took over settings
that the spawner, the scheduler's executors and the deployer's backends each declared
before, with help texts asking the admin to keep them equal. The old names keep working
for one release; both say so the same way, with :func:`warn_moved`.
"""

from __future__ import annotations

import logging
import warnings

#: The release in which the settings moved; the old names go in the one after.
MOVED_IN = "0.16"


def warn_moved(log: logging.Logger | None, old: str, new: str, stacklevel: int = 3) -> None:
    """Say, as a DeprecationWarning and in ``log``, that setting ``old`` is now ``new``.

    Parameters
    ----------
    log : logging.Logger or None
        Where the admin sees it (the part's own log); None for the warning alone.
    old : str
        The old setting as the admin wrote it (``LocalExecutor.system_user_prefix``).
    new : str
        The setting to write instead, with what it configures.
    stacklevel : int
        For :func:`warnings.warn`: the caller of the code that noticed the old name.
    """
    message = (
        f"{old} is deprecated since Shipyard {MOVED_IN} and will be removed in the next "
        f"release: use {new}"
    )
    warnings.warn(message, DeprecationWarning, stacklevel=stacklevel)
    if log is not None:
        log.warning(message)
