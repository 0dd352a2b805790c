"""What an executor is given (:class:`RunSpec`), what it returns (:class:`RunReport`), and its ABC.

The scheduler service decides *when* a run happens and records its status; an
executor only runs one notebook and reports what happened (STYLE rule 14, the
template method of jupyter-scheduler's ``ExecutionManager.process``). It never
writes to the scheduler's database, and it never swallows a failure:

- :meth:`Executor.execute` returns a :class:`RunReport` for every run that
  started, whatever its end (succeeded, failed, timed_out, cancelled);
- it raises :class:`ExecutorError` when the run could not start at all (the
  profile's environment is not built, no system account, no free GPU), with a
  message that says what to fix; the service records that as a failed run.

Both executors run the notebook the papermill way (STYLE rule 15): the
parameters are *data*, written as YAML and read by papermill's ``-f``
(SECURITY rule 4); papermill saves the failing notebook before it reports the
error; the error's ``cell_index``/``ename``/``evalue`` are read back from that
saved notebook exactly as papermill's ``raise_for_execution_errors`` finds them.

The MLflow run a notebook logged is found through a small file contract rather
than by scraping outputs: every run is told a path in ``$SHIPYARD_JOB_RESULT_FILE``,
and whatever logs to MLflow in the kernel (Shipyard's tracking client, or the
notebook itself) writes ``{"mlflow_run_id": "<id>"}`` there. Rejected
alternative: searching the output notebook for MLflow's "View run" links,
which only appear with some tracking URIs and can be printed by anything.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from abc import ABCMeta, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from traitlets import MetaHasTraits
from traitlets.config import LoggingConfigurable

from hub_ext.host.slugs import user_slug
from hub_ext.profiles.model import Profile

from ...common.plugins import check_interface
from ...common.scrub import Scrubber, StreamScrubber
from ..models import RunStatus
from ..validation import check_parameters

#: Formats a run can produce. The executed notebook is always one of them.
OUTPUT_FORMATS = ("ipynb", "html")

#: Environment variable naming the file a kernel writes ``{"mlflow_run_id": ...}`` to.
RESULT_FILE_ENV = "SHIPYARD_JOB_RESULT_FILE"
#: Name of that file in the run's output directory.
RESULT_FILE_NAME = ".shipyard-result.json"

#: Papermill's tag of the marker cells it inserts into a failed notebook
#: (``papermill.execute.ERROR_MARKER_TAG``).
PAPERMILL_ERROR_TAG = "papermill-error-cell-tag"
#: Papermill's tag of the cell holding the parameters it injected.
PAPERMILL_INJECTED_TAG = "injected-parameters"

#: The most of a user-written file (output notebook, result file) the service reads.
MAX_NOTEBOOK_BYTES = 64 * 2**20
MAX_RESULT_BYTES = 64 * 2**10

#: What an MLflow run id looks like (uuid4 hex today; letters, digits, - and _ allowed).
_MLFLOW_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class ExecutorError(Exception):
    """The run could not start; the message says why and what to do about it."""


# --------------------------------------------------------------- parameters


def parameters_yaml(parameters: Mapping[str, Any]) -> str:
    """The parameters as the YAML papermill's ``-f`` reads back to the same values.

    YAML rather than JSON: papermill parses the file with PyYAML (YAML 1.1),
    which reads JSON's ``1e-05`` as a *string*; ``safe_dump`` writes
    ``1.0e-05``, quotes strings that would read as dates, booleans or numbers
    (``'2024-01-01'``, ``'yes'``), and round-trips every other value.
    """
    return yaml.safe_dump(
        check_parameters(parameters),
        allow_unicode=True,
        sort_keys=False,
        default_flow_style=False,
        width=math.inf,
    )


# --------------------------------------------------------------------- spec


@dataclass(frozen=True)
class RunSpec:
    """Everything an executor needs to run one notebook once.

    Parameters
    ----------
    run_id, job_id : str
        The scheduler's ids; names derived from them go through the slug function.
    owner : str
        The hub user the run belongs to; it runs as their account, or pod.
    notebook : Path
        The job's snapshot (``.ipynb``). Never written to.
    profile : Profile
        Environment and limits (the profile as the run recorded it).
    timeout : float
        Seconds the whole run may take, kernel start and HTML included. Finite.
    output_dir : Path
        Where the executed notebook (``<snapshot stem>.ipynb``) and the other
        formats are written; must not be the snapshot's own folder.
    log_path : Path
        Papermill's log (cell by cell, with the cells' output).
    parameters : Mapping
        Notebook parameters, data only: checked by the scheduler's one parameter rule
        (:func:`~..validation.check_parameters`), which the API models use too.
    output_formats : tuple of str
        ``ipynb`` always; ``html`` on request.
    extra_env : Mapping
        Variables the service gives the run, e.g. ``MLFLOW_TRACKING_URI`` and
        the owner's own ``MLFLOW_TRACKING_TOKEN``. Never hub secrets.
    secrets : Mapping
        The owner's secrets the job names, by name, resolved for this run only.
        An executor gives them to the run as environment variables (a local
        process) or references the owner's Secret (Kubernetes); the run's log
        is scrubbed of them as it is written (:class:`RunLog`), and the
        service scrubs the outputs after the run. Never in ``repr``.
    cwd : Path, optional
        Working directory of the kernel; the output directory when None.
    """

    run_id: str
    job_id: str
    owner: str
    notebook: Path
    profile: Profile
    timeout: float
    output_dir: Path
    log_path: Path
    parameters: Mapping[str, Any] = field(default_factory=dict)
    output_formats: tuple[str, ...] = ("ipynb",)
    extra_env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: for usage accounting: ``run`` (a job's run) or ``step`` (a pipeline's step)
    usage_kind: str = "run"
    #: for usage accounting: what the run is (``job/<id>/run/<id>``, ``pipeline-run/<id>/<step>``)
    usage_object: str = ""

    def __post_init__(self):
        for name in ("run_id", "job_id", "owner"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string")
        if not isinstance(self.timeout, int | float) or not (
            0 < self.timeout and math.isfinite(self.timeout)
        ):
            # papermill's own default is no timeout at all (SECURITY rule 6)
            raise ValueError(
                f"timeout must be a finite number of seconds above 0, not {self.timeout!r}"
            )
        unknown = set(self.output_formats) - set(OUTPUT_FORMATS)
        if unknown:
            raise ValueError(
                f"unknown output formats {sorted(unknown)}; choose from {', '.join(OUTPUT_FORMATS)}"
            )
        formats = tuple(f for f in OUTPUT_FORMATS if f == "ipynb" or f in self.output_formats)
        for key, value in self.extra_env.items():
            if not isinstance(key, str) or not _ENV_NAME.match(key) or not isinstance(value, str):
                raise ValueError(
                    f"extra_env entry {key!r} must be a variable name with a string value"
                )
        for key, value in self.secrets.items():
            if not isinstance(key, str) or not _ENV_NAME.match(key) or not isinstance(value, str):
                # the message names the secret, never its value
                raise ValueError(f"secret {key!r} must be a variable name with a string value")
        notebook = Path(self.notebook)
        if notebook.suffix != ".ipynb":
            raise ValueError(f"the notebook snapshot {notebook} is not an .ipynb file")
        for name in ("notebook", "output_dir", "log_path", "cwd"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_absolute():
                # relative paths would depend on the working directory of each process
                raise ValueError(f"{name} must be an absolute path, not {str(path)!r}")
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "notebook", notebook)
        set_(self, "output_dir", Path(self.output_dir))
        set_(self, "log_path", Path(self.log_path))
        set_(self, "cwd", Path(self.cwd) if self.cwd is not None else None)
        set_(self, "parameters", check_parameters(self.parameters))
        set_(self, "output_formats", formats)
        set_(self, "extra_env", dict(self.extra_env))
        set_(self, "secrets", dict(self.secrets))

    @property
    def name(self) -> str:
        """The name of the run's cgroup or Kubernetes Job: ``job-<run slug>``."""
        return job_name(self.run_id)

    def output_paths(self) -> dict[str, Path]:
        """Where each requested format is written, by format."""
        if os.path.abspath(self.output_dir) == os.path.abspath(self.notebook.parent):
            raise ExecutorError(
                f"The output directory {self.output_dir} holds the snapshot {self.notebook.name}, "
                "which the executed notebook would overwrite; give the run its own output directory."
            )
        stem = self.notebook.stem
        return {fmt: self.output_dir / f"{stem}.{fmt}" for fmt in self.output_formats}

    @property
    def result_file(self) -> Path:
        return self.output_dir / RESULT_FILE_NAME


