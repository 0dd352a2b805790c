"""ContainerExecutor: a run is papermill in a podman container of its profile's image.

With ``c.LocalHost.placement = "container"`` (passed on by the hub) the scheduler
runs notebooks with this executor instead of :class:`~.local.LocalExecutor`: the
same steps, report, log, progress, deadline and cancel, with the run's
processes in a container of the profile's environment image (``shipyard image
build ENV``), the one a server of that profile runs in and Kubernetes runs:

1. ``_locate``: the image, refused with the command that builds it when it is
   not there (no local virtual environment is needed);
2. ``_account`` and ``_prepare`` as for processes: the run's files (the work
   folder with the snapshot and parameters, the output folder) belong to the
   owner's account;
3. ``_spawn``: one container per step (papermill, then nbconvert when HTML was
   asked for), made by :class:`~hub_ext.host.containerhost.ContainerHost` from
   the secure spec the servers have (:func:`~hub_ext.host.containers.create_spec`:
   read-only root, no capabilities, the profile's limits, uid 1000 on idmapped
   folders, the owner's confined network), with the owner's home at
   ``/home/jovyan`` and the run's work and output folders (and a pipeline step's
   workspace) bound at the paths they have on the host, so papermill's arguments
   and a step's file parameters are the same either way. Its
   output and exit status come through ``podman start --attach`` (see
   :mod:`hub_ext.host.containerhost`), so the log, the cell progress and the
   deadline are :class:`~.local.LocalExecutor`'s own;
4. ``_kill`` kills the step's container (a timeout, a cancel); the OOM count is
   the containers' ``OOMKilled``; ``_release`` removes them, their mounts and
   the owner's network when nothing else of theirs is on it.

A run's containers carry ``io.shipyard.role=run`` and the run's id; a scheduler
that starts again removes those of its instance that are left (:meth:`sweep`),
as the local executor removes its cgroups, and the store retries their runs.

**Warm starts** (:class:`ContainerWarmStarter`): as for processes, a warm
container per owner, profile and image has imported papermill and started its
kernel before its run comes (``python -m hub_ext.runtime.warm``, its stdin
attached through ``podman start --attach --interactive``), and serves one run,
never two. Its folders are bound when it is made, before the run exists, so it
gets an *exchange* folder of the owner's (``work`` and ``output``): at the
hand-over the run's notebook and parameters are copied into ``work``, the
request names the exchange folder's paths, and once papermill is done what the
run wrote in ``output`` is moved to the run's output folder, the owner's, before
the report reads it. A pipeline step never runs warm here: its workspace is a
folder no warm container was made with.

GPUs come through CDI (``c.ContainerPlacement.cdi_spec_dirs``): a run of a GPU
profile gets its GPUs' CDI devices in its papermill container, or is refused with
what an admin installs where no CDI spec declares them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import os
import pwd
import secrets
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hub_ext.host import slugs
from hub_ext.host.containerhost import ContainerFailed, ContainerHost, exit_status
from hub_ext.host.containers import (
    CONTAINER_HOME,
    USER_LABEL,
    ContainerPlacement,
    ImageMissing,
    container_environment,
    reach_environment,
)
from hub_ext.host.localproc import profile_limits
from hub_ext.profiles.model import Profile
from hub_ext.runtime import warm as warm_protocol

from .base import ExecutorError
from .local import LocalExecutor
from .localrun import LocalRun, ProcessOutput
from .pool import Starter, WarmKey, WarmProcess
from .warmstart import WARM_MODULE, WarmStarter

#: The variable that names a pipeline step's workspace (bound at the same path inside).
WORKSPACE_VARIABLE = "SHIPYARD_WORKSPACE"
#: The label with a run's id on each of its containers (empty on a warm one's until then).
RUN_LABEL = "io.shipyard.run"


class ContainerExecutor(LocalExecutor):
    """Runs each notebook with papermill in a container of its profile's image.

    Chosen by ``c.LocalHost.placement = "container"`` (or
    ``c.SchedulerService.executor_class = "container"``); the containers are
    configured as ``c.ContainerPlacement``, the accounts as ``c.LocalHost``, and
    ``max_log_bytes`` as ``c.LocalExecutor``'s (this class's section overrides it).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.placement = ContainerPlacement(parent=self)
        self.containers = ContainerHost(self.placement, self.log)
        self.warm: ContainerWarmStarter = ContainerWarmStarter(self)
        self.pool = self.warm.pool

    @property
    def gpu_count(self) -> int:
        """The GPUs the CDI specs declare (``c.ContainerPlacement.cdi_spec_dirs``)."""
        return len(self.containers.gpus.devices)

    # ------------------------------------------------------------ the steps

    async def _locate(self, run: LocalRun) -> None:
        if os.geteuid() != 0:
            raise ExecutorError(
                "Runs in containers need the scheduler to run as root (rootful podman)."
            )
        try:
            run.image = await self.containers.image(run.spec.profile)
        except (ImageMissing, ContainerFailed) as e:
            raise ExecutorError(str(e)) from None

    def _python(self, run: LocalRun) -> str:
        return "python"  # the image's environment is first on its PATH

    def _allocate_gpus(self, run: LocalRun) -> list[str]:
        """The run's CDI GPUs, for its papermill container (released with the run)."""
        try:
            return self.containers.allocate_gpus(run.spec.name, run.spec.profile.gpu)
        except ContainerFailed as e:
            raise ExecutorError(str(e)) from None

    def _owner_environment(self, run: LocalRun, gpus: list[str]) -> dict[str, str]:
        """As for a process, with the container's home and the image's own PATH."""
        assert run.user is not None  # the account step ran
        return self.container_environment(run.user, run.spec.profile)

    @staticmethod
    def container_environment(user: pwd.struct_passwd, profile: Profile) -> dict[str, str]:
        """What every container of an owner's profile gets, whatever the run (warm ones too)."""
        return container_environment(
            user.pw_name,
            profile,
            {"SHIPYARD_PROFILE_JSON": json.dumps(profile.public_summary())},
        )

    async def _spawn(
        self,
        run: LocalRun,
        argv: list[str],
        env: dict,
        cwd: str,
        *,
        gpus: Sequence[str] | None = None,
    ) -> int | None:
        """Run ``argv`` in a container of the run's image until it exits or the deadline."""
        loop = asyncio.get_running_loop()
        if run.stopping:
            return None
        if loop.time() >= run.deadline:
            run.timed_out = True
            return None
        assert run.user is not None and run.workdir is not None  # account and prepare ran
        host = self.containers
        name = f"{self.placement.network_prefix}-{run.cgroup}-{len(run.containers) + 1}"
        urls = [v for v in env.values() if v.startswith(("http://", "https://"))]
        run.containers.append(name)  # from here on, what is made of it is released with the run
        try:
            network = await host.network(run.spec.owner, urls)
            binds = []
            folders = [
                ("home", run.user.pw_dir, CONTAINER_HOME),
                ("work", str(run.workdir), str(run.workdir)),
                ("output", str(run.spec.output_dir), str(run.spec.output_dir)),
            ]
            workspace = run.spec.extra_env.get(WORKSPACE_VARIABLE)
            if workspace:  # a pipeline step: its run's workspace, at the same path
                folders.append(("workspace", workspace, workspace))
            for label, source, target in folders:
                binds.append((await host.bind(name, label, source, run.user), target))
            spec = host.spec(
                account=run.user,
                owner=run.spec.owner,
                name=name,
                image=run.image,
                command=argv,
                env=reach_environment(env, network.gateway),
                home_source=binds[0][0],
                profile=run.spec.profile,
                network=network.name,
                labels=host.labels("run", **{RUN_LABEL: run.spec.run_id}),
                binds=tuple(binds[1:]),
                work_dir=cwd if cwd != run.user.pw_dir else CONTAINER_HOME,
                devices=tuple(gpus or ()),
            )
            await host.create(spec)
            if run.sink is not None:
                run.sink.note(f"in container {name} of {run.image}")
        except ContainerFailed as e:
            raise ExecutorError(str(e)) from None
        if run.stopping:  # cancelled while the container was made
            return None
        protocol = ProcessOutput(run.sink)
        transport, _ = await loop.subprocess_exec(
            lambda: protocol,
            *host.attach_argv(name),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            # conmon 2.1 leaves an empty "oom" file in its client's folder after an OOM kill
            # (containers/conmon#504): the run's work folder, removed with the run
            cwd=str(run.workdir),
        )
        # the bridge exists once the network's first container runs: then the gateway
        # may forward to loopback (a run's first call goes out seconds later)
        route = asyncio.create_task(host.route(network, wait=10))
        try:
            return await self.wait_in_container(run, name, transport, protocol)
        finally:
            if not route.done():
                route.cancel()
            elif not route.cancelled() and route.exception() is not None:
                self.log.warning(
                    "Run %s: the network's bridge was not routed: %s",
                    run.spec.run_id,
                    route.exception(),
                )

    async def wait_in_container(
        self,
        run: LocalRun,
        name: str,
        transport: asyncio.SubprocessTransport,
        protocol: ProcessOutput,
    ) -> int | None:
        """:meth:`wait_for_exit` of container ``name`` (attached), counting its OOM kills
        and its usage (recorded as the run's, from its cgroup, until it exits)."""
        ooms = asyncio.create_task(self.containers.count_oom_kills(name, protocol.exited))
        usage = asyncio.create_task(
            self.containers.count_usage(
                name,
                protocol.exited,
                self.local_host.usage_ledger,
                self.cgroup_parent,  # the ledger folder of the runs' processes
                self.usage_label(run),
                run.spec.profile.slug,
                profile_limits(
                    run.spec.profile, self.containers.gpus.in_use().get(run.spec.name, [])
                ),
            )
        )
        try:
            status = await self.wait_for_exit(run, transport, protocol)
        finally:
            if not ooms.done():
                ooms.cancel()
            elif not ooms.cancelled() and ooms.exception() is None:
                run.oom_kills += ooms.result()
            if protocol.exited.done():
                await usage  # its last reading, written once the container exited
            else:
                usage.cancel()  # the service stops: the usage service ends the record
        code, _ = exit_status(await self.containers.inspect(name))
        return status if code is None else code

    async def _kill(self, run: LocalRun) -> None:
        for name in run.containers:
            await self.containers.kill(name)

    async def _oom_kills(self, run: LocalRun) -> int:
        return run.oom_kills  # counted while each container ran (_spawn)

    async def _release(self, run: LocalRun) -> None:
        """Remove the run's containers, their mounts, its work folder; the network if last."""
        self.containers.gpus.release(run.spec.name)
        try:
            for name in run.containers:
                await self._discard(name)
            if run.containers:
                await self.containers.release_network(run.spec.owner)
        finally:
            if run.workdir is not None:
                await asyncio.to_thread(shutil.rmtree, run.workdir, True)
            if run.sink is not None:
                run.sink.close()

    async def _discard(self, name: str) -> None:
        """Remove container ``name``, its mounts and, for a warm one, its exchange folder."""
        await self.containers.discard(name)
        if self.warm.is_warm(name):
            await asyncio.to_thread(shutil.rmtree, self.warm.exchange(name), True)

    # ------------------------------------------------------------ the service's calls

    async def close(self) -> None:
        """Stop every warm container (the service calls it at shutdown); runs are not touched."""
        await self.pool.close()
        self.containers.close()

    async def sweep(self) -> list[str]:
        """Remove every run container of this instance: a scheduler that died left them."""
        names = await self._remove_runs()
        if names:
            self.log.warning(
                "Removed %d run containers left by an earlier scheduler: %s",
                len(names),
                ", ".join(names),
            )
        return names

    async def cleanup_orphan(self, run_id: str) -> None:
        if run_id not in self._runs:
            await self._remove_runs(run_id)

    async def _remove_runs(self, run_id: str | None = None) -> list[str]:
        labels = {RUN_LABEL: run_id} if run_id else {}
        try:
            found = await self.containers.list("run", **labels)
        except Exception as e:  # podman's API down: nothing to sweep that can be reached
            self.log.warning("Could not list run containers: %s", e)
            return []
        names, owners = [], set()
        for container in found:
            name = (container.get("Names") or [container["Id"]])[0]
            await self._discard(name)
            owners.add((container.get("Labels") or {}).get(USER_LABEL, ""))
            names.append(name)
        for owner in sorted(owners - {""}):
            await self.containers.release_network(owner)
        return sorted(names)


