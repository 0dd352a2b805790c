"""Scheduled notebooks from a notebook cell: ``%schedule``, ``%jobs`` and ``%run_now``.

The magics parse arguments, call the scheduler's client and show the result (STYLE rule 22):
the wire calls are in :mod:`server_ext.clients.scheduler.client`, the steps of ``%schedule``
in :mod:`server_ext.clients.scheduler.jobs`, the text in :mod:`server_ext.clients.scheduler.text`
and the widgets in :mod:`server_ext.magics.widgets`. The scheduler's refusals reach the user
as its own message, through :func:`~server_ext.magics.base.user_errors`.

``%schedule`` keeps no secret in the notebook: a job's webhook secret, shown once by the
service, goes to a file only the user can read (``~/.shipyard/webhooks/``), and the cell's
output names the file, since outputs are saved, committed and shared with the notebook.
"""

from __future__ import annotations

import os
import threading

from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

from ..clients.scheduler.client import WEBHOOK_SECRET_HEADER, SchedulerClient
from ..clients.scheduler.jobs import (
    current_notebook,
    default_job_name,
    parameter_values,
    read_notebook,
    schedule_notebook,
    split_parameters,
    webhook_secret_file,
)
from ..clients.scheduler.text import (
    cron_timezone,
    describe_triggers,
    diff_summary,
    format_time,
    job_summaries,
    jobs_text,
)
from .base import ShipyardMagics, shell_words, unquote, user_errors


@magics_class
class JobMagics(ShipyardMagics):
    """Scheduling: ``%schedule``, ``%jobs`` and ``%run_now``."""

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
        help="A parameter of the notebook's parameters cell; the scheduler reads VALUE as the "
        "cell declares it (3, 0.5, True, [1, 2], a string as typed). Repeat for more.",
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
    @user_errors
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
        texts = split_parameters(shell_words(args.params))
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
        # the scheduler reads the texts, for the notebook as saved now (what the job gets)
        params = parameter_values(client, read_notebook(source), texts)
        done = schedule_notebook(
            client,
            name,
            source,
            settings,
            params,
            html=args.html,
            name_given=bool(args.name),
            parameters_given=bool(args.params),
        )
        job = done.job
        if done.created:
            print(f"Scheduled {source} as job {name!r} (id {job['id']}, profile {job['profile']}).")
        else:
            changed = done.changed
            said = ", ".join(sorted(changed)) + " changed" if changed else "nothing changed"
            print(f"Updated job {name!r} (id {job['id']}): {said}.")
            print(diff_summary(done.notebook_changed, done.diff))
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
        secret_file = webhook_secret_file(job)
        if secret_file is None:
            return
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
    @user_errors
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
    @user_errors
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
        texts = split_parameters(shell_words(args.params))
        client = SchedulerClient.from_environment()
        job = client.find_job(unquote(args.job))
        params = parameter_values(client, client.job_notebook(job["id"]), texts)
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
