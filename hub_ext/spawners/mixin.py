"""What every Shipyard spawner shares: the profile a user chose, checked, and what it costs.

:class:`ProfileSpawnerMixin` holds the profiles file, the spawn form, the
hub-side check of the user's choice, and quotas, for
:class:`~hub_ext.spawners.spawner.LocalProfileSpawner` and
:class:`~hub_ext.spawners.kubespawner.KubeProfileSpawner` alike. It closes two
long-standing gaps of the stock spawners: KubeSpawner trusts whatever
``profile`` a user POSTs (kubespawner #589, #889), and nobody can see which
profile a server runs with (jupyterhub #3037). Here the choice is checked
against the user's groups on the hub before anything starts, and the profile
is kept in ``user_options`` (shown on the admin page), in the spawner state
and in the server's environment.

Kept apart from the spawners, which realise a profile (a process in a cgroup,
a pod): this module knows profiles and users, not machines, and imports
nothing of :mod:`hub_ext.host`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from jinja2 import Environment, PackageLoader, select_autoescape
from tornado import web
from traitlets import Unicode, default
from traitlets.config import Configurable

from hub_ext.audit import spawner as audit_spawner
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
        scheduler.

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
        runs the secrets service.

        Example::

            c.LocalProfileSpawner.secrets_url = "https://hub.example.org/services/secrets"

        .. versionadded:: 0.4
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

    def services_env(self) -> dict[str, str]:
        """Where a server and its kernels reach the scheduler, the deployer and the secrets."""
        urls = {
            "SHIPYARD_SCHEDULER_URL": self.scheduler_url,
            "SHIPYARD_DEPLOYER_URL": self.deployer_url,
            "SHIPYARD_SECRETS_URL": self.secrets_url,
        }
        return {name: url for name, url in urls.items() if url}

    #: JupyterHub's Spawner.http_timeout, on the concrete spawner this mixes into
    http_timeout: int

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
        return await self.audited_start(super().start)

    async def audited_start(self, start: Callable[[], Awaitable[Any]]) -> Any:
        """``await start()``, recording ``server.start`` whether it succeeds or fails.

        For a spawner that starts its server itself rather than through its base
        class's ``start`` (LocalProfileSpawner, through LocalHost.launch): it overrides
        ``start`` and passes its own here, so its servers are audited as every other.
        """
        try:
            started = await start()
        except Exception as e:
            audit_spawner.server_event(self, "server.start", "failed", str(e))
            raise
        audit_spawner.server_event(self, "server.start")
        return started

    async def wait_until_answering(self, ip: str, port: int, ended: Callable[[], bool]) -> None:
        """Return once the server answers HTTP (or ``ended()``, or ``http_timeout`` passed).

        JupyterHub then probes the server's URL with a randomised, growing back-off
        (up to seconds between tries); a server that answers already makes its first
        probe succeed. This cut the median spawn-to-ready time and most of its spread
        (docs/benchmarks.md). The first byte of an answer is waited for, not an accepted
        connection: a port published by podman accepts before the server in the
        container listens. A server that dies or never answers is left to JupyterHub's
        own checks, which report it as usual.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.http_timeout
        while loop.time() < deadline and not ended():
            try:
                reader, writer = await asyncio.open_connection(ip, port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            try:
                writer.write(b"HEAD / HTTP/1.0\r\nHost: " + ip.encode() + b"\r\n\r\n")
                await writer.drain()
                answered = await asyncio.wait_for(reader.read(1), 2)
            except (OSError, asyncio.TimeoutError):
                answered = b""
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            if answered:
                return
            await asyncio.sleep(0.05)

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
