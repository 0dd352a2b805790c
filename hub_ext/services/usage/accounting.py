"""The arithmetic of usage accounting, as pure functions: no database, no cgroup, no clock.

- :func:`advance`: one reading of a cgroup's counters against the last one
  counted gives what was used in between (CPU-seconds from the cumulative CPU
  counter; memory GiB-hours by the trapezoid rule over the memory samples;
  GPU-hours and wall time from the time the GPUs were held), and the new
  state to count the next reading against. Counting a reading against the
  state it produced gives nothing: that is what makes a reading counted once,
  whether the service restarts or sees the same final reading twice.
- :func:`requested_usage`: on Kubernetes, where no cgroup of a pod's is
  readable from the hub, what a pod *reserved*: its requests times its
  lifetime.
- :class:`Prices` and :func:`cost`: usage into money.
- :func:`recommend_memory`, :func:`recommend_cpu`, :func:`percentile`:
  right-sizing a profile from the peaks of its instances.
- :func:`idle_seconds`: how long a server has used (almost) no CPU.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

GiB = 1024**3
MiB = 1024**2


@dataclass(frozen=True)
class Reading:
    """A cgroup's counters at ``at`` (seconds since the epoch); None: not kept there."""

    at: float
    cpu_usec: int | None
    mem_current: int | None
    mem_peak: int | None


@dataclass(frozen=True)
class Counted:
    """What was counted of one cgroup instance so far: the last reading, and peaks.

    ``last_mem`` is None before the first reading.
    """

    gpus: int
    last_at: float
    last_cpu_usec: int = 0
    last_mem: int | None = None
    peak_mem: int = 0
    peak_cores: float = 0.0
    last_busy_at: float | None = None


@dataclass(frozen=True)
class Delta:
    """Usage between two readings."""

    cpu_seconds: float = 0.0
    mem_gib_hours: float = 0.0
    gpu_hours: float = 0.0
    wall_seconds: float = 0.0

    def __add__(self, other: Delta) -> Delta:
        return Delta(
            self.cpu_seconds + other.cpu_seconds,
            self.mem_gib_hours + other.mem_gib_hours,
            self.gpu_hours + other.gpu_hours,
            self.wall_seconds + other.wall_seconds,
        )


def advance(state: Counted, reading: Reading, busy_cores: float = 0.05) -> tuple[Counted, Delta]:
    """Count ``reading`` against ``state``: the usage in between, and the state after it.

    Parameters
    ----------
    state : Counted
        The instance as counted so far (at its start: ``last_at`` is when its
        cgroup was made, ``last_cpu_usec`` 0).
    reading : Reading
        A newer reading. An older one (or the same again) counts nothing.
    busy_cores : float
        CPU use, in cores over the interval, above which the instance counts
        as busy (:attr:`Counted.last_busy_at`, for idle detection).

    Returns
    -------
    (Counted, Delta)
    """
    dt = reading.at - state.last_at
    if dt <= 0:
        return state, Delta()
    cpu_usec = state.last_cpu_usec
    cpu_seconds = 0.0
    if reading.cpu_usec is not None and reading.cpu_usec > state.last_cpu_usec:
        cpu_seconds = (reading.cpu_usec - state.last_cpu_usec) / 1e6
        cpu_usec = reading.cpu_usec
    # memory: a level between two samples is their mean; the first interval holds the
    # first sample's level, the last (no sample: the cgroup is gone) the last one's
    current = reading.mem_current if reading.mem_current is not None else state.last_mem
    previous = state.last_mem if state.last_mem is not None else current
    mem_gib_hours = 0.0
    if current is not None and previous is not None:
        mem_gib_hours = (previous + current) / 2 / GiB * dt / 3600
    cores = cpu_seconds / dt
    busy = cores >= busy_cores
    new = replace(
        state,
        last_at=reading.at,
        last_cpu_usec=cpu_usec,
        last_mem=current,
        peak_mem=max(state.peak_mem, reading.mem_peak or 0, current or 0),
        # a rate over a short interval says little: peaks are taken over a second or more
        peak_cores=max(state.peak_cores, cores) if dt >= 1 else state.peak_cores,
        last_busy_at=reading.at if busy else state.last_busy_at,
    )
    return new, Delta(cpu_seconds, mem_gib_hours, state.gpus * dt / 3600, dt)


def requested_usage(cpu_request: float, mem_request_bytes: int, gpus: int, seconds: float) -> Delta:
    """What a Kubernetes pod reserved: its requests held for ``seconds``.

    On Kubernetes the hub reads no cgroup of a pod's; a pod *reserves* its
    requests on its node whether it uses them or not, so that is what it is
    charged: ``cpu_request`` cores, ``mem_request_bytes`` and ``gpus`` for its
    lifetime (from its start to its end, in ``seconds``).

    Raises
    ------
    ValueError
        A negative request or duration.
    """
    if min(cpu_request, mem_request_bytes, gpus, seconds) < 0:
        raise ValueError("requests and the duration cannot be negative")
    return Delta(
        cpu_seconds=cpu_request * seconds,
        mem_gib_hours=mem_request_bytes / GiB * seconds / 3600,
        gpu_hours=gpus * seconds / 3600,
        wall_seconds=seconds,
    )


