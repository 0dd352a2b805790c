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
cannot look good, and the time from the cell's end until all of them are
readable is printed. Then:

- what ``%%track`` adds to a trivial cell (``x = 1``), the median of
  ``--repeat`` tracked cells against as many untracked ones in the same shell
  (nothing on the cell's path should wait for MLflow);
- a real kernel (``jupyter_client``, the extension loaded by its config, as in
  every Shipyard kernel) logs ``--calls`` values in a ``%%track`` cell and is
  restarted right after the cell: the values lost, and when the last arrived.

Timing belongs here, not in the tests: tests check that all values arrive,
this prints how long it took.

Run from the repository root::

    .venv/bin/python bench/tracking.py                 # 10,000 values each
    .venv/bin/python bench/tracking.py --calls 2000 --json /tmp/tracking.json

Everything it makes (the server's database and artifacts, the spool, the
kernel's profile) is in one temporary folder, removed at the end.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import socket
import statistics
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


def wait_arrived(client, name: str, calls: int, since: float, timeout=120.0) -> tuple[int, float]:
    """Poll until ``calls`` values are readable; how many, and seconds after ``since``.

    Reading a history of 10,000 values takes the one-worker server a while (about
    0.5 s here), and the polling must not slow down the sending it measures: the run's
    status is polled (one small request every 0.05 s), and the time is taken when the
    run has ended, since both Shipyard and MLflow end a run after its last value is
    stored; the history is then read to check the count (and polled, with the time
    taken again, if values are still missing).
    """
    arrived, run_id, at, deadline = 0, None, None, time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run_id is None:
            runs = client.search_runs(
                [e.experiment_id for e in client.search_experiments()],
                filter_string=f"attributes.run_name = '{name}'",
            )
            run_id = runs[0].info.run_id if runs else None
        if run_id and client.get_run(run_id).info.status != "RUNNING":
            at = at or time.monotonic()
            arrived = len(client.get_metric_history(run_id, "loss"))
            if arrived >= calls:
                break
            at = None
        time.sleep(0.05)
    return arrived, (at or time.monotonic()) - since


def trivial_cell_overhead(shell, repeat: int) -> dict:
    """Median wall time of ``x = 1`` run tracked and untracked, ``repeat`` times each."""
    shell.run_cell("%%track --name bench-warmup\nx = 1")  # the first run on a server waits
    shell.magics_manager.registry["TrackingMagics"].sender.settle()
    plain, tracked = [], []
    for i in range(repeat):
        started = time.perf_counter()
        shell.run_cell("x = 1")
        plain.append(time.perf_counter() - started)
        started = time.perf_counter()
        shell.run_cell(f"%%track --name bench-trivial-{i}\nx = 1")
        tracked.append(time.perf_counter() - started)
    shell.magics_manager.registry["TrackingMagics"].sender.settle()
    return {
        "repeat": repeat,
        "untracked_median_ms": 1000 * statistics.median(plain),
        "tracked_median_ms": 1000 * statistics.median(tracked),
        "overhead_median_ms": 1000 * (statistics.median(tracked) - statistics.median(plain)),
    }


def restart_after_loop(root: Path, url: str, client, calls: int) -> dict:
    """A real kernel logs ``calls`` values in a tracked cell and is restarted right after."""
    from jupyter_client.manager import KernelManager

    profile = root / "kernel-ipython" / "profile_default"
    profile.mkdir(parents=True)
    shutil.copy(REPO / "ipython-config" / "ipython_kernel_config.py", profile)
    env = dict(
        os.environ,
        IPYTHONDIR=str(profile.parent),
        SHIPYARD_SPOOL_DIR=str(root / "kernel-spool"),
        PYTHONPATH=str(REPO),
        MLFLOW_TRACKING_URI=url,
    )
    name = f"bench-restart-{int(time.time())}"
    km = KernelManager(kernel_name="python3")
    km.start_kernel(env=env, cwd=str(root))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        cell = f"%%track --name {name}\nfor i in range({calls}):\n    log(loss=1 / (i + 1))"
        reply = kc.execute_interactive(cell, timeout=120, output_hook=lambda msg: None)
        assert reply["content"]["status"] == "ok", reply["content"]
        ended = time.monotonic()
        km.restart_kernel(now=False)  # as the Restart button does, right after the loop
        kc.wait_for_ready(timeout=120)  # the new kernel sends what the old one left
        arrived, after = wait_arrived(client, name, calls, ended)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        km.cleanup_resources()
    return {"values_arrived": arrived, "lost": calls - arrived, "readable_after_s": after}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000, help="metric values per way")
    parser.add_argument(
        "--repeat", type=int, default=30, help="trivial cells run each way (at least 20)"
    )
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.repeat < 20:
        parser.error("--repeat: give at least 20, for a median worth reading")

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
    shell = None
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
            ended = time.monotonic()
            elapsed = shell.user_ns["elapsed"]
            # every value must arrive (the spool and MLflow's queue send in the background)
            shell.run_cell("mlflow.flush_async_logging()")
            arrived, after = wait_arrived(client, name, args.calls, ended)
            results[way] = {
                "cell_seconds": elapsed,
                "values_arrived": arrived,
                "readable_after_s": after,
            }
        trivial = trivial_cell_overhead(shell, args.repeat)
        restart = restart_after_loop(root, url, client, args.calls)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
        if shell is not None:  # its history database is in root: close it first
            shell.atexit_operations()
            atexit.unregister(shell.atexit_operations)
        shutil.rmtree(root, ignore_errors=True)

    ours = results["Shipyard log() in %%track"]["cell_seconds"]
    print(f"\n{args.calls} metric values from one cell, against a local mlflow server")
    print(
        f"{'way':40} {'cell s':>8} {'per value µs':>13} {'arrived':>8} {'× log()':>8}"
        f" {'all readable after s':>21}"
    )
    for way, r in results.items():
        per = 1e6 * r["cell_seconds"] / args.calls
        ratio = r["cell_seconds"] / ours if ours else float("inf")
        print(
            f"{way:40} {r['cell_seconds']:8.3f} {per:13.1f} {r['values_arrived']:8d} {ratio:8.1f}"
            f" {r['readable_after_s']:21.2f}"
        )
        r["ratio_to_log"] = ratio
    lost = [w for w, r in results.items() if r["values_arrived"] != args.calls]
    print("every value arrived" if not lost else f"values missing for: {', '.join(lost)}")
    print(
        f"\n%%track on a trivial cell, median of {trivial['repeat']}: "
        f"{trivial['tracked_median_ms']:.2f} ms tracked, {trivial['untracked_median_ms']:.2f} ms "
        f"untracked: {trivial['overhead_median_ms']:.2f} ms added"
    )
    print(
        f"kernel restarted right after {args.calls} log() calls: "
        f"{restart['lost']} values lost, all readable {restart['readable_after_s']:.2f} s "
        "after the cell ended"
    )
    if args.json:
        out = {"calls": args.calls, "results": results, "trivial": trivial, "restart": restart}
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 1 if lost or restart["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
