"""ContainerBackend: each replica of a model version is a podman container of its profile's image.

With ``c.LocalHost.placement = "container"`` (passed on by the hub) the deployer
runs replicas with this backend instead of :class:`~.backend.LocalBackend`. It is
the local backend with three parts swapped, so what a version does (start until
every replica is healthy, supervision and restarts, scaling that never leaves a
version without a replica, the version swap behind the router, the records by
which a deployer adopts the replicas of one that died) is the same code:

- :class:`ContainerVersionPreparer`: the profile's environment *image* instead of
  its virtual environment (refused with ``shipyard image build ENV`` when podman
  does not have it); the account, log and private folder as for processes;
- :class:`ContainerReplicas`: a replica is a container made by
  :class:`~hub_ext.host.containerhost.ContainerHost` from the secure spec the
  servers and runs have (read-only root, no capabilities, the profile's memory,
  CPU and pids limits, uid 1000 on idmapped folders, the owner's confined
  network), with the owner's home, the version's private folder (training
  summary, the model's copy) and a local model's folder bound at their host paths.
  The model server listens on :data:`MODEL_PORT` inside, published on 127.0.0.1 on
  a port podman picks (no race for a free port); its output is followed through
  the API into the version's log; its process is watched through a pidfd like a
  process replica's (the container's first process is a host pid);
- :class:`ContainerReplicaHost`: kill, remove and the OOM killer's verdict through
  podman instead of cgroups; what a dead deployer left is found by the
  containers' labels instead of a cgroup parent.

A replica container outlives the deployer (podman, not the deployer, is its
parent): the next deployer adopts it from the version's record exactly as it
adopts a process (same pid and start time, ``/health`` answering).

GPUs come through CDI (``c.ContainerPlacement.cdi_spec_dirs``): each replica of
a GPU profile gets its own GPUs' CDI devices, or the version is refused with what
an admin installs where no CDI spec declares them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from hub_ext.host.containerhost import ContainerFailed, ContainerHost, UsageWatch, exit_status
from hub_ext.host.containers import (
    CONTAINER_HOME,
    ContainerPlacement,
    ImageMissing,
    container_environment,
    gpu_refusal,
    reach_environment,
)
from hub_ext.host.local import LocalHost
from hub_ext.host.localproc import profile_limits
from hub_ext.host.process import start_time
from hub_ext.runtime.modelserver.contract import REPLICA_SECRET_ENV, options_environment

from ..backend import MODEL_SERVER_MODULE, DeployFailed, VersionSpec, model_server_args
from .backend import LocalBackend
from .logs import ReplicaOutput
from .process import ReplicaHost, ReplicaProcess
from .records import Found
from .replicas import Replicas, usage_label
from .state import Replica, RunningVersion
from .versions import VersionPreparer

#: The port the model server listens on inside its container (published on 127.0.0.1).
MODEL_PORT = 8080
#: The label with a replica's name (its version key and index) on its container.
REPLICA_LABEL = "io.shipyard.replica"


class ContainerReplicaHost(ReplicaHost):
    """The replicas' containers: made, killed and removed through podman's API."""

    def __init__(self, local_host: LocalHost, cgroup_parent: str, containers: ContainerHost):
        super().__init__(local_host, cgroup_parent)
        self.containers = containers
        #: whether the OOM killer ended a replica, read from podman as it ended
        self._oom: dict[str, bool] = {}
        #: each running replica's usage record, kept from its container's cgroup
        self._usage: dict[str, UsageWatch] = {}

    def name(self, replica: str) -> str:
        """The container of the replica ``replica`` (``<key>-r<N>``), unique to this instance."""
        return f"{self.containers.placement.network_prefix}-{replica}"

    async def kill(self, cgroup: str, pid: int | None) -> None:
        await self.containers.kill(self.name(cgroup))

    async def remove_cgroup(self, cgroup: str) -> None:
        name = self.name(cgroup)
        found = await self.containers.inspect(name)
        if found is not None:
            self._oom[cgroup] = exit_status(found)[1]
        await self.containers.discard(name)
        watch = self._usage.pop(cgroup, None)
        if watch is not None:
            await watch.finish()

    def count_usage(self, replica: Replica, resume: bool = False) -> None:
        """Keep the usage record of ``replica``'s container until :meth:`remove_cgroup`.

        ``resume``: a replica adopted from an earlier deployer, whose open record
        is kept.
        """
        version = replica.version
        old = self._usage.pop(replica.cgroup, None)
        if old is not None:
            old.cancel()
        self._usage[replica.cgroup] = self.containers.watch_usage(
            self.name(replica.cgroup),
            ledger=self.local_host.usage_ledger,
            parent=self.cgroup_parent,  # the ledger folder of the replicas' processes
            label=usage_label(version),
            profile=version.spec.profile.slug,
            limits=profile_limits(version.spec.profile, replica.gpus),
            resume=resume,
        )

    @property
    def allocator(self):
        """Which replica holds which CDI GPU (``c.ContainerPlacement.cdi_spec_dirs``)."""
        return self.containers.gpus

    def allocate_gpus(self, cgroup: str, count: int) -> list[str]:
        try:
            return self.containers.allocate_gpus(cgroup, count)
        except ContainerFailed as e:
            raise DeployFailed(str(e)) from None

    def oom_killed(self, cgroup: str) -> bool:
        return self._oom.get(cgroup, False)

    def discard(self, cgroup: str) -> None:
        self.containers.discard_sync(self.name(cgroup))

    def remove_unkept(self, kept: set[str]) -> list[str]:
        """Remove every replica container of this instance but ``kept`` (in a thread)."""
        try:
            found = self.containers.list_sync("replica")
        except Exception as e:  # podman's API down: nothing reachable to remove
            self.containers.log.warning("Could not list replica containers: %s", e)
            return []
        removed = []
        for container in found:
            replica = (container.get("Labels") or {}).get(REPLICA_LABEL, "")
            if replica in kept:
                continue
            name = (container.get("Names") or [container["Id"]])[0]
            self.containers.discard_sync(name)
            removed.append(name)
        return sorted(removed)


class ContainerVersionPreparer(VersionPreparer):
    """A version's image (not a virtual environment), account, log and private folder."""

    containers: ContainerHost

    def _find_environment(self, spec: VersionSpec) -> None:  # type: ignore[override]
        return None  # the image is the environment (checked in _image)

    async def _image(self, spec: VersionSpec) -> str:
        available = len(self.containers.gpus.devices)
        if spec.profile.gpu > available:
            raise DeployFailed(
                gpu_refusal(spec.profile.gpu, available, self.containers.placement.cdi_spec_dirs)
            )
        try:
            return await self.containers.image(spec.profile)
        except (ImageMissing, ContainerFailed) as e:
            raise DeployFailed(str(e)) from None

    async def prepare(self, spec: VersionSpec) -> RunningVersion:
        image = await self._image(spec)
        version = await super().prepare(spec)
        version.image = image
        return version

    async def adopted(self, spec: VersionSpec, found: Found) -> RunningVersion | None:
        image = await self._image(spec)
        version = await super().adopted(spec, found)
        if version is not None:
            version.image = image
        return version


