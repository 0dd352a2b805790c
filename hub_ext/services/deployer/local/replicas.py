"""A version's replicas: started, supervised, restarted and stopped.

Per replica, :meth:`Replicas.add` makes a cgroup ``<version key>-r<N>`` under
``<c.LocalHost.cgroup_parent>-models`` with the profile's CPU and memory limits
(SECURITY rule 6) and starts ``python -m hub_ext.runtime.modelserver`` bound to
127.0.0.1 on a free port, joined to the cgroup and switched to the account
between fork and exec, with an environment built from nothing (the version's
``env``, ``HOME``, the environment's ``PATH``: no secret of the deployer can
leak, SECURITY rule 8), then polls ``GET /health`` until 200 (:mod:`.health`): a
server that reports a failed load, exits, or is not ready in time fails the
version with the server's own reason, and every replica added is removed.

Each replica then has a *supervisor* task: it routes to the replica only while
``/health`` answers, and restarts one that exits (a crash, the OOM killer, or
the server's own recycle after a request timed out, exit status 75) or stops
answering, with exponential backoff (none after a recycle, which is expected).
A replica an earlier deployer left serving is put under a supervisor as it is
(:meth:`Replicas.adopt`), without a restart. A removed replica leaves the
endpoints before its SIGTERM (:meth:`Replicas.stop`), so no request meets a
closed port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping
from pathlib import Path

from hub_ext.host.localproc import process_environment
from hub_ext.host.process import start_time
from hub_ext.host.usage import UsageLabel
from hub_ext.runtime.modelserver.contract import REPLICA_SECRET_ENV, options_environment

from ..backend import MODEL_SERVER_MODULE, DeployFailed, model_server_args
from .health import RECYCLE_EXIT, HealthChecks, ReplicaSettings
from .logs import ReplicaOutput
from .process import ReplicaHost, ReplicaProcess, free_port, make_output, open_output
from .records import Found, Records
from .state import Replica, RunningVersion


def usage_label(version: RunningVersion) -> UsageLabel:
    """What the usage ledger records of a replica of ``version``: a model version of its owner's."""
    spec = version.spec
    return UsageLabel("replica", spec.owner, f"model/{spec.owner}/{spec.name}/v{spec.version}")


