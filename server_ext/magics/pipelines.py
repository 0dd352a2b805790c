"""Pipelines from a notebook cell: ``%pipeline create|run|status|repair|cancel|list|delete``.

One magic with a verb, as ``%secret``: the verbs share their words (a pipeline's name or
id, a run's id) and one help text lists them all. The magic parses its arguments, calls the
scheduler's client and shows the result (STYLE rule 22): the wire calls are in
:mod:`server_ext.clients.scheduler.client`, what ``%pipeline`` and ``shipyard pipeline``
share (the file's default, create-or-update, parameters, the text) in
:mod:`server_ext.clients.scheduler.pipelines`, and the live table of a run's steps in
:mod:`server_ext.magics.widgets`. The scheduler's refusals (a file's errors at their
``file:line:column``, another user's pipeline as a missing one, a run that cannot be
repaired) reach the user as its own message, through
:func:`~server_ext.magics.base.user_errors`.

In a notebook (a kernel with a frontend) a run is shown as a table of its steps, each with
a chip coloured by its state, updated in place while ``--wait`` waits; in a terminal
IPython, where widgets show as their ``repr``, as text: a line per change of a step's
state, then the table. Rejected alternative: following a run from a background thread
as ``%run_now`` does, which would keep asking the scheduler for every step of a run that may
last hours after the user has moved on; ``%pipeline status RUN --wait`` follows it later.
"""

from __future__ import annotations

import os

from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

from ..clients.scheduler.client import SchedulerClient
from ..clients.scheduler.pipelines import (
    create_or_update,
    last_runs,
    pipeline_file,
    pipelines_text,
    run_headline,
    run_parameters,
    run_text,
)
from .base import ShipyardMagics, shell_words, unquote, user_errors

#: The verbs of ``%pipeline`` and what each takes.
VERBS = {
    "create": "[PATH]",
    "run": "NAME_OR_ID [--param NAME=VALUE ...] [--wait]",
    "status": "RUN_ID [--wait]",
    "repair": "RUN_ID [--wait]",
    "cancel": "RUN_ID",
    "list": "",
    "delete": "NAME_OR_ID",
}


def _usage() -> str:
    return "; ".join(f"%pipeline {verb} {words}".rstrip() for verb, words in VERBS.items())


