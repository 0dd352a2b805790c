"""Scheduler latency, throughput and per-run overhead: Shipyard against papermill and jupyter-scheduler.

Every figure is for the same small notebook: four code cells, the first tagged
``parameters`` (no parameters are passed, so papermill injects no cell and the
first cell is the same everywhere). One run of this script prints all three
side by side:

(a) *Trigger to first cell*: from the moment a run is triggered to the moment
    its first cell starts executing, read from the output notebook's
    ``cells[0].metadata.papermill.start_time`` (ISO, UTC, written by papermill
    on this machine's clock). Shipyard: ``POST api/webhooks/<job>`` of a job
    with a webhook trigger, through the hub's proxy. Before each trigger the
    bench waits until the previous run has ended and a pre-started kernel is
    waiting in its ``warm-*`` cgroup (a kernel process there, and no CPU used
    by the cgroups for 0.3 s), as a user's next run would find it; each run's
    log then says whether it ran in a warm kernel. Baseline: a cold
    ``python -m papermill`` of the same environment, from starting the process
    (also only once the pool's refill is done, which would compete with it).
    One uncounted run of each first; the rounds alternate which goes first. The
    run's ``started_at`` splits Shipyard's figure into API + queue + claim, and
    executor + hand-over + papermill.
(b) *Throughput*: ``--jobs`` (40) jobs submitted at once from as many threads,
    time until all have ended. Shipyard: 40 jobs, each triggered once with
    ``POST api/jobs/<id>/runs``. jupyter-scheduler 2.x (in its own virtualenv,
    .bench/jupyter-scheduler-venv, made on first use) under ``jupyter server``:
    40 ``POST /scheduler/jobs``. jupyter-scheduler starts every job at once in
    a process of its own (``multiprocessing`` "spawn", no pool, no limit), so
    Shipyard runs with ``max_concurrent_runs`` = the number of jobs. Both are
    polled the same way: ``GET`` of each unfinished run/job every 0.5 s. "First
    start" is the earliest start time the server recorded, minus the first POST.
    Where the CPU went meanwhile is printed too: the whole machine's busy time,
    and per process (Shipyard's runs are the scheduler service's reaped children).
(c) *Per-run overhead*: ``--runs`` sequential runs. Shipyard: ``POST
    api/jobs/<id>/runs``, then ``GET api/runs/<id>`` every 50 ms until it ended;
    once back to back (the next trigger as soon as one ended: the pool refills
    while runs go on, so some runs start cold), once with the pool refilled before
    each trigger (as in (a)). Baseline: a loop of ``papermill.execute_notebook``
    in one Python process of the same environment that already imported papermill
    (each call starts its own kernel). One uncounted run of each first.

Shipyard is the real thing, as tests/test_scheduler_service.py starts it: a hub
(:class:`tests.hubtools.HubProcess`) with the scheduler service and a config
file, the ``base`` environment built in .shipyard-test/envs, a hub user with a
system account (``sybench-``) and runs in cgroups (``shipyard-bench-jobs``); the
profile has no CPU limit (nor has jupyter-scheduler) and 1Gi of memory. The bench
calls it through the scheduler's own client, as the users' magics do. Each
contender is a harness in :mod:`bench.harness` (:mod:`~bench.harness.shipyard`,
:mod:`~bench.harness.papermill`, :mod:`~bench.harness.jupyter_scheduler`, and
:mod:`~bench.harness.cpu` for where the CPU went); this module holds the three
benchmarks, the report and :func:`main`.

Run it from the repository root, as root; it removes its accounts, cgroups,
hub and jupyter server at the end (on Ctrl-C too)::

    make bench                                      # all three, 10 runs, 40 jobs
    .venv/bin/python -m bench.scheduler --only a --runs 20
    .venv/bin/python -m bench.scheduler --skip-jupyter-scheduler --json /tmp/sched.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/scheduler.py`: the repository's packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import log  # noqa: E402
from bench.harness.cpu import CpuSplit  # noqa: E402
from bench.harness.envs import build_environment  # noqa: E402
from bench.harness.jupyter_scheduler import JupyterScheduler  # noqa: E402
from bench.harness.papermill import Papermill  # noqa: E402
from bench.harness.shipyard import (  # noqa: E402
    UNFINISHED,
    Shipyard,
    cgroup_processes,
    wait_for_idle_warm_kernel,
)

JOB_POLL_S = 0.5  # (b): both schedulers polled alike
RUN_POLL_S = 0.05  # (c)
TARGET_LATENCY_S = 0.15
TARGET_THROUGHPUT = 2.0
TARGET_OVERHEAD = 1.10


def percentile(values: list[float], p: int) -> float:
    """The ``p``-th percentile, inclusive method (one sample is its own percentile)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def stats(values: list[float]) -> dict:
    """Summary of a series of seconds, with the samples kept for ``--json``."""
    return {
        "n": len(values),
        "mean_s": statistics.fmean(values),
        "p50_s": statistics.median(values),
        "p90_s": percentile(values, 90),
        "min_s": min(values),
        "max_s": max(values),
        "samples_s": values,
    }


