"""LocalProfileSpawner: a user's server as a process of their own account, in their profile's limits.

A profile (:mod:`hub_ext.spawners.mixin`: the user's choice, checked, and its
quota) is realised on one machine: a process per server, run as the user's
own system account, inside a cgroup that enforces the profile's CPU and
memory limits and opens only the server's GPUs (:mod:`hub_ext.host.cgroups`),
on the Python of the profile's built environment.

The server is started by :meth:`hub_ext.host.local.LocalHost.launch`, the
path the scheduler's runs and the deployer's replicas take too (account,
environment, cgroup, pre-exec, start), rather than by
``LocalProcessSpawner.start``'s own ``Popen``, which would be a fourth way to
start a user's code. The rest of JupyterHub's contract is kept: ``self.proc``
is the server's ``Popen`` and ``self.pid`` its pid (``poll``, ``stop`` and a
hub restart find it by them), its environment is ``get_env``'s, and
``popen_kwargs``, ``shell_cmd`` and the port are honoured as
``LocalProcessSpawner`` honours them. The server is detached: it outlives the
hub, which adopts it again from its state.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shlex
import shutil
import sys
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner
from jupyterhub.utils import random_port
from tornado import web
from traitlets import Integer, default, observe

from hub_ext.environments.catalog import BuiltEnvironment, find_built_at
from hub_ext.host import slugs, telemetry
from hub_ext.host.cgroups import CgroupDriver, make_driver
from hub_ext.host.gpus import GpuAllocator, GpuUnavailable
from hub_ext.host.launch import LaunchRequest
from hub_ext.host.local import UsesLocalHost, deprecated_help
from hub_ext.host.usage import UsageLabel
from hub_ext.profiles.model import Profile
from hub_ext.spawners.mixin import ProfileSpawnerMixin, Usage


class _NotBuilt(Exception):
    """The profile's environment is not built here; a spawn answers it with 503."""


class _NoAccount(Exception):
    """The user has no system account and none may be created; a spawn answers 403."""


class _AccountFailed(Exception):
    """The user's system account could not be created; a spawn answers 500."""


