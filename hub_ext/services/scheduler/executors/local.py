"""LocalExecutor: a run is one papermill process, as its owner, in a cgroup of its own.

This is the "one machine" column of ARCHITECTURE.md for scheduled jobs. A run
goes through a short list of named steps (papermill's ``execute.py`` style):

1. ``_find_environment``: the profile's built environment (``shipyard env build``);
2. ``_account``: the owner's system account, named and created exactly as
   LocalProfileSpawner does (:func:`hub_ext.slugs.account_name`), so a job's
   files belong to the same Unix user as the server's;
3. ``_prepare``: the log (opened by the service, never through a link), the
   output directory (the account's), and a private work folder with a copy of
   the snapshot and the parameters as a YAML file (data, never code: SECURITY
   rule 4);
4. ``_create_cgroup``: ``job-<run slug>`` under :attr:`LocalExecutor.cgroup_parent`
   with the profile's CPU and memory limits (:mod:`hub_ext.cgroups`);
5. ``_spawn`` papermill with the environment's own Python, joined to the cgroup
   and then switched to the account between fork and exec, with an environment
   built from nothing (no hub secret can leak: SECURITY rule 8), under one
   deadline for the whole run (SECURITY rule 6; papermill has none by default);
6. ``_spawn`` nbconvert the same way when HTML was asked for and the notebook
   ran to its end;
7. ``_release``: every process left in the cgroup is killed and the cgroup
   removed, whatever happened, before the outputs are read back for the report.

A timeout or a cancel kills the whole cgroup: papermill, its kernel and
anything the notebook started, including processes in a new session, which a
process-group kill would miss. Cell progress comes from papermill's
``--log-output`` lines (``Executing Cell N``), which are also the run's log.

Rejected alternatives: running papermill in the service's own process
(a notebook is code and must run as its owner: SECURITY rule 5), and
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
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from traitlets import Bool, CaselessStrEnum, Integer, List, Unicode, default

from hub_ext import slugs
from hub_ext.accounts import AccountError, ensure_account
from hub_ext.cgroups import DRIVERS, CgroupDriver, Limits, detect_driver
from hub_ext.environments import BuiltEnvironment, default_envs_dir, find_built
from hub_ext.gpus import GpuAllocator, GpuUnavailable, detect_gpus
from hub_ext.profiles import Profile
from hub_ext.quantities import format_memory

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
    RunStatus,
    cell_error,
    describe_error,
    existing_outputs,
    papermill_args,
    papermill_cell_count,
    parameters_yaml,
    read_mlflow_run_id,
    read_notebook,
)

#: papermill's exit status when the kernel died (``papermill.cli``).
DEAD_KERNEL_EXIT = 138
#: Variables of the service's own environment a run may see: locale and time zone only.
PASSED_THROUGH = ("LANG", "LC_ALL", "TZ")


class _Output(asyncio.SubprocessProtocol):
    """Streams a process's output into the log; says apart "exited" and "pipe closed"."""

    def __init__(self, sink: RunLog):
        loop = asyncio.get_running_loop()
        self.sink = sink
        self.exited = loop.create_future()
        self.closed = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.sink.write(data)

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
    cgroup_live: bool = False
    pid: int | None = None
    papermill_exit: int | None = None
    html_exit: int | None = None
    oom_kills: int = 0
    cancelled: bool = False
    timed_out: bool = False

    @property
    def stopping(self) -> bool:
        return self.cancelled or self.timed_out