# ------------------------------------------------------------------ (a)


def bench_latency(shipyard: Shipyard, papermill: Papermill, runs: int) -> dict:
    """(a) Trigger to first cell: Shipyard's webhook with a warm kernel against a cold CLI."""
    job = shipyard.create_job("latency")
    log("(a) warm-up: one uncounted run of each (Shipyard's first run is cold)")
    shipyard.check(shipyard.wait_run(shipyard.fire_webhook(job), 0.1))
    papermill.cold_cli()
    samples: dict[str, list[float]] = {"shipyard": [], "papermill": []}
    queued, to_first_cell, waited, warm_runs = [], [], [], 0
    for i in range(runs):
        order = ["shipyard", "papermill"] if i % 2 == 0 else ["papermill", "shipyard"]
        for who in order:
            if who == "papermill":
                wait_for_idle_warm_kernel()  # the pool's refill would compete with papermill
                samples["papermill"].append(papermill.cold_cli())
                continue
            waited.append(wait_for_idle_warm_kernel())
            timed = shipyard.timed_run(job)
            samples["shipyard"].append(timed.first_cell)
            queued.append(timed.started)
            to_first_cell.append(timed.first_cell - timed.started)
            warm_runs += timed.warm
        log(
            f"(a) round {i + 1}/{runs}: shipyard {samples['shipyard'][-1]:.3f}s, "
            f"papermill CLI {samples['papermill'][-1]:.3f}s"
        )
    return {
        "shipyard": stats(samples["shipyard"]),
        "papermill_cli": stats(samples["papermill"]),
        "shipyard_warm_runs": warm_runs,
        "shipyard_trigger_to_started_at": stats(queued),
        "shipyard_started_at_to_first_cell": stats(to_first_cell),
        "wait_before_trigger": stats(waited),
    }


# ------------------------------------------------------------------ (b)


def _burst(submit, count: int) -> tuple[float, list]:
    """Call ``submit(i)`` from ``count`` threads released together; (first send, results)."""
    barrier = threading.Barrier(count + 1)
    results: list = [None] * count
    sent: list[float] = [0.0] * count

    def one(i: int) -> None:
        barrier.wait()
        sent[i] = time.time()
        try:
            results[i] = submit(i)
        except Exception as e:  # reported below
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    barrier.wait()
    for t in threads:
        t.join()
    errors = [r for r in results if isinstance(r, Exception)]
    if errors:
        raise RuntimeError(f"{len(errors)} of {count} submissions failed: {errors[0]}")
    return min(sent), results


def _poll_until_done(ids: list[str], get, done) -> dict[str, dict]:
    """GET each unfinished item every JOB_POLL_S until all are done; the last models."""
    models: dict[str, dict] = {}
    pending = list(ids)
    deadline = time.monotonic() + 1800
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} jobs still unfinished after 30 min")
        for item in list(pending):
            models[item] = get(item)
            if done(models[item]):
                pending.remove(item)
        if pending:
            time.sleep(JOB_POLL_S)
    return models


