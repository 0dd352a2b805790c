"""ContainerHost: the podman calls every part that runs a user's container shares.

The container spawner (a server), the scheduler's container executor (a run) and
the deployer's container backend (a replica) each make containers of a user's
from :func:`~hub_ext.host.containers.create_spec`; around the create step they
need the same few things of the host, kept here so that a fix to one reaches all
three (as :mod:`hub_ext.host.launch` is for processes):

* **the image** of the profile's environment, refused with the command that
  builds it when podman does not have it (:meth:`ContainerHost.image`);
* **the user's network** (:meth:`ContainerHost.network`): one bridge per user,
  made with their first container whatever part makes it, confined by the
  firewall rules of :func:`~hub_ext.host.containers.firewall_rules` for the ports
  that each part's containers need (a union: the server's hub API and proxy, a
  run's tracking and deployer URLs), and removed with their last container
  (:meth:`ContainerHost.release_network`);
* **the folders bound into the container** (:meth:`ContainerHost.bind`): as
  they are when the container runs as the account's uid, or through an idmapped
  mount each (``user_namespace = "idmap"``) that shows the account's files as
  the images' uid 1000, all under one folder per container
  (:meth:`ContainerPlacement.mount_dir
  <hub_ext.host.containers.ContainerPlacement.mount_dir>`), detached together
  (:meth:`ContainerHost.release_binds`);
* **create, start, kill, remove, inspect, list** over podman's libpod API, with
  docker-py's client (the one DockerSpawner uses) on a small thread pool of its
  own, one client per thread;
* **usage** (:meth:`ContainerHost.count_usage`): the container's record in the
  usage ledger, opened once it runs and closed with its last counters, as a
  process's cgroup is (:mod:`hub_ext.host.usage`);
* **attach** (:meth:`ContainerHost.attach_argv`): a run's output and exit status,
  and a warm run's stdin, come through ``podman start --attach --interactive``
  as a child process. Its pipes are then an asyncio subprocess transport like
  a process's, so the executor's output parsing, deadline and warm hand-over are
  the ones processes use. Rejected alternative: the API's hijacked attach
  socket, whose multiplexed frames, half-close of stdin and exit status would
  be written here again for what podman's own client does.

Every container and network it makes carries the labels of
:mod:`hub_ext.host.containers` (user, profile, instance) and a ``io.shipyard.role``
(``server``, ``run``, ``replica``), by which a restarted service finds its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pwd
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub_ext.host.cgroups import CGROUP_ROOT, ContainerCgroup, Limits
from hub_ext.host.containers import (
    INSTANCE_LABEL,
    USER_LABEL,
    ContainerPlacement,
    ContainerSpec,
    PodmanService,
    apply_firewall,
    create_spec,
    firewall_ports,
    firewall_present,
    gpu_refusal,
    host_account_of_image_uid,
    image_for,
    image_missing,
    mount_idmapped_home,
    remove_firewall,
    route_localnet,
    unmount_idmapped_home,
)
from hub_ext.host.gpus import GpuAllocator, GpuUnavailable
from hub_ext.host.podman import podman
from hub_ext.host.usage import UsageLabel, UsageLedger
from hub_ext.profiles.model import Profile

#: The libpod API version asked for: podman 4.0's, the oldest Shipyard was written to.
LIBPOD_VERSION = "v4.0.0"
#: How often an inspection that podman fails while the container exits is asked (0.1 s apart).
INSPECT_TRIES = 5
#: Which part of Shipyard a container belongs to: ``server``, ``run`` or ``replica``.
ROLE_LABEL = "io.shipyard.role"
#: Seconds between two readings of a running container's usage counters
#: (:meth:`ContainerHost.count_usage`): at most this much of its end is not counted.
USAGE_INTERVAL = 1.0


class ContainerFailed(RuntimeError):
    """Podman refused a step (create, start, a network, a mount): the message says which."""


@dataclass(frozen=True)
class UserNetwork:
    """A user's bridge network as podman made it."""

    name: str
    subnet: str
    gateway: str