class Replicas:
    """Starts, supervises and stops the replicas of the backend's running versions.

    Parameters
    ----------
    versions : Mapping[str, RunningVersion]
        The backend's running versions, read for the ports already taken.
    host : ReplicaHost
        The replicas' cgroups, GPUs and processes.
    records : Records
        Rewritten whenever a replica starts or ends, for the next deployer.
    health : HealthChecks
        Whether a replica is ready, then whether it still serves.
    settings : ReplicaSettings
        ``restart_backoff``, ``restart_backoff_max`` and ``port_range``.
    log : logging.Logger
        The backend's log (a version's own lines go to its :class:`.logs.VersionLog`).
    """

    def __init__(
        self,
        versions: Mapping[str, RunningVersion],
        host: ReplicaHost,
        records: Records,
        health: HealthChecks,
        settings: ReplicaSettings,
        log: logging.Logger,
    ):
        self.versions = versions
        self.host = host
        self.records = records
        self.health = health
        self.settings = settings
        self.log = log

    async def add(self, version: RunningVersion, count: int) -> None:
        """Start ``count`` more replicas; all healthy, or none of them kept."""
        added: list[Replica] = []
        index = 0
        for _ in range(count):
            while index in version.replicas:
                index += 1
            replica = Replica(version, index, f"{version.spec.key}-r{index}")
            version.replicas[index] = replica
            added.append(replica)
        try:
            for replica in added:
                replica.gpus = self.host.allocate_gpus(replica.cgroup, version.spec.profile.gpu)
                replica.task = asyncio.create_task(self._supervise(replica))
            outcomes = await asyncio.gather(
                *(asyncio.shield(r.first) for r in added), return_exceptions=True
            )
        except BaseException:
            await asyncio.gather(*(self.stop(r, 0) for r in added))
            raise
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        if failed:
            await asyncio.gather(*(self.stop(r, 0) for r in added))
            raise failed[0]

    async def adopt(self, version: RunningVersion, found: Found) -> None:
        """Put the replicas an earlier deployer left serving under supervision, as they are."""
        for record in found.replicas:
            replica = Replica(version, int(record["index"]), str(record["cgroup"]))
            replica.port = int(record["port"])
            replica.gpus = [str(g) for g in record.get("gpus") or ()]
            self.host.allocator.restore(replica.cgroup, replica.gpus)
            replica.process = ReplicaProcess(int(record["pid"]), str(record["started"]))
            await self._adopt_output(replica)
            replica.healthy = True
            replica.first.set_result(None)
            version.replicas[replica.index] = replica

    async def _adopt_output(self, replica: Replica) -> None:
        """Read an adopted replica's output from now on: its FIFO, opened again."""
        try:
            await self._read_output(replica, open_output(self._output_path(replica)))
        except OSError as e:  # its FIFO is gone: its lines are lost, it serves on
            self.log.warning("No output of adopted replica %s: %s", replica.cgroup, e)

    def supervise_adopted(self, version: RunningVersion) -> None:
        """Start the supervisors of the replicas :meth:`adopt` put in ``version``."""
        for replica in version.replicas.values():
            replica.task = asyncio.create_task(self._supervise(replica, adopted=True))

    async def _supervise(self, replica: Replica, adopted: bool = False) -> None:
        """Start the replica (unless ``adopted``: it serves already), then keep it serving:
        restart it whenever it exits or hangs."""
        loop = asyncio.get_running_loop()
        log = replica.version.log
        backoff = self.settings.restart_backoff
        while not replica.stopping:
            code = None
            try:
                if not adopted:
                    await self._launch_until_healthy(replica)
                adopted = False
            except DeployFailed as e:
                await self.end(replica)
                if not replica.first.done():
                    replica.first.set_exception(e)
                    return
                log.note(f"{replica.source}: restart failed: {e.reason}")
            except Exception as e:
                await self.end(replica)
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
                code = await self.health.watch(replica)
                replica.healthy = False
                await self.end(replica)
                if code is None and replica.process is not None:
                    code = replica.process.returncode  # learnt at the end (a container's)
                if replica.stopping:
                    return
                if loop.time() - since >= self.settings.restart_backoff_max:
                    backoff = self.settings.restart_backoff
                log.note(f"{replica.source}: {self.health.exit_text(replica, code)}; restarting")
                self.log.warning(
                    "Replica %s of %s: %s; restarting",
                    replica.index,
                    replica.version.spec.display_name,
                    self.health.exit_text(replica, code),
                )
            delay = 0.0 if code == RECYCLE_EXIT else backoff
            if code != RECYCLE_EXIT:
                backoff = min(
                    max(backoff * 2, self.settings.restart_backoff),
                    self.settings.restart_backoff_max,
                )
            await asyncio.sleep(delay)
            replica.restarts += 1

    async def _launch_until_healthy(self, replica: Replica) -> None:
        # a port found free may be taken before the server binds it: try another
        for attempt in range(3):
            await self._launch(replica)
            try:
                await self.health.until_healthy(replica)
                return
            except DeployFailed:
                tail = replica.output.tail if replica.output is not None else ()
                lost_port = any("address already in use" in t.lower() for t in tail)
                if not lost_port or attempt == 2:
                    raise
            await self.end(replica)

    async def _launch(self, replica: Replica) -> None:
        """The replica's cgroup and model server process."""
        version = replica.version
        spec = version.spec
        used = {r.port for v in self.versions.values() for r in v.replicas.values() if r.port}
        replica.port = free_port(used, self.settings.port_range)
        options = model_server_args(spec, "127.0.0.1", replica.port)
        if version.summary is not None:
            options += ["--training-summary", str(version.summary)]
        # the first replica downloads the model as the owner; restarts load that copy
        options += ["--model-cache", str(version.model_cache)]
        # the options in the environment, which only the owner reads: every account reads
        # a command line, and these name the owner's run, model and port
        env = self._environment(version, replica.gpus)
        env.update(options_environment(options))
        assert version.built is not None  # processes run on the built environment
        argv = [str(version.built.python), "-m", MODEL_SERVER_MODULE]
        # the replica outlives this process (no PR_SET_PDEATHSIG): a deployer that dies is
        # replaced by one that adopts it (see .records)
        reader, output = await asyncio.to_thread(make_output, self._output_path(replica))
        try:
            popen = await self.host.launch(
                replica.cgroup,
                version.user,
                spec.profile,
                replica.gpus,
                argv,
                env,
                version.folder,
                output,
                usage=usage_label(version),
            )
        except DeployFailed:
            os.close(reader)
            raise
        finally:
            os.close(output)
        replica.process = ReplicaProcess(popen.pid, start_time(popen.pid) or "", popen)
        await self._read_output(replica, reader)
        self.records.save(version)
        version.log.note(
            f"{replica.source}: started pid {popen.pid} on port {replica.port} "
            f"as {version.user.pw_name} in {replica.cgroup}"
        )

    def _output_path(self, replica: Replica) -> Path:
        return self.records.output_path(replica.cgroup)

    async def _read_output(self, replica: Replica, fd: int) -> None:
        """Read the replica's FIFO (this deployer's end, ``fd``) into the version's log."""
        output = ReplicaOutput(replica.version.log, replica.source)
        loop = asyncio.get_running_loop()
        replica.reader, _ = await loop.connect_read_pipe(
            lambda: output, os.fdopen(fd, "rb", buffering=0)
        )
        replica.output = output

    @staticmethod
    def _environment(version: RunningVersion, gpus: list[str]) -> dict[str, str]:
        """The replica's whole environment, built from nothing: no variable of the service leaks."""
        spec = version.spec
        assert version.built is not None  # processes run on the built environment
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

    async def end(self, replica: Replica) -> None:
        """The replica's process is over: kill what is left, remove its cgroup."""
        replica.healthy = False
        process = replica.process
        if process is not None and not process.exited.done():
            await self.host.kill(replica.cgroup, replica.pid)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(process.exited), self.host.cleanup_timeout)
        await self.host.remove_cgroup(replica.cgroup)
        if replica.output is not None:  # the last lines of a process that is gone
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(replica.output.ended), 1)
        if replica.reader is not None:
            with contextlib.suppress(Exception):  # of a closed event loop
                replica.reader.close()
            replica.reader = None
        if process is not None:
            process.close()
        self._output_path(replica).unlink(missing_ok=True)
        self.records.save(replica.version)

    async def stop(self, replica: Replica, grace: float) -> None:
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
        if pid is not None and grace > 0 and replica.process is not None:
            replica.version.log.note(f"{replica.source}: stopping (SIGTERM)")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(replica.process.exited), grace)
        await self.end(replica)
        self.host.allocator.release(replica.cgroup)
        replica.version.replicas.pop(replica.index, None)
        if replica.process is not None:
            code = replica.process.returncode
            replica.version.log.note(f"{replica.source}: {self.health.exit_text(replica, code)}")
