"""Whether a built environment still holds what its lock says: installed vs locked.

``shipyard env check`` and the hub's start compare what the environment's own
interpreter reports (:func:`inspect_python`) with the lock (:func:`compare`).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import InvalidMarker, Marker
from packaging.utils import canonicalize_name

from hub_ext.environments.catalog import (
    INSTALLER_DISTS,
    SHIPYARD_DIST,
    Environment,
    EnvironmentProblem,
)

# Runs inside the environment's own interpreter: what is installed, and the
# values markers are evaluated against (packaging's default_environment, in stdlib).
_INSPECT = r"""
import importlib.metadata as m, json, os, platform, sys
impl = sys.implementation
ver = impl.version
iv = f"{ver.major}.{ver.minor}.{ver.micro}"
if ver.releaselevel != "final":
    iv += ver.releaselevel[0] + str(ver.serial)
print(json.dumps({
    "dists": sorted({(d.metadata["Name"], d.version) for d in m.distributions() if d.metadata["Name"]}),
    "markers": {
        "implementation_name": impl.name, "implementation_version": iv,
        "os_name": os.name, "platform_machine": platform.machine(),
        "platform_release": platform.release(), "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "platform_python_implementation": platform.python_implementation(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    },
}))
"""


@dataclass
class Drift:
    """How an installed environment differs from its lock."""

    missing: list[tuple[str, str]] = field(default_factory=list)  # (name, locked version)
    extra: list[tuple[str, str]] = field(default_factory=list)  # (name, installed version)
    changed: list[tuple[str, str, str]] = field(default_factory=list)  # (name, locked, installed)

    def __bool__(self) -> bool:
        return bool(self.missing or self.extra or self.changed)

    def lines(self) -> list[str]:
        out = [f"missing  {n}=={v} (in the lock, not installed)" for n, v in self.missing]
        out += [f"extra    {n}=={v} (installed, not in the lock)" for n, v in self.extra]
        out += [f"version  {n}: lock has {lk}, installed {got}" for n, lk, got in self.changed]
        return out


def inspect_python(python: Path | str) -> dict:
    """Installed distributions and marker values of an interpreter."""
    try:
        out = subprocess.run(  # noqa: S603 - fixed argv
            [str(python), "-I", "-c", _INSPECT],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        raise EnvironmentProblem(
            f"Cannot run {python}: {detail.strip()}. Rebuild it with `shipyard env build --force`."
        ) from None
    return json.loads(out.stdout)


def compare(env: Environment, python: Path | str) -> Drift:
    """Compare what ``python`` has installed with ``env``'s lock."""
    info = inspect_python(python)
    installed = {canonicalize_name(n): v for n, v in info["dists"]}
    locked = {}
    for pkg in env.packages():
        if pkg.marker:
            try:
                if not Marker(pkg.marker).evaluate(info["markers"]):
                    continue
            except InvalidMarker:
                pass
        locked[pkg.name] = pkg.version
    drift = Drift()
    for name, version in sorted(locked.items()):
        if name not in installed:
            drift.missing.append((name, version))
        elif installed[name] != version:
            drift.changed.append((name, version, installed[name]))
    for name, version in sorted(installed.items()):
        if name in locked or name == SHIPYARD_DIST or name in INSTALLER_DISTS:
            continue
        drift.extra.append((name, version))
    return drift