def bench_throughput_shipyard(shipyard: Shipyard, jobs: int) -> dict:
    """(b) for Shipyard: ``jobs`` jobs, one run of each queued at once, until all have ended."""
    log(f"(b) Shipyard: creating {jobs} jobs")
    created = [shipyard.create_job(f"burst-{i:02d}") for i in range(jobs)]
    warm_before = len(cgroup_processes("warm-"))
    cpu = CpuSplit(
        {
            "scheduler service": shipyard.service_pid(),
            "hub": shipyard.hub.proc.pid,
            "proxy": shipyard.proxy_pid(),
        }
    )
    log(f"(b) Shipyard: triggering {jobs} runs at once")
    cpu.start()
    first_post, run_ids = _burst(lambda i: shipyard.run_now(created[i]["id"]), jobs)
    runs = _poll_until_done(run_ids, shipyard.get_run, lambda r: r["status"] not in UNFINISHED)
    all_ended = time.time() - first_post
    cpu_split = cpu.stop()
    durations = [
        (datetime.fromisoformat(r["ended_at"]) - datetime.fromisoformat(r["started_at"]))
        for r in runs.values()
    ]
    statuses = [r["status"] for r in runs.values()]
    starts = [datetime.fromisoformat(r["started_at"]).timestamp() for r in runs.values()]
    warm_runs = sum(shipyard.used_warm_kernel(r) for r in run_ids)
    return {
        "jobs": jobs,
        "all_ended_s": all_ended,
        "first_start_s": min(starts) - first_post,
        "succeeded": statuses.count("succeeded"),
        "failed": len(statuses) - statuses.count("succeeded"),
        "jobs_per_s": jobs / all_ended,
        "warm_kernels_ready_before": warm_before,
        "runs_in_warm_kernel": warm_runs,
        "run_duration_p50_s": statistics.median(d.total_seconds() for d in durations),
        "not_succeeded": [
            {
                "id": r["id"],
                "status": r["status"],
                "reason": r["reason"].splitlines()[-1] if r["reason"] else "",
                "log": shipyard.log_text(r["id"])[:20000],
            }
            for r in runs.values()
            if r["status"] != "succeeded"
        ],
        "cpu_s": cpu_split,
    }


def _js_ended(job: dict) -> bool:
    """Whether a jupyter-scheduler job has ended, well or not."""
    # a new job reads STOPPED until its process marks it IN_PROGRESS: not an end
    return job["status"] in ("COMPLETED", "FAILED")


def bench_throughput_jupyter_scheduler(js: JupyterScheduler, jobs: int) -> dict:
    """(b) for jupyter-scheduler: ``jobs`` jobs created at once, until all have ended."""
    log("(b) jupyter-scheduler: one uncounted job first")
    warmup = js.create_job("warm-up")
    done = _poll_until_done([warmup], js.get_job, _js_ended)[warmup]
    if done["status"] != "COMPLETED":
        raise RuntimeError(f"jupyter-scheduler's warm-up job {done['status']}: {done}")
    log(f"(b) jupyter-scheduler: submitting {jobs} jobs at once")
    cpu = CpuSplit({"jupyter server": js.proc.pid})
    cpu.start()
    first_post, job_ids = _burst(lambda i: js.create_job(f"burst-{i:02d}"), jobs)
    posted = time.time() - first_post
    models = _poll_until_done(job_ids, js.get_job, _js_ended)
    all_ended = time.time() - first_post
    cpu_split = cpu.stop()
    statuses = [m["status"] for m in models.values()]
    starts = [m["start_time"] / 1000 for m in models.values() if m.get("start_time")]
    return {
        "jobs": jobs,
        "version": js.version,
        "all_ended_s": all_ended,
        "first_start_s": min(starts) - first_post if starts else None,
        "all_posts_answered_s": posted,
        "succeeded": statuses.count("COMPLETED"),
        "failed": len(statuses) - statuses.count("COMPLETED"),
        "jobs_per_s": jobs / all_ended,
        "not_succeeded": [
            {"id": m["job_id"], "status": m["status"], "reason": m.get("status_message")}
            for m in models.values()
            if m["status"] != "COMPLETED"
        ],
        "cpu_s": cpu_split,
    }


