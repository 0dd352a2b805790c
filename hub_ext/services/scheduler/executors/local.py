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
4. ``_create_cgroup``: ``job-<run slug>`` under ``<c.LocalHost.cgroup_parent>-jobs``
   with the profile's CPU and memory limits (:mod:`hub_ext.host.cgroups`);
5. ``_spawn`` papermill with the environment's own Python, joined to the cgroup
   and then switched to the account between fork and exec, with an environment
   built from nothing (no hub secret can leak: SECURITY rule 8), under one
   deadline for the whole run (SECURITY rule 6; papermill has none by default);
6. ``_spawn`` nbconvert the same way when HTML was asked for and the notebook
   ran to its end;
7. ``_release``: every process left in the cgroup is killed and the cgroup
   removed, whatever happened, before the outputs are read back for the report.

How steps 2, 4 and 5 start a process as its owner (account, cgroup, switch of
user, environment, death with the service, killing) is shared with the
deployer's LocalBackend, in :mod:`hub_ext.host.localproc`.

Steps 4 and 5 have a fast path: a *warm process* (:mod:`.warm`) that has
already imported papermill and started its kernel, as the same owner, in the
same environment, in a cgroup of its own (``warm-<slug>``) with the profile's
limits. When :meth:`LocalExecutor.prewarm` has left one ready for the run's
owner, profile and environment (:mod:`.pool`), the run is handed to it: from
then on it is the run's papermill process in the run's cgroup (same log,
deadline, cancel, OOM count and release), and its first cell starts within
milliseconds instead of seconds. A replacement starts in the background.
Without a ready one the run goes the cold way; it never waits for one.
Profiles with GPUs always go the cold way: their devices are chosen per run.

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
import functools
import hashlib
import inspect
import json
import logging
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from traitlets import Float, Integer, observe

from hub_ext.environments.catalog import BuiltEnvironment, find_built
from hub_ext.host import slugs
from hub_ext.host.cgroups import CgroupDriver
from hub_ext.host.gpus import GpuAllocator, GpuUnavailable
from hub_ext.host.local import UsesLocalHost, deprecated_help
from hub_ext.host.localproc import PASSED_THROUGH as PASSED_THROUGH  # re-exported: public here
from hub_ext.host.localproc import die_with_parent as die_with_parent  # re-exported: public here
from hub_ext.host.localproc import (
    kill_cgroup,
    kill_tree,
    oom_kills,
    process_environment,
    spawn,
)
from hub_ext.profiles.model import Profile
from hub_ext.profiles.quantities import format_memory
from hub_ext.runtime import warm as warm_protocol

from ..models import RunStatus
from .base import (
    RESULT_FILE_ENV,
    CellError,
    Executor,
    ExecutorError,
    ProgressCallback,
    ProgressParser,
    RunLog,
    RunReport,
    RunSpec,
    cell_error,
    describe_error,
    existing_outputs,
    job_name,
    papermill_args,
    papermill_cell_count,
    parameters_yaml,
    read_mlflow_run_id,
    read_notebook,
)
from .pool import WarmKey, WarmPool, WarmProcess

#: papermill's exit status when the kernel died (``papermill.cli``).
DEAD_KERNEL_EXIT = warm_protocol.DEAD_KERNEL_EXIT
#: How a warm process is started: its module, run with the environment's Python.
WARM_MODULE = "hub_ext.runtime.warm"
#: Seconds a warm process may take to print READY (imports and a kernel start).
WARM_START_TIMEOUT = warm_protocol.START_TIMEOUT
#: Seconds a warm process told to stop (end of its input) gets to shut its kernel down.
WARM_STOP_GRACE = 3
#: The most a warm process may print before its run; the rest is not kept.
_EARLY_OUTPUT_LIMIT = 64 * 2**10


class _Output(asyncio.SubprocessProtocol):
    """Streams a process's output into the log; says apart "exited" and "pipe closed".

    A warm process has no log until a run is handed to it (``sink`` None):
    until then its output is scanned for the READY line, which sets
    ``ready``, and otherwise only goes to the service's debug log.
    """

    def __init__(self, sink: RunLog | None, log: logging.Logger | None = None, name: str = ""):
        loop = asyncio.get_running_loop()
        self.sink = sink
        self.log = log
        self.name = name
        self.exited = loop.create_future()
        self.closed = loop.create_future()
        self.ready = loop.create_future()
        self._early = bytearray()

    def hand_over(self, sink: RunLog) -> None:
        """From now on the output is the run's (what came before is not)."""
        self.sink = sink
        self._early.clear()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if self.sink is not None:
            self.sink.write(data)
            return
        self._early += data
        while b"\n" in self._early:
            line, _, rest = self._early.partition(b"\n")
            self._early = bytearray(rest)
            text = line.decode("utf-8", "replace").strip()
            if text == warm_protocol.READY and not self.ready.done():
                self.ready.set_result(None)
            elif text and self.log is not None:
                self.log.debug("%s: %s", self.name, text)
        if len(self._early) > _EARLY_OUTPUT_LIMIT:
            self._early.clear()

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


