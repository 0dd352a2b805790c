"""`make test`: lint, then the whole pytest suite; 'no tests collected' is a failure.

Usage: python -m tests.run [pytest arguments]

The suite runs in two workers per core (pytest-xdist), at most eight, one test module per
worker at a time (``--dist loadfile``): a module's hub, accounts and cgroups belong to one
worker, and :func:`tests.hubtools.tagged` keeps the workers' names apart. Two per core,
because most of a module's time is spent waiting on its subprocesses (a hub starting, a
kernel, a model server, Chromium), not computing: on 2 cores, 4 workers ran the suite in
20 minutes where 2 took 34. ``SHIPYARD_TEST_WORKERS`` sets the number of workers (``0``
runs in this process, as plain pytest does); a ``-n`` among the arguments wins.
"""

import os
import subprocess
import sys


def default_workers() -> int:
    """Two workers per core this process may use, at most eight."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(8, 2 * (cores or 1))


def worker_arguments(argv: list[str]) -> list[str]:
    """The xdist arguments to add to ``argv``: none when the caller chose already."""
    chosen = any(
        a in ("-n", "--numprocesses", "--dist") or a.startswith(("-n", "--numprocesses="))
        for a in argv
    )
    if chosen or "no:xdist" in argv:
        return []
    workers = os.environ.get("SHIPYARD_TEST_WORKERS") or str(default_workers())
    return ["-n", workers, "--dist", "loadfile"]


def main(argv: list[str]) -> int:
    lint = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "hub_ext", "server_ext", "tests", "bench", "config"]
    )
    if lint.returncode:
        print("ruff found problems (above); `ruff check --fix` mends most.", file=sys.stderr)
        return lint.returncode
    argv = worker_arguments(argv) + argv
    code = subprocess.run([sys.executable, "-m", "pytest", *argv]).returncode
    if code == 5:  # pytest's "no tests were collected"
        print("pytest collected no tests: refusing to pass an empty run.", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
