"""Experiment tracking and scheduled notebooks from a notebook cell.

Tracking: ``%experiment``, ``%%track``, ``%runs``, ``%compare``. Scheduling: ``%schedule``,
``%jobs``, ``%run_now``.

Plain ``import mlflow`` already works in a Shipyard kernel (the platform sets
``MLFLOW_TRACKING_URI`` and ``MLFLOW_TRACKING_TOKEN``). These magics add what people forget
to record by hand: the notebook, its parameters (papermill's too), the git commit, the
environment and the installed packages, so a run can be explained and repeated months later.

The magics parse arguments and delegate (STYLE rule 22): MLflow calls are in
:mod:`server_ext.client`, the scheduler's in :mod:`server_ext.scheduler_client`, what a run
records about its cell in :mod:`server_ext.lineage`, the metrics spool and its background sender
in :mod:`server_ext.spool` and :mod:`server_ext.sender`, widgets in :mod:`server_ext.widgets`.
User errors become ``UsageError`` in one place, :func:`_user_errors`, so the user sees a message
that says what to do (for the scheduler, the service's own message), never a traceback.

``%schedule`` keeps no secret in the notebook: a job's webhook secret, shown once by the
service, goes to a file only the user can read (``~/.shipyard/webhooks/``), and the cell's
output names the file, since outputs are saved, committed and shared with the notebook.

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
from pathlib import Path

from IPython.core.error import UsageError
from IPython.core.magic import (
    Magics,
    cell_magic,
    line_magic,
    magics_class,
    output_can_be_silenced,
)
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display
from traitlets import Float, Unicode, default

from .client import (
    MAX_KEY,
    MAX_PARAM_VALUE,
    MetricError,
    RunPlan,
    TrackingClient,
    TrackingError,
    TrackingWarning,
)
from .lineage import (
    installed_packages,
    lineage_tags,
    notebook_path,
    papermill_parameters,
    report_to_job,
    snapshot,
)
from .scheduler_client import (
    WEBHOOK_SECRET_HEADER,
    SchedulerClient,
    SchedulerError,
    cron_timezone,
    current_notebook,
    default_job_name,
    describe_triggers,
    format_time,
    job_summaries,
    jobs_text,
    parse_parameters,
    save_webhook_secret,
)
from .sender import MetricSender
from .spool import default_spool_dir

#: Lines of a notebook's diff ``%schedule`` shows when it updates a job.
MAX_DIFF_LINES = 20


def _user_errors(magic):
    """The one translator: a Tracking- or SchedulerError becomes a ``UsageError`` with its message."""

    @functools.wraps(magic)
    def wrapper(*args, **kwargs):
        __tracebackhide__ = True  # IPython leaves this frame out of tracebacks
        try:
            return magic(*args, **kwargs)
        except (TrackingError, SchedulerError) as exc:
            raise UsageError(str(exc)) from None

    return wrapper


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
class ShipyardMagics(Magics):
    """Tracking (``%experiment``, ``%%track``, ``%runs``, ``%compare``, ``log()``) and
    scheduling (``%schedule``, ``%jobs``, ``%run_now``)."""

    spool_dir = Unicode(
        help="""Where metrics wait until the tracking server has them.

        Every ``log()`` value is appended here first, so values survive a killed kernel or
        an unreachable server; a kernel that loads the extension sends what a dead one left.
        Defaults to ``$SHIPYARD_SPOOL_DIR``, else ``~/.shipyard/spool``.

        Example: ``c.ShipyardMagics.spool_dir = "/scratch/me/spool"``

        .. versionadded:: 0.1
        """
    ).tag(config=True)

    finish_timeout = Float(
        60.0,
        help="""Seconds the end of a ``%%track`` cell waits for its metrics to be sent.

        While the server answers, the cell ends once its run is complete on the server; past
        this, or as soon as the server fails, the rest is sent in the background.

        Example: ``c.ShipyardMagics.finish_timeout = 120``

        .. versionadded:: 0.1
        """,
    ).tag(config=True)

    max_retry_interval = Float(
        30.0,
        help="""The longest wait, in seconds, between attempts to reach a failing server.

        Attempts back off from half a second, doubling up to this.

        Example: ``c.ShipyardMagics.max_retry_interval = 60``

        .. versionadded:: 0.1
        """,
    ).tag(config=True)

    poll_interval = Float(
        1.0,
        help="""Seconds between looks at a run's progress while ``%run_now --wait`` waits.

        A log that grows is read again at once; this is the pause while nothing changed.

        Example: ``c.ShipyardMagics.poll_interval = 5``

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    @default("spool_dir")
    def _default_spool_dir(self):
        return str(default_spool_dir())

    def __init__(self, shell=None, **kwargs):
        super().__init__(shell=shell, **kwargs)
        self.sender = MetricSender(
            Path(self.spool_dir), self.finish_timeout, self.max_retry_interval
        )
        self.logger = MetricLogger()
        self.experiment_name: str | None = None
        self._noted_log = False

    def _experiment(self) -> str:
        return self.experiment_name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "Default"

    def _tell(self) -> None:
        for message in self.sender.health.news():
            # warn_explicit keeps no registry: the same outage later is shown again.
            warnings.warn_explicit(message, TrackingWarning, "shipyard-tracking", 0)

    @magic_arguments()
    @argument("name", nargs="?", help="The experiment; created if missing. Omit to show it.")
    @line_magic
    @_user_errors
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
            ref = client.experiment(self._experiment())
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
        help="A parameter to record; repeat for more. Quote values with spaces.",
    )
    @cell_magic
    @output_can_be_silenced
    @_user_errors
    def track(self, line: str, cell: str):
        """Run the cell inside an MLflow run, recording its lineage; ``log()`` adds metrics.

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
        params = {**papermill_parameters(self.shell), **parse_params(args.param)}
        code, last = self._compile(line, cell)  # a syntax error starts no run
        notebook = notebook_path()
        packages = installed_packages()
        plan = RunPlan(
            experiment=self._experiment(),
            run_name=unquote(args.name),
            params=params,
            tags=lineage_tags(notebook, packages),
            start_time=time.time_ns() // 1_000_000,
        )
        files, texts = snapshot(notebook, f"%%track {line}\n{cell}", packages)
        journal = self.sender.start_run(TrackingClient.from_environment(), plan, files, texts)
        self._tell()
        outer = self.logger.journal  # a %%track inside a tracked cell gets its own run
        self.logger.journal, status, started = journal, "FAILED", time.monotonic()
        try:
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
            self.sender.end_run(journal, status, {"shipyard.wall_time_s": wall})
            report_to_job(journal.run_id)
            self._tell()

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
    @_user_errors
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
        ref = client.experiment(unquote(args.experiment) or self._experiment())
        from .widgets import runs_table  # ipywidgets is imported when first needed

        return runs_table(ref, client.recent_runs(ref.id, args.max))

    @magic_arguments()
    @argument("run_a", help="A run id (see %%runs).")
    @argument("run_b", help="Another run id.")
    @line_magic
    @_user_errors
    def compare(self, line: str):
        """Two runs' parameters and metrics side by side, with a plot of their shared metrics.

        Examples
        --------
        ``%compare 3f2a9c... 81b0de...``
        """
        args = parse_argstring(self.compare, line)
        client = TrackingClient.from_environment()
        a, b = client.run(unquote(args.run_a)), client.run(unquote(args.run_b))
        from .widgets import MAX_PLOTS, comparison

        shared = sorted(set(a.metrics) & set(b.metrics))[:MAX_PLOTS]
        histories = {
            key: (client.metric_history(a.run_id, key), client.metric_history(b.run_id, key))
            for key in shared
        }
        return comparison(a, b, histories)

    # ------------------------------------------------------------ scheduling

    @magic_arguments()
    @argument(
        "cron",
        nargs="*",
        help='When to run, as a cron expression in quotes: "0 6 * * *" is every day at 06:00. '
        "May be left out with --on-file or --webhook.",
    )
    @argument("--tz", default="UTC", help="The cron expression's IANA time zone (default UTC).")
    @argument(
        "-p",
        "--param",
        dest="params",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="A parameter of the notebook's parameters cell: a JSON value (3, true, '\"3\"'), "
        "else a string. Repeat for more.",
    )
    @argument(
        "--profile",
        help="The profile runs use (default: this server's when jobs may use it, else yours).",
    )
    @argument(
        "--on-file",
        dest="globs",
        action="append",
        default=[],
        metavar="GLOB",
        help="Run when a file matching GLOB (relative to your home) appears or changes, "
        "e.g. 'data/*.csv'. Repeat for more.",
    )
    @argument(
        "--webhook",
        action="store_true",
        help="Run when the job's webhook URL is called with its secret (kept for you in "
        "~/.shipyard/webhooks/).",
    )
    @argument("--name", help="The job's name (default: the notebook's file name as a slug).")
    @argument(
        "--notebook",
        metavar="PATH",
        help="The notebook to schedule, relative to your home (default: this notebook).",
    )
    @argument("--retries", type=int, metavar="N", help="Retry a failed run up to N times.")
    @argument("--timeout", type=int, metavar="SECONDS", help="Stop a run after this long.")
    @argument("--html", action="store_true", help="Keep each run's output as HTML too.")
    @line_magic
    @_user_errors
    def schedule(self, line: str):
        """Run this notebook on a schedule, when files change, or when a webhook is called.

        Creates the job, or updates the job of that name to the notebook as saved now (and
        shows what changed in it). The triggers given replace the job's; settings left out
        keep their values. Prints the job's id and its next three runs. A webhook's secret is
        saved in ``~/.shipyard/webhooks/<job>.secret``, readable by you only, and never
        printed: the output shows a ``curl`` command that reads it from there.

        Examples
        --------
        ``%schedule "0 6 * * *" --tz Europe/Berlin -p n=3``

        ``%schedule --on-file 'data/*.csv' --webhook --name ingest``
        """
        args = parse_argstring(self.schedule, line)
        cron = " ".join(unquote(part) for part in args.cron).strip()
        globs = [unquote(glob) for glob in args.globs]
        if not (cron or globs or args.webhook):
            raise UsageError(
                'Say when to run: a cron expression (%schedule "0 6 * * *" is every day at '
                "06:00), --on-file GLOB, or --webhook."
            )
        triggers: list[dict] = []
        if cron:
            triggers.append({"kind": "cron", "expression": cron, "timezone": unquote(args.tz)})
        triggers += [{"kind": "file", "glob": glob} for glob in globs]
        if args.webhook:
            triggers.append({"kind": "webhook"})
        params = parse_parameters(shell_words(args.params))
        source = current_notebook(unquote(args.notebook), self.shell.user_ns)
        name = unquote(args.name) or default_job_name(source)
        settings: dict = {"triggers": triggers}
        if args.profile:
            settings["profile"] = unquote(args.profile)
        if args.retries is not None:
            settings["retry_attempts"] = args.retries
        if args.timeout is not None:
            settings["timeout_seconds"] = args.timeout

        client = SchedulerClient.from_environment()
        existing = client.job_named(name)
        if existing is None:
            profile = settings.pop("profile", None) or client.default_profile(
                os.environ.get("SHIPYARD_PROFILE")
            )
            body = {"name": name, "profile": profile, "source_path": source, **settings}
            body["parameters"] = params
            if args.html:
                body["output_formats"] = ["ipynb", "html"]
            job = client.create_job(body)
            print(f"Scheduled {source} as job {name!r} (id {job['id']}, profile {job['profile']}).")
        else:
            if existing.get("source_path") != source and not args.name:
                raise UsageError(
                    f"A job named {name!r} already runs {existing.get('source_path') or 'another notebook'}: "
                    f"give this one another name with --name, or pass --name {name} to make "
                    f"that job run {source} instead."
                )
            if args.html:
                settings["output_formats"] = sorted({*existing["output_formats"], "html"})
            # settings first: a bad cron expression changes nothing; parameters last, since
            # the service checks them against the notebook the job has by then
            changed = set(client.update_job(existing["id"], settings)["changed"])
            replaced = client.replace_notebook(existing["id"], source_path=source)
            changed |= set(replaced["changed"])
            job = replaced["job"]
            if args.params:
                updated = client.update_job(existing["id"], {"parameters": params})
                changed |= set(updated["changed"])
                job = updated["job"]
            said = ", ".join(sorted(changed)) + " changed" if changed else "nothing changed"
            print(f"Updated job {name!r} (id {job['id']}): {said}.")
            print(diff_summary(replaced["notebook_changed"], replaced["diff"]))
        self._tell_schedule(client, job)

    def _tell_schedule(self, client: SchedulerClient, job: dict) -> None:
        """The job's triggers, its next runs and, with a webhook, how to call it."""
        print(f"Triggers: {describe_triggers(job)}")
        times = client.upcoming(job["id"], 3)["times"]
        if times:
            tz = cron_timezone(job)
            print("Next runs: " + ", ".join(format_time(t, tz) for t in times))
        elif job.get("paused"):
            print("The job is paused: it runs again once it is resumed.")
        secret_file = Path.home() / ".shipyard" / "webhooks" / f"{job['name']}.secret"
        if not any(t["trigger"]["kind"] == "webhook" for t in job["triggers"]):
            secret_file.unlink(missing_ok=True)  # a removed webhook's secret is void
            return
        if job.get("webhook_secret"):
            secret_file = save_webhook_secret(job["name"], job["webhook_secret"])
        url = client.webhook_url(job["id"])
        if secret_file.exists():
            print(
                f"Webhook: POST to {url} with the secret, which is kept in {secret_file} "
                "(readable by you only; shown nowhere else), e.g.\n"
                f'  curl -X POST -H "{WEBHOOK_SECRET_HEADER}: $(cat {secret_file})" {url}'
            )
        else:
            print(
                f"Webhook: POST to {url} with the secret shown when the webhook was added "
                f"(in the {WEBHOOK_SECRET_HEADER} header). For a new secret, schedule once "
                "without --webhook, then with it."
            )

    @magic_arguments()
    @line_magic
    @_user_errors
    def jobs(self, line: str):
        """A table of your jobs (and those shared with your groups): triggers, next and last run.

        The last run links to its output, which opens through the hub's login.

        Examples
        --------
        ``%jobs``
        """
        parse_argstring(self.jobs, line)
        client = SchedulerClient.from_environment()
        summaries = job_summaries(client)
        user = os.environ.get("JUPYTERHUB_USER")
        try:
            from .widgets import jobs_table
        except ImportError:  # no ipywidgets in this environment
            print(jobs_text(summaries, user))
            return None
        return jobs_table(summaries, client.output_link, user)

    @magic_arguments()
    @argument("job", help="The job's name or id (see %%jobs).")
    @argument(
        "-p",
        "--param",
        dest="params",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="A parameter for this run only, as in %%schedule. Repeat for more.",
    )
    @argument("--wait", action="store_true", help="Show its progress and log until it ends.")
    @line_magic
    @_user_errors
    def run_now(self, line: str):
        """Queue a run of a job now; with ``--wait``, follow it to its end.

        Waiting shows a bar of the executed cells and the run's log as it grows, then the
        run's status and a link to its output. Interrupting the kernel stops the waiting, not
        the run.

        Examples
        --------
        ``%run_now daily-report -p n=5 --wait``
        """
        args = parse_argstring(self.run_now, line)
        params = parse_parameters(shell_words(args.params))
        client = SchedulerClient.from_environment()
        job = client.find_job(unquote(args.job))
        run = client.run_now(job["id"], params)
        print(f"Queued run {run['id']} of job {job['name']!r}.")
        if not args.wait:
            print("%jobs shows how it ends; %run_now --wait follows a run.")
            return
        progress = None
        try:
            from .widgets import RunProgress

            progress = RunProgress(job["name"])
            display(progress.widget)
        except ImportError:  # no ipywidgets: the log alone
            pass
        try:
            for chunk in client.follow_log(run["id"], interval=self.poll_interval):
                if progress is not None:
                    progress.update(chunk["status"], chunk["cells_done"], chunk["cells_total"])
                if chunk["text"]:
                    print(chunk["text"], end="", flush=True)
        except KeyboardInterrupt:
            print(f"\nStopped waiting; run {run['id']} goes on (%jobs shows how it ends).")
            return
        run = client.get_run(run["id"])
        reason = f": {run['reason']}" if run.get("reason") and run["status"] != "succeeded" else ""
        print(f"\nRun {run['id']} {run['status']}{reason}")
        if run.get("output_path"):
            print(f"Output: {client.output_url(run['id'])}")
            if "html" in job.get("output_formats", []):
                print(f"HTML: {client.output_url(run['id'], 'html')}")


