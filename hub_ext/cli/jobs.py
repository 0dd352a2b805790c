"""``shipyard jobs list | run JOB | logs REF | output REF``: scheduled notebooks from a terminal.

The scheduler's client is the notebooks' one (:mod:`server_ext.clients.scheduler`): one client
for the kernel, the server and this command, so its errors read the same everywhere. Whose
token the command sends (a user's, or on the hub's machine the hub admin's) is
:func:`hub_ext.cli.common.service_access`'s to decide.

``logs`` and ``output`` take what ``jobs list`` shows: a run's id (the LAST RUN ID column),
or a job's name (``OWNER/NAME`` for someone else's) or id, meaning that job's newest run. Run
and job ids look alike (32 hex digits): a run's is tried first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hub_ext.cli.common import CLIError, add_access_options, service_access, service_url


def scheduler_command(name: str, command, group: str = "jobs"):
    """Run ``command(args, client, user)`` with the scheduler's client; errors as one line.

    ``shipyard pipeline`` (:mod:`hub_ext.cli.pipelines`) uses it too, with its ``group``.
    """

    def run(args: argparse.Namespace) -> int:
        from server_ext.clients.scheduler.client import (
            SERVICE_PATH,
            SchedulerClient,
            SchedulerError,
        )

        try:
            # the URL first: a token in it is refused, whatever else is given
            url = SchedulerClient.normalise_url(
                service_url(args, "SHIPYARD_SCHEDULER_URL", SERVICE_PATH)
            )
            with service_access(args, "scheduler", f"{group} {name}") as access:
                return command(args, SchedulerClient(url, access.token), access.user)
        except SchedulerError as e:
            raise CLIError(e.message) from None

    return run


def find_run(client, ref: str, user: str | None) -> tuple[dict, dict | None]:
    """The run ``ref`` names, and its job when ``ref`` named the job rather than the run.

    Raises
    ------
    CLIError
        When nothing the caller can see has that id or name, or the job has no run yet.
    """
    from server_ext.clients.scheduler.client import JOB_ID, SchedulerError

    if JOB_ID.fullmatch(ref):
        try:
            return client.get_run(ref), None
        except SchedulerError as e:
            if e.status != 404:
                raise
    try:
        job = client.find_job(ref, user)
    except SchedulerError as e:
        if e.status != 404:
            raise
        raise CLIError(
            f"No job or run named {ref!r} that you can see: `shipyard jobs list` shows each "
            "job's name and the id of its last run (LAST RUN ID); give either."
        ) from None
    run = client.last_run(job["id"])
    if run is None:
        raise CLIError(
            f"Job {job['name']!r} has not run yet: `shipyard jobs run {ref}` starts a run."
        )
    return run, job


def _announce(run: dict, job: dict | None) -> None:
    """Which run a job's name meant, on stderr (stdout is the log or the notebook)."""
    if job is not None:
        print(
            f"Run {run['id']} of job {job['name']!r} ({run['status']}), its newest.",
            file=sys.stderr,
            flush=True,
        )


def cmd_list(args: argparse.Namespace, client, user: str | None) -> int:
    from server_ext.clients.scheduler.text import job_summaries, jobs_text

    print(jobs_text(job_summaries(client), user))
    return 0


def cmd_run(args: argparse.Namespace, client, user: str | None) -> int:
    from server_ext.clients.scheduler.jobs import parameter_values, split_parameters

    texts = split_parameters(args.param)
    job = client.find_job(args.job, user)
    params = parameter_values(client, client.job_notebook(job["id"]), texts)
    run = client.run_now(job["id"], params)
    print(f"Queued run {run['id']} of job {job['name']!r}.", flush=True)
    if not args.wait:
        print(f"Follow it with `shipyard jobs logs {run['id']} --follow`.")
        return 0
    tty = sys.stderr.isatty()
    shown = None
    try:
        for chunk in client.follow_log(run["id"]):
            done, total = chunk["cells_done"], chunk["cells_total"]
            line = (
                f"  {chunk['status']}: cells {done or 0}/{total}"
                if total
                else f"  {chunk['status']}"
            )
            if line != shown:
                print(
                    f"\r{line:40}" if tty else line,
                    end="" if tty else "\n",
                    file=sys.stderr,
                    flush=True,
                )
                shown = line
    except KeyboardInterrupt:
        print(f"\nStopped waiting; run {run['id']} goes on.", file=sys.stderr)
        return 130
    if tty:
        print(file=sys.stderr)
    run = client.get_run(run["id"])
    reason = f": {run['reason']}" if run.get("reason") and run["status"] != "succeeded" else ""
    print(f"Run {run['id']} {run['status']}{reason}")
    if run.get("output_path"):
        print(f"Output: {client.output_url(run['id'])}")
    return 0 if run["status"] == "succeeded" else 1


