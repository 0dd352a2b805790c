"""A replica's process on this machine: its cgroup, its start, its output FIFO, its end.

What the local backend needs of the host, and nothing of versions or health:

- :class:`ReplicaHost`: the cgroup driver under ``<c.LocalHost.cgroup_parent>-models``
  and the GPU allocator, opened on first use (opening the driver probes the host and
  logs when limits cannot be enforced); making, killing and removing a replica's cgroup;
- :meth:`ReplicaHost.launch`: a model server started the one way every user process
  starts here (:meth:`LocalHost.launch <hub_ext.host.local.LocalHost.launch>`), detached
  and writing to its FIFO;
- :class:`ReplicaProcess`: a replica started here or adopted, watched through a pidfd
  (a pid reused by another process is never taken for the replica);
- :func:`make_output` and :func:`open_output`: the replica's output FIFO, which the
  replica holds open read-write itself so it never meets a closed pipe while no
  deployer reads; the next deployer opens it again by its path;
- :func:`free_port`: a free TCP port on 127.0.0.1.

A replica outlives the deployer that started it (no ``PR_SET_PDEATHSIG``, a session
of its own): a deployer that dies is replaced by one that adopts its replicas
(:mod:`.records`). Rejected: a pipe to the deployer (a replica would get SIGPIPE,
or block, the moment the deployer died), and a log file the replica writes
itself (the replica is the owner's code, and the log is the service's).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pwd
import random
import socket
import stat
import subprocess
from collections.abc import Collection, Sequence
from pathlib import Path

from hub_ext.host.cgroups import CgroupDriver
from hub_ext.host.gpus import GpuAllocator, GpuUnavailable
from hub_ext.host.launch import CgroupFailed, LaunchRequest
from hub_ext.host.local import LocalHost
from hub_ext.host.localproc import kill_cgroup, kill_tree, oom_kills
from hub_ext.host.process import start_time
from hub_ext.host.usage import UsageLabel
from hub_ext.profiles.model import Profile

from ..backend import DeployFailed

#: A replica's output FIFO holds this much while no deployer reads it (Linux's default
#: maximum for a pipe; a replica that prints more waits for the next deployer).
PIPE_BYTES = 2**20
#: ``fcntl`` command that sets a pipe's size (Linux; not in Python's fcntl before 3.10).
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class ReplicaHost:
    """This machine as the replicas use it: their cgroups, GPUs and processes' start.

    Parameters
    ----------
    local_host : LocalHost
        The backend's ``c.LocalHost`` (accounts, cgroup driver, GPUs, cleanup timeout);
        read when used, so a setting changed on it applies from then on.
    cgroup_parent : str
        The replicas' parent cgroup (``<c.LocalHost.cgroup_parent>-models``).
    """

    def __init__(self, local_host: LocalHost, cgroup_parent: str):
        self.local_host = local_host
        self.cgroup_parent = cgroup_parent
        self._driver: CgroupDriver | None = None
        self._allocator: GpuAllocator | None = None

    @property
    def cleanup_timeout(self) -> float:
        """Seconds to wait for a replica's processes to die (``c.LocalHost.cleanup_timeout``)."""
        return self.local_host.cleanup_timeout

    @property
    def driver(self) -> CgroupDriver:
        """The cgroup driver under ``cgroup_parent``, opened on first use."""
        if self._driver is None:
            self._driver = self.local_host.open_driver(
                self.cgroup_parent,
                "No writable cgroup hierarchy: model replicas get per-process rlimits "
                "and no CPU limit.",
            )
        return self._driver

    @property
    def allocator(self) -> GpuAllocator:
        """Which replica holds which of ``c.LocalHost.gpu_devices``, made on first use."""
        if self._allocator is None:
            self._allocator = GpuAllocator(self.local_host.gpu_devices)
        return self._allocator

    def allocate_gpus(self, cgroup: str, count: int) -> list[str]:
        """``count`` free GPUs for the replica of ``cgroup``; DeployFailed when there are not."""
        try:
            return self.allocator.allocate(cgroup, count)
        except GpuUnavailable as e:
            raise DeployFailed(str(e)) from None

    async def launch(
        self,
        replica_cgroup: str,
        user: pwd.struct_passwd,
        profile: Profile,
        gpus: Sequence[str],
        argv: Sequence[str],
        env: dict[str, str],
        cwd: Path,
        output: int,
        usage: UsageLabel | None = None,
    ) -> subprocess.Popen:
        """Start a model server through :meth:`LocalHost.launch <hub_ext.host.local.LocalHost.launch>`.

        Its cgroup is made with the profile's limits and its GPUs (one of that name
        left by a restart, or by a deployer that died, is replaced); it runs as the
        owner, with its output to the FIFO ``output``, in a session of its own, and
        detached: it outlives this deployer, to be adopted by the next one.
        """
        request = LaunchRequest(
            user=user,
            profile=profile,
            argv=argv,
            env=env,
            driver=self.driver,
            cgroup=replica_cgroup,
            cwd=str(cwd),
            gpus=gpus,
            output=output,
            detached=True,
            usage=usage,
        )
        try:
            launched = await self.local_host.launch(request)
        except CgroupFailed as e:
            raise DeployFailed(
                f"Could not create the replica's cgroup {replica_cgroup}: {e}"
            ) from None
        except (OSError, subprocess.SubprocessError) as e:
            raise DeployFailed(f"Could not start the model server: {e}") from None
        assert launched.popen is not None  # not "pipe" output: a Popen
        return launched.popen

    async def kill(self, cgroup: str, pid: int | None) -> None:
        """Kill every process of the replica (its cgroup stays until :meth:`remove_cgroup`)."""
        if self.driver.enforces_total:
            await asyncio.to_thread(kill_cgroup, self.driver, cgroup, self.cleanup_timeout)
        elif pid is not None:
            kill_tree(pid)

    async def remove_cgroup(self, cgroup: str) -> None:
        """Remove the replica's cgroup, killing what is still in it."""
        if self.driver.enforces_total:
            await asyncio.to_thread(self.driver.remove, cgroup, self.cleanup_timeout)
        else:
            self.driver.remove(cgroup)

    def oom_killed(self, cgroup: str) -> bool:
        """Whether the OOM killer ended a process of the replica ``cgroup``."""
        return oom_kills(self.driver, cgroup) > 0

    def discard(self, cgroup: str) -> None:
        """Remove what is left of a replica an earlier deployer started (in a thread)."""
        self.driver.remove(cgroup, self.cleanup_timeout)

    def remove_unkept(self, kept: set[str]) -> list[str]:
        """Remove every replica under the parent but ``kept`` (in a thread); their names."""
        driver = self.driver
        if not driver.enforces_total:
            return []
        cgroups: set[str] = set()
        for directory in driver.directories("probe"):
            parent = directory.parent
            if parent.is_dir():
                cgroups.update(p.name for p in parent.iterdir() if p.is_dir())
        removed = sorted(cgroups - kept)
        for name in removed:
            driver.remove(name, self.cleanup_timeout)
        return removed