class ContainerReplicas(Replicas):
    """Replicas as containers: started, followed and ended through podman."""

    host: ContainerReplicaHost

    async def _launch(self, replica: Replica) -> None:
        """The replica's container, started; its published port, pid and output."""
        version = replica.version
        spec = version.spec
        containers = self.host.containers
        name = self.host.name(replica.cgroup)
        user = version.user
        options = model_server_args(spec, "0.0.0.0", MODEL_PORT)  # noqa: S104 - its own netns
        if version.summary is not None:
            options += ["--training-summary", str(version.summary)]
        options += ["--model-cache", str(version.model_cache)]
        env = dict(spec.secrets)
        env.update(spec.env)
        env.update(container_environment(user.pw_name, spec.profile))
        env[REPLICA_SECRET_ENV] = version.secret
        env.update(options_environment(options))
        urls = [v for v in env.values() if v.startswith(("http://", "https://"))]
        try:
            network = await containers.network(spec.owner, urls)
            binds = [
                (await containers.bind(name, "home", user.pw_dir, user), CONTAINER_HOME),
                (
                    await containers.bind(name, "version", str(version.folder), user),
                    str(version.folder),
                ),
            ]
            local_model = _local_model_folder(spec.model_uri)
            if local_model is not None:
                binds.append((await containers.bind(name, "model", local_model, user), local_model))
            container = containers.spec(
                account=user,
                owner=spec.owner,
                name=name,
                image=version.image,
                command=["python", "-m", MODEL_SERVER_MODULE],
                env=reach_environment(env, network.gateway),
                home_source=binds[0][0],
                profile=spec.profile,
                network=network.name,
                port=MODEL_PORT,
                labels=containers.labels("replica", **{REPLICA_LABEL: replica.cgroup}),
                binds=tuple(binds[1:]),
                work_dir=str(version.folder),
                devices=tuple(replica.gpus),
            )
            await containers.remove(name)  # one left by a restart or a dead deployer
            await containers.create(container)
            await containers.start(name, network)
            found = await containers.inspect(name)
        except ContainerFailed as e:
            raise DeployFailed(str(e)) from None
        state = (found or {}).get("State", {})
        pid = int(state.get("Pid") or 0)
        replica.port = _published_port(found or {}, MODEL_PORT)
        # pid 0 (it exited at once: its output says why) is a process that is over
        replica.process = ReplicaProcess(pid, (start_time(pid) or "") if pid else "")
        self.host.count_usage(replica)
        self._follow(replica, since=None)
        self.records.save(version)
        version.log.note(
            f"{replica.source}: started container {name} (pid {pid}) on port {replica.port} "
            f"as {user.pw_name}"
        )

    def _follow(self, replica: Replica, since: int | None) -> None:
        output = ReplicaOutput(replica.version.log, replica.source)
        replica.output = output
        replica.reader = self.host.containers.follow(  # type: ignore[assignment]
            self.host.name(replica.cgroup), output, since
        )

    async def _adopt_output(self, replica: Replica) -> None:
        """An adopted replica's output from now on (what it printed meanwhile stays in podman),
        and its usage record, kept open."""
        self.host.count_usage(replica, resume=True)
        self._follow(replica, since=int(time.time()))

    async def end(self, replica: Replica) -> None:
        """The container is over: its exit status read, then removed (and the network if last)."""
        process = replica.process
        if process is not None and process.returncode is None and process.exited.done():
            name = self.host.name(replica.cgroup)
            # its first process is gone; podman records the exit a moment later
            for _ in range(40):
                found = await self.host.containers.inspect(name)
                state = (found or {}).get("State", {})
                if found is None or state.get("Status") in ("exited", "stopped"):
                    break
                await asyncio.sleep(0.05)
            code, _ = exit_status(found)
            if code is not None and state.get("Status") in ("exited", "stopped"):
                # podman reports a death by signal N as 128 + N, as a shell does
                process.returncode = -(code - 128) if code > 128 else code
        await super().end(replica)
        # the network goes with the owner's last container (a server, run or replica: it asks)
        with contextlib.suppress(Exception):  # podman's API gone: the next end removes it
            await self.host.containers.release_network(replica.version.spec.owner)