def job_name(run_id: str) -> str:
    """``job-<slug>``: the one derived name of a run (cgroup, Kubernetes Job, labels)."""
    return f"job-{user_slug(run_id)}"


# ------------------------------------------------------------------- report


@dataclass(frozen=True)
class CellError:
    """The cell that failed, as papermill's ``PapermillExecutionError`` describes it.

    ``cell_index`` counts every cell of the executed notebook from 0, the
    injected-parameters cell included, but not the marker cells papermill adds
    to the saved copy afterwards.
    """

    cell_index: int
    execution_count: int | None
    ename: str
    evalue: str
    traceback: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunReport:
    """What happened to one run; the service turns it into the run's record.

    ``status`` is one of the ends an executor sees: ``SUCCEEDED``, ``FAILED``,
    ``TIMED_OUT`` or ``CANCELLED`` (the API's :class:`~..models.RunStatus`).
    """

    status: RunStatus
    reason: str = ""
    error: CellError | None = None
    #: format -> path, for every output that exists (a partial notebook after a timeout too)
    outputs: dict[str, Path] = field(default_factory=dict)
    env_digest: str | None = None
    mlflow_run_id: str | None = None
    log_path: Path | None = None


ProgressCallback = Callable[[int, int], Awaitable[None] | None]
"""``progress(cell_index, cell_count)``: cell ``cell_index`` (from 0) of ``cell_count`` started.

Sync or async. Called once per cell that starts, in order, never for a cell
twice; cells after a failing one never start. Progress is informational: a
callback that raises is logged, and the run goes on.
"""


