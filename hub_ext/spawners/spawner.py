"""Spawners that give every user a server inside an admin-defined resource profile.

:class:`ProfileSpawnerMixin` is what both Shipyard spawners share: the
profiles file, the spawn form, the hub-side check of the user's choice, and
quotas. It closes two long-standing gaps of the stock spawners: KubeSpawner
trusts whatever ``profile`` a user POSTs (kubespawner #589, #889), and nobody
can see which profile a server runs with (jupyterhub #3037). Here the choice
is checked against the user's groups on the hub before anything starts, and
the profile is kept in ``user_options`` (shown on the admin page), in the
spawner state and in the server's environment.

:class:`LocalProfileSpawner` realises a profile on one machine: a process per
server, run as the user's own system account, inside a cgroup that enforces
the profile's CPU and memory limits (see :mod:`hub_ext.host.cgroups`).
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from jinja2 import Environment, PackageLoader, select_autoescape
from jupyterhub.spawner import LocalProcessSpawner
from tornado import web
from traitlets import Integer, Unicode, default, observe
from traitlets.config import Configurable

from hub_ext.audit import spawner as audit_spawner
from hub_ext.environments.catalog import (
    BuiltEnvironment,
    find_built_at,
)
from hub_ext.host import slugs, telemetry
from hub_ext.host.cgroups import CgroupDriver, make_driver
from hub_ext.host.gpus import GpuAllocator, GpuUnavailable
from hub_ext.host.local import UsesLocalHost, deprecated_help
from hub_ext.profiles.model import Profile, ProfileChoiceError, ProfilesConfig, Quota
from hub_ext.profiles.quantities import format_cpu, format_memory, parse_cpu, parse_memory
from hub_ext.profiles.store import ProfileStore

#: The only key a user may set in user_options. Everything else (resources,
#: image, uid, volumes, environment, node selectors) comes from the profile.
USER_OPTION_KEYS = frozenset({"profile"})

#: Spawner traits a profile sets.
RESOURCE_TRAITS = ("cpu_limit", "cpu_guarantee", "mem_limit", "mem_guarantee")

_templates = Environment(
    loader=PackageLoader("hub_ext.spawners", "templates"),
    autoescape=select_autoescape(default=True),
)


class _NotBuilt(Exception):
    """The profile's environment is not built here; a spawn answers it with 503."""


class _NoAccount(Exception):
    """The user has no system account and none may be created; a spawn answers 403."""


class _AccountFailed(Exception):
    """The user's system account could not be created; a spawn answers 500."""


def default_profiles_file() -> str:
    """``$SHIPYARD_PROFILES``, else ``config/profiles.yaml`` here, else the installed copy."""
    if os.environ.get("SHIPYARD_PROFILES"):
        return os.environ["SHIPYARD_PROFILES"]
    local = Path("config/profiles.yaml")
    if local.exists():
        return str(local.resolve())
    return str(Path(sys.prefix) / "share" / "shipyard" / "config" / "profiles.yaml")


@dataclass(frozen=True)
class Usage:
    """Resources one server counts against a quota (limits; guarantee when unlimited)."""

    cpu: float = 0.0
    memory: int = 0
    gpu: int = 0

    @classmethod
    def of(cls, profile: Profile) -> Usage:
        return cls(
            cpu=profile.cpu_limit_cores or profile.cpu_guarantee_cores or 0.0,
            memory=profile.mem_limit_bytes or profile.mem_guarantee_bytes or 0,
            gpu=profile.gpu,
        )


