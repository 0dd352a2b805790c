"""LocalBackend: each replica of a model version is a model server process on this machine.

The backend is the deployer's interface (:class:`~hub_ext.services.deployer.backend.Backend`)
over parts that each do one thing, given what they need when they are made:

- :class:`.versions.VersionPreparer`: a version's environment, its owner's account,
  its private folder (training summary, the model's copy) and its log;
- :class:`.replicas.Replicas`: each replica's cgroup and process, its supervisor,
  its restarts and its stop;
- :class:`.health.HealthChecks`: ``GET /health`` until a replica is ready, then
  while it serves, and why one ended;
- :class:`.records.Records`: the running versions' records, by which a deployer
  adopts the replicas of one that died (:meth:`LocalBackend.recover`);
- :class:`.process.ReplicaHost`: the cgroup driver and the GPUs of this machine.

What stays here is the interface itself and the state the parts share: which
versions run (``_versions``) and which replicas an earlier deployer left serving
(``_found``), and the traits, whose names admins' config files use
(``c.LocalBackend.<trait>``). The traits the parts read while they run (timeouts,
backoff, ports) reach them through one :class:`.health.ReplicaSettings` that this
class keeps current, so a changed setting applies at once and no part holds the
backend. The folders (``runtime_dir``, ``log_dir``), ``max_log_bytes`` and the
cgroup parent are given to the parts once, when the backend is made: a running
version's folder, record, FIFOs and cgroups stay where they were made.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Collection
from dataclasses import fields
from pathlib import Path

from traitlets import (
    Float,
    Integer,
    List,
    TraitError,
    Unicode,
    default,
    observe,
    validate,
)

from hub_ext.host.cgroups import CgroupDriver
from hub_ext.host.gpus import GpuAllocator
from hub_ext.host.local import UsesLocalHost, deprecated_help
from hub_ext.runtime.modelserver.contract import REPLICA_SECRET_HEADER

from ..backend import Backend, DeployFailed, VersionSpec
from .health import HealthChecks, ReplicaSettings
from .logs import read_tail
from .process import ReplicaHost
from .records import Found, Records
from .replicas import Replicas
from .state import RunningVersion
from .versions import VersionPreparer, has_model_copy

#: The traits :class:`.health.ReplicaSettings` mirrors for the parts that read them.
_SETTINGS = tuple(f.name for f in fields(ReplicaSettings))


def _data_dir() -> Path:
    return Path(os.environ.get("SHIPYARD_DATA_DIR") or ".shipyard").resolve()


class LocalBackend(UsesLocalHost, Backend):
    """Runs each replica as a model server process, as its owner, inside the profile's limits.

    Select it with ``c.DeployerService.backend_class = "local"``. When the
    service runs as root, every replica uses its owner's system account
    (created if missing) and a cgroup of its own; otherwise it runs as the
    service's user with the best limits the host allows (see
    :mod:`hub_ext.host.cgroups`). Accounts, cgroups (``<c.LocalHost.cgroup_parent>-models``),
    environments and GPUs are configured as ``c.LocalHost`` (:mod:`hub_ext.host.local`),
    the same settings as the spawner's.
    """

    cgroup_part = "models"

    log_dir = Unicode(
        help="""
        Folder of the versions' logs, one ``<version key>.log`` each (the service's, mode 0700).

        What every replica of a version prints, stamped and marked with the
        replica, and the backend's own notes (starts, exits, restarts). Kept
        after a version stops, so its owner can read why it failed. Defaults to
        ``logs`` in the deployer's ``state_dir`` (``deployer/logs`` in
        ``$SHIPYARD_DATA_DIR``).

        Example::

            c.LocalBackend.log_dir = "/var/log/shipyard/models"

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    @default("log_dir")
    def _default_log_dir(self):
        state_dir = getattr(self.parent, "state_dir", None)  # the deployer service's
        return str(Path(state_dir) / "logs" if state_dir else _data_dir() / "deployer" / "logs")

    runtime_dir = Unicode(
        help="""
        Folder of the running versions' private folders (each the owner's, mode 0700).

        A version's folder holds its training summary and is the replicas'
        working directory; it is removed when the version stops. Beside the
        folders are the running versions' records and the replicas' output
        FIFOs, by which a deployer that starts after one that died adopts the
        replicas still serving; at start, :meth:`recover` removes everything
        else in this folder. It must be the deployer's
        own (created 0711 if missing; refused when someone else owns it).
        Defaults to ``<cgroup_parent>`` in the system's temporary folder.

        Example::

            c.LocalBackend.runtime_dir = "/run/shipyard-models"

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    @default("runtime_dir")
    def _default_runtime_dir(self):
        return str(Path(tempfile.gettempdir()) / self.cgroup_parent.replace("/", "-"))

    port_range = List(
        Integer(min=1, max=65535),
        default_value=[],
        help="""
        Lowest and highest TCP port of the replicas on 127.0.0.1; empty lets the kernel choose.

        Set a range when a host firewall or a port policy needs to know them.
        Each replica gets a free port of the range (a start fails when none
        is free).

        Example::

            c.LocalBackend.port_range = [20000, 20999]

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    @validate("port_range")
    def _validate_port_range(self, proposal):
        ports = list(proposal.value)
        if ports and (len(ports) != 2 or ports[0] > ports[1]):
            raise TraitError(f"port_range must be [lowest, highest] or empty, not {ports!r}")
        return ports

    start_timeout = Float(
        180,
        min=1,
        help="""
        Seconds a replica may take to answer ``GET /health`` with 200 (loading its model).

        A version whose replica is not ready by then fails with that reason.
        Large models read from the tracking server may need more.

        Example::

            c.LocalBackend.start_timeout = 600

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    health_interval = Float(
        5,
        min=0.1,
        help="""
        Seconds between two health checks of a serving replica.

        A replica that does not answer leaves :meth:`endpoints` until it
        does again; one that misses ``health_failures`` checks in a row is
        killed and restarted. An exit is noticed at once, whatever this is.

        Example::

            c.LocalBackend.health_interval = 10

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    health_timeout = Float(
        3,
        min=0.1,
        help="""
        Seconds a replica has to answer one health check.

        Example::

            c.LocalBackend.health_timeout = 5

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    health_failures = Integer(
        3,
        min=1,
        help="""
        Health checks in a row a serving replica may miss before it is killed and restarted.

        Example::

            c.LocalBackend.health_failures = 5

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    restart_backoff = Float(
        1,
        min=0,
        help="""
        Seconds before restarting a replica that exited; doubled after each further failure.

        Reset once the replica has served for ``restart_backoff_max``
        seconds. A replica that exits because a request timed out (the
        model server's status 75) restarts at once.

        Example::

            c.LocalBackend.restart_backoff = 2

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    restart_backoff_max = Float(
        60,
        min=0,
        help="""
        Longest wait between two restarts of a replica that keeps failing.

        Example::

            c.LocalBackend.restart_backoff_max = 300

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    stop_grace = Float(
        20,
        min=0,
        help="""
        Seconds a replica removed by :meth:`scale` or :meth:`close` has to finish its requests.

        It gets SIGTERM (the model server then takes no new requests and
        finishes the others), and is killed after this. :meth:`stop` takes its
        grace from the service.

        Example::

            c.LocalBackend.stop_grace = 30

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    cleanup_timeout = Integer(
        None,
        allow_none=True,
        help=deprecated_help("cleanup_timeout", "c.LocalBackend.cleanup_timeout = 30", added="0.4"),
    ).tag(config=True)

    @observe("cleanup_timeout")
    def _deprecated_cleanup_timeout(self, change):
        self._forward_to_host("cleanup_timeout", "cleanup_timeout", change.new)

    max_log_bytes = Integer(
        10 * 2**20,
        min=1024,
        help="""
        Size at which a version's log is rotated; one older file is kept (so twice this at most).

        Example::

            c.LocalBackend.max_log_bytes = 50 * 1024 * 1024

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._versions: dict[str, RunningVersion] = {}
        #: replicas an earlier deployer left serving, by version key, until start adopts them
        self._found: dict[str, Found] = {}
        self._settings = ReplicaSettings(**{name: getattr(self, name) for name in _SETTINGS})
        self._host = self._make_host()
        runtime_dir = Path(self.runtime_dir)
        self._records = Records(runtime_dir, self._host, self.log)
        self._preparer = self._preparer_class(
            self.local_host, runtime_dir, Path(self.log_dir), self.max_log_bytes
        )
        self._health = HealthChecks(self._settings, self._host)
        self._replicas = self._replicas_class(
            self._versions, self._host, self._records, self._health, self._settings, self.log
        )

    #: the parts that differ where replicas are containers (ContainerBackend)
    _preparer_class: type[VersionPreparer] = VersionPreparer
    _replicas_class: type[Replicas] = Replicas

    def _make_host(self) -> ReplicaHost:
        return ReplicaHost(self.local_host, self.cgroup_parent)

    @observe(*_SETTINGS)
    def _settings_changed(self, change):
        """A setting the running parts read changed: they read the new value from now on."""
        settings = getattr(self, "_settings", None)  # None while __init__ applies the config
        if settings is not None:
            setattr(settings, change.name, change.new)

    @property
    def run_as_root(self) -> bool:
        """Whether replicas run as their owners' accounts (this process is root)."""
        return self.local_host.run_as_root

    @property
    def driver(self) -> CgroupDriver:
        """The replicas' cgroup driver, opened on first use."""
        return self._host.driver

    @property
    def allocator(self) -> GpuAllocator:
        """Which replica holds which GPU."""
        return self._host.allocator

    @property
    def gpu_count(self) -> int:
        """The GPUs replicas may have here (``gpu_devices``), as LocalProfileSpawner counts its own."""
        return len(self.local_host.gpu_devices)

    # ------------------------------------------------------------ interface

    @property
    def start_seconds(self) -> float:
        """A replica's ``start_timeout``: replicas of a version start side by side."""
        return self.start_timeout

    def needs_credentials(self, spec: VersionSpec) -> bool:
        """No while the version's folder holds the model's copy (``--model-cache``).

        The first replica of a version downloads the model into its folder; every
        later start (a restart, a scale-up, an adopted version) loads that copy and
        needs neither the tracking server nor a token.
        """
        if not super().needs_credentials(spec):
            return False
        version = self._versions.get(spec.key)
        found = self._found.get(spec.key)
        if version is not None and not version.stopped:
            folder = version.folder
        elif found is not None:
            folder = found.folder
        else:
            return True
        return not has_model_copy(folder)

    async def start(self, spec: VersionSpec) -> None:
        """Start the version's replicas; return once every one answers ``/health`` with 200.

        Starting a version that runs already scales it to ``spec.replicas``.

        Raises
        ------
        DeployFailed
            With the model server's own reason (``failed to load model: …``),
            its last lines when it exited without one, or what else stood in
            the way (no environment, no account). Nothing of the version is
            left running.
        """
        if spec.replicas < 1:
            raise DeployFailed("A version needs at least one replica.")
        found = self._found.get(spec.key)
        if found is not None:
            await self._adopt(spec, found)
            await self.scale(spec)
            return
        version = self._versions.get(spec.key)
        if version is not None and version.stopped:  # still stopping: its cgroups' names
            await version.gone.wait()
        elif version is not None:
            await self.scale(spec)
            return
        version = await self._preparer.prepare(spec)
        self._versions[spec.key] = version
        try:
            async with version.lock:
                version.log.note(f"starting {spec.replicas} replica(s) of {spec.display_name}")
                await self._replicas.add(version, spec.replicas)
                version.log.note("ready")
        except BaseException:
            await self._discard(version)
            raise

    def endpoints(self, key: str) -> list[str]:
        version = self._versions.get(key)
        if version is None:
            found = self._found.get(key)  # serving since the deployer started, not yet adopted
            return found.urls if found is not None else []
        if version.stopped:
            return []
        return [
            r.url
            for _, r in sorted(version.replicas.items())
            if r.healthy and not r.stopping and r.pid is not None
        ]

    def request_headers(self, key: str) -> dict[str, str]:
        version = self._versions.get(key) or self._found.get(key)
        return {REPLICA_SECRET_HEADER: version.secret} if version is not None else {}

    async def scale(self, spec: VersionSpec) -> None:
        """Run ``spec.replicas`` replicas: new ones serve before surplus ones get SIGTERM.

        A version that does not run is started.

        Raises
        ------
        DeployFailed
            A new replica did not become healthy; the ones that served keep
            serving and the new ones are removed.
        """
        version = self._versions.get(spec.key)
        if version is None or version.stopped:
            await self.start(spec)
            return
        if spec.replicas < 1:
            raise DeployFailed("A version needs at least one replica; stop it instead.")
        async with version.lock:
            version.spec = spec
            live = sorted(i for i, r in version.replicas.items() if not r.stopping)
            if spec.replicas > len(live):
                version.log.note(f"scaling from {len(live)} to {spec.replicas} replica(s)")
                await self._replicas.add(version, spec.replicas - len(live))
            elif spec.replicas < len(live):
                version.log.note(f"scaling from {len(live)} to {spec.replicas} replica(s)")
                surplus = [version.replicas[i] for i in live[spec.replicas :]]
                await asyncio.gather(*(self._replicas.stop(r, self.stop_grace) for r in surplus))

    async def stop(self, key: str, grace: float = 20) -> None:
        found = self._found.pop(key, None)
        if found is not None:
            await self._records.stop_found(found, grace)
        version = self._versions.get(key)
        if version is None:
            return
        if version.stopped:
            await version.gone.wait()
            return
        # out of endpoints() at once; a start or scale under way sees its new replicas
        # stopped and fails, so the lock is not taken
        version.stopped = True
        version.log.note(f"stopping (grace {grace:g}s)")
        await self._discard(version, grace)

    async def sweep(self) -> None:
        """Kill and remove every replica, cgroup and private folder an earlier deployer left."""
        await self.recover(())

    async def recover(self, wanted: Collection[str]) -> None:
        """At service start: keep the live replicas of ``wanted`` versions, remove the rest.

        A replica is kept when its version's record (:mod:`.records`) names it,
        its pid is still the recorded process (same start time) and it answers
        ``GET /health`` with 200; it serves from now on (:meth:`endpoints`), and
        :meth:`start` of its version adopts it. Everything else under
        ``cgroup_parent`` and in the runtime folder is killed and removed:
        replicas of versions no longer wanted, ones that do not answer, processes
        no record names, and their folders.
        """
        self._found.update(await self._records.recover(wanted, self.health_timeout))

    async def close(self) -> None:
        """Stop every version (SIGTERM, ``stop_grace``), at service shutdown.

        Then the parent cgroup and the runtime folder go too when nothing is
        left in them, so a stopped deployer leaves nothing behind; the next
        start makes them again (and :meth:`recover` adopts or clears what a crash left).
        """
        keys = set(self._versions) | set(self._found)
        await asyncio.gather(*(self.stop(key, self.stop_grace) for key in keys))

        def tidy() -> None:
            if self.driver.enforces_total:
                self.driver.remove_parent()
            self._records.tidy()

        await asyncio.to_thread(tidy)

    # ------------------------------------------------------- for the service

    def log_path(self, key: str) -> Path:
        """The version's log file (it may not exist: never started here)."""
        return self._preparer.log_path(key)

    def log_tail(self, key: str, lines: int = 100) -> str:
        """The last ``lines`` lines of the version's log, for its owner."""
        return read_tail(self.log_path(key), lines)

    def describe(self, key: str) -> list[dict]:
        """Every replica of a running version: index, pid, port, healthy, restarts, cgroup."""
        version = self._versions.get(key)
        if version is None or version.stopped:
            return []
        return [
            {
                "index": r.index,
                "pid": r.pid,
                "port": r.port,
                "url": r.url,
                "healthy": r.healthy,
                "restarts": r.restarts,
                "cgroup": r.cgroup,
                "account": version.user.pw_name,
            }
            for _, r in sorted(version.replicas.items())
            if not r.stopping
        ]

    # ------------------------------------------------------------ internals

    async def _adopt(self, spec: VersionSpec, found: Found) -> None:
        """Put the replicas :meth:`recover` found serving under supervision, as started here.

        They keep serving throughout: the version replaces ``found`` in one step.
        Replicas that cannot be adopted (another account's, a folder that is
        gone) are stopped, and the version starts as usual.
        """
        version = await self._preparer.adopted(spec, found)
        if version is None:
            self._found.pop(spec.key, None)
            await self._records.stop_found(found, self.stop_grace)
            return
        await self._replicas.adopt(version, found)
        self._versions[spec.key] = version
        self._found.pop(spec.key, None)
        self._replicas.supervise_adopted(version)
        self._records.save(version)
        pids = ", ".join(
            f"{r.source} pid {r.process.pid}"
            for r in version.replicas.values()
            if r.process is not None
        )
        version.log.note(f"adopted {len(version.replicas)} replica(s) still serving: {pids}")

    async def _discard(self, version: RunningVersion, grace: float = 0) -> None:
        """Stop every replica, remove the private folder, close the log; forget the version."""
        version.stopped = True
        try:
            await asyncio.gather(
                *(self._replicas.stop(r, grace) for r in list(version.replicas.values()))
            )
        finally:
            await asyncio.to_thread(shutil.rmtree, version.folder, True)
            self._records.path(version.spec.key).unlink(missing_ok=True)
            version.log.note("stopped")
            version.log.close()
            if self._versions.get(version.spec.key) is version:
                del self._versions[version.spec.key]
            version.gone.set()