# -------------------------------------------------------------- the ABC


class _ExecutorMeta(MetaHasTraits, ABCMeta):
    """Traits and abstract methods on one class (each alone is a metaclass)."""


class Executor(LoggingConfigurable, metaclass=_ExecutorMeta):
    """Runs one notebook run and reports; the scheduler service records what it returns.

    Subclasses implement both abstract methods as ``async def`` instance
    methods; a subclass that does not fails when it is defined, not when the
    first run reaches it (STYLE rule 6).
    """

    _interface = ("execute", "cancel")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        check_interface(cls, Executor.__name__, cls._interface)

    @property
    def gpu_count(self) -> int | None:
        """How many GPUs runs may have here; None where the executor does not know.

        The service lists a profile that needs more as unavailable and refuses a job
        asking for it (``Profile.unavailable_reason``), instead of a run failing later
        on an environment ``shipyard up`` skipped because there was no GPU. None (the
        default, and Kubernetes: the cluster picks a node or says why not) checks nothing.
        """
        return None

    @abstractmethod
    async def execute(self, spec: RunSpec, progress: ProgressCallback) -> RunReport:
        """Run ``spec`` to its end and report how it ended.

        Raises
        ------
        ExecutorError
            The run could not start (nothing of the user's ran).
        """

    @abstractmethod
    async def cancel(self, run_id: str) -> None:
        """Stop run ``run_id`` now; its :meth:`execute` then reports ``cancelled``.

        Cancelling a run that is not running (finished, or never started here)
        does nothing.
        """


# --------------------------------------------------- papermill, shared