def cmd_logs(args: argparse.Namespace, client, user: str | None) -> int:
    run, job = find_run(client, args.ref, user)
    _announce(run, job)
    run_id = run["id"]
    if args.follow:
        chunks = client.follow_log(run_id)
    else:

        def chunks():  # what the log holds now: read until no more text comes
            offset = 0
            while True:
                chunk = client.run_log(run_id, offset)
                yield chunk
                if chunk["complete"] or chunk["next_offset"] == offset:
                    return
                offset = chunk["next_offset"]

        chunks = chunks()
    try:
        for chunk in chunks:
            sys.stdout.write(chunk["text"])
            sys.stdout.flush()
    except KeyboardInterrupt:
        return 130
    return 0


def cmd_output(args: argparse.Namespace, client, user: str | None) -> int:
    run, job = find_run(client, args.ref, user)
    _announce(run, job)
    name, data = client.run_output(run["id"], args.format)
    if args.output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    target = Path(args.output or name)
    try:
        target.write_bytes(data)
    except OSError as e:
        raise CLIError(f"Cannot write {target}: {e.strerror or e}.") from None
    print(f"Saved run {run['id']}'s {args.format} output to {target} ({len(data)} bytes).")
    return 0


REF_HELP = (
    "a run's id (`jobs list` shows the last one's), or a job's name (OWNER/NAME for "
    "someone else's) or id: its newest run"
)


def add_parser(subparsers) -> None:
    """Register ``shipyard jobs`` and its actions on the top-level sub-parsers."""
    jobs = subparsers.add_parser(
        "jobs", help="scheduled notebooks: list jobs, run one, read its log"
    )
    jsub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    service = argparse.ArgumentParser(add_help=False)
    add_access_options(service, "scheduler", "SHIPYARD_SCHEDULER_URL")

    jlist = jsub.add_parser(
        "list",
        parents=[service],
        help="your jobs and shared ones (an admin's: everyone's): triggers, next run, last "
        "run and its id",
    )
    jlist.set_defaults(func=scheduler_command("list", cmd_list))
    jrun = jsub.add_parser("run", parents=[service], help="queue a run of a job now")
    jrun.add_argument(
        "job", metavar="JOB", help="the job's name (OWNER/NAME for someone else's) or id"
    )
    jrun.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a parameter for this run; the scheduler reads VALUE as the notebook's parameters "
        "cell declares it (3, 0.5, True, [1, 2], a string as typed)",
    )
    jrun.add_argument(
        "--wait", action="store_true", help="show its cells as they run; exit 1 unless it succeeds"
    )
    jrun.set_defaults(func=scheduler_command("run", cmd_run))
    jlogs = jsub.add_parser("logs", parents=[service], help="print a run's log")
    jlogs.add_argument("ref", metavar="RUN|JOB", help=REF_HELP)
    jlogs.add_argument("--follow", action="store_true", help="keep printing until the run ends")
    jlogs.set_defaults(func=scheduler_command("logs", cmd_logs))
    joutput = jsub.add_parser("output", parents=[service], help="save a run's output")
    joutput.add_argument("ref", metavar="RUN|JOB", help=REF_HELP)
    joutput.add_argument(
        "--format", choices=["ipynb", "html"], default="ipynb", help="which output (default ipynb)"
    )
    joutput.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="where to save it (default: the name the "
        "scheduler gives it, in this folder; - for stdout)",
    )
    joutput.set_defaults(func=scheduler_command("output", cmd_output))