class ContainerHost:
    """Podman's API, the users' networks and the bound folders, for one part of Shipyard.

    Parameters
    ----------
    placement : ContainerPlacement
        The settings (``c.ContainerPlacement``).
    log : logging.Logger
    workers : int
        Threads for the API's blocking calls (docker-py is synchronous).
    """

    #: where the cgroup hierarchies are mounted, in which podman makes the containers' cgroups
    cgroup_root: Path = CGROUP_ROOT

    def __init__(self, placement: ContainerPlacement, log: logging.Logger, workers: int = 4):
        self.placement = placement
        self.log = log
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="podman-api")
        self._local = threading.local()
        self._service: PodmanService | None = None
        self._answering = False
        self._gpus: GpuAllocator | None = None

    # ------------------------------------------------------------ the API

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            import docker  # docker-py: loaded only where containers are used

            client = docker.APIClient(base_url=self.placement.base_url(), version="auto")
            self._local.client = client
        return client

    def _call_sync(
        self, method: str, path: str, *args: str, data: Any = None, params: dict | None = None
    ) -> Any:
        client = self._client()
        url = client._url(f"/{LIBPOD_VERSION}/libpod" + path, *args, versioned_api=False)
        if method == "POST":
            response = client._post_json(url, data=data, params=params)
        elif method == "DELETE":
            response = client._delete(url, params=params)
        else:
            response = client._get(url, params=params)
        client._raise_for_status(response)
        return response.json() if response.content else None

    async def call(
        self, method: str, path: str, *args: str, data: Any = None, params: dict | None = None
    ) -> Any:
        """One libpod call (``GET``, ``POST`` or ``DELETE``) on the API's threads; its JSON.

        Raises docker-py's ``NotFound`` for a 404 and ``APIError`` for other errors.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, lambda: self._call_sync(method, path, *args, data=data, params=params)
        )

    async def ready(self) -> None:
        """Make sure podman's API service answers: started here if nothing does.

        The hub starts it for its servers; a service (the scheduler, the deployer)
        started without one, or before it, starts it the same way
        (:class:`~hub_ext.host.containers.PodmanService`), unless
        ``start_service`` is off.

        Raises
        ------
        ContainerFailed
            Nothing answers and none may be started, or it did not start.
        """
        if self._answering:
            return
        service = PodmanService(self.placement.podman_socket, self.log)
        if self.placement.start_service:
            try:
                await service.ensure()
            except (OSError, RuntimeError) as e:
                raise ContainerFailed(f"podman's API service is not available: {e}") from None
            if service.proc is not None:
                self._service = service
        elif not await asyncio.to_thread(service.answers):
            raise ContainerFailed(
                f"Nothing answers on {self.placement.podman_socket} and "
                "c.ContainerPlacement.start_service is False: start podman's API service "
                "(docs/containers.md)."
            )
        self._answering = True

    @property
    def service(self) -> PodmanService | None:
        """The API service :meth:`ready` started (None: one answered already, or not ready yet)."""
        return self._service

    def close(self, stop_service: bool = False) -> None:
        """Stop the API's threads (the containers are not touched).

        The API service this host started keeps running for the others that use
        it (the hub, another service) unless ``stop_service``.
        """
        self._pool.shutdown(wait=False, cancel_futures=True)
        if stop_service and self._service is not None:
            self._service.stop()
            self._service = None

    # ------------------------------------------------------------ images

    async def image(self, profile: Profile) -> str:
        """The profile's environment image, once podman says it has it.

        Raises
        ------
        ImageMissing
            The environment is unknown, or its image is not built here: the message
            names ``shipyard image build ENV``.
        """
        from docker.errors import NotFound

        await self.ready()
        tag = image_for(profile)
        try:
            await self.call("GET", "/images/{0}/json", tag)
        except NotFound:
            raise image_missing(profile, tag) from None
        return tag

    # ------------------------------------------------------------ GPUs

    @property
    def gpus(self) -> GpuAllocator:
        """Which container holds which CDI GPU (``placement.gpu_devices()``), made on first use."""
        if self._gpus is None:
            self._gpus = GpuAllocator(self.placement.gpu_devices())
        return self._gpus

    def allocate_gpus(self, holder: str, count: int) -> list[str]:
        """``count`` CDI GPUs for ``holder`` (a container, a run): none for none.

        Raises
        ------
        ContainerFailed
            Not enough: the message says whether CDI declares none (and how an admin
            adds them) or all are in use.
        """
        if not count:
            return []
        available = len(self.gpus.devices)
        if available < count:
            raise ContainerFailed(gpu_refusal(count, available, self.placement.cdi_spec_dirs))
        try:
            return self.gpus.allocate(holder, count)
        except GpuUnavailable as e:
            raise ContainerFailed(str(e)) from None

    # ------------------------------------------------------------ networks

    async def network(self, owner: str, urls: Iterable[str]) -> UserNetwork:
        """``owner``'s bridge network, made if missing, confined to the ports of ``urls``.

        The firewall lets the user's containers reach the union of what every part
        asked for (a server's and a run's containers share the network), so rules
        are only ever widened to the ports the parts' own URLs name.
        """
        from docker.errors import APIError, NotFound

        from hub_ext.host.containers import loopback_ports

        name = self.placement.network_of(owner)
        try:
            found = await self.call("GET", "/networks/{0}/json", name)
        except NotFound:
            body = {
                "name": name,
                "driver": "bridge",
                "labels": {USER_LABEL: owner, INSTANCE_LABEL: self.placement.network_prefix},
            }
            try:
                found = await self.call("POST", "/networks/create", data=body)
            except APIError as e:
                if e.status_code != 409:  # made meanwhile by the user's other container
                    raise ContainerFailed(f"Could not create network {name}: {e}") from None
                found = await self.call("GET", "/networks/{0}/json", name)
            self.log.info("Created network %s for %s", name, owner)
        subnet = found["subnets"][0]
        network = UserNetwork(name, subnet["subnet"], subnet["gateway"])
        if self.placement.firewall:
            wanted = set(loopback_ports(urls))
            have = await asyncio.to_thread(firewall_ports, name)
            present = await asyncio.to_thread(firewall_present, name)
            if not present or not wanted <= have:
                await asyncio.to_thread(
                    apply_firewall, name, network.subnet, network.gateway, sorted(wanted | have)
                )
        return network

    async def route(self, network: UserNetwork, wait: float = 0) -> None:
        """Let the network's bridge forward the gateway's ports to loopback.

        The bridge exists once the network's first container has started; ``wait``
        is how long to wait for it (a container being started by ``podman start``).
        """
        if not self.placement.firewall:
            return
        found = await self.call("GET", "/networks/{0}/json", network.name)
        bridge = found.get("network_interface", "")
        if not bridge:
            return
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            try:
                await asyncio.to_thread(route_localnet, bridge)
                return
            except FileNotFoundError:
                if asyncio.get_running_loop().time() >= deadline:
                    raise
                await asyncio.sleep(0.05)

    async def release_network(self, owner: str) -> bool:
        """Remove ``owner``'s network and its rules if no container is left on it.

        Returns whether it is gone. Failures are logged, never raised: a network
        left behind is removed with the user's next last container.
        """
        from docker.errors import APIError, NotFound

        name = self.placement.network_of(owner)
        try:
            users = await self.call(
                "GET",
                "/containers/json",
                params={"all": "true", "filters": json.dumps({"network": [name]})},
            )
        except APIError as e:
            self.log.warning("Could not list the containers on %s: %s", name, e)
            return False
        if users:
            return False
        try:
            await self.call("DELETE", "/networks/{0}", name)
            self.log.info("Removed network %s", name)
        except NotFound:
            pass
        except APIError as e:
            self.log.warning("Could not remove network %s: %s", name, e)
            return False
        if self.placement.firewall:
            await asyncio.to_thread(remove_firewall, name)
        return True

    # ------------------------------------------------------------ the user

    def user_mode(self, who: str) -> str:
        """The placement's user mode for this host, logged (and warned about) for ``who``."""
        mode = self.placement.user_mode()
        if mode == "idmap":
            sharer = host_account_of_image_uid()
            if sharer:
                self.log.warning(
                    "Host account %s has uid 1000, the uid of %s's containers: it can signal"
                    " them and read their environment; give it another uid",
                    sharer,
                    who,
                )
        return mode

    async def bind(self, container: str, name: str, source: str, account: pwd.struct_passwd) -> str:
        """What to bind into ``container`` for the account's folder ``source``.

        ``source`` itself unless the placement is ``idmap``; then an idmapped mount of
        it at ``<mount_dir(container)>/<name>`` (one left there is replaced), which
        shows the account's files as the images' uid 1000.

        Raises
        ------
        ContainerFailed
            The mount could not be made (a filesystem without idmapped mounts): the
            message says what an admin can set instead.
        """
        if self.placement.user_mode() != "idmap":
            return source
        target = str(Path(self.placement.mount_dir(container)) / name)
        try:
            await asyncio.to_thread(unmount_idmapped_home, target)
            await asyncio.to_thread(
                mount_idmapped_home, source, target, account.pw_uid, account.pw_gid
            )
        except OSError as e:
            raise ContainerFailed(
                f"Could not make the idmapped mount of {source} ({e}): its filesystem may not"
                ' support them; an admin can set c.ContainerPlacement.user_namespace = "none"'
                " (docs/containers.md)."
            ) from None
        return target

    async def release_binds(self, container: str) -> None:
        """Detach every idmapped mount of ``container`` and remove their folder; logs failures."""

        try:
            await asyncio.to_thread(self.unmount_sync, container)
        except OSError as e:
            self.log.warning("Could not detach the mounts of %s: %s", container, e)

    # ------------------------------------------------------------ containers

    def labels(self, role: str, **more: str) -> dict[str, str]:
        """The labels of a container of ``role`` made by this host."""
        return {INSTANCE_LABEL: self.placement.network_prefix, ROLE_LABEL: role, **more}

    def spec(self, *, account: pwd.struct_passwd, owner: str, **fields: Any) -> ContainerSpec:
        """A :class:`ContainerSpec` of ``owner``'s, as ``account``, with this placement's settings.

        The placement's pids limit, ``/tmp`` size, user mode (logged for ``owner``),
        subordinate ids and stop timeout; ``fields`` give the rest (name, image,
        command, env, profile, network, binds...) and may override those.
        """
        placement = self.placement
        values: dict[str, Any] = {
            "owner": owner,
            "uid": account.pw_uid,
            "gid": account.pw_gid,
            "home": account.pw_dir,
            "pids_limit": placement.pids_limit,
            "tmp_size": placement.tmp_size,
            "user_namespace": self.user_mode(owner),
            "subid_base": placement.subid_base,
            "stop_timeout": placement.stop_timeout,
        }
        values.update(fields)
        return ContainerSpec(**values)

    async def create(self, spec: ContainerSpec) -> str:
        """Create the container of ``spec`` (:func:`create_spec`); its id."""
        from docker.errors import APIError

        body = create_spec(spec)
        self.log.debug("Creating container %s: %s", spec.name, json.dumps(body, default=str))
        try:
            made = await self.call("POST", "/containers/create", data=body)
        except APIError as e:
            raise ContainerFailed(
                f"Could not create container {spec.name}: {e.explanation or e}"
            ) from None
        return made["Id"]

    async def start(self, container: str, network: UserNetwork | None = None) -> None:
        """Start a created container (detached), then route its network's bridge."""
        from docker.errors import APIError

        try:
            await self.call("POST", "/containers/{0}/start", container)
        except APIError as e:
            raise ContainerFailed(
                f"Could not start container {container}: {e.explanation or e}"
            ) from None
        if network is not None:
            await self.route(network)

    def attach_argv(self, container: str, stdin: bool = False) -> list[str]:
        """``podman start --attach`` of a created container: its output, stdin and exit status."""
        return [*podman(), "start", "--attach", *(["--interactive"] if stdin else []), container]

    async def inspect(self, container: str) -> dict | None:
        """The container's inspection, or None when it is gone.

        A container whose first process is exiting can make podman fail the inspection
        for a moment (500, "read /proc/<pid>/cgroup: no such process"): that is asked
        again, up to half a second, before it is raised.
        """
        from docker.errors import APIError, NotFound

        for attempt in range(INSPECT_TRIES):
            try:
                return await self.call("GET", "/containers/{0}/json", container)
            except NotFound:
                return None
            except APIError as e:
                if e.status_code != 500 or attempt == INSPECT_TRIES - 1:
                    raise
                await asyncio.sleep(0.1)
        return None  # not reached: the last try returns or raises

    async def kill(self, container: str, signal: str = "KILL") -> None:
        """Send ``signal`` to the container's processes; nothing when it is not running."""
        from docker.errors import APIError, NotFound

        try:
            await self.call("POST", "/containers/{0}/kill", container, params={"signal": signal})
        except NotFound:
            pass
        except APIError as e:
            # not running: 409 from the compat API, 500 "container state improper" from libpod
            if e.status_code != 409 and "state improper" not in str(e.explanation):
                raise

    async def remove(self, container: str, timeout: int = 0) -> None:
        """Remove the container, stopping it first (``timeout`` s after SIGTERM), and its volumes."""
        from docker.errors import NotFound

        try:
            await self.call(
                "DELETE",
                "/containers/{0}",
                container,
                params={"force": "true", "v": "true", "timeout": str(timeout)},
            )
        except NotFound:
            pass

    def follow(self, container: str, protocol: Any, since: int | None = None) -> LogFollower:
        """Follow ``container``'s output (from ``since``, seconds since the epoch) into ``protocol``."""
        return LogFollower(self, container, protocol, since)

    async def discard(self, container: str) -> None:
        """Remove the container (stopped at once) and detach its mounts: all that is left of it."""
        await self.remove(container)
        await self.release_binds(container)

    def discard_sync(self, container: str) -> None:
        """:meth:`discard` for a thread (a service's sweep)."""
        from docker.errors import NotFound

        try:
            self._call_sync(
                "DELETE", "/containers/{0}", container, params={"force": "true", "v": "true"}
            )
        except NotFound:
            pass
        self.unmount_sync(container)

    def unmount_sync(self, container: str) -> None:
        """Detach ``container``'s idmapped mounts and remove their folder (in a thread)."""
        folder = Path(self.placement.mount_dir(container))
        if not folder.is_dir():
            return
        for child in folder.iterdir():
            unmount_idmapped_home(str(child))
        unmount_idmapped_home(str(folder))

    def list_sync(self, role: str, **labels: str) -> list[dict]:
        """:meth:`list` for a thread."""
        wanted = self.labels(role, **labels)
        filters = {"label": [f"{key}={value}" for key, value in wanted.items()]}
        found = self._call_sync(
            "GET", "/containers/json", params={"all": "true", "filters": json.dumps(filters)}
        )
        return list(found or [])

    async def count_oom_kills(
        self, container: str, until: asyncio.Future, interval: float = 0.2
    ) -> int:
        """The OOM killer's kills in ``container`` until ``until`` is done (it exited).

        Podman's ``OOMKilled`` only says whether the container's first process was
        killed; a kernel killed under papermill, which lives on to report it, is
        seen only in the container's memory cgroup, which goes with the container:
        so it is read while the container runs.
        """
        cgroup, kills = "", 0
        while not until.done():
            if not cgroup:
                found = await self.inspect(container)
                state = (found or {}).get("State", {})
                if state.get("Running"):
                    cgroup = state.get("CgroupPath", "")
                elif found is None or state.get("Status") in ("exited", "stopped"):
                    return kills
            if cgroup:
                count = await asyncio.to_thread(oom_kill_count, cgroup)
                if count is None:
                    return kills
                kills = max(kills, count)
            await asyncio.wait([until], timeout=interval)
        return kills

    async def count_usage(
        self,
        container: str,
        until: asyncio.Future,
        ledger: UsageLedger | None,
        parent: str,
        label: UsageLabel,
        profile: str,
        limits: Limits,
        *,
        resume: bool = False,
        interval: float = USAGE_INTERVAL,
        counting: asyncio.Event | None = None,
    ) -> str | None:
        """Keep ``container``'s usage record in ``ledger`` until ``until`` is done (it is gone).

        Once the container runs, its cgroup (``State.CgroupPath``) is opened in the
        ledger under ``parent`` with ``label``, ``profile`` and ``limits``, as
        :meth:`LocalHost.launch <hub_ext.host.local.LocalHost.launch>` opens a
        process's; with ``resume``, the open record of the same cgroup is kept
        instead (a server the hub finds running after a restart). Its counters are
        then read every ``interval`` seconds: podman deletes the cgroup as soon as
        the last process exits (a stop, an OOM kill, a crash), and the last
        reading is what the ledger closes the record with, once ``until`` is done
        or the cgroup is gone. Cancelled, it leaves the record open: the usage
        service samples the cgroup meanwhile, and ends the record when it is gone.

        Never raises for accounting's sake (logged): a container runs unaccounted
        rather than not at all. ``counting`` is set once the record is open (or
        nothing will be recorded).

        Returns
        -------
        str or None
            The record's id; None when nothing was recorded (no ledger, the
            container ended before it ran, no counters).
        """
        try:
            if ledger is None:
                return None
            cgroup = await self._running_cgroup(container, until, parent, min(interval, 0.2))
            # a cgroup's counters are kernel memory read through sysfs, never a disk: read
            # in the loop (15 us), not through the thread pool (140 us: 1.4 % of a core for
            # 100 containers at one reading a second, against 0.15 %)
            if cgroup is None or cgroup.read() is None:
                return None
            found = ledger.open_record(parent, container) if resume else None
            instance: str | None
            if found is not None and found[1].get("dirs") == cgroup.dirs:
                instance = str(found[1]["id"])
            else:
                instance = await asyncio.to_thread(
                    ledger.opened, cgroup, container, label, profile, limits
                )
            if counting is not None:
                counting.set()
            while not until.done():
                await asyncio.wait([until], timeout=interval)
                if cgroup.read() is None:
                    break
            await asyncio.to_thread(ledger.closed, cgroup, container)
            return instance
        except asyncio.CancelledError:
            raise
        except Exception as e:  # accounting never stops a container
            self.log.warning("Could not record the usage of container %s: %s", container, e)
            return None
        finally:
            if counting is not None:
                counting.set()

    def watch_usage(self, container: str, **recorded: Any) -> UsageWatch:
        """:meth:`count_usage` of ``container`` as a task, until :meth:`UsageWatch.finish`.

        ``recorded``: :meth:`count_usage`'s arguments after ``until``.
        """
        return UsageWatch(self, container, recorded)

    async def _running_cgroup(
        self, container: str, until: asyncio.Future, parent: str, interval: float
    ) -> ContainerCgroup | None:
        """The cgroup of ``container`` once it runs; None when it ended (or ``until``) first."""
        while not until.done():
            found = await self.inspect(container)
            state = (found or {}).get("State", {})
            if state.get("Running") and state.get("CgroupPath"):
                return ContainerCgroup.of(parent, state["CgroupPath"], self.cgroup_root)
            if found is None or state.get("Status") in ("exited", "stopped"):
                return None
            await asyncio.wait([until], timeout=interval)
        return None

    async def list(self, role: str, **labels: str) -> list[dict]:
        """This host's containers of ``role`` (running or not) with ``labels``, as libpod lists them."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: self.list_sync(role, **labels))


class UsageWatch:
    """A container's usage record kept by :meth:`ContainerHost.count_usage` in a task."""

    def __init__(self, host: ContainerHost, container: str, recorded: dict[str, Any]):
        self.container = container
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()
        #: set once the record is open and read (or nothing is recorded)
        self.counting = asyncio.Event()
        self.task = asyncio.create_task(
            host.count_usage(container, self.done, **recorded, counting=self.counting)
        )

    async def finish(self) -> str | None:
        """The container is gone: its record closed with its last reading; the record's id."""
        if not self.done.done():
            self.done.set_result(None)
        return await self.task

    def cancel(self) -> None:
        """Stop reading, the record left open (the container runs on without this process)."""
        self.task.cancel()


