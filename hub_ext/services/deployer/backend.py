"""What runs a model's replicas: the interface between the deployer and its backends.

The deployer service decides *what* should serve (desired state, in its
database) and routes traffic; a backend only starts, scales, watches and
stops the replicas of one model version (:class:`VersionSpec`) and says which
of them are healthy now (:meth:`Backend.endpoints`). It never writes to the
deployer's database, and it never loads a model: each replica is a model
server process (``python -m hub_ext.runtime.modelserver``, contract
section 1) that runs as the model's owner (SECURITY rule 5).

Two backends ship, selected by ``c.DeployerService.backend_class`` (entry
point group ``shipyard.deployer_backends``, STYLE rule 5):

- ``local``: processes on this machine as the owner's system account, in a
  cgroup with the profile's limits (:mod:`.local`);
- ``kubernetes``: a Deployment and a Service per version (:mod:`.kubernetes`).

Replicas that exit are restarted by the backend itself (supervision); the
deployer only reads :meth:`Backend.endpoints`.
"""

from __future__ import annotations

import hashlib
from abc import ABCMeta, abstractmethod
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from traitlets import MetaHasTraits
from traitlets.config import LoggingConfigurable

from hub_ext.host.slugs import user_slug
from hub_ext.profiles.model import Profile

from ..common.plugins import check_interface

#: The model server's module, run with the environment's Python (contract section 1).
MODEL_SERVER_MODULE = "hub_ext.runtime.modelserver"

#: Longest version key: a DNS label, so it can name Kubernetes objects as is.
KEY_MAX_LENGTH = 63

#: The backends Shipyard ships, by entry point name (what ``backend_class`` takes).
BACKENDS = {
    "local": "hub_ext.services.deployer.local:LocalBackend",
    "container": "hub_ext.services.deployer.local.containers:ContainerBackend",
    "kubernetes": "hub_ext.services.deployer.kubernetes:KubernetesBackend",
}


def version_key(owner: str, name: str, version: int) -> str:
    """Return the stable, collision-free key of one model version: ``<owner>--<name>-v<N>``.

    The owner part is :func:`hub_ext.host.slugs.user_slug`, which never contains
    ``--``; deployment names never contain ``--`` either (the API refuses
    them), so the first ``--`` separates the owner and the ``-v<N>`` suffix
    the version: two versions never share a key. A key past 63 characters
    keeps its prefix and gets an 8-hex-digit hash of the full key, so it
    still fits a DNS label.

    Examples
    --------
    >>> version_key("alice", "churn", 3)
    'alice--churn-v3'
    """
    owner_slug = user_slug(owner)
    key = f"{owner_slug}--{name}-v{version}"
    if len(key) <= KEY_MAX_LENGTH:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    tail = f"-{digest}-v{version}"
    room = KEY_MAX_LENGTH - len(owner_slug) - 2 - len(tail)
    return f"{owner_slug}--{name[:room].rstrip('-')}{tail}"


@dataclass(frozen=True)
class VersionSpec:
    """Everything a backend needs to run one model version.

    Attributes
    ----------
    owner : str
        The hub user who owns the deployment; replicas run as this user.
    name : str
        The deployment's name (a slug).
    version : int
        The version number, from 1.
    model_uri : str
        What the model server loads (``--model-uri``): a local directory, or a
        ``models:/``/``runs:/`` URI read through ``$MLFLOW_TRACKING_URI``.
    profile : hub_ext.profiles.model.Profile
        Resources (CPU, memory, GPU limits) and the environment the replicas use.
    replicas : int
        How many replicas should serve.
    env : Mapping[str, str]
        Extra environment of each replica: ``MLFLOW_TRACKING_URI`` and, when the
        replicas read the model through it (:meth:`Backend.needs_credentials`), the
        owner's short-lived ``MLFLOW_TRACKING_TOKEN`` (tracking access only), revoked
        once they no longer need it.
    secrets : Mapping[str, str]
        The owner's secrets the deployment names, by name, resolved for this
        start: environment variables of each local replica (the Kubernetes
        backend references the owner's Secret instead), scrubbed from the
        version's log. Never in ``repr``.
    training_summary : dict or None
        The training data's summary for drift (``--training-summary``).
    timeout_seconds : float
        The model server's per-request timeout (``--timeout``).
    max_body_bytes : int
        The model server's largest request body (``--max-body-bytes``).
    data_quality : bool
        Whether the model server checks and counts its inputs' data quality
        (``--data-quality``).
    data_quality_margin : float
        Share of the training range a value may lie outside it before it counts
        (``--data-quality-margin``).
    """

    owner: str
    name: str
    version: int
    model_uri: str
    profile: Profile
    replicas: int
    env: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    training_summary: dict[str, Any] | None = None
    timeout_seconds: float = 30
    max_body_bytes: int = 10 * 1024**2
    data_quality: bool = True
    data_quality_margin: float = 0.0

    @property
    def key(self) -> str:
        """The version's key (:func:`version_key`): names processes, cgroups and objects."""
        return version_key(self.owner, self.name, self.version)

    @property
    def display_name(self) -> str:
        """``owner/name/version``, the model server's ``--name``."""
        return f"{self.owner}/{self.name}/{self.version}"


