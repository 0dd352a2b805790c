"""Experiment tracking and scheduled notebooks from a notebook cell.

Tracking: ``%experiment``, ``%%track``, ``%runs``, ``%compare``. Scheduling: ``%schedule``,
``%jobs``, ``%run_now``. Deployment: ``%deploy``, ``%deployments``.

Plain ``import mlflow`` already works in a Shipyard kernel (the platform sets
``MLFLOW_TRACKING_URI`` and ``MLFLOW_TRACKING_TOKEN``). These magics add what people forget
to record by hand: the notebook, its parameters (papermill's too), the git commit, the
environment and the installed packages, so a run can be explained and repeated months later.

The magics parse arguments and delegate (STYLE rule 22): MLflow calls are in
:mod:`server_ext.client`, the scheduler's in :mod:`server_ext.scheduler_client`, the deployer's
and model publishing in :mod:`server_ext.deploy_client`, what a run
records about its cell in :mod:`server_ext.lineage`, the metrics spool and its background sender
in :mod:`server_ext.spool` and :mod:`server_ext.sender`, widgets in :mod:`server_ext.widgets`.
User errors become ``UsageError`` in one place, :func:`_user_errors`, so the user sees a message
that says what to do (for the scheduler, the service's own message), never a traceback.

``%schedule`` keeps no secret in the notebook: a job's webhook secret, shown once by the
service, goes to a file only the user can read (``~/.shipyard/webhooks/``), and the cell's
output names the file, since outputs are saved, committed and shared with the notebook.
Likewise ``%deploy`` prints code that reads the hub token from ``$JUPYTERHUB_API_TOKEN``,
never the token itself (SECURITY rule 8).

``%%track`` executes the cell itself, the way IPython's ``%%time`` does (transform, compile,
``exec``), rather than with a nested ``run_cell``: the cell's own exception then propagates
once, with its traceback, and the cell fails for papermill too. The cost: top-level ``await``
is not supported in a tracked cell.
"""

from __future__ import annotations

import ast
import functools
import os
import threading
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

from . import deploy_client as deploying
from .client import (
    MAX_KEY,
    MAX_PARAM_VALUE,
    MetricError,
    RunPlan,
    TrackingClient,
    TrackingError,
    TrackingWarning,
)
from .deploy_client import DeployerClient, DeployerError, ModelPublisher
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
#: Seconds between looks at a starting version while ``%deploy`` waits for it (at most).
DEPLOY_POLL_SECONDS = 0.2
#: The stages ``%deploy`` shows its progress through.
DEPLOY_STAGES = ("log model", "register", "deploy", "starting replicas", "ready")


