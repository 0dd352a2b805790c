"""ContainerProfileSpawner: a user's server in a podman container from its profile's image.

With ``c.LocalHost.placement = "container"`` the hub spawns servers with this
class instead of :class:`~hub_ext.spawners.spawner.LocalProfileSpawner`: the same
profiles, form, hub-side checks and quotas
(:class:`~hub_ext.spawners.mixin.ProfileSpawnerMixin`), realised as a container
of the environment's image (``shipyard image build ENV``) rather than a process on
the environment's virtual environment. It extends JupyterHub's DockerSpawner, as
:class:`~hub_ext.spawners.kubespawner.KubeProfileSpawner` extends KubeSpawner,
and DockerSpawner talks docker-py to podman's Docker-compatible API service
(:class:`~hub_ext.host.containers.PodmanService`, which the hub starts). What
DockerSpawner already does is kept: the container's name and state (a restarted
hub re-adopts a running container by its recorded id), ``poll`` by inspecting it,
``stop`` and removal, the published port as the server's address.

What is added, and why:

* **The create step** goes to podman's libpod API (``POST /libpod/containers/create``)
  with the spec :func:`hub_ext.host.containers.create_spec` builds: the compat API
  has no field for uid maps or podman's rlimit names, and the security settings
  are easier to check as one typed body (:mod:`hub_ext.host.containers` has the
  reasons for each). Start, inspect, stop and remove stay DockerSpawner's.
* **The image** is the profile's environment's, checked before anything starts
  (503 with ``shipyard image build ENV`` when it is missing), never a user's choice.
* **The account**: as :class:`LocalProfileSpawner`, the user's own system account
  (``c.LocalHost``: prefix, homes, creation), whose home is the container's
  ``/home/jovyan``; by default the server runs as the images' uid 1000 and the home
  is an idmapped mount of it made before the container is created and detached
  once it is removed (:func:`~hub_ext.host.containers.mount_idmapped_home`).
* **The network**: the user's own bridge, made with their first container and
  removed with their last, confined by the firewall rules of
  :func:`~hub_ext.host.containers.firewall_rules`; the hub's and services' loopback
  URLs in the server's environment become the network's gateway.

GPUs come through CDI: each ``nvidia.com/gpu`` device the CDI specs declare
(``c.ContainerPlacement.cdi_spec_dirs``) is one a server can be given; where none
is declared, GPU profiles are shown disabled with the reason.
"""

from __future__ import annotations

import os
import pwd
from typing import ClassVar

from dockerspawner import DockerSpawner
from tornado import web
from traitlets import Instance, default

from hub_ext.host import telemetry
from hub_ext.host.containerhost import ContainerFailed, ContainerHost, UsageWatch, UserNetwork
from hub_ext.host.containers import (
    CONTAINER_HOME,
    ContainerPlacement,
    ImageMissing,
    reach_environment,
)
from hub_ext.host.local import LocalHost
from hub_ext.host.localproc import profile_limits
from hub_ext.host.usage import UsageLabel
from hub_ext.spawners.mixin import ProfileSpawnerMixin, Usage

#: The port the server listens on inside its container (published on 127.0.0.1).
SERVER_PORT = 8888


class _NoAccount(Exception):
    """The user has no system account and none may be created; a spawn answers 403."""


class _AccountFailed(Exception):
    """The user's system account could not be created; a spawn answers 500."""