def model_server_args(spec: VersionSpec, host: str, port: int) -> list[str]:
    """The model server's arguments every backend passes for ``spec`` (contract section 1).

    Parameters
    ----------
    spec : VersionSpec
        The version: its model, name, timeout and largest request body.
    host : str
        The address the server binds (``--host``).
    port : int
        The port it listens on (``--port``).

    Returns
    -------
    list of str
        The arguments after ``python -m`` :data:`MODEL_SERVER_MODULE`; a
        backend adds ``--training-summary`` and its own options.
    """
    args = [
        "--model-uri",
        spec.model_uri,
        "--host",
        host,
        "--port",
        str(port),
        "--name",
        spec.display_name,
        "--timeout",
        f"{spec.timeout_seconds:g}",
        "--max-body-bytes",
        str(spec.max_body_bytes),
    ]
    # only when not the default: a model server image older than these options still starts
    if not spec.data_quality:
        args += ["--data-quality", "off"]
    if spec.data_quality_margin:
        args += ["--data-quality-margin", f"{spec.data_quality_margin:g}"]
    return args


class DeployFailed(Exception):
    """A version could not start; ``reason`` says why, and is shown to its owner.

    Parameters
    ----------
    reason : str
        What went wrong (the model server's load error, a missing environment,
        a health check that timed out). Never contains secrets.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _BackendMeta(MetaHasTraits, ABCMeta):
    """Traits and abstract methods on one class (each alone is a metaclass)."""


class Backend(LoggingConfigurable, metaclass=_BackendMeta):
    """Starts, scales and stops the replicas of model versions.

    Subclasses implement every abstract method with the same kind (``async``
    or not) as here; one that does not fails when it is defined (STYLE rule 6).
    """

    _async_interface = ("start", "scale", "stop", "sweep", "close", "refresh_env")
    _sync_interface = ("endpoints", "needs_credentials")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        check_interface(cls, "Backend", cls._async_interface, cls._sync_interface)

    #: True where a replica reads its model through the tracking server at every start
    #: (no copy outlives a pod): the version's tracking token must then stay valid while
    #: the version runs, and the deployer renews it (:meth:`refresh_env`) before it
    #: expires. False where restarts load a copy kept on the machine (the local
    #: backend): the token is revoked once every replica loaded the model.
    keeps_credentials = False

    def needs_credentials(self, spec: VersionSpec) -> bool:
        """Whether the replicas of ``spec`` read their model through the tracking server.

        Not for a model directory on this machine (an absolute path); a backend that
        keeps a copy of the model (the local one) also says no while the copy exists.
        The deployer mints the owner's tracking token only when this says yes.
        """
        return not spec.model_uri.startswith("/")

    @property
    def start_seconds(self) -> float:
        """The longest a version's start may take here (its replicas loading the model).

        The deployer's tracking tokens live this long plus a margin by default
        (``c.DeployerService.tracking_token_seconds``).
        """
        return 300.0

    async def refresh_env(self, key: str, env: Mapping[str, str]) -> None:
        """Give the replicas of ``key`` that start from now on ``env`` (a renewed token).

        Only called where :attr:`keeps_credentials` is true; replicas that run
        keep theirs (they have read the model already).
        """

    @property
    def gpu_count(self) -> int | None:
        """How many GPUs replicas may have here; None where the backend does not know.

        A deployment asking for a profile that needs more is refused when it is made
        (``Profile.unavailable_reason``: "no GPU on this machine"), not failed later on
        an environment ``shipyard up`` skipped. None (the default, and Kubernetes: the
        cluster picks a node or says why not) checks nothing.
        """
        return None

    @abstractmethod
    async def start(self, spec: VersionSpec) -> None:
        """Start ``spec.replicas`` replicas; return when all answer ``GET /health`` with 200.

        Raises
        ------
        DeployFailed
            A replica could not start or never became healthy; everything this
            call started is cleaned up before it raises.
        """

    @abstractmethod
    def endpoints(self, key: str) -> list[str]:
        """Base URLs (``http://127.0.0.1:PORT``) of the healthy replicas of ``key`` now.

        Called on every routed request: it reads the backend's state, never
        does I/O. An unknown key has none.
        """

    def request_headers(self, key: str) -> Mapping[str, str]:
        """Headers every request to a replica of ``key`` carries (the replica's secret).

        The local backend's replicas listen on loopback, which every account of the
        machine reaches, so they answer only requests with their secret; on Kubernetes
        a NetworkPolicy admits only the deployer, and this is empty.
        """
        return {}

    @abstractmethod
    async def scale(self, spec: VersionSpec) -> None:
        """Run ``spec.replicas`` replicas of a started version, without downtime.

        New replicas are healthy before they are routed to; removed ones
        leave :meth:`endpoints` before they are stopped.
        """

    @abstractmethod
    async def stop(self, key: str, grace: float = 20) -> None:
        """Stop every replica of ``key``: SIGTERM, wait ``grace`` seconds, then kill.

        Removes what the version had (cgroups, objects). Stopping an unknown key does nothing.
        """

    @abstractmethod
    async def sweep(self) -> None:
        """At service start: remove what an earlier deployer process left running."""

    async def recover(self, wanted: Collection[str]) -> None:
        """At service start, before any :meth:`start`: what an earlier deployer left running.

        A backend that can adopts the replicas of the versions whose keys are in
        ``wanted`` that still serve (they are in :meth:`endpoints` from then on,
        and :meth:`start` of their version takes them over without a restart)
        and removes the rest. By default it removes everything (:meth:`sweep`),
        and :meth:`start` starts every version anew.
        """
        await self.sweep()

    @abstractmethod
    async def close(self) -> None:
        """At service stop: release the backend's resources (clients, watchers)."""
