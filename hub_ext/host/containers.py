"""ContainerPlacement: a user's code in a podman container on this machine, as secure as a pod.

``c.LocalHost.placement = "container"`` runs users' servers in containers from
their profile's environment image (``shipyard image build ENV``) instead of as
processes on the environment's virtual environment. This module holds what every
container of a user needs, whichever part starts it (the spawner now; the
scheduler's runs and the deployer's replicas later), as pure builders over one
:class:`ContainerSpec`, and the little I/O they need (podman's API service, the
users' networks and their firewall rules):

* **Image.** ``images.image_tag`` of the profile's environment; a missing image is
  refused with the command that builds it (:func:`image_for`).
* **Limits.** The profile's memory (no swap beyond it), CPU quota and shares, a
  pids limit, and the ``--ulimit`` values this kernel accepts
  (:func:`hub_ext.host.podman.limit_options`; podman's defaults are refused here).
* **Identity.** The process runs as the images' uid 1000 (gid 100), the Jupyter
  Docker Stacks' jovyan, with the account's home mounted at ``/home/jovyan``
  through an *idmapped mount* (``user_namespace = "idmap"``, the default where no
  login account of the host has uid 1000,
  :func:`mount_idmapped_home`): the kernel shows the account's files as 1000:100
  inside and writes 1000:100 as the account's uid and gid, so files a server
  writes are the user's, as with processes. The mount is made on the host (runc
  1.1 has no idmapped mounts of its own) under :attr:`ContainerPlacement.idmap_dir`
  and bound into the container; it is detached when the container goes. There is
  no user namespace: 1000 inside is uid 1000 on the host, as a pod's uid 1000 is
  the node's, so no login account of the host should have uid 1000 (docs/containers.md).
  ``"none"`` runs as the account's own uid instead; ``"map"`` (a user namespace,
  :func:`id_mappings`) is kept for hosts that can: on this one rootful podman 4.3
  fails every such container with "creating overlay mount ... permission denied"
  (its idmapped or chowned copies of the overlay layers), after ~30 s of copying
  the image.
* **Security**, matching the pods' ``SECURE_CONTEXT`` (:mod:`hub_ext.host.k8s`):
  never privileged, every capability dropped, no new privileges, podman's default
  seccomp profile, a read-only root filesystem with a writable home and a tmpfs
  ``/tmp``, and no runtime socket mounted.
* **Network**, the one-machine counterpart of the pods' NetworkPolicy: one bridge
  network per user (:func:`network_name`), so one user's containers never share
  a link with another's, and iptables rules for its subnet
  (:func:`firewall_rules`): from the containers, only the ports the server needs
  on the host (the hub's API, the proxy, the Shipyard services) are reached, at
  the network's gateway, which forwards them to the host's loopback where those
  listen (``route_localnet`` on the user's bridge); everything else from the
  subnet is dropped before routing (the ``mangle`` table, which netavark leaves
  alone, so its own ``FORWARD`` rules cannot let traffic past). The server is
  published on ``127.0.0.1`` only, where the proxy reaches it.

Podman's Docker-compatible API (``podman system service``) is what
:class:`~hub_ext.spawners.containers.ContainerProfileSpawner` (DockerSpawner) talks
to: the hub starts it as its child on :attr:`ContainerPlacement.podman_socket`
when nothing answers there (:class:`PodmanService`), or an administrator runs it
(a systemd ``podman.socket``) and points the setting at its socket.

Rejected alternatives: Docker's API for the create step (it cannot carry uid maps
or podman's rlimit names, and podman's compat layer silently ignores some
``HostConfig`` fields: the libpod ``create`` takes one typed spec, built here);
one shared network with per-container rules (containers on one bridge talk at
layer 2 wherever ``br_netfilter`` is off, so isolation would depend on a module).
"""

from __future__ import annotations

import asyncio
import ctypes
import ipaddress
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from errno import EINVAL, ENOENT
from pathlib import Path
from urllib.parse import urlparse, urlunparse

from traitlets import Bool, CaselessStrEnum, Integer, List, Unicode, default
from traitlets.config import LoggingConfigurable

from hub_ext.environments.catalog import EnvironmentProblem, get_environment
from hub_ext.environments.images import image_tag
from hub_ext.host import instance, slugs
from hub_ext.host.podman import limit_options, podman
from hub_ext.profiles.model import Profile

