"""Podman on this machine: finding it, and the options every container it starts needs.

Shipyard builds its environments' images with podman (``shipyard image``), and its
one-machine container placement runs servers, runs and replicas with it. Two things
about this machine kind decide the options here, and both were measured:

* **Resource limits.** Podman asks the runtime for ``nofile=1048576`` and a large
  ``nproc`` in every container; a host whose own hard limits are lower (20,000 open
  files here) refuses to raise them, and runc fails with "error setting rlimit type 7:
  operation not permitted" before the container's first process runs. So each
  container is given the host's own open-file limits, and a process limit no higher
  than :data:`MAX_NPROC` (a container asking for 65,536 or the host's 96,367 was
  refused the same way; 32,768 was accepted).
* **The runtime.** crun refuses a hybrid cgroup v1 layout; runc works. Podman uses
  the runtime its configuration names (``/etc/containers/containers.conf``) and
  otherwise the first it finds, so installing runc and not crun (``make test`` does)
  is enough; :data:`RUNTIME_ENV` overrides it for one machine.
"""

from __future__ import annotations

import os
import resource
import shutil

#: The most processes a container's user may have (RLIMIT_NPROC), see the module docstring.
MAX_NPROC = 32768
#: Set to an OCI runtime's name (``runc``, ``crun``) to pass ``--runtime`` to every podman call.
RUNTIME_ENV = "SHIPYARD_PODMAN_RUNTIME"


class PodmanMissing(RuntimeError):
    """Podman is not installed: what to install, in the message."""


def podman() -> list[str]:
    """The podman command to start with (``--runtime`` added when :data:`RUNTIME_ENV` says).

    Raises
    ------
    PodmanMissing
        When no ``podman`` is on ``PATH``.
    """
    found = shutil.which("podman")
    if not found:
        raise PodmanMissing(
            "podman is not installed: on Debian or Ubuntu `apt-get install podman runc` "
            "(docs/containers.md)."
        )
    runtime = os.environ.get(RUNTIME_ENV, "").strip()
    return [found, "--runtime", runtime] if runtime else [found]


def limit_options() -> list[str]:
    """``--ulimit`` options that this host's kernel lets a container have (module docstring)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nproc_soft, nproc_hard = resource.getrlimit(resource.RLIMIT_NPROC)

    def bounded(value: int, cap: int) -> int:
        return cap if value == resource.RLIM_INFINITY else min(value, cap)

    files_hard = bounded(hard, 1 << 20)
    files_soft = min(bounded(soft, 1 << 20), files_hard)
    procs_hard = bounded(nproc_hard, MAX_NPROC)
    procs_soft = min(bounded(nproc_soft, MAX_NPROC), procs_hard)
    return [
        "--ulimit",
        f"nofile={files_soft}:{files_hard}",
        "--ulimit",
        f"nproc={procs_soft}:{procs_hard}",
    ]