class ContainerProfileSpawner(ProfileSpawnerMixin, DockerSpawner):
    """One podman container per server, from the profile's image, with the profile's limits.

    Chosen by ``c.LocalHost.placement = "container"`` (or
    ``c.JupyterHub.spawner_class = "shipyard-containers"``). Accounts and homes are
    configured as ``c.LocalHost``, the containers as ``c.ContainerPlacement``;
    DockerSpawner's own traits that Shipyard sets (image, network, host_ip, remove,
    pull_policy, client_kwargs) are defaults derived from those.
    """

    placement = Instance(
        ContainerPlacement,
        help="How the servers' containers are made: ``c.ContainerPlacement``.",
    )

    @default("placement")
    def _default_placement(self):
        return ContainerPlacement(parent=self)

    local_host = Instance(
        LocalHost,
        help="The machine's accounts and homes: ``c.LocalHost``, as for processes.",
    )

    @default("local_host")
    def _default_local_host(self):
        return LocalHost(parent=self)

    # DockerSpawner's traits, given Shipyard's defaults (config still wins)

    @default("client_kwargs")
    def _default_client_kwargs(self):
        return {"base_url": self.placement.base_url()}

    @default("remove")
    def _default_remove(self):
        return True  # a stopped server leaves no container (nor anonymous volume) behind

    @default("pull_policy")
    def _default_pull_policy(self):
        return "skip"  # images are built here (`shipyard image build`), never pulled

    @default("prefix")
    def _default_prefix(self):
        return self.placement.network_prefix

    @default("host_ip")
    def _default_host_ip(self):
        return "127.0.0.1"

    @default("port")
    def _default_port(self):
        return SERVER_PORT

    account: pwd.struct_passwd | None = None
    _network: UserNetwork | None = None
    #: the server's usage record, kept from its container's cgroup while it runs
    _usage: UsageWatch | None = None
    #: one per hub process and placement, shared by every server's spawner: its GPU
    #: allocator must see every server's GPUs (as LocalProfileSpawner's allocators do)
    _hosts: ClassVar[dict[tuple[str, str], ContainerHost]] = {}

    @property
    def host(self) -> ContainerHost:
        """Podman's API, the user's network and the home's mount (shared with runs and replicas)."""
        key = (self.placement.podman_socket, self.placement.network_prefix)
        if key not in self._hosts:
            self._hosts[key] = ContainerHost(self.placement, self.log)
        return self._hosts[key]

    @property
    def gpu_count(self) -> int:
        """The GPUs the CDI specs declare (``c.ContainerPlacement.cdi_spec_dirs``); none
        shows GPU profiles disabled, with the reason."""
        return len(self.host.gpus.devices)

    # ----------------------------------------------------------- pre-spawn

    async def run_pre_spawn_hook(self):
        """The mixin's checks (profile, quota), then the profile's image: 503 when not built."""
        await super().run_pre_spawn_hook()
        assert self.profile is not None
        self.image = await self._image_of_profile()

    async def _image_of_profile(self) -> str:
        """The profile's image, once podman is asked that it has it (503 with the fix if not)."""
        assert self.profile is not None
        try:
            return await self.host.image(self.profile)
        except ImageMissing as e:
            raise web.HTTPError(503, str(e)) from None

    # ---------------------------------------------------------------- start

    async def start(self):
        """The user's account and network, then DockerSpawner's start, then the firewall.

        Returns
        -------
        (str, int)
            ``127.0.0.1`` and the container's published port.
        """
        if os.geteuid() != 0:
            raise web.HTTPError(
                500, "Containers on one machine need the hub to run as root (rootful podman)."
            )
        if self.profile is None:  # started without JupyterHub's pre-spawn step
            self.profile = self.resolve_profile()
            self.usage = Usage.of(self.profile)
            self.apply_profile(self.profile)
            self.image = await self._image_of_profile()
        self.account = await self._ensure_account()
        self._network = await self._ensure_network()
        ip, port = await super().start()
        # a container that dies meanwhile is found by JupyterHub's own check, which waits
        # as long (http_timeout) without asking the spawner either
        await self.wait_until_answering(ip, port, lambda: False)
        return ip, port

    async def _ensure_account(self) -> pwd.struct_passwd:
        """The user's account, as for processes (:meth:`LocalHost.account`)."""
        try:
            return await self.local_host.account(
                self.user.name, _AccountFailed, missing=_NoAccount, repair_home=True
            )
        except _NoAccount as e:
            raise web.HTTPError(403, f"{e} Ask an admin.") from None
        except _AccountFailed as e:
            raise web.HTTPError(500, str(e)) from None

    async def _ensure_network(self) -> UserNetwork:
        """The user's bridge network (made if missing), confined to what a server reaches."""
        try:
            return await self.host.network(self.user.name, self._reached_urls())
        except ContainerFailed as e:
            raise web.HTTPError(500, str(e)) from None

    def _reached_urls(self) -> list[str]:
        """The URLs a server calls on the host: the hub's API, the proxy, the tracking service."""
        urls = [self.hub.api_url, self.public_url or ""]
        if self.tracking_url:
            urls.append(self.tracking_url)
        return [u for u in urls if u]

    @property
    def public_url(self) -> str:
        """The proxy's public URL (``$SHIPYARD_BIND_URL``), which kernels use for services."""
        return os.environ.get("SHIPYARD_BIND_URL", "")

    async def create_object(self):
        """Create the container with podman's libpod API from :func:`create_spec`.

        With ``user_namespace = "idmap"`` the home's idmapped mount is made first
        (any left by a container that died with the hub is replaced), and
        detached again if podman refuses the container.
        """
        assert self.profile is not None and self.account is not None and self._network is not None
        mode = self.placement.user_mode()  # the spec logs the warning, if any
        self.log.info(
            "%s's server runs as %s (user_namespace %s)",
            self.user.name,
            "uid 1000 on an idmapped home"
            if mode == "idmap"
            else "the account's own uid"
            if mode == "none"
            else "a mapped uid 1000",
            mode,
        )
        try:
            gpus = self.host.allocate_gpus(self.container_name, self.profile.gpu)
        except ContainerFailed as e:
            raise web.HTTPError(409, str(e)) from None
        try:
            home_source = await self.host.bind(
                self.container_name, "home", self.account.pw_dir, self.account
            )
            spec = self.host.spec(
                account=self.account,
                owner=self.user.name,
                name=self.container_name,
                image=self.image,
                command=await self.get_command(),
                env=self.get_env(),
                home_source=home_source if mode == "idmap" else "",
                profile=self.profile,
                network=self._network.name,
                port=self.port,
                labels=self.host.labels("server"),
                devices=tuple(gpus),
            )
            return {"Id": await self.host.create(spec)}
        except ContainerFailed as e:
            await self._release_home()
            raise web.HTTPError(500, str(e)) from None
        except BaseException:
            await self._release_home()
            raise

    async def start_object(self):
        """Start the container, then let its bridge forward the gateway's ports to loopback;
        its usage is recorded from then on."""
        await super().start_object()
        self._count_usage()
        if self._network is not None:
            await self.host.route(self._network)

    def _count_usage(self, resume: bool = False) -> None:
        """Keep the server's usage record from its container's cgroup, unless kept already.

        ``resume``: a container found running (the hub restarted), whose open
        record is kept.
        """
        if self._usage is not None and not self._usage.task.done():
            return
        assert self.profile is not None
        self._usage = self.host.watch_usage(
            self.container_name,
            ledger=self.local_host.usage_ledger,
            parent=self.local_host.cgroup_parent_of(""),  # the servers' processes' folder
            label=UsageLabel.server(self.user.name, self.name),
            profile=self.profile.slug,
            limits=profile_limits(
                self.profile, self.host.gpus.in_use().get(self.container_name, [])
            ),
            resume=resume,
        )

    async def _end_usage(self) -> None:
        """The container is gone: its usage record closed with the last reading."""
        watch, self._usage = self._usage, None
        if watch is not None:
            await watch.finish()

    def get_env(self):
        """DockerSpawner's environment plus the profile's, with loopback URLs made reachable."""
        env = super().get_env()
        env.update(self.profile_env())
        env.update(self.tracking_env(env.get("JUPYTERHUB_API_TOKEN", "")))
        env.update(self.services_env())
        env.update(telemetry.environment())
        env["HOME"] = CONTAINER_HOME
        if self.account is not None:
            env["USER"] = self.account.pw_name
        env["CUDA_VISIBLE_DEVICES"] = ""
        env["NVIDIA_VISIBLE_DEVICES"] = "void"
        if self._network is not None:
            strings = {k: v for k, v in env.items() if isinstance(v, str)}
            # JUPYTERHUB_SERVICE_URL is where the server itself listens (0.0.0.0)
            env.update(
                reach_environment(strings, self._network.gateway, keep=["JUPYTERHUB_SERVICE_URL"])
            )
        return env

    # ---------------------------------------------------------------- stop

    async def stop(self, now=False):
        """DockerSpawner's stop (which removes the container), then its home's mount and network.

        The idmapped home is detached only with the container: a kept one
        (``remove = False``) is started again as it is, with the mount it has.
        """
        await super().stop(now=now)
        await self._end_usage()
        if self.remove:
            await self._release_home()
        await self._release_network()

    async def _release_home(self) -> None:
        """Detach the container's idmapped home, and give its GPUs back."""
        self.host.gpus.release(self.container_name)
        await self.host.release_binds(self.container_name)

    async def _release_network(self) -> None:
        """Remove the user's network and its rules when no container of theirs is left on it."""
        if await self.host.release_network(self.user.name):
            self._network = None

    async def poll(self):
        """DockerSpawner's poll, which also cleans up after a container that died by itself.

        A re-adopted container's network gets its rules checked once: after a hub
        restart they normally still hold (they are the kernel's); after a firewall
        flush they would not, and the container would run unconfined.
        """
        status = await super().poll()
        if status is None and self.profile is not None:
            self._count_usage(resume=True)  # kept if started here; a running one found: resumed
        if status is None and self.placement.firewall and self._network is None:
            self._network = await self._ensure_network()
        elif status is not None:
            await self._end_usage()
            # died by itself (kill -9, the OOM killer on the server, a crash): JupyterHub
            # does not call stop() for a server that is gone, and DockerSpawner would keep
            # the exited container until the next start; nothing of it is kept here
            if self.remove and self.object_id:
                await self.remove_object()
                self.set_trait("object_id", "")  # forgotten: it is gone
            if self.remove:
                await self._release_home()
            await self._release_network()
        return status

    # ---------------------------------------------------------------- state

    def get_state(self):
        state = super().get_state()
        if self.object_id:
            state.update(self._profile_state())
            gpus = self.host.gpus.in_use().get(self.container_name)
            if gpus:
                state["gpus"] = gpus
        return state

    def load_state(self, state):
        super().load_state(state)
        self._load_profile_state(state)
        if state.get("gpus"):  # a running container's, after a hub restart
            self.host.gpus.restore(self.container_name, list(state["gpus"]))

    def clear_state(self):
        super().clear_state()
        self.profile = self.usage = None
        self.account = None