# ------------------------------------------------------------------ (c)


def bench_overhead(shipyard: Shipyard, papermill: Papermill, runs: int) -> dict:
    """(c) Per run, one after the other: Shipyard's runs against a papermill loop."""
    job = shipyard.create_job("overhead")
    log("(c) Shipyard: one uncounted run, then back to back")
    shipyard.check(shipyard.wait_run(shipyard.run_now(job["id"]), RUN_POLL_S))
    series: dict[str, list[float]] = {"back_to_back": [], "refilled": []}
    warm_runs = {"back_to_back": 0, "refilled": 0}
    for key in ("back_to_back", "refilled"):
        for i in range(runs):
            if key == "refilled":
                wait_for_idle_warm_kernel()
            started = time.perf_counter()
            run_id = shipyard.run_now(job["id"])
            run = shipyard.wait_run(run_id, RUN_POLL_S)
            series[key].append(time.perf_counter() - started)
            shipyard.check(run)
            warm = shipyard.used_warm_kernel(run_id)
            warm_runs[key] += warm
            log(
                f"(c) Shipyard {key.replace('_', ' ')} {i + 1}/{runs}: {series[key][-1]:.3f}s "
                f"({'warm' if warm else 'cold'})"
            )
    log(f"(c) papermill.execute_notebook: one uncounted call, then {runs} in one process")
    wait_for_idle_warm_kernel()  # the pool's refill would compete with papermill
    loop = papermill.warm_loop(runs)
    return {
        "shipyard": stats(series["back_to_back"]),
        "shipyard_warm_runs": warm_runs["back_to_back"],
        "shipyard_pool_refilled": stats(series["refilled"]),
        "shipyard_pool_refilled_warm_runs": warm_runs["refilled"],
        "papermill_execute_notebook": stats(loop),
    }


# ------------------------------------------------------------------ report


