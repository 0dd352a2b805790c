"""Enforced CPU and memory limits for local processes.

JupyterHub's stock local spawners only *declare* ``mem_limit`` and
``cpu_limit`` (as environment variables); nothing stops a kernel from taking
the whole machine. Shipyard puts every user server, and so every kernel it
starts, into a cgroup of its own:

- **cgroup v2** where the host mounts the unified hierarchy with the memory and
  cpu controllers (``memory.max``, ``memory.low``, ``cpu.max``, ``cpu.weight``);
- **cgroup v1** otherwise (``memory.limit_in_bytes``,
  ``memory.soft_limit_in_bytes``, ``cpu.cfs_quota_us``, ``cpu.shares``);
- **rlimits** only as a last resort (no cgroup is writable, e.g. not root):
  ``RLIMIT_AS`` caps each process's address space, not the server's total, and
  CPU is not limited at all. The hub log says so.

The process joins its cgroup between fork and exec (:meth:`CgroupDriver.preexec`),
before it drops privileges, so no code of the user's ever runs outside it.
Removing a cgroup first kills whatever is still inside (kernels that outlived
their server), so stopping a server leaves no process and no cgroup behind.

This module is plain Python with no JupyterHub import: the server extension
uses :func:`describe_process` to report the limits it really runs under.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
#: CFS period used for CPU quotas (the kernel's default, 100 ms).
CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class Limits:
    """What a cgroup enforces. None means no limit (or no guarantee)."""

    cpu_limit: float | None = None
    cpu_guarantee: float | None = None
    mem_limit: int | None = None
    mem_guarantee: int | None = None


class CgroupDriver(ABC):
    """One way of confining a process tree. Subclasses name the files they write."""

    #: short name shown in logs and in GET /shipyard/api/profile
    kind: str = ""
    #: False for the rlimit fallback, which only approximates limits
    enforces_total: bool = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.kind:
            raise TypeError(f"{cls.__name__} must set `kind`")

    def __init__(self, parent: str = "shipyard", root: Path = CGROUP_ROOT):
        self.parent = parent
        self.root = Path(root)

    @classmethod
    @abstractmethod
    def available(cls, root: Path = CGROUP_ROOT) -> bool:
        """True when this driver can work on this host, as this process."""

    @abstractmethod
    def directories(self, name: str) -> list[Path]:
        """The cgroup directories of ``name`` (one per v1 controller, one for v2)."""

    @abstractmethod
    def _write_limits(self, name: str, limits: Limits) -> None:
        """Write ``limits`` into the freshly created cgroup ``name``."""

    def create(self, name: str, limits: Limits) -> None:
        """Create (or reset) cgroup ``name`` with ``limits``."""
        for directory in self.directories(name):
            directory.mkdir(parents=True, exist_ok=True)
        self._write_limits(name, limits)

    def preexec(self, name: str) -> Callable[[], None]:
        """A function for ``Popen(preexec_fn=...)`` that moves the child into ``name``."""
        procs = [d / "cgroup.procs" for d in self.directories(name)]

        def join() -> None:
            pid = str(os.getpid())
            for path in procs:
                with open(path, "w") as f:
                    f.write(pid)

        return join

    def pids(self, name: str) -> set[int]:
        """Every process now in cgroup ``name``."""
        found: set[int] = set()
        for directory in self.directories(name):
            try:
                text = (directory / "cgroup.procs").read_text()
            except FileNotFoundError:
                continue
            found.update(int(p) for p in text.split())
        return found

    def exists(self, name: str) -> bool:
        return any(d.exists() for d in self.directories(name))

    def remove(self, name: str, timeout: float = 5.0) -> None:
        """Kill every process left in ``name``, then delete the cgroup."""
        deadline = time.monotonic() + timeout
        while True:
            left = self.pids(name)
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                log.warning("Processes %s in cgroup %s would not die", sorted(left), name)
                break
            time.sleep(0.05)
        for directory in self.directories(name):
            for _ in range(50):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    # EBUSY while the kernel finishes reaping the last task
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        log.warning("Could not remove cgroup %s: %s", directory, e)
                        break
                    time.sleep(0.05)

    def remove_parent(self) -> bool:
        """Delete the parent cgroup (``shipyard``) if no cgroup is left in it.

        Called when the last user of the parent stops (the hub, the scheduler,
        the deployer), so a stopped Shipyard leaves no empty cgroup behind. A
        parent that still holds a cgroup (a server or model kept running on
        purpose) stays.

        Returns
        -------
        bool
            Whether no parent is left.
        """
        gone = True
        for directory in {d.parent for d in self.directories("probe")}:
            if directory == self.root or not directory.is_dir():
                continue
            if any(p.is_dir() for p in directory.iterdir()):
                gone = False
                continue
            try:
                directory.rmdir()
            except FileNotFoundError:
                pass
            except OSError as e:  # a process joined it directly, or EBUSY
                log.info("Kept cgroup %s: %s", directory, e)
                gone = False
        return gone


def _write(path: Path, value: str | int) -> None:
    path.write_text(str(value))


class CgroupV2(CgroupDriver):
    """The unified hierarchy mounted at /sys/fs/cgroup."""

    kind = "cgroup2"

    @classmethod
    def available(cls, root: Path = CGROUP_ROOT) -> bool:
        try:
            controllers = (Path(root) / "cgroup.controllers").read_text().split()
        except OSError:
            return False
        return {"memory", "cpu"} <= set(controllers) and os.access(root, os.W_OK)

    def directories(self, name: str) -> list[Path]:
        return [self.root / self.parent / name]

    def create(self, name: str, limits: Limits) -> None:
        # Controllers must be enabled in every ancestor's subtree_control
        # before a child cgroup gets their interface files.
        parent = self.root / self.parent
        parent.mkdir(exist_ok=True)
        for directory in (self.root, parent):
            enabled = (directory / "cgroup.subtree_control").read_text().split()
            missing = [c for c in ("memory", "cpu") if c not in enabled]
            if missing:
                _write(directory / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))
        super().create(name, limits)

    def _write_limits(self, name: str, limits: Limits) -> None:
        directory = self.directories(name)[0]
        _write(directory / "memory.max", limits.mem_limit or "max")
        swap = directory / "memory.swap.max"
        if swap.exists():
            # as in v1 (memsw = limit): no escaping the memory limit into swap;
            # the file is absent when the kernel does no swap accounting
            _write(swap, 0 if limits.mem_limit else "max")
        _write(directory / "memory.low", limits.mem_guarantee or 0)
        if limits.cpu_limit:
            quota = max(1000, int(limits.cpu_limit * CPU_PERIOD_US))
            _write(directory / "cpu.max", f"{quota} {CPU_PERIOD_US}")
        else:
            _write(directory / "cpu.max", f"max {CPU_PERIOD_US}")
        # weight 100 is one CPU's fair share, as cpu.shares 1024 is in v1
        weight = int((limits.cpu_guarantee or 1) * 100)
        _write(directory / "cpu.weight", min(10000, max(1, weight)))


class CgroupV1(CgroupDriver):
    """Separate memory and cpu hierarchies (/sys/fs/cgroup/memory, /sys/fs/cgroup/cpu)."""

    kind = "cgroup1"

    @classmethod
    def available(cls, root: Path = CGROUP_ROOT) -> bool:
        root = Path(root)
        return all(
            (root / c / "cgroup.procs").exists() and os.access(root / c, os.W_OK)
            for c in ("memory", "cpu")
        )

    def directories(self, name: str) -> list[Path]:
        return [self.root / "memory" / self.parent / name, self.root / "cpu" / self.parent / name]

    def _write_limits(self, name: str, limits: Limits) -> None:
        memory, cpu = self.directories(name)
        swap = memory / "memory.memsw.limit_in_bytes"
        if swap.exists():
            # The kernel refuses a memory limit above the memory+swap limit
            # (EINVAL), so re-creating a cgroup with a higher or no limit failed
            # while the old memsw limit stood: lift it first, set it again below.
            try:
                _write(swap, -1)
            except OSError as e:  # no swap accounting on this kernel
                log.debug("Not lifting the swap limit of %s: %s", name, e)
        _write(memory / "memory.limit_in_bytes", limits.mem_limit or -1)
        if limits.mem_limit and swap.exists():
            # memory+swap equal to memory: no escaping the limit into swap
            try:
                _write(swap, limits.mem_limit)
            except OSError as e:  # no swap accounting on this kernel
                log.debug("Not limiting swap for %s: %s", name, e)
        _write(memory / "memory.soft_limit_in_bytes", limits.mem_guarantee or -1)
        _write(cpu / "cpu.cfs_period_us", CPU_PERIOD_US)
        quota = max(1000, int(limits.cpu_limit * CPU_PERIOD_US)) if limits.cpu_limit else -1
        _write(cpu / "cpu.cfs_quota_us", quota)
        _write(cpu / "cpu.shares", max(2, int((limits.cpu_guarantee or 1) * 1024)))


class RlimitFallback(CgroupDriver):
    """No writable cgroup: cap each process's address space. Not a real limit."""

    kind = "rlimit"
    enforces_total = False

    def __init__(self, parent: str = "shipyard", root: Path = CGROUP_ROOT):
        super().__init__(parent, root)
        self._limits: dict[str, Limits] = {}

    @classmethod
    def available(cls, root: Path = CGROUP_ROOT) -> bool:
        return True

    def directories(self, name: str) -> list[Path]:
        return []

    def create(self, name: str, limits: Limits) -> None:
        self._limits[name] = limits

    def _write_limits(self, name: str, limits: Limits) -> None:  # pragma: no cover - unused
        self._limits[name] = limits

    def preexec(self, name: str) -> Callable[[], None]:
        limits = self._limits.get(name, Limits())

        def apply() -> None:
            if limits.mem_limit:
                resource.setrlimit(resource.RLIMIT_AS, (limits.mem_limit, limits.mem_limit))

        return apply

    def remove(self, name: str, timeout: float = 5.0) -> None:
        self._limits.pop(name, None)


