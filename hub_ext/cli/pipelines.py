"""``shipyard pipeline create | list | run | status | repair | cancel | delete``: pipelines
from a terminal.

The same client and the same words as ``%pipeline`` (:mod:`server_ext.magics.pipelines`):
the wire calls of :class:`~server_ext.clients.scheduler.client.SchedulerClient` and the
steps and tables of :mod:`server_ext.clients.scheduler.pipelines`. Whose token is sent is
:func:`hub_ext.cli.common.service_access`'s to decide, as for ``shipyard jobs``.

``--wait`` prints a line on stderr each time a step's state changes, then the run's table
on stdout, and exits 0 only when the run succeeded, so a script can chain on it.
"""

from __future__ import annotations

import argparse
import sys

from hub_ext.cli.common import add_access_options
from hub_ext.cli.jobs import scheduler_command


def cmd_create(args: argparse.Namespace, client, user: str | None) -> int:
    from server_ext.clients.scheduler.pipelines import create_or_update, pipeline_file

    path = pipeline_file(args.path)
    done = create_or_update(client, path, user)
    p = done.pipeline
    what = "Created" if done.created else "Updated"
    print(f"{what} pipeline {p['name']!r} (id {p['id']}, version {p['version']}) from {path}.")
    print("Steps, in run order: " + " -> ".join(s["id"] for s in p["steps"]))
    return 0


def cmd_list(args: argparse.Namespace, client, user: str | None) -> int:
    from server_ext.clients.scheduler.pipelines import last_runs, pipelines_text

    pipelines = client.list_pipelines()["pipelines"]
    print(pipelines_text(pipelines, last_runs(client, pipelines)))
    return 0


def _follow(client, run: dict) -> int:
    """Each change of a step's state on stderr, then the run's table; 0 if it succeeded."""
    from server_ext.clients.scheduler.pipelines import run_text

    seen: dict[str, str] = {}
    try:
        for now in client.follow_pipeline_run(run["id"]):
            run = now
            for step in run["steps"]:
                if seen.get(step["step"]) != step["status"]:
                    seen[step["step"]] = step["status"]
                    print(f"  {step['step']}: {step['status']}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print(f"\nStopped waiting; run {run['id']} goes on.", file=sys.stderr)
        return 130
    print(run_text(run))
    return 0 if run["status"] == "succeeded" else 1


def cmd_run(args: argparse.Namespace, client, user: str | None) -> int:
    from server_ext.clients.scheduler.pipelines import run_parameters

    pipeline = client.find_pipeline(args.pipeline)
    run = client.run_pipeline(pipeline["id"], run_parameters(pipeline, args.param))
    print(f"Started run {run['id']} of pipeline {pipeline['name']!r}.", flush=True)
    if not args.wait:
        print(f"Follow it with `shipyard pipeline status {run['id']} --wait`.")
        return 0
    return _follow(client, run)


def cmd_status(args: argparse.Namespace, client, user: str | None) -> int:
    from server_ext.clients.scheduler.pipelines import run_text

    run = client.get_pipeline_run(args.run)
    if args.wait and run["status"] == "running":
        return _follow(client, run)
    print(run_text(run))
    return 0 if not args.wait or run["status"] == "succeeded" else 1


def cmd_repair(args: argparse.Namespace, client, user: str | None) -> int:
    run = client.repair_pipeline_run(args.run)
    print(
        f"Started run {run['id']} to repair {args.run}: the failed steps and those after "
        "them run again, the others are reused.",
        flush=True,
    )
    if not args.wait:
        print(f"Follow it with `shipyard pipeline status {run['id']} --wait`.")
        return 0
    return _follow(client, run)


def cmd_cancel(args: argparse.Namespace, client, user: str | None) -> int:
    from server_ext.clients.scheduler.pipelines import run_text

    run = client.cancel_pipeline_run(args.run)
    print(f"Cancelled; its running steps are being stopped.\n{run_text(run)}")
    return 0


def cmd_delete(args: argparse.Namespace, client, user: str | None) -> int:
    pipeline = client.find_pipeline(args.pipeline)
    client.delete_pipeline(pipeline["id"])
    print(f"Deleted pipeline {pipeline['name']!r} ({pipeline['id']}) and its runs.")
    return 0


def add_parser(subparsers) -> None:
    """Register ``shipyard pipeline`` and its actions on the top-level sub-parsers."""
    group = subparsers.add_parser(
        "pipeline", help="pipelines of notebook steps: create one from its file, run, follow"
    )
    psub = group.add_subparsers(dest="pipeline_command", required=True, metavar="ACTION")
    service = argparse.ArgumentParser(add_help=False)
    add_access_options(service, "scheduler", "SHIPYARD_SCHEDULER_URL")

    def command(name: str, fn):
        return scheduler_command(name, fn, group="pipeline")

    create = psub.add_parser(
        "create",
        parents=[service],
        help="create a pipeline from its pipeline.yaml (again: re-read it, notebooks too)",
    )
    create.add_argument("path", metavar="PATH", help="the pipeline file, relative to your home")
    create.set_defaults(func=command("create", cmd_create))
    listing = psub.add_parser(
        "list", parents=[service], help="your pipelines (an admin's: everyone's) and last runs"
    )
    listing.set_defaults(func=command("list", cmd_list))
    run = psub.add_parser("run", parents=[service], help="start a run of a pipeline")
    run.add_argument("pipeline", metavar="PIPELINE", help="the pipeline's name or id")
    run.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a value of one of the pipeline's parameters for this run, read as JSON unless "
        "its default is text; repeat for more",
    )
    run.add_argument(
        "--wait",
        action="store_true",
        help="show its steps as they change; exit 1 unless it succeeds",
    )
    run.set_defaults(func=command("run", cmd_run))
    status = psub.add_parser("status", parents=[service], help="a run's steps and their states")
    status.add_argument("run", metavar="RUN", help="the pipeline run's id")
    status.add_argument(
        "--wait",
        action="store_true",
        help="follow a running run to its end; exit 1 unless it succeeds",
    )
    status.set_defaults(func=command("status", cmd_status))
    repair = psub.add_parser(
        "repair", parents=[service], help="rerun a run's failed steps and what follows them"
    )
    repair.add_argument("run", metavar="RUN", help="the failed or cancelled run's id")
    repair.add_argument(
        "--wait", action="store_true", help="follow the new run; exit 1 unless it succeeds"
    )
    repair.set_defaults(func=command("repair", cmd_repair))
    cancel = psub.add_parser("cancel", parents=[service], help="stop a running pipeline run")
    cancel.add_argument("run", metavar="RUN", help="the pipeline run's id")
    cancel.set_defaults(func=command("cancel", cmd_cancel))
    delete = psub.add_parser("delete", parents=[service], help="delete a pipeline and its runs")
    delete.add_argument("pipeline", metavar="PIPELINE", help="the pipeline's name or id")
    delete.set_defaults(func=command("delete", cmd_delete))