@dataclass(eq=False)
class _Run:
    """What the executor knows about one run while it runs."""

    spec: RunSpec
    deadline: float
    built: BuiltEnvironment | None = None
    user: pwd.struct_passwd | None = None
    outputs: dict[str, Path] = field(default_factory=dict)
    input: Path | None = None
    parameters_file: Path | None = None
    cell_count: int = 0
    sink: RunLog | None = None
    parser: ProgressParser | None = None
    workdir: Path | None = None
    #: the run's cgroup: ``job-<run slug>``, or the warm process's ``warm-<slug>``
    cgroup: str = ""
    cgroup_live: bool = False
    pid: int | None = None
    papermill_exit: int | None = None
    html_exit: int | None = None
    oom_kills: int = 0
    cancelled: bool = False
    timed_out: bool = False

    def __post_init__(self):
        self.cgroup = self.cgroup or self.spec.name

    @property
    def stopping(self) -> bool:
        return self.cancelled or self.timed_out


class LocalExecutor(UsesLocalHost, Executor):
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

    warm_pool_size = Integer(
        1,
        min=0,
        help="""
        Warm processes kept ready per owner, profile and environment; 0 turns the pool off.

        A warm process has imported papermill and started its kernel, as the
        owner, in the profile's environment and limits, before any run comes:
        a run handed to one starts its first cell in milliseconds rather than
        the seconds a cold ``papermill`` takes. The scheduler asks for them
        (:meth:`LocalExecutor.prewarm`) for jobs it expects to run again, and
        each one used is replaced in the background. A kernel serves one run
        and is never reused. A waiting process and its kernel hold about
        100 MB, in a cgroup of their own with the profile's limits, which the
        run then inherits. Profiles with GPUs always start cold. **Only
        honoured by the local executor.**

        Example::

            c.LocalExecutor.warm_pool_size = 2

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    warm_pool_max = Integer(
        4,
        min=0,
        help="""
        Most warm processes on this machine at once, ready or starting, all owners together.

        Caps the memory and processes the pool holds while nothing runs; when
        it is reached, further owners' runs start cold.

        Example::

            c.LocalExecutor.warm_pool_max = 16

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    warm_idle_timeout = Float(
        600,
        min=0,
        help="""
        Seconds a warm process may wait for a run before it is stopped.

        A job that runs less often than this pays a cold start unless the
        scheduler warms it again before its next run.

        Example::

            c.LocalExecutor.warm_idle_timeout = 3600

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    warm_wait = Float(
        3.0,
        min=0,
        help="""
        Seconds a run may wait for a warm process of its owner and profile that
        is already starting, rather than start a cold one.

        Runs that come faster than the pool refills (a job run back to back,
        a burst of webhook calls) find the next warm process still starting;
        it started earlier, so it is ready sooner than a cold start begun now.
        0 starts cold at once. A run never waits when none is starting.

        Example::

            c.LocalExecutor.warm_wait = 0

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._runs: dict[str, _Run] = {}
        self._driver: CgroupDriver | None = None
        self._allocator: GpuAllocator | None = None
        self.pool = WarmPool(self._stop_warm, self.log)

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
        run = _Run(spec, deadline=loop.time() + spec.timeout)
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
            return self._report(run)
        finally:
            reporter.cancel()
            self._runs.pop(spec.run_id, None)

    async def _run_steps(self, run: _Run, events: asyncio.Queue) -> None:
        spec = run.spec
        run.built = self._find_environment(spec.profile)
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
        python = str(run.built.python)
        warm = await self._take_warm(run, env)
        if warm is not None:
            run.papermill_exit = await self._hand_over(run, warm, env, cwd)
        else:
            await self._create_cgroup(run, gpus)
            # ``python -m papermill`` with its kernel on Unix sockets in the work folder,
            # whose names cannot collide as the TCP ports of kernels starting together do
            # (warm.kernel_config); its arguments in the work folder (_prepare)
            run.papermill_exit = await self._spawn(
                run,
                [python, "-c", warm_protocol.PAPERMILL_CLI_CODE, str(run.workdir)],
                env,
                cwd,
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
        run.oom_kills = oom_kills(self.driver, run.cgroup)

    def _find_environment(self, profile: Profile) -> BuiltEnvironment:
        return self.local_host.environment(profile, ExecutorError)

    async def _account(self, owner: str) -> pwd.struct_passwd:
        """The owner's account (as root), or the service's own user."""
        return await self.local_host.account(owner, ExecutorError)

    def _prepare(self, run: _Run) -> None:
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

    def _allocate_gpus(self, run: _Run) -> list[str]:
        try:
            return self.allocator.allocate(run.spec.name, run.spec.profile.gpu)
        except GpuUnavailable as e:
            raise ExecutorError(str(e)) from None

    async def _create_cgroup(self, run: _Run, gpus: list[str]) -> None:
        await self._make_cgroup(run.cgroup, run.spec.profile, gpus)
        run.cgroup_live = True

    async def _make_cgroup(self, name: str, profile: Profile, gpus: list[str]) -> None:
        # one of that name is left by a service that died mid-run; the run's GPUs are
        # the only ones its cgroup may open
        await self.local_host.make_cgroup(self.driver, name, profile, gpus)

    def _environment(self, run: _Run, gpus: list[str]) -> dict[str, str]:
        """The run's whole environment, built from nothing: no variable of the service leaks."""
        spec = run.spec
        # the owner's secrets first: every variable the platform sets below wins over them
        env = dict(spec.secrets)
        env.update(spec.extra_env)
        env.update(self._process_environment(run.user, run.built, spec.profile, gpus))
        env.update(
            {
                "SHIPYARD_JOB_ID": spec.job_id,
                "SHIPYARD_RUN_ID": spec.run_id,
                RESULT_FILE_ENV: str(spec.result_file),
            }
        )
        return env

    @staticmethod
    def _process_environment(
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

    async def _spawn(self, run: _Run, argv: list[str], env: dict, cwd: str) -> int | None:
        """Run ``argv`` in the run's cgroup until it exits or the deadline; its exit status.

        None when the run was stopped before the process could start.
        """
        loop = asyncio.get_running_loop()
        if run.stopping:
            return None
        if loop.time() >= run.deadline:
            run.timed_out = True
            return None
        protocol = _Output(run.sink)
        try:
            # papermill (or nbconvert) dies with the service, even by kill -9
            transport = await spawn(
                protocol,
                argv,
                env=env,
                cwd=cwd,
                driver=self.driver,
                cgroup=run.cgroup,
                user=run.user,
                run_as_root=self.run_as_root,
            )
        except (OSError, subprocess.SubprocessError) as e:
            if run.stopping:  # cancelled meanwhile: the cgroup it was to join is gone
                return None
            what = "papermill" if argv[2] == warm_protocol.PAPERMILL_CLI_CODE else argv[2]
            raise ExecutorError(f"Could not start {what}: {e}") from None
        return await self._wait(run, transport, protocol)

    async def _wait(
        self, run: _Run, transport: asyncio.SubprocessTransport, protocol: _Output
    ) -> int | None:
        """Wait for the run's process until it exits or the deadline; its exit status."""
        loop = asyncio.get_running_loop()
        run.pid = transport.get_pid()
        try:
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

    async def _kill(self, run: _Run) -> None:
        """Kill every process of the run (the cgroup stays, empty, until released)."""
        if self.driver.enforces_total:
            if run.cgroup_live:
                await asyncio.to_thread(
                    kill_cgroup, self.driver, run.cgroup, self.local_host.cleanup_timeout
                )
        elif run.pid is not None:
            kill_tree(run.pid)

    async def _release(self, run: _Run) -> None:
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
                await asyncio.to_thread(shutil.rmtree, self._warm_sockets(run.cgroup), True)
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

    def _report(self, run: _Run) -> RunReport:
        spec = run.spec
        outputs = existing_outputs(run.outputs)
        common = {
            "outputs": outputs,
            "env_digest": run.built.digest,
            "mlflow_run_id": read_mlflow_run_id(spec.result_file),
            "log_path": spec.log_path,
        }
        if run.cancelled:
            return RunReport(RunStatus.CANCELLED, "Cancelled while running.", **common)
        if run.timed_out:
            return RunReport(
                RunStatus.TIMED_OUT,
                f"Stopped after the job's timeout of {spec.timeout:g} seconds.",
                **common,
            )
        if run.papermill_exit == 0:
            if "html" in run.outputs and run.html_exit != 0:
                return RunReport(
                    RunStatus.FAILED,
                    f"The notebook ran, but converting it to HTML failed (nbconvert exit "
                    f"status {run.html_exit}); see the log.",
                    **common,
                )
            return RunReport(RunStatus.SUCCEEDED, **common)

        notebook = read_notebook(outputs["ipynb"]) if "ipynb" in outputs else None
        error = cell_error(notebook) if notebook is not None else None
        last_cell = run.parser.last if run.parser else -1
        if run.oom_kills:
            limit = spec.profile.mem_limit_bytes
            memory = f"memory limit of {format_memory(limit)}" if limit else "memory limit"
            killed = f"A process of the run was killed for using more than the profile's {memory}"
            if error is not None:
                return RunReport(
                    RunStatus.FAILED, f"{describe_error(error)}. {killed}.", error, **common
                )
            error = CellError(last_cell, None, "DeadKernelError", f"{killed}.")
            return RunReport(
                RunStatus.FAILED, f"Cell {last_cell}: {killed} (the kernel died).", error, **common
            )
        if error is not None:
            return RunReport(RunStatus.FAILED, describe_error(error), error, **common)
        if run.papermill_exit == DEAD_KERNEL_EXIT:
            error = CellError(last_cell, None, "DeadKernelError", "Kernel died")
            return RunReport(
                RunStatus.FAILED,
                f"The kernel died while running cell {last_cell}.",
                error,
                **common,
            )
        return RunReport(
            RunStatus.FAILED,
            f"papermill exited with status {run.papermill_exit}:\n{run.sink.tail()}",
            **common,
        )

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
        if not self._pooled(profile):
            return 0
        built = find_built(profile.environment, Path(self.local_host.environments_dir))
        if built is None:
            self.log.debug("Not pre-starting a kernel: %s is not built", profile.environment)
            return 0
        try:
            user = await self._account(owner)
        except ExecutorError as e:
            self.log.warning("Not pre-starting a kernel for %s: %s", owner, e)
            return 0
        key = self._warm_key(owner, profile, built, user)
        start = functools.partial(self._start_warm, key, user, built, profile)
        if wait:
            return await self.pool.fill(key, start, **self._pool_settings())
        self.pool.fill_later(key, start, **self._pool_settings())
        return self.pool.ready(key)

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
                    shutil.rmtree(self._warm_sockets(name), True)
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

    def _pooled(self, profile: Profile) -> bool:
        # GPUs are chosen per run: a process started before cannot know its devices
        return self.warm_pool_size > 0 and self.warm_pool_max > 0 and not profile.gpu

    def _pool_settings(self) -> dict:
        return {
            "size": self.warm_pool_size,
            "limit": self.warm_pool_max,
            "idle_timeout": self.warm_idle_timeout,
        }

    @staticmethod
    def _warm_key(
        owner: str, profile: Profile, built: BuiltEnvironment, user: pwd.struct_passwd
    ) -> WarmKey:
        # everything a warm process was started with besides the owner: the limits of its
        # cgroup, the profile it was told, and the environment build it imported
        started_with = [
            profile.public_summary(),
            profile.cpu_limit_cores,
            profile.cpu_guarantee_cores,
            profile.mem_limit_bytes,
            profile.mem_guarantee_bytes,
            str(built.path),
            built.shipyard_digest,
        ]
        fingerprint = hashlib.sha256(json.dumps(started_with, default=str).encode()).hexdigest()
        return WarmKey(owner, user.pw_uid, profile.slug, built.digest, fingerprint)

    async def _take_warm(self, run: _Run, env: dict[str, str]) -> WarmProcess | None:
        """A warm process for exactly this run's owner, profile and build; or None.

        One that is ready, or one already starting within :attr:`warm_wait`.
        """
        spec = run.spec
        if not self._pooled(spec.profile) or run.stopping:
            return None
        left = run.deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return None
        key = self._warm_key(spec.owner, spec.profile, run.built, run.user)
        warm = await self.pool.take_soon(key, min(self.warm_wait, left / 4))
        if warm is None or run.stopping:
            if warm is not None:
                self.pool.discard(warm, "its run was stopped while it started")
            return None
        start = functools.partial(self._start_warm, key, run.user, run.built, spec.profile)
        self.pool.fill_later(key, start, **self._pool_settings())  # the next run's
        if not set(warm.env) <= set(env):  # cannot happen: both come from one function
            self.log.warning("Pre-started kernel %s does not fit run %s", warm.cgroup, spec.run_id)
            self.pool.discard(warm, "it does not fit the run's environment")
            return None
        return warm

    async def _hand_over(
        self, run: _Run, warm: WarmProcess, env: dict[str, str], cwd: str
    ) -> int | None:
        """Give the run to ``warm``; from here on it is the run's papermill, in the run's place."""
        run.cgroup, run.cgroup_live = warm.cgroup, True
        run.sink.note(f"running in a kernel started beforehand ({warm.cgroup})")
        warm.protocol.hand_over(run.sink)
        request = warm_protocol.request_line(
            input=str(run.input),
            output=str(run.outputs["ipynb"]),
            parameters_file=str(run.parameters_file),
            cwd=cwd,
            # what the run has beyond what the process started with: its ids, result
            # file and the owner's own settings
            env={k: v for k, v in env.items() if warm.env.get(k) != v},
        )
        stdin = warm.transport.get_pipe_transport(0)
        stdin.write(request)
        stdin.close()
        return await self._wait(run, warm.transport, warm.protocol)

    async def _start_warm(
        self, key: WarmKey, user: pwd.struct_passwd, built: BuiltEnvironment, profile: Profile
    ) -> WarmProcess:
        """Start a warm process as a cold papermill would start, and wait for its READY."""
        name = f"warm-{slugs.user_slug(f'{key.owner}-{secrets.token_hex(4)}')}"
        env = self._process_environment(user, built, profile, [])
        cwd = user.pw_dir if os.path.isdir(user.pw_dir) else "/"
        protocol = _Output(None, self.log, name)
        transport = None
        try:
            await self._make_cgroup(name, profile, [])  # a warm process has no GPU
            sockets = self._warm_sockets(name)
            await asyncio.to_thread(self._private_folder, sockets, user)
            # it dies with the service, even by kill -9, as papermill does
            transport = await spawn(
                protocol,
                [str(built.python), "-m", WARM_MODULE, str(sockets)],
                env=env,
                cwd=cwd,
                driver=self.driver,
                cgroup=name,
                user=user,
                run_as_root=self.run_as_root,
                stdin=subprocess.PIPE,
            )
            await asyncio.wait(
                {protocol.ready, protocol.exited},
                timeout=WARM_START_TIMEOUT,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not protocol.ready.done():
                if protocol.exited.done():
                    raise ExecutorError(f"{name} exited with status {transport.get_returncode()}")
                raise ExecutorError(f"{name} was not ready after {WARM_START_TIMEOUT}s")
            return WarmProcess(key, name, transport.get_pid(), transport, protocol, env)
        except BaseException:
            await self._remove_warm(name, transport)
            raise

    async def _stop_warm(self, warm: WarmProcess) -> None:
        """End of input first (the kernel shuts down cleanly), then the cgroup goes."""
        try:
            with contextlib.suppress(Exception):
                warm.transport.get_pipe_transport(0).close()
            # also a future of an event loop that is gone: then there is nothing to wait for
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(warm.protocol.exited), WARM_STOP_GRACE)
            await self._remove_warm(warm.cgroup, warm.transport)
        except Exception:
            self.log.exception("Could not stop pre-started kernel %s", warm.cgroup)

    async def _remove_warm(self, name: str, transport: asyncio.SubprocessTransport | None) -> None:
        if self.driver.enforces_total:
            await asyncio.to_thread(self.driver.remove, name, self.local_host.cleanup_timeout)
        else:
            if transport is not None and transport.get_pid() is not None:
                kill_tree(transport.get_pid())
            self.driver.remove(name)
        if transport is not None:
            with contextlib.suppress(Exception):  # of a closed event loop
                transport.close()
        await asyncio.to_thread(shutil.rmtree, self._warm_sockets(name), True)

    @staticmethod
    def _warm_sockets(name: str) -> Path:
        """The folder of warm process ``name``'s kernel sockets; removed with its cgroup.

        Named by a digest of ``name``, which holds the owner's name: the folder is on the
        warm process's command line, which every account of the machine reads.
        """
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"shipyard-warm-{digest}"

    def _private_folder(self, path: Path, user: pwd.struct_passwd) -> None:
        os.mkdir(path, 0o700)  # fails on anything already there, a link included
        if self.run_as_root:
            os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)

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