class ContainerWarmStarter(WarmStarter):
    """Warm containers: started, handed a run through their exchange folder, stopped.

    The pool, its settings (``c.LocalExecutor.warm_*``) and its rules (one owner,
    profile and image per container; one run per kernel; a run waits
    ``warm_wait`` at most for one that is starting) are the process pool's
    (:mod:`.warmstart`, :mod:`.pool`); what differs is what is started and how a
    run reaches it.
    """

    executor: ContainerExecutor

    def is_warm(self, name: str) -> bool:
        """Whether container ``name`` is a warm one of this executor's."""
        return name.startswith(f"{self.executor.placement.network_prefix}-warm-")

    @staticmethod
    def exchange(name: str) -> Path:
        """The host folder through which warm container ``name`` gets its run (the owner's).

        Named by a digest of ``name``, which holds the owner's name.
        """
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"shipyard-warmc-{digest}"

    @staticmethod
    def image_key(owner: str, profile: Profile, image: str, user: pwd.struct_passwd) -> WarmKey:
        """What a warm container is filed under: a run may use it only if its own key is equal."""
        started_with = [
            profile.public_summary(),
            profile.cpu_limit_cores,
            profile.cpu_guarantee_cores,
            profile.mem_limit_bytes,
            profile.mem_guarantee_bytes,
            image,
        ]
        fingerprint = hashlib.sha256(json.dumps(started_with, default=str).encode()).hexdigest()
        return WarmKey(owner, user.pw_uid, profile.slug, image, fingerprint)

    async def _ahead(self, owner: str, profile: Profile) -> tuple[WarmKey, Starter] | None:
        executor = self.executor
        try:
            image = await executor.containers.image(profile)
            user = await executor.local_host.account(owner, ExecutorError)
        except (ImageMissing, ContainerFailed, ExecutorError) as e:
            executor.log.warning("Not pre-starting a kernel for %s: %s", owner, e)
            return None
        key = self.image_key(owner, profile, image, user)
        return key, functools.partial(self.start_container, key, user, image, profile)

    def _for_run(self, run: LocalRun) -> tuple[WarmKey, Starter] | None:
        if not run.image or run.user is None:
            return None
        if WORKSPACE_VARIABLE in run.spec.extra_env:
            return None  # a pipeline step: its workspace is bound when its container is made
        key = self.image_key(run.spec.owner, run.spec.profile, run.image, run.user)
        start = functools.partial(self.start_container, key, run.user, run.image, run.spec.profile)
        return key, start

    async def hand_over(
        self, run: LocalRun, warm: WarmProcess, env: dict[str, str], cwd: str
    ) -> int | None:
        """Copy the run's inputs in, hand it over, then move what it wrote to its output folder."""
        executor, spec = self.executor, run.spec
        assert run.sink is not None and run.input is not None and run.user is not None
        assert run.parameters_file is not None
        folder = self.exchange(warm.cgroup)
        work, output = folder / "work", folder / "output"
        run.cgroup = warm.cgroup
        run.containers.append(warm.cgroup)
        run.sink.note(f"in container {warm.cgroup} of {run.image}, started beforehand")
        warm.protocol.hand_over(run.sink)
        urls = [v for v in env.values() if v.startswith(("http://", "https://"))]
        try:
            network = await executor.containers.network(spec.owner, urls)
        except ContainerFailed as e:
            raise ExecutorError(str(e)) from None
        await asyncio.to_thread(self._copy_inputs, run, work)
        outputs = run.outputs["ipynb"]
        moved = {
            str(spec.output_dir): str(output),
            str(spec.result_file): str(output / spec.result_file.name),
        }
        run_env = {k: moved.get(v, v) for k, v in reach_environment(env, network.gateway).items()}
        request = warm_protocol.request_line(
            input=str(work / run.input.name),
            output=str(output / outputs.name),
            parameters_file=str(work / run.parameters_file.name),
            cwd=moved.get(cwd, cwd if cwd != run.user.pw_dir else CONTAINER_HOME),
            env={k: v for k, v in run_env.items() if warm.env.get(k) != v},
        )
        stdin = warm.transport.get_pipe_transport(0)
        assert isinstance(stdin, asyncio.WriteTransport)  # attached with --interactive
        stdin.write(request)
        stdin.close()
        try:
            return await executor.wait_in_container(run, warm.cgroup, warm.transport, warm.protocol)
        finally:
            await asyncio.to_thread(_move_all, output, spec.output_dir, run.user)

    def _copy_inputs(self, run: LocalRun, work: Path) -> None:
        assert run.input is not None and run.parameters_file is not None and run.user is not None
        for source in (run.input, run.parameters_file):
            target = work / source.name
            shutil.copyfile(source, target, follow_symlinks=False)
            os.chmod(target, 0o600)
            if self.executor.run_as_root:
                os.chown(target, run.user.pw_uid, run.user.pw_gid, follow_symlinks=False)

    async def start_container(
        self, key: WarmKey, user: pwd.struct_passwd, image: str, profile: Profile
    ) -> WarmProcess:
        """Start a warm container as a cold run's would be made, and wait for its READY."""
        executor = self.executor
        host = executor.containers
        prefix = executor.placement.network_prefix
        name = f"{prefix}-warm-{slugs.user_slug(f'{key.owner}-{secrets.token_hex(4)}')}"
        env = executor.container_environment(user, profile)
        protocol = ProcessOutput(None, executor.log, name)
        transport = None
        try:
            folder = self.exchange(name)
            await asyncio.to_thread(self._exchange_folder, folder, user)
            network = await host.network(key.owner, [])
            home = await host.bind(name, "home", user.pw_dir, user)
            shared = await host.bind(name, "exchange", str(folder), user)
            spec = host.spec(
                account=user,
                owner=key.owner,
                name=name,
                image=image,
                command=["python", "-m", WARM_MODULE],
                env=env,
                home_source=home,
                profile=profile,
                network=network.name,
                labels=host.labels("run", **{RUN_LABEL: ""}),
                binds=((shared, str(folder)),),
                stdin=True,
            )
            await host.create(spec)
            loop = asyncio.get_running_loop()
            transport, _ = await loop.subprocess_exec(
                lambda: protocol,
                *host.attach_argv(name, stdin=True),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                cwd=str(folder),  # as a cold run's: conmon's stray "oom" file goes with it
            )
            await self.until_ready(name, transport, protocol)
            await host.route(network)
            pid = transport.get_pid()
            assert pid is not None  # started
            return WarmProcess(key, name, pid, transport, protocol, env)
        except BaseException:
            await self.remove(name, transport)
            raise

    def _exchange_folder(self, folder: Path, user: pwd.struct_passwd) -> None:
        for path in (folder, folder / "work", folder / "output"):
            os.mkdir(path, 0o700)  # fails on anything already there, a link included
            if self.executor.run_as_root:
                os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)

    async def remove(self, name: str, transport: asyncio.SubprocessTransport | None) -> None:
        """Remove warm container ``name``, its mounts and its exchange folder (and the
        owner's network when nothing else of theirs is on it)."""
        host = self.executor.containers
        found = await host.inspect(name)
        owner = ((found or {}).get("Config", {}).get("Labels") or {}).get(USER_LABEL, "")
        await self.executor._discard(name)
        if owner:
            await host.release_network(owner)
        if transport is not None:
            with contextlib.suppress(Exception):  # of a closed event loop
                transport.close()


def _move_all(source: Path, target: Path, user: pwd.struct_passwd) -> None:
    """Move everything in ``source`` into ``target``, the owner's (never following a link)."""
    if not source.is_dir():
        return
    for entry in source.iterdir():
        destination = target / entry.name
        if destination.is_dir() and not destination.is_symlink():
            shutil.rmtree(destination)
        shutil.move(str(entry), str(destination))
        if os.geteuid() == 0:
            for path in (destination, *(destination.rglob("*") if destination.is_dir() else ())):
                os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
