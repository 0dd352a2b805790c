"""Experiment tracking from a notebook cell: ``%experiment``, ``%%track``, ``%runs``, ``%compare``
and ``log()``.

Plain ``import mlflow`` already works in a Shipyard kernel (the platform sets
``MLFLOW_TRACKING_URI`` and ``MLFLOW_TRACKING_TOKEN``). These magics add what people forget
to record by hand: the notebook, its parameters (papermill's too), the git commit, the
environment and the installed packages, so a run can be explained and repeated months later.

The magics parse arguments and delegate (STYLE rule 22): MLflow calls are in
:mod:`server_ext.clients.tracking.client`, what a run records about its cell in
:mod:`server_ext.clients.tracking.lineage`, the metrics spool and its background sender in
:mod:`server_ext.clients.tracking.spool` and :mod:`server_ext.clients.tracking.sender`,
widgets in :mod:`server_ext.magics.widgets`.

``%%track`` executes the cell itself, the way IPython's ``%%time`` does (transform, compile,
``exec``), rather than with a nested ``run_cell``: the cell's own exception then propagates
once, with its traceback, and the cell fails for papermill too. The cost: top-level ``await``
is not supported in a tracked cell.
"""

from __future__ import annotations

import ast
import functools
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from IPython.core.error import UsageError
from IPython.core.magic import cell_magic, line_magic, magics_class, output_can_be_silenced
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..clients.tracking.client import (
    MAX_KEY,
    MAX_PARAM_VALUE,
    MetricError,
    RunPlan,
    TrackingClient,
    TrackingWarning,
    tracking_uri,
)
from ..clients.tracking.lineage import (
    JOB_RESULT_FILE_ENV,
    KernelRuns,
    git_directory,
    git_tags,
    installed_packages,
    lineage_tags,
    notebook_path,
    papermill_parameters,
    report_to_job,
    snapshot,
)
from ..clients.tracking.sender import MetricSender
from .base import ShipyardMagics, unquote, user_errors