def _format_safe(path: Path | str) -> str:
    # papermill passes input and output paths through str.format(**parameters),
    # so a brace in a path would be filled from the parameters
    return str(path).replace("{", "{{").replace("}", "}}")


def papermill_args(
    notebook: Path | str, output: Path | str, parameters_file: Path | str, cwd: Path | str
) -> list[str]:
    """Arguments after ``python -m papermill``: parameters from a file, log to stderr, no bar."""
    return [
        _format_safe(notebook),
        _format_safe(output),
        "--parameters_file",
        str(parameters_file),
        "--cwd",
        str(cwd),
        "--log-output",
        "--no-progress-bar",
        "--log-level",
        "INFO",
    ]


def papermill_cell_count(notebook: Mapping[str, Any], has_parameters: bool) -> int:
    """How many cells papermill will run for ``notebook``, as its ``execute_notebook`` does.

    Marker cells of an earlier failure are removed; parameters, when given,
    replace an earlier injected cell or add one.
    """
    cells = [c for c in notebook.get("cells", []) if PAPERMILL_ERROR_TAG not in _tags(c)]
    injected = any(PAPERMILL_INJECTED_TAG in _tags(c) for c in cells)
    return len(cells) + (1 if has_parameters and not injected else 0)


def _tags(cell: Mapping[str, Any]) -> list[str]:
    tags = (cell.get("metadata") or {}).get("tags") or []
    return tags if isinstance(tags, list) else []


class ProgressParser:
    """Turns papermill's ``--log-output`` lines into ``(cell_index, cell_count)``.

    Papermill logs ``Executing Cell N----…`` (N from 1) before each cell. A
    cell's own output is logged through the same stream, so a line is taken
    only when it names the next cell: a notebook printing such a line can at
    most make progress look early, never go back or skip.
    """

    _LINE = re.compile(r"^Executing Cell (\d+)-+$")

    def __init__(self, cell_count: int):
        self.cell_count = cell_count
        self.last = -1

    def feed(self, line: str) -> tuple[int, int] | None:
        match = self._LINE.match(line.strip())
        if not match:
            return None
        index = int(match.group(1)) - 1
        if index != self.last + 1:
            return None
        self.last = index
        # a count computed before the run can only be short if papermill changed
        self.cell_count = max(self.cell_count, index + 1)
        return index, self.cell_count


#: Longest log line scanned for progress; papermill's own lines are ~55 characters.
_MAX_LINE = 256


