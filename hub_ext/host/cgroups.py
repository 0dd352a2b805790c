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

Devices are filtered too, where the kernel allows it: a cgroup may open only
the standard device nodes every process needs (:data:`STANDARD_DEVICES`) and
the nodes of the GPUs assigned to it, with the NVIDIA driver's shared control
nodes (:data:`NVIDIA_CONTROL`). ``CUDA_VISIBLE_DEVICES`` alone is advice a
process may reset; the filter is what keeps one user's process off another's
GPU. On cgroup v1 that is the ``devices`` controller (``devices.deny`` then
``devices.allow``); cgroup v2 has no device files, so the same rules become a
BPF program of type ``BPF_PROG_TYPE_CGROUP_DEVICE`` attached to the cgroup
(:mod:`hub_ext.host.bpfdev`), as runc and systemd do. Where neither works (no
devices hierarchy, a kernel without ``CONFIG_CGROUP_BPF``, rlimits) the hub
log says GPUs are assigned but not isolated. Filesystems under ``/dev``
(``/dev/shm``, ``/dev/mqueue``) are not device nodes and are not affected.

Where systemd is PID 1, only systemd may write the root cgroup: Shipyard's
cgroups then go under the cgroup of the unit it runs in, which must be a
service with ``Delegate=yes`` (:func:`systemd_base`; docs/profiles.md shows the
unit). Without systemd (containers, CI) they stay at the root, as before.

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
import stat
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub_ext.host import bpfdev
from hub_ext.host.gpus import device_node

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
#: CFS period used for CPU quotas (the kernel's default, 100 ms).
CPU_PERIOD_US = 100_000

#: Device nodes every process may open: the list container runtimes allow by
#: default (runc's ``AllowedDevices``), less what a notebook has no use for.
#: Each is looked up by its major:minor number when a cgroup is created.
STANDARD_DEVICES = (
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/ptmx",
)
#: Pseudo-terminal slaves (``/dev/pts/N``, terminals and ``pty`` users): majors
#: 136 to 143, any minor (Linux's Documentation/admin-guide/devices.txt).
PTS_RULES = tuple(f"c {major}:* rwm" for major in range(136, 144))
#: The NVIDIA driver's nodes every CUDA process opens besides its GPUs'
#: ``/dev/nvidia<minor>``; allowed only to a cgroup that has a GPU.
NVIDIA_CONTROL = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")


@dataclass(frozen=True)
class Limits:
    """What a cgroup enforces. None means no limit (or no guarantee)."""

    cpu_limit: float | None = None
    cpu_guarantee: float | None = None
    mem_limit: int | None = None
    mem_guarantee: int | None = None
    #: indices of the GPUs the cgroup may open (as in ``CUDA_VISIBLE_DEVICES``);
    #: none by default: where the driver filters devices, no other GPU is reachable
    gpus: tuple[str, ...] = ()


