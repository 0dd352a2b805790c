"""Pipelines: the five-step pipeline through Shipyard's scheduler against papermill, side by side.

The pipeline is ``ingest -> (features-a, features-b) -> train -> report`` on a table the
bench makes (:mod:`bench.harness.pipelines` says what each notebook does): real notebooks
that record values with ``hub_ext.runtime.outputs.output`` and hand a file on through the
run's workspace, as in ``tests/test_pipelines.py``. Two shapes: ``chain``, the five steps
one after another (``features-b`` needs ``features-a``), and ``parallel``, the two feature
steps side by side. One run of this script prints, for each shape:

(1) *Wall time*. Shipyard: ``POST api/pipelines/<id>/runs`` through the hub's proxy,
    ``GET api/pipeline-runs/<id>`` every 0.2 s until it ended; the time is from the POST
    to the run's ``ended_at`` (the service's record). The peer: the same five notebooks
    with the same parameters run one after another by ``papermill.execute_notebook``
    (kernel ``python3``) in one Python process of the same environment that already
    imported papermill and stays up between passes, handing on the recorded values and
    the file's path as Shipyard's engine does; its time is from the first step's call to
    the last step's return. Each side: one uncounted run, then ``--repeat`` (3) timed
    ones, the two sides alternating (rounds alternate which goes first) so that both see
    the same load; the median and the minimum, and their ratios shipyard / papermill. The
    targets: at most 1.1 for the chain, less than that for the parallel shape.

    Twice, for the warm pool: *as-is*, first, as a pipeline finds it on its own (the
    scheduler pre-starts kernels for an owner and profile after a run of a job with a
    trigger; a step's job has none, so nothing has started one for the user), then
    *primed*: one run of a job with a webhook trigger on the same profile, as a user's
    scheduled job does, leaves a kernel waiting, and the pool refills as steps take
    kernels. Before each run or pass the bench waits until the previous run's processes
    are gone and the warm processes sit idle (primed: until a warm kernel waits idle);
    the steps that ran in a warm kernel (their log says so) are counted.
(2) *Scheduling gap per step*: a step's run's ``started_at`` minus the latest ``ended_at``
    of the steps it needs (for ``ingest``, minus the POST of the pipeline run): the time
    Shipyard takes to decide and claim the next step. Median over the timed runs. Each
    step's own time (its run's ``started_at`` to the step's ``ended_at``) is printed beside
    papermill's ``execute_notebook`` of the same step.
(3) *File-trigger latency*, where pipelines take a file trigger: a pipeline with
    ``triggers: [{kind: file, glob: inbox/*.csv, debounce_seconds: 0.5}]``; from writing a
    new file there to papermill's start of the first cell of ``ingest``. If the scheduler
    refuses that trigger, the report says it was not measured and why.

Shipyard is the real thing, as :mod:`bench.scheduler` starts it
(:class:`bench.harness.shipyard.Shipyard`): a hub with the scheduler service, the ``base``
environment built in .shipyard-test/envs, a hub user with a system account (``sypipe-``)
whose runs go to cgroups (``shipyard-bench-pipe-jobs``); the profile has no CPU limit and
1Gi of memory. These names are this bench's own: :mod:`bench.scheduler`'s clean-up
(``sybench-``, ``shipyard-bench``) never removes them, nor this one its.

Run it from the repository root, as root; it removes its account, cgroups and hub at the
end (on Ctrl-C and SIGTERM too)::

    make bench                                     # with the other benches
    .venv/bin/python -m bench.pipeline --repeat 5 --json /tmp/pipeline.json
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
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/pipeline.py`: the repository's packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import log  # noqa: E402
from bench.harness.envs import build_environment  # noqa: E402
from bench.harness.notebook import first_cell_start  # noqa: E402
from bench.harness.papermill import Papermill, PapermillPipeline  # noqa: E402
from bench.harness.pipelines import (  # noqa: E402
    DEFAULT_ROWS,
    SHAPES,
    PipelineUser,
    TimedPipelineRun,
    expected_score,
    median_by_step,
    papermill_plan,
    pipeline_file,
)
from bench.harness.shipyard import Shipyard, install_files, wait_for_idle_warm_kernel  # noqa: E402
from server_ext.clients.scheduler.client import SchedulerError  # noqa: E402

ACCOUNT_PREFIX = "sypipe-"
CGROUP_PARENT = "shipyard-bench-pipe"
POLL_S = 0.2
TARGET_CHAIN = 1.10
#: the warm pool as a pipeline finds it on its own, then with a kernel started beforehand
POOLS = ("as-is", "primed")
TRIGGER_GLOB = "inbox/*.csv"
TRIGGER_DEBOUNCE_S = 0.5
#: Seconds to wait for a run after a new file before saying the trigger started none.
TRIGGER_WAIT_S = 60.0


def summary(values: list[float]) -> dict:
    """Median and minimum of a series of seconds, with the samples kept for ``--json``."""
    return {"median_s": statistics.median(values), "min_s": min(values), "samples_s": values}


# ------------------------------------------------------------------ (1) and (2)


def bench_variant(
    user: PipelineUser,
    peer: PapermillPipeline,
    pipeline: dict,
    label: str,
    rows: int,
    repeat: int,
    primed: bool,
) -> dict:
    """Shipyard's runs of one shape against the peer's passes, alternating, one of each uncounted.

    Before each run or pass the previous run's processes are gone and, with ``primed``, a
    warm kernel waits idle for the user's profile; without, whatever warm processes there
    are sit idle (there are none: nothing has started one for the user). Rounds alternate
    which side goes first, so both see the same load on a shared machine.
    """
    jobs_cgroups = user.shipyard.jobs_cgroup_parent
    score = expected_score(rows)

    def shipyard() -> TimedPipelineRun:
        wait_for_idle_warm_kernel(parent=jobs_cgroups, need_kernel=primed)
        run = user.timed_run(pipeline, interval=POLL_S)
        if abs(run.outputs["train"]["score"] - score) > 1e-9:
            raise RuntimeError(f"{label}: Shipyard's train step scored {run.outputs['train']}")
        return run

    def papermill() -> dict:
        # the pool's refill or a run's end would compete with papermill
        wait_for_idle_warm_kernel(parent=jobs_cgroups, need_kernel=primed)
        done = peer.run_pass()
        if abs(done["outputs"]["train"]["score"] - score) > 1e-9:
            raise RuntimeError(f"{label}: papermill's train step scored {done['outputs']['train']}")
        return done

    log(f"{label}: one uncounted run of each first")
    shipyard()
    papermill()
    runs: list[TimedPipelineRun] = []
    passes: list[dict] = []
    for i in range(repeat):
        for side in ("shipyard", "papermill") if i % 2 == 0 else ("papermill", "shipyard"):
            if side == "shipyard":
                runs.append(shipyard())
            else:
                passes.append(papermill())
        log(
            f"{label} {i + 1}/{repeat}: Shipyard {runs[-1].wall_s:.3f}s "
            f"({len(runs[-1].warm_steps)}/{len(runs[-1].gaps_s)} steps in a warm kernel), "
            f"papermill {passes[-1]['wall_s']:.3f}s"
        )
    return {
        "shipyard": {
            **summary([r.wall_s for r in runs]),
            "gap_median_s": median_by_step([r.gaps_s for r in runs]),
            "step_median_s": median_by_step([r.durations_s for r in runs]),
            "first_cell_median_s": median_by_step([r.to_first_cell_s for r in runs]),
            "warm_steps": sum(len(r.warm_steps) for r in runs),
            "steps": sum(len(r.gaps_s) for r in runs),
            "run_ids": [r.run_id for r in runs],
        },
        "papermill": {
            **summary([p["wall_s"] for p in passes]),
            "step_median_s": median_by_step(
                [{step: end - call for step, (call, _, end) in p["steps"].items()} for p in passes]
            ),
            "first_cell_median_s": median_by_step(
                [
                    {step: cell - call for step, (call, cell, _) in p["steps"].items()}
                    for p in passes
                ]
            ),
        },
    }


def prime_pool(shipyard: Shipyard) -> None:
    """Have a warm kernel wait for the user's profile, as a job with a trigger leaves one.

    The scheduler starts warm kernels for an owner and profile after a run of a job with
    a trigger ends, and refills the pool whenever a run takes one; a pipeline step's job has
    no trigger, so only another job of the user's on the same profile puts one there.
    """
    job = shipyard.create_job("prime-the-pool")
    shipyard.check(shipyard.wait_run(shipyard.fire_webhook(job), 0.1))
    wait_for_idle_warm_kernel(parent=shipyard.jobs_cgroup_parent)


# ------------------------------------------------------------------ (3)


def bench_file_trigger(user: PipelineUser, rows: int, repeat: int) -> dict:
    """New file to the first cell of ``ingest``, if the scheduler takes a file trigger."""
    trigger = {"kind": "file", "glob": TRIGGER_GLOB, "debounce_seconds": TRIGGER_DEBOUNCE_S}
    text = pipeline_file("chain", rows, triggers=[trigger], name="bench-file-trigger")
    try:
        pipeline = user.create("pipelines/triggered", text)
    except SchedulerError as exc:
        if exc.status not in (400, 422):
            raise
        log(f"file trigger refused: {exc}")
        return {
            "measured": False,
            "why": "pipeline file triggers not available",
            "answer": str(exc),
        }
    samples = []
    for i in range(repeat):
        wait_for_idle_warm_kernel(parent=user.shipyard.jobs_cgroup_parent)
        before = {r["id"] for r in user.client.list_pipeline_runs(pipeline["id"])}
        arrived = time.time()
        install_files(user.shipyard.account, {f"inbox/new-{i}.csv": "0,1\n"})
        deadline = time.monotonic() + TRIGGER_WAIT_S
        started = []
        while not started and time.monotonic() < deadline:
            started = [
                r for r in user.client.list_pipeline_runs(pipeline["id"]) if r["id"] not in before
            ]
            time.sleep(POLL_S)
        if not started:
            return {
                "measured": False,
                "why": f"the trigger was accepted, but no run started within {TRIGGER_WAIT_S:g}s "
                "of a new file",
            }
        run = user.wait(started[-1]["id"], POLL_S)
        user.check(run)
        ingest = next(s for s in run["steps"] if s["step"] == "ingest")
        samples.append(first_cell_start(user.shipyard.output(ingest["run_id"])) - arrived)
        log(f"file trigger {i + 1}/{repeat}: {samples[-1]:.3f}s to ingest's first cell")
    return {"measured": True, **summary(samples)}


# ------------------------------------------------------------------ report


def report(results: dict) -> None:
    """Print the tables, the ratios and the targets on stdout."""
    settings = results["settings"]
    load = results["load_average"]
    print()
    print(
        "Shipyard pipelines benchmark: ingest -> features-a, features-b -> train -> report, "
        f"a table of {results['rows']} rows handed on as a file, values with output()"
    )
    print(
        f"machine: {os.cpu_count()} CPUs, load average (1 min) {load['start']:.2f} at the start, "
        f"{load['end']:.2f} at the end. Shipyard: real hub + scheduler service, "
        f"max_concurrent_runs={settings['max_concurrent_runs']}, "
        f"warm_pool_size={settings['warm_pool_size']}, warm_pool_max={settings['warm_pool_max']}; "
        f"profile: no CPU limit, 1Gi; environment {settings['environment']}"
    )
    print(
        "peer: the same notebooks and parameters, papermill.execute_notebook one after "
        "another in one warm Python process (kernel python3)"
    )
    print()
    print(f"(1) wall time, {results['repeat']} runs of each after one uncounted, alternating")
    print(
        "    shipyard: POST api/pipelines/<id>/runs -> the run's ended_at; "
        "papermill: first step's call -> last step's return"
    )
    print(f"    {'':36}{'shipyard':>18}{'papermill':>18}{'ratio':>16}{'warm':>7}")
    print(f"    {'':36}" + f"{'median':>9}{'min':>9}" * 2 + f"{'median':>8}{'min':>8}{'steps':>7}")
    ratios = {}
    for pool in POOLS:
        for shape in SHAPES:
            v = results[shape][pool]
            s, p = v["shipyard"], v["papermill"]
            ratios[pool, shape] = s["median_s"] / p["median_s"]
            warm = f"{s['warm_steps']}/{s['steps']}"
            print(
                f"    {shape + ', pool ' + pool:36}{s['median_s']:>8.3f}s{s['min_s']:>8.3f}s"
                f"{p['median_s']:>8.3f}s{p['min_s']:>8.3f}s"
                f"{ratios[pool, shape]:>8.2f}{s['min_s'] / p['min_s']:>8.2f}{warm:>7}"
            )
    for pool in POOLS:
        chain, parallel = ratios[pool, "chain"], ratios[pool, "parallel"]
        print(
            f"    pool {pool}: chain {chain:.2f}, target at most {TARGET_CHAIN:.2f} "
            f"({'within target' if chain <= TARGET_CHAIN else 'ABOVE TARGET'}); parallel "
            f"{parallel:.2f}, target under the chain's "
            f"({'within target' if parallel < min(chain, TARGET_CHAIN) else 'ABOVE TARGET'})"
        )
    print(
        "    pool as-is: the pipeline's own steps start the next step's kernel (worker.py);\n"
        "    pool primed: besides, a run of a job with a webhook trigger left one, as a "
        "user's scheduled job on the same profile does"
    )
    print()
    print("(2) per step, median, c = chain, p = parallel. gap: its run's started_at - the latest")
    print("    ended_at of its needs (ingest: - the POST); to 1st cell: shipyard from started_at,")
    print("    papermill from the execute_notebook call, to papermill's start of the first cell;")
    print("    step: shipyard from started_at to the step's ended_at, papermill the whole call")
    columns = [
        (side, what, shape)
        for side, what in (
            ("shipyard", "gap_median_s"),
            ("shipyard", "first_cell_median_s"),
            ("papermill", "first_cell_median_s"),
            ("shipyard", "step_median_s"),
            ("papermill", "step_median_s"),
        )
        for shape in SHAPES
    ]
    for pool in POOLS:
        print(f"    pool {pool}")
        print(
            f"    {'':12}{'gap':>18}{'to 1st cell':>18}{'to 1st cell':>18}{'step':>18}{'step':>18}"
        )
        print(
            f"    {'':12}{'shipyard':>18}{'shipyard':>18}{'papermill':>18}{'shipyard':>18}{'papermill':>18}"
        )
        print(f"    {'':12}" + "".join(f"{shape[0]:>9}" for *_, shape in columns))
        for step in results["chain"][pool]["shipyard"]["gap_median_s"]:
            row = "".join(
                f"{results[shape][pool][side][what][step]:>8.3f}s" for side, what, shape in columns
            )
            print(f"    {step:12}{row}")
    trigger = results["file_trigger"]
    print()
    if trigger["measured"]:
        print(
            f"(3) file-trigger latency (new file -> ingest's first cell, debounce "
            f"{TRIGGER_DEBOUNCE_S}s included): median {trigger['median_s']:.3f}s, "
            f"min {trigger['min_s']:.3f}s, n {len(trigger['samples_s'])}"
        )
    else:
        print(f"(3) file-trigger latency: not measured ({trigger['why']})")


# ------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; refuses fewer than one run, one row or two concurrent runs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeat", type=int, default=3, help="timed runs of each shape on each side (3)"
    )
    parser.add_argument(
        "--rows", type=int, default=DEFAULT_ROWS, help=f"rows of the table ({DEFAULT_ROWS})"
    )
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=4,
        help="Shipyard's max_concurrent_runs, at least 2 for the parallel steps (4)",
    )
    parser.add_argument("--warm-pool-size", type=int, default=1, help="LocalExecutor (1)")
    parser.add_argument("--warm-pool-max", type=int, default=4, help="LocalExecutor (4)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results here")
    parser.add_argument("--log-dir", type=Path, help="keep the hub's and papermill's logs here")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.rows < 1:
        parser.error("--repeat and --rows must be at least 1")
    if args.max_concurrent < 2:
        parser.error("--max-concurrent must be at least 2, or the feature steps cannot overlap")
    return args


def main(argv: list[str] | None = None) -> int:
    """Build the environment, start the hub, run both shapes and the trigger, report, clean up."""
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("run as root: the bench creates a system account and cgroups", file=sys.stderr)
        return 2
    if args.log_dir:
        args.log_dir.mkdir(parents=True, exist_ok=True)
    # SIGTERM cleans up like Ctrl-C (the hub runs in a session of its own)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load_start = os.getloadavg()[0]

    # the base environment, where the tests build it; hub, runs and papermill all use it
    built = build_environment("base")
    log(f"base environment: {built.env.path} (reused: {built.reused})")

    scratch = Path(tempfile.mkdtemp(prefix="sypipe-bench-"))
    scratch.chmod(0o755)  # the account's home is below it
    settings = {
        "max_concurrent_runs": args.max_concurrent,
        "poll_interval": 1.0,
        "warm_pool_size": args.warm_pool_size,
        "warm_pool_max": args.warm_pool_max,
    }
    shipyard = Shipyard(scratch, settings, args.log_dir, ACCOUNT_PREFIX, CGROUP_PARENT)
    papermill = Papermill(scratch, built.env.python, built.env.bin, args.log_dir)
    results: dict = {
        "settings": {**settings, "environment": str(built.env.path)},
        "repeat": args.repeat,
        "rows": args.rows,
        **{shape: {} for shape in SHAPES},
    }
    peers: dict[str, PapermillPipeline] = {}
    try:
        log("starting a hub with the scheduler service")
        shipyard.start()
        user = PipelineUser(shipyard)
        pipelines = {
            shape: user.create(f"pipelines/{shape}", pipeline_file(shape, args.rows))
            for shape in SHAPES
        }
        peers.update(
            {shape: papermill.pipeline(shape, papermill_plan(shape, args.rows)) for shape in SHAPES}
        )
        # first as the pipeline finds the pool, then with a kernel another job left waiting
        for pool in POOLS:
            if pool == "primed":
                log("priming the warm pool with a run of a job with a webhook trigger")
                prime_pool(shipyard)
            for shape in SHAPES:
                results[shape][pool] = bench_variant(
                    user,
                    peers[shape],
                    pipelines[shape],
                    f"{shape}, pool {pool}",
                    args.rows,
                    args.repeat,
                    primed=pool == "primed",
                )
        results["file_trigger"] = bench_file_trigger(user, args.rows, args.repeat)
        results["load_average"] = {"start": load_start, "end": os.getloadavg()[0]}
        report(results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return 0
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        log(f"cleaning up: hub, {ACCOUNT_PREFIX} account, {CGROUP_PARENT} cgroups")
        for peer in peers.values():
            peer.close()
        shipyard.stop()
        shipyard.remove_accounts_and_cgroups()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
