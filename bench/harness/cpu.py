"""Where the machine's CPU went while a contender ran: the whole machine and named processes.

Wall time alone would hide what a scheduler costs: on a 2-core machine a contender that
burns CPU slows its own jobs down. So the throughput benchmark reads, before and after a
burst, the machine's busy time (``/proc/stat`` through psutil) and each named process's own
CPU and that of its reaped children (Shipyard's runs are the scheduler service's children;
jupyter-scheduler's jobs are the jupyter server's). Rejected alternative: sampling
``psutil.cpu_percent`` during the burst, which misses short processes between samples.
"""

from __future__ import annotations

import os

import psutil


def machine_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy since boot (all CPUs; idle and iowait excluded)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def process_cpu(pid: int | None) -> tuple[float, float]:
    """(own CPU seconds, CPU seconds of its reaped children) of process ``pid``."""
    if pid is None:
        return 0.0, 0.0
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0, 0.0
    return t.user + t.system, t.children_user + t.children_system


def cpu_seconds(pids: set[int]) -> float:
    """Own CPU seconds of the processes ``pids`` together; those gone count as none."""
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


class CpuSplit:
    """Where the machine's CPU went between :meth:`start` and :meth:`stop`, by process.

    Parameters
    ----------
    pids : dict
        A label for each process to account for (None: not found, counted as 0). The
        bench's own process (``bench client``) and the whole machine are always added.
    """

    def __init__(self, pids: dict[str, int | None]):
        self.pids = pids
        self._before: dict[str, tuple[float, float]] = {}

    def sample(self) -> dict[str, tuple[float, float]]:
        """(own, reaped children's) CPU seconds of each process, and the machine's busy time."""
        found = {name: process_cpu(pid) for name, pid in self.pids.items()}
        found["bench client"] = process_cpu(os.getpid())
        found["machine"] = (machine_cpu_seconds(), 0.0)
        return found

    def start(self) -> None:
        """Take the first sample."""
        self._before = self.sample()

    def stop(self) -> dict[str, float]:
        """CPU seconds since :meth:`start`, by label; reaped children under a label of their own."""
        after = self.sample()
        split = {}
        for name, (own, children) in after.items():
            own_before, children_before = self._before[name]
            split[name] = own - own_before
            if children - children_before > 0:
                split[f"{name}: its reaped children"] = children - children_before
        return split
