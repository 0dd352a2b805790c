"""The cost of Shipyard's own accounting and metrics: usage sampling, and a model call's series.

(a) *Usage sampling* (the usage service, ``hub_ext.services.usage``): ``--objects``
    (100) real cgroups made by the project's cgroup driver (``make_driver("auto")``)
    under three bench-only parents named as ``LocalHost.cgroup_parent_of`` names
    them (``shipyard-bench-<pid>``, ``-jobs``, ``-models``), a third each holding a
    server, a run or a replica, each with one ``sleep`` in it (``--empty``: none).
    Each is recorded in a usage ledger in a temporary folder as ``LocalHost.launch``
    records it (``UsageLedger.opened`` with the kind, owner, object, profile and
    limits). ``UsageCore.sample``, the service's one sampling pass (read every
    ledger record, read its cgroup's counters, count the reading into the database
    in one transaction per instance), then runs ``--passes`` times, one every
    ``--interval`` seconds (the service's default ``sample_interval``), against a
    fresh SQLite database migrated as the service migrates it, and with
    ``--postgres`` against a fresh PostgreSQL database on that server (dropped
    afterwards). Per pass: this process's CPU time (``time.process_time``: user and
    system, so the kernel's work of reading the cgroup files counts) and its wall
    time; on PostgreSQL also the CPU time of the server's backends for the database
    (from ``/proc``, same machine). The first pass inserts each instance's row and
    is shown apart; the steady state is the mean of the others. CPU % of one core =
    CPU per pass / interval, scaled to 100 objects.
(b) *A model call with metrics on against off*: two model servers of the
    scikit-learn pipeline of ``bench/data_quality.py`` (its training summary, data-quality
    checks on in both), one with ``--metrics on`` (the default) and one with
    ``--metrics off`` (no Prometheus series, no ``/metrics``; ``/stats`` stays);
    ``--requests`` one-row requests to each, one at a time, alternating between the
    two; p50 and p99 of each as the client sees them and the difference of the p50s.
    Then in process, the exact calls ``--metrics off`` leaves out of one request
    (``Metrics.observe`` of its status and latency, ``Metrics.observe_inputs`` of its
    data-quality counts, the two batch histograms of its batch of one) on a ``Metrics``
    whose input series are declared as the server declares them: p50 and p99 over
    ``--calls`` calls, with ``RequestStats.record`` (kept with metrics off) beside
    them for scale.

Targets (issue 19 point 8): under 1 % of one core for sampling per 100 running
objects, and under 0.1 ms added at p50 to a model call.

Run it from the repository root, as root (it makes cgroups)::

    .venv/bin/python bench/accounting.py [--objects 100] [--passes 10] [--interval 15]
        [--postgres [URL]] [--requests 2000] [--calls 20000] [--json PATH]

Every cgroup, process, ledger file and database it made is removed at the end, on an
error and on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hub_ext.host.cgroups import CgroupDriver, Limits, make_driver  # noqa: E402
from hub_ext.host.usage import UsageLabel, UsageLedger  # noqa: E402
from hub_ext.services.usage.accounting import Prices  # noqa: E402
from hub_ext.services.usage.app import UsageService  # noqa: E402
from hub_ext.services.usage.core import UsageCore  # noqa: E402
from hub_ext.services.usage.db import make_engine, upgrade  # noqa: E402
from hub_ext.services.usage.store import UsageStore  # noqa: E402

#: the usage service's default seconds between two passes
DEFAULT_INTERVAL = float(UsageService.sample_interval.default_value)
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
#: (parent suffix, ledger kind, object) of each third of the objects, as the hub,
#: the scheduler and the deployer label them
KINDS = (("", "server", "{owner}/"), ("jobs", "run", "run/{i}"),
         ("models", "replica", "model/{owner}/iris/v{i}"))  # fmt: skip
LIMITS = Limits(cpu_limit=1.0, cpu_guarantee=0.5, mem_limit=2 << 30, mem_guarantee=1 << 30)


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl-C does


# ------------------------------------------------------------ (a) sampling


class Objects:
    """``n`` cgroups under three bench-only parents, each in the ledger, each with a ``sleep``."""

    def __init__(self, ledger: UsageLedger):
        self.ledger = ledger
        base = f"shipyard-bench-{os.getpid()}"
        self.drivers: list[CgroupDriver] = []
        for part, _, _ in KINDS:
            driver = make_driver("auto", f"{base}-{part}" if part else base)
            driver.ledger = ledger  # remove() writes the last reading, as in the services
            self.drivers.append(driver)
        self.kind = self.drivers[0].kind
        self.made: list[tuple[CgroupDriver, str]] = []
        self.procs: list[subprocess.Popen] = []
        if self.kind not in ("cgroup2", "cgroup1"):
            raise SystemExit(
                f"the {self.kind} driver keeps no usage counters: nothing to sample "
                "(run as root on a host with cgroups)"
            )

    def make(self, n: int, empty: bool) -> None:
        for i in range(n):
            driver = self.drivers[i % 3]
            _, kind, obj = KINDS[i % 3]
            owner = f"user{i // 3:02d}"  # one server each, as the hub runs them
            name = f"obj{i:03d}"
            driver.create(name, LIMITS)
            self.made.append((driver, name))
            label = UsageLabel(kind, owner, obj.format(owner=owner, i=i))
            if self.ledger.opened(driver, name, label, "small", LIMITS) is None:
                raise SystemExit(f"the {self.kind} driver gave cgroup {name} no counters")
            if not empty:
                self.procs.append(
                    subprocess.Popen(["sleep", "86400"], preexec_fn=driver.preexec(name))
                )

    @property
    def parents(self) -> list[str]:
        return [d.parent for d in self.drivers]

    def remove(self) -> None:
        for driver, name in self.made:
            driver.remove(name, timeout=5)  # kills the sleep
        for proc in self.procs:
            proc.kill()
            proc.wait()
        for driver in self.drivers:
            if not driver.remove_parent():
                print(f"warning: cgroup parent {driver.parent} is not empty", file=sys.stderr)


@contextlib.contextmanager
def postgres_database(url: str) -> Iterator[str]:
    """A fresh database on ``url``'s server, dropped afterwards; yields its URL."""
    import psycopg

    name = f"shipyard_bench_{secrets.token_hex(4)}"
    admin = psycopg.connect(url, autocommit=True, connect_timeout=5)
    admin.execute(f"CREATE DATABASE {name}")
    try:
        yield url.rsplit("/", 1)[0] + "/" + name
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def backend_pids(engine) -> list[int]:
    """The PostgreSQL backends serving ``engine``'s database (its pool's connections)."""
    from sqlalchemy import text

    with engine.connect() as conn:
        query = "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        return list(conn.execute(text(query)).scalars())