DRIVERS: dict[str, type[CgroupDriver]] = {
    "cgroup2": CgroupV2,
    "cgroup1": CgroupV1,
    "rlimit": RlimitFallback,
}


def detect_driver(parent: str = "shipyard", root: Path = CGROUP_ROOT) -> CgroupDriver:
    """The best driver this host allows: cgroup v2, then v1, then rlimits."""
    for cls in (CgroupV2, CgroupV1):
        if cls.available(root):
            return cls(parent, root)
    return RlimitFallback(parent, root)


# ------------------------------------------------------------ introspection


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def describe_process(pid: int | str = "self", root: Path = CGROUP_ROOT) -> dict:
    """The cgroup limits and current use of process ``pid``, read from the kernel.

    Returns a dict with ``kind`` (cgroup1, cgroup2 or none), ``path``,
    ``mem_limit`` / ``mem_usage`` in bytes and ``cpu_limit`` in cores (None
    where unlimited or unknown).
    """
    root = Path(root)
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return {
            "kind": "none",
            "path": None,
            "mem_limit": None,
            "mem_usage": None,
            "cpu_limit": None,
        }
    v1: dict[str, str] = {}
    v2_path = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            v2_path = path
        for controller in controllers.split(","):
            v1[controller] = path
    if "memory" in v1 and (root / "memory").is_dir():
        memory = root / "memory" / v1["memory"].lstrip("/")
        cpu = root / "cpu" / v1.get("cpu", "/").lstrip("/")
        limit = _read_int(memory / "memory.limit_in_bytes")
        if limit is not None and limit >= 2**62:  # "unlimited" in v1 is a huge number
            limit = None
        quota = _read_int(cpu / "cpu.cfs_quota_us")
        period = _read_int(cpu / "cpu.cfs_period_us") or CPU_PERIOD_US
        return {
            "kind": "cgroup1",
            "path": v1["memory"],
            "mem_limit": limit,
            "mem_usage": _read_int(memory / "memory.usage_in_bytes"),
            "cpu_limit": quota / period if quota and quota > 0 else None,
        }
    if v2_path is not None and (root / "cgroup.controllers").exists():
        directory = root / v2_path.lstrip("/")
        cpu_max = None
        try:
            quota, period = (directory / "cpu.max").read_text().split()
            if quota != "max":
                cpu_max = int(quota) / int(period)
        except (OSError, ValueError):
            pass
        return {
            "kind": "cgroup2",
            "path": v2_path,
            "mem_limit": _read_int(directory / "memory.max"),
            "mem_usage": _read_int(directory / "memory.current"),
            "cpu_limit": cpu_max,
        }
    return {"kind": "none", "path": None, "mem_limit": None, "mem_usage": None, "cpu_limit": None}
