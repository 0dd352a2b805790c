"""One local run while it runs: its state, the output of its processes, and its report.

What :class:`~.local.LocalExecutor` (the run's steps) and its warm processes
(:mod:`.warmstart`) both hold of a run: :class:`LocalRun`, the run's state
(its account, environment, cgroup, pid, exit statuses, and whether it was
cancelled or timed out); :class:`ProcessOutput`, which streams a process's
output into the run's log and says apart "exited" and "pipe closed"; and
:func:`run_report`, which turns a finished run into its
:class:`~.base.RunReport`, a pure function of the run's state and its outputs.
"""

from __future__ import annotations

import asyncio
import logging
import pwd
from dataclasses import dataclass, field
from pathlib import Path

from hub_ext.environments.catalog import BuiltEnvironment
from hub_ext.profiles.quantities import format_memory
from hub_ext.runtime import warm as warm_protocol

from ..models import RunStatus
from .base import (
    CellError,
    ProgressParser,
    RunLog,
    RunReport,
    RunSpec,
    cell_error,
    describe_error,
    existing_outputs,
    read_mlflow_run_id,
    read_notebook,
)

#: papermill's exit status when the kernel died (``papermill.cli``).
DEAD_KERNEL_EXIT = warm_protocol.DEAD_KERNEL_EXIT
#: The most a warm process may print before its run; the rest is not kept.
_EARLY_OUTPUT_LIMIT = 64 * 2**10


class ProcessOutput(asyncio.SubprocessProtocol):
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
class LocalRun:
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
    #: in containers (:mod:`.containers`): the image, and the run's containers so far
    image: str = ""
    containers: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.cgroup = self.cgroup or self.spec.name

    @property
    def stopping(self) -> bool:
        return self.cancelled or self.timed_out


def run_report(run: LocalRun) -> RunReport:
    """What happened to ``run``, from its flags, exit statuses, outputs and OOM count.

    The notebook saved by papermill says which cell failed and why; a kill by the
    OOM killer and a dead kernel are told apart from a plain failure.
    """
    spec = run.spec
    outputs = existing_outputs(run.outputs)
    # every report carries these, whatever the outcome
    digest = run.built.digest if run.built is not None else None
    mlflow_run_id = read_mlflow_run_id(spec.result_file)

    def report(status: RunStatus, reason: str = "", error: CellError | None = None) -> RunReport:
        return RunReport(
            status,
            reason,
            error,
            outputs=outputs,
            env_digest=digest,
            mlflow_run_id=mlflow_run_id,
            log_path=spec.log_path,
        )

    if run.cancelled:
        return report(RunStatus.CANCELLED, "Cancelled while running.")
    if run.timed_out:
        return report(
            RunStatus.TIMED_OUT, f"Stopped after the job's timeout of {spec.timeout:g} seconds."
        )
    if run.papermill_exit == 0:
        if "html" in run.outputs and run.html_exit != 0:
            return report(
                RunStatus.FAILED,
                f"The notebook ran, but converting it to HTML failed (nbconvert exit "
                f"status {run.html_exit}); see the log.",
            )
        return report(RunStatus.SUCCEEDED)

    notebook = read_notebook(outputs["ipynb"]) if "ipynb" in outputs else None
    error = cell_error(notebook) if notebook is not None else None
    last_cell = run.parser.last if run.parser else -1
    if run.oom_kills:
        limit = spec.profile.mem_limit_bytes
        memory = f"memory limit of {format_memory(limit)}" if limit else "memory limit"
        killed = f"A process of the run was killed for using more than the profile's {memory}"
        if error is not None:
            return report(RunStatus.FAILED, f"{describe_error(error)}. {killed}.", error)
        error = CellError(last_cell, None, "DeadKernelError", f"{killed}.")
        return report(RunStatus.FAILED, f"Cell {last_cell}: {killed} (the kernel died).", error)
    if error is not None:
        return report(RunStatus.FAILED, describe_error(error), error)
    if run.papermill_exit == DEAD_KERNEL_EXIT:
        error = CellError(last_cell, None, "DeadKernelError", "Kernel died")
        return report(RunStatus.FAILED, f"The kernel died while running cell {last_cell}.", error)
    tail = run.sink.tail() if run.sink is not None else ""
    return report(RunStatus.FAILED, f"papermill exited with status {run.papermill_exit}:\n{tail}")
