"""LocalHost: how this machine runs a user's code as its owner, inside its profile's limits.

Three parts of Shipyard start users' code as local processes: the spawner
(:class:`~hub_ext.spawners.spawner.LocalProfileSpawner`, a server), the
scheduler's :class:`~hub_ext.services.scheduler.executors.local.LocalExecutor`
(a scheduled notebook) and the deployer's
:class:`~hub_ext.services.deployer.local.LocalBackend` (a model server
replica). The same account must own a user's server, runs and models, in the
same environments, under the same cgroup hierarchy and GPUs, so the settings
that decide this are one configurable class, declared once::

    c.LocalHost.system_user_prefix = "sy-"
    c.LocalHost.cgroup_parent = "jupyterhub"

and each of the three holds a :class:`LocalHost` (its ``local_host``) that it starts
processes through: :meth:`LocalHost.account` (the owner's account),
:meth:`LocalHost.environment` (the profile's built environment), then
:meth:`LocalHost.launch`, the one path that makes the process's cgroup and
starts it as its owner (:mod:`hub_ext.host.launch`): a server (output to the
hub's), a run (output piped back to the executor) and a replica (detached,
writing to a FIFO so that it outlives the deployer) alike.

**How the setting reaches the services.** The scheduler and the deployer are
processes of their own with their own traitlets config. The hub passes the
``LocalHost`` section of its config file on to every managed service it
starts, and each service loads it before its own config file and command
line, which may still override it for that service alone
(:mod:`hub_ext.host.passing`, which passes ``c.KubePlacement`` the same way).

**Deprecated names.** Before 0.16 each of the three declared these settings
itself (``c.LocalProfileSpawner.cgroup_parent``,
``c.LocalExecutor.system_user_prefix``, ``c.LocalBackend.environments_dir``...)
and their help asked the admin to keep them equal. Those names keep working
for one release: :class:`UsesLocalHost` declares them once, warns
(:func:`hub_ext.host.deprecation.warn_moved`) with the new name, and applies the
value to that part's host only. ``cgroup_parent`` stays each part's own
(servers in ``<parent>``, runs in ``<parent>-jobs``, replicas in
``<parent>-models``); setting it on the part is deprecated in the same way.
"""

from __future__ import annotations

import asyncio
import os
import pwd

from traitlets import Bool, CaselessStrEnum, Instance, Integer, List, Unicode, default, observe
from traitlets.config import Configurable, LoggingConfigurable

from hub_ext.environments.catalog import BuiltEnvironment, default_envs_dir
from hub_ext.host import instance, localproc
from hub_ext.host.cgroups import DRIVERS, CgroupDriver
from hub_ext.host.deprecation import MOVED_IN, warn_moved
from hub_ext.host.gpus import detect_gpus
from hub_ext.host.launch import Launched, LaunchRequest, launch
from hub_ext.host.usage import UsageLedger
from hub_ext.profiles.model import Profile


def deprecated_help(new: str, example: str = "", added: str = "") -> str:
    """The help of a setting that ``c.LocalHost.<new>`` replaced.

    ``example`` (the old form) and ``added`` (the release that added the old
    name) are for a class whose every setting's help must show them.
    """
    text = f"""
    Deprecated in {MOVED_IN}: use ``c.LocalHost.{new}``.

    ``c.LocalHost.{new}`` configures the spawner, the scheduler's executor and
    the deployer's backend alike. This name is still honoured for one release,
    for this class alone, with a warning.
    """
    if example:
        text += f"""
    Example (the old form)::

        {example}
    """
    if added:
        text += f"""
    .. versionadded:: {added}
    .. deprecated:: {MOVED_IN}
    """
    return text