#: Where the user's home is mounted in the container (the Jupyter Docker Stacks' home).
CONTAINER_HOME = "/home/jovyan"
#: Labels every Shipyard container and network carries: who and what it is for.
USER_LABEL = "io.shipyard.user"
PROFILE_LABEL = "io.shipyard.profile"
INSTANCE_LABEL = "io.shipyard.instance"
#: The uid and gid the images run as (images/*/Dockerfile): jovyan, group users.
IMAGE_UID = 1000
IMAGE_GID = 100
#: A CPU quota's period (µs), as the cgroup default and the local placement use.
CPU_PERIOD = 100_000


class ImageMissing(Exception):
    """The profile's environment image is not built here: the message names the command."""


# ------------------------------------------------------------------ pure builders


def image_for(profile: Profile) -> str:
    """The image of ``profile``'s environment: ``localhost/shipyard-<env>:<lock digest>``.

    Raises
    ------
    ImageMissing
        When the profile names an environment that does not exist.
    """
    try:
        return image_tag(get_environment(profile.environment))
    except EnvironmentProblem as e:
        raise ImageMissing(str(e)) from None


def image_missing(profile: Profile, tag: str) -> ImageMissing:
    """The refusal of a spawn whose image ``tag`` is not built: it names the command."""
    return ImageMissing(
        f"The image of environment '{profile.environment}' ({tag}) is not built on this "
        f"machine: an admin builds it with `shipyard image build {profile.environment}`."
    )


def rlimits(options: Iterable[str] | None = None) -> list[dict]:
    """:func:`~hub_ext.host.podman.limit_options` as the libpod spec's ``r_limits``."""
    opts = list(limit_options() if options is None else options)
    found = []
    for flag, value in zip(opts[::2], opts[1::2], strict=True):
        assert flag == "--ulimit", opts
        name, _, limits = value.partition("=")
        soft, _, hard = limits.partition(":")
        found.append({"type": name, "soft": int(soft), "hard": int(hard or soft)})
    return found


def resource_limits(profile: Profile, pids: int) -> dict:
    """The profile's memory and CPU, and ``pids``, as the libpod spec's ``resource_limits``.

    Memory and swap are the same number, so a container cannot swap past its limit
    (as a process's cgroup, which sets no swap either). The CPU guarantee becomes
    shares relative to one core (1024), as the local placement's cgroups do.
    """
    limits: dict = {"pids": {"limit": pids}}
    memory: dict = {}
    if profile.mem_limit_bytes:
        memory = {"limit": profile.mem_limit_bytes, "swap": profile.mem_limit_bytes}
    if profile.mem_guarantee_bytes:
        memory["reservation"] = profile.mem_guarantee_bytes
    if memory:
        limits["memory"] = memory
    cpu: dict = {}
    if profile.cpu_limit_cores:
        cpu = {"quota": int(profile.cpu_limit_cores * CPU_PERIOD), "period": CPU_PERIOD}
    if profile.cpu_guarantee_cores:
        cpu["shares"] = max(2, int(profile.cpu_guarantee_cores * 1024))
    if cpu:
        limits["cpu"] = cpu
    return limits


def id_mappings(uid: int, gid: int, base: int, size: int = 65536) -> dict:
    """A user namespace where the images' uid 1000 (gid 100) is the account ``uid`` (``gid``).

    Every other id inside maps into ``[base, base + size)`` outside, a range that
    must be the user's own (``/etc/subuid``), so root inside is nobody outside.
    """

    def around(inside: int, outside: int) -> list[dict]:
        return [
            {"container_id": 0, "host_id": base, "size": inside},
            {"container_id": inside, "host_id": outside, "size": 1},
            {"container_id": inside + 1, "host_id": base + inside + 1, "size": size - inside - 1},
        ]

    return {"UIDMap": around(IMAGE_UID, uid), "GIDMap": around(IMAGE_GID, gid)}


@dataclass(frozen=True)
class ContainerSpec:
    """Everything one user's container is made from (servers now; runs and replicas later)."""

    name: str
    image: str
    command: list[str]
    env: Mapping[str, str]
    owner: str
    uid: int
    gid: int
    home: str
    profile: Profile
    network: str
    port: int | None = None  # published on 127.0.0.1 (a random host port) when set
    pids_limit: int = 1024
    tmp_size: str = "1g"
    user_namespace: str = "idmap"
    home_source: str = ""  # what is mounted at /home/jovyan when not ``home``: its idmapped mount
    subid_base: int = 0
    stop_timeout: int = 10
    labels: Mapping[str, str] = field(default_factory=dict)
    #: further host folders, (source, destination): a run's work and output folders,
    #: a replica's model; idmapped sources where the home is
    binds: tuple[tuple[str, str], ...] = ()
    #: keep stdin open for an attached client (a warm run's hand-over)
    stdin: bool = False
    work_dir: str = CONTAINER_HOME
    #: CDI device names the container gets (``nvidia.com/gpu=0``): its GPUs
    devices: tuple[str, ...] = ()


