"""Model deployment from a notebook cell: ``%deploy`` and ``%deployments``.

The magics parse arguments, call the deployer's side and show the result (STYLE rule 22):
the wire calls are in :mod:`server_ext.clients.deployer.client`, publishing models in
:mod:`server_ext.clients.deployer.publish`, the steps of ``%deploy`` in
:mod:`server_ext.clients.deployer.rollout`, the text in :mod:`server_ext.clients.deployer.text`
and the widgets in :mod:`server_ext.magics.widgets`. The deployer's refusals reach the user as
its own message, through :func:`~server_ext.magics.base.user_errors`.

A model of the kernel records the run that trained it: the newest ``%%track`` run, which
:class:`~server_ext.magics.tracking.TrackingMagics` keeps, so this family is given the
tracking family's instance. ``%deploy`` prints code that reads the hub token from
``$JUPYTERHUB_API_TOKEN``, never the token itself (SECURITY rule 8).
"""

from __future__ import annotations

from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

from ..clients.deployer.client import RUN_ID, DeployerClient, check_name, hub_user
from ..clients.deployer.publish import check_example, describe_source, model_flavor
from ..clients.deployer.rollout import DEPLOY_STAGES, ModelSource, Rollout, Settings, is_ready
from ..clients.deployer.text import (
    curl_example,
    deployments_text,
    endpoint_url,
    example_payload,
    python_example,
    version_rows,
)
from .base import ShipyardMagics, unquote, user_errors
from .tracking import TrackingMagics


@magics_class
class DeployMagics(ShipyardMagics):
    """Deployment: ``%deploy`` and ``%deployments``.

    Parameters
    ----------
    shell : InteractiveShell
        The shell, as for every ``Magics``.
    tracking : TrackingMagics, optional
        The tracking magics of the same shell: the experiment in use, and the runs of this
        kernel a model's source run is found among. Default: the shell's registered ones,
        else new ones.
    """

    def __init__(self, shell=None, tracking: TrackingMagics | None = None, **kwargs):
        super().__init__(shell=shell, **kwargs)
        if tracking is None and shell is not None:
            tracking = shell.magics_manager.registry.get("TrackingMagics")
        self.tracking = tracking if tracking is not None else TrackingMagics(shell=shell)

    def rollout(self) -> Rollout:
        return Rollout(DeployerClient.from_environment(), self.poll_interval, self.deploy_timeout)

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
    @user_errors
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
            return self._deploy_operation(operations[0], args)
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
        name = check_name(unquote(args.name))
        if args.replicas is not None and args.replicas < 1:
            raise UsageError(f"--replicas {args.replicas}: give 1 or more, e.g. --replicas 2.")
        if args.canary is not None and not 0 <= args.canary <= 100:
            raise UsageError(
                f"--canary {args.canary}: give the new version's share of the traffic in "
                "percent, from 0 to 100, e.g. --canary 10."
            )
        source_run = unquote(args.run)
        if source_run and not RUN_ID.fullmatch(source_run):
            raise UsageError(f"--run {source_run!r} is not an MLflow run id (32 hex digits).")
        ref = unquote(args.model)
        namespace = self.shell.user_ns
        kind = describe_source(ref, namespace)
        model = namespace[ref] if kind == "variable" else None
        flavor = model_flavor(model, ref) if kind == "variable" else None
        example = None
        if args.input_example:
            var = unquote(args.input_example)
            if var not in namespace:
                raise UsageError(
                    f"--input-example {var}: no variable named {var!r} in this notebook; give "
                    "the DataFrame or array the model was trained on, e.g. --input-example X."
                )
            example = check_example(namespace[var], var)
        user = hub_user()
        source = ModelSource(ref, kind, model, flavor, example, source_run)
        settings = Settings(
            profile=unquote(args.profile) if args.profile else None,
            replicas=args.replicas,
            canary=args.canary,
            secrets=[unquote(n) for n in args.secrets],
        )

        rollout = self.rollout()
        existing = rollout.existing(name, args.canary)
        progress = self._deploy_progress(name)
        started = rollout.start(
            progress,
            user,
            name,
            source,
            settings,
            existing,
            self.tracking.experiment_in_use(),
            self.tracking.kernel_runs,
        )
        published, number = started.published, started.version["version"]
        print(
            f"{'Deploying' if started.created else 'Deploying a new version of'} {name!r}: "
            f"version {number} from {published.model_uri}."
        )
        if args.no_wait:
            progress.update(3, "not waiting")
            print("It is starting; %deployments shows when it is ready.")
            return None
        version = self._wait_ready(rollout, progress, name, number, existing)
        deployment = rollout.client.get_deployment(name)
        self._tell_endpoint(rollout.client, deployment, version, example, published)
        return None

    def _deploy_progress(self, name: str):
        """The progress bar of ``%deploy``, shown; a stand-in that prints without ipywidgets."""
        try:
            from .widgets import DeployProgress
        except ImportError:
            return PrintedProgress(DEPLOY_STAGES)
        progress = DeployProgress(name, DEPLOY_STAGES)
        display(progress.widget)
        return progress

    @staticmethod
    def _wait_ready(rollout: Rollout, progress, name: str, number: int, existing) -> dict:
        """Follow version ``number`` to ready; a UsageError with the reason when it fails."""
        try:
            return rollout.wait_ready(progress, name, number, existing)
        except KeyboardInterrupt:
            print(f"Stopped waiting; version {number} goes on starting (%deployments shows it).")
            raise

    def _tell_endpoint(self, client, deployment: dict, version: dict, example, published) -> None:
        """The URL, the traffic the version has, and how to call it with the user's token."""
        number = str(version["version"])
        share = deployment["traffic"].get(number, 0)
        url = endpoint_url(client, deployment)
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
        payload = example_payload(example, published.signature)
        print(f"Endpoint: {url}")
        print("Call it with your hub token, read from the environment (never paste it here):")
        print(f"  {curl_example(url, payload)}")
        print("In Python:")
        print(python_example(url, payload))

    def _deploy_operation(self, operation: str, args) -> None:
        """``--rollback``, ``--promote`` and ``--delete``: one call, then the outcome."""
        rollout = self.rollout()
        target = None
        if operation == "delete":
            name = check_name(unquote(args.delete))
        elif operation == "promote":
            name, text = args.promote
            name = check_name(unquote(name))
            try:
                target = int(text)
            except ValueError:
                raise UsageError(
                    f"--promote {name} {text}: give a version number, e.g. --promote {name} 2."
                ) from None
        else:
            name = check_name(unquote(args.rollback))
            target = args.to
        outcome = rollout.operate(operation, name, target)
        if outcome is None:
            print(f"Deleted {name!r}: every version is stopped and the endpoint is gone.")
            return
        deployment, target = outcome
        if not is_ready(deployment, target):
            progress = self._deploy_progress(name)
            self._wait_ready(rollout, progress, name, target, deployment)
            deployment = rollout.client.get_deployment(name)
        verb = "Promoted" if operation == "promote" else "Rolled back"
        print(
            f"{verb} {name!r}: version {target} takes "
            f"{deployment['traffic'].get(str(target), 0)}% of the traffic."
        )

    @magic_arguments()
    @line_magic
    @user_errors
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
        rows = version_rows(client)
        try:
            from .widgets import deployments_table
        except ImportError:  # no ipywidgets in this environment
            print(deployments_text(rows))
            return None
        return deployments_table(rows, lambda d: endpoint_url(client, d))


class PrintedProgress:
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