def process_cpu(pids: list[int]) -> float:
    """CPU seconds (user and system) used so far by processes ``pids`` of this machine."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def sampling_figures(db_url: str, objects: Objects, ledger: UsageLedger, args) -> dict:
    """``args.passes`` passes of UsageCore.sample over ``objects``, one per ``args.interval``."""
    upgrade(db_url)
    engine = make_engine(db_url)
    postgres = engine.dialect.name == "postgresql"
    core = UsageCore(
        ledger,
        objects.parents,
        UsageStore(engine),
        prices=Prices(0.04, 0.005, 1.0),
        profile_prices={},
        currency="EUR",
        idle_after=3600.0,
        rightsizing_days=7.0,
    )
    cpu, wall, db_cpu = [], [], []
    pids: list[int] = []
    try:
        for i in range(args.passes):
            started = time.monotonic()
            db0 = process_cpu(pids)
            c0, w0 = time.process_time(), time.perf_counter()
            core.sample()
            c1, w1 = time.process_time(), time.perf_counter()
            if pids:
                db_cpu.append(process_cpu(pids) - db0)
            elif postgres:  # the backend the pool opened in the first pass (inserts: not counted)
                pids = backend_pids(engine)
            cpu.append(c1 - c0)
            wall.append(w1 - w0)
            if i < args.passes - 1:
                time.sleep(max(0.0, args.interval - (time.monotonic() - started)))
        counted = core.store.usage("object", 0, time.time() + 3600, None)
    finally:
        core.pool.shutdown()
        engine.dispose()
    if len({row.key for row in counted}) != len(objects.made):
        raise AssertionError(f"{len(counted)} objects counted, {len(objects.made)} made")
    steady = cpu[1:] or cpu
    per_100 = 100 / len(objects.made)
    out = {
        "database": engine.dialect.name,
        "objects": len(objects.made),
        "passes": args.passes,
        "interval_s": args.interval,
        "first_pass_cpu_ms": round(cpu[0] * 1000, 2),
        "first_pass_wall_ms": round(wall[0] * 1000, 2),
        "cpu_per_pass_ms": round(statistics.mean(steady) * 1000, 2),
        "cpu_per_pass_max_ms": round(max(steady) * 1000, 2),
        "wall_per_pass_ms": round(statistics.median(wall[1:] or wall) * 1000, 2),
        "cpu_percent_per_100": round(statistics.mean(steady) / args.interval * 100 * per_100, 4),
    }
    if db_cpu:
        steady_db = db_cpu
        out["db_server_cpu_per_pass_ms"] = round(statistics.mean(steady_db) * 1000, 2)
        out["db_server_cpu_percent_per_100"] = round(
            statistics.mean(steady_db) / args.interval * 100 * per_100, 4
        )
    return out


def print_sampling(fig: dict) -> None:
    line = (
        f"sampling {fig['objects']} objects on {fig['database']}, {fig['passes']} passes every "
        f"{fig['interval_s']:g} s: CPU per pass {fig['cpu_per_pass_ms']:.2f} ms "
        f"(max {fig['cpu_per_pass_max_ms']:.2f}; first pass {fig['first_pass_cpu_ms']:.2f}), "
        f"wall per pass {fig['wall_per_pass_ms']:.2f} ms; "
        f"{fig['cpu_percent_per_100']:.3f} % of one core per 100 objects"
    )
    if "db_server_cpu_per_pass_ms" in fig:
        line += (
            f"; PostgreSQL backends {fig['db_server_cpu_per_pass_ms']:.2f} ms per pass "
            f"({fig['db_server_cpu_percent_per_100']:.3f} %)"
        )
    print(line)


# ------------------------------------------------------------ (b) metrics


def timed(fn, calls: int) -> dict:
    """p50 and p99 of ``calls`` calls of ``fn``, in microseconds (after 1,000 to warm up)."""
    for _ in range(1000):
        fn()
    times = []
    clock = time.perf_counter
    for _ in range(calls):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    times.sort()
    return {
        "p50_us": round(times[len(times) // 2] * 1e6, 2),
        "p99_us": round(times[int(len(times) * 0.99)] * 1e6, 2),
    }


def in_process_figures(summary: dict, calls: int) -> dict:
    """The calls ``--metrics off`` leaves out of one one-row request, timed in this process."""
    import pandas as pd
    from prometheus_client import disable_created_metrics

    from bench.data_quality import training_rows
    from hub_ext.runtime.modelserver.stats import Metrics, RequestStats
    from hub_ext.runtime.quality import Column, Expectations, check

    disable_created_metrics()  # as the model server does
    signature = [Column("age", "double"), Column("visits", "long"), Column("city", "string")]
    expect = Expectations.build(signature, summary)
    metrics = Metrics()
    metrics.declare_inputs(expect.pairs())
    stats = RequestStats()
    row = training_rows().iloc[:1]
    frame = pd.DataFrame({c: row[c].to_numpy() for c in row.columns})
    counts = check(frame, expect)  # what QualityTracker hands Metrics.observe_inputs

    def per_request() -> None:
        metrics.observe(0.0021, 200)
        metrics.observe_inputs(counts, 1)
        metrics.batch_rows.observe(1)
        metrics.batch_requests.observe(1)

    out = {
        "metrics_per_request": timed(per_request, calls),
        "observe": timed(lambda: metrics.observe(0.0021, 200), calls),
        "observe_inputs": timed(lambda: metrics.observe_inputs(counts, 1), calls),
        "batch_histograms": timed(
            lambda: (metrics.batch_rows.observe(1), metrics.batch_requests.observe(1)), calls
        ),
        "stats_record_kept": timed(lambda: stats.record(0.0021, 200), calls),
        "timer_alone": timed(lambda: None, calls),
    }
    out["input_series"] = len(expect.pairs())
    return out


def serving_figures(requests_n: int, workdir: Path) -> dict:
    import requests

    from bench.data_quality import Server, make_model, scoring_figures
    from tests.hubtools import wait_for

    model_dir, summary_path = make_model(workdir)
    on = Server(model_dir, summary_path, "on", workdir / "on.log", "--metrics", "on")
    off = Server(model_dir, summary_path, "on", workdir / "off.log", "--metrics", "off")
    try:
        wait_for(lambda: on.ready() and off.ready(), 180, 0.1, "both model servers")
        if requests.get(off.url + "/metrics", timeout=10).status_code != 404:
            raise AssertionError("the server with --metrics off serves /metrics")
        fig = scoring_figures(on, off, requests_n, 1)
        scraped = requests.get(on.url + "/metrics", timeout=10).text
        fig["on_requests_counted"] = next(
            float(line.split()[-1])
            for line in scraped.splitlines()
            if line.startswith('shipyard_model_requests_total{code="200"}')
        )
    finally:
        on.stop()
        off.stop()
    fig["summary"] = json.loads(summary_path.read_text())
    return fig


def print_metrics(e2e: dict, inproc: dict, requests_n: int) -> None:
    print(
        f"model call, 1 row, {requests_n} requests each: metrics on p50 "
        f"{e2e['on']['p50_ms']:.3f} ms (p99 {e2e['on']['p99_ms']:.3f}), off p50 "
        f"{e2e['off']['p50_ms']:.3f} ms (p99 {e2e['off']['p99_ms']:.3f}); "
        f"added at p50 {e2e['added_p50_ms'] * 1000:.0f} us"
    )
    print(f"in process, microseconds per call ({inproc['input_series']} input series declared):")
    names = {
        "metrics_per_request": "what --metrics off leaves out, per request",
        "observe": "  Metrics.observe (status, latency)",
        "observe_inputs": "  Metrics.observe_inputs (data-quality counts)",
        "batch_histograms": "  the two batch histograms",
        "stats_record_kept": "RequestStats.record (kept when off)",
        "timer_alone": "the timer alone",
    }
    for key, label in names.items():
        fig = inproc[key]
        print(f"  {label:46s} p50 {fig['p50_us']:7.2f}  p99 {fig['p99_us']:7.2f}")


# ------------------------------------------------------------ main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objects", type=int, default=100, help="cgroups to sample (a third each kind)")
    p.add_argument("--passes", type=int, default=10, help="sampling passes per database")
    p.add_argument(
        "--interval", type=float, default=DEFAULT_INTERVAL, help="seconds between two passes"
    )
    p.add_argument("--empty", action="store_true", help="no process in the cgroups")
    p.add_argument(
        "--postgres", nargs="?", const=POSTGRES, metavar="URL",
        help=f"also sample into a fresh database on this server (default {POSTGRES})",
    )  # fmt: skip
    p.add_argument("--requests", type=int, default=2000, help="model calls to each server")
    p.add_argument("--calls", type=int, default=20000, help="in-process calls per function")
    p.add_argument("--skip-sampling", action="store_true", help="only (b)")
    p.add_argument("--skip-serving", action="store_true", help="only (a)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    results: dict = {"load_average": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="bench-accounting-") as tmp:
        workdir = Path(tmp)
        if not args.skip_sampling:
            ledger = UsageLedger(workdir / "usage")
            objects = Objects(ledger)
            try:
                objects.make(args.objects, args.empty)
                fig = sampling_figures(
                    f"sqlite:///{workdir / 'usage.sqlite'}", objects, ledger, args
                )
                results["sampling_sqlite"] = fig
                print_sampling(fig)
                if args.postgres:
                    with postgres_database(args.postgres) as url:
                        fig = sampling_figures(url, objects, ledger, args)
                    results["sampling_postgresql"] = fig
                    print_sampling(fig)
            finally:
                objects.remove()
        if not args.skip_serving:
            e2e = serving_figures(args.requests, workdir)
            inproc = in_process_figures(e2e.pop("summary"), args.calls)
            results["model_call_1_row"] = e2e
            results["in_process"] = inproc
            print_metrics(e2e, inproc, args.requests)
    results["load_average_end"] = os.getloadavg()[0]
    print(
        f"load average (1 min) at the start {results['load_average']:.2f}, "
        f"at the end {results['load_average_end']:.2f}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