class LocalExecutor(Executor):
    """Runs each notebook with papermill, as its owner, inside the profile's limits.

    Select it with ``c.SchedulerService.executor_class = "local"``. When the
    service runs as root, every run uses its owner's system account (created
    if missing) and a cgroup of its own; otherwise it runs as the service's
    user with the best limits the host allows (see :mod:`hub_ext.cgroups`).
    """

    cgroup_driver = CaselessStrEnum(
        ["auto", *DRIVERS],
        default_value="auto",
        help="""
        How a run's limits are enforced: ``cgroup2``, ``cgroup1``, ``rlimit`` or ``auto``.

        ``auto`` picks what LocalProfileSpawner picks: cgroup v2, then v1, and
        otherwise rlimits, which cap each process's address space but neither
        the run's total memory nor its CPU, and cannot find every process of a
        run to kill (a warning says so).

        Example::

            c.LocalExecutor.cgroup_driver = "cgroup1"

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    cgroup_parent = Unicode(
        "shipyard-jobs",
        help="""
        Cgroup under which every run gets its own, named ``job-<run slug>``.

        Kept apart from the servers' parent (``shipyard``), so job names can
        never meet user names and an admin can cap all jobs together by
        limiting this parent.

        Example::

            c.LocalExecutor.cgroup_parent = "batch"

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    system_user_prefix = Unicode(
        "jupyter-",
        help="""
        Prefix of the owners' system accounts; keep it equal to LocalProfileSpawner's.

        A run of hub user ``alice`` runs as ``jupyter-alice``, the account her
        server runs as, so both see the same home and files.

        Example::

            c.LocalExecutor.system_user_prefix = "sy-"

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    home_dir_template = Unicode(
        "/home/{account}",
        help="""
        Home of an account created for a run; ``{account}`` is its name.

        Only used when the owner has no account yet (a job running before the
        user's first server). Keep it equal to LocalProfileSpawner's.

        Example::

            c.LocalExecutor.home_dir_template = "/srv/homes/{account}"

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    create_system_users = Bool(
        True,
        help="""
        Create the owner's system account when it is missing (service running as root).

        Set to False when accounts come from the host (LDAP, SSSD): a run of a
        user without an account then fails with that reason.

        Example::

            c.LocalExecutor.create_system_users = False

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    environments_dir = Unicode(
        help="""
        Where the profiles' environments are built (``shipyard env build ENV``).

        Papermill, the kernel and nbconvert all run with the Python of the
        run's profile environment. Defaults as for LocalProfileSpawner:
        ``$SHIPYARD_ENVS_DIR``, else ``/opt/shipyard/envs`` as root, else
        ``envs`` in the data dir.

        Example::

            c.LocalExecutor.environments_dir = "/srv/shipyard/envs"

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    @default("environments_dir")
    def _default_environments_dir(self):
        return str(default_envs_dir())

    gpu_devices = List(
        Unicode(),
        help="""
        GPU indices runs may use, as in ``CUDA_VISIBLE_DEVICES``.

        A run whose profile asks for N GPUs gets N of them for its duration; a
        run whose profile asks for none sees none. Defaults to every GPU
        ``nvidia-smi`` lists. **Not shared with LocalProfileSpawner's
        reservations** (another process): give jobs and servers separate GPUs
        on a machine where both use them.

        Example::

            c.LocalExecutor.gpu_devices = ["2", "3"]

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    @default("gpu_devices")
    def _default_gpu_devices(self):
        return detect_gpus()

    cleanup_timeout = Integer(
        10,
        help="""
        Seconds to wait for a run's processes to die when its cgroup is removed.

        Example::

            c.LocalExecutor.cleanup_timeout = 30

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

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
        self._runs: dict[str, _Run] = {}
        self._driver: CgroupDriver | None = None
        self._allocator: GpuAllocator | None = None

    @property
    def run_as_root(self) -> bool:
        return os.geteuid() == 0

    @property
    def driver(self) -> CgroupDriver:
        if self._driver is None:
            if self.cgroup_driver == "auto":
                self._driver = detect_driver(self.cgroup_parent)
            else:
                self._driver = DRIVERS[self.cgroup_driver](self.cgroup_parent)
            if not self._driver.enforces_total:
                self.log.warning(
                    "No writable cgroup hierarchy: runs get per-process rlimits, no CPU limit, "
                    "and a timeout cannot find every process a notebook started."
                )
        return self._driver

    @property
    def allocator(self) -> GpuAllocator:
        if self._allocator is None:
            self._allocator = GpuAllocator(self.gpu_devices)
        return self._allocator

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
        await self._create_cgroup(run)
        env = self._environment(run, gpus)
        cwd = os.path.abspath(spec.cwd or spec.output_dir)
        python = str(run.built.python)
        run.papermill_exit = await self._spawn(
            run,
            [
                python,
                "-m",
                "papermill",
                *papermill_args(run.input, run.outputs["ipynb"], run.parameters_file, cwd),
            ],
            env,
            cwd,
        )
        run.sink.on_line = None
        if run.papermill_exit == 0 and "html" in run.outputs and not run.stopping:
            html = run.outputs["html"]
            run.sink.note(f"converting the notebook to {html.name}")
            try:
                run.html_exit = await self._spawn(
                    run,
                    [
                        python,
                        "-m",
                        "nbconvert",
                        "--to=html",
                        f"--output-dir={html.parent}",
                        f"--output={html.stem}",
                        str(run.outputs["ipynb"]),
                    ],
                    env,
                    cwd,
                )
            except ExecutorError as e:
                run.sink.note(str(e))
                run.html_exit = -1
        run.oom_kills = self._oom_kills(run)

    def _find_environment(self, profile: Profile) -> BuiltEnvironment:
        built = find_built(profile.environment, Path(self.environments_dir))
        if built is None:
            raise ExecutorError(
                f"The environment {profile.environment!r} of profile '{profile.slug}' is not "
                f"built on this machine. An admin builds it with `shipyard env build "
                f"{profile.environment}`."
            )
        return built

    async def _account(self, owner: str) -> pwd.struct_passwd:
        """The owner's account (as root), or the service's own user."""
        if not self.run_as_root:
            return pwd.getpwuid(os.getuid())
        account = slugs.account_name(owner, self.system_user_prefix)
        try:
            return pwd.getpwnam(account)
        except KeyError:
            if not self.create_system_users:
                raise ExecutorError(
                    f"No system account {account!r} exists for {owner} and Shipyard is "
                    "configured not to create one (create_system_users = False)."
                ) from None
        try:
            return await ensure_account(
                account, self.home_dir_template.format(account=account), f"Shipyard user {owner}"
            )
        except AccountError as e:
            raise ExecutorError(str(e)) from None

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
        run.sink = RunLog(spec.log_path, self.max_log_bytes)
        spec.output_dir.mkdir(parents=True, exist_ok=True)
        own(spec.output_dir, 0o750)
        for stale in (*run.outputs.values(), spec.result_file):  # of an earlier attempt
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()

        run.workdir = Path(tempfile.mkdtemp(prefix=f"shipyard-{spec.name}-"))
        own(run.workdir, 0o700)
        run.input = run.workdir / spec.notebook.name
        run.input.write_bytes(data)
        own(run.input, 0o600)
        run.parameters_file = run.workdir / "parameters.yaml"
        run.parameters_file.write_text(parameters_yaml(spec.parameters), encoding="utf-8")
        own(run.parameters_file, 0o600)

    def _allocate_gpus(self, run: _Run) -> list[str]:
        try:
            return self.allocator.allocate(run.spec.name, run.spec.profile.gpu)
        except GpuUnavailable as e:
            raise ExecutorError(str(e)) from None

    async def _create_cgroup(self, run: _Run) -> None:
        profile, name = run.spec.profile, run.spec.name
        limits = Limits(
            cpu_limit=profile.cpu_limit_cores,
            cpu_guarantee=profile.cpu_guarantee_cores,
            mem_limit=profile.mem_limit_bytes,
            mem_guarantee=profile.mem_guarantee_bytes,
        )
        if self.driver.exists(name):  # left by a service that died mid-run
            await asyncio.to_thread(self.driver.remove, name, self.cleanup_timeout)
        await asyncio.to_thread(self.driver.create, name, limits)
        run.cgroup_live = True

    def _environment(self, run: _Run, gpus: list[str]) -> dict[str, str]:
        """The run's whole environment, built from nothing: no variable of the service leaks."""
        spec, user, built = run.spec, run.user, run.built
        env = dict(spec.extra_env)
        env.update({k: os.environ[k] for k in PASSED_THROUGH if k in os.environ})
        env.update(
            {
                "PATH": os.pathsep.join([str(built.bin), "/usr/local/bin", "/usr/bin", "/bin"]),
                "HOME": user.pw_dir,
                "USER": user.pw_name,
                "LOGNAME": user.pw_name,
                "SHELL": user.pw_shell or "/bin/bash",
                "PYTHONUNBUFFERED": "1",
                **built.env_vars(),
                "SHIPYARD_PROFILE": spec.profile.slug,
                "SHIPYARD_PROFILE_JSON": json.dumps(spec.profile.public_summary()),
                "SHIPYARD_JOB_ID": spec.job_id,
                "SHIPYARD_RUN_ID": spec.run_id,
                RESULT_FILE_ENV: str(spec.result_file),
                # an empty list hides every GPU from runs whose profile has none
                "CUDA_VISIBLE_DEVICES": ",".join(gpus),
                "NVIDIA_VISIBLE_DEVICES": ",".join(gpus) or "void",
            }
        )
        return env

    def _preexec(self, run: _Run):
        join_cgroup = self.driver.preexec(run.spec.name)
        if self.run_as_root:
            from jupyterhub.spawner import set_user_setuid

            become_user = set_user_setuid(run.user.pw_name, chdir=False)
        else:
            become_user = None

        def preexec() -> None:
            join_cgroup()  # while still root: the cgroup files are root's
            if become_user is not None:
                become_user()

        return preexec

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
            transport, _ = await loop.subprocess_exec(
                lambda: protocol,
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                preexec_fn=self._preexec(run),
                start_new_session=True,
            )
        except (OSError, subprocess.SubprocessError) as e:
            if run.stopping:  # cancelled meanwhile: the cgroup it was to join is gone
                return None
            raise ExecutorError(f"Could not start {argv[2]}: {e}") from None
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
                    await asyncio.wait_for(asyncio.shield(protocol.exited), self.cleanup_timeout)
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
                await asyncio.to_thread(self._kill_cgroup, run.spec.name)
        elif run.pid is not None:
            # rlimit fallback: the process tree as it is now, and papermill's session
            try:
                procs = [psutil.Process(run.pid), *psutil.Process(run.pid).children(True)]
            except psutil.NoSuchProcess:
                procs = []
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            with contextlib.suppress(OSError):
                os.killpg(run.pid, signal.SIGKILL)

    def _kill_cgroup(self, name: str) -> None:
        deadline = time.monotonic() + self.cleanup_timeout
        while (left := self.driver.pids(name)) and time.monotonic() < deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)

    def _oom_kills(self, run: _Run) -> int:
        """How often the kernel's OOM killer struck in the run's cgroup (v1 or v2)."""
        count = 0
        for directory in self.driver.directories(run.spec.name):
            for name in ("memory.oom_control", "memory.events"):
                try:
                    text = (directory / name).read_text()
                except OSError:
                    continue
                for line in text.splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and value.strip().isdigit():
                        count += int(value)
        return count

    async def _release(self, run: _Run) -> None:
        """Kill what is left, remove the cgroup, free the GPUs and the work folder."""
        name = run.spec.name
        try:
            if run.cgroup_live or self.driver.exists(name):
                await asyncio.to_thread(self.driver.remove, name, self.cleanup_timeout)
            run.cgroup_live = False
        finally:
            self.allocator.release(name)
            if run.workdir is not None:
                await asyncio.to_thread(shutil.rmtree, run.workdir, True)
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