class LogFollower:
    """A container's output, followed through the API into an :class:`asyncio.Protocol`.

    ``data_received`` gets each chunk as podman sends it, ``connection_lost`` the
    end (the container exited, or :meth:`close`). It reads on a thread of its own
    (a follow lasts as long as the container), never on the API's pool.
    """

    def __init__(
        self, host: ContainerHost, container: str, protocol: Any, since: int | None = None
    ):
        self._loop = asyncio.get_running_loop()
        self._protocol = protocol
        self._stream: Any = None
        self._closed = False
        self._thread = threading.Thread(
            target=self._pump, args=(host, container, since), daemon=True, name=f"logs-{container}"
        )
        self._thread.start()

    def _deliver(self, method: str, *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(getattr(self._protocol, method), *args)
        except RuntimeError:  # the event loop is closed: nobody reads any more
            self._closed = True

    def _pump(self, host: ContainerHost, container: str, since: int | None) -> None:
        try:
            self._stream = host._client().logs(
                container, stream=True, follow=True, stdout=True, stderr=True, since=since
            )
            for chunk in self._stream:
                if self._closed:
                    break
                self._deliver("data_received", chunk)
        except Exception as e:  # the container went, or the API service: the output ends
            if not self._closed:
                host.log.debug("The output of %s ended: %s", container, e)
        finally:
            self._deliver("connection_lost", None)

    def close(self) -> None:
        """Stop following (the container is not touched)."""
        self._closed = True
        stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception:  # noqa: S110 - a socket closed under the reading thread
                pass


def oom_kill_count(cgroup: str) -> int | None:
    """The OOM killer's kills in the container cgroup ``cgroup`` so far (None: it is gone).

    cgroup v1's ``memory.oom_control`` or v2's ``memory.events``, ``oom_kill``.
    """
    root = Path("/sys/fs/cgroup")
    for path in (
        root / "memory" / cgroup.lstrip("/") / "memory.oom_control",
        root / cgroup.lstrip("/") / "memory.events",
    ):
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value)
    return None


def exit_status(inspected: dict | None) -> tuple[int | None, bool]:
    """A finished container's exit code and whether the kernel's OOM killer ended it."""
    if not inspected:
        return None, False
    state = inspected.get("State", {})
    return state.get("ExitCode"), bool(state.get("OOMKilled"))


def running_as_root() -> bool:
    """Rootful podman: a part that makes users' containers must run as root."""
    return os.geteuid() == 0
