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

Rejected alternative: one module per benchmark with its harnesses inside (the scheduler's
was 1,000 lines, and spoke the scheduler's REST API by hand, so a change of the API reached
the client and the bench separately).
"""

from __future__ import annotations

import sys
from pathlib import Path

#: The repository: the hub, the tests' helpers and ``.bench/`` are found from here.
REPO = Path(__file__).resolve().parents[2]


def log(message: str) -> None:
    """Progress for the person running a bench, on stderr, so stdout is only the report."""
    print(message, file=sys.stderr, flush=True)
