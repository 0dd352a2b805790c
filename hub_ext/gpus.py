"""GPU assignment for local servers: each GPU belongs to at most one server.

A server whose profile asks for N GPUs gets N free device indices in
``CUDA_VISIBLE_DEVICES``; a server whose profile asks for none gets an empty
``CUDA_VISIBLE_DEVICES`` so it cannot reach the GPUs at all. Assignments are
kept in the spawner's state, so a hub restart re-registers the GPUs of servers
that are still running instead of handing them out twice.
"""

from __future__ import annotations

import shutil
import subprocess
import threading


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