def report(results: dict) -> None:
    """Print the table of the parts that ran, with the ratios and the targets, on stdout."""
    settings = results["settings"]
    print()
    print("Shipyard scheduler benchmark: one notebook, 4 code cells (the first tagged parameters)")
    print(
        f"machine: {os.cpu_count()} CPUs. Shipyard: real hub + scheduler service, "
        f"max_concurrent_runs={settings['max_concurrent_runs']}, "
        f"warm_pool_size={settings['warm_pool_size']}, warm_pool_max={settings['warm_pool_max']}, "
        f"poll_interval={settings['poll_interval']:g}s; profile: no CPU limit, 1Gi; "
        f"environment {settings['environment']}"
    )
    if "a" in results:
        a = results["a"]
        s, p = a["shipyard"], a["papermill_cli"]
        print()
        print("(a) trigger -> first cell starts (cells[0].metadata.papermill.start_time)")
        print(f"    {'':52}{'p50':>9}{'p90':>9}{'min':>9}{'max':>9}{'n':>4}")
        for label, x in (
            ("shipyard: POST webhook, warm kernel", s),
            ("papermill CLI, cold: from process start", p),
        ):
            print(
                f"    {label:52}{x['p50_s']:>8.3f}s{x['p90_s']:>8.3f}s"
                f"{x['min_s']:>8.3f}s{x['max_s']:>8.3f}s{x['n']:>4}"
            )
        q, f = a["shipyard_trigger_to_started_at"], a["shipyard_started_at_to_first_cell"]
        print(
            f"    shipyard split (p50): trigger -> run started_at {q['p50_s']:.3f}s, "
            f"started_at -> first cell {f['p50_s']:.3f}s"
        )
        print(
            f"    shipyard runs in a warm kernel: {a['shipyard_warm_runs']}/{s['n']}; before each "
            f"trigger the bench waited until a warm kernel sat idle "
            f"(median {a['wait_before_trigger']['p50_s']:.1f}s after the previous run ended)"
        )
        verdict = "within target" if s["p50_s"] < TARGET_LATENCY_S else "ABOVE TARGET"
        print(
            f"    papermill CLI / shipyard (p50): {p['p50_s'] / s['p50_s']:.1f}x; "
            f"target: shipyard p50 under {TARGET_LATENCY_S}s ({verdict})"
        )
    if "b" in results:
        b = results["b"]
        s, j = b.get("shipyard"), b.get("jupyter_scheduler")
        n = (s or j)["jobs"]
        print()
        print(f"(b) throughput: {n} jobs submitted at once (threads), until all have ended")
        print(
            f"    concurrency: jupyter-scheduler starts every job at once (one spawned process "
            f"per job, no limit) = {n}; shipyard max_concurrent_runs = "
            f"{settings['max_concurrent_runs']}"
        )
        print(f"    {'':40}{'all ended':>11}{'first start':>13}{'jobs/s':>9}{'ok/failed':>11}")
        for label, x in (
            ("shipyard (POST api/jobs/<id>/runs)", s),
            (f"jupyter-scheduler {j['version'] if j else ''} (POST jobs)", j),
        ):
            if x is None:
                print(f"    {label:40}{'skipped':>11}")
                continue
            first = f"{x['first_start_s']:.2f}s" if x["first_start_s"] is not None else "-"
            print(
                f"    {label:40}{x['all_ended_s']:>10.2f}s{first:>13}{x['jobs_per_s']:>9.2f}"
                f"{str(x['succeeded']) + '/' + str(x['failed']):>11}"
            )
        if s:
            print(
                f"    shipyard: {s['warm_kernels_ready_before']} warm kernel(s) ready before the "
                f"burst, {s['runs_in_warm_kernel']} run(s) in a warm kernel; both polled with GET "
                f"of each unfinished job every {JOB_POLL_S}s"
            )
        for label, x in (("shipyard", s), ("jupyter-scheduler", j)):
            if x is None:
                continue
            cpu = dict(x["cpu_s"])
            machine = cpu.pop("machine")
            parts = ", ".join(f"{k} {v:.1f}" for k, v in cpu.items() if v >= 0.05)
            print(
                f"    CPU seconds while {label} ran: machine {machine:.1f} "
                f"({machine / x['jobs']:.2f} per job): {parts}"
            )
            for bad in x["not_succeeded"]:
                print(f"    {label} job not succeeded: {bad['status']}: {bad['reason']}")
        if s and j:
            ratio = s["jobs_per_s"] / j["jobs_per_s"]
            verdict = "within target" if ratio >= TARGET_THROUGHPUT else "BELOW TARGET"
            print(
                f"    throughput ratio shipyard/jupyter-scheduler: {ratio:.2f}x; "
                f"target: at least {TARGET_THROUGHPUT:g}x ({verdict})"
            )
    if "c" in results:
        c = results["c"]
        s, r, p = c["shipyard"], c["shipyard_pool_refilled"], c["papermill_execute_notebook"]
        print()
        print(f"(c) per run, sequential: trigger -> ended, GET every {RUN_POLL_S * 1000:.0f} ms")
        print(f"    {'':52}{'mean':>9}{'p50':>9}{'min':>9}{'max':>9}{'n':>4}{'warm':>6}")
        for label, x, warm in (
            ("shipyard: POST runs, back to back", s, c["shipyard_warm_runs"]),
            (
                "shipyard: POST runs, pool refilled before each",
                r,
                c["shipyard_pool_refilled_warm_runs"],
            ),
            ("papermill.execute_notebook loop, one process", p, None),
        ):
            print(
                f"    {label:52}{x['mean_s']:>8.3f}s{x['p50_s']:>8.3f}s"
                f"{x['min_s']:>8.3f}s{x['max_s']:>8.3f}s{x['n']:>4}{'' if warm is None else warm:>6}"
            )
        for label, x in (("back to back", s), ("pool refilled", r)):
            mean_ratio, p50_ratio = x["mean_s"] / p["mean_s"], x["p50_s"] / p["p50_s"]
            verdict = "within target" if mean_ratio <= TARGET_OVERHEAD else "ABOVE TARGET"
            print(
                f"    ratio shipyard ({label})/papermill: mean {mean_ratio:.2f}, p50 {p50_ratio:.2f}; "
                f"target: at most {TARGET_OVERHEAD:.2f} ({verdict})"
            )