class ReplicaProcess:
    """A replica's model server process, started here or adopted, watched through a pidfd.

    ``exited`` is set when it ends; ``returncode`` is its exit status when this
    deployer started it (an adopted process is another's child: None).
    """

    def __init__(self, pid: int, started: str, popen: subprocess.Popen | None = None):
        self.loop = asyncio.get_running_loop()
        self.pid, self.started, self.popen = pid, started, popen
        self.exited = self.loop.create_future()
        self.returncode: int | None = None
        self._fd: int | None = None
        self._poll: asyncio.TimerHandle | None = None
        try:
            self._fd = os.pidfd_open(pid)
        except ProcessLookupError:  # gone already
            self._done()
            return
        except OSError:  # no pidfd (Linux before 5.3): checked 5 times a second
            self._check()
            return
        if popen is None and start_time(pid) != started:  # the pid is another process's now
            self._done()
            return
        self.loop.add_reader(self._fd, self._done)

    def _check(self) -> None:
        gone = self.popen.poll() is not None if self.popen else start_time(self.pid) is None
        if gone or (self.popen is None and start_time(self.pid) != self.started):
            self._done()
        else:
            self._poll = self.loop.call_later(0.2, self._check)

    def _done(self) -> None:
        self.close()
        if self.popen is not None:
            self.returncode = self.popen.poll()  # reaps it
        if not self.exited.done():
            self.exited.set_result(None)

    def close(self) -> None:
        """Stop watching (the process itself is not touched)."""
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        if self._fd is not None:
            with contextlib.suppress(Exception):  # of a closed event loop
                self.loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None


def make_output(path: Path) -> tuple[int, int]:
    """The replica's FIFO at ``path``, made anew: this deployer's end, and the replica's.

    Opened read-write, the replica's end keeps the FIFO open while no
    deployer reads it, so the replica never writes to a closed pipe. Ours is
    open before the replica starts: what a replica that exits at once wrote
    is still there to read.
    """
    path.unlink(missing_ok=True)
    os.mkfifo(path, 0o600)
    flags = os.O_NOFOLLOW | os.O_CLOEXEC
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK | flags)
    writer = os.open(path, os.O_RDWR | flags)
    with contextlib.suppress(OSError):  # the default (64 KiB) where the host caps it lower
        fcntl.fcntl(writer, F_SETPIPE_SZ, PIPE_BYTES)
    return reader, writer


def open_output(path: Path) -> int:
    """This deployer's end of the FIFO an earlier one made (an adopted replica's).

    Raises
    ------
    OSError
        It is gone, or it is not a FIFO.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a FIFO")
    return fd


def free_port(used: Collection[int], port_range: Sequence[int]) -> int:
    """A port on 127.0.0.1 free now and not in ``used``: of ``port_range``, else the kernel's."""
    if port_range:
        low, high = port_range
        candidates = [p for p in range(low, high + 1) if p not in used]
        random.shuffle(candidates)
    else:
        candidates = [0] * 20
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            found = s.getsockname()[1]
        if found not in used:
            return found
    raise DeployFailed("No free port for a model server on 127.0.0.1 (port_range is full).")
