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
   ``/home/jovyan`` and the run's work and output folders bound at the paths
   they have on the host, so papermill's arguments are the same either way. Its
   output and exit status come through ``podman start --attach`` (see
   :mod:`hub_ext.host.containerhost`), so the log, the cell progress and the
   deadline are :class:`~.local.LocalExecutor`'s own;
4. ``_kill`` kills the step's container (a timeout, a cancel); the OOM count is
   the containers' ``OOMKilled``; ``_release`` removes them, their mounts and
   the owner's network when nothing else of theirs is on it.

A run's containers carry ``io.shipyard.role=run`` and the run's id; a scheduler
that starts again removes those of its instance that are left (:meth:`sweep`),
as the local executor removes its cgroups, and the store retries their runs.

Not yet in containers: **warm starts** (a container started beforehand per
owner and profile; runs start cold, see docs/containers.md) and GPUs (a GPU
profile is refused).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Sequence

from hub_ext.host.containerhost import ContainerFailed, ContainerHost, exit_status
from hub_ext.host.containers import (
    CONTAINER_HOME,
    ContainerPlacement,
    ContainerSpec,
    ImageMissing,
    container_environment,
    reach_environment,
)
from hub_ext.profiles.model import Profile

from .base import RESULT_FILE_ENV, ExecutorError
from .local import LocalExecutor
from .localrun import LocalRun, ProcessOutput

#: The label with a run's id on each of its containers.
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

    @property
    def gpu_count(self) -> int:
        """No GPU in containers yet: a GPU profile's run is refused with the reason."""
        return 0

    def pooled(self, profile: Profile) -> bool:
        """No warm containers yet: every run starts its container cold."""
        return False

    # ------------------------------------------------------------ the steps

    async def _locate(self, run: LocalRun) -> None:
        if run.spec.profile.gpu:
            raise ExecutorError(
                f"Profile '{run.spec.profile.slug}' asks for GPUs, which runs in containers"
                " cannot have yet; run it with the process placement."
            )
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
        return []

    def _environment(self, run: LocalRun, gpus: list[str]) -> dict[str, str]:
        """As for a process, with the container's home and the image's own PATH."""
        spec = run.spec
        assert run.user is not None  # the account step ran
        env = dict(spec.secrets)
        env.update(spec.extra_env)
        env.update(
            container_environment(
                run.user.pw_name,
                spec.profile,
                {"SHIPYARD_PROFILE_JSON": json.dumps(spec.profile.public_summary())},
            )
        )
        env.update(
            {
                "SHIPYARD_JOB_ID": spec.job_id,
                "SHIPYARD_RUN_ID": spec.run_id,
                RESULT_FILE_ENV: str(spec.result_file),
            }
        )
        return env

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
        try:
            network = await host.network(run.spec.owner, urls)
            binds = []
            for label, source, target in (
                ("home", run.user.pw_dir, CONTAINER_HOME),
                ("work", str(run.workdir), str(run.workdir)),
                ("output", str(run.spec.output_dir), str(run.spec.output_dir)),
            ):
                binds.append((await host.bind(name, label, source, run.user), target))
            mode = host.user_mode(run.spec.owner)
            spec = ContainerSpec(
                name=name,
                image=run.image,
                command=argv,
                env=reach_environment(env, network.gateway),
                owner=run.spec.owner,
                uid=run.user.pw_uid,
                gid=run.user.pw_gid,
                home=run.user.pw_dir,
                home_source=binds[0][0],
                profile=run.spec.profile,
                network=network.name,
                pids_limit=self.placement.pids_limit,
                tmp_size=self.placement.tmp_size,
                user_namespace=mode,
                subid_base=self.placement.subid_base,
                stop_timeout=self.placement.stop_timeout,
                labels=host.labels("run", **{RUN_LABEL: run.spec.run_id}),
                binds=tuple(binds[1:]),
                work_dir=cwd if cwd != run.user.pw_dir else CONTAINER_HOME,
            )
            run.containers.append(name)
            await host.create(spec)
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
        )
        # the bridge exists once the network's first container runs: then the gateway
        # may forward to loopback (a run's first call goes out seconds later)
        route = asyncio.create_task(host.route(network, wait=10))
        ooms = asyncio.create_task(host.count_oom_kills(name, protocol.exited))
        try:
            status = await self.wait_for_exit(run, transport, protocol)
        finally:
            if not ooms.done():
                ooms.cancel()
            elif not ooms.cancelled() and ooms.exception() is None:
                run.oom_kills += ooms.result()
            if not route.done():
                route.cancel()
            elif not route.cancelled() and route.exception() is not None:
                self.log.warning(
                    "Run %s: the network's bridge was not routed: %s",
                    run.spec.run_id,
                    route.exception(),
                )
        inspected = await host.inspect(name)
        code, _ = exit_status(inspected)
        return status if code is None else code

    async def _kill(self, run: LocalRun) -> None:
        for name in run.containers:
            await self.containers.kill(name)

    async def _oom_kills(self, run: LocalRun) -> int:
        return run.oom_kills  # counted while each container ran (_spawn)

    async def _release(self, run: LocalRun) -> None:
        """Remove the run's containers, their mounts, its work folder; the network if last."""
        try:
            for name in run.containers:
                await self.containers.remove(name)
                await self.containers.release_binds(name)
            if run.containers:
                await self.containers.release_network(run.spec.owner)
        finally:
            if run.workdir is not None:
                await asyncio.to_thread(shutil.rmtree, run.workdir, True)
            if run.sink is not None:
                run.sink.close()

    # ------------------------------------------------------------ the service's calls

    async def prewarm(self, owner: str, profile: Profile, *, wait: bool = False) -> int:
        return 0

    async def close(self) -> None:
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
            await self.containers.remove(container["Id"])
            await self.containers.release_binds(name)
            owners.add((container.get("Labels") or {}).get("io.shipyard.user", ""))
            names.append(name)
        for owner in sorted(owners - {""}):
            await self.containers.release_network(owner)
        return sorted(names)