def create_spec(spec: ContainerSpec, ulimits: list[dict] | None = None) -> dict:
    """libpod's ``POST /libpod/containers/create`` body for ``spec``: pure, no podman needed.

    The security fields mirror :data:`hub_ext.host.k8s.SECURE_CONTEXT`;
    ``seccomp_policy`` "default" is podman's default profile (no ``unconfined``).
    """
    as_image_user = spec.user_namespace in ("map", "idmap")
    if spec.user_namespace == "idmap" and not spec.home_source:
        # the plain home would be the account's, unwritable to uid 1000
        raise ValueError(f"{spec.name}: an idmap container needs its home's idmapped mount")
    body: dict = {
        "name": spec.name,
        "image": spec.image,
        "command": list(spec.command),
        "env": dict(spec.env),
        "work_dir": spec.work_dir,
        "user": f"{IMAGE_UID}:{IMAGE_GID}" if as_image_user else f"{spec.uid}:{spec.gid}",
        "labels": {
            **spec.labels,
            USER_LABEL: spec.owner,
            PROFILE_LABEL: spec.profile.slug,
        },
        "stop_timeout": spec.stop_timeout,
        # security: as the pods' SECURE_CONTEXT
        "privileged": False,
        "cap_drop": ["ALL"],
        "no_new_privileges": True,
        "seccomp_policy": "default",
        "read_only_filesystem": True,
        # podman's own writable /run, /dev/shm, /etc/hosts... stay private tmpfs; no
        # extra /var/tmp or /run/.containerenv writes are needed by Jupyter
        "read_write_tmpfs": False,
        "mounts": [
            {
                "destination": CONTAINER_HOME,
                "type": "bind",
                "source": spec.home_source or spec.home,
                "options": ["rbind", "rw", "nosuid", "nodev"],
            },
            {
                "destination": "/tmp",  # noqa: S108 - the container's own, a private tmpfs
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["rw", "nosuid", "nodev", "mode=1777", f"size={spec.tmp_size}"],
            },
            *(
                {
                    "destination": destination,
                    "type": "bind",
                    "source": source,
                    "options": ["rbind", "rw", "nosuid", "nodev"],
                }
                for source, destination in spec.binds
            ),
        ],
        "resource_limits": resource_limits(spec.profile, spec.pids_limit),
        "r_limits": rlimits() if ulimits is None else ulimits,
        "netns": {"nsmode": "bridge"},
        "Networks": {spec.network: {}},
    }
    if spec.devices:
        # the CDI spec's edits make the devices, libraries and variables of exactly these
        # GPUs; the "no GPU" variables every container gets would hide them again
        body["devices"] = [{"path": device} for device in spec.devices]
        for name in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
            body["env"].pop(name, None)
    if spec.stdin:
        body["stdin"] = True
    if spec.user_namespace == "map":
        body["idmappings"] = id_mappings(spec.uid, spec.gid, spec.subid_base)
    if spec.port is not None:
        body["portmappings"] = [
            {"host_ip": "127.0.0.1", "container_port": spec.port, "host_port": 0, "protocol": "tcp"}
        ]
    return body


#: The CDI kind of NVIDIA's GPUs, as ``nvidia-ctk cdi generate`` declares them.
CDI_GPU_KIND = "nvidia.com/gpu"
#: Where CDI specs are read from (the CDI specification's default folders).
CDI_SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")


def cdi_devices(documents: Iterable[object], kind: str = CDI_GPU_KIND) -> list[str]:
    """The fully qualified device names (``nvidia.com/gpu=0``) the CDI ``documents`` declare.

    Pure: ``documents`` are parsed CDI specs. The ``all`` device, which stands for
    every GPU at once, is left out: a container gets the GPUs it is given, one by one.
    Names are ordered as the spec lists them.
    """
    found: list[str] = []
    for document in documents:
        if not isinstance(document, dict) or document.get("kind") != kind:
            continue
        for device in document.get("devices") or ():
            name = device.get("name") if isinstance(device, dict) else None
            if isinstance(name, str) and name and name != "all":
                qualified = f"{kind}={name}"
                if qualified not in found:
                    found.append(qualified)
    return found