def _user_errors(magic):
    """The one translator: a Tracking-, Scheduler- or DeployerError becomes a ``UsageError``."""

    @functools.wraps(magic)
    def wrapper(*args, **kwargs):
        __tracebackhide__ = True  # IPython leaves this frame out of tracebacks
        try:
            return magic(*args, **kwargs)
        except (TrackingError, SchedulerError, DeployerError) as exc:
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
    """Tracking (``%experiment``, ``%%track``, ``%runs``, ``%compare``, ``log()``),
    scheduling (``%schedule``, ``%jobs``, ``%run_now``) and deployment (``%deploy``,
    ``%deployments``)."""

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

    deploy_timeout = Float(
        900.0,
        help="""Seconds ``%deploy`` waits for a new version to be ready.

        Past this the magic stops waiting (the version goes on starting, and
        ``%deployments`` shows how it ends). The deployer's own start timeout decides
        when a version has failed.

        Example: ``c.ShipyardMagics.deploy_timeout = 1800``

        .. versionadded:: 0.4
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
        # the newest %%track run of this kernel: the source run %deploy records for a model
        self.last_tracked_run: str | None = None
        self._deploy_runs: set[str] = set()  # runs %deploy made, never a model's source

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
        help="A parameter to record and set as a variable of the cell (lr=0.1 sets the "
        "float lr); repeat for more. Quote values with spaces.",
    )
    @cell_magic
    @output_can_be_silenced
    @_user_errors
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
            self.sender.end_run(journal, status, {"shipyard.wall_time_s": wall})
            report_to_job(journal.run_id)
            self.last_tracked_run = journal.run_id or self.last_tracked_run
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
    @argument("run_a", help="A run's name or id, as %%runs shows them.")
    @argument("run_b", help="Another run's name or id.")
    @argument(
        "--experiment",
        help="Where to find runs by name (default: the one set by %%experiment, as %%runs).",
    )
    @line_magic
    @_user_errors
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
        experiment = unquote(args.experiment) or self._experiment()
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
    @argument(
        "--secret",
        dest="secrets",
        action="append",
        default=[],
        metavar="NAME",
        help="One of your secrets (%%secret set NAME) that runs get as $NAME; repeat for more. "
        "Given, the list replaces the job's.",
    )
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
        if args.secrets:
            settings["secrets"] = [unquote(n) for n in args.secrets]

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
    @argument(
        "--wait",
        action="store_true",
        help="Keep the cell busy until the run ends, showing its log as well as the bar.",
    )
    @line_magic
    @_user_errors
    def run_now(self, line: str):
        """Queue a run of a job now, with a bar of its executed cells that follows it to its end.

        The cell returns at once and the bar goes on updating while you work (a background
        thread asks the scheduler how the run goes); it ends with the run's status and a link
        to its output. With ``--wait`` the cell stays busy until the run ends and shows the
        run's log as it grows, then its status and output; interrupting the kernel stops the
        waiting, not the run.

        Examples
        --------
        ``%run_now daily-report -p n=5``

        ``%run_now daily-report --wait``
        """
        args = parse_argstring(self.run_now, line)
        params = parse_parameters(shell_words(args.params))
        client = SchedulerClient.from_environment()
        job = client.find_job(unquote(args.job))
        run = client.run_now(job["id"], params)
        print(f"Queued run {run['id']} of job {job['name']!r}.")
        progress = None
        try:
            from .widgets import RunProgress

            progress = RunProgress(job["name"])
        except ImportError:  # no ipywidgets: the log alone, and only while waiting
            if not args.wait:
                print("%jobs shows how it ends; %run_now --wait follows a run.")
                return
        if progress is not None:
            display(progress.widget)
        if not args.wait:
            # the client is the thread's alone from here: this cell is done with it
            threading.Thread(
                target=self._follow_quietly,
                args=(client, run["id"], progress),
                name=f"shipyard-run-{run['id']}",
                daemon=True,
            ).start()
            return
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
        if progress is not None:
            progress.ended(run, client.output_link(run["id"]) if run.get("output_path") else None)
        reason = f": {run['reason']}" if run.get("reason") and run["status"] != "succeeded" else ""
        print(f"\nRun {run['id']} {run['status']}{reason}")
        if run.get("output_path"):
            print(f"Output: {client.output_url(run['id'])}")
            if "html" in job.get("output_formats", []):
                print(f"HTML: {client.output_url(run['id'], 'html')}")

    def _follow_quietly(self, client: SchedulerClient, run_id: str, progress) -> None:
        """The bar of ``%run_now`` without ``--wait``, kept up to date from a thread.

        It prints nothing (output from a thread lands in whichever cell runs then) and never
        raises: a failure to follow is said on the bar, and the run goes on regardless.
        """
        try:
            for chunk in client.follow_log(run_id, interval=self.poll_interval):
                progress.update(chunk["status"], chunk["cells_done"], chunk["cells_total"])
            run = client.get_run(run_id)
            progress.ended(run, client.output_link(run_id) if run.get("output_path") else None)
        except Exception as exc:  # noqa: BLE001 - a thread's error would reach no one
            progress.lost(f"stopped following ({exc}); %jobs shows how it ends")

    # ------------------------------------------------------------ deployment

    @magic_arguments()
    @argument(
        "model",
        nargs="?",
        help="What to deploy: a variable holding a fitted model (scikit-learn, or an "
        "mlflow.pyfunc.PythonModel), an MLflow run id, or models:/NAME/VERSION.",
    )
    @argument("--name", help="The deployment's name: lowercase letters, digits and dashes.")
    @argument(
        "--profile",
        help="The profile its replicas run in (default: this server's, whose environment "
        "trained the model; else your default one).",
    )
    @argument("--replicas", type=int, metavar="N", help="How many replicas serve it (default 1).")
    @argument(
        "--canary",
        type=int,
        metavar="PERCENT",
        help="Give the new version only this share of the traffic once it is ready (0 to 100).",
    )
    @argument(
        "--input-example",
        dest="input_example",
        metavar="VAR",
        help="A DataFrame or array of inputs (the training data): the model's signature, the "
        "example kept with it and the baseline its drift is measured against.",
    )
    @argument(
        "--run",
        metavar="RUN_ID",
        help="The run that trained the model variable (default: this kernel's last %%%%track run).",
    )
    @argument("--no-wait", action="store_true", help="Do not wait for the version to be ready.")
    @argument(
        "--rollback",
        metavar="NAME",
        help="Send all of NAME's traffic back to the version that served before (or --to V).",
    )
    @argument("--to", type=int, metavar="VERSION", help="The version --rollback returns to.")
    @argument(
        "--promote",
        nargs=2,
        metavar=("NAME", "VERSION"),
        help="Send all of NAME's traffic to VERSION (after a --canary).",
    )
    @argument("--delete", metavar="NAME", help="Stop every version of NAME and remove it.")
    @argument(
        "--secret",
        dest="secrets",
        action="append",
        default=[],
        metavar="NAME",
        help="One of your secrets (%%secret set NAME) the replicas get as $NAME; repeat for "
        "more. Given, the list replaces the deployment's.",
    )
    @line_magic
    @_user_errors
    def deploy(self, line: str):
        """Deploy a model as an HTTP endpoint: a new deployment, or a new version of one.

        Logs a model variable to MLflow (its signature from ``--input-example``, or from the
        training dataset its run recorded), registers it as ``<user>-<name>`` tagged with its
        lineage (source run, notebook, git commit, environment digest), and sends it to the
        deployer with the drift baseline of the input example. A bar follows it through log
        model, register, deploy, starting replicas and ready; then the endpoint's URL and a
        ``curl`` and a Python call are printed, which read your token from
        ``$JUPYTERHUB_API_TOKEN`` (it is never printed). A version that fails shows the reason;
        the version that served before keeps serving.

        The one-call operations are options of this magic rather than magics of their own, so
        that everything about a deployment is in one place (``%deploy?``) and reads as it
        does: ``--rollback NAME [--to V]``, ``--promote NAME V`` and ``--delete NAME``.

        Examples
        --------
        ``%deploy model --name churn --input-example X_train``

        ``%deploy 3f2a9c0e4b1d4e6f8a7b6c5d4e3f2a1b --name churn --canary 10``

        ``%deploy --promote churn 2``  ``%deploy --rollback churn``  ``%deploy --delete churn``
        """
        args = parse_argstring(self.deploy, line)
        operations = [o for o in ("rollback", "promote", "delete") if getattr(args, o)]
        if len(operations) > 1:
            raise UsageError("Give one of --rollback, --promote and --delete at a time.")
        if operations:
            if args.model or args.name:
                raise UsageError(
                    f"--{operations[0]} acts on a deployment by its name and takes no MODEL or "
                    f"--name: write e.g. %deploy --{operations[0]} churn"
                    + (" 2." if operations[0] == "promote" else ".")
                )
            return self._deploy_operation(DeployerClient.from_environment(), args)
        if args.to is not None:
            raise UsageError(
                "--to VERSION goes with --rollback NAME, e.g. %deploy --rollback churn --to 1."
            )
        if not args.model:
            raise UsageError(
                "Say what to deploy: %deploy MODEL --name NAME, where MODEL is a variable "
                "holding a fitted model, an MLflow run id or models:/NAME/VERSION, e.g. "
                "%deploy model --name churn --input-example X_train."
            )
        if not args.name:
            raise UsageError(
                f"Name the deployment: %deploy {args.model} --name NAME (lowercase letters, "
                "digits and dashes, e.g. churn-model); deploying that name again adds a version."
            )
        name = deploying.check_name(unquote(args.name))
        if args.replicas is not None and args.replicas < 1:
            raise UsageError(f"--replicas {args.replicas}: give 1 or more, e.g. --replicas 2.")
        if args.canary is not None and not 0 <= args.canary <= 100:
            raise UsageError(
                f"--canary {args.canary}: give the new version's share of the traffic in "
                "percent, from 0 to 100, e.g. --canary 10."
            )
        source_run = unquote(args.run)
        if source_run and not deploying.RUN_ID.fullmatch(source_run):
            raise UsageError(f"--run {source_run!r} is not an MLflow run id (32 hex digits).")
        ref = unquote(args.model)
        namespace = self.shell.user_ns
        kind = deploying.describe_source(ref, namespace)
        flavor = deploying.model_flavor(namespace[ref], ref) if kind == "variable" else None
        example = None
        if args.input_example:
            var = unquote(args.input_example)
            if var not in namespace:
                raise UsageError(
                    f"--input-example {var}: no variable named {var!r} in this notebook; give "
                    "the DataFrame or array the model was trained on, e.g. --input-example X."
                )
            example = deploying.check_example(namespace[var], var)
        user = deploying.hub_user()

        # the deployer first: a refusal costs nothing, before a model is logged
        client = DeployerClient.from_environment()
        existing = client.find_deployment(name)
        if existing is None and args.canary is not None:
            raise UsageError(
                f"--canary: {name!r} is not deployed yet, and its first version takes all the "
                "traffic. Deploy it without --canary first; a later version can be a canary."
            )
        progress = self._deploy_progress(name)
        stage = 0
        try:
            published = self._publish(progress, user, name, ref, kind, flavor, example, source_run)
            stage = 2
            progress.update(2, f"{published.model_uri}")
            summary = deploying.training_summary(example)
            body: dict = {"model_uri": published.model_uri, "lineage": published.lineage}
            # the model serves in the environment it was trained in: this server's profile
            profile = unquote(args.profile) if args.profile else os.environ.get("SHIPYARD_PROFILE")
            if profile:
                body["profile"] = profile
            if summary is not None:
                body["training_summary"] = summary
            if published.signature is not None:
                body["signature"] = published.signature
            if args.secrets:
                body["secrets"] = [unquote(n) for n in args.secrets]
            if existing is None:
                body = {"name": name, **body}
                if args.replicas is not None:
                    body["replicas"] = args.replicas
                created = client.create_deployment(body)
                version = created["versions"][-1]
            else:
                if args.replicas is not None and args.replicas != existing["replicas"]:
                    client.scale(name, args.replicas)
                if args.canary is not None:
                    body["canary_percent"] = args.canary
                version = client.create_version(name, body)
        except Exception as exc:
            progress.failed(f"{DEPLOY_STAGES[stage]} failed")
            if isinstance(exc, DeployerError) and existing is not None:
                exc.message += self._still_serving(existing)
                raise DeployerError(exc.message, exc.status, exc.errors) from None
            raise
        number = version["version"]
        print(
            f"{'Deploying' if existing is None else 'Deploying a new version of'} {name!r}: "
            f"version {number} from {published.model_uri}."
        )
        if args.no_wait:
            progress.update(3, "not waiting")
            print("It is starting; %deployments shows when it is ready.")
            return None
        version = self._wait_ready(client, progress, name, number, existing)
        self._tell_endpoint(client, client.get_deployment(name), version, example, published)
        return None

    def _deploy_progress(self, name: str):
        """The progress bar of ``%deploy``, shown; a stand-in that prints without ipywidgets."""
        try:
            from .widgets import DeployProgress
        except ImportError:
            return _PrintedProgress(DEPLOY_STAGES)
        progress = DeployProgress(name, DEPLOY_STAGES)
        display(progress.widget)
        return progress

    def _publish(
        self, progress, user: str, name: str, ref: str, kind: str, flavor, example, source_run
    ) -> deploying.Published:
        """Stages log model and register: the model in the registry as ``<user>-<name>``."""
        registered = deploying.registered_name(user, name)
        publisher = ModelPublisher(TrackingClient.from_environment(), user)
        signature = None
        if kind == "variable":
            source_run = source_run or self._source_run()
            progress.update(0, f"{ref} as {flavor}")
            if example is not None:
                signature = publisher.example_signature(self.shell.user_ns[ref], flavor, example)
            elif source_run:
                signature = publisher.run_signature(source_run)
            logged_run, uri = publisher.log(
                self.shell.user_ns[ref],
                flavor,
                self._experiment(),
                f"deploy-{name}",
                source_run,
                signature,
                example,
            )
            self._deploy_runs.add(logged_run)
            lineage = publisher.kernel_lineage(source_run or logged_run)
            if logged_run != lineage["run_id"]:
                lineage["model_run_id"] = logged_run
            progress.update(1, registered)
            version = publisher.register(uri, registered, lineage)
            signature = deploying.signature_json(signature)
        elif kind == "run":
            progress.update(0, f"the model of run {ref}")
            uri = publisher.run_model_uri(ref)
            lineage = publisher.run_lineage(ref)
            progress.update(1, registered)
            version = publisher.register(uri, registered, lineage)
            signature = publisher.model_signature(uri)
        else:
            progress.update(1, f"{ref} as {registered}")
            version, run_id = publisher.copy_version(ref, registered)
            lineage = publisher.run_lineage(run_id) if run_id else publisher.kernel_lineage(None)
            signature = publisher.model_signature(ref)
        lineage = {**lineage, "registered_model": registered, "model_version": version}
        return deploying.Published(
            f"models:/{registered}/{version}", registered, version, lineage, signature
        )

    def _source_run(self) -> str | None:
        """The run that trained a model of this kernel: the last ``%%track`` or mlflow run."""
        if self.last_tracked_run:
            return self.last_tracked_run
        import mlflow
        from mlflow.exceptions import MlflowException

        try:
            last = mlflow.last_active_run()
        except MlflowException:
            # the run is gone, or not this user's any more (deleted, another tracking
            # server or token): the model is deployed without a source run, not refused
            return None
        if last is not None and last.info.run_id not in self._deploy_runs:
            return last.info.run_id
        return None

    @staticmethod
    def _still_serving(deployment: dict | None) -> str:
        """What serves now, said after a failure: the previous version keeps the traffic."""
        serving = sorted(
            (int(v) for v, p in (deployment or {}).get("traffic", {}).items() if p > 0)
        )
        if not serving:
            return " Nothing serves under this name yet."
        said = " and ".join(f"version {v}" for v in serving)
        return f" The previous version keeps serving: {said} of {deployment['name']!r}."

    def _wait_ready(self, client, progress, name: str, number: int, existing) -> dict:
        """Follow version ``number`` to ready; a UsageError with the reason when it fails."""
        progress.update(3, f"version {number}")
        try:
            # a version is ready seconds after it starts: look often (a cheap read), so the
            # endpoint is announced as soon as it serves, not up to poll_interval later
            for version in client.follow_version(
                name, number, min(self.poll_interval, DEPLOY_POLL_SECONDS), self.deploy_timeout
            ):
                progress.update(3, f"version {number} {version['state']}")
        except KeyboardInterrupt:
            progress.failed("stopped waiting")
            print(f"Stopped waiting; version {number} goes on starting (%deployments shows it).")
            raise
        except DeployerError:
            progress.failed("still starting")
            raise
        if version["state"] != "ready":
            progress.failed(f"version {number} {version['state']}")
            reason = version.get("reason") or "the deployer gave no reason"
            current = client.find_deployment(name) or existing
            raise DeployerError(
                f"Version {number} of {name!r} {version['state']}: {reason}."
                + self._still_serving(current)
            )
        progress.done(f"version {number} ready")
        return version

    def _tell_endpoint(self, client, deployment: dict, version: dict, example, published) -> None:
        """The URL, the traffic the version has, and how to call it with the user's token."""
        number = str(version["version"])
        share = deployment["traffic"].get(number, 0)
        url = deploying.endpoint_url(client, deployment)
        print(
            f"Version {number} of {deployment['name']!r} is ready ({published.model_uri}, "
            f"profile {deployment['profile']}, {deployment['replicas']} replica(s)) and takes "
            f"{share}% of the traffic."
        )
        if share < 100:
            print(
                f"%deploy --promote {deployment['name']} {number} sends it all; "
                f"%deploy --rollback {deployment['name']} takes it back."
            )
        payload = deploying.example_payload(example, published.signature)
        print(f"Endpoint: {url}")
        print("Call it with your hub token, read from the environment (never paste it here):")
        print(f"  {deploying.curl_example(url, payload)}")
        print("In Python:")
        print(deploying.python_example(url, payload))

    def _deploy_operation(self, client: DeployerClient, args) -> None:
        """``--rollback``, ``--promote`` and ``--delete``: one call, then the outcome."""
        if args.delete:
            name = deploying.check_name(unquote(args.delete))
            client.delete(name)
            print(f"Deleted {name!r}: every version is stopped and the endpoint is gone.")
            return
        if args.promote:
            name, text = args.promote
            name = deploying.check_name(unquote(name))
            try:
                target = int(text)
            except ValueError:
                raise UsageError(
                    f"--promote {name} {text}: give a version number, e.g. --promote {name} 2."
                ) from None
            deployment = client.promote(name, target)
            verb = "Promoted"
        else:
            name = deploying.check_name(unquote(args.rollback))
            deployment = client.rollback(name, args.to)
            verb = "Rolled back"
            target = args.to or _target_version(deployment)
        version = next(v for v in deployment["versions"] if v["version"] == target)
        if version["state"] != "ready":
            progress = self._deploy_progress(name)
            version = self._wait_ready(client, progress, name, target, deployment)
            deployment = client.get_deployment(name)
        print(
            f"{verb} {name!r}: version {target} takes "
            f"{deployment['traffic'].get(str(target), 0)}% of the traffic."
        )

    @magic_arguments()
    @line_magic
    @_user_errors
    def deployments(self, line: str):
        """A table of your deployments: per version its traffic, state, health, requests per
        second, p50/p99 latency, error rate, drift (the largest PSI and its feature) and
        circuit breaker.

        Examples
        --------
        ``%deployments``
        """
        parse_argstring(self.deployments, line)
        client = DeployerClient.from_environment()
        rows = deploying.version_rows(client)
        try:
            from .widgets import deployments_table
        except ImportError:  # no ipywidgets in this environment
            print(deploying.deployments_text(rows))
            return None
        return deployments_table(rows, lambda d: deploying.endpoint_url(client, d))


class _PrintedProgress:
    """``%deploy``'s stages as lines, where ipywidgets is missing."""

    def __init__(self, stages: tuple[str, ...]):
        self.stages = stages

    def update(self, stage: int, detail: str = "") -> None:
        name = self.stages[min(stage, len(self.stages) - 1)]
        print(f"[{stage + 1}/{len(self.stages)}] {name}" + (f": {detail}" if detail else ""))

    def done(self, text: str) -> None:
        print(f"[{len(self.stages)}/{len(self.stages)}] {text}")

    def failed(self, text: str) -> None:
        print(f"failed: {text}")


def _target_version(deployment: dict) -> int:
    """The version a rollback sends the traffic to: the one taking (or about to take) it all."""
    for version in deployment["versions"]:
        if version.get("pending_percent") == 100:
            return version["version"]
    return int(max(deployment["traffic"].items(), key=lambda item: item[1])[0])


def load_ipython_extension(ip) -> None:
    """Register the magics, put ``log`` in the namespace, and send what dead kernels left."""
    magics = ShipyardMagics(shell=ip)
    ip.register_magics(magics)
    from .secret_magics import SecretMagics  # its own module: %secret

    ip.register_magics(SecretMagics(shell=ip))
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
