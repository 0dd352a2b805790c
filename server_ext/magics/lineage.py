"""Where a deployed model came from, from a notebook cell: ``%lineage``.

``%lineage NAME`` shows the chain the deployer follows for a version (registered model
version, MLflow run with its parameters, metrics and tags, the scheduler run and pipeline
run and step it was deployed from, the notebook's digest and parameters, the input files
with their SHA-256), and what could not be followed, and why. ``--reproduce`` runs that
pipeline again with the same parameters and shows the new results beside the recorded
ones. The wire calls are the deployer's and the scheduler's clients
(:mod:`server_ext.clients.deployer.lineage`); the table is HTML where IPython displays it,
text otherwise (STYLE rule 22).
"""

from __future__ import annotations

from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..clients.deployer.client import DeployerClient, check_name
from ..clients.deployer.lineage import lineage_html, lineage_text, reproduce
from ..clients.scheduler.client import SchedulerClient
from .base import ShipyardMagics, unquote, user_errors


def default_version(deployment: dict) -> int:
    """The version taking the most traffic (the newest of a tie), else the newest."""
    traffic = {int(v): p for v, p in (deployment.get("traffic") or {}).items()}
    if traffic and max(traffic.values()) > 0:
        return max(traffic, key=lambda v: (traffic[v], v))
    return max(v["version"] for v in deployment["versions"])


class LineageView:
    """The chain as an HTML table in a notebook, as text in a terminal."""

    def __init__(self, doc: dict):
        self.doc = doc

    def _repr_html_(self) -> str:
        return lineage_html(self.doc)

    def __repr__(self) -> str:
        return lineage_text(self.doc)


@magics_class
class LineageMagics(ShipyardMagics):
    """Lineage: ``%lineage``."""

    @magic_arguments()
    @argument("name", help="The deployment's name.")
    @argument(
        "--version",
        type=int,
        metavar="N",
        help="Which version (default: the one taking the most traffic).",
    )
    @argument("--owner", help="Another user's deployment (hub admins only).")
    @argument(
        "--reproduce",
        action="store_true",
        help="Run the pipeline the version came from again, with the same parameters, and "
        "show the new metrics (or the step's outputs) beside the recorded ones.",
    )
    @line_magic
    @user_errors
    def lineage(self, line: str):
        """Show where a deployed version came from, down to its input files.

        Examples
        --------
        ``%lineage churn`` · ``%lineage churn --version 2`` · ``%lineage churn --reproduce``
        """
        args = parse_argstring(self.lineage, line)
        name = check_name(unquote(args.name) or "")
        client = DeployerClient.from_environment()
        version = args.version
        if version is None:
            version = default_version(client.get_deployment(name, args.owner))
        doc = client.lineage(name, version, args.owner)
        self._show(doc)
        if not args.reproduce:
            return
        scheduler = SchedulerClient.from_environment()
        outcome = reproduce(
            doc,
            scheduler,
            run_metrics=self._run_metrics(),
            interval=self.poll_interval,
            timeout=self.reproduce_timeout,
            started=lambda run: print(
                f"Started pipeline run {run['id']} of {run['pipeline_name']!r} with "
                f"{run.get('parameters') or {}}; waiting for it to end..."
            ),
        )
        print(outcome.text())

    @staticmethod
    def _show(doc: dict) -> None:
        from IPython.display import display

        display(LineageView(doc))

    @staticmethod
    def _run_metrics():
        """A run's metrics through this kernel's tracking server, or None without one."""
        try:
            from ..clients.tracking.client import TrackingClient

            return TrackingClient.from_environment().run_metrics
        except Exception:  # no mlflow here: the step's outputs are compared instead
            return None