def read_cdi_specs(folders: Iterable[str]) -> list[object]:
    """The CDI specs (``*.yaml``, ``*.yml``, ``*.json``) in ``folders``; unreadable ones skipped."""
    import yaml

    documents: list[object] = []
    for folder in folders:
        path = Path(folder)
        if not path.is_dir():
            continue
        for file in sorted(path.iterdir()):
            if file.suffix not in (".yaml", ".yml", ".json"):
                continue
            try:
                documents.append(yaml.safe_load(file.read_text()))
            except (OSError, yaml.YAMLError):
                continue
    return documents


def gpu_refusal(count: int, available: int, folders: Iterable[str]) -> str:
    """Why ``count`` GPUs cannot be given to a container here, and what an admin does."""
    where = " or ".join(folders)
    if not available:
        return (
            f"This profile asks for {count} GPU(s); containers get GPUs through CDI, and no "
            f"CDI spec of {CDI_GPU_KIND} is in {where}: an admin installs the NVIDIA container "
            "toolkit and runs `nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml` "
            "(docs/containers.md)."
        )
    return f"This profile asks for {count} GPU(s) and the CDI specs in {where} declare {available}."


def network_name(prefix: str, owner: str) -> str:
    """The bridge network of ``owner``'s containers: ``<prefix>-<user slug>``."""
    return f"{prefix}-{slugs.user_slug(owner)}"


def reach_from_container(url: str, gateway: str) -> str:
    """``url`` as a container reaches it: a host-local address becomes the network's gateway.

    The hub, the proxy and the services listen on the host's loopback (or on every
    address, ``0.0.0.0``); in a container both name the container itself, so it
    reaches them at its gateway, which the firewall forwards to the host's loopback
    (:func:`firewall_rules`). Other hosts are left alone.
    """
    parts = urlparse(url)
    if not _is_host_local(parts.hostname or ""):
        return url
    netloc = gateway + (f":{parts.port}" if parts.port else "")
    return urlunparse(parts._replace(netloc=netloc))


def _is_host_local(host: str) -> bool:
    """``localhost``, a loopback address, or the unspecified address (a bind to every one)."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def reach_environment(env: Mapping[str, str], gateway: str, keep: Iterable[str] = ()) -> dict:
    """``env`` with every ``http(s)://`` value as a container reaches it (:func:`reach_from_container`).

    ``keep`` names variables left as they are: ``JUPYTERHUB_SERVICE_URL`` is where a
    server itself listens inside its container.
    """
    kept = set(keep)
    return {
        key: reach_from_container(value, gateway)
        if key not in kept and value.startswith(("http://", "https://"))
        else value
        for key, value in env.items()
    }


def container_environment(
    account: str, profile: Profile, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A run's or a replica's whole environment in its container, built from nothing.

    The counterpart of :func:`hub_ext.host.localproc.process_environment`: the same
    variables, without what the image sets itself (``PATH``, the environment's
    ``VIRTUAL_ENV`` and ``SHIPYARD_ENV*``), with the container's home, and no GPU.
    """
    from hub_ext.host import telemetry
    from hub_ext.host.localproc import PASSED_THROUGH

    env = {k: os.environ[k] for k in PASSED_THROUGH if k in os.environ}
    env.update(
        {
            "HOME": CONTAINER_HOME,
            "USER": account,
            "LOGNAME": account,
            "SHELL": "/bin/bash",
            "PYTHONUNBUFFERED": "1",
            **telemetry.environment(),
            "SHIPYARD_PROFILE": profile.slug,
            **(extra or {}),
            "CUDA_VISIBLE_DEVICES": "",
            "NVIDIA_VISIBLE_DEVICES": "void",
        }
    )
    return env


def loopback_ports(urls: Iterable[str]) -> list[int]:
    """The ports of the host-local URLs among ``urls``: what a container may reach."""
    ports = set()
    for url in urls:
        parts = urlparse(url)
        if _is_host_local(parts.hostname or ""):
            ports.add(parts.port or (443 if parts.scheme == "https" else 80))
    return sorted(ports)


