"""The systems the benchmarks start and drive, each in a harness of its own.

A benchmark then reads as "trigger, wait, measure", not as process management. For
:mod:`bench.scheduler`, which compares Shipyard's scheduler with papermill and
jupyter-scheduler on the same notebook (:mod:`bench.harness.notebook`):

- :mod:`bench.harness.shipyard`: a real hub with the scheduler service, one user with a
  system account, driven through :class:`server_ext.clients.scheduler.client.SchedulerClient`,
  the client the users' magics, the panel and ``shipyard jobs`` use, so the bench times the
  path users take and not a hand-written one;
- :mod:`bench.harness.papermill`: the papermill CLI and a loop of
  ``papermill.execute_notebook`` in the same environment;
- :mod:`bench.harness.jupyter_scheduler`: ``jupyter server`` with jupyter-scheduler 2.x in a
  virtualenv of its own;
- :mod:`bench.harness.cpu`: where the machine's CPU went while one of them ran.

For :mod:`bench.pipeline`, which runs a five-step pipeline through the scheduler against
the same notebooks run by papermill one after another:

- :mod:`bench.harness.pipelines`: the pipeline's notebooks and ``pipeline.yaml`` (a chain
  and a parallel shape), the calls of the :class:`~bench.harness.shipyard.Shipyard` user to
  the pipelines API and the timing of a run from its POST; the same pipeline as a plan for
  :class:`bench.harness.papermill.PapermillPipeline`, the peer.

For :mod:`bench.chaos`, the failure drills:

- :mod:`bench.harness.platform`: a hub with every managed service and one model
  deployment, changed through :class:`server_ext.clients.deployer.client.DeployerClient`,
  and how to find each of its processes to kill it;
- :mod:`bench.harness.load`: the open-loop load of model requests that counts every answer.

For :mod:`bench.containers`, which starts a hub per placement itself,
:class:`bench.harness.shipyard.SchedulerUser` drives each hub's scheduler and times a run
from its trigger exactly as :mod:`bench.scheduler` does; it shares its command line
(``--rounds``, ``--json``, ``--log-dir``) with :mod:`bench.spawn` through
:mod:`bench.harness.cli`.

Every benchmark builds its environments with :func:`bench.harness.envs.build_environment`,
into the test suite's folder, never into the one a running install uses.

Rejected alternative: one module per benchmark with its harnesses inside (the scheduler's
was 1,000 lines, the drills' 900, and both spoke the services' REST APIs by hand, so a
change of an API reached the client and the benches separately).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import requests

#: The repository: the hub, the tests' helpers and ``.bench/`` are found from here.
REPO = Path(__file__).resolve().parents[2]


def log(message: str, clock: bool = False) -> None:
    """Progress for the person running a bench, on stderr, so stdout is only the report.

    ``clock`` starts the line with the time of day, for the drills, whose log is read
    against the hub's.
    """
    if clock:
        message = f"[{time.strftime('%H:%M:%S')}] {message}"
    print(message, file=sys.stderr, flush=True)


def until(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` (an error counts as not yet) until true or ``timeout``; say which.

    The errors of a part that is down are not yet: a refused connection, a process gone,
    a file not written, a body that is not JSON.
    """
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(requests.RequestException, psutil.Error, OSError, ValueError):
            if predicate():
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
