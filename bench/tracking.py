"""What a metric costs the notebook: Shipyard's ``log()`` in a ``%%track`` cell against MLflow's own.

A real ``mlflow server`` runs on a free loopback port, and one IPython shell
with Shipyard's extension loaded (``%load_ext server_ext``, as every Shipyard
kernel has it) logs ``--calls`` metric values three ways, each into its own run:

- ``log(loss=…)`` inside ``%%track``: Shipyard's spool; the cell's time is what
  the user waits for, and the values are sent in batches in the background;
- ``mlflow.log_metric("loss", …)``: MLflow's fluent API, one HTTP request per
  value, what a notebook does without Shipyard;
- ``mlflow.log_metrics`` with ``synchronous=False``: MLflow's own asynchronous
  logging, its best case.

The cell time is printed for each, and the ratio of each peer to ``log()``.
Every value is then read back from the server, so a fast path that loses data
cannot look good. Timing belongs here, not in the tests: tests check that all
values arrive, this prints how long the cell took.

Run from the repository root::

    .venv/bin/python bench/tracking.py                 # 10,000 values each
    .venv/bin/python bench/tracking.py --calls 2000 --json /tmp/tracking.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow(root: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    # no job runner: it would start a dozen huey consumers, each importing mlflow
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         f"sqlite:///{root}/mlflow.db", "--default-artifact-root", str(root / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=(root / "server.log").open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit((root / "server.log").read_text())
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):  # noqa: S310 - loopback
                return proc, url
        except OSError:
            time.sleep(0.3)
    raise SystemExit("mlflow server did not answer in 180 s")


CELLS = {
    "Shipyard log() in %%track": (
        "track",
        "t0 = time.perf_counter()\n"
        "for i in range(CALLS):\n"
        "    log(loss=1 / (i + 1))\n"
        "elapsed = time.perf_counter() - t0",
    ),
    "mlflow.log_metric": (
        None,
        "with mlflow.start_run(run_name=NAME):\n"
        "    t0 = time.perf_counter()\n"
        "    for i in range(CALLS):\n"
        "        mlflow.log_metric('loss', 1 / (i + 1), step=i)\n"
        "    elapsed = time.perf_counter() - t0",
    ),
    "mlflow.log_metrics(synchronous=False)": (
        None,
        "with mlflow.start_run(run_name=NAME):\n"
        "    t0 = time.perf_counter()\n"
        "    for i in range(CALLS):\n"
        "        mlflow.log_metrics({'loss': 1 / (i + 1)}, step=i, synchronous=False)\n"
        "    elapsed = time.perf_counter() - t0",
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000, help="metric values per way")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="shipyard-bench-tracking-"))
    os.environ.update(
        IPYTHONDIR=str(root / "ipython"),
        SHIPYARD_SPOOL_DIR=str(root / "spool"),
        SHIPYARD_PROFILE="bench",
        SHIPYARD_ENV="base",
        SHIPYARD_ENV_DIGEST="sha256:bench",
    )
    server, url = start_mlflow(root)
    os.environ["MLFLOW_TRACKING_URI"] = url
    try:
        from IPython.core.interactiveshell import InteractiveShell
        from mlflow import MlflowClient

        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "server_ext")
        shell.run_cell("import time, mlflow")
        client = MlflowClient(url)
        results = {}
        for way, (magic, cell) in CELLS.items():
            name = f"bench-{len(results)}-{int(time.time())}"
            shell.user_ns.update(CALLS=args.calls, NAME=name)
            if magic:
                shell.run_cell_magic(magic, f"--name {name}", cell)
            else:
                shell.run_cell(cell)
            elapsed = shell.user_ns["elapsed"]
            # every value must arrive (the spool and MLflow's queue send in the background)
            shell.run_cell("mlflow.flush_async_logging()")
            arrived, deadline = 0, time.monotonic() + 120
            while arrived < args.calls and time.monotonic() < deadline:
                runs = client.search_runs(
                    [e.experiment_id for e in client.search_experiments()],
                    filter_string=f"attributes.run_name = '{name}'",
                )
                if runs:
                    arrived = len(client.get_metric_history(runs[0].info.run_id, "loss"))
                if arrived < args.calls:
                    time.sleep(0.5)
            results[way] = {"cell_seconds": elapsed, "values_arrived": arrived}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)

    ours = results["Shipyard log() in %%track"]["cell_seconds"]
    print(f"\n{args.calls} metric values from one cell, against a local mlflow server")
    print(f"{'way':40} {'cell s':>8} {'per value µs':>13} {'arrived':>8} {'× log()':>8}")
    for way, r in results.items():
        per = 1e6 * r["cell_seconds"] / args.calls
        ratio = r["cell_seconds"] / ours if ours else float("inf")
        print(
            f"{way:40} {r['cell_seconds']:8.3f} {per:13.1f} {r['values_arrived']:8d} {ratio:8.1f}"
        )
        r["ratio_to_log"] = ratio
    lost = [w for w, r in results.items() if r["values_arrived"] != args.calls]
    print("every value arrived" if not lost else f"values missing for: {', '.join(lost)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"calls": args.calls, "results": results}, indent=2))
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
