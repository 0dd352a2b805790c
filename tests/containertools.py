"""Podman for the container tests: the base image, and what a test's containers leave behind.

The servers' tests (test_container_spawner.py) and the runs' (test_container_runs.py)
share the ``base`` environment's image, made once per machine by ``shipyard image
base`` and ``shipyard image build base`` (as tests/test_images.py does) and reused
while the lock holds; and each checks that its containers leave no container,
network, firewall rule or idmapped mount behind, by its own name prefix.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from traitlets.config import Config

from hub_ext.environments.catalog import get_environment
from hub_ext.environments.images import BASE_TAG, image_tag
from hub_ext.host import containers

from .hubtools import REPO


def hub_config(folder: Path, prefix: str, extra: str = "") -> Path:
    """A hub config file in ``folder``: the tests' own, with ``c.LocalHost.placement =
    "container"``, names from ``prefix``, the uid-1000 home through an idmapped mount
    whatever the machine's accounts (``auto`` may choose ``none`` here), and ``extra``."""
    config = folder / "jupyterhub_config.py"
    config.write_text(
        "c = get_config()  # noqa: F821\n"
        f"load_subconfig({str(REPO / 'tests' / 'hub_config.py')!r})  # noqa: F821\n"
        "c.LocalHost.placement = 'container'\n"
        f"c.ContainerPlacement.network_prefix = {prefix!r}\n"
        "c.ContainerPlacement.user_namespace = 'idmap'\n" + extra
    )
    return config


def usable() -> bool:
    """Whether containers can run here: root, podman and iptables (rootful, with a firewall)."""
    return os.geteuid() == 0 and bool(shutil.which("podman")) and bool(shutil.which("iptables"))


needs_podman = pytest.mark.skipif(
    not usable(), reason="needs root, podman and iptables: rootful containers and their firewall"
)


def podman(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)


def shipyard(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hub_ext.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def ensure_image(environment: str) -> str:
    """``environment``'s image (on the Debian base): made once per machine, kept while its
    lock holds."""
    if podman("image", "exists", BASE_TAG).returncode != 0:
        out = shipyard("image", "base")
        assert out.returncode == 0, out.stdout + out.stderr
    tag = image_tag(get_environment(environment))
    if podman("image", "exists", tag).returncode != 0:
        out = shipyard("image", "build", environment)
        assert out.returncode == 0, out.stdout + out.stderr
    return tag


def cgroup_kind() -> str:
    """How podman's cgroups are read here: ``cgroup2`` (unified) or ``cgroup1``."""
    return "cgroup2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "cgroup1"


def ensure_base_image() -> str:
    """The ``base`` environment's image."""
    return ensure_image("base")


def idmapped_mounts(prefix: str) -> list[str]:
    """Idmapped mounts still there of containers named ``<prefix>-*`` (``<idmap_dir>/<name>/*``)."""
    with open("/proc/self/mountinfo") as f:
        points = [Path(line.split()[4]) for line in f]
    return [str(p) for p in points if any(part.startswith(prefix + "-") for part in p.parts[-2:])]


def leftovers(prefix: str) -> dict[str, list[str]]:
    """Containers, networks, firewall rules and idmapped mounts named ``<prefix>-*``."""
    names = podman("ps", "-a", "--format", "{{.Names}}").stdout.split()
    networks = podman("network", "ls", "--format", "{{.Name}}").stdout.split()
    rules = [
        line
        for table in ("mangle", "nat")
        for line in subprocess.run(
            ["iptables", "-w", "-t", table, "-S", "PREROUTING"], capture_output=True, text=True
        ).stdout.splitlines()
        if f"shipyard:{prefix}-" in line
    ]
    return {
        "containers": [n for n in names if n.startswith(prefix + "-")],
        "networks": [n for n in networks if n.startswith(prefix + "-")],
        "rules": rules,
        "mounts": idmapped_mounts(prefix),
    }


def remove_leftovers(prefix: str) -> None:
    left = leftovers(prefix)
    if left["containers"]:
        podman("rm", "-f", "-t", "0", *left["containers"])
    if left["networks"]:
        podman("network", "rm", "-f", *left["networks"])
    for network in left["networks"]:
        containers.remove_firewall(network)
    for mount in left["mounts"]:
        containers.unmount_idmapped_home(mount)


def placement_config(prefix: str, place: Path, account_prefix: str, home_root: Path) -> Config:
    """The config of a part that makes containers outside a hub (an executor, a backend).

    Its names start with ``prefix`` (:func:`leftovers` finds them); its API socket and
    idmapped mounts are in ``place``; the uid-1000 home through an idmapped mount whatever
    the machine's accounts; no CDI spec (no GPU); accounts ``<account_prefix><user>``
    homed in ``home_root``; the usage ledger in ``place`` too.
    """
    return Config(
        {
            "ContainerPlacement": {
                "network_prefix": prefix,
                "user_namespace": "idmap",
                "podman_socket": str(place / "podman.sock"),
                "idmap_dir": str(place / "idmapped"),
                "cdi_spec_dirs": [str(place / "cdi")],
            },
            "LocalHost": {
                "system_user_prefix": account_prefix,
                "home_dir_template": str(home_root / "{account}"),
                "gpu_devices": [],
                "usage_dir": str(place / "usage"),
            },
        }
    )