def device_rule(path: str | Path) -> str | None:
    """The devices-controller rule that allows the node at ``path`` (None: no such node).

    Parameters
    ----------
    path : str or Path
        A character or block device node (symlinks are followed: ``/dev/ptmx``).

    Returns
    -------
    str or None
        ``"c 1:3 rwm"`` for ``/dev/null``.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        return None
    return f"{kind} {os.major(st.st_rdev)}:{os.minor(st.st_rdev)} rwm"


def device_rules(
    gpus: tuple[str, ...] | list[str],
    standard: tuple[str, ...] = STANDARD_DEVICES,
    dev: Path = Path("/dev"),
) -> list[str]:
    """Every device a cgroup with ``gpus`` may open, as devices-controller rules.

    Parameters
    ----------
    gpus : sequence of str
        GPU indices (:func:`hub_ext.host.gpus.device_node` finds their nodes).
    standard : tuple of str
        The nodes every process may open.
    dev : Path
        Where the GPUs' nodes are (a folder of test nodes in tests).

    Returns
    -------
    list of str
        Nodes that do not exist on this machine are left out.
    """
    paths = [*standard]
    if gpus:
        paths += [str(device_node(index, dev)) for index in gpus]
        paths += [str(dev / name) for name in NVIDIA_CONTROL]
    rules = [rule for rule in map(device_rule, paths) if rule is not None]
    return rules + list(PTS_RULES)


class CgroupDriver(ABC):
    """One way of confining a process tree. Subclasses name the files they write."""

    #: short name shown in logs and in GET /shipyard/api/profile
    kind: str = ""
    #: False for the rlimit fallback, which only approximates limits
    enforces_total: bool = True
    #: whether only the standard devices and the cgroup's own GPUs can be opened
    filters_devices: bool = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.kind:
            raise TypeError(f"{cls.__name__} must set `kind`")

    def __init__(
        self,
        parent: str = "shipyard",
        root: Path = CGROUP_ROOT,
        *,
        base: str = "",
        standard_devices: tuple[str, ...] = STANDARD_DEVICES,
        dev: Path = Path("/dev"),
    ):
        self.parent = parent
        self.root = Path(root)
        #: the delegated cgroup Shipyard's own go under ("" for the root; see systemd_base)
        self.base = base.strip("/")
        self.standard_devices = standard_devices
        self.dev = Path(dev)
        self._warned_devices = False
        #: records each cgroup's labels and last counters for usage accounting
        #: (:class:`hub_ext.host.usage.UsageLedger`); set by LocalHost, None: no accounting
        self.ledger: Any = None

    def _top(self, hierarchy: Path) -> Path:
        """The parent cgroup's directory in ``hierarchy``."""
        return hierarchy / self.base / self.parent if self.base else hierarchy / self.parent

    def _warn_unfiltered(self, limits: Limits, why: str = "") -> None:
        """Say once that this driver leaves GPUs reachable, on a machine that has some."""
        if self.filters_devices or self._warned_devices:
            return
        if limits.gpus or (self.dev / "nvidiactl").exists():
            self._warned_devices = True
            log.warning(
                "The %s driver cannot filter devices%s: GPUs are assigned by "
                "CUDA_VISIBLE_DEVICES only, and a process that resets it can open every GPU.",
                self.kind,
                f" ({why})" if why else "",
            )

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
        self._warn_unfiltered(limits)
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

    def counter_dirs(self, name: str) -> dict[str, str]:
        """Where the usage counters of ``name`` are read: ``{"cpu": dir, "memory": dir}``.

        Empty where the driver has no cgroups (rlimits). :func:`read_counters`
        reads them with :attr:`kind`.
        """
        return {}

    def counters(self, name: str) -> Counters | None:
        """The usage counters of cgroup ``name`` now; None where it has none."""
        dirs = self.counter_dirs(name)
        return read_counters(self.kind, dirs) if dirs else None

    def remove(self, name: str, timeout: float = 5.0) -> None:
        """Kill every process left in ``name``, then delete the cgroup.

        With a :attr:`ledger` (usage accounting), the cgroup's counters are
        recorded once its processes are gone and before it is deleted: the
        last reading, which no sample could take afterwards.
        """
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
        if self.ledger is not None:
            try:
                self.ledger.closed(self, name)
            except OSError as e:  # accounting never keeps a cgroup alive
                log.warning("Could not record the last usage of cgroup %s: %s", name, e)
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
    #: until the kernel refuses the BPF device program (then the log says so)
    filters_devices = True

    @classmethod
    def available(cls, root: Path = CGROUP_ROOT) -> bool:
        try:
            controllers = (Path(root) / "cgroup.controllers").read_text().split()
        except OSError:
            return False
        return {"memory", "cpu"} <= set(controllers) and os.access(root, os.W_OK)

    def directories(self, name: str) -> list[Path]:
        return [self._top(self.root) / name]

    def counter_dirs(self, name: str) -> dict[str, str]:
        directory = str(self._top(self.root) / name)
        return {"memory": directory, "cpu": directory}

    def create(self, name: str, limits: Limits) -> None:
        # Controllers must be enabled in every ancestor's subtree_control
        # before a child cgroup gets their interface files: from the top of
        # what is Shipyard's (the root, or the delegated unit's cgroup, whose
        # ancestors systemd manages) down to the parent.
        top = self.root / self.base if self.base else self.root
        parent = self._top(self.root)
        parent.mkdir(exist_ok=True)
        for directory in (top, parent):
            enabled = (directory / "cgroup.subtree_control").read_text().split()
            missing = [c for c in ("memory", "cpu") if c not in enabled]
            if not missing:
                continue
            try:
                _write(directory / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))
            except OSError as e:
                if e.errno != errno.EBUSY or directory != top or not self.base:
                    raise
                # cgroup v2's "no internal processes" rule: the unit's own
                # processes must live in a child cgroup, not in the unit's
                raise OSError(
                    e.errno,
                    f"Cannot enable the memory and cpu controllers in {top}: Shipyard's "
                    "own processes run in it. Add DelegateSubgroup=supervisor to the "
                    "unit (systemd 254 or later; see docs/profiles.md).",
                ) from None
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
        if self.filters_devices:
            try:
                bpfdev.attach(directory, device_rules(limits.gpus, self.standard_devices, self.dev))
            except OSError as e:  # no CONFIG_CGROUP_BPF, no CAP_SYS_ADMIN, not a cgroup
                self.filters_devices = False
                self._warn_unfiltered(limits, f"bpf(2): {e.strerror or e}")


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

    def __init__(self, parent: str = "shipyard", root: Path = CGROUP_ROOT, **kwargs):
        super().__init__(parent, root, **kwargs)
        devices = self.root / "devices"
        # optional: limits work without it, the warning says GPUs are not isolated
        self.filters_devices = (devices / "devices.allow").exists() and os.access(devices, os.W_OK)
        # CPU time is counted by the cpuacct controller: in the cpu hierarchy where the
        # two are mounted together (cpu,cpuacct), else in a hierarchy of its own, which
        # the cgroup then joins too (usage accounting: docs/observability.md)
        cpuacct = self.root / "cpuacct"
        self.separate_cpuacct = (
            (cpuacct / "cpuacct.usage").exists()
            and os.access(cpuacct, os.W_OK)
            and cpuacct.resolve() != (self.root / "cpu").resolve()
        )

    def directories(self, name: str) -> list[Path]:
        hierarchies = ["memory", "cpu", "devices"] if self.filters_devices else ["memory", "cpu"]
        if self.separate_cpuacct:
            hierarchies.append("cpuacct")  # last: the others keep their places
        return [self._top(self.root / h) / name for h in hierarchies]

    def counter_dirs(self, name: str) -> dict[str, str]:
        cpu = "cpuacct" if self.separate_cpuacct else "cpu"
        return {
            "memory": str(self._top(self.root / "memory") / name),
            "cpu": str(self._top(self.root / cpu) / name),
        }

    def _write_limits(self, name: str, limits: Limits) -> None:
        memory, cpu = self.directories(name)[:2]
        if self.filters_devices:
            self._write_devices(self.directories(name)[2], limits)
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

    def _write_devices(self, directory: Path, limits: Limits) -> None:
        """Deny every device, then allow the standard nodes and the cgroup's GPUs.

        ``a`` in ``devices.deny`` empties the allow list and makes deny the
        default (the kernel accepts it only in a cgroup without children, which
        a fresh one is); each ``devices.allow`` write then adds one rule.
        """
        _write(directory / "devices.deny", "a")
        for rule in device_rules(limits.gpus, self.standard_devices, self.dev):
            _write(directory / "devices.allow", rule)