def load_ipython_extension(ip) -> None:
    """Register the magics, put ``log`` in the namespace, and send what dead kernels left."""
    magics = ShipyardMagics(shell=ip)
    ip.register_magics(magics)
    if isinstance(ip.user_ns.get("log", magics.logger), MetricLogger):
        ip.push({"log": magics.logger}, interactive=False)
    else:
        ip.push({"shipyard_log": magics.logger}, interactive=False)
        print("Shipyard: `log` is taken in this namespace; use shipyard_log(...) in %%track.")
    adopted = magics.sender.recover()
    if adopted:
        values = sum(j.total - j.state["sent"] for j in adopted)
        print(f"Shipyard: sending {values} metric values of {len(adopted)} unfinished run(s).")


def unquote(text: str | None) -> str | None:
    """``text`` without one pair of enclosing quotes.

    IPython splits magic arguments like a non-POSIX shell, which keeps the quotes:
    ``%experiment "my exp"`` arrives as ``'"my exp"'``.
    """
    if text and len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


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


def shell_words(items: list[str]) -> list[str]:
    """``NAME=VALUE`` items with the quotes a shell would remove, removed.

    IPython keeps quotes (see :func:`unquote`): ``-p "note=two words"`` arrives quoted whole,
    ``-p x='"3"'`` with its value quoted. Either pair goes, once, so ``x='"3"'`` is the JSON
    string ``"3"``, as in a terminal.
    """
    words = []
    for item in map(unquote, items):
        name, sep, value = item.partition("=")
        words.append(f"{name}={unquote(value)}" if sep else item)
    return words


def diff_summary(changed: bool, diff: str) -> str:
    """What replacing a job's notebook changed: counts, and the start of the diff."""
    if not changed:
        return "The notebook is the same as the job's."
    if not diff.strip():
        return "The notebook changed in outputs or metadata only."
    lines = diff.splitlines()
    added = sum(1 for x in lines if x.startswith("+") and not x.startswith("+++"))
    removed = sum(1 for x in lines if x.startswith("-") and not x.startswith("---"))
    shown = "\n".join(f"  {x}" for x in lines[:MAX_DIFF_LINES])
    more = (
        f"\n  ... ({len(lines) - MAX_DIFF_LINES} more lines)" if len(lines) > MAX_DIFF_LINES else ""
    )
    return f"The notebook changed: {added} line(s) added, {removed} removed in its cells:\n{shown}{more}"