class ContainerBackend(LocalBackend):
    """Each replica of a model version is a podman container of the profile's image.

    Chosen by ``c.LocalHost.placement = "container"`` (or
    ``c.DeployerService.backend_class = "container"``); configured as
    ``c.LocalBackend`` (timeouts, restarts, folders; this class's section overrides
    it), the containers as ``c.ContainerPlacement``. ``port_range`` does not apply:
    podman picks each replica's published port.
    """

    _preparer_class = ContainerVersionPreparer
    _replicas_class = ContainerReplicas

    def _make_host(self) -> ReplicaHost:
        self.placement = ContainerPlacement(parent=self)
        self.containers = ContainerHost(self.placement, self.log)
        return ContainerReplicaHost(self.local_host, self.cgroup_parent, self.containers)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        assert isinstance(self._preparer, ContainerVersionPreparer)
        self._preparer.containers = self.containers

    @property
    def gpu_count(self) -> int:
        """The GPUs the CDI specs declare (``c.ContainerPlacement.cdi_spec_dirs``)."""
        return len(self.containers.gpus.devices)

    async def recover(self, wanted) -> None:
        await self.containers.ready()
        await super().recover(wanted)

    async def close(self) -> None:
        await super().close()
        self.containers.close()


def _local_model_folder(model_uri: str) -> str | None:
    """The host folder a local model URI (a path, ``file://``) names, to bind it; else None."""
    path = model_uri.removeprefix("file://")
    if not path.startswith("/"):
        return None
    return str(Path(path))


def _published_port(inspected: dict, port: int) -> int:
    """The host port podman published ``port``/tcp on (0 when none: the container exited)."""
    ports = inspected.get("NetworkSettings", {}).get("Ports") or {}
    for binding in ports.get(f"{port}/tcp") or ():
        with contextlib.suppress(KeyError, TypeError, ValueError):
            return int(binding["HostPort"])
    return 0
