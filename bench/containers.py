"""Spawn-to-ready and trigger-to-first-cell in podman containers against processes.

What it measures
----------------
Issue #17 asks for the container placement (``c.LocalHost.placement =
"container"``, docs/containers.md) to cost at most 1.5 times the process
placement, for a server's start and for a scheduled run's. Real hubs run side by
side (:class:`tests.hubtools.HubProcess`, Shipyard's embedded config on free
ports), all reading the one-profile file of ``bench/spawn.py`` (1 CPU, 1Gi) with
the same hub user:

- ``container``: ``ContainerProfileSpawner``, the server a podman container of
  the ``base`` environment's image, as its own account, on its own bridge
  network with the per-user firewall; its scheduler service inherits the
  placement (``$SHIPYARD_HOST_CONFIG``) and runs notebooks with
  ``ContainerExecutor``: papermill in a container of the same image, started
  cold (warm starts are not in containers yet);
- ``process``: ``LocalProfileSpawner``, the server a process of its own account
  in a cgroup, on the ``base`` environment's virtualenv; its scheduler runs
  notebooks with ``LocalExecutor`` and its default warm pool (a kernel started
  beforehand per owner and profile);
- ``stock``: JupyterHub's ``SimpleLocalProcessSpawner`` (the ``LocalProcessSpawner``
  that needs no system account per hub user), the server a process of the hub's
  user (root); servers only;
- ``process-cold``: runs only, started once the spawns are done: the process
  hub's setup with the warm pool off (``c.LocalExecutor.warm_pool_size = 0``),
  so that the container's cold start is also set against a cold process.

Servers. Spawn-to-ready, the proxy check that follows it and stop-to-gone are
measured exactly as ``bench/spawn.py`` does (its functions, not a copy): from
``POST /hub/api/users/<u>/server`` to the first ``GET`` that reports the server
ready, polled every 50 ms; the stop from ``DELETE`` to its 204. One warm-up spawn
per hub (accounts, the first network, page cache) is not counted; every round then
spawns, measures and stops once on each hub, rotating which hub goes first so that
drift in the machine's load hits all three alike.

Scheduled runs. Each of the three scheduler hubs gets a job of the bench notebook
of ``bench/scheduler.py`` (:mod:`bench.harness.notebook`, four code cells) with a
webhook trigger, through the scheduler's own client, and each run is timed as
``bench/scheduler.py`` (a) times it (:meth:`bench.harness.shipyard.SchedulerUser.timed_run`):
from the ``POST`` of the webhook to papermill's start of the first cell
(``cells[0].metadata.papermill.start_time``), and to the run's ``ended_at``. Before
each trigger the bench waits until the process hub's warm kernel sits idle (its
refill would compete with any run), as a user's next run would find it. One
uncounted run per hub first: on the container hub it checks that the run's
container exists while the run runs, after the hub's log said that its scheduler
chose ``ContainerExecutor``. The rounds rotate the order as for the servers.

The tables give median, p90, min and max per placement; the ratios of medians
container/process (servers), container/process with its warm pool and
container/process without (runs; target: at most 1.5 each) and container/stock.
``%deploy`` replicas do not run in containers yet, so their row of issue #17 is
printed as not measured rather than timed twice as processes.

Needs root, podman, iptables and the ``base`` image (``shipyard image base``, then
``shipyard image build base``); it checks them first and says what is missing. Run
it from the repository root::

    .venv/bin/python bench/containers.py
    .venv/bin/python bench/containers.py --rounds 20 --json
    .venv/bin/python bench/containers.py --log-dir /tmp/bench-logs   # keep the hub logs

It removes what it made at the end, on Ctrl-C and SIGTERM too: the hubs (and the
podman API service the container hub started), the ``sybench-``/``sybenchc-``/
``sybenchp-`` accounts, the ``shipyard-bench*`` cgroups, and the containers,
networks and firewall rules of the ``shipyard-bench-ctr`` prefix.

Rejected alternatives: a second script per pair (container/process here,
process/stock in bench/spawn.py) would compare numbers taken under different loads;
timing ``podman run`` alone would leave out what the spawner and the executor add
(the network, its firewall, the API round trips) and what a user waits for; the
process runs with the warm pool only would set a cold container against a warm
kernel (the pool saves the kernel's start, which no container run has yet), and
without it only would hide what the process placement gives users today, so both
are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python bench/containers.py`
    sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from bench.harness import log, until  # noqa: E402
from bench.harness.cli import parse_rounds  # noqa: E402
from bench.harness.shipyard import (  # noqa: E402
    UNFINISHED,
    SchedulerUser,
    TimedRun,
    install_notebook,
    scheduler_client,
    scheduler_env,
    wait_for_idle_warm_kernel,
)
from bench.spawn import (  # noqa: E402
    ACCOUNT_PREFIX,
    CGROUP_PARENT,
    METHOD,
    USER,
    Contender,
    one_spawn,
    start_hub,
)
from hub_ext.environments.build import EnvironmentBuilder  # noqa: E402
from hub_ext.environments.catalog import get_environment  # noqa: E402
from hub_ext.environments.images import BASE_TAG, image_tag  # noqa: E402
from hub_ext.host.containers import INSTANCE_LABEL, remove_firewall  # noqa: E402
from hub_ext.host.slugs import account_name  # noqa: E402
from hub_ext.services.scheduler.executors.containers import RUN_LABEL  # noqa: E402
from hub_ext.services.scheduler.executors.warmstart import WarmPoolSettings  # noqa: E402
from tests.hubtools import HubProcess, remove_cgroups, remove_test_accounts  # noqa: E402

TARGET_RATIO = 1.5
#: The container hub's own account prefix and cgroup parent: its account's home is
#: under its own home root, so it must not be the process hub's account
CONTAINER_ACCOUNT_PREFIX = "sybenchc-"
CONTAINER_CGROUP_PARENT = f"{CGROUP_PARENT}-ctr"
#: The same for the hub whose scheduler has no warm pool
COLD_ACCOUNT_PREFIX = "sybenchp-"
COLD_CGROUP_PARENT = f"{CGROUP_PARENT}-cold"
#: Where each hub's scheduler puts its runs' cgroups (``<cgroup parent>-jobs``,
#: tests/hub_config.py); the process hub's warm kernels wait there too
PROCESS_JOBS_PARENT = f"{CGROUP_PARENT}-jobs"
JOBS_PARENTS = [f"{p}-jobs" for p in (CGROUP_PARENT, CONTAINER_CGROUP_PARENT, COLD_CGROUP_PARENT)]
#: Prefix of the container hub's containers, networks and firewall rules (and the value
#: of their INSTANCE_LABEL): nothing else on the machine carries it
NETWORK_PREFIX = "shipyard-bench-ctr"
#: What the scheduler logs when the placement made it choose ContainerExecutor
CONTAINER_EXECUTOR_NOTE = "Placement 'container': runs are papermill in podman containers"
#: The scheduler's settings on every hub: its own defaults for the warm pool, which the
#: process-cold hub turns off; poll_interval as bench/scheduler.py (a webhook's run is
#: claimed at once, not at the next poll)
WARM_POOL = {
    name: WarmPoolSettings.class_traits()[name].default_value
    for name in ("warm_pool_size", "warm_pool_max")
}
SCHEDULER_SETTINGS = {"max_concurrent_runs": 2, "poll_interval": 1.0, **WARM_POOL}
SCHEDULER_LOG_LEVEL = "c.SchedulerService.log_level = 'INFO'\n"
RUN_POLL_S = 0.1
RUN_METHOD = (
    "POST webhook of a job of the 4-cell bench notebook until papermill starts its first cell "
    "(cells[0].metadata.papermill.start_time) and until the run's ended_at; "
    f"GET of the run every {RUN_POLL_S * 1000:.0f} ms meanwhile"
)
NOT_MEASURED = {
    "deploy": "%deploy to first 200 in a container: not measured: replicas do not run in "
    "containers yet",
}


@dataclass
class RunContender:
    """One hub's scheduler, its user's job and the runs timed from their trigger."""

    key: str
    label: str
    hub: HubProcess
    account_prefix: str
    user: SchedulerUser | None = None
    job: dict = field(default_factory=dict)
    runs: list[TimedRun] = field(default_factory=list)


def podman(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)


def missing_prerequisites() -> list[str]:
    """What this machine lacks for the container hub, each with how to get it."""
    if os.geteuid() != 0:
        return ["root: the hubs create accounts and cgroups, and podman runs rootful"]
    lacking = [
        f"{tool} on PATH (apt-get install podman runc iptables debootstrap)"
        for tool in ("podman", "iptables")
        if shutil.which(tool) is None
    ]
    if lacking:
        return lacking
    if podman("image", "exists", BASE_TAG).returncode != 0:
        lacking.append(f"the image {BASE_TAG}: build it with `shipyard image base` (~4 min)")
    tag = image_tag(get_environment("base"))
    if podman("image", "exists", tag).returncode != 0:
        lacking.append(f"the image {tag}: build it with `shipyard image build base`")
    return lacking


def with_scheduler(**settings) -> dict:
    """``start_hub``'s keyword for a hub with the scheduler service and these settings.

    The service logs at INFO (a traitlets application's default is WARN), into the
    hub's log: the container hub's must show which executor it chose.
    """
    settings = {**SCHEDULER_SETTINGS, **settings}
    return {"extra_env": lambda folder: scheduler_env(folder, settings, SCHEDULER_LOG_LEVEL)}


def start_container_hub(contender: Contender, log_dir: Path | None, scratch: list[Path]) -> None:
    """Start the container hub the way :func:`bench.spawn.start_hub` starts the others.

    It differs in its account prefix and cgroup parent, and in the placement, which
    its scheduler service inherits from the hub.
    """
    start_hub(
        contender,
        log_dir,
        scratch,
        account_prefix=CONTAINER_ACCOUNT_PREFIX,
        cgroup_parent=CONTAINER_CGROUP_PARENT,
        config_lines=(
            "c.LocalHost.placement = 'container'\n"
            f"c.ContainerPlacement.network_prefix = {NETWORK_PREFIX!r}\n"
        ),
        **with_scheduler(),
    )


def remove_container_leftovers(socket: Path | None) -> None:
    """Containers, networks, firewall rules and podman API service of this bench.

    The hub removes them itself when it stops cleanly; this is for a hub killed
    after its stop timeout, or a Ctrl-C in the middle of a spawn.
    """
    label = f"label={INSTANCE_LABEL}={NETWORK_PREFIX}"
    names = podman("ps", "-a", "--filter", label, "--format", "{{.Names}}").stdout.split()
    if names:
        podman("rm", "-f", "-t", "0", *names)
    networks = [
        n
        for n in podman("network", "ls", "--format", "{{.Name}}").stdout.split()
        if n.startswith(NETWORK_PREFIX + "-")
    ]
    if networks:
        podman("network", "rm", "-f", *networks)
    for network in networks:
        remove_firewall(network)
    if socket is None:
        return
    # the hub starts the service in a session of its own: a hub killed with SIGKILL
    # leaves it running
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "service" in cmdline and f"unix://{socket}" in cmdline:
            proc.terminate()


def percentile_90(samples: list[float]) -> float:
    if len(samples) < 2:
        return samples[0]
    return statistics.quantiles(samples, n=10, method="inclusive")[-1]


def summary(contender: Contender) -> dict:
    """:meth:`bench.spawn.Contender.summary` plus the 90th percentiles."""
    result = contender.summary()
    result["p90_s"] = percentile_90(contender.samples)
    result["stop_p90_s"] = percentile_90(contender.stops)
    return result


# ------------------------------------------------------------------ scheduled runs


def prepare_runs(runner: RunContender, token: str) -> None:
    """The bench notebook in the user's home, the user's client and a job with a webhook.

    The account exists: the hub's warm-up spawn made it.
    """
    account = pwd.getpwnam(account_name(USER, runner.account_prefix))
    install_notebook(account)
    runner.user = SchedulerUser(scheduler_client(runner.hub, token))
    runner.job = runner.user.create_job(f"containers-{runner.key}")


def check_container_executor(runner: RunContender) -> None:
    """Raise unless the hub's scheduler chose ContainerExecutor and a run is a container.

    One uncounted run, during which ``podman ps`` must show a container with the run's
    id in :data:`~hub_ext.services.scheduler.executors.containers.RUN_LABEL`.
    """
    assert runner.user is not None
    hub_log = runner.hub.log_path.read_text(errors="replace")
    if CONTAINER_EXECUTOR_NOTE not in hub_log:
        raise RuntimeError(
            f"the {runner.key} hub's scheduler did not log {CONTAINER_EXECUTOR_NOTE!r}: "
            f"its runs would not be containers\n{runner.hub.log_tail()}"
        )
    run_id = runner.user.fire_webhook(runner.job)
    seen: list[str] = []

    def container_or_end() -> bool:
        label = f"label={RUN_LABEL}={run_id}"
        seen.extend(podman("ps", "--filter", label, "--format", "{{.Names}}").stdout.split())
        return bool(seen) or runner.user.get_run(run_id)["status"] not in UNFINISHED

    until(container_or_end, 300, 0.2)
    runner.user.check(runner.user.wait_run(run_id, RUN_POLL_S))
    if not seen:
        raise RuntimeError(f"run {run_id} on the {runner.key} hub ran in no container")
    log(f"the {runner.key} hub's run {run_id} ran in the container {seen[0]}")


def run_quiet() -> None:
    """Wait until no run is left and the process hub's warm kernel sits idle.

    A run just ended on the process hub has its warm kernel replaced in the
    background, which would compete with the next run, whichever hub's it is.
    """
    wait_for_idle_warm_kernel(parent=PROCESS_JOBS_PARENT)


def run_summary(runner: RunContender) -> dict:
    """Figures of the runs timed on one hub, in seconds from the trigger."""
    first = [r.first_cell for r in runner.runs]
    ended = [r.ended for r in runner.runs]
    return {
        "n": len(runner.runs),
        "first_cell_median_s": statistics.median(first),
        "first_cell_p90_s": percentile_90(first),
        "first_cell_min_s": min(first),
        "first_cell_max_s": max(first),
        "started_median_s": statistics.median(r.started for r in runner.runs),
        "ended_median_s": statistics.median(ended),
        "ended_p90_s": percentile_90(ended),
        "warm_runs": sum(r.warm for r in runner.runs),
        "first_cell_samples_s": first,
        "ended_samples_s": ended,
    }


# ------------------------------------------------------------------ report


def report(
    contenders: list[Contender], runners: list[RunContender], rounds: int, as_json: bool
) -> None:
    s = {c.key: summary(c) for c in contenders}
    vs_process = s["container"]["median_s"] / s["process"]["median_s"]
    vs_stock = s["container"]["median_s"] / s["stock"]["median_s"]
    stop_vs_process = s["container"]["stop_median_s"] / s["process"]["stop_median_s"]
    print(f"spawn-to-ready latency, {rounds} interleaved rounds on this machine")
    print(f"measured: {METHOD}")
    head = f"{'placement (spawner)':<42}{'median':>9}{'p90':>9}{'min':>9}{'max':>9}{'n':>4}"
    print(head)
    for c in contenders:
        r = s[c.key]
        print(
            f"{c.key + ' (' + c.label + ')':<42}{r['median_s']:>8.3f}s{r['p90_s']:>8.3f}s"
            f"{r['min_s']:>8.3f}s{r['max_s']:>8.3f}s{r['n']:>4}"
        )
    print("stop (DELETE .../server until the hub answers 204: the server is gone)")
    print(f"{'placement (spawner)':<42}{'median':>9}{'p90':>9}")
    for c in contenders:
        r = s[c.key]
        print(
            f"{c.key + ' (' + c.label + ')':<42}{r['stop_median_s']:>8.3f}s{r['stop_p90_s']:>8.3f}s"
        )
    verdict = "within target" if vs_process <= TARGET_RATIO else "ABOVE TARGET"
    print(
        f"ratio container/process of spawn medians: {vs_process:.2f} "
        f"(target: at most {TARGET_RATIO:.1f}, {verdict})"
    )
    print(f"ratio container/stock of spawn medians: {vs_stock:.2f}")
    print(f"ratio container/process of stop medians: {stop_vs_process:.2f}")

    r = {x.key: run_summary(x) for x in runners}
    print()
    print(f"scheduled run, trigger -> first cell starts, {rounds} interleaved rounds")
    print(f"measured: {RUN_METHOD}")
    print(
        f"{'placement (executor)':<42}{'median':>9}{'p90':>9}{'min':>9}{'max':>9}{'n':>4}"
        f"{'warm':>6}"
    )
    for x in runners:
        q = r[x.key]
        print(
            f"{x.key + ' (' + x.label + ')':<42}{q['first_cell_median_s']:>8.3f}s"
            f"{q['first_cell_p90_s']:>8.3f}s{q['first_cell_min_s']:>8.3f}s"
            f"{q['first_cell_max_s']:>8.3f}s{q['n']:>4}{q['warm_runs']:>6}"
        )
    print("trigger -> run started_at (API, queue, claim) and -> run ended_at (outputs written)")
    print(f"{'placement (executor)':<42}{'started':>9}{'ended':>9}{'ended p90':>11}")
    for x in runners:
        q = r[x.key]
        print(
            f"{x.key + ' (' + x.label + ')':<42}{q['started_median_s']:>8.3f}s"
            f"{q['ended_median_s']:>8.3f}s{q['ended_p90_s']:>10.3f}s"
        )
    ratios = {}
    for other in ("process-warm", "process-cold"):
        first = r["container"]["first_cell_median_s"] / r[other]["first_cell_median_s"]
        ended = r["container"]["ended_median_s"] / r[other]["ended_median_s"]
        ratios[other] = {"first_cell": first, "ended": ended}
        verdict = "within target" if first <= TARGET_RATIO else "ABOVE TARGET"
        print(
            f"ratio container/{other} of first-cell medians: {first:.2f} "
            f"(target: at most {TARGET_RATIO:.1f}, {verdict}); of run-ended medians: {ended:.2f}"
        )
    for line in NOT_MEASURED.values():
        print(line)
    if as_json:
        results = {
            "rounds": rounds,
            "method": METHOD,
            **s,
            "ratio_container_process": vs_process,
            "ratio_container_stock": vs_stock,
            "ratio_container_process_stop": stop_vs_process,
            "target_ratio": TARGET_RATIO,
            "within_target": vs_process <= TARGET_RATIO,
            "runs": {
                "method": RUN_METHOD,
                "scheduler_settings": SCHEDULER_SETTINGS,
                **r,
                "ratios_container": ratios,
            },
            "not_measured": NOT_MEASURED,
        }
        print(json.dumps(results, indent=2))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return parse_rounds(
        argv, __doc__.splitlines()[0], "measured spawns and runs per hub", "the hub logs"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    lacking = missing_prerequisites()
    if lacking:
        print("cannot run the container bench; missing:", file=sys.stderr)
        for what in lacking:
            print(f"  - {what}", file=sys.stderr)
        return 2
    if args.log_dir:
        args.log_dir.mkdir(parents=True, exist_ok=True)
    # SIGTERM cleans up like Ctrl-C (the hubs run in sessions of their own)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    contenders = [
        Contender("container", "shipyard-containers", "ContainerProfileSpawner"),
        Contender("process", "shipyard-local", "LocalProfileSpawner"),
        Contender("stock", "simple", "SimpleLocalProcessSpawner"),
    ]
    cold = Contender("process-cold", "shipyard-local", "LocalProfileSpawner")
    scratch: list[Path] = []
    # the process hubs' servers and runs are on the base environment: build it first
    # (a no-op when the lock is unchanged), so that the first spawn does not wait for it
    built = EnvironmentBuilder().build(get_environment("base"))
    print(f"base environment: {built.env.path} (reused: {built.reused})", file=sys.stderr)
    remove_container_leftovers(None)
    try:
        for c in contenders:
            print(f"starting the {c.key} hub ({c.spawner_class})", file=sys.stderr)
            if c.key == "container":
                start_container_hub(c, args.log_dir, scratch)
            elif c.key == "process":
                start_hub(c, args.log_dir, scratch, **with_scheduler())
            else:
                start_hub(c, args.log_dir, scratch)
            print(f"warm-up spawn on the {c.key} hub (not counted)", file=sys.stderr)
            one_spawn(c)
            c.stops.clear()
        for i in range(args.rounds):
            shift = i % len(contenders)
            order = contenders[shift:] + contenders[:shift]
            times = {c.key: one_spawn(c) for c in order}
            for c in contenders:
                c.samples.append(times[c.key])
            print(
                f"round {i + 1}/{args.rounds}: "
                + ", ".join(f"{k} {v:.3f}s" for k, v in times.items()),
                file=sys.stderr,
            )

        # scheduled runs: the container and process hubs, and a process hub without pool
        log("starting the process-cold hub (LocalProfileSpawner, warm pool off): runs only")
        start_hub(
            cold,
            args.log_dir,
            scratch,
            account_prefix=COLD_ACCOUNT_PREFIX,
            cgroup_parent=COLD_CGROUP_PARENT,
            **with_scheduler(warm_pool_size=0),
        )
        log("warm-up spawn on the process-cold hub (makes its account; not counted)")
        one_spawn(cold)
        by_key = {c.key: c for c in [*contenders, cold]}
        runners = [
            RunContender(
                "container",
                "ContainerExecutor, cold",
                by_key["container"].hub,
                CONTAINER_ACCOUNT_PREFIX,
            ),
            RunContender(
                "process-warm",
                f"LocalExecutor, warm pool {WARM_POOL['warm_pool_size']}",
                by_key["process"].hub,
                ACCOUNT_PREFIX,
            ),
            RunContender("process-cold", "LocalExecutor, pool off", cold.hub, COLD_ACCOUNT_PREFIX),
        ]
        tokens = {"container": by_key["container"].token, "process-warm": by_key["process"].token}
        tokens["process-cold"] = cold.token
        for x in runners:
            prepare_runs(x, tokens[x.key])
            log(f"warm-up run on the {x.key} hub (not counted)")
            if x.key == "container":
                check_container_executor(x)
            else:
                x.user.check(x.user.wait_run(x.user.fire_webhook(x.job), RUN_POLL_S))
        for i in range(args.rounds):
            shift = i % len(runners)
            for x in runners[shift:] + runners[:shift]:
                run_quiet()
                x.runs.append(x.user.timed_run(x.job, RUN_POLL_S))
            log(
                f"run round {i + 1}/{args.rounds}: "
                + ", ".join(
                    f"{x.key} {x.runs[-1].first_cell:.3f}s{' (warm)' if x.runs[-1].warm else ''}"
                    for x in runners
                )
            )
        report(contenders, runners, args.rounds, args.json)
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        print(
            "cleaning up: hubs, sybench-/sybenchc-/sybenchp- accounts, shipyard-bench cgroups, "
            f"{NETWORK_PREFIX} containers, networks and firewall rules",
            file=sys.stderr,
        )
        for c in [*contenders, cold]:
            if c.hub is not None:
                c.hub.stop()
        container_hub = contenders[0].hub
        remove_container_leftovers(
            container_hub.data_dir / "podman.sock" if container_hub else None
        )
        for prefix in (ACCOUNT_PREFIX, CONTAINER_ACCOUNT_PREFIX, COLD_ACCOUNT_PREFIX):
            remove_test_accounts(prefix)
        for parent in (CGROUP_PARENT, CONTAINER_CGROUP_PARENT, COLD_CGROUP_PARENT, *JOBS_PARENTS):
            remove_cgroups(parent)
        for path in scratch:
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