class ProfileSpawnerMixin(Configurable):
    """Profiles, spawn form, choice validation and quotas, shared by both spawners."""

    profiles_file = Unicode(
        help="""
        Path of the YAML file that defines the resource profiles and quotas.

        The file is re-read whenever it changes, without restarting the hub; an
        invalid edit is logged with every error and the previous version stays
        in force. Check a file with ``shipyard profiles validate FILE``.

        Defaults to ``$SHIPYARD_PROFILES``, else ``config/profiles.yaml`` in
        the hub's working directory, else the copy installed with Shipyard.

        Example::

            c.LocalProfileSpawner.profiles_file = "/etc/shipyard/profiles.yaml"

        .. versionadded:: 0.1
        """
    ).tag(config=True)

    @default("profiles_file")
    def _default_profiles_file(self):
        return default_profiles_file()

    tracking_url = Unicode(
        "",
        help="""
        URL of Shipyard's tracking service (MLflow behind hub login), or empty for none.

        When set, every server and kernel gets ``MLFLOW_TRACKING_URI`` (this
        URL), ``MLFLOW_TRACKING_TOKEN`` (the server's own hub token, which the
        hub scopes to the user) and ``MLFLOW_EXPERIMENT_NAME``
        (``<user>/Default``), so a plain ``mlflow.start_run()`` logs as the
        user without any setup. The embedded config sets it when it runs the
        tracking service.

        Example::

            c.LocalProfileSpawner.tracking_url = "https://hub.example.org/services/tracking"

        .. versionadded:: 0.2
        """,
    ).tag(config=True)

    def tracking_env(self, api_token: str) -> dict[str, str]:
        """What a server and its kernels need to log to MLflow as this user."""
        if not self.tracking_url:
            return {}
        return {
            "MLFLOW_TRACKING_URI": self.tracking_url,
            "MLFLOW_TRACKING_TOKEN": api_token,
            "MLFLOW_EXPERIMENT_NAME": f"{self.user.name}/Default",
            # links shown in notebooks: a path on the hub's own origin, which the
            # browser reaches whatever address the kernel uses
            "SHIPYARD_TRACKING_UI_URL": urlparse(self.tracking_url).path,
        }

    # set once the user's choice has been validated (pre-spawn) or restored (load_state)
    profile: Profile | None = None
    usage: Usage | None = None
    # the admin's own resource settings, captured before the first profile is applied
    _configured_resources: dict | None = None

    @property
    def profiles(self) -> ProfilesConfig:
        """The current profiles (re-read when the file changed; a change is audited)."""
        store = ProfileStore.for_path(self.profiles_file)
        config = store.get()
        audit_spawner.profiles_seen(store, config)
        return config

    async def start(self):
        """The concrete spawner's start, audited (``server.start``, with the profile)."""
        try:
            started = await super().start()
        except Exception as e:
            audit_spawner.server_event(self, "server.start", "failed", str(e))
            raise
        audit_spawner.server_event(self, "server.start")
        return started

    async def stop(self, now=False):
        """The concrete spawner's stop, audited (``server.stop``)."""
        await super().stop(now=now)
        audit_spawner.server_event(self, "server.stop")

    @property
    def user_groups(self) -> list[str]:
        return sorted(g.name for g in self.user.groups)

    # ---------------------------------------------------------------- form

    @default("options_form")
    def _default_options_form(self):
        return self.render_profiles_form

    def render_profiles_form(self, spawner=None) -> str:
        """The spawn form: one card per profile this user may use.

        A profile this machine cannot run (a GPU profile where there is no GPU) is shown
        disabled with the reason, so that nobody picks it to be refused after the click.
        """
        config = self.profiles
        groups = self.user_groups
        gpu_count = self.gpu_count
        cards = [(p, p.unavailable_reason(gpu_count)) for p in config.allowed_for(groups)]
        usable = {p.slug for p, reason in cards if reason is None}
        last = (self.orm_spawner.user_options or {}).get("profile") if self.orm_spawner else None
        if not isinstance(last, str) or last not in usable:
            default = config.default_for(groups, gpu_count)
            last = default.slug if default is not None and default.slug in usable else None
        quota = config.quota_for(groups)
        return _templates.get_template("profiles_form.html").render(
            cards=cards, selected=last, quota_text=self._quota_text(quota)
        )

    @property
    def gpu_count(self) -> int | None:
        """How many GPUs this spawner's machine has; None where it does not know (the mixin).

        Profiles needing more are shown disabled and refused (``Profile.unavailable_reason``).
        """
        return None

    @default("options_from_form")
    def _default_options_from_form(self):
        return self.profile_options_from_form

    @staticmethod
    def profile_options_from_form(formdata: dict) -> dict:
        """Form fields to user_options; unknown fields are kept so they can be refused."""
        options = {}
        for key, values in formdata.items():
            if key == "_xsrf":
                continue
            options[key] = values[0] if isinstance(values, list) and len(values) == 1 else values
        return options

    # ---------------------------------------------------------- validation

    def resolve_profile(self) -> Profile:
        """The profile the user asked for, checked on the hub side.

        Raises
        ------
        tornado.web.HTTPError
            400 for malformed options or an unknown profile, 403 for a profile
            outside the user's groups, 409 for a profile this machine cannot run (a
            GPU profile without a GPU); the message says what to do.
        """
        options = self.user_options or {}
        if not isinstance(options, dict):
            raise web.HTTPError(
                400, 'Server options must be a JSON object such as {"profile": "small"}.'
            )
        unknown = sorted(set(options) - USER_OPTION_KEYS)
        if unknown:
            raise web.HTTPError(
                400,
                f"Unknown server option(s): {', '.join(map(repr, unknown))}. Only 'profile' can be "
                "chosen; resources, images, environment and volumes come from the profile.",
            )
        slug = options.get("profile")
        if slug is not None and not isinstance(slug, str):
            raise web.HTTPError(400, f"'profile' must be a profile slug (a string), not {slug!r}.")
        try:
            return self.profiles.resolve(slug, self.user_groups, self.gpu_count)
        except ProfileChoiceError as e:
            raise web.HTTPError(e.status, e.message) from None

    def _quota_source(self) -> str:
        names = [g for g in self.user_groups if g in self.profiles.quotas.groups]
        if not names:
            return "the default quota"
        return ("group " if len(names) == 1 else "groups ") + ", ".join(names)

    @staticmethod
    def _quota_text(quota: Quota | None) -> str:
        if quota is None:
            return ""
        parts = []
        if quota.max_servers is not None:
            parts.append(f"{quota.max_servers} server(s) at once")
        if quota.cpu is not None:
            parts.append(f"{format_cpu(parse_cpu(quota.cpu))} CPU")
        if quota.memory is not None:
            parts.append(f"{format_memory(parse_memory(quota.memory))} memory")
        if quota.gpu is not None:
            parts.append(f"{quota.gpu} GPU")
        return ", ".join(parts)

    def running_siblings(self) -> list[ProfileSpawnerMixin]:
        """This user's other servers that are running or starting."""
        return [
            sp
            for sp in self.user.spawners.values()
            if sp is not self and sp.active and getattr(sp, "usage", None) is not None
        ]

    def check_quota(self, profile: Profile) -> None:
        """Refuse a spawn that would take the user past their group's quota (403)."""
        quota = self.profiles.quota_for(self.user_groups)
        if quota is None:
            return
        siblings = self.running_siblings()
        source = self._quota_source()
        names = ", ".join(f"'{sp.name or 'default'}' ({sp.profile.slug})" for sp in siblings)
        if quota.max_servers is not None and len(siblings) + 1 > quota.max_servers:
            raise web.HTTPError(
                403,
                f"Quota exceeded: {source} allows {quota.max_servers} running server(s) and you "
                f"already run {len(siblings)}: {names or 'none'}. Stop one first.",
            )
        need = Usage.of(profile)
        used = Usage(
            cpu=sum(sp.usage.cpu for sp in siblings),
            memory=sum(sp.usage.memory for sp in siblings),
            gpu=sum(sp.usage.gpu for sp in siblings),
        )
        checks = [
            ("CPU", quota.cpu and parse_cpu(quota.cpu), used.cpu, need.cpu, format_cpu),
            (
                "memory",
                quota.memory and parse_memory(quota.memory),
                used.memory,
                need.memory,
                format_memory,
            ),
            ("GPU", quota.gpu, used.gpu, need.gpu, str),
        ]
        for what, limit, in_use, needed, fmt in checks:
            if limit is None or limit is False:
                continue
            if in_use + needed > limit:
                raise web.HTTPError(
                    403,
                    f"Quota exceeded: {source} allows {fmt(limit)} {what} across your servers; "
                    f"you already use {fmt(in_use)} in {len(siblings)} running server(s) and "
                    f"profile '{profile.slug}' needs {fmt(needed)}. Stop a server or choose a "
                    "smaller profile.",
                )

    async def run_pre_spawn_hook(self):
        """Validate the choice and the quota before anything starts, then apply the profile.

        Runs for every spawn, from the form and from the REST API, before the
        admin's own ``pre_spawn_hook``.
        """
        profile = self.resolve_profile()
        self.check_quota(profile)
        # assigned before any await: a concurrent spawn of the same user sees it
        self.profile, self.usage = profile, Usage.of(profile)
        self.apply_profile(profile)
        self.log.info(
            "Starting %s with profile %s (groups: %s)",
            self._log_name,
            profile.slug,
            ", ".join(self.user_groups) or "none",
        )
        result = super().run_pre_spawn_hook()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            await result

    def apply_profile(self, profile: Profile) -> None:
        """Set this spawner's resource traits from ``profile``; subclasses add their own.

        A value the profile leaves out keeps what the admin configured for the
        spawner (e.g. a cluster-wide ``c.KubeSpawner.mem_limit``), not the
        previous profile's: JupyterHub reuses one spawner object per server.
        """
        if self._configured_resources is None:
            self._configured_resources = {name: getattr(self, name) for name in RESOURCE_TRAITS}
        chosen = {
            "cpu_limit": profile.cpu_limit_cores,
            "cpu_guarantee": profile.cpu_guarantee_cores,
            "mem_limit": profile.mem_limit_bytes,
            "mem_guarantee": profile.mem_guarantee_bytes,
        }
        for name in RESOURCE_TRAITS:
            value = chosen[name]
            setattr(self, name, self._configured_resources[name] if value is None else value)

    def profile_env(self) -> dict[str, str]:
        """What every server learns about its profile (no admin-only fields)."""
        if self.profile is None:
            return {}
        return {
            "SHIPYARD_PROFILE": self.profile.slug,
            "SHIPYARD_ENV": self.profile.environment,
            "SHIPYARD_PROFILE_JSON": json.dumps(self.profile.public_summary()),
        }

    # ---------------------------------------------------------------- state

    def _profile_state(self) -> dict:
        if self.profile is None:
            return {}
        return {"profile": self.profile.model_dump(mode="json")}

    def _load_profile_state(self, state: dict) -> None:
        data = state.get("profile")
        if data:
            # the profile as it was at spawn time, even if the file changed since
            self.profile = Profile.model_validate(data)
            self.usage = Usage.of(self.profile)


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

    scheduler_url = Unicode(
        "",
        help="""
        URL of Shipyard's scheduler service (notebook jobs behind hub login), or empty for none.

        When set, every server and kernel gets ``SHIPYARD_SCHEDULER_URL`` (this
        URL), where ``%schedule``, ``%jobs``, ``%run_now``, ``shipyard jobs``
        and the JupyterLab panel reach the service with the server's own hub
        token (``$JUPYTERHUB_API_TOKEN``, which the hub scopes to
        ``access:services!service=scheduler``). Use the address the servers
        reach the hub's proxy at. The embedded config sets it when it runs the
        scheduler. **LocalProfileSpawner only.**

        Example::

            c.LocalProfileSpawner.scheduler_url = "https://hub.example.org/services/scheduler"

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    deployer_url = Unicode(
        "",
        help="""
        URL of Shipyard's deployer service (model endpoints behind hub login), or empty for none.

        When set, every server and kernel gets ``SHIPYARD_DEPLOYER_URL`` (this URL), where
        ``%deploy``, ``%deployments`` and the JupyterLab panel reach the service with the
        server's own hub token (``$JUPYTERHUB_API_TOKEN``, scoped to
        ``access:services!service=deployer`` and ``custom:models:invoke``). Use the address
        the servers reach the hub's proxy at; endpoint URLs printed by ``%deploy`` use its
        origin. The embedded config sets it when it runs the deployer.
        **LocalProfileSpawner only.**

        Example::

            c.LocalProfileSpawner.deployer_url = "https://hub.example.org/services/deployer"

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    secrets_url = Unicode(
        "",
        help="""
        URL of Shipyard's secrets service (users' secrets behind hub login), or empty for none.

        When set, every server and kernel gets ``SHIPYARD_SECRETS_URL`` (this URL), where
        ``%secret`` and ``shipyard secrets`` reach the service with the server's own hub
        token (scoped to ``access:services!service=secrets``). Values never travel the
        other way: a server cannot read a secret back. The embedded config sets it when it
        runs the secrets service. **LocalProfileSpawner only.**

        Example::

            c.LocalProfileSpawner.secrets_url = "https://hub.example.org/services/secrets"

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

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
        if self.profile is None:  # started without JupyterHub's pre-spawn step
            self.profile = self.resolve_profile()
            self.usage = Usage.of(self.profile)
            self.apply_profile(self.profile)
        profile = self.profile
        # set with the profile (pre-spawn step): the server, its kernels and terminals
        # run on the environment's interpreter
        self.cmd = [str(self.built_env.python), "-m", "jupyterhub.singleuser"]
        self.account = self.account_name
        if self.run_as_root:
            await self._ensure_account()
        try:
            self.gpus = self.allocator.allocate(self.cgroup_name, profile.gpu)
        except GpuUnavailable as e:
            raise web.HTTPError(409, str(e)) from None
        try:
            # the profile's limits, as for runs and replicas (hub_ext.host.localproc); one
            # left over from a server that died with the hub down is removed first; the
            # kernel, not CUDA_VISIBLE_DEVICES, keeps the server off other GPUs
            await self.local_host.make_cgroup(self.driver, self.cgroup_name, profile, self.gpus)
            self._cgroup_live = True
            ip, port = await super().start()
        except BaseException:
            await self._release()
            raise
        await self._wait_for_port(ip, port)
        return ip, port

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

    async def _wait_for_port(self, ip: str, port: int) -> None:
        """Return once the server accepts connections (or has died, or http_timeout passed).

        JupyterHub then probes the server's URL with a randomised, growing
        back-off (up to seconds between tries); a port that is already open
        makes its first probe succeed. This cut the median spawn-to-ready time
        and most of its spread (docs/benchmarks.md). A server that dies or never
        listens is left to JupyterHub's own checks, which report it as usual.
        """
        deadline = asyncio.get_running_loop().time() + self.http_timeout
        while asyncio.get_running_loop().time() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return
            try:
                _, writer = await asyncio.open_connection(ip, port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return

    async def _ensure_account(self) -> None:
        """The user's account, as for runs and models (:meth:`LocalHost.account`).

        A home made before homes were private is repaired; a missing account
        that may not be created is refused with 403, a failed creation with 500.
        """
        try:
            await self.local_host.account(
                self.user.name, _AccountFailed, missing=_NoAccount, repair_home=True
            )
        except _NoAccount as e:
            raise web.HTTPError(403, f"{e} Ask an admin.") from None
        except _AccountFailed as e:
            raise web.HTTPError(500, str(e)) from None

    def make_preexec_fn(self, name):
        """Join the server's cgroup, then become the user, in their home, as runs and models do.

        The server outlives the hub (a restarted hub finds it by its pid), so it
        does not die with it.
        """
        entry = pwd.getpwnam(self.account) if self.run_as_root else pwd.getpwuid(os.getuid())
        return self.local_host.preexec(
            self.driver, self.cgroup_name, entry, dies_with_parent=False, chdir_home=True
        )

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
        if self.scheduler_url:
            env["SHIPYARD_SCHEDULER_URL"] = self.scheduler_url
        if self.deployer_url:
            env["SHIPYARD_DEPLOYER_URL"] = self.deployer_url
        if self.secrets_url:
            env["SHIPYARD_SECRETS_URL"] = self.secrets_url
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