@functools.cache
def _lineage_reader() -> ThreadPoolExecutor:
    """One thread that reads, beside tracked cells, what is slow to read (the git state)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="shipyard-lineage")


class MetricLogger:
    """``log(step=None, **metrics)``: record metrics of the run of the running ``%%track`` cell.

    Values are spooled to disk and sent in the background, so a loop may call it freely.
    ``step`` defaults to 0, 1, 2 ... per metric; it is reserved and cannot name a metric.

    Examples
    --------
    >>> log(loss=0.25, accuracy=0.91)  # doctest: +SKIP
    """

    def __init__(self):
        self.journal = None

    def __call__(self, step: int | None = None, **metrics) -> None:
        journal = self.journal
        if journal is None:
            raise UsageError(
                "log() records metrics of a tracked run: call it in a cell that starts with "
                "%%track (and load the extension with %load_ext server_ext)."
            )
        if not metrics:
            raise UsageError("log() needs at least one metric, e.g. log(loss=0.25).")
        try:
            journal.log(metrics, step)
        except MetricError as exc:
            raise UsageError(str(exc)) from None


@magics_class
class TrackingMagics(ShipyardMagics):
    """Tracking: ``%experiment``, ``%%track``, ``%runs``, ``%compare`` and ``log()``."""

    def __init__(self, shell=None, **kwargs):
        super().__init__(shell=shell, **kwargs)
        self.sender = MetricSender(
            Path(self.spool_dir), self.finish_timeout, self.max_retry_interval
        )
        self.logger = MetricLogger()
        self.experiment_name: str | None = None
        self._noted_log = False
        # the newest %%track run of this kernel, and the runs %deploy made: where the
        # source run %deploy records for a model comes from
        self.kernel_runs = KernelRuns()
        self._tracking_client: TrackingClient | None = None

    @property
    def last_tracked_run(self) -> str | None:
        """The newest ``%%track`` run of this kernel: the source run ``%deploy`` records."""
        return self.kernel_runs.last_tracked_run

    def settle(self) -> None:
        """Wait (while the servers answer) for this kernel's ended runs to be complete, so
        that what is read back shows them as their cells ended; say what went wrong."""
        self.sender.settle()
        self._tell()

    def experiment_in_use(self) -> str:
        """The experiment ``%%track``, ``%runs`` and ``%deploy`` use."""
        return self.experiment_name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "Default"

    def _client(self) -> TrackingClient:
        """The client of the tracking server in use, made once per server (MlflowClient is
        not free to make, and a tracked cell should cost next to nothing)."""
        uri = tracking_uri()
        if self._tracking_client is None or self._tracking_client.uri != uri:
            self._tracking_client = TrackingClient(uri)
        return self._tracking_client

    def _tell(self) -> None:
        self.sender.check_stalls()
        for message in self.sender.health.news():
            # warn_explicit keeps no registry: the same outage later is shown again.
            warnings.warn_explicit(message, TrackingWarning, "shipyard-tracking", 0)

    @magic_arguments()
    @argument("name", nargs="?", help="The experiment; created if missing. Omit to show it.")
    @line_magic
    @user_errors
    def experiment(self, line: str):
        """Set the experiment that ``%%track`` and ``%runs`` use (and ``mlflow``'s, too).

        Examples
        --------
        ``%experiment churn-model``
        """
        args = parse_argstring(self.experiment, line)
        client = TrackingClient.from_environment()
        args.name = unquote(args.name)
        if args.name is None:
            ref = client.experiment(self.experiment_in_use())
            print(f"Experiment {ref.name!r} (id {ref.id}) {ref.url or ''}".rstrip())
            return
        ref = client.use_experiment(args.name)
        self.experiment_name = ref.name
        print(
            f"{'Created' if ref.created else 'Using'} experiment {ref.name!r} (id {ref.id}) "
            f"{ref.url or ''}".rstrip()
        )

    @magic_arguments()
    @argument("--name", help="The run's name in MLflow (default: one MLflow makes up).")
    @argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="A parameter to record and set as a variable of the cell (lr=0.1 sets the "
        "float lr); repeat for more. Quote values with spaces.",
    )
    @cell_magic
    @output_can_be_silenced
    @user_errors
    def track(self, line: str, cell: str):
        """Run the cell inside an MLflow run, recording its lineage; ``log()`` adds metrics.

        Each ``--param NAME=VALUE`` is also a variable of the cell, set before it runs, as
        papermill sets its parameters: ``True``, ``False``, ``None``, numbers and quoted
        strings are read as Python literals (data, never code), anything else is a string;
        MLflow records the value as it was written.

        Records parameters (``--param`` and papermill's), the notebook file, the cell source,
        the installed packages, git commit and dirty state, profile, environment, and wall
        time. The run ends FINISHED, or FAILED when the cell raises (the error is re-raised),
        or KILLED when it is interrupted.

        Examples
        --------
        ``%%track --name baseline --param lr=0.01``
        """
        __tracebackhide__ = True
        args = parse_argstring(self.track, line)
        given = parse_params(args.param)
        params = {**papermill_parameters(self.shell), **given}
        code, last = self._compile(line, cell)  # a syntax error starts no run
        notebook = notebook_path()
        packages = installed_packages()
        # git runs beside the cell (two processes, ~10 ms); the run gets the tags before
        # it is created
        git = _lineage_reader().submit(git_tags, git_directory(notebook))
        plan = RunPlan(
            experiment=self.experiment_in_use(),
            run_name=unquote(args.name),
            params=params,
            tags=lineage_tags(notebook, packages, git=False),
            start_time=time.time_ns() // 1_000_000,
        )
        files, texts = snapshot(notebook, f"%%track {line}\n{cell}", packages)
        client = self._client()
        journal = self.sender.start_run(client, plan, files, texts, later_tags=git)
        self._tell()
        outer = self.logger.journal  # a %%track inside a tracked cell gets its own run
        self.logger.journal, status, started = journal, "FAILED", time.monotonic()
        try:
            # as papermill does: the cell reads its parameters as variables, typed
            self.shell.push({k: param_value(v) for k, v in given.items()}, interactive=False)
            self._check_log_name()
            exec(code, self.shell.user_ns)
            result = eval(last, self.shell.user_ns) if last else None
            status = "FINISHED"
            return result
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            self.logger.journal = outer
            wall = f"{time.monotonic() - started:.3f}"
            # a scheduled job's notebook ends right after: its run is complete first
            scheduled = bool(os.environ.get(JOB_RESULT_FILE_ENV))
            self.sender.end_run(journal, status, {"shipyard.wall_time_s": wall}, wait=scheduled)
            if scheduled:
                report_to_job(journal.run_id)
            self.kernel_runs.resolve_tracked = lambda: self.sender.run_id_of(journal)
            self._show_link(client, journal.state)
            self._tell()

    @staticmethod
    def _show_link(client: TrackingClient, state: dict) -> None:
        """Print where the run is in MLflow's UI, when it is already created (no waiting)."""
        if state.get("run_id") and state.get("experiment_id"):
            url = client.ui_url(state["experiment_id"], state["run_id"])
            if url:
                print(f"View run {state['run_name']} at: {url}")

    def _compile(self, line: str, cell: str):
        """Compile the cell like IPython does, keeping its last expression to show its value."""
        shell = self.shell
        source = shell.transform_cell(cell)
        # The cell's number: the history's last input is this cell (IPython 9 has already
        # counted it in execution_count). Line 1 is the %%track line, so line numbers in
        # tracebacks match what the user sees.
        number = max(len(shell.history_manager.input_hist_raw) - 1, 0)
        name = shell.compile.cache(f"%%track {line}\n{source}", number, cell)
        tree = shell.transform_ast(shell.compile.ast_parse("\n" + source, filename=name))
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = shell.compile(ast.Expression(tree.body.pop().value), name, "eval")
        return shell.compile(tree, name, "exec"), last

    def _check_log_name(self) -> None:
        """Put ``log`` back after ``%reset``; point to ``shipyard_log`` if the user took it."""
        current = self.shell.user_ns.get("log")
        if current is None:
            self.shell.push({"log": self.logger}, interactive=False)
        elif current is not self.logger and not self._noted_log:
            self._noted_log = True
            self.shell.push({"shipyard_log": self.logger}, interactive=False)
            print("Note: `log` is redefined in this notebook; use shipyard_log(...) instead.")

    @magic_arguments()
    @argument("--experiment", help="Whose runs to show (default: the one set by %%experiment).")
    @argument("--max", type=int, default=10, help="How many of the newest runs (default 10).")
    @line_magic
    @user_errors
    def runs(self, line: str):
        """A table of the newest runs: name, status, start, duration, metrics, MLflow link.

        Examples
        --------
        ``%runs --max 20``
        """
        args = parse_argstring(self.runs, line)
        if not 1 <= args.max <= 1000:
            raise UsageError(f"--max {args.max}: give a number from 1 to 1000, e.g. --max 20.")
        client = TrackingClient.from_environment()
        self.settle()
        ref = client.experiment(unquote(args.experiment) or self.experiment_in_use())
        from .widgets import runs_table  # ipywidgets is imported when first needed

        return runs_table(ref, client.recent_runs(ref.id, args.max))

    @magic_arguments()
    @argument("run_a", help="A run's name or id, as %%runs shows them.")
    @argument("run_b", help="Another run's name or id.")
    @argument(
        "--experiment",
        help="Where to find runs by name (default: the one set by %%experiment, as %%runs).",
    )
    @line_magic
    @user_errors
    def compare(self, line: str):
        """Two runs' parameters and metrics side by side, with a plot of their shared metrics.

        A run is given by its name or its id, as ``%runs`` shows them; a name is looked up
        in the experiment ``%runs`` shows (the newest run of that name, when there are
        several), an id anywhere.

        Examples
        --------
        ``%compare baseline tuned``

        ``%compare 3f2a9c... 81b0de...``
        """
        args = parse_argstring(self.compare, line)
        client = TrackingClient.from_environment()
        self.settle()
        experiment = unquote(args.experiment) or self.experiment_in_use()
        runs = []
        for ref in (unquote(args.run_a), unquote(args.run_b)):
            run, same_name = client.find_run(ref, experiment)
            if same_name > 1:
                print(
                    f"{same_name} runs are named {ref!r}; comparing the newest, {run.run_id} "
                    "(give a run id from %runs for another)."
                )
            runs.append(run)
        a, b = runs
        from .widgets import MAX_PLOTS, comparison

        shared = sorted(set(a.metrics) & set(b.metrics))[:MAX_PLOTS]
        histories = {
            key: (client.metric_history(a.run_id, key), client.metric_history(b.run_id, key))
            for key in shared
        }
        return comparison(a, b, histories)


def parse_params(items: list[str]) -> dict[str, str]:
    """``["lr=0.1", ...]`` as a dict; a ``UsageError`` naming any malformed item.

    Quote a whole item to put spaces in its value: ``--param "note=two words"``.
    """
    params: dict[str, str] = {}
    for item in map(unquote, items):
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--param {item!r} has no '=': write KEY=VALUE, e.g. --param lr=0.01.")
        if not key.isidentifier() or len(key) > MAX_KEY:
            raise UsageError(
                f"--param {item!r}: {key!r} is not a parameter name. Use a Python identifier "
                "(letters, digits, _; not starting with a digit), e.g. --param learning_rate=0.01."
            )
        if len(value) > MAX_PARAM_VALUE:
            raise UsageError(
                f"--param {key}: the value has {len(value)} characters and MLflow keeps at most "
                f"{MAX_PARAM_VALUE}. Save long values as a file and log it as an artifact."
            )
        if params.get(key, value) != value:
            raise UsageError(f"--param {key} is given twice with different values: give it once.")
        params[key] = value
    return params


def param_value(text: str) -> bool | int | float | str | None:
    """The value ``--param NAME=TEXT`` gives the variable ``NAME`` in a tracked cell.

    Read like papermill's ``-p``: ``True``/``False``/``None``, an int, a float or a quoted
    string as that Python literal (:func:`ast.literal_eval`, which evaluates no code);
    anything else, a list or a bare word included, is the text itself.

    Examples
    --------
    >>> param_value("0.1"), param_value("10"), param_value("True"), param_value("adam")
    (0.1, 10, True, 'adam')
    """
    try:
        value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return text
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return text
