"""What the deployer and a replica agree on (docs/deploy-contract.md section 1).

The command line (or the environment that stands in for it), the secret that every
call but the probes carries, the exit statuses and the grace period after SIGTERM.
The deployer imports this module to start replicas and to call them, so it holds
only the standard library: the hub side never loads starlette, uvicorn or
prometheus_client for it, and the two sides read one definition of each option.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence

#: exit status after a request timed out (``EX_TEMPFAIL``): start a fresh process
EXIT_TIMEOUT = 75
#: exit status when the model could not be loaded
EXIT_LOAD_FAILED = 3
#: seconds ``/health`` reports a failed load before the process exits
FAILED_LINGER_SECONDS = 5.0
#: seconds in-flight requests get after SIGTERM or a timeout (contract: 20 s)
GRACE_SECONDS = 20

#: The environment variable a replica's secret arrives in, and the header callers send it
#: in. Replicas listen on loopback, which every account of the machine reaches: without
#: the secret, anyone could call a model directly, past the deployer's authorization.
REPLICA_SECRET_ENV = "SHIPYARD_REPLICA_SECRET"
REPLICA_SECRET_HEADER = "x-shipyard-replica-secret"
#: What answers without the secret: the probes, which say nothing about the model's data.
OPEN_PATHS = frozenset({"/health", "/ping"})

#: Every option may come from the environment instead: ``--model-uri`` from
#: ``SHIPYARD_MODELSERVER_MODEL_URI``, ``--port`` from ``SHIPYARD_MODELSERVER_PORT``...
#: (the command line wins). Every account of the machine reads a process's command line
#: (``ps``, ``/proc/<pid>/cmdline``), which would show the owner's MLflow run id, model
#: name and port to all; only the owner (and root) reads its environment. The deployer
#: passes every option so (:func:`options_environment`).
OPTIONS_ENV_PREFIX = "SHIPYARD_MODELSERVER_"


def options_environment(args: Sequence[str]) -> dict[str, str]:
    """The environment that gives a model server the options ``args`` would give it.

    Parameters
    ----------
    args : sequence of str
        Options as on the command line: ``["--model-uri", "runs:/.../model", "--port",
        "8080"]``, each followed by its value (no flags without one).

    Returns
    -------
    dict of str to str
        ``{"SHIPYARD_MODELSERVER_MODEL_URI": "runs:/.../model", ...}``, read back by
        :func:`parse_args`.
    """
    if len(args) % 2:
        raise ValueError(f"an option without its value in {list(args)!r}")
    env = {}
    for option, value in zip(args[::2], args[1::2], strict=True):
        if not option.startswith("--"):
            raise ValueError(f"not an option: {option!r}")
        env[OPTIONS_ENV_PREFIX + option[2:].replace("-", "_").upper()] = value
    return env


def parse_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> argparse.Namespace:
    """The command line of docs/deploy-contract.md section 1, or its environment.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments; ``sys.argv[1:]`` by default.
    environ : mapping of str to str, optional
        Where options missing from ``argv`` are read (:data:`OPTIONS_ENV_PREFIX`);
        this process's environment by default.
    """
    p = argparse.ArgumentParser(
        prog="python -m hub_ext.runtime.modelserver",
        description="Serve one MLflow model over MLflow's scoring protocol.",
    )
    p.add_argument(
        "--model-uri",
        required=True,
        help="local directory, or models:/ or runs:/ URI read through $MLFLOW_TRACKING_URI",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8080, help="port to listen on")
    p.add_argument("--name", default="", help="OWNER/NAME/VERSION, for logs and /health")
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=10 * 1024 * 1024,
        help="largest request body; larger ones get 413",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds per request; past it 504, then the process exits 75",
    )
    p.add_argument("--max-batch", type=int, default=64, help="most rows in one predict call")
    p.add_argument(
        "--max-batch-wait-ms",
        type=float,
        default=2.0,
        help="longest wait for a fuller batch, only while busy",
    )
    p.add_argument(
        "--training-summary",
        default=None,
        help="JSON file from drift.summarize(); enables drift in /stats and /metrics",
    )
    p.add_argument(
        "--data-quality",
        choices=("on", "off"),
        default="on",
        help="check every input against the signature and the training summary and count "
        "the issues in /stats and /metrics (never refuses a request)",
    )
    p.add_argument(
        "--metrics",
        choices=("on", "off"),
        default="on",
        help="keep the Prometheus series and serve them on /metrics; off serves no /metrics "
        "(/stats, which the deployer reads, stays)",
    )
    p.add_argument(
        "--data-quality-margin",
        type=float,
        default=0.0,
        help="share of a feature's training range (max - min) that values may lie outside "
        "it before they count as out of range",
    )
    p.add_argument(
        "--model-cache",
        default=None,
        help="folder that keeps a downloaded copy of a models:/ or runs:/ model; "
        "later starts load the copy",
    )
    p.add_argument("--workers", type=int, default=1, help="processes, each loading the model")
    p.add_argument("--log-level", default="info", help="logging level")
    environ = os.environ if environ is None else environ
    for action in p._actions:
        name = OPTIONS_ENV_PREFIX + action.dest.upper()
        if action.option_strings and name in environ:
            # a string default goes through the option's type, as a command-line value
            action.default = environ[name]
            action.required = False
    return p.parse_args(argv)
