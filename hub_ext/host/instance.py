"""Which Shipyard this is, when one machine holds more than one.

A staging and a production hub, or two test runs, can share a machine only if
nothing machine-wide is shared: not the environments (an upgrade of one would
update the other's), not the cgroups (one's cleanup would kill the other's
servers), not the system accounts (one's user would own the other's files),
not the temporary folders. Every such name derives from one setting, the
**instance name**, ``$SHIPYARD_INSTANCE``:

=============================  ==========================  ===========================
what                           default instance            ``SHIPYARD_INSTANCE=staging``
=============================  ==========================  ===========================
servers' cgroup                ``shipyard/<user>``         ``staging/<user>``
scheduled runs' cgroup         ``shipyard-jobs/<run>``     ``staging-jobs/<run>``
model replicas' cgroup         ``shipyard-models/<key>``   ``staging-models/<key>``
users' system accounts         ``jupyter-<user>``          ``staging-<user>``
environments (as root)         ``/opt/shipyard/envs``      ``/opt/staging/envs``
run outputs (as root)          ``/var/lib/shipyard/runs``  ``/var/lib/staging/runs``
model replicas' folders        ``$TMPDIR/shipyard-models`` ``$TMPDIR/staging-models``
=============================  ==========================  ===========================

The default, ``shipyard``, keeps the names every install had before the
setting existed. Each name stays a trait of its own (for instance
``c.LocalHost.cgroup_parent``, :mod:`hub_ext.host.local`); the instance name
only changes the traits' defaults. The data directory and the ports are set on their own
(``SHIPYARD_DATA_DIR``, ``SHIPYARD_BIND_URL``...), as before.
"""

from __future__ import annotations

import os
import re

#: The instance name when none is set; it gives the names Shipyard always used.
DEFAULT = "shipyard"

#: A name that fits a cgroup, a path segment and (with "-") an account-name prefix of
#: at most 22 characters, which keeps account names within Linux's 32.
_NAME = re.compile(r"[a-z][a-z0-9-]{0,19}")


class InvalidInstanceName(ValueError):
    """``$SHIPYARD_INSTANCE`` is not a usable name; the message says what is."""


def name() -> str:
    """The instance name: ``$SHIPYARD_INSTANCE``, else ``shipyard``.

    Raises
    ------
    InvalidInstanceName
        When the setting is not 1 to 20 lowercase letters, digits and dashes
        starting with a letter.
    """
    value = os.environ.get("SHIPYARD_INSTANCE", "").strip() or DEFAULT
    if not _NAME.fullmatch(value):
        raise InvalidInstanceName(
            f"SHIPYARD_INSTANCE={value!r} is not a usable instance name: use 1 to 20 "
            "lowercase letters, digits and dashes, starting with a letter (e.g. staging)."
        )
    return value


def cgroup_parent(part: str = "") -> str:
    """The parent cgroup of this instance's servers, or of its ``jobs`` or ``models``."""
    return f"{name()}-{part}" if part else name()


def account_prefix() -> str:
    """Prefix of the users' system accounts: ``jupyter-``, or ``<instance>-``."""
    instance = name()
    return "jupyter-" if instance == DEFAULT else f"{instance}-"


def system_dir(root: str, *parts: str) -> str:
    """A machine-wide folder of this instance: ``system_dir("/opt", "envs")`` is ``/opt/shipyard/envs``."""
    return os.path.join(root, name(), *parts)