@magics_class
class PipelineMagics(ShipyardMagics):
    """``%pipeline``: create, run and follow the user's pipelines."""

    def _rich(self) -> bool:
        """Whether a frontend shows widgets: a kernel's shell, with ipywidgets installed."""
        if getattr(self.shell, "kernel", None) is None:
            return False
        try:
            from . import widgets  # noqa: F401
        except ImportError:  # no ipywidgets in this environment
            return False
        return True

    @magic_arguments()
    @argument("verb", help="create, run, status, repair, cancel, list or delete")
    @argument(
        "target",
        nargs="?",
        help="create: the pipeline file, relative to your home (default: pipeline.yaml beside "
        "this notebook); run, delete: the pipeline's name or id; status, repair, cancel: a "
        "run's id",
    )
    @argument(
        "-p",
        "--param",
        dest="params",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="run: a value of one of the pipeline's parameters for this run (read as JSON "
        "unless its default is text). Repeat for more.",
    )
    @argument(
        "--wait",
        action="store_true",
        help="run, status, repair: keep the cell busy and show the steps' states as they "
        "change, until the run ends.",
    )
    @line_magic
    @user_errors
    def pipeline(self, line: str = ""):
        """Create, run and follow pipelines: a DAG of notebook steps in a pipeline.yaml.

        ``%pipeline create [PATH]`` reads the file (again, after an edit: the pipeline made
        from that file is updated); ``run NAME_OR_ID`` starts a run and prints its id;
        ``status RUN_ID`` shows each step's state; ``repair RUN_ID`` reruns the failed steps
        and what follows them; ``cancel RUN_ID`` stops a run; ``list`` shows your
        pipelines and their last runs; ``delete NAME_OR_ID`` removes one.

        Examples
        --------
        ``%pipeline create churn/pipeline.yaml``

        ``%pipeline run churn --param rows=500 --wait``

        ``%pipeline status 0f3c...``
        """
        args = parse_argstring(self.pipeline, line)
        verb = args.verb
        if verb not in VERBS:
            raise UsageError(f"Unknown %pipeline verb {verb!r}: {_usage()}.")
        target = unquote(args.target) or ""
        if verb not in ("create", "list") and not target:
            raise UsageError(f"Say which: %pipeline {verb} {VERBS[verb]}")
        if verb in ("create", "list", "cancel", "delete") and args.wait:
            raise UsageError(f"%pipeline {verb} takes no --wait.")
        if verb != "run" and args.params:
            raise UsageError("--param is for %pipeline run only.")
        if verb == "list" and target:
            raise UsageError("%pipeline list takes nothing more.")
        client = SchedulerClient.from_environment()
        if verb == "create":
            return self._create(client, target)
        if verb == "list":
            return self._list(client)
        if verb == "delete":
            pipeline = client.find_pipeline(target)
            client.delete_pipeline(pipeline["id"])
            print(f"Deleted pipeline {pipeline['name']!r} ({pipeline['id']}) and its runs.")
            return None
        if verb == "cancel":
            run = client.cancel_pipeline_run(target)
            print(f"Cancelled; its running steps are being stopped.\n{run_text(run)}")
            return None
        if verb == "run":
            pipeline = client.find_pipeline(target)
            params = run_parameters(pipeline, shell_words(args.params))
            run = client.run_pipeline(pipeline["id"], params)
            print(f"Started run {run['id']} of pipeline {pipeline['name']!r}.")
        elif verb == "repair":
            run = client.repair_pipeline_run(target)
            print(
                f"Started run {run['id']} to repair {target}: the failed steps and those "
                "after them run again, the others are reused."
            )
        else:
            run = client.get_pipeline_run(target)
            if not args.wait or run["status"] != "running":
                return self._show(run)
        if not args.wait and verb != "status":
            print(
                f"Follow it with %pipeline status {run['id']} (add --wait to watch it to its end)."
            )
            return None
        return self._follow(client, run)

    def _create(self, client: SchedulerClient, target: str) -> None:
        namespace = self.shell.user_ns if self.shell is not None else None
        path = pipeline_file(target or None, namespace)
        done = create_or_update(client, path)
        p = done.pipeline
        what = "Created" if done.created else "Updated"
        order = " -> ".join(s["id"] for s in p["steps"])
        print(f"{what} pipeline {p['name']!r} (id {p['id']}, version {p['version']}) from {path}.")
        print(f"Steps, in run order: {order}")
        if p["parameters"]:
            print("Parameters: " + ", ".join(f"{k}={v!r}" for k, v in p["parameters"].items()))
        print(f"Run it with %pipeline run {p['name']} --wait")

    def _list(self, client: SchedulerClient) -> None:
        user = os.environ.get("JUPYTERHUB_USER")
        pipelines = [
            p for p in client.list_pipelines()["pipelines"] if user is None or p["owner"] == user
        ]
        print(pipelines_text(pipelines, last_runs(client, pipelines)))

    def _show(self, run: dict):
        """The run's steps once: a widget in a notebook, text elsewhere."""
        if self._rich():
            from .widgets import PipelineRunView

            display(PipelineRunView(run).widget)
        else:
            print(run_text(run))

    def _follow(self, client: SchedulerClient, run: dict) -> None:
        """Show the run's steps as they change until it ends; then its final state."""
        view = None
        if self._rich():
            from .widgets import PipelineRunView

            view = PipelineRunView(run)
            display(view.widget)
        seen: dict[str, str] = {}
        try:
            for now in client.follow_pipeline_run(run["id"], interval=self.poll_interval):
                run = now
                if view is not None:
                    view.update(run)
                    continue
                for step in run["steps"]:
                    if seen.get(step["step"]) != step["status"]:
                        seen[step["step"]] = step["status"]
                        print(f"  {step['step']}: {step['status']}", flush=True)
        except KeyboardInterrupt:
            print(
                f"\nStopped waiting; run {run['id']} goes on (%pipeline status {run['id']} "
                "shows it)."
            )
            return
        print(run_headline(run) if view is not None else run_text(run))