class LocalHost(LoggingConfigurable):
    """This machine, as the spawner, the local executor and the local backend use it.

    One ``c.LocalHost.<setting>`` configures servers, scheduled runs and model
    replicas alike (the hub passes its section on to the services it starts).
    """

    placement = CaselessStrEnum(
        ["process", "container"],
        default_value="process",
        help="""
        How users' code runs on this machine: ``process`` or ``container``.

        ``process`` (the default): every server is a process of the user's
        account, in a cgroup with its profile's limits, on the Python of the
        profile's virtual environment (``shipyard env build``).
        ``container``: every server is a podman container from the profile's
        environment image (``shipyard image build ENV``), with the profile's limits
        as the container's, run as the user's account with their home at
        /home/jovyan, a read-only root, no capabilities and a network that reaches
        only the hub and the Shipyard services (``c.ContainerPlacement``,
        :mod:`hub_ext.host.containers`; docs/containers.md). Needs podman, runc
        and a hub running as root.

        The hub reads it to pick its spawner (``shipyard-local`` becomes
        ``shipyard-containers``) and starts podman's API service; it is passed to
        the services with the rest of ``c.LocalHost``, where the scheduler runs
        notebooks with ``ContainerExecutor`` and the deployer serves models with
        ``ContainerBackend`` in containers of the same images.

        Example::

            c.LocalHost.placement = "container"

        .. versionadded:: 0.17
        """,
    ).tag(config=True)

    cgroup_driver = CaselessStrEnum(
        ["auto", *DRIVERS],
        default_value="auto",
        help="""
        How limits are enforced: ``cgroup2``, ``cgroup1``, ``rlimit`` or ``auto``.

        ``auto`` picks cgroup v2 when /sys/fs/cgroup is the unified hierarchy
        with the memory and cpu controllers, cgroup v1 when
        /sys/fs/cgroup/memory and /sys/fs/cgroup/cpu are writable, and
        otherwise falls back to rlimits, which cap each process's address space
        but neither a server's, run's or replica's total memory nor its CPU,
        and cannot find every process of a run to kill (a warning says so).

        Example::

            c.LocalHost.cgroup_driver = "cgroup1"

        .. versionadded:: 0.16
           Replaces the ``cgroup_driver`` of LocalProfileSpawner, LocalExecutor and LocalBackend.
        """,
    ).tag(config=True)

    cgroup_parent = Unicode(
        help="""
        Cgroup under which every server gets its own (``shipyard/alice``).

        Scheduled runs go under ``<cgroup_parent>-jobs`` (``job-<run slug>``) and
        model replicas under ``<cgroup_parent>-models`` (``<version key>-r<N>``):
        apart from the servers, so job names never meet user names, and an admin
        can cap all jobs, or all models, together by limiting their parent.
        Everything under the models' parent belongs to this deployer: it removes
        what it does not adopt at start, so two Shipyards on one machine need two
        parents.

        Defaults to the instance name (``$SHIPYARD_INSTANCE``, ``shipyard``; see
        :mod:`hub_ext.host.instance`), so two Shipyards on one machine never share it.
        It lies at the root of the cgroup hierarchy, or, where systemd is PID 1,
        in the cgroup of the unit the hub runs in, which needs ``Delegate=yes``
        (docs/profiles.md, "Under systemd").

        Example::

            c.LocalHost.cgroup_parent = "jupyterhub"

        .. versionadded:: 0.16
           Replaces the ``cgroup_parent`` of LocalProfileSpawner, LocalExecutor
           (``<parent>-jobs``) and LocalBackend (``<parent>-models``).
        """,
    ).tag(config=True)

    @default("cgroup_parent")
    def _default_cgroup_parent(self):
        return instance.cgroup_parent()

    usage_dir = Unicode(
        help="""
        Folder of the usage ledger: one small file per cgroup Shipyard makes,
        saying whose it is (kind, owner, object, profile, GPUs) and, once it is
        removed, its last counters (:mod:`hub_ext.host.usage`).

        Written by the hub, the scheduler and the deployer; read by the usage
        service, which turns the cgroups' counters into CPU-seconds, memory
        GiB-hours and GPU-hours (docs/observability.md). Made 0700: only root
        may write the labels the usage report trusts. Empty turns the ledger off.

        Defaults to ``/var/lib/<instance>/usage`` as root, else
        ``~/.local/state/<instance>/usage``.

        Example::

            c.LocalHost.usage_dir = "/srv/shipyard/usage"

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    @default("usage_dir")
    def _default_usage_dir(self):
        if os.geteuid() == 0:
            return instance.system_dir("/var/lib", "usage")
        return os.path.join(os.path.expanduser("~/.local/state"), instance.name(), "usage")

    @property
    def usage_ledger(self) -> UsageLedger | None:
        """The ledger in :attr:`usage_dir`, or None where it is off."""
        return UsageLedger(self.usage_dir) if self.usage_dir else None

    system_user_prefix = Unicode(
        help="""
        Prefix of the system accounts users' code runs as when the hub runs as root.

        Hub user ``alice``'s server, runs and models run as ``jupyter-alice``, so
        all of them see the same home and files; a username that is not a plain
        lowercase name becomes a slug with a hash (see :mod:`hub_ext.host.slugs`).
        At most 22 characters, so names fit Linux's 32.

        Defaults to ``jupyter-``, or ``<instance>-`` when ``$SHIPYARD_INSTANCE``
        names another instance than ``shipyard`` (:mod:`hub_ext.host.instance`).

        Example::

            c.LocalHost.system_user_prefix = "sy-"

        .. versionadded:: 0.16
           Replaces the ``system_user_prefix`` of LocalProfileSpawner, LocalExecutor
           and LocalBackend.
        """,
    ).tag(config=True)

    @default("system_user_prefix")
    def _default_system_user_prefix(self):
        return instance.account_prefix()

    home_dir_template = Unicode(
        "/home/{account}",
        help="""
        Home directory of a newly created system account; ``{account}`` is its name.

        Only used when the account is created (a user's first server, or a job
        or model running before it); existing accounts keep theirs.

        Example::

            c.LocalHost.home_dir_template = "/srv/homes/{account}"

        .. versionadded:: 0.16
           Replaces the ``home_dir_template`` of LocalProfileSpawner, LocalExecutor
           and LocalBackend.
        """,
    ).tag(config=True)

    create_system_users = Bool(
        True,
        help="""
        Create a user's system account when it is missing (hub and services running as root).

        Set to False when accounts come from the host (LDAP, SSSD): a user with
        no account then gets a clear error instead of a server, and their runs
        and models fail with that reason.

        Example::

            c.LocalHost.create_system_users = False

        .. versionadded:: 0.16
           Replaces the ``create_system_users`` of LocalProfileSpawner, LocalExecutor
           and LocalBackend.
        """,
    ).tag(config=True)

    environments_dir = Unicode(
        help="""
        Where the profiles' environments are built (``shipyard env build ENV``).

        Each server runs ``jupyterhub-singleuser`` with the Python of its
        profile's environment, and so do a run's papermill, kernel and nbconvert
        and a replica's model server: exactly the packages of
        ``images/<environment>/requirements.lock``. A spawn whose environment is
        not built is refused with the command that builds it; ``shipyard up``
        builds every profile's environment before the hub starts. **Local
        processes only**: on Kubernetes the environment is the profile's image.

        Defaults to ``$SHIPYARD_ENVS_DIR``, else ``/opt/<instance>/envs`` when
        the hub runs as root, else ``envs`` in the data dir.

        Example::

            c.LocalHost.environments_dir = "/srv/shipyard/envs"

        .. versionadded:: 0.16
           Replaces the ``environments_dir`` of LocalProfileSpawner, LocalExecutor
           and LocalBackend.
        """,
    ).tag(config=True)

    @default("environments_dir")
    def _default_environments_dir(self):
        return str(default_envs_dir())

    gpu_devices = List(
        Unicode(),
        help="""
        GPU indices that profiles may hand out, as in ``CUDA_VISIBLE_DEVICES``.

        A server, run or replica whose profile asks for N GPUs gets N of them
        while it runs; one whose profile asks for none sees none. Defaults to
        every GPU ``nvidia-smi`` lists. **Reservations are per process**: the
        hub, the scheduler and the deployer each hand out these GPUs on their
        own; on a machine where several use GPUs, give each its own in the
        service's config file (``c.LocalHost.gpu_devices`` in
        ``$SHIPYARD_SCHEDULER_CONFIG`` or ``$SHIPYARD_DEPLOYER_CONFIG``), which
        wins over the hub's.

        Example::

            c.LocalHost.gpu_devices = ["0", "1"]

        .. versionadded:: 0.16
           Replaces the ``gpu_devices`` of LocalProfileSpawner, LocalExecutor and
           LocalBackend.
        """,
    ).tag(config=True)

    @default("gpu_devices")
    def _default_gpu_devices(self):
        return detect_gpus()

    cleanup_timeout = Integer(
        10,
        help="""
        Seconds to wait for the processes of a server's, run's or replica's cgroup to die.

        Example::

            c.LocalHost.cleanup_timeout = 30

        .. versionadded:: 0.16
           Replaces LocalProfileSpawner's ``cgroup_cleanup_timeout`` and the
           ``cleanup_timeout`` of LocalExecutor and LocalBackend.
        """,
    ).tag(config=True)

    # ------------------------------------------------------------ launching

    @property
    def run_as_root(self) -> bool:
        """Whether processes switch to their owner's account (this process is root)."""
        return os.geteuid() == 0

    def cgroup_parent_of(self, part: str = "") -> str:
        """The cgroup parent of servers (``""``), runs (``"jobs"``) or replicas (``"models"``)."""
        return f"{self.cgroup_parent}-{part}" if part else self.cgroup_parent

    def open_driver(self, parent: str, unenforced: str) -> CgroupDriver:
        """The configured cgroup driver under ``parent``; ``unenforced`` is logged for rlimits."""
        driver = localproc.open_driver(self.cgroup_driver, parent, self.log, unenforced)
        driver.ledger = self.usage_ledger
        return driver

    def environment(self, profile: Profile, error: type[Exception]) -> BuiltEnvironment:
        """The current build of the profile's environment; ``error`` when it is not built."""
        return localproc.find_environment(profile, self.environments_dir, error)

    async def account(
        self,
        owner: str,
        error: type[Exception],
        *,
        missing: type[Exception] | None = None,
        repair_home: bool = False,
    ) -> pwd.struct_passwd:
        """The owner's system account (as root, created if allowed), or this process's user.

        See :func:`hub_ext.host.localproc.owner_account` for ``missing`` and ``repair_home``.
        """
        return await localproc.owner_account(
            owner,
            run_as_root=self.run_as_root,
            prefix=self.system_user_prefix,
            home_template=self.home_dir_template,
            create=self.create_system_users,
            error=error,
            missing=missing,
            repair_home=repair_home,
        )

    async def launch(
        self, request: LaunchRequest, protocol: asyncio.SubprocessProtocol | None = None
    ) -> Launched:
        """Start ``request``'s process as its owner, in its cgroup: the one way all three do.

        Makes the cgroup (with the profile's limits and GPUs) unless the
        request joins one, then starts the process, which joins it, becomes
        the owner (this process being root) and, unless detached, dies with
        this process. See :mod:`hub_ext.host.launch`.

        Parameters
        ----------
        request : LaunchRequest
        protocol : asyncio.SubprocessProtocol, optional
            Receives the output and the exit when ``request.output`` is ``"pipe"``.

        Returns
        -------
        Launched
            The pid and cgroup, with the ``Popen`` or the asyncio transport.

        Raises
        ------
        hub_ext.host.launch.CgroupFailed
            The cgroup could not be made; nothing was started.
        OSError, subprocess.SubprocessError
            The process could not be started.
        """
        return await launch(
            request,
            run_as_root=self.run_as_root,
            cleanup_timeout=self.cleanup_timeout,
            protocol=protocol,
        )