class RlimitFallback(CgroupDriver):
    """No writable cgroup: cap each process's address space. Not a real limit."""

    kind = "rlimit"
    enforces_total = False

    def __init__(self, parent: str = "shipyard", root: Path = CGROUP_ROOT, **kwargs):
        super().__init__(parent, root, **kwargs)
        self._limits: dict[str, Limits] = {}

    @classmethod
    def available(cls, root: Path = CGROUP_ROOT) -> bool:
        return True

    def directories(self, name: str) -> list[Path]:
        return []

    def create(self, name: str, limits: Limits) -> None:
        self._warn_unfiltered(limits)
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


def detect_driver(parent: str = "shipyard", root: Path = CGROUP_ROOT, **kwargs) -> CgroupDriver:
    """The best driver this host allows: cgroup v2, then v1, then rlimits."""
    for cls in (CgroupV2, CgroupV1):
        if cls.available(root):
            return cls(parent, root, **kwargs)
    return RlimitFallback(parent, root, **kwargs)


# ------------------------------------------------------------ systemd


class CgroupPlacementError(RuntimeError):
    """Shipyard's cgroups have no place it may write; the message says what to fix."""


def systemd_is_init(proc_root: Path = Path("/proc"), run_root: Path = Path("/run")) -> bool:
    """Whether systemd manages this machine's cgroups (as ``sd_booted()`` decides, plus PID 1).

    Parameters
    ----------
    proc_root, run_root : Path
        Where ``/proc`` and ``/run`` are (fake ones in tests).

    Returns
    -------
    bool
        True when PID 1 is systemd and ``/run/systemd/system`` exists. A
        container whose PID 1 is something else (CI) is not managed by systemd
        even if its image carries /run/systemd.
    """
    try:
        init = (Path(proc_root) / "1" / "comm").read_text().strip()
    except OSError:
        return False
    return init == "systemd" and (Path(run_root) / "systemd" / "system").is_dir()