def firewall_rules(
    network: str, subnet: str, gateway: str, ports: Iterable[int]
) -> list[list[str]]:
    """iptables commands (argv after ``iptables``) that confine ``network``'s containers.

    Each rule carries the comment ``shipyard:<network>``, by which
    :func:`remove_firewall` finds it. In order of evaluation:

    * ``mangle PREROUTING``: from the subnet, accept new connections to the gateway on
      ``ports`` and packets of established connections (the proxy's to the server);
      drop everything else before it is routed (the internet, other users'
      networks, the host's other ports);
    * ``nat PREROUTING``: the gateway's ``ports`` go to the host's loopback, where
      the hub, the proxy and the services listen.

    They are inserted at the top (``-I``), so they come before netavark's.
    """
    tag = ["-m", "comment", "--comment", f"shipyard:{network}"]
    rules: list[list[str]] = [
        ["-t", "mangle", "-I", "PREROUTING", "1", "-s", subnet, *tag, "-j", "DROP"],
        [
            "-t",
            "mangle",
            "-I",
            "PREROUTING",
            "1",
            "-s",
            subnet,
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            *tag,
            "-j",
            "ACCEPT",
        ],
    ]
    for port in sorted(set(ports)):
        match = ["-s", subnet, "-d", gateway, "-p", "tcp", "--dport", str(port), *tag]
        rules.append(["-t", "mangle", "-I", "PREROUTING", "1", *match, "-j", "ACCEPT"])
        rules.append(
            ["-t", "nat", "-I", "PREROUTING", "1", *match]
            + ["-j", "DNAT", "--to-destination", f"127.0.0.1:{port}"]
        )
    return rules


# ------------------------------------------------------------------ the I/O


def rule_of(line: str, network: str) -> bool:
    """Whether the ``iptables -S`` line ``line`` is one of ``network``'s rules.

    Its comment must be ``shipyard:<network>`` exactly: one user's network name can
    begin another's (``shipyard-rita`` and ``shipyard-rita2``), and a substring match
    would let making or removing the first one's rules delete the second one's, which
    leaves that user's containers unconfined and cut off from the hub.
    """
    words = line.split()
    try:
        comment = words[words.index("--comment") + 1]
    except (ValueError, IndexError):
        return False
    return comment.strip('"') == f"shipyard:{network}"


def _iptables() -> str:
    found = shutil.which("iptables")
    if not found:
        raise RuntimeError(
            "iptables is not installed: `apt-get install iptables` (docs/containers.md)."
        )
    return found


def apply_firewall(network: str, subnet: str, gateway: str, ports: Iterable[int]) -> None:
    """Replace ``network``'s rules with :func:`firewall_rules`."""
    remove_firewall(network)
    for rule in firewall_rules(network, subnet, gateway, ports):
        subprocess.run([_iptables(), "-w", *rule], check=True, capture_output=True, text=True)