@dataclass(frozen=True)
class Prices:
    """Price of one CPU-hour, one GiB-hour of memory and one GPU-hour."""

    cpu_hour: float = 0.0
    gib_hour: float = 0.0
    gpu_hour: float = 0.0


def prices_for(
    profile: str, default: Prices, by_profile: Mapping[str, Mapping[str, float]]
) -> Prices:
    """The prices of ``profile``: its own entries in ``by_profile``, the default for the rest."""
    own = by_profile.get(profile, {})
    return Prices(
        cpu_hour=float(own.get("cpu_hour", default.cpu_hour)),
        gib_hour=float(own.get("gib_hour", default.gib_hour)),
        gpu_hour=float(own.get("gpu_hour", default.gpu_hour)),
    )


def cost(usage: Delta, prices: Prices) -> float:
    """What ``usage`` costs at ``prices``."""
    return (
        usage.cpu_seconds / 3600 * prices.cpu_hour
        + usage.mem_gib_hours * prices.gib_hour
        + usage.gpu_hours * prices.gpu_hour
    )


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q`` (0 to 100) percentile of ``values``, nearest rank; 0 for none."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def round_memory(size: float) -> int:
    """``size`` bytes rounded up to a limit people write: 256 MiB, 512 MiB, 1, 2, 4 GiB..."""
    step = 256 * MiB
    while step < size:
        step *= 2
    return step


def days(count: float) -> str:
    """``30 days``, ``1 day``, ``0.5 days``."""
    return f"{count:g} day" if count == 1 else f"{count:g} days"


def duration(seconds: float) -> str:
    """``45 min`` under an hour, else ``2.5 h``."""
    return f"{seconds / 60:.0f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def format_bytes(size: float) -> str:
    if size >= GiB:
        return f"{size / GiB:.1f} GiB".replace(".0 GiB", " GiB")
    return f"{size / MiB:.0f} MiB"


@dataclass(frozen=True)
class Recommendation:
    """A profile's limit far above what its instances used, and what would fit."""

    profile: str
    resource: str  # "memory" or "cpu"
    limit: float
    p95: float
    suggested: float
    instances: int
    days: float
    message: str


def recommend_memory(
    profile: str,
    limit: int | None,
    peaks: list[int],
    period: float,
    headroom: float = 1.25,
    below: float = 0.5,
) -> Recommendation | None:
    """A smaller memory limit for ``profile`` when the p95 of its peaks is far below it.

    Parameters
    ----------
    limit : int or None
        The profile's memory limit in bytes; None (no limit): nothing to recommend.
    peaks : list of int
        The peak memory of each of its instances over the period.
    headroom : float
        The suggested limit is at least the p95 times this, rounded up (:func:`round_memory`).
    below : float
        Recommend only when the p95 is under this fraction of the limit.
    """
    if not limit or not peaks:
        return None
    p95 = percentile(peaks, 95)
    if p95 >= below * limit:
        return None
    suggested = round_memory(p95 * headroom)
    if suggested >= limit:
        return None
    return Recommendation(
        profile,
        "memory",
        float(limit),
        float(p95),
        float(suggested),
        len(peaks),
        period,
        f"{profile}: peak memory p95 {format_bytes(p95)} of {format_bytes(limit)} over "
        f"{days(period)} ({_instances(len(peaks))}); {format_bytes(suggested)} would fit",
    )


def recommend_cpu(
    profile: str,
    limit: float | None,
    peaks: list[float],
    period: float,
    headroom: float = 1.25,
    below: float = 0.5,
) -> Recommendation | None:
    """A smaller CPU limit for ``profile`` when the p95 of its peak use (cores) is far below it.

    The suggestion is the p95 times ``headroom``, rounded up to half a core.
    """
    if not limit or not peaks:
        return None
    p95 = percentile(peaks, 95)
    if p95 >= below * limit:
        return None
    suggested = max(0.5, math.ceil(p95 * headroom * 2) / 2)
    if suggested >= limit:
        return None
    return Recommendation(
        profile,
        "cpu",
        float(limit),
        float(p95),
        float(suggested),
        len(peaks),
        period,
        f"{profile}: peak CPU p95 {p95:.2f} of {limit:g} cores over {days(period)} "
        f"({_instances(len(peaks))}); {suggested:g} cores would fit",
    )


def _instances(count: int) -> str:
    return "1 instance" if count == 1 else f"{count} instances"


def idle_seconds(now: float, started: float, last_busy_at: float | None) -> float:
    """How long an instance has been idle: since its last busy interval, or its start."""
    return max(0.0, now - (last_busy_at if last_busy_at is not None else started))
