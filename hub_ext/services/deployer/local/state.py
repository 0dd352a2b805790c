"""What the local backend knows about a running version and each of its replicas.

Plain data, shared by the backend's parts: :mod:`.versions` makes a
:class:`RunningVersion`, :mod:`.replicas` adds, supervises and stops its
:class:`Replica` objects, :mod:`.records` writes them down for the next deployer
and :mod:`.health` reads them. None of it survives the deployer; what must
survive is in the version's record (:mod:`.records`).
"""

from __future__ import annotations

import asyncio
import pwd
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from hub_ext.environments.catalog import BuiltEnvironment

from ..backend import VersionSpec
from .logs import ReplicaOutput, VersionLog
from .process import ReplicaProcess

#: Name of the training summary in a version's private folder.
SUMMARY_NAME = "training-summary.json"
#: The copy of the model the first replica downloads, in the version's private folder.
MODEL_CACHE = "model"


@dataclass(eq=False)
class RunningVersion:
    """What the backend knows about one running version."""

    spec: VersionSpec
    #: the profile's built environment (None in containers: the image is the environment)
    built: BuiltEnvironment | None
    user: pwd.struct_passwd
    folder: Path
    log: VersionLog
    replicas: dict[int, Replica] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: set by :meth:`LocalBackend.stop`: out of the endpoints at once
    stopped: bool = False
    #: set once every replica is gone and the cgroups are removed
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    #: what the replicas answer to (their ports are reachable by every local account)
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    #: the profile's environment image, when the replicas are containers
    image: str = ""

    @property
    def summary(self) -> Path | None:
        """The training summary the replicas read, when the version has one."""
        path = self.folder / SUMMARY_NAME
        return path if self.spec.training_summary is not None else None

    @property
    def model_cache(self) -> Path:
        """Where the first replica puts its copy of the model, and later ones load it."""
        return self.folder / MODEL_CACHE


@dataclass(eq=False)
class Replica:
    """One model server process and the task that supervises it."""

    version: RunningVersion
    index: int
    cgroup: str
    gpus: list[str] = field(default_factory=list)
    port: int = 0
    process: ReplicaProcess | None = None
    output: ReplicaOutput | None = None
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
        """How the version's log marks this replica's lines (``r0``, ``r1``…)."""
        return f"r{self.index}"

    @property
    def url(self) -> str:
        """Where the replica serves."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """Its process's pid while it runs; None before it starts and once it exited."""
        if self.process is None or self.process.exited.done():
            return None
        return self.process.pid