class UsesLocalHost(Configurable):
    """A part that starts users' code on this machine through a :class:`LocalHost`.

    Declares, once for the three parts, the settings each declared before
    :class:`LocalHost` held them, as deprecated aliases: setting one warns
    with the new name and applies the value to this part's ``local_host``.
    """

    #: Which of the host's cgroup parents this part's processes go under ("", "jobs", "models").
    cgroup_part = ""

    #: Old name on this part -> the LocalHost setting it became.
    _deprecated_host_traits = {
        "cgroup_driver": "cgroup_driver",
        "system_user_prefix": "system_user_prefix",
        "home_dir_template": "home_dir_template",
        "create_system_users": "create_system_users",
        "environments_dir": "environments_dir",
        "gpu_devices": "gpu_devices",
    }

    local_host = Instance(
        LocalHost,
        help="The machine this part starts processes on; configured as ``c.LocalHost``.",
    )

    @default("local_host")
    def _default_local_host(self):
        host = LocalHost(parent=self)
        for name, value in self._host_overrides.items():
            setattr(host, name, value)
        return host

    # None until set: an old name set to its type's empty value ("", False, []) still counts
    cgroup_driver = Unicode(None, allow_none=True, help=deprecated_help("cgroup_driver")).tag(
        config=True
    )
    system_user_prefix = Unicode(
        None, allow_none=True, help=deprecated_help("system_user_prefix")
    ).tag(config=True)
    home_dir_template = Unicode(
        None, allow_none=True, help=deprecated_help("home_dir_template")
    ).tag(config=True)
    create_system_users = Bool(
        None, allow_none=True, help=deprecated_help("create_system_users")
    ).tag(config=True)
    environments_dir = Unicode(None, allow_none=True, help=deprecated_help("environments_dir")).tag(
        config=True
    )
    gpu_devices = List(
        Unicode(), default_value=None, allow_none=True, help=deprecated_help("gpu_devices")
    ).tag(config=True)

    cgroup_parent = Unicode(
        help="""
        Deprecated in 0.16: use ``c.LocalHost.cgroup_parent``.

        The cgroup under which this part's processes get their own: the host's
        ``cgroup_parent`` for servers, with ``-jobs`` for scheduled runs and
        ``-models`` for model replicas. Setting it here still works for one
        release, for this part alone.
        """,
    ).tag(config=True)

    @default("cgroup_parent")
    def _default_cgroup_parent(self):
        return self.local_host.cgroup_parent_of(self.cgroup_part)

    def __init__(self, *args, **kwargs):
        self._host_overrides: dict = {}
        super().__init__(*args, **kwargs)

    @observe(*_deprecated_host_traits)
    def _deprecated_host_trait(self, change):
        self._forward_to_host(change.name, self._deprecated_host_traits[change.name], change.new)

    def _forward_to_host(self, old: str, new: str, value) -> None:
        """Warn that ``old`` is deprecated, and set the host's ``new`` to ``value``."""
        self._warn_deprecated(old, f"c.LocalHost.{new}")
        if "local_host" in self._trait_values:
            setattr(self.local_host, new, value)
        else:  # applied when the host is made (during __init__ the config may still change)
            self._host_overrides[new] = value

    @observe("cgroup_parent")
    def _deprecated_cgroup_parent(self, change):
        suffix = f' (this part uses "<parent>-{self.cgroup_part}")' if self.cgroup_part else ""
        self._warn_deprecated("cgroup_parent", f"c.LocalHost.cgroup_parent{suffix}")

    def _warn_deprecated(self, old: str, new: str) -> None:
        warn_moved(
            getattr(self, "log", None),
            f"{type(self).__name__}.{old}",
            f"{new}, which configures the spawner, the scheduler's executor and the "
            "deployer's backend alike",
        )
