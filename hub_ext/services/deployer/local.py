"""LocalBackend: each replica of a model version is a model server process on this machine.

This is the "one machine" column of ARCHITECTURE.md for deployed models. A
version goes through a short list of named steps, as a scheduled run does in
:mod:`hub_ext.services.scheduler.executors.local`, whose building blocks it
shares through :mod:`hub_ext.host.localproc` (accounts, cgroups, environments; not its
death with the parent, see below):

1. ``_find_environment``: the profile's built environment (``shipyard env build``);
   the model server runs on its Python, so the model meets the packages its
   owner chose;
2. ``_account``: the owner's system account, named and created exactly as the
   spawner and the scheduler do (:func:`hub_ext.host.slugs.account_name`): a model
   is code and runs only as its owner (SECURITY rule 5);
3. ``_prepare``: the version's private folder (the owner's, mode 0700) with
   the training summary (mode 0600), and its log in the service's log folder;
4. per replica, ``_launch``: a cgroup ``<version key>-r<N>`` under
   ``<c.LocalHost.cgroup_parent>-models`` with the profile's CPU and memory limits
   (SECURITY rule 6), and ``python -m hub_ext.runtime.modelserver``
   bound to 127.0.0.1 on a free port, joined to the cgroup and switched to the
   account between fork and exec, with an environment built from nothing (the
   version's ``env``, ``HOME``, the environment's ``PATH``: no secret of the
   deployer can leak, SECURITY rule 8);
5. ``_until_healthy``: ``GET /health`` until 200; a server that reports a
   failed load, exits, or is not ready in time fails the version with the
   server's own reason, and everything started is removed.

Each replica then has a *supervisor* task: it routes to the replica only
while ``/health`` answers (:meth:`LocalBackend.endpoints`), and restarts one
that exits (a crash, the OOM killer, or the server's own recycle after a
request timed out, exit status 75) or stops answering, with exponential
backoff (none after a recycle, which is expected). Scaling adds replicas
before it removes any, and a removed replica leaves the endpoints before its
SIGTERM, so no request meets a closed port.

**Replicas outlive a deployer that dies** (a crash, ``kill -9``, the OOM
killer) and are adopted by the next one, so a deployer restart costs the
models no restart and no lost request. Each running version has a record in
the runtime folder (``<key>.json``, the service's, mode 0600): the replicas'
pids with their start times (a pid reused by another process is not taken
for the replica), ports, cgroups and GPUs, the version's folder and the
secret the replicas answer to. A replica writes its output to a FIFO of its
own in the runtime folder (``<cgroup>.out``), opened read-write by the
replica, so it never meets a closed pipe while no deployer reads: lines wait
in the pipe (up to 1 MiB) and the next deployer writes them to the version's
log. At start, :meth:`LocalBackend.recover` takes each recorded replica of a
version the database still wants whose process is the recorded one and that
answers ``GET /health`` with 200; it serves at once
(:meth:`LocalBackend.endpoints`), and :meth:`LocalBackend.start` then puts it
under a supervisor without restarting it. Everything else under
``cgroup_parent`` and in the runtime folder (replicas not recorded, not
healthy, or of a version no longer wanted) is killed and removed. A clean
stop of the deployer (SIGTERM, Ctrl-C of the hub) stops every replica as
before. **Each deployer process on a machine needs its own**
``cgroup_parent`` and ``runtime_dir``: the recovery cannot tell another live
deployer's replicas from a dead one's.

Rejected alternatives: loading models in the deployer's own process (a model
is code: SECURITY rule 5), one process serving several owners' models (same
rule), Unix sockets instead of TCP ports (the model server's contract binds a
host and port). **Replicas listen on 127.0.0.1**: other accounts on this
machine can reach a replica's port without the deployer's authorization, as
they can reach other local services; use the Kubernetes backend, whose
NetworkPolicy admits only the deployer, where local users must not.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import json
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psutil
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

from hub_ext.environments.catalog import BuiltEnvironment
from hub_ext.host.cgroups import CgroupDriver
from hub_ext.host.gpus import GpuAllocator, GpuUnavailable
from hub_ext.host.local import UsesLocalHost, deprecated_help
from hub_ext.host.localproc import (
    kill_cgroup,
    kill_tree,
    oom_kills,
    process_environment,
)
from hub_ext.host.process import start_time
from hub_ext.profiles.model import Profile
from hub_ext.profiles.quantities import format_memory
from hub_ext.runtime.modelserver.contract import (
    REPLICA_SECRET_ENV,
    REPLICA_SECRET_HEADER,
    options_environment,
)

from ..common.scrub import Scrubber
from .backend import MODEL_SERVER_MODULE, Backend, DeployFailed, VersionSpec, model_server_args

#: The model server's exit status after a request timed out (EX_TEMPFAIL): restart at once.
RECYCLE_EXIT = 75
#: Lines of a replica's own output kept in memory, for the reason of a failed start.
TAIL_LINES = 40
#: The most of a model server's reason shown to the owner.
MAX_REASON = 2000
#: A longer line of a model server's output is cut in the log.
MAX_LINE = 16 * 2**10
#: Name of the training summary in a version's private folder.
SUMMARY_NAME = "training-summary.json"
#: The copy of the model the first replica downloads, in the version's private folder.
MODEL_CACHE = "model"
#: A replica's output FIFO holds this much while no deployer reads it (Linux's default
#: maximum for a pipe; a replica that prints more waits for the next deployer).
PIPE_BYTES = 2**20
#: ``fcntl`` command that sets a pipe's size (Linux; not in Python's fcntl before 3.10).
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def _data_dir() -> Path:
    return Path(os.environ.get("SHIPYARD_DATA_DIR") or ".shipyard").resolve()


# ------------------------------------------------------------------ the log


class VersionLog:
    """What a version's replicas print, each line stamped and marked with its replica.

    One file per version, ``<key>.log`` in the service's log folder, opened by
    the service (never through a link) and appended to across restarts. When
    it passes ``limit`` bytes it becomes ``<key>.log.1`` (replacing the one
    before) and a new file starts: at most twice the limit per version is kept,
    and the newest lines always are.
    """

    def __init__(self, path: Path, limit: int, secrets: Mapping[str, str] | None = None):
        self.path = path
        self.limit = max(1024, limit)
        # the replicas' secrets never reach the file (nor the tail a failure shows)
        self.scrub = Scrubber(secrets or {}).text
        self.file = None
        self._open()

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.path, flags, 0o600)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            os.close(fd)
            raise DeployFailed(f"The log {self.path} is not a plain file of its own; remove it.")
        self.file = os.fdopen(fd, "ab", buffering=0)
        self.size = info.st_size

    def line(self, source: str, text: str) -> None:
        """Append one line from ``source`` (``r0``, ``r1``… or ``shipyard``)."""
        if self.file is None:
            return
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        data = f"{stamp} {source} | {text}\n".encode("utf-8", "replace")
        if self.size + len(data) > self.limit:
            self.file.close()
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            self._open()
        self.file.write(data)
        self.size += len(data)

    def note(self, text: str) -> None:
        """A line of the backend's own (starts, exits, restarts)."""
        self.line("shipyard", text)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def read_tail(path: Path, lines: int = 100, chunk: int = 64 * 2**10) -> str:
    """The last ``lines`` lines of a version log (never following a link)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - chunk))
        text = f.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


class _Output(asyncio.Protocol):
    """A replica's output (its FIFO), line by line, into the version log and a short tail.

    ``ended`` is set when no process writes to the FIFO any more (the replica and
    every process it started have exited) and every line has been written.
    """

    def __init__(self, log: VersionLog, source: str):
        loop = asyncio.get_running_loop()
        self.log = log
        self.source = source
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.ended = loop.create_future()
        self._partial = bytearray()

    def data_received(self, data: bytes) -> None:
        self._partial += data
        while b"\n" in self._partial or len(self._partial) > MAX_LINE:
            line, sep, rest = self._partial.partition(b"\n")
            if not sep:
                line, rest = self._partial[:MAX_LINE], self._partial[MAX_LINE:]
            self._partial = bytearray(rest)
            self._emit(bytes(line))

    def _emit(self, raw: bytes) -> None:
        text = self.log.scrub(raw.decode("utf-8", "replace").rstrip("\r"))
        self.tail.append(text)
        self.log.line(self.source, text)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._partial:
            self._emit(bytes(self._partial))
            self._partial.clear()
        if not self.ended.done():
            self.ended.set_result(None)


def _read_older_start_time(replica: dict) -> None:
    """A replica record's ``started`` as an older deployer wrote it, in today's form.

    Older records hold psutil's ``create_time`` (seconds since the epoch, a float) where
    they now hold the kernel's start time of the process (:func:`start_time`). A float
    that names the process running under the pid becomes that process's start time, so
    an upgraded deployer adopts (or stops) the replicas an older one left serving;
    anything else becomes ``""``, which matches no process.
    """
    started = replica.get("started")
    if not isinstance(started, float):
        return
    try:
        pid = int(replica["pid"])
        proc = psutil.Process(pid)
        same = proc.status() != psutil.STATUS_ZOMBIE and abs(proc.create_time() - started) < 0.01
    except (psutil.Error, KeyError, TypeError, ValueError):
        same = False
    replica["started"] = (start_time(pid) or "") if same else ""


class _Process:
    """A replica's model server process, started here or adopted, watched through a pidfd.

    ``exited`` is set when it ends; ``returncode`` is its exit status when this
    deployer started it (an adopted process is another's child: None).
    """

    def __init__(self, pid: int, started: str, popen: subprocess.Popen | None = None):
        self.loop = asyncio.get_running_loop()
        self.pid, self.started, self.popen = pid, started, popen
        self.exited = self.loop.create_future()
        self.returncode: int | None = None
        self._fd: int | None = None
        self._poll: asyncio.TimerHandle | None = None
        try:
            self._fd = os.pidfd_open(pid)
        except ProcessLookupError:  # gone already
            self._done()
            return
        except OSError:  # no pidfd (Linux before 5.3): checked 5 times a second
            self._check()
            return
        if popen is None and start_time(pid) != started:  # the pid is another process's now
            self._done()
            return
        self.loop.add_reader(self._fd, self._done)

    def _check(self) -> None:
        gone = self.popen.poll() is not None if self.popen else start_time(self.pid) is None
        if gone or (self.popen is None and start_time(self.pid) != self.started):
            self._done()
        else:
            self._poll = self.loop.call_later(0.2, self._check)

    def _done(self) -> None:
        self.close()
        if self.popen is not None:
            self.returncode = self.popen.poll()  # reaps it
        if not self.exited.done():
            self.exited.set_result(None)

    def close(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        if self._fd is not None:
            with contextlib.suppress(Exception):  # of a closed event loop
                self.loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None


# ------------------------------------------------------------------ health


async def get_health(port: int, timeout: float) -> tuple[int, dict]:
    """``GET /health`` of a replica: its status and JSON body; ``(0, {})`` when it does not answer.

    A dozen lines of HTTP/1.0 rather than an HTTP client: the supervisors
    poll every replica, and a shared client's connection limit would queue
    one replica's check behind another's.
    """
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            await writer.drain()
            response = b""
            while len(response) < 64 * 2**10 and (chunk := await reader.read(16 * 2**10)):
                response += chunk
    except (OSError, TimeoutError):
        return 0, {}
    finally:
        if writer is not None:
            writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0, {}
    try:
        data = json.loads(body)
    except ValueError:
        data = {}
    return status, data if isinstance(data, dict) else {}


# ------------------------------------------------------------------ state


@dataclass(eq=False)
class _Version:
    """What the backend knows about one running version."""

    spec: VersionSpec
    built: BuiltEnvironment
    user: pwd.struct_passwd
    folder: Path
    log: VersionLog
    replicas: dict[int, _Replica] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: set by :meth:`LocalBackend.stop`: out of the endpoints at once
    stopped: bool = False
    #: set once every replica is gone and the cgroups are removed
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    #: what the replicas answer to (their ports are reachable by every local account)
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @property
    def summary(self) -> Path | None:
        path = self.folder / SUMMARY_NAME
        return path if self.spec.training_summary is not None else None


@dataclass(eq=False)
class _Replica:
    """One model server process and the task that supervises it."""

    version: _Version
    index: int
    cgroup: str
    gpus: list[str] = field(default_factory=list)
    port: int = 0
    process: _Process | None = None
    protocol: _Output | None = None
    reader: asyncio.ReadTransport | None = None
    healthy: bool = False
    stopping: bool = False
    restarts: int = 0
    task: asyncio.Task | None = None
    #: the outcome of the first start: None (healthy) or a DeployFailed
    first: asyncio.Future = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    @property
    def source(self) -> str:
        return f"r{self.index}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        if self.process is None or self.process.exited.done():
            return None
        return self.process.pid

    def record(self) -> dict:
        """What the next deployer needs to adopt this replica."""
        return {
            "index": self.index,
            "cgroup": self.cgroup,
            "pid": self.process.pid,
            "started": self.process.started,
            "port": self.port,
            "gpus": self.gpus,
        }


@dataclass
class _Found:
    """A version's replicas left by an earlier deployer that still serve: adopted at its start."""

    key: str
    account: str
    folder: Path
    secret: str
    replicas: list[dict]

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{r['port']}" for r in self.replicas]


# ------------------------------------------------------------------ backend


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
        self._versions: dict[str, _Version] = {}
        #: replicas an earlier deployer left serving, by version key, until start adopts them
        self._found: dict[str, _Found] = {}
        self._driver: CgroupDriver | None = None
        self._allocator: GpuAllocator | None = None

    @property
    def run_as_root(self) -> bool:
        return self.local_host.run_as_root

    @property
    def driver(self) -> CgroupDriver:
        if self._driver is None:
            self._driver = self.local_host.open_driver(
                self.cgroup_parent,
                "No writable cgroup hierarchy: model replicas get per-process rlimits "
                "and no CPU limit.",
            )
        return self._driver

    @property
    def allocator(self) -> GpuAllocator:
        if self._allocator is None:
            self._allocator = GpuAllocator(self.local_host.gpu_devices)
        return self._allocator

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
        return not (folder / MODEL_CACHE / "MLmodel").is_file()

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
        version = await self._prepare(spec)
        self._versions[spec.key] = version
        try:
            async with version.lock:
                version.log.note(f"starting {spec.replicas} replica(s) of {spec.display_name}")
                await self._add_replicas(version, spec.replicas)
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
                await self._add_replicas(version, spec.replicas - len(live))
            elif spec.replicas < len(live):
                version.log.note(f"scaling from {len(live)} to {spec.replicas} replica(s)")
                surplus = [version.replicas[i] for i in live[spec.replicas :]]
                await asyncio.gather(*(self._stop_replica(r, self.stop_grace) for r in surplus))

    async def stop(self, key: str, grace: float = 20) -> None:
        found = self._found.pop(key, None)
        if found is not None:
            await self._stop_found(found, grace)
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

        A replica is kept when its version's record (see the module docstring)
        names it, its pid is still the recorded process (same start time) and
        it answers ``GET /health`` with 200; it serves from now on
        (:meth:`endpoints`), and :meth:`start` of its version adopts it.
        Everything else under ``cgroup_parent`` and in the runtime folder is
        killed and removed: replicas of versions no longer wanted, ones that do
        not answer, processes no record names, and their folders.
        """
        records = await asyncio.to_thread(self._read_records)
        found: dict[str, _Found] = {}
        for record in records:
            try:
                item = _Found(
                    key=record["key"],
                    account=record["account"],
                    folder=Path(record["folder"]),
                    secret=record["secret"],
                    replicas=[],
                )
                replicas = list(record["replicas"])
            except (KeyError, TypeError):
                continue
            if item.key not in wanted:
                continue
            checks = await asyncio.gather(*(self._still_serving(r) for r in replicas))
            item.replicas = [r for r, ok in zip(replicas, checks, strict=True) if ok]
            if item.replicas:
                found[item.key] = item
        removed = await asyncio.to_thread(self._remove_leftovers, records, found)
        self._found.update(found)
        if found:
            self.log.info(
                "Adopting %d replica(s) of %d version(s) left serving by an earlier deployer",
                sum(len(f.replicas) for f in found.values()),
                len(found),
            )
        if removed:
            self.log.warning(
                "Removed %d leftovers of an earlier deployer: %s", len(removed), ", ".join(removed)
            )

    async def _still_serving(self, replica: dict) -> bool:
        try:
            pid, started, port = (
                int(replica["pid"]),
                str(replica["started"]),
                int(replica["port"]),
            )
        except (KeyError, TypeError, ValueError):
            return False
        if start_time(pid) != started:
            return False
        status, _ = await get_health(port, self.health_timeout)
        return status == 200

    def _read_records(self) -> list[dict]:
        runtime = Path(self.runtime_dir)
        if not runtime.is_dir() or runtime.is_symlink() or not self._owned(runtime):
            return []
        records = []
        for path in runtime.glob("*.json"):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                with os.fdopen(fd, "rb") as f:
                    if os.fstat(f.fileno()).st_uid != os.geteuid():
                        continue
                    record = json.loads(f.read())
            except (OSError, ValueError):
                continue
            if isinstance(record, dict):
                for replica in record.get("replicas") or ():
                    if isinstance(replica, dict):
                        _read_older_start_time(replica)
                records.append(record)
        return records

    def _remove_leftovers(self, records: list[dict], found: Mapping[str, _Found]) -> list[str]:
        """Kill and remove what ``found`` does not keep (in a thread: it waits for deaths)."""
        kept_cgroups = {r["cgroup"] for f in found.values() for r in f.replicas}
        kept_files = {f"{f.key}.json" for f in found.values()} | {
            f.folder.name for f in found.values()
        }
        kept_files |= {f"{name}.out" for name in kept_cgroups}
        names: set[str] = set()
        # recorded replicas not kept: killed by pid too, for a driver without cgroups
        for record in records:
            for replica in record.get("replicas") or ():
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    if replica["cgroup"] in kept_cgroups:
                        continue
                    if start_time(int(replica["pid"])) == str(replica["started"]):
                        kill_tree(int(replica["pid"]))
                        names.add(replica["cgroup"])
        if self.driver.enforces_total:
            cgroups: set[str] = set()
            for directory in self.driver.directories("probe"):
                parent = directory.parent
                if parent.is_dir():
                    cgroups.update(p.name for p in parent.iterdir() if p.is_dir())
            for name in sorted(cgroups - kept_cgroups):
                self.driver.remove(name, self.local_host.cleanup_timeout)
                names.add(name)
        runtime = Path(self.runtime_dir)
        if runtime.is_dir() and not runtime.is_symlink() and self._owned(runtime):
            for entry in runtime.iterdir():
                if entry.name in kept_files:
                    continue
                names.add(entry.name)
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, True)
                else:
                    entry.unlink(missing_ok=True)
        return sorted(names)

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
            runtime = Path(self.runtime_dir)
            with contextlib.suppress(OSError):  # not ours, or a folder still in it
                if runtime.is_dir() and not runtime.is_symlink() and self._owned(runtime):
                    runtime.rmdir()

        await asyncio.to_thread(tidy)

    # ------------------------------------------------------- for the service

    def log_path(self, key: str) -> Path:
        """The version's log file (it may not exist: never started here)."""
        return Path(self.log_dir) / f"{key}.log"

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

    # --------------------------------------------------------- the steps

    async def _prepare(self, spec: VersionSpec) -> _Version:
        built = self._find_environment(spec.profile)
        user = await self._account(spec.owner)
        log_dir = Path(self.log_dir)
        try:
            await asyncio.to_thread(log_dir.mkdir, 0o700, True, True)
            log = await asyncio.to_thread(
                VersionLog, self.log_path(spec.key), self.max_log_bytes, spec.secrets
            )
        except OSError as e:
            raise DeployFailed(f"Cannot open the version's log in {log_dir}: {e}") from None
        try:
            folder = await asyncio.to_thread(self._private_folder, spec, user)
        except BaseException:
            log.close()
            raise
        return _Version(spec, built, user, folder, log)

    async def _adopt(self, spec: VersionSpec, found: _Found) -> None:
        """Put the replicas :meth:`recover` found serving under supervision, as started here.

        They keep serving throughout: the version replaces ``found`` in one step.
        Replicas that cannot be adopted (another account's, a folder that is
        gone) are stopped, and the version starts as usual.
        """
        built = self._find_environment(spec.profile)
        user = await self._account(spec.owner)
        folder = found.folder
        if (
            user.pw_name != found.account
            or folder.parent != Path(self.runtime_dir)
            or folder.is_symlink()
            or not folder.is_dir()
        ):
            self._found.pop(spec.key, None)
            await self._stop_found(found, self.stop_grace)
            return
        log_dir = Path(self.log_dir)
        try:
            await asyncio.to_thread(log_dir.mkdir, 0o700, True, True)
            log = await asyncio.to_thread(
                VersionLog, self.log_path(spec.key), self.max_log_bytes, spec.secrets
            )
        except OSError as e:
            raise DeployFailed(f"Cannot open the version's log in {log_dir}: {e}") from None
        version = _Version(spec, built, user, folder, log, secret=found.secret)
        for record in found.replicas:
            replica = _Replica(version, int(record["index"]), str(record["cgroup"]))
            replica.port = int(record["port"])
            replica.gpus = [str(g) for g in record.get("gpus") or ()]
            self.allocator.restore(replica.cgroup, replica.gpus)
            replica.process = _Process(int(record["pid"]), str(record["started"]))
            try:
                await self._read_output(replica)
            except OSError as e:  # its FIFO is gone: its lines are lost, it serves on
                self.log.warning("No output of adopted replica %s: %s", replica.cgroup, e)
            replica.healthy = True
            replica.first.set_result(None)
            version.replicas[replica.index] = replica
        self._versions[spec.key] = version
        self._found.pop(spec.key, None)
        for replica in version.replicas.values():
            replica.task = asyncio.create_task(self._supervise(replica, adopted=True))
        self._save_record(version)
        pids = ", ".join(f"{r.source} pid {r.process.pid}" for r in version.replicas.values())
        version.log.note(f"adopted {len(version.replicas)} replica(s) still serving: {pids}")

    async def _stop_found(self, found: _Found, grace: float) -> None:
        """Stop replicas found serving that were never adopted: SIGTERM, ``grace``, then killed."""
        procs = []
        for record in found.replicas:
            with contextlib.suppress(psutil.Error, KeyError, TypeError, ValueError):
                proc = psutil.Process(int(record["pid"]))
                if start_time(proc.pid) == str(record["started"]):
                    proc.terminate()
                    procs.append(proc)

        def finish() -> None:
            psutil.wait_procs(procs, timeout=grace)
            for record in found.replicas:
                pid = int(record["pid"])
                if start_time(pid) == str(record["started"]):
                    kill_tree(pid)
                self.driver.remove(record["cgroup"], self.local_host.cleanup_timeout)
                (Path(self.runtime_dir) / f"{record['cgroup']}.out").unlink(missing_ok=True)
            shutil.rmtree(found.folder, True)
            self._record_path(found.key).unlink(missing_ok=True)

        await asyncio.to_thread(finish)

    def _record_path(self, key: str) -> Path:
        return Path(self.runtime_dir) / f"{key}.json"

    def _save_record(self, version: _Version) -> None:
        """The version's record, for a deployer that starts after this one died (mode 0600).

        Written whole to a new file, then renamed over the old one: a crash
        mid-write leaves the previous record.
        """
        path = self._record_path(version.spec.key)
        replicas = [r.record() for _, r in sorted(version.replicas.items()) if r.pid is not None]
        if not replicas:
            path.unlink(missing_ok=True)
            return
        record = {
            "key": version.spec.key,
            "account": version.user.pw_name,
            "folder": str(version.folder),
            "secret": version.secret,
            "replicas": replicas,
        }
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            with os.fdopen(os.open(temporary, flags, 0o600), "w", encoding="utf-8") as f:
                json.dump(record, f)
            os.replace(temporary, path)
        except OSError as e:
            temporary.unlink(missing_ok=True)
            self.log.warning("Could not record the replicas of %s: %s", version.spec.key, e)

    def _find_environment(self, profile: Profile) -> BuiltEnvironment:
        return self.local_host.environment(profile, DeployFailed)

    async def _account(self, owner: str) -> pwd.struct_passwd:
        """The owner's account (as root), or the service's own user."""
        return await self.local_host.account(owner, DeployFailed)

    @staticmethod
    def _owned(path: Path) -> bool:
        info = path.lstat()
        return info.st_uid == os.geteuid() and not info.st_mode & 0o022

    def _private_folder(self, spec: VersionSpec, user: pwd.struct_passwd) -> Path:
        """The version's folder, the training summary in it; the owner's once complete."""
        runtime = Path(self.runtime_dir)
        try:
            runtime.mkdir(mode=0o711, parents=True)
        except FileExistsError:
            if runtime.is_symlink() or not runtime.is_dir() or not self._owned(runtime):
                raise DeployFailed(
                    f"{runtime} is not a folder of the deployer's own; an admin removes it "
                    "or sets c.LocalBackend.runtime_dir."
                ) from None
        folder = Path(tempfile.mkdtemp(prefix=f"{spec.key}-", dir=runtime))  # 0700, ours
        try:
            if spec.training_summary is not None:
                # written while the folder is still the service's: the owner cannot have
                # put a link in its place
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                fd = os.open(folder / SUMMARY_NAME, flags, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    if self.run_as_root:
                        os.fchown(f.fileno(), user.pw_uid, user.pw_gid)
                    json.dump(spec.training_summary, f)
            if self.run_as_root:
                os.chown(folder, user.pw_uid, user.pw_gid, follow_symlinks=False)
        except BaseException:
            shutil.rmtree(folder, True)
            raise
        return folder

    async def _add_replicas(self, version: _Version, count: int) -> None:
        """Start ``count`` more replicas; all healthy, or none of them kept."""
        added: list[_Replica] = []
        index = 0
        for _ in range(count):
            while index in version.replicas:
                index += 1
            replica = _Replica(version, index, f"{version.spec.key}-r{index}")
            version.replicas[index] = replica
            added.append(replica)
        try:
            for replica in added:
                replica.gpus = self._allocate_gpus(replica)
                replica.task = asyncio.create_task(self._supervise(replica))
            outcomes = await asyncio.gather(
                *(asyncio.shield(r.first) for r in added), return_exceptions=True
            )
        except BaseException:
            await asyncio.gather(*(self._stop_replica(r, 0) for r in added))
            raise
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        if failed:
            await asyncio.gather(*(self._stop_replica(r, 0) for r in added))
            raise failed[0]

    def _allocate_gpus(self, replica: _Replica) -> list[str]:
        try:
            return self.allocator.allocate(replica.cgroup, replica.version.spec.profile.gpu)
        except GpuUnavailable as e:
            raise DeployFailed(str(e)) from None

    # --------------------------------------------------------- supervision

    async def _supervise(self, replica: _Replica, adopted: bool = False) -> None:
        """Start the replica (unless ``adopted``: it serves already), then keep it serving:
        restart it whenever it exits or hangs."""
        loop = asyncio.get_running_loop()
        log = replica.version.log
        backoff = self.restart_backoff
        while not replica.stopping:
            code = None
            try:
                if not adopted:
                    await self._launch_until_healthy(replica)
                adopted = False
            except DeployFailed as e:
                await self._end(replica)
                if not replica.first.done():
                    replica.first.set_exception(e)
                    return
                log.note(f"{replica.source}: restart failed: {e.reason}")
            except Exception as e:
                await self._end(replica)
                if not replica.first.done():
                    replica.first.set_exception(e)
                    return
                self.log.exception("Restarting replica %s failed", replica.cgroup)
            else:
                if not replica.first.done():
                    replica.first.set_result(None)
                    log.note(f"{replica.source}: serving on port {replica.port}")
                replica.healthy = True
                since = loop.time()
                code = await self._watch(replica)
                replica.healthy = False
                await self._end(replica)
                if replica.stopping:
                    return
                if loop.time() - since >= self.restart_backoff_max:
                    backoff = self.restart_backoff
                log.note(f"{replica.source}: {self._exit_text(replica, code)}; restarting")
                self.log.warning(
                    "Replica %s of %s: %s; restarting",
                    replica.index,
                    replica.version.spec.display_name,
                    self._exit_text(replica, code),
                )
            delay = 0.0 if code == RECYCLE_EXIT else backoff
            if code != RECYCLE_EXIT:
                backoff = min(max(backoff * 2, self.restart_backoff), self.restart_backoff_max)
            await asyncio.sleep(delay)
            replica.restarts += 1

    async def _launch_until_healthy(self, replica: _Replica) -> None:
        # a port found free may be taken before the server binds it: try another
        for attempt in range(3):
            await self._launch(replica)
            try:
                await self._until_healthy(replica)
                return
            except DeployFailed:
                lost_port = any(
                    "address already in use" in t.lower() for t in replica.protocol.tail
                )
                if not lost_port or attempt == 2:
                    raise
            await self._end(replica)

    async def _launch(self, replica: _Replica) -> None:
        """The replica's cgroup and model server process."""
        version = replica.version
        spec = version.spec
        replica.port = self._free_port()
        await self._make_cgroup(replica.cgroup, spec.profile, replica.gpus)
        options = model_server_args(spec, "127.0.0.1", replica.port)
        if version.summary is not None:
            options += ["--training-summary", str(version.summary)]
        # the first replica downloads the model as the owner; restarts load that copy
        options += ["--model-cache", str(version.folder / MODEL_CACHE)]
        # the options in the environment, which only the owner reads: every account reads
        # a command line, and these name the owner's run, model and port
        env = self._environment(version, replica.gpus)
        env.update(options_environment(options))
        argv = [str(version.built.python), "-m", MODEL_SERVER_MODULE]
        # the replica outlives this process (no PR_SET_PDEATHSIG): a deployer that dies is
        # replaced by one that adopts it (see the module docstring)
        reader, output = await asyncio.to_thread(self._make_output, replica)
        try:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(version.folder),
                preexec_fn=self._preexec(replica.cgroup, version.user),
                start_new_session=True,
            )
        except (OSError, subprocess.SubprocessError) as e:
            os.close(reader)
            raise DeployFailed(f"Could not start the model server: {e}") from None
        finally:
            os.close(output)
        replica.process = _Process(popen.pid, start_time(popen.pid) or "", popen)
        await self._read_output(replica, reader)
        self._save_record(version)
        version.log.note(
            f"{replica.source}: started pid {popen.pid} on port {replica.port} "
            f"as {version.user.pw_name} in {replica.cgroup}"
        )

    def _output_path(self, replica: _Replica) -> Path:
        return Path(self.runtime_dir) / f"{replica.cgroup}.out"

    def _make_output(self, replica: _Replica) -> tuple[int, int]:
        """The replica's FIFO, made anew: this deployer's end, and the replica's (read-write).

        Opened read-write, the replica's end keeps the FIFO open while no
        deployer reads it, so the replica never writes to a closed pipe. Ours is
        open before the replica starts: what a replica that exits at once wrote
        is still there to read.
        """
        path = self._output_path(replica)
        path.unlink(missing_ok=True)
        os.mkfifo(path, 0o600)
        flags = os.O_NOFOLLOW | os.O_CLOEXEC
        reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK | flags)
        writer = os.open(path, os.O_RDWR | flags)
        with contextlib.suppress(OSError):  # the default (64 KiB) where the host caps it lower
            fcntl.fcntl(writer, F_SETPIPE_SZ, PIPE_BYTES)
        return reader, writer

    async def _read_output(self, replica: _Replica, fd: int | None = None) -> None:
        """Read the replica's FIFO (``fd``, else opened by its path) into the version's log."""
        if fd is None:
            flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(self._output_path(replica), flags)
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(f"{self._output_path(replica)} is not a FIFO")
        protocol = _Output(replica.version.log, replica.source)
        loop = asyncio.get_running_loop()
        replica.reader, _ = await loop.connect_read_pipe(
            lambda: protocol, os.fdopen(fd, "rb", buffering=0)
        )
        replica.protocol = protocol

    def _preexec(self, cgroup: str, user: pwd.struct_passwd):
        """Between fork and exec: join the cgroup, then become the owner (as root).

        As :func:`hub_ext.host.localproc.make_preexec`, without its death with the
        parent: a replica outlives the deployer, to be adopted by the next one.
        """
        return self.local_host.preexec(self.driver, cgroup, user, dies_with_parent=False)

    async def _until_healthy(self, replica: _Replica) -> None:
        """Poll ``/health`` until 200; DeployFailed with the reason otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        exited = replica.process.exited
        pause = 0.05
        while True:
            if exited.done():
                # its last lines, which say why
                await asyncio.wait({replica.protocol.ended}, timeout=1)
                raise DeployFailed(self._failure_reason(replica))
            left = deadline - loop.time()
            status, body = await get_health(replica.port, min(self.health_timeout, max(left, 0.1)))
            if status == 200:
                return
            if body.get("status") == "failed":
                message = str(body.get("message") or "the model failed to load")
                raise DeployFailed(message[:MAX_REASON])
            if left <= 0:
                raise DeployFailed(
                    f"The model server was not ready after {self.start_timeout:g} seconds "
                    f"(GET /health: {status or 'no answer'}). Last lines:\n"
                    + "\n".join(list(replica.protocol.tail)[-10:])
                )
            await asyncio.wait({exited}, timeout=min(pause, max(left, 0)))
            # a loopback GET is cheap, and every pause is time the version is not yet serving
            pause = min(pause * 2, 0.2)

    async def _watch(self, replica: _Replica) -> int | None:
        """Until the replica exits (or is killed for missing health checks); its exit status."""
        exited = replica.process.exited
        missed = 0
        while True:
            done, _ = await asyncio.wait({exited}, timeout=self.health_interval)
            if done:
                return replica.process.returncode
            status, _ = await get_health(replica.port, self.health_timeout)
            if exited.done() or replica.stopping:
                continue
            if status == 200:
                missed = 0
                replica.healthy = True
                continue
            missed += 1
            replica.healthy = False  # not routed to while it does not answer
            if missed >= self.health_failures:
                replica.version.log.note(
                    f"{replica.source}: missed {missed} health checks; killing it"
                )
                await self._kill(replica)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(exited), self.local_host.cleanup_timeout)
                return replica.process.returncode

    def _failure_reason(self, replica: _Replica) -> str:
        code = replica.process.returncode
        text = self._exit_text(replica, code)
        tail = "\n".join(list(replica.protocol.tail)[-10:]).strip()
        reason = f"The model server {text} before it was ready"
        return (f"{reason}:\n{tail}" if tail else f"{reason}.")[:MAX_REASON]

    def _exit_text(self, replica: _Replica, code: int | None) -> str:
        if oom_kills(self.driver, replica.cgroup):
            limit = replica.version.spec.profile.mem_limit_bytes
            memory = f"memory limit of {format_memory(limit)}" if limit else "memory limit"
            return f"was killed for using more than the profile's {memory}"
        if code == RECYCLE_EXIT:
            return "exited after a request timed out (recycled)"
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return f"was killed by {signal.Signals(-code).name}"
        if code is None:  # adopted: another process's child, whose status this one cannot read
            return "exited"
        return f"exited with status {code}"

    # ------------------------------------------------------ processes, cgroups

    def _free_port(self) -> int:
        used = {r.port for v in self._versions.values() for r in v.replicas.values() if r.port}
        if self.port_range:
            low, high = self.port_range
            candidates = [p for p in range(low, high + 1) if p not in used]
            random.shuffle(candidates)
        else:
            candidates = [0] * 20
        for port in candidates:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                found = s.getsockname()[1]
            if found not in used:
                return found
        raise DeployFailed("No free port for a model server on 127.0.0.1 (port_range is full).")

    async def _make_cgroup(self, name: str, profile: Profile, gpus: list[str]) -> None:
        # one of that name is left by a restart, or by a deployer that died; the
        # replica's GPUs are the only ones its cgroup may open
        try:
            await self.local_host.make_cgroup(self.driver, name, profile, gpus)
        except OSError as e:
            raise DeployFailed(f"Could not create the replica's cgroup {name}: {e}") from None

    def _environment(self, version: _Version, gpus: list[str]) -> dict[str, str]:
        """The replica's whole environment, built from nothing: no variable of the service leaks."""
        spec = version.spec
        # the owner's secrets first: every variable the platform sets below wins over them
        env = dict(spec.secrets)
        env.update(spec.env)
        env.update(
            process_environment(
                version.user,
                version.built,
                spec.profile,
                gpus,
                extra={REPLICA_SECRET_ENV: version.secret},
            )
        )
        return env

    async def _kill(self, replica: _Replica) -> None:
        """Kill every process of the replica (its cgroup stays until :meth:`_end`)."""
        if self.driver.enforces_total:
            await asyncio.to_thread(
                kill_cgroup, self.driver, replica.cgroup, self.local_host.cleanup_timeout
            )
        elif replica.pid is not None:
            kill_tree(replica.pid)

    async def _end(self, replica: _Replica) -> None:
        """The replica's process is over: kill what is left, remove its cgroup."""
        replica.healthy = False
        process = replica.process
        if process is not None and not process.exited.done():
            await self._kill(replica)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.shield(process.exited), self.local_host.cleanup_timeout
                )
        if self.driver.enforces_total:
            await asyncio.to_thread(
                self.driver.remove, replica.cgroup, self.local_host.cleanup_timeout
            )
        else:
            self.driver.remove(replica.cgroup)
        if replica.protocol is not None:  # the last lines of a process that is gone
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(replica.protocol.ended), 1)
        if replica.reader is not None:
            with contextlib.suppress(Exception):  # of a closed event loop
                replica.reader.close()
            replica.reader = None
        if process is not None:
            process.close()
        self._output_path(replica).unlink(missing_ok=True)
        self._save_record(replica.version)

    async def _stop_replica(self, replica: _Replica, grace: float) -> None:
        """Out of the endpoints, SIGTERM, ``grace`` seconds, then killed; its cgroup removed."""
        replica.stopping = True
        replica.healthy = False
        task = replica.task
        if task is not None and not task.done():
            task.cancel()  # no restart; the process itself is not touched by this
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if not replica.first.done():
            replica.first.set_exception(DeployFailed("stopped before it was ready"))
            replica.first.exception()  # retrieved: nobody else may wait for it
        pid = replica.pid
        if pid is not None and grace > 0:
            replica.version.log.note(f"{replica.source}: stopping (SIGTERM)")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(replica.process.exited), grace)
        await self._end(replica)
        self.allocator.release(replica.cgroup)
        replica.version.replicas.pop(replica.index, None)
        if replica.process is not None:
            code = replica.process.returncode
            replica.version.log.note(f"{replica.source}: {self._exit_text(replica, code)}")

    async def _discard(self, version: _Version, grace: float = 0) -> None:
        """Stop every replica, remove the private folder, close the log; forget the version."""
        version.stopped = True
        try:
            await asyncio.gather(
                *(self._stop_replica(r, grace) for r in list(version.replicas.values()))
            )
        finally:
            await asyncio.to_thread(shutil.rmtree, version.folder, True)
            self._record_path(version.spec.key).unlink(missing_ok=True)
            version.log.note("stopped")
            version.log.close()
            if self._versions.get(version.spec.key) is version:
                del self._versions[version.spec.key]
            version.gone.set()