def route_localnet(bridge: str) -> None:
    """Let ``bridge`` carry the gateway's DNAT to 127.0.0.1.

    On the user's bridge alone, never ``all``: elsewhere a packet to 127.0.0.1 from
    outside stays a martian. The bridge exists once the network's first container
    has started (netavark makes it then), so this follows each start.
    """
    Path(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet").write_text("1\n")


def firewall_present(network: str) -> bool:
    """Whether ``network``'s rules are in place (a rebooted host or a flush loses them)."""
    out = subprocess.run(
        [_iptables(), "-w", "-t", "mangle", "-S", "PREROUTING"], capture_output=True, text=True
    )
    return any(rule_of(line, network) for line in out.stdout.splitlines())


def firewall_ports(network: str) -> set[int]:
    """The ports ``network``'s rules let its containers reach (none when it has no rules)."""
    out = subprocess.run(
        [_iptables(), "-w", "-t", "nat", "-S", "PREROUTING"], capture_output=True, text=True
    )
    ports = set()
    for line in out.stdout.splitlines():
        words = line.split()
        if rule_of(line, network) and "--dport" in words:
            ports.add(int(words[words.index("--dport") + 1]))
    return ports


def remove_firewall(network: str) -> None:
    """Delete every rule :func:`firewall_rules` made for ``network`` (in both tables)."""
    for table in ("mangle", "nat"):
        listed = subprocess.run(
            [_iptables(), "-w", "-t", table, "-S", "PREROUTING"], capture_output=True, text=True
        )
        for line in listed.stdout.splitlines():
            words = line.split()
            if words[:1] != ["-A"] or not rule_of(line, network):
                continue
            # -S quotes nothing that the comment needs: "shipyard:<name>" has no spaces
            argv = ["-D", *[w.strip('"') for w in words[1:]]]
            subprocess.run([_iptables(), "-w", "-t", table, *argv], capture_output=True)


# idmapped mounts (linux/mount.h; the syscall numbers are x86_64's and arm64's alike)
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
_OPEN_TREE_CLONE = 1
_OPEN_TREE_CLOEXEC = os.O_CLOEXEC
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_AT_RECURSIVE = 0x8000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOUNT_ATTR_IDMAP = 0x100000
_MNT_DETACH = 2


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _syscall(number: int, *args) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.syscall(number, *args)
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result


def idmap_lines(uid: int, gid: int) -> tuple[str, str]:
    """The ``uid_map`` and ``gid_map`` of the namespace an idmapped home is mounted with.

    An idmapped mount reads each on-disk id as an id *inside* its namespace and
    shows the id that is outside: the account's ``uid`` on disk is the images'
    1000 in the container (``gid``: 100), and 1000 written there is ``uid`` on
    disk. Every other id shows as nobody and cannot be written.
    """
    return f"{uid} {IMAGE_UID} 1\n", f"{gid} {IMAGE_GID} 1\n"


def mount_idmapped_home(home: str, target: str, uid: int, gid: int) -> None:
    """Mount ``home`` at ``target`` (made here) so that the account's ids are 1000:100 there.

    The namespace that carries the mapping is a throw-away child's (``unshare
    --user``), which waits on its stdin until the mapping is set and the mount
    holds a reference to it; the mount is a recursive clone of ``home``
    (``open_tree``), given the mapping (``mount_setattr``) and attached at
    ``target`` (``move_mount``). Linux 5.12+, and a filesystem that supports
    idmapped mounts (ext4, xfs, btrfs, tmpfs since 6.3; not NFS).
    """
    Path(target).mkdir(mode=0o700, parents=True, exist_ok=True)
    child = subprocess.Popen(
        ["unshare", "--user", "--", "sh", "-c", "echo ready; read _"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    tree = -1
    try:
        assert child.stdout is not None and child.stdin is not None
        if child.stdout.readline().strip() != "ready":
            raise OSError(f"unshare --user exited with {child.wait()}")
        uid_map, gid_map = idmap_lines(uid, gid)
        Path(f"/proc/{child.pid}/uid_map").write_text(uid_map)
        Path(f"/proc/{child.pid}/setgroups").write_text("deny\n")
        Path(f"/proc/{child.pid}/gid_map").write_text(gid_map)
        userns = os.open(f"/proc/{child.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        try:
            tree = _syscall(
                _SYS_OPEN_TREE,
                _AT_FDCWD,
                home.encode(),
                _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC | _AT_RECURSIVE,
            )
            attr = _MountAttr(_MOUNT_ATTR_IDMAP, 0, 0, userns)
            _syscall(
                _SYS_MOUNT_SETATTR,
                tree,
                b"",
                _AT_EMPTY_PATH | _AT_RECURSIVE,
                ctypes.byref(attr),
                ctypes.sizeof(attr),
            )
        finally:
            os.close(userns)
        _syscall(_SYS_MOVE_MOUNT, tree, b"", _AT_FDCWD, target.encode(), _MOVE_MOUNT_F_EMPTY_PATH)
    finally:
        if tree >= 0:
            os.close(tree)
        if child.stdin is not None:
            child.stdin.close()
        child.wait()


def host_account_of_image_uid() -> str | None:
    """The host's login account with the images' uid 1000, if any: it shares the servers' uid.

    Without a user namespace a server's processes are uid 1000 on the host, and an
    account of that uid could signal them or read their ``/proc`` (tokens in the
    environment); the administrator should give that account another uid.
    """
    try:
        return pwd.getpwuid(IMAGE_UID).pw_name
    except KeyError:
        return None


def unmount_idmapped_home(target: str) -> None:
    """Detach the idmapped mount at ``target`` (if any) and remove its folder.

    Lazily (``MNT_DETACH``): a container still being torn down keeps its own
    reference; the host's view goes at once. Nothing there is not an error.
    """
    # not os.path.ismount: a bind mount of the same filesystem has its parent's st_dev
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(target.encode(), _MNT_DETACH) != 0:
        errno = ctypes.get_errno()
        if errno not in (EINVAL, ENOENT):  # not a mount point; not there at all
            raise OSError(errno, f"umount {target}: {os.strerror(errno)}")
    try:
        os.rmdir(target)
    except FileNotFoundError:
        pass


class PodmanService:
    """``podman system service`` on a unix socket, as a child of the hub.

    Started only when nothing answers on the socket (an administrator's systemd
    ``podman.socket`` or a previous hub's service is used as it is), in its own
    session so that a hub crash leaves it serving the containers' state to the next
    hub; the hub that started it stops it at a clean exit. ``--time=0``: it never
    exits by itself for being idle.
    """

    def __init__(self, socket_path: str, log):
        self.socket_path = socket_path
        self.log = log
        self.proc: subprocess.Popen | None = None

    def answers(self) -> bool:
        """Whether an API service answers ``_ping`` on the socket."""
        import socket as sock

        if not os.path.exists(self.socket_path):
            return False
        try:
            with sock.socket(sock.AF_UNIX, sock.SOCK_STREAM) as s:
                s.settimeout(2)
                s.connect(self.socket_path)
                s.sendall(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
                return b" 200 " in s.recv(64)
        except OSError:
            return False

    async def ensure(self, timeout: float = 30) -> None:
        """Start the service unless one answers; return once it answers."""
        if await asyncio.to_thread(self.answers):
            self.log.info("Using the podman API service already on %s", self.socket_path)
            return
        Path(self.socket_path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with_stale = Path(self.socket_path)
        if with_stale.exists():
            with_stale.unlink()
        argv = [*podman(), "system", "service", "--time=0", f"unix://{self.socket_path}"]
        self.log.info("Starting the podman API service: %s", " ".join(argv))
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(self.answers):
            if self.proc.poll() is not None:
                raise RuntimeError(f"podman system service exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"podman system service did not answer on {self.socket_path}")
            await asyncio.sleep(0.1)

    def stop(self, timeout: float = 10) -> None:
        """Stop the service this object started (not one it found running)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ------------------------------------------------------------------ the settings


def _runtime_path(name: str) -> str:
    """``name`` in ``$SHIPYARD_DATA_DIR``, else in ``/run/<instance>``."""
    data = os.environ.get("SHIPYARD_DATA_DIR")
    return str(Path(data) / name) if data else f"/run/{instance.name()}/{name}"


class ContainerPlacement(LoggingConfigurable):
    """How users' containers are made on this machine (``c.LocalHost.placement = "container"``).

    Configured as ``c.ContainerPlacement``; the spawner holds one (and, later, the
    scheduler and the deployer, to which the hub passes the section).
    """

    podman_socket = Unicode(
        help="""
        Unix socket of podman's API service (``podman system service``).

        The hub starts the service there, as its child, when nothing answers on it
        and ``start_service`` is true; an administrator who runs podman's systemd
        socket unit instead points this at ``/run/podman/podman.sock``.

        Defaults to ``podman.sock`` in ``$SHIPYARD_DATA_DIR``, else in
        ``/run/<instance>``.

        Example::

            c.ContainerPlacement.podman_socket = "/run/podman/podman.sock"

        .. versionadded:: 0.17
        """,
    ).tag(config=True)

    @default("podman_socket")
    def _default_podman_socket(self):
        return _runtime_path("podman.sock")

    start_service = Bool(
        True,
        help="""
        Whether the hub starts ``podman system service`` when nothing answers on the socket.

        False leaves it to the administrator (a systemd socket unit); the hub then
        refuses to start until the socket answers.

        Example::

            c.ContainerPlacement.start_service = False

        .. versionadded:: 0.17
        """,
    ).tag(config=True)

    network_prefix = Unicode(
        help="""
        Prefix of each user's bridge network (``<prefix>-<user slug>``).

        One network per user keeps users' containers off each other's link; the
        network is made with the user's first container and removed, with its
        firewall rules, when their last one stops. Defaults to the instance name
        (``shipyard``), so two Shipyards on one machine never share networks.

        Example::

            c.ContainerPlacement.network_prefix = "sy"

        .. versionadded:: 0.17
        """,
    ).tag(config=True)

    @default("network_prefix")
    def _default_network_prefix(self):
        return instance.name()

    firewall = Bool(
        True,
        help="""
        Confine the containers' network with iptables (module :mod:`hub_ext.host.containers`).

        From a user's containers only the hub's API, the proxy and the Shipyard
        services are reachable (at the network's gateway); nothing else on the host,
        on other users' networks or outside. False leaves podman's bridge as it is
        (full egress): for a host whose own firewall does this.

        Example::

            c.ContainerPlacement.firewall = False

        .. versionadded:: 0.17
        """,
    ).tag(config=True)

    pids_limit = Integer(
        1024,
        help="""
        Most processes (and threads) one container may have.

        The same for every profile: it guards the host against a fork bomb, not a
        resource to share out.

        Example::

            c.ContainerPlacement.pids_limit = 4096

        .. versionadded:: 0.17
        """,
    ).tag(config=True)

    tmp_size = Unicode(
        "1g",
        help="""
        Size of each container's ``/tmp`` (a tmpfs; the root filesystem is read-only).

        It counts against the container's memory limit as it fills.

        Example::

            c.ContainerPlacement.tmp_size = "256m"

        .. versionadded:: 0.17
        """,
    ).tag(config=True)

    user_namespace = CaselessStrEnum(
        ["auto", "idmap", "none", "map"],
        default_value="auto",
        help="""
        How the user's account is the container's user.

        ``auto`` (the default): ``idmap`` unless a login account of the host has
        uid 1000, then ``none`` (that account could otherwise signal every server
        and read its environment, tokens included); the hub logs which it chose.
        ``idmap``: the container's processes run as the images' uid
        1000 (gid 100), the Jupyter Docker Stacks' convention, with no user
        namespace; the account's home is bound at ``/home/jovyan`` through an
        idmapped mount (made in ``idmap_dir``) that shows the account's files as
        1000:100 and writes 1000:100 as the account. uid 1000 inside is uid 1000
        on the host: no login account of the host should have it. Needs Linux
        5.12+ and a home filesystem with idmapped mounts (ext4, xfs, btrfs; not NFS).
        ``none``: the processes run as the account's own uid and gid.
        ``map``: a user namespace in which the images' uid 1000 (gid 100) is the
        account, and every other id is in the range from ``subid_base``; **not
        usable with rootful podman 4.3 on an overlay store** (every container
        fails with "creating overlay mount ... permission denied",
        docs/containers.md).

        Example::

            c.ContainerPlacement.user_namespace = "none"

        .. versionadded:: 0.17
        """,
    ).tag(config=True)

    def user_mode(self) -> str:
        """``user_namespace`` with ``auto`` decided for this host: idmap, none or map."""
        if self.user_namespace != "auto":
            return self.user_namespace
        return "none" if host_account_of_image_uid() else "idmap"

    idmap_dir = Unicode(
        help="""
        Folder (root's only) of the idmapped mounts of the homes, one per container.

        Only with ``user_namespace = "idmap"``. Each container's home is mounted at
        ``<idmap_dir>/<container name>`` before it is created and detached when it
        is removed. Defaults to ``idmapped`` in ``$SHIPYARD_DATA_DIR``, else in
        ``/run/<instance>``.

        Example::

            c.ContainerPlacement.idmap_dir = "/run/shipyard/homes"

        .. versionadded:: 0.17
        """,
    ).tag(config=True)

    @default("idmap_dir")
    def _default_idmap_dir(self):
        return _runtime_path("idmapped")

    cdi_spec_dirs = List(
        Unicode(),
        default_value=list(CDI_SPEC_DIRS),
        help="""
        Folders of the CDI specs that declare this machine's GPUs for containers.

        Containers get GPUs through the Container Device Interface: the NVIDIA
        container toolkit writes the spec (``nvidia-ctk cdi generate
        --output=/etc/cdi/nvidia.yaml``) and podman adds the devices, libraries and
        variables it names. Each ``nvidia.com/gpu`` device the specs declare (not
        ``all``) is one GPU a container can be given; with none, GPU profiles are
        shown disabled and a run or deployment of one is refused with this fix.

        Example::

            c.ContainerPlacement.cdi_spec_dirs = ["/etc/cdi"]

        .. versionadded:: 0.17
        """,
    ).tag(config=True)

    def gpu_devices(self) -> list[str]:
        """The GPUs containers may be given here: CDI device names, read now."""
        return cdi_devices(read_cdi_specs(self.cdi_spec_dirs))

    def mount_dir(self, container: str) -> str:
        """The folder of ``container``'s idmapped mounts on the host (one per bound folder)."""
        return str(Path(self.idmap_dir) / container)

    subid_base = Integer(
        200000,
        help="""
        First outside id of the range that a ``map`` user namespace's other ids use.

        Only with ``user_namespace = "map"``.

        Example::

            c.ContainerPlacement.subid_base = 300000

        .. versionadded:: 0.17
        """,
    ).tag(config=True)

    stop_timeout = Integer(
        10,
        help="""
        Seconds a container has to exit after SIGTERM before podman kills it.

        Example::

            c.ContainerPlacement.stop_timeout = 30

        .. versionadded:: 0.17
        """,
    ).tag(config=True)

    def network_of(self, owner: str) -> str:
        """``owner``'s network name."""
        return network_name(self.network_prefix, owner)

    def base_url(self) -> str:
        """The docker-py ``base_url`` of the API socket."""
        return f"unix://{self.podman_socket}"