class RunLog:
    """The run's log: what the processes print, up to a size cap; lines go to ``on_line``.

    Opened by the service, which may be root, in a folder the run's user may
    have written to before: never through a symlink, and never into a file
    with a second hard link (it would be someone else's file); truncated only
    after those checks.
    """

    def __init__(self, path: Path, limit: int, secrets: Mapping[str, str] | None = None):
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fd = os.open(path, flags, 0o640)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            os.close(fd)
            raise ExecutorError(f"The log {path} is not a plain file of its own; remove it.")
        os.ftruncate(fd, 0)
        self.file = os.fdopen(fd, "wb", buffering=0)
        self.path = path
        self.limit = limit
        self.written = 0
        self.truncated = False
        self.on_line: Callable[[str], None] | None = None
        self._line = bytearray()
        self._skip = False
        # the run's secrets never reach the file, even split across two writes
        scrubber = Scrubber(secrets or {})
        self._scrub = StreamScrubber(scrubber, self._write) if scrubber else None

    def write(self, data: bytes) -> None:
        if self._scrub is not None:
            self._scrub.write(data)
        else:
            self._write(data)

    def _write(self, data: bytes) -> None:
        room = self.limit - self.written
        if room > 0:
            self.file.write(data[:room])
            self.written += min(room, len(data))
        if len(data) > room and not self.truncated:
            self.truncated = True
            self.file.write(f"\n[shipyard] the log is cut here at {self.limit} bytes\n".encode())
        if self.on_line is not None:
            self._scan(data)

    def note(self, text: str) -> None:
        """A line of the executor's own, marked as such."""
        if self._scrub is not None:
            self._scrub.flush()  # what the run printed before it comes first
        self.file.write(f"[shipyard] {text}\n".encode())

    def _scan(self, data: bytes) -> None:
        pieces = data.split(b"\n")
        for i, piece in enumerate(pieces):
            if not self._skip:
                self._line += piece
                if len(self._line) > _MAX_LINE:  # a cell's long output: not our line
                    self._skip = True
                    self._line.clear()
            if i == len(pieces) - 1:
                break
            if not self._skip:
                self.on_line(self._line.decode("utf-8", "replace"))
            self._line.clear()
            self._skip = False

    def tail(self, lines: int = 12) -> str:
        try:
            with open(self.path, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        if self._scrub is not None:
            self._scrub.flush()
        self.file.close()


# -------------------------------------------------------- reading results


def read_user_file(path: Path, limit: int) -> bytes:
    """Read a file the run's user could have replaced, safely, as the service.

    No symlink is followed (a link to /etc/shadow stays unread), only a regular
    file is read (a FIFO would block the service), and at most ``limit`` bytes.

    Raises
    ------
    OSError
        Missing, not a regular file, a symlink, or larger than ``limit``.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path} is not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(f"{path} is larger than {limit} bytes")
    return data


def cell_error(notebook: Mapping[str, Any]) -> CellError | None:
    """The error papermill raised for an executed notebook, found as papermill finds it.

    Mirrors ``papermill.execute.raise_for_execution_errors``: the first cell
    with an ``error`` output (``SystemExit`` with no code or 0 is not one), or
    else the first cell papermill marked with an exception; the marker cells it
    inserted into the saved copy are skipped so ``cell_index`` is its own.
    """
    cells = [c for c in notebook.get("cells", []) if PAPERMILL_ERROR_TAG not in _tags(c)]
    for index, cell in enumerate(cells):
        has_sys_exit = False
        for output in cell.get("outputs") or []:
            if output.get("output_type") != "error":
                continue
            ename, evalue = str(output.get("ename", "")), str(output.get("evalue", ""))
            if ename == "SystemExit" and evalue in ("", "0"):
                has_sys_exit = True
                continue
            return CellError(
                cell_index=index,
                execution_count=cell.get("execution_count"),
                ename=ename,
                evalue=evalue,
                traceback=tuple(_ANSI.sub("", line) for line in output.get("traceback") or []),
            )
        papermill = (cell.get("metadata") or {}).get("papermill") or {}
        if not has_sys_exit and papermill.get("exception") is True:
            return CellError(index, cell.get("execution_count"), "CellExecutionError", "")
    return None


def existing_outputs(paths: Mapping[str, Path]) -> dict[str, Path]:
    """The outputs that were written: plain files, not links the run's user left instead."""
    return {fmt: p for fmt, p in paths.items() if p.is_file() and not p.is_symlink()}


def read_notebook(path: Path) -> dict[str, Any] | None:
    """The executed notebook at ``path`` as JSON, or None if it is missing or unreadable."""
    try:
        data = json.loads(read_user_file(path, MAX_NOTEBOOK_BYTES))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_mlflow_run_id(path: Path) -> str | None:
    """``mlflow_run_id`` from the result file a kernel wrote, if it is there and well-formed."""
    try:
        data = json.loads(read_user_file(path, MAX_RESULT_BYTES))
    except (OSError, ValueError):
        return None
    run_id = data.get("mlflow_run_id") if isinstance(data, dict) else None
    if isinstance(run_id, str) and _MLFLOW_RUN_ID.match(run_id):
        return run_id
    return None


def describe_error(error: CellError) -> str:
    """One line for a run's reason: ``Cell 3 raised ZeroDivisionError: division by zero``."""
    text = f"Cell {error.cell_index} raised {error.ename}"
    return f"{text}: {error.evalue}" if error.evalue else text
