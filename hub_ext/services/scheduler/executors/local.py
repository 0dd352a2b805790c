"""LocalExecutor: a run is one papermill process, as its owner, in a cgroup of its own.

This is the "one machine" column of ARCHITECTURE.md for scheduled jobs. A run
goes through a short list of named steps (papermill's ``execute.py`` style):

1. ``_find_environment``: the profile's built environment (``shipyard env build``);
2. ``_account``: the owner's system account, named and created exactly as
   LocalProfileSpawner does (:func:`hub_ext.host.slugs.account_name`), so a job's
   files belong to the same Unix user as the server's;
3. ``_prepare``: the log (opened by the service, never through a link), the
   output directory (the account's), and a private work folder with a copy of
   the snapshot and the parameters as a YAML file (data, never code: SECURITY
   rule 4);
4. ``_spawn`` papermill with the environment's own Python, through
   :meth:`LocalHost.launch <hub_ext.host.local.LocalHost.launch>`: it makes
   ``job-<run slug>`` under ``<c.LocalHost.cgroup_parent>-jobs`` with the
   profile's CPU and memory limits (:mod:`hub_ext.host.cgroups`), and starts
   the process joined to it and switched to the account between fork and
   exec, with an environment built from nothing (no hub secret can leak:
   SECURITY rule 8), under one deadline for the whole run (SECURITY rule 6;
   papermill has none by default);
5. ``_spawn`` nbconvert the same way, in the same cgroup, when HTML was asked
   for and the notebook ran to its end;
6. ``_release``: every process left in the cgroup is killed and the cgroup
   removed, whatever happened, before the outputs are read back for the report
   (:func:`.localrun.run_report`).

How steps 2 and 4 start a process as its owner (account, cgroup, switch of
user, environment, death with the service, killing) is the one path the
spawner and the deployer's LocalBackend take too (:mod:`hub_ext.host.launch`,
:mod:`hub_ext.host.localproc`).

Step 4 has a fast path: a *warm process* (:mod:`.warmstart`) that has already
imported papermill and started its kernel, as the same owner, in the same
environment, in a cgroup of its own with the profile's limits. When
:meth:`LocalExecutor.prewarm` has left one ready for the run's owner, profile
and environment (:mod:`.pool`), the run is handed to it: from then on it is
the run's papermill process in the run's cgroup (same log, deadline, cancel,
OOM count and release). Without a ready one the run goes the cold way; it
never waits for one.

A timeout or a cancel kills the whole cgroup: papermill, its kernel and
anything the notebook started, including processes in a new session, which a
process-group kill would miss. Cell progress comes from papermill's
``--log-output`` lines (``Executing Cell N``), which are also the run's log.

Rejected alternatives: running papermill in the service's own process
(a notebook is code and must run as its owner: SECURITY rule 5), keeping
kernels warm in a process shared between users or runs (same rule; see
:mod:`.pool`), and
``asyncio.subprocess.Process.wait()``, which also waits until every process
holding the output pipe has exited, so a notebook leaving a background process
behind would have looked like a run that never ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from traitlets import Integer, observe

from hub_ext.environments.catalog import BuiltEnvironment
from hub_ext.host.cgroups import CgroupDriver
from hub_ext.host.gpus import GpuAllocator, GpuUnavailable
from hub_ext.host.launch import CgroupFailed, LaunchRequest
from hub_ext.host.local import UsesLocalHost, deprecated_help
from hub_ext.host.localproc import PASSED_THROUGH as PASSED_THROUGH  # re-exported: public here
from hub_ext.host.localproc import (
    kill_cgroup,
    kill_tree,
    oom_kills,
    process_environment,
)
from hub_ext.host.usage import UsageLabel
from hub_ext.profiles.model import Profile
from hub_ext.runtime import warm as warm_protocol

from .base import (
    RESULT_FILE_ENV,
    Executor,
    ExecutorError,
    ProgressCallback,
    ProgressParser,
    RunLog,
    RunReport,
    RunSpec,
    job_name,
    papermill_args,
    papermill_cell_count,
    parameters_yaml,
)
from .localrun import LocalRun, ProcessOutput, run_report
from .warmstart import WarmPoolSettings, WarmStarter


class LocalExecutor(UsesLocalHost, WarmPoolSettings, Executor):
    """Runs each notebook with papermill, as its owner, inside the profile's limits.

    Select it with ``c.SchedulerService.executor_class = "local"``. When the
    service runs as root, every run uses its owner's system account (created
    if missing) and a cgroup of its own under ``<c.LocalHost.cgroup_parent>-jobs``;
    otherwise it runs as the service's user with the best limits the host allows
    (see :mod:`hub_ext.host.cgroups`). Accounts, cgroups, environments and GPUs
    are configured as ``c.LocalHost`` (:mod:`hub_ext.host.local`), the same
    settings as the spawner's.
    """

    cgroup_part = "jobs"

    cleanup_timeout = Integer(
        None,
        allow_none=True,
        help=deprecated_help(
            "cleanup_timeout", "c.LocalExecutor.cleanup_timeout = 30", added="0.3"
        ),
    ).tag(config=True)

    @observe("cleanup_timeout")
    def _deprecated_cleanup_timeout(self, change):
        self._forward_to_host("cleanup_timeout", "cleanup_timeout", change.new)

    max_log_bytes = Integer(
        50 * 2**20,
        help="""
        Largest log kept per run; what a notebook prints beyond it is dropped.

        The log holds papermill's cell markers and every cell's output, so a
        notebook printing in a loop could otherwise fill the disk.

        Example::

            c.LocalExecutor.max_log_bytes = 200 * 1024 * 1024

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._runs: dict[str, LocalRun] = {}
        self._driver: CgroupDriver | None = None
        self._allocator: GpuAllocator | None = None
        #: starts, hands over and stops warm processes; ``pool`` keeps them
        self.warm = WarmStarter(self)
        self.pool = self.warm.pool

    @property
    def run_as_root(self) -> bool:
        return self.local_host.run_as_root

    @property
    def driver(self) -> CgroupDriver:
        if self._driver is None:
            self._driver = self.local_host.open_driver(
                self.cgroup_parent,
                "No writable cgroup hierarchy: runs get per-process rlimits, no CPU limit, "
                "and a timeout cannot find every process a notebook started.",
            )
        return self._driver

    @property
    def allocator(self) -> GpuAllocator:
        if self._allocator is None:
            self._allocator = GpuAllocator(self.local_host.gpu_devices)
        return self._allocator

    @property
    def gpu_count(self) -> int:
        """The GPUs runs may have here (``gpu_devices``), as LocalProfileSpawner counts its own."""
        return len(self.local_host.gpu_devices)

    # ------------------------------------------------------------ the run

    async def execute(self, spec: RunSpec, progress: ProgressCallback) -> RunReport:
        if spec.run_id in self._runs:
            raise ExecutorError(f"Run {spec.run_id} is already running here.")
        loop = asyncio.get_running_loop()
        run = LocalRun(spec, deadline=loop.time() + spec.timeout)
        self._runs[spec.run_id] = run
        events: asyncio.Queue = asyncio.Queue()
        reporter = asyncio.create_task(self._report_progress(events, progress))
        try:
            try:
                await self._run_steps(run, events)
            finally:
                await self._release(run)
                events.put_nowait(None)
                await reporter
            return run_report(run)
        finally:
            reporter.cancel()
            self._runs.pop(spec.run_id, None)

    async def _run_steps(self, run: LocalRun, events: asyncio.Queue) -> None:
        spec = run.spec
        await self._locate(run)
        run.outputs = spec.output_paths()
        run.user = await self._account(spec.owner)
        await asyncio.to_thread(self._prepare, run)
        run.parser = ProgressParser(run.cell_count)

        def on_line(line: str) -> None:
            found = run.parser.feed(line)
            if found:
                events.put_nowait(found)

        run.sink.on_line = on_line
        gpus = self._allocate_gpus(run)
        env = self._environment(run, gpus)
        cwd = os.path.abspath(spec.cwd or spec.output_dir)
        python = self._python(run)
        warm = await self.warm.take(run, env)
        if warm is not None:
            run.papermill_exit = await self.warm.hand_over(run, warm, env, cwd)
        else:
            # ``python -m papermill`` with its kernel on Unix sockets in the work folder,
            # whose names cannot collide as the TCP ports of kernels starting together do
            # (warm.kernel_config); its arguments in the work folder (_prepare); the run's
            # cgroup is made for it, with the run's GPUs the only ones it may open
            run.papermill_exit = await self._spawn(
                run,
                [python, "-c", warm_protocol.PAPERMILL_CLI_CODE, str(run.workdir)],
                env,
                cwd,
                gpus=gpus,
            )
        run.sink.on_line = None
        if run.papermill_exit == 0 and "html" in run.outputs and not run.stopping:
            html = run.outputs["html"]
            run.sink.note(f"converting the notebook to {html.name}")
            try:
                # in the output folder, named relative to it: the folder (the run's id)
                # stays off the command line
                run.html_exit = await self._spawn(
                    run,
                    [
                        python,
                        "-m",
                        "nbconvert",
                        "--to=html",
                        "--output-dir=.",
                        f"--output={html.stem}",
                        os.path.relpath(run.outputs["ipynb"], html.parent),
                    ],
                    env,
                    str(html.parent),
                )
            except ExecutorError as e:
                run.sink.note(str(e))
                run.html_exit = -1
        run.oom_kills = await self._oom_kills(run)

    # the steps that depend on where the run's code runs (ContainerExecutor overrides them)

    async def _locate(self, run: LocalRun) -> None:
        """Find what the run runs on: the profile's built environment."""
        run.built = self._find_environment(run.spec.profile)

    def _python(self, run: LocalRun) -> str:
        """The Python that runs papermill and nbconvert."""
        assert run.built is not None  # located
        return str(run.built.python)

    async def _oom_kills(self, run: LocalRun) -> int:
        """How many of the run's processes the kernel's OOM killer ended."""
        return oom_kills(self.driver, run.cgroup)

    def _find_environment(self, profile: Profile) -> BuiltEnvironment:
        return self.local_host.environment(profile, ExecutorError)

    async def _account(self, owner: str) -> pwd.struct_passwd:
        """The owner's account (as root), or the service's own user."""
        return await self.local_host.account(owner, ExecutorError)

    def _prepare(self, run: LocalRun) -> None:
        """Log, output directory and work folder (input copy, parameters); in a thread."""
        spec, user = run.spec, run.user

        def own(path: Path, mode: int) -> None:
            if self.run_as_root:
                os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
            os.chmod(path, mode, follow_symlinks=False)

        try:
            data = spec.notebook.read_bytes()
            notebook = json.loads(data)
        except OSError as e:
            raise ExecutorError(f"Cannot read the snapshot {spec.notebook}: {e.strerror}") from None
        except ValueError:
            raise ExecutorError(
                f"The snapshot {spec.notebook} is not a notebook (not JSON)."
            ) from None
        run.cell_count = papermill_cell_count(notebook, bool(spec.parameters))

        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        run.sink = RunLog(spec.log_path, self.max_log_bytes, spec.secrets)
        spec.output_dir.mkdir(parents=True, exist_ok=True)
        own(spec.output_dir, 0o750)
        for stale in (*run.outputs.values(), spec.result_file):  # of an earlier attempt
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()

        # named by chance, not by the run: the folder is on papermill's command line
        run.workdir = Path(tempfile.mkdtemp(prefix="shipyard-run-"))
        own(run.workdir, 0o700)
        run.input = run.workdir / spec.notebook.name
        run.input.write_bytes(data)
        own(run.input, 0o600)
        run.parameters_file = run.workdir / "parameters.yaml"
        run.parameters_file.write_text(parameters_yaml(spec.parameters), encoding="utf-8")
        own(run.parameters_file, 0o600)
        # a cold papermill's arguments, in a file of the owner's rather than on its command
        # line, which every account reads and where they would name the run's folders
        args = run.workdir / warm_protocol.PAPERMILL_ARGS_FILE
        cwd = os.path.abspath(spec.cwd or spec.output_dir)
        args.write_text(
            json.dumps(papermill_args(run.input, run.outputs["ipynb"], run.parameters_file, cwd)),
            encoding="utf-8",
        )
        own(args, 0o600)

    def _allocate_gpus(self, run: LocalRun) -> list[str]:
        try:
            return self.allocator.allocate(run.spec.name, run.spec.profile.gpu)
        except GpuUnavailable as e:
            raise ExecutorError(str(e)) from None

    def _environment(self, run: LocalRun, gpus: list[str]) -> dict[str, str]:
        """The run's whole environment, built from nothing: no variable of the service leaks."""
        spec = run.spec
        # the owner's secrets first: every variable the platform sets below wins over them
        env = dict(spec.secrets)
        env.update(spec.extra_env)
        env.update(self._owner_environment(run, gpus))
        env.update(
            {
                "SHIPYARD_JOB_ID": spec.job_id,
                "SHIPYARD_RUN_ID": spec.run_id,
                RESULT_FILE_ENV: str(spec.result_file),
            }
        )
        return env

    def _owner_environment(self, run: LocalRun, gpus: list[str]) -> dict[str, str]:
        """What the run's processes get as their owner's, in the profile's environment."""
        assert run.user is not None and run.built is not None  # account and environment ran
        return self.process_environment(run.user, run.built, run.spec.profile, gpus)

    @staticmethod
    def process_environment(
        user: pwd.struct_passwd, built: BuiltEnvironment, profile: Profile, gpus: list[str]
    ) -> dict[str, str]:
        """What every process of an owner's profile gets, whatever the run (warm ones too)."""
        return process_environment(
            user,
            built,
            profile,
            gpus,
            shell=True,
            extra={"SHIPYARD_PROFILE_JSON": json.dumps(profile.public_summary())},
        )

    @staticmethod
    def usage_label(run: LocalRun) -> UsageLabel:
        """What the usage ledger records of ``run``'s cgroup or container: its kind, owner, object."""
        return UsageLabel(
            run.spec.usage_kind,
            run.spec.owner,
            run.spec.usage_object or f"job/{run.spec.job_id}/run/{run.spec.run_id}",
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
        """Run ``argv`` in the run's cgroup until it exits or the deadline; its exit status.

        With ``gpus`` (the run's first process) the run's cgroup is made for it,
        with those GPUs; without, it joins the cgroup the run has. None when the
        run was stopped before the process could start.
        """
        loop = asyncio.get_running_loop()
        if run.stopping:
            return None
        if loop.time() >= run.deadline:
            run.timed_out = True
            return None
        assert run.user is not None  # the account step ran
        protocol = ProcessOutput(run.sink)
        request = LaunchRequest(
            user=run.user,
            profile=run.spec.profile,
            argv=argv,
            env=env,
            driver=self.driver,
            cgroup=run.cgroup,
            cwd=cwd,
            gpus=gpus or (),
            create_cgroup=gpus is not None,
            usage=self.usage_label(run),
        )
        if request.create_cgroup:
            # live from now on: a cancel kills what is in it, the release removes it
            run.cgroup_live = True
        try:
            # papermill (or nbconvert) dies with the service, even by kill -9
            launched = await self.local_host.launch(request, protocol)
        except CgroupFailed:
            raise  # the host refused the run's cgroup: not papermill's failure to start
        except (OSError, subprocess.SubprocessError) as e:
            if run.stopping:  # cancelled meanwhile: the cgroup it was to join is gone
                return None
            what = "papermill" if argv[2] == warm_protocol.PAPERMILL_CLI_CODE else argv[2]
            raise ExecutorError(f"Could not start {what}: {e}") from None
        assert launched.transport is not None  # output="pipe"
        return await self.wait_for_exit(run, launched.transport, protocol)

    async def wait_for_exit(
        self, run: LocalRun, transport: asyncio.SubprocessTransport, protocol: ProcessOutput
    ) -> int | None:
        """Wait for the run's process until it exits or the deadline; its exit status.

        A cold process, or a warm one handed the run (:meth:`.warmstart.WarmStarter.hand_over`).
        """
        loop = asyncio.get_running_loop()
        run.pid = transport.get_pid()
        try:
            if run.stopping:
                # cancelled while it started (its cgroup was being made): it must not run on
                await self._kill(run)
            try:
                await asyncio.wait_for(
                    asyncio.shield(protocol.exited), max(0.0, run.deadline - loop.time())
                )
            except asyncio.TimeoutError:
                if not run.stopping:
                    run.timed_out = True
                    run.sink.note(f"stopped: the run took longer than its {run.spec.timeout:g}s")
                await self._kill(run)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(
                        asyncio.shield(protocol.exited), self.local_host.cleanup_timeout
                    )
            # anything it left behind (a background process, a kernel it could not shut
            # down) would run on and keep the output pipe open
            await self._kill(run)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(protocol.closed), 5)
            return transport.get_returncode()
        finally:
            run.pid = None
            transport.close()

    async def _kill(self, run: LocalRun) -> None:
        """Kill every process of the run (the cgroup stays, empty, until released)."""
        if self.driver.enforces_total:
            if run.cgroup_live:
                await asyncio.to_thread(
                    kill_cgroup, self.driver, run.cgroup, self.local_host.cleanup_timeout
                )
        elif run.pid is not None:
            kill_tree(run.pid)

    async def _release(self, run: LocalRun) -> None:
        """Kill what is left, remove the cgroup, free the GPUs and the work folder."""
        try:
            if run.cgroup_live or self.driver.exists(run.cgroup):
                await asyncio.to_thread(
                    self.driver.remove, run.cgroup, self.local_host.cleanup_timeout
                )
            run.cgroup_live = False
        finally:
            self.allocator.release(run.spec.name)
            if run.workdir is not None:
                await asyncio.to_thread(shutil.rmtree, run.workdir, True)
            if run.cgroup.startswith("warm-"):  # it ran in a warm process: its kernel's sockets
                await asyncio.to_thread(shutil.rmtree, WarmStarter.sockets(run.cgroup), True)
            if run.sink is not None:
                run.sink.close()

    async def _report_progress(self, events: asyncio.Queue, progress: ProgressCallback) -> None:
        while (event := await events.get()) is not None:
            try:
                result = progress(*event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                self.log.exception("Progress callback failed for cell %d of %d", *event)

    # ------------------------------------------------------------ report

    # -------------------------------------------------------- warm pool

    async def prewarm(self, owner: str, profile: Profile, *, wait: bool = False) -> int:
        """Have warm processes ready for ``owner``'s next runs with ``profile``.

        The service calls it for jobs it expects to run soon. Starts up to
        :attr:`warm_pool_size` for the owner, profile and environment (within
        :attr:`warm_pool_max`), in the background unless ``wait``. Does
        nothing when the pool is off, full, the profile has GPUs, or its
        environment is not built; never raises for a process that fails to
        start (it is logged and dropped).

        Parameters
        ----------
        owner : str
            The hub user whose runs will use them; they run as their account.
        profile : Profile
            The profile those runs will have.
        wait : bool
            Return only once the processes started are ready (or failed).

        Returns
        -------
        int
            How many warm processes for this owner and profile are ready now.
        """
        return await self.warm.prewarm(owner, profile, wait=wait)

    async def close(self) -> None:
        """Stop every warm process and remove its cgroup (the service calls it at shutdown).

        Runs in progress are not touched. The parent cgroup goes too when no
        run is left in it, so a stopped scheduler leaves no empty cgroup behind.
        """
        await self.pool.close()
        if self.driver.enforces_total:
            await asyncio.to_thread(self.driver.remove_parent)

    async def sweep(self) -> list[str]:
        """Kill and remove every run and warm cgroup under ``cgroup_parent``; their names.

        The service calls it once at start, before it runs anything: what is
        there was left by a scheduler process that died (kill -9, a crash), whose
        runs the store declares orphaned and retries. **Each scheduler process on
        a machine needs its own** ``cgroup_parent``: the sweep cannot tell another
        live process's runs from a dead one's.
        """
        if not self.driver.enforces_total:
            return []

        def sweep() -> list[str]:
            names = set()
            for directory in self.driver.directories("probe"):
                parent = directory.parent
                if parent.is_dir():
                    names.update(
                        p.name
                        for p in parent.iterdir()
                        if p.is_dir() and p.name.startswith(("job-", "warm-"))
                    )
            for name in sorted(names):
                self.driver.remove(name, self.local_host.cleanup_timeout)
                if name.startswith("warm-"):
                    shutil.rmtree(WarmStarter.sockets(name), True)
            return sorted(names)

        removed = await asyncio.to_thread(sweep)
        if removed:
            self.log.warning(
                "Removed %d cgroups left by an earlier scheduler: %s",
                len(removed),
                ", ".join(removed),
            )
        return removed

    async def cleanup_orphan(self, run_id: str) -> None:
        """Kill what is left of an orphaned run's cold process here (its cgroup), if any."""
        name = job_name(run_id)
        if run_id not in self._runs and self.driver.enforces_total and self.driver.exists(name):
            await asyncio.to_thread(self.driver.remove, name, self.local_host.cleanup_timeout)

    # ------------------------------------------------------------ cancel

    async def cancel(self, run_id: str) -> None:
        run = self._runs.get(run_id)
        if run is None or run.stopping:
            return
        run.cancelled = True
        self.log.info("Cancelling run %s", run_id)
        if run.sink is not None:
            run.sink.note("cancelled")
        await self._kill(run)
