"""GPU assignment for local servers: each GPU belongs to at most one server.

A server whose profile asks for N GPUs gets N free device indices in
``CUDA_VISIBLE_DEVICES``; a server whose profile asks for none gets an empty
``CUDA_VISIBLE_DEVICES``. That variable is only advice a process may reset:
the kernel enforces the assignment, through the cgroup's device filter, which
lets a process open only its own GPUs' device nodes (:func:`device_node`,
:mod:`hub_ext.host.cgroups`). Assignments are
kept in the spawner's state, so a hub restart re-registers the GPUs of servers
that are still running instead of handing them out twice.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import threading
from pathlib import Path


def detect_gpus() -> list[str]:
    """Indices of the NVIDIA GPUs this machine has (empty without a driver)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run(  # noqa: S603 - fixed argv
            [smi, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def _bus_dir(bus_id: str) -> str:
    """``00000000:3B:00.0`` (nvidia-smi) as ``0000:3b:00.0`` (/proc/driver/nvidia/gpus)."""
    domain, _, rest = bus_id.strip().partition(":")
    return f"{domain[-4:]}:{rest}".lower()


def parse_minor_numbers(smi_csv: str, proc_root: Path = Path("/proc")) -> dict[str, int]:
    """The device minor number (``/dev/nvidia<minor>``) of each GPU index.

    The index ``CUDA_VISIBLE_DEVICES`` takes need not be the number of the GPU's
    device node: the driver numbers nodes in its own probe order. The driver
    writes each GPU's node number ("Device Minor") under its PCI address in
    ``/proc/driver/nvidia/gpus/<address>/information``; nvidia-smi gives the
    address of each index.

    Parameters
    ----------
    smi_csv : str
        ``nvidia-smi --query-gpu=index,pci.bus_id --format=csv,noheader``.
    proc_root : Path
        Where ``/proc`` is (a fake one in tests).

    Returns
    -------
    dict of str to int
        Only the indices whose node number the driver tells.
    """
    minors = {}
    for line in smi_csv.splitlines():
        index, _, bus_id = (part.strip() for part in line.partition(","))
        info = proc_root / "driver" / "nvidia" / "gpus" / _bus_dir(bus_id) / "information"
        try:
            text = info.read_text()
        except OSError:
            continue
        for entry in text.splitlines():
            key, _, value = entry.partition(":")
            if key.strip() == "Device Minor" and value.strip().isdigit():
                minors[index] = int(value)
    return minors


@functools.cache
def minor_numbers() -> dict[str, int]:
    """:func:`parse_minor_numbers` for this machine (asked once: GPUs do not come and go)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return {}
    try:
        out = subprocess.run(  # noqa: S603 - fixed argv
            [smi, "--query-gpu=index,pci.bus_id", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return parse_minor_numbers(out.stdout) if out.returncode == 0 else {}


def device_node(index: str, dev: Path = Path("/dev")) -> Path:
    """The device node of GPU ``index``: ``/dev/nvidia<minor>``, the index where unknown."""
    return dev / f"nvidia{minor_numbers().get(index, index)}"


class GpuUnavailable(Exception):
    """Not enough free GPUs; the message says how many are in use."""


class GpuAllocator:
    """Hands out device indices to owners (server slugs), never one to two owners."""

    def __init__(self, devices: list[str]):
        self.devices = list(devices)
        self._owners: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def in_use(self) -> dict[str, list[str]]:
        with self._lock:
            return {k: list(v) for k, v in self._owners.items()}

    def allocate(self, owner: str, count: int) -> list[str]:
        """Reserve ``count`` free GPUs for ``owner`` (releasing what it held before)."""
        if count < 0:
            # free[:count] would silently hand out all but -count of the free GPUs
            raise ValueError(f"GPU count must be 0 or more, not {count}")
        with self._lock:
            self._owners.pop(owner, None)
            if count == 0:
                return []
            taken = {d for ids in self._owners.values() for d in ids}
            free = [d for d in self.devices if d not in taken]
            if len(free) < count:
                raise GpuUnavailable(
                    f"This profile needs {count} GPU(s) but only {len(free)} of the machine's "
                    f"{len(self.devices)} are free; try again when a GPU server stops, "
                    "or choose a profile without GPU."
                )
            chosen = free[:count]
            self._owners[owner] = chosen
            return chosen

    def restore(self, owner: str, devices: list[str]) -> None:
        """Record GPUs a still-running server already holds (after a hub restart)."""
        with self._lock:
            self._owners[owner] = [d for d in devices if d in self.devices]

    def release(self, owner: str) -> None:
        with self._lock:
            self._owners.pop(owner, None)