def unit_cgroup(proc_cgroup: str, kind: str) -> str | None:
    """The cgroup of the systemd unit a process runs in, from its ``/proc/<pid>/cgroup``.

    Parameters
    ----------
    proc_cgroup : str
        The text of ``/proc/<pid>/cgroup``.
    kind : str
        ``cgroup2`` (the unified line, ``0::``) or ``cgroup1`` (the memory
        hierarchy's line, else systemd's own ``name=systemd``).

    Returns
    -------
    str or None
        ``system.slice/shipyard.service`` also for a process in one of the
        unit's own sub-cgroups (``.../shipyard.service/supervisor``); None when
        the process is in no service or scope.
    """
    paths: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    if kind == "cgroup2":
        path = paths.get("")
    else:
        path = paths.get("memory") or paths.get("name=systemd")
    parts = [p for p in (path or "").split("/") if p]
    for i in range(len(parts), 0, -1):
        if parts[i - 1].endswith((".service", ".scope")):
            return "/".join(parts[:i])
    return None


def unit_delegates(unit: str) -> bool | None:
    """Whether systemd delegates ``unit``'s cgroup (``Delegate=yes``); None when unknown."""
    try:
        out = subprocess.run(  # noqa: S603 - fixed argv, a unit name systemd gave
            ["systemctl", "show", "--property=Delegate", "--value", unit],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode:
        return None
    return out.stdout.strip() == "yes"


def systemd_base(
    kind: str,
    proc_root: Path = Path("/proc"),
    run_root: Path = Path("/run"),
    delegates: Callable[[str], bool | None] = unit_delegates,
) -> str:
    """Where Shipyard's cgroups go, relative to the hierarchy's root: "" for the root itself.

    Without systemd (containers, CI), the root, as always. With systemd as
    PID 1 only systemd may write the root cgroup: the cgroup of the service
    Shipyard runs in, which systemd leaves to it when the unit says
    ``Delegate=yes`` (as JupyterHub's systemdspawner and TLJH's units do).
    Rejected: a ``shipyard.slice`` of Shipyard's own (systemd does not
    delegate slices, so writing under one is writing systemd's tree again), and
    one transient unit per server (``systemd-run``), which would make
    Shipyard's process supervision, cleanup and restart recovery depend on
    systemd's D-Bus API and differ between hosts with and without systemd.

    Parameters
    ----------
    kind : str
        The driver's kind (``cgroup2``, ``cgroup1``).
    proc_root, run_root : Path
        Where ``/proc`` and ``/run`` are (fake ones in tests).
    delegates : callable
        Tells whether a unit has ``Delegate=yes`` (:func:`unit_delegates`).

    Returns
    -------
    str
        ``system.slice/shipyard.service`` for a hub run by that service.

    Raises
    ------
    CgroupPlacementError
        Under systemd, in no service or scope of its own (cannot happen to a
        process systemd started); the message says how to run Shipyard.
    """
    if not systemd_is_init(proc_root, run_root):
        return ""
    try:
        text = (Path(proc_root) / "self" / "cgroup").read_text()
    except OSError as e:
        raise CgroupPlacementError(f"Cannot read this process's cgroup: {e}") from None
    unit = unit_cgroup(text, kind)
    if unit is None:
        raise CgroupPlacementError(
            "systemd manages this machine's cgroups but Shipyard runs in no unit of its "
            "own: run it as a service with Delegate=yes (docs/profiles.md)."
        )
    if delegates(unit.rsplit("/", 1)[-1]) is False:
        log.warning(
            "Shipyard's cgroups go under %s, whose unit has no Delegate=yes: systemd may "
            "move or reset them. Run Shipyard as a service with Delegate=yes "
            "(docs/profiles.md).",
            unit,
        )
    return unit


def make_driver(
    choice: str = "auto",
    parent: str = "shipyard",
    root: Path = CGROUP_ROOT,
    proc_root: Path = Path("/proc"),
    run_root: Path = Path("/run"),
) -> CgroupDriver:
    """The driver ``choice`` names (``auto``: :func:`detect_driver`), placed where systemd allows.

    Parameters
    ----------
    choice : str
        ``auto`` or a name of :data:`DRIVERS`.
    parent : str
        The cgroup under which every process gets its own.
    root, proc_root, run_root : Path
        Where the cgroup hierarchies, ``/proc`` and ``/run`` are.

    Returns
    -------
    CgroupDriver
    """
    cls = type(detect_driver(parent, root)) if choice == "auto" else DRIVERS[choice]
    base = "" if cls is RlimitFallback else systemd_base(cls.kind, proc_root, run_root)
    return cls(parent, root, base=base)


# ------------------------------------------------------------ usage counters


@dataclass(frozen=True)
class Counters:
    """A cgroup's usage counters at one moment, as the kernel keeps them.

    Attributes
    ----------
    cpu_usec : int or None
        CPU time used by every process that ever ran in the cgroup, in
        microseconds: cumulative (v2 ``cpu.stat`` ``usage_usec``, v1
        ``cpuacct.usage`` in nanoseconds / 1000).
    mem_current : int or None
        Memory in use now, in bytes (``memory.current``, ``memory.usage_in_bytes``).
    mem_peak : int or None
        The most memory used since the cgroup was made (``memory.peak``, kernel
        5.19 and later; ``memory.max_usage_in_bytes``); None where the kernel keeps none.
    """

    cpu_usec: int | None
    mem_current: int | None
    mem_peak: int | None


def read_counters(kind: str, dirs: Mapping[str, str]) -> Counters | None:
    """Read the usage counters of a cgroup, by driver kind and :meth:`CgroupDriver.counter_dirs`.

    Parameters
    ----------
    kind : str
        ``cgroup2`` or ``cgroup1`` (:attr:`CgroupDriver.kind`).
    dirs : mapping
        ``{"cpu": dir, "memory": dir}``.

    Returns
    -------
    Counters or None
        None when the cgroup is gone (or ``kind`` keeps no counters).
    """
    if kind not in ("cgroup2", "cgroup1") or not dirs:
        return None
    cpu, memory = Path(dirs["cpu"]), Path(dirs["memory"])
    if kind == "cgroup2":
        try:
            stat_text = (cpu / "cpu.stat").read_text()
        except OSError:
            return None
        cpu_usec = None
        for line in stat_text.splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec" and value.strip().isdigit():
                cpu_usec = int(value)
        return Counters(
            cpu_usec, _read_int(memory / "memory.current"), _read_int(memory / "memory.peak")
        )
    nanoseconds = _read_int(cpu / "cpuacct.usage")
    if nanoseconds is None and not memory.is_dir():
        return None
    return Counters(
        None if nanoseconds is None else nanoseconds // 1000,
        _read_int(memory / "memory.usage_in_bytes"),
        _read_int(memory / "memory.max_usage_in_bytes"),
    )


def container_counter_dirs(
    cgroup_path: str, root: Path = CGROUP_ROOT
) -> tuple[str, dict[str, str]] | None:
    """The driver kind and counter dirs of a container's cgroup, for :func:`read_counters`.

    Parameters
    ----------
    cgroup_path : str
        Where podman put the container (``State.CgroupPath`` of its inspection),
        relative to the hierarchies' root: ``/libpod_parent/libpod-<id>`` with
        the cgroupfs manager, ``/machine.slice/libpod-<id>.scope`` with systemd's.
    root : Path
        Where the hierarchies are mounted.

    Returns
    -------
    (str, dict) or None
        ``("cgroup2", ...)`` where ``root`` is the unified hierarchy, else
        ``("cgroup1", ...)`` with the memory and cpuacct hierarchies' folders (the
        cpu one where cpuacct is not mounted apart from it); None for an empty
        path or one that climbs out of ``root``.
    """
    parts = [part for part in cgroup_path.split("/") if part]
    if not parts or any(part in (".", "..") for part in parts):
        return None
    root = Path(root)
    relative = Path(*parts)
    if (root / "cgroup.controllers").exists():
        directory = str(root / relative)
        return "cgroup2", {"cpu": directory, "memory": directory}
    cpu = root / "cpuacct" / relative
    if not (cpu / "cpuacct.usage").exists():
        cpu = root / "cpu" / relative  # cpu,cpuacct mounted together under one name
    return "cgroup1", {"cpu": str(cpu), "memory": str(root / "memory" / relative)}


class ContainerCgroup:
    """A container's cgroup, made by podman, read for the usage ledger as a driver's cgroup.

    The ledger's :meth:`~hub_ext.host.usage.UsageLedger.opened` and
    :meth:`~hub_ext.host.usage.UsageLedger.closed` ask a driver its kind,
    parent, counter dirs and counters; this answers them for one container's
    cgroup, whatever its name. Podman deletes that cgroup as soon as the
    container's last process exits, before anyone could read it again, so
    :meth:`counters` keeps the last reading it took and gives it once the
    cgroup is gone: the container's last counters, as late as it was last read.

    Parameters
    ----------
    parent : str
        The ledger folder the record goes in: the cgroup parent of the part's
        processes (servers, ``-jobs``, ``-models``), which the usage service reads.
    kind : str
        ``cgroup1`` or ``cgroup2`` (:func:`container_counter_dirs`).
    dirs : dict
        ``{"cpu": dir, "memory": dir}``.
    """

    def __init__(self, parent: str, kind: str, dirs: Mapping[str, str]):
        self.parent = parent
        self.kind = kind
        self.dirs = dict(dirs)
        #: the last counters read while the cgroup existed (None: never read)
        self.last: Counters | None = None

    @classmethod
    def of(cls, parent: str, cgroup_path: str, root: Path = CGROUP_ROOT) -> ContainerCgroup | None:
        """The cgroup at podman's ``cgroup_path``; None where it names none."""
        found = container_counter_dirs(cgroup_path, root)
        return None if found is None else cls(parent, *found)

    def counter_dirs(self, name: str) -> dict[str, str]:
        """Where the counters are read (``name``, the container's, is not needed)."""
        return dict(self.dirs)

    def read(self) -> Counters | None:
        """The counters now, kept as :attr:`last`; None once the cgroup is gone."""
        counters = read_counters(self.kind, self.dirs)
        if counters is not None:
            self.last = counters
        return counters

    def counters(self, name: str) -> Counters | None:
        """The counters now, or the last ones read where the cgroup is gone."""
        return self.read() or self.last


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
