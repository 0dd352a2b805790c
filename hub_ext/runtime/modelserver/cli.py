"""The process: ``python -m hub_ext.runtime.modelserver`` runs :func:`main`.

SIGTERM: uvicorn stops accepting and waits up to
:data:`~.contract.GRACE_SECONDS` for the requests in flight, then the process exits 0.
A request past ``--timeout``, or a model that fails to load, ends the process with
:data:`~.contract.EXIT_TIMEOUT` or :data:`~.contract.EXIT_LOAD_FAILED`
(:meth:`.ModelServer.request_exit`).

``--workers`` above 1 starts that many processes on one socket (uvicorn's
supervisor), each loading the model; each then batches on its own. The children run
:func:`_worker`, which lives here rather than in ``__main__.py``: a spawned child
imports the function's module by name, and multiprocessing never re-imports a
package's ``__main__``.

uvicorn uses httptools and uvloop when they are installed (``http="auto"``,
``loop="auto"``), else h11 and asyncio; the image's lock has neither yet.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

from prometheus_client import disable_created_metrics

from .app import RequireSecret, create_app
from .contract import GRACE_SECONDS, REPLICA_SECRET_ENV, parse_args
from .server import ModelServer


def _ignore_sigterm_after_shutdown(signum, frame) -> None:
    """Installed before uvicorn runs: uvicorn re-raises SIGTERM once shut down, this absorbs it.

    The contract wants exit 0 after a graceful SIGTERM; uvicorn's default would die of
    the signal (status -15).
    """


def _serve(args: argparse.Namespace, sockets=None) -> int:
    import uvicorn

    disable_created_metrics()  # no *_created series: the deployer reads totals only
    # taken out of the environment before the model (code) is loaded in this process
    secret = os.environ.pop(REPLICA_SECRET_ENV, "")
    server = ModelServer(args)
    app = create_app(server)
    config = uvicorn.Config(
        RequireSecret(app, secret) if secret else app,
        host=args.host,
        port=args.port,
        access_log=False,
        log_level=args.log_level.lower(),
        timeout_graceful_shutdown=GRACE_SECONDS,
        lifespan="on",
        backlog=4096,
    )
    server.uvicorn = uvicorn.Server(config)
    signal.signal(signal.SIGTERM, _ignore_sigterm_after_shutdown)
    server.uvicorn.run(sockets=sockets)
    if not server.uvicorn.started and not server.exit_code:
        return 1  # could not bind, or startup failed (uvicorn logged why)
    return server.exit_code


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s",
        stream=sys.stderr,
    )


def _worker(args: argparse.Namespace, sockets) -> None:
    _setup_logging(args.log_level)
    sys.exit(_serve(args, sockets))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the model server until SIGTERM, a timeout or a failed load; return the exit status."""
    args = parse_args(argv)
    _setup_logging(args.log_level)
    if args.workers <= 1:
        return _serve(args)
    import multiprocessing

    import uvicorn

    # One socket, several processes, as uvicorn --workers: each child loads the model
    # and batches on its own; a child that exits is not replaced here (its supervisor
    # restarts the whole replica once all have exited).
    sock = uvicorn.Config(create_app, host=args.host, port=args.port).bind_socket()
    ctx = multiprocessing.get_context("spawn")
    children = [ctx.Process(target=_worker, args=(args, [sock])) for _ in range(args.workers)]
    for child in children:
        child.start()

    def forward(signum, frame):
        for child in children:
            if child.is_alive():
                os.kill(child.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = []
    for child in children:
        child.join()
        codes.append(child.exitcode or 0)
    return max(codes, key=abs) if any(codes) else 0