class LocalProfileSpawner(UsesLocalHost, ProfileSpawnerMixin, LocalProcessSpawner):
    """One process per server, as the user's own account, in a cgroup with the profile's limits.

    Select it with ``c.JupyterHub.spawner_class = "shipyard-local"``. Accounts,
    cgroups (under ``c.LocalHost.cgroup_parent``), environments and GPUs are
    configured as ``c.LocalHost`` (:mod:`hub_ext.host.local`): the same settings
    configure the scheduler's runs and the deployer's models.
    """

    cgroup_cleanup_timeout = Integer(
        None,
        allow_none=True,
        help=deprecated_help(
            "cleanup_timeout", "c.LocalProfileSpawner.cgroup_cleanup_timeout = 30", added="0.1"
        ),
    ).tag(config=True)

    @observe("cgroup_cleanup_timeout")
    def _deprecated_cleanup_timeout(self, change):
        self._forward_to_host("cgroup_cleanup_timeout", "cleanup_timeout", change.new)

    @default("cmd")
    def _default_cmd(self):
        # replaced at start by the profile environment's own interpreter
        return [sys.executable, "-m", "jupyterhub.singleuser"]

    # shared by every spawner of this hub process
    _drivers: dict[tuple[str, str], CgroupDriver] = {}
    _allocators: dict[tuple[str, ...], GpuAllocator] = {}
    _warned_same_user = False
    _warned_rlimit = False

    gpus: list[str]
    port: int  # JupyterHub's trait, chosen at start when 0 (as LocalProcessSpawner does)
    account: str | None = None
    built_env: BuiltEnvironment | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gpus = []
        self._cgroup_live = False
        if not self.run_as_root and not LocalProfileSpawner._warned_same_user:
            LocalProfileSpawner._warned_same_user = True
            self.log.warning(
                "Shipyard's hub is not running as root: every user's server runs as %s, "
                "with no isolation between users. Run the hub as root for one account per user.",
                pwd.getpwuid(os.getuid()).pw_name,
            )

    @property
    def run_as_root(self) -> bool:
        return self.local_host.run_as_root

    @property
    def driver(self) -> CgroupDriver:
        key = (self.local_host.cgroup_driver, self.cgroup_parent)
        if key not in self._drivers:
            # under the delegated unit where systemd is PID 1 (hub_ext.host.cgroups.systemd_base)
            driver = make_driver(self.local_host.cgroup_driver, self.cgroup_parent)
            driver.ledger = self.local_host.usage_ledger  # usage accounting
            if not driver.enforces_total and not LocalProfileSpawner._warned_rlimit:
                LocalProfileSpawner._warned_rlimit = True
                self.log.warning(
                    "No writable cgroup hierarchy: falling back to rlimits. Memory limits apply "
                    "per process, not per server, and CPU limits are not enforced."
                )
            self.log.info("Enforcing profile limits with %s", driver.kind)
            self._drivers[key] = driver
        return self._drivers[key]

    @property
    def gpu_count(self) -> int:
        """The GPUs profiles may have here (``gpu_devices``): a GPU profile needs one."""
        return len(self.local_host.gpu_devices)

    @property
    def allocator(self) -> GpuAllocator:
        key = tuple(self.local_host.gpu_devices)
        if key not in self._allocators:
            self._allocators[key] = GpuAllocator(self.local_host.gpu_devices)
        return self._allocators[key]

    @property
    def cgroup_name(self) -> str:
        return slugs.server_slug(self.user.name, self.name)

    @property
    def account_name(self) -> str:
        if not self.run_as_root:
            return pwd.getpwuid(os.getuid()).pw_name
        return slugs.account_name(self.user.name, self.local_host.system_user_prefix)

    # --------------------------------------------------------------- start

    async def start(self):
        """Start the server (:meth:`_start_server`), audited as every profile spawner's start."""
        return await self.audited_start(self._start_server)

    async def _start_server(self):
        """Start the server with :meth:`LocalHost.launch`, in the profile's cgroup and environment.

        Returns
        -------
        (str, int)
            The server's address, once it accepts connections (or has died, or
            ``http_timeout`` passed: JupyterHub's own checks report those).
        """
        if self.profile is None:  # started without JupyterHub's pre-spawn step
            self.profile = self.resolve_profile()
            self.usage = Usage.of(self.profile)
            self.apply_profile(self.profile)
        profile = self.profile
        # set with the profile (pre-spawn step): the server, its kernels and terminals
        # run on the environment's interpreter
        self.cmd = [str(self.built_env.python), "-m", "jupyterhub.singleuser"]
        self.account = self.account_name
        user = await self._ensure_account()
        try:
            self.gpus = self.allocator.allocate(self.cgroup_name, profile.gpu)
        except GpuUnavailable as e:
            raise web.HTTPError(409, str(e)) from None
        try:
            # the cgroup is marked live first: a failed start still has it removed
            self._cgroup_live = True
            ip, port = await self._launch(user, profile)
        except BaseException:
            await self._release()
            raise
        await self.wait_until_answering(
            ip, port, lambda: self.proc is not None and self.proc.poll() is not None
        )
        return ip, port

    async def _launch(self, user: pwd.struct_passwd, profile: Profile) -> tuple[str, int]:
        """The server's process, as ``LocalProcessSpawner.start`` builds it, by LocalHost.launch.

        The profile's limits, as for runs and replicas; a cgroup left over from a server
        that died with the hub down is removed first; the kernel, not
        ``CUDA_VISIBLE_DEVICES``, keeps the server off other GPUs. The server starts in
        the account's home and outlives the hub (a restarted hub finds it by its pid).
        """
        if self.port == 0:
            self.port = random_port()
        cmd = [*self.cmd, *self.get_args()]
        if self.shell_cmd:
            # using shell_cmd (e.g. bash -c), our cmd list is its last (single) argument
            cmd = [*self.shell_cmd, " ".join(shlex.quote(s) for s in cmd)]
        self.log.info("Spawning %s", " ".join(shlex.quote(s) for s in cmd))
        request = LaunchRequest(
            user=user,
            profile=profile,
            argv=cmd,
            env=self.get_env(),
            driver=self.driver,
            cgroup=self.cgroup_name,
            gpus=self.gpus,
            output="inherit",  # the server's log is the hub's, as with LocalProcessSpawner
            detached=True,
            chdir_home=True,
            popen_kwargs=self.popen_kwargs,
            usage=UsageLabel.server(self.user.name, self.name),
        )
        try:
            launched = await self.local_host.launch(request)
        except PermissionError:
            script = shutil.which(cmd[0]) or cmd[0]
            self.log.error(
                "Permission denied trying to run %r. Does %s have access to this file?",
                script,
                self.user.name,
            )
            raise
        self.proc = launched.popen
        self.pid = launched.pid
        return (self.ip or "127.0.0.1", self.port)

    def apply_profile(self, profile: Profile) -> None:
        """Limits as for every profile spawner, plus the profile's built environment.

        Looked up here, in the pre-spawn step, so a missing environment is
        refused with its message before anything starts, like a forbidden profile.
        """
        super().apply_profile(profile)
        self.built_env = self._find_environment(profile)

    def _find_environment(self, profile: Profile) -> BuiltEnvironment:
        """The current build of the profile's environment; 503 with the fix if there is none."""
        try:
            return self.local_host.environment(profile, _NotBuilt)
        except _NotBuilt as e:
            message = str(e).removesuffix(".")
            raise web.HTTPError(
                503, f"{message} (`shipyard up` builds every profile's environment)."
            ) from None

    async def _ensure_account(self) -> pwd.struct_passwd:
        """The user's account, as for runs and models (:meth:`LocalHost.account`).

        As root, a home made before homes were private is repaired; a missing
        account that may not be created is refused with 403, a failed creation
        with 500. Otherwise the hub's own user.
        """
        try:
            return await self.local_host.account(
                self.user.name, _AccountFailed, missing=_NoAccount, repair_home=True
            )
        except _NoAccount as e:
            raise web.HTTPError(403, f"{e} Ask an admin.") from None
        except _AccountFailed as e:
            raise web.HTTPError(500, str(e)) from None

    def user_env(self, env):
        entry = pwd.getpwnam(self.account) if self.run_as_root else pwd.getpwuid(os.getuid())
        env["USER"] = entry.pw_name
        env["HOME"] = entry.pw_dir
        env["SHELL"] = entry.pw_shell or "/bin/bash"
        return env

    def get_env(self):
        env = super().get_env()
        env.update(self.profile_env())
        env.update(self.tracking_env(env.get("JUPYTERHUB_API_TOKEN", "")))
        env.update(self.services_env())
        if self.built_env is not None:
            env.update(self.built_env.env_vars())
            # terminals and `!pip` in a notebook find the environment's tools first
            env["PATH"] = os.pathsep.join([str(self.built_env.bin), env.get("PATH", "")])
        # MLflow's usage telemetry off in the server and its kernels, unless the admin
        # allows it (SHIPYARD_MLFLOW_TELEMETRY, hub_ext/host/telemetry.py)
        env.update(telemetry.environment())
        devices = ",".join(self.gpus)
        # an empty list hides every GPU from servers whose profile has none
        env["CUDA_VISIBLE_DEVICES"] = devices
        env["NVIDIA_VISIBLE_DEVICES"] = devices or "void"
        return env

    # ---------------------------------------------------------- stop, poll

    async def _release(self) -> None:
        """Kill what is left in the cgroup, delete it, and free the GPUs."""
        if self._cgroup_live or self.driver.exists(self.cgroup_name):
            await asyncio.to_thread(
                self.driver.remove, self.cgroup_name, self.local_host.cleanup_timeout
            )
        self._cgroup_live = False
        self.allocator.release(self.cgroup_name)
        self.gpus = []

    async def stop(self, now=False):
        await super().stop(now=now)
        await self._release()

    async def wait_for_death(self, timeout=10):
        """Wait for the server's process to exit, woken by the exit itself.

        JupyterHub's version polls with a back-off (0.1, 0.2, 0.4 ... s), so a server
        that exits 0.5 s after its SIGINT was seen gone only at 0.7 s or 1.5 s; a stop of
        many servers paid that for each. A pidfd (Linux 5.3) becomes readable the moment
        the process exits, whether or not the hub started it (after a hub restart it did
        not); without one, JupyterHub's polling is used.
        """
        pid = self.pid
        if not pid:
            return True
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return await self.poll() is not None
        except (AttributeError, OSError):
            return await super().wait_for_death(timeout)
        loop = asyncio.get_running_loop()
        exited = loop.create_future()
        loop.add_reader(pidfd, lambda: exited.done() or exited.set_result(None))
        try:
            await asyncio.wait_for(exited, timeout)
        except TimeoutError:
            pass
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        return await self.poll() is not None

    async def poll(self):
        status = await super().poll()
        if status is not None and self._cgroup_live:
            # the server died by itself (or while the hub was down): kernels it
            # left behind must not run on without a server
            await self._release()
        return status

    # ---------------------------------------------------------------- state

    def get_state(self):
        state = super().get_state()
        if self.pid:
            state.update(self._profile_state())
            state["gpus"] = self.gpus
            state["account"] = self.account
            if self.built_env is not None:
                state["environment"] = {
                    "name": self.built_env.name,
                    "digest": self.built_env.digest,
                    "path": str(self.built_env.path),
                }
        return state

    def load_state(self, state):
        super().load_state(state)
        self._load_profile_state(state)
        if state.get("pid"):
            self._cgroup_live = True
            self.account = state.get("account") or self.account_name
            self.gpus = list(state.get("gpus") or [])
            if self.gpus:
                self.allocator.restore(self.cgroup_name, self.gpus)
            recorded = state.get("environment") or {}
            if recorded.get("path"):
                self.built_env = find_built_at(recorded["name"], Path(recorded["path"]))

    def clear_state(self):
        super().clear_state()
        self.gpus = []
        self.built_env = None