# ------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; refuses fewer than one run or job."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs for (a) and (c) (10)")
    parser.add_argument("--jobs", type=int, default=40, help="jobs submitted at once in (b) (40)")
    parser.add_argument("--only", choices=["a", "b", "c"], help="run one part only")
    parser.add_argument(
        "--skip-jupyter-scheduler", action="store_true", help="(b) for Shipyard only"
    )
    parser.add_argument(
        "--max-concurrent",
        type=int,
        help="Shipyard's max_concurrent_runs (default: --jobs, as jupyter-scheduler has no limit)",
    )
    parser.add_argument("--warm-pool-size", type=int, default=1, help="LocalExecutor (1)")
    parser.add_argument("--warm-pool-max", type=int, default=4, help="LocalExecutor (4)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results here")
    parser.add_argument("--log-dir", type=Path, help="keep the hub's and jupyter server's logs")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.jobs < 1:
        parser.error("--runs and --jobs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Build the environment, start the contenders, run the parts, report, clean up."""
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("run as root: the bench creates system accounts and cgroups", file=sys.stderr)
        return 2
    parts = [args.only] if args.only else ["a", "b", "c"]
    if args.log_dir:
        args.log_dir.mkdir(parents=True, exist_ok=True)
    # SIGTERM cleans up like Ctrl-C (hub and jupyter server run in sessions of their own)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    # the base environment, where the tests build it; hub, runs and papermill all use it
    built = build_environment("base")
    log(f"base environment: {built.env.path} (reused: {built.reused})")

    scratch = Path(tempfile.mkdtemp(prefix="sybench-scheduler-"))
    scratch.chmod(0o755)  # the account's home is below it
    settings = {
        "max_concurrent_runs": args.max_concurrent or args.jobs,
        "poll_interval": 1.0,
        "warm_pool_size": args.warm_pool_size,
        "warm_pool_max": args.warm_pool_max,
    }
    shipyard = Shipyard(scratch, settings, args.log_dir)
    papermill = Papermill(scratch, built.env.python, built.env.bin, args.log_dir)
    js: JupyterScheduler | None = None
    results: dict = {
        "settings": {**shipyard.settings, "environment": str(built.env.path)},
        "runs": args.runs,
    }
    try:
        log("starting a hub with the scheduler service")
        shipyard.start()
        if "a" in parts:
            results["a"] = bench_latency(shipyard, papermill, args.runs)
        if "c" in parts:
            results["c"] = bench_overhead(shipyard, papermill, args.runs)
        if "b" in parts:
            results["b"] = {"shipyard": bench_throughput_shipyard(shipyard, args.jobs)}
            if not args.skip_jupyter_scheduler:
                shipyard.stop()  # nothing of Shipyard's runs beside jupyter-scheduler
                js = JupyterScheduler(scratch, args.log_dir)
                log(f"starting jupyter server with jupyter_scheduler {js.version}")
                js.start()
                results["b"]["jupyter_scheduler"] = bench_throughput_jupyter_scheduler(
                    js, args.jobs
                )
        report(results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return 0
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        log("cleaning up: hub, jupyter server, sybench- accounts, shipyard-bench cgroups")
        shipyard.stop()
        if js is not None:
            js.stop()
        shipyard.remove_accounts_and_cgroups()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
