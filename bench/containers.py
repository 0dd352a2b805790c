"""Spawn-to-ready, trigger-to-first-cell and %deploy-to-first-200 in containers and processes.

What it measures
----------------
Issue #17 asks for the container placement (``c.LocalHost.placement =
"container"``, docs/containers.md) to cost at most 1.5 times the process
placement, for a server's start, for a scheduled run's and for a model
deployment's. Real hubs run side by side (:class:`tests.hubtools.HubProcess`,
Shipyard's embedded config on free ports), all reading the one-profile file of
``bench/spawn.py`` (1 CPU, 1Gi) with the same hub user:

- ``container``: ``ContainerProfileSpawner``, the server a podman container of
  the ``base`` environment's image, as its own account, on its own bridge
  network with the per-user firewall. Its services inherit the placement
  (``$SHIPYARD_HOST_CONFIG``): the scheduler runs notebooks with
  ``ContainerExecutor`` (papermill in a container of the same image) and its
  default warm pool (``c.LocalExecutor.warm_pool_size``, 1: a container per owner
  and profile that has started its kernel before its run comes); the deployer
  runs replicas with ``ContainerBackend``, each a container of the
  ``model-server`` image;
- ``process``: ``LocalProfileSpawner``, the server a process of its own account
  in a cgroup, on the ``base`` environment's virtualenv; its scheduler runs
  notebooks with ``LocalExecutor`` and its default warm pool (a kernel started
  beforehand per owner and profile), its deployer replicas with ``LocalBackend``,
  processes on the ``model-server`` virtualenv;
- ``stock``: JupyterHub's ``SimpleLocalProcessSpawner`` (the ``LocalProcessSpawner``
  that needs no system account per hub user), the server a process of the hub's
  user (root); servers only;
- ``process-cold`` and ``container-cold``: runs only, started once the spawns are
  done: the process and the container hub's setups with the warm pool off
  (``c.LocalExecutor.warm_pool_size = 0``, which ``ContainerExecutor`` reads too),
  so that a cold start of each placement is measured beside the warm ones. The
  second container hub has its own prefixes (accounts, cgroups, network and
  containers) and its own podman API service.

The container and process hubs also run the tracking service and the deployer (as
the embedded config does), with a second profile, ``serving``, on the
``model-server`` environment (:data:`bench.harness.deploy.SERVING_PROFILE`); spawns
use the first, the default.

Servers. Spawn-to-ready, the proxy check that follows it and stop-to-gone are
measured exactly as ``bench/spawn.py`` does (its functions, not a copy): from
``POST /hub/api/users/<u>/server`` to the first ``GET`` that reports the server
ready, polled every 50 ms; the stop from ``DELETE`` to its 204. One warm-up spawn
per hub (accounts, the first network, page cache) is not counted; every round then
spawns, measures and stops once on each hub, rotating which hub goes first so that
drift in the machine's load hits all three alike.

Scheduled runs. Each of the four scheduler hubs gets a job of the bench notebook
of ``bench/scheduler.py`` (:mod:`bench.harness.notebook`, four code cells) with a
webhook trigger, through the scheduler's own client, and each run is timed as
``bench/scheduler.py`` (a) times it (:meth:`bench.harness.shipyard.SchedulerUser.timed_run`):
from the ``POST`` of the webhook to papermill's start of the first cell
(``cells[0].metadata.papermill.start_time``), and to the run's ``ended_at``; the
``warm`` column counts the runs whose log says they got a kernel (container)
started beforehand. Before each trigger the bench waits until no run is left and
the warm kernel of the process pool and the warm container of the container pool
sit idle (a refill would compete with any run), as a user's next run would find
them. One uncounted run per hub first: on each container hub it checks that its
scheduler logged that it chose ``ContainerExecutor`` and that the container the
run's log names was one of the hub's in ``podman ps`` while the run ran. The rounds
rotate the order as for the servers.

%deploy. On the container and process hubs the user's model (a scikit-learn
``LogisticRegression`` on 4 features, :func:`bench.harness.deploy.train_model`, as
``bench/serving.py`` uses) is logged and registered in the hub's tracking service
once, as ``%deploy`` does it (:class:`bench.harness.deploy.DeployUser`, the magic's
publisher and deployer client); each round then times, per hub, ``POST
api/deployments`` of it on the ``serving`` profile to the first ``200`` of a one-row
request at ``/services/deployer/models/<user>/<name>/invocations`` through the hub's
proxy, polled every 20 ms, and deletes the deployment, waiting until its replica is
gone. One uncounted warm-up deployment per hub checks where its replica runs: on
the container hub a running container with ``io.shipyard.role=replica`` and the
hub's instance label, on the process hub a model server process of the account.
Publishing is left out of the time: it is the same MLflow work in both placements
(``bench/serving.py`` (e) times the whole magic on one hub).

The tables give median, p90, min and max per placement; the ratios of medians
container/process (servers), container-warm/process-warm, container-cold/
process-cold and container-warm/process-cold (runs), container/process
(deployments; target: at most 1.5 each) and container/stock.

Needs root, podman, iptables and the ``base`` and ``model-server`` images
(``shipyard image base``, then ``shipyard image build base model-server``); it
checks them first and says what is missing. It builds the ``base`` and
``model-server`` virtual environments of the process hubs (a no-op when built).
Run it from the repository root::

    .venv/bin/python bench/containers.py
    .venv/bin/python bench/containers.py --rounds 20 --json
    .venv/bin/python bench/containers.py --log-dir /tmp/bench-logs   # keep the hub logs

It removes what it made at the end, on Ctrl-C and SIGTERM too: the hubs (and the
podman API services the container hubs started), the ``sybench-``/``sybenchc-``/
``sybenchp-``/``sybenchq-`` accounts, the ``shipyard-bench*`` cgroups, and the
containers, networks and firewall rules of the ``shipyard-bench-ctr`` and
``shipyard-bench-ctq`` prefixes.

Rejected alternatives: a second script per pair (container/process here,
process/stock in bench/spawn.py) would compare numbers taken under different loads;
timing ``podman run`` alone would leave out what the spawner, the executor and the
deployer add (the network, its firewall, the API round trips) and what a user waits
for; the runs of each placement with the warm pool only, or without it only, would
hide either what users get by default or what a cold start costs, so both are
printed; timing ``%deploy`` itself in an IPython shell per hub would add the same
publishing to both sides (see :mod:`bench.harness.deploy`).
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python bench/containers.py`
    sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from bench.harness import log, until  # noqa: E402
from bench.harness.cli import parse_rounds  # noqa: E402
from bench.harness.cpu import cpu_seconds  # noqa: E402
from bench.harness.deploy import SERVING_PROFILE, DeployUser, services_up  # noqa: E402
from bench.harness.envs import build_environment  # noqa: E402
from bench.harness.shipyard import (  # noqa: E402
    UNFINISHED,
    SchedulerUser,
    TimedRun,
    cmdline,
    install_notebook,
    scheduler_client,
    scheduler_env,
    wait_for_idle_warm_kernel,
)
from bench.spawn import (  # noqa: E402
    ACCOUNT_PREFIX,
    CGROUP_PARENT,
    METHOD,
    PROFILES,
    USER,
    Contender,
    one_spawn,
    start_hub,
)
from hub_ext.environments.catalog import get_environment  # noqa: E402
from hub_ext.environments.images import BASE_TAG, image_tag  # noqa: E402
from hub_ext.host.containerhost import ROLE_LABEL  # noqa: E402
from hub_ext.host.containers import INSTANCE_LABEL, remove_firewall  # noqa: E402
from hub_ext.host.slugs import account_name  # noqa: E402
from hub_ext.services.scheduler.executors.warmstart import WarmPoolSettings  # noqa: E402
from tests.hubtools import (  # noqa: E402
    HubProcess,
    remove_cgroups,
    remove_test_accounts,
    wait_for,
)

TARGET_RATIO = 1.5
#: The container hub's own account prefix and cgroup parent: its account's home is
#: under its own home root, so it must not be the process hub's account
CONTAINER_ACCOUNT_PREFIX = "sybenchc-"
CONTAINER_CGROUP_PARENT = f"{CGROUP_PARENT}-ctr"
#: The same for the process hub whose scheduler has no warm pool
COLD_ACCOUNT_PREFIX = "sybenchp-"
COLD_CGROUP_PARENT = f"{CGROUP_PARENT}-cold"
#: The same for the container hub whose scheduler has no warm pool
CONTAINER_COLD_ACCOUNT_PREFIX = "sybenchq-"
CONTAINER_COLD_CGROUP_PARENT = f"{CGROUP_PARENT}-ctrcold"
ACCOUNT_PREFIXES = (
    ACCOUNT_PREFIX,
    CONTAINER_ACCOUNT_PREFIX,
    COLD_ACCOUNT_PREFIX,
    CONTAINER_COLD_ACCOUNT_PREFIX,
)
CGROUP_PARENTS = (
    CGROUP_PARENT,
    CONTAINER_CGROUP_PARENT,
    COLD_CGROUP_PARENT,
    CONTAINER_COLD_CGROUP_PARENT,
)
#: Where each hub's scheduler puts its runs' cgroups and its deployer its replicas'
#: (``<cgroup parent>-jobs`` and ``-models``, tests/hub_config.py); the process hub's warm
#: kernels wait in its jobs parent too
PROCESS_JOBS_PARENT = f"{CGROUP_PARENT}-jobs"
SERVICE_PARENTS = [f"{p}{s}" for p in CGROUP_PARENTS for s in ("-jobs", "-models")]
#: Prefix of the container hub's containers, networks and firewall rules (and the value
#: of their INSTANCE_LABEL): nothing else on the machine carries it
NETWORK_PREFIX = "shipyard-bench-ctr"
#: The same for the container hub without warm pool ("-" ends the other's prefix)
COLD_NETWORK_PREFIX = "shipyard-bench-ctq"
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
#: Width of the first column of the run tables ("container-warm (ContainerExecutor, ...)")
RUN_LABEL_WIDTH = 50
RUN_METHOD = (
    "POST webhook of a job of the 4-cell bench notebook until papermill starts its first cell "
    "(cells[0].metadata.papermill.start_time) and until the run's ended_at; "
    f"GET of the run every {RUN_POLL_S * 1000:.0f} ms meanwhile"
)
#: The profile the deployments run in (:data:`bench.harness.deploy.SERVING_PROFILE`, on the
#: ``model-server`` environment), the name its model is registered under (``bench-model``)
SERVING = "serving"
MODEL_NAME = "model"
DEPLOY_METHOD = (
    "POST api/deployments of a registered sklearn model (models:/bench-model/1, published once "
    "per hub as %deploy does, not timed) on the serving profile until the first 200 of a "
    "one-row POST .../services/deployer/models/bench/<name>/invocations through the hub's "
    "proxy (polled every 20 ms); the deployment deleted after each"
)


@dataclass
class RunContender:
    """One hub's scheduler, its user's job and the runs timed from their trigger."""

    key: str
    label: str
    hub: HubProcess
    account_prefix: str
    #: the container hub's network prefix (its containers' INSTANCE_LABEL); "" for processes
    network_prefix: str = ""
    user: SchedulerUser | None = None
    job: dict = field(default_factory=dict)
    runs: list[TimedRun] = field(default_factory=list)


@dataclass
class DeployContender:
    """One hub's deployer, its user's published model and the deployments timed."""

    key: str
    label: str
    hub: HubProcess
    token: str
    account_prefix: str
    user: DeployUser | None = None
    samples: list[float] = field(default_factory=list)


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
    for env in ("base", "model-server"):
        tag = image_tag(get_environment(env))
        if podman("image", "exists", tag).returncode != 0:
            lacking.append(f"the image {tag}: build it with `shipyard image build {env}`")
    return lacking


def with_services(deploy: bool = False, **settings) -> dict:
    """``start_hub``'s keywords for a hub with the scheduler service and these settings.

    The service logs at INFO (a traitlets application's default is WARN), into the
    hub's log: the container hub's must show which executor it chose. With ``deploy``
    the hub also runs the tracking service and the deployer, as the embedded config
    does, and has the ``serving`` profile besides the spawns' default one.
    """
    settings = {**SCHEDULER_SETTINGS, **settings}
    services = {"SHIPYARD_TRACKING": "1", "SHIPYARD_DEPLOYER": "1"} if deploy else {}

    def extra_env(folder: Path) -> dict[str, str]:
        return {**scheduler_env(folder, settings, SCHEDULER_LOG_LEVEL), **services}

    keywords: dict = {"extra_env": extra_env}
    if deploy:
        keywords["profiles"] = PROFILES + SERVING_PROFILE
    return keywords


def start_container_hub(
    contender: Contender,
    log_dir: Path | None,
    scratch: list[Path],
    *,
    account_prefix: str = CONTAINER_ACCOUNT_PREFIX,
    cgroup_parent: str = CONTAINER_CGROUP_PARENT,
    network_prefix: str = NETWORK_PREFIX,
    deploy: bool = True,
    **settings,
) -> None:
    """Start a container hub the way :func:`bench.spawn.start_hub` starts the others.

    It differs in its account prefix and cgroup parent, and in the placement, which
    its scheduler service and deployer inherit from the hub. The second container hub,
    the one without warm pool, has prefixes of its own and runs only the scheduler.
    """
    start_hub(
        contender,
        log_dir,
        scratch,
        account_prefix=account_prefix,
        cgroup_parent=cgroup_parent,
        config_lines=(
            "c.LocalHost.placement = 'container'\n"
            f"c.ContainerPlacement.network_prefix = {network_prefix!r}\n"
        ),
        **with_services(deploy, **settings),
    )


def remove_container_leftovers(socket: Path | None, prefix: str = NETWORK_PREFIX) -> None:
    """Containers, networks, firewall rules and podman API service of one container hub.

    The hub removes them itself when it stops cleanly; this is for a hub killed
    after its stop timeout, or a Ctrl-C in the middle of a spawn.
    """
    label = f"label={INSTANCE_LABEL}={prefix}"
    names = podman("ps", "-a", "--filter", label, "--format", "{{.Names}}").stdout.split()
    if names:
        podman("rm", "-f", "-t", "0", *names)
    networks = [
        n
        for n in podman("network", "ls", "--format", "{{.Name}}").stdout.split()
        if n.startswith(prefix + "-")
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

    One uncounted run: the container its log names ("in container NAME of IMAGE", the
    run's own or a warm one's) must be among those ``podman ps`` showed with the hub's
    :data:`~hub_ext.host.containers.INSTANCE_LABEL` while the run ran.
    """
    assert runner.user is not None
    hub_log = runner.hub.log_path.read_text(errors="replace")
    if CONTAINER_EXECUTOR_NOTE not in hub_log:
        raise RuntimeError(
            f"the {runner.key} hub's scheduler did not log {CONTAINER_EXECUTOR_NOTE!r}: "
            f"its runs would not be containers\n{runner.hub.log_tail()}"
        )
    label = f"label={INSTANCE_LABEL}={runner.network_prefix}"
    seen: set[str] = set()
    run_id = runner.user.fire_webhook(runner.job)

    def ended() -> bool:
        seen.update(podman("ps", "--filter", label, "--format", "{{.Names}}").stdout.split())
        return runner.user.get_run(run_id)["status"] not in UNFINISHED

    until(ended, 300, 0.1)
    runner.user.check(runner.user.wait_run(run_id, RUN_POLL_S))
    named = re.findall(r"in container (\S+) of ", runner.user.log_text(run_id))
    if not named or named[0] not in seen:
        raise RuntimeError(
            f"run {run_id} on the {runner.key} hub ran in no container of the hub: its log "
            f"names {named or 'none'}, podman showed {sorted(seen)}"
        )
    warm = "a warm" if runner.user.used_warm_kernel(run_id) else "its own"
    log(f"the {runner.key} hub's run {run_id} ran in {warm} container, {named[0]}")


def container_processes(prefix: str, role: str | None = None, name: str = "") -> set[int]:
    """The host pids of the running containers of one container hub, and their children.

    ``role`` keeps those with that :data:`~hub_ext.host.containerhost.ROLE_LABEL`,
    ``name`` those whose name starts with it.
    """
    filters = ["--filter", f"label={INSTANCE_LABEL}={prefix}"]
    if role:
        filters += ["--filter", f"label={ROLE_LABEL}={role}"]
    out = podman("ps", *filters, "--format", "{{.Names}} {{.Pid}}").stdout.split("\n")
    pids: set[int] = set()
    for line in out:
        parts = line.split()
        if len(parts) == 2 and parts[0].startswith(name) and parts[1].isdigit():
            try:
                top = psutil.Process(int(parts[1]))
                pids |= {top.pid, *(c.pid for c in top.children(recursive=True))}
            except psutil.Error:
                continue
    return pids


def wait_for_idle_warm_container(prefix: str = NETWORK_PREFIX, timeout: float = 90) -> None:
    """Wait until no run container of the hub is left and a warm one waits, idle.

    As :func:`~bench.harness.shipyard.wait_for_idle_warm_kernel` for processes: the
    warm container's kernel has started and used no CPU for 0.3 s.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if container_processes(prefix, "run", f"{prefix}-") - container_processes(
            prefix, name=f"{prefix}-warm-"
        ):
            time.sleep(0.1)
            continue
        pids = container_processes(prefix, name=f"{prefix}-warm-")
        if any("ipykernel_launcher" in " ".join(cmdline(pid)) for pid in pids):
            before = cpu_seconds(pids)
            time.sleep(0.3)
            if cpu_seconds(pids) - before < 0.005:
                return
        else:
            time.sleep(0.1)
    log(f"no idle warm container after {timeout}s: the next run may start cold")


def run_quiet() -> None:
    """Wait until no run is left and the warm kernel of each pool sits idle.

    A run just ended on the process or the container hub has its warm kernel
    (container) replaced in the background, which would compete with the next run,
    whichever hub's it is.
    """
    wait_for_idle_warm_kernel(parent=PROCESS_JOBS_PARENT)
    wait_for_idle_warm_container()


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


# ------------------------------------------------------------------ %deploy


def replicas_of(deployer: DeployContender) -> set[str]:
    """What runs the replicas of the hub's deployer: container names or process ids.

    On the container hub, the running containers with ``io.shipyard.role=replica``; on
    the process hub, the model servers of the user's account.
    """
    if deployer.key == "container":
        label = f"label={ROLE_LABEL}=replica"
        mine = f"label={INSTANCE_LABEL}={NETWORK_PREFIX}"
        return set(
            podman(
                "ps", "--filter", label, "--filter", mine, "--format", "{{.Names}}"
            ).stdout.split()
        )
    uid = pwd.getpwnam(account_name(USER, deployer.account_prefix)).pw_uid
    return {
        str(p.pid)
        for p in psutil.process_iter(["uids", "cmdline", "status"])
        if p.info["uids"]
        and p.info["uids"].real == uid
        and p.info["status"] != psutil.STATUS_ZOMBIE
        and "hub_ext.runtime.modelserver" in (p.info["cmdline"] or [])
    }


def prepare_deploys(deployer: DeployContender) -> None:
    """Wait for the hub's tracking service and deployer, then publish the model once."""
    wait_for(
        lambda: services_up(deployer.hub.url, deployer.token),
        240,
        0.5,
        f"the {deployer.key} hub's tracking service and deployer",
    )
    deployer.user = DeployUser(deployer.hub, USER, deployer.token)
    uri = deployer.user.publish(MODEL_NAME)
    log(f"the {deployer.key} hub's model: {uri}")


def deploy_once(deployer: DeployContender, name: str) -> float:
    """Deploy, time to first 200, delete, and wait until its replica is gone."""
    assert deployer.user is not None
    seconds = deployer.user.timed_deploy(name, SERVING)
    replicas = replicas_of(deployer)
    if not replicas:
        where = (
            f"no container labelled {ROLE_LABEL}=replica"
            if deployer.key == "container"
            else "no model server process of the account"
        )
        raise RuntimeError(f"{name} on the {deployer.key} hub answered 200, but {where}")
    deployer.user.delete(name)
    if not until(lambda: not replicas_of(deployer), 60, 0.1):
        raise RuntimeError(f"{name}'s replica on the {deployer.key} hub outlived its deletion")
    return seconds


# ------------------------------------------------------------------ report


def deploy_summary(deployer: DeployContender) -> dict:
    """Figures of the deployments timed on one hub, in seconds from the request."""
    t = deployer.samples
    return {
        "n": len(t),
        "median_s": statistics.median(t),
        "p90_s": percentile_90(t),
        "min_s": min(t),
        "max_s": max(t),
        "samples_s": t,
    }


def report(
    contenders: list[Contender],
    runners: list[RunContender],
    deployers: list[DeployContender],
    rounds: int,
    as_json: bool,
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
        f"{'placement (executor)':<{RUN_LABEL_WIDTH}}{'median':>9}{'p90':>9}{'min':>9}{'max':>9}"
        f"{'n':>4}{'warm':>6}"
    )
    for x in runners:
        q = r[x.key]
        print(
            f"{x.key + ' (' + x.label + ')':<{RUN_LABEL_WIDTH}}{q['first_cell_median_s']:>8.3f}s"
            f"{q['first_cell_p90_s']:>8.3f}s{q['first_cell_min_s']:>8.3f}s"
            f"{q['first_cell_max_s']:>8.3f}s{q['n']:>4}{q['warm_runs']:>6}"
        )
    print("trigger -> run started_at (API, queue, claim) and -> run ended_at (outputs written)")
    print(f"{'placement (executor)':<{RUN_LABEL_WIDTH}}{'started':>9}{'ended':>9}{'ended p90':>11}")
    for x in runners:
        q = r[x.key]
        print(
            f"{x.key + ' (' + x.label + ')':<{RUN_LABEL_WIDTH}}{q['started_median_s']:>8.3f}s"
            f"{q['ended_median_s']:>8.3f}s{q['ended_p90_s']:>10.3f}s"
        )
    ratios = {}
    for mine, other in (("container-warm", "process-warm"), ("container-cold", "process-cold")):
        first = r[mine]["first_cell_median_s"] / r[other]["first_cell_median_s"]
        ended = r[mine]["ended_median_s"] / r[other]["ended_median_s"]
        ratios[f"{mine}/{other}"] = {"first_cell": first, "ended": ended}
        verdict = "within target" if first <= TARGET_RATIO else "ABOVE TARGET"
        print(
            f"ratio {mine}/{other} of first-cell medians: {first:.2f} "
            f"(target: at most {TARGET_RATIO:.1f}, {verdict}); of run-ended medians: {ended:.2f}"
        )

    d = {x.key: deploy_summary(x) for x in deployers}
    deploy_ratio = d["container"]["median_s"] / d["process"]["median_s"]
    print()
    print(f"%deploy, request -> first 200 through the proxy, {rounds} interleaved rounds")
    print(f"measured: {DEPLOY_METHOD}")
    print(f"{'placement (backend)':<42}{'median':>9}{'p90':>9}{'min':>9}{'max':>9}{'n':>4}")
    for x in deployers:
        q = d[x.key]
        print(
            f"{x.key + ' (' + x.label + ')':<42}{q['median_s']:>8.3f}s{q['p90_s']:>8.3f}s"
            f"{q['min_s']:>8.3f}s{q['max_s']:>8.3f}s{q['n']:>4}"
        )
    verdict = "within target" if deploy_ratio <= TARGET_RATIO else "ABOVE TARGET"
    print(
        f"ratio container/process of %deploy medians: {deploy_ratio:.2f} "
        f"(target: at most {TARGET_RATIO:.1f}, {verdict})"
    )
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
            "deploy": {
                "method": DEPLOY_METHOD,
                **d,
                "ratio_container_process": deploy_ratio,
                "within_target": deploy_ratio <= TARGET_RATIO,
            },
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
    container_cold = Contender("container-cold", "shipyard-containers", "ContainerProfileSpawner")
    extra = [cold, container_cold]
    scratch: list[Path] = []
    # the process hubs' servers and runs are on the base environment, the process hub's
    # replicas on model-server's: build both first (a no-op when the lock is unchanged),
    # so that the first spawn and the first deployment do not wait for them
    for env in ("base", "model-server"):
        built = build_environment(env)
        log(f"{env} environment: {built.env.path} (reused: {built.reused})")
    for prefix in (NETWORK_PREFIX, COLD_NETWORK_PREFIX):
        remove_container_leftovers(None, prefix)
    try:
        for c in contenders:
            print(f"starting the {c.key} hub ({c.spawner_class})", file=sys.stderr)
            if c.key == "container":
                start_container_hub(c, args.log_dir, scratch)
            elif c.key == "process":
                start_hub(c, args.log_dir, scratch, **with_services(deploy=True))
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

        # scheduled runs: the container and process hubs with their warm pools, and a
        # hub of each placement without
        log("starting the process-cold hub (LocalProfileSpawner, warm pool off): runs only")
        start_hub(
            cold,
            args.log_dir,
            scratch,
            account_prefix=COLD_ACCOUNT_PREFIX,
            cgroup_parent=COLD_CGROUP_PARENT,
            **with_services(warm_pool_size=0),
        )
        log("starting the container-cold hub (ContainerProfileSpawner, warm pool off): runs only")
        start_container_hub(
            container_cold,
            args.log_dir,
            scratch,
            account_prefix=CONTAINER_COLD_ACCOUNT_PREFIX,
            cgroup_parent=CONTAINER_COLD_CGROUP_PARENT,
            network_prefix=COLD_NETWORK_PREFIX,
            deploy=False,
            warm_pool_size=0,
        )
        for c in extra:
            log(f"warm-up spawn on the {c.key} hub (makes its account; not counted)")
            one_spawn(c)
        by_key = {c.key: c for c in [*contenders, *extra]}
        runners = [
            RunContender(
                "container-warm",
                f"ContainerExecutor, warm pool {WARM_POOL['warm_pool_size']}",
                by_key["container"].hub,
                CONTAINER_ACCOUNT_PREFIX,
                NETWORK_PREFIX,
            ),
            RunContender(
                "container-cold",
                "ContainerExecutor, pool off",
                container_cold.hub,
                CONTAINER_COLD_ACCOUNT_PREFIX,
                COLD_NETWORK_PREFIX,
            ),
            RunContender(
                "process-warm",
                f"LocalExecutor, warm pool {WARM_POOL['warm_pool_size']}",
                by_key["process"].hub,
                ACCOUNT_PREFIX,
            ),
            RunContender("process-cold", "LocalExecutor, pool off", cold.hub, COLD_ACCOUNT_PREFIX),
        ]
        tokens = {
            "container-warm": by_key["container"].token,
            "container-cold": container_cold.token,
            "process-warm": by_key["process"].token,
            "process-cold": cold.token,
        }
        for x in runners:
            prepare_runs(x, tokens[x.key])
            log(f"warm-up run on the {x.key} hub (not counted)")
            if x.key.startswith("container"):
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

        # %deploy: the container and process hubs' deployers
        deployers = [
            DeployContender(
                "container",
                "ContainerBackend",
                by_key["container"].hub,
                by_key["container"].token,
                CONTAINER_ACCOUNT_PREFIX,
            ),
            DeployContender(
                "process",
                "LocalBackend",
                by_key["process"].hub,
                by_key["process"].token,
                ACCOUNT_PREFIX,
            ),
        ]
        for x in deployers:
            prepare_deploys(x)
            log(f"warm-up deployment on the {x.key} hub (not counted)")
            seconds = deploy_once(x, "warmup")
            log(f"the {x.key} hub's warm-up deployment answered 200 after {seconds:.2f}s")
        for i in range(args.rounds):
            shift = i % len(deployers)
            for x in deployers[shift:] + deployers[:shift]:
                run_quiet()
                x.samples.append(deploy_once(x, f"bench{i}"))
            log(
                f"deploy round {i + 1}/{args.rounds}: "
                + ", ".join(f"{x.key} {x.samples[-1]:.3f}s" for x in deployers)
            )
        report(contenders, runners, deployers, args.rounds, args.json)
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        print(
            "cleaning up: hubs, sybench-/sybenchc-/sybenchp-/sybenchq- accounts, shipyard-bench "
            f"cgroups, {NETWORK_PREFIX}/{COLD_NETWORK_PREFIX} containers, networks and "
            "firewall rules",
            file=sys.stderr,
        )
        for c in [*contenders, *extra]:
            if c.hub is not None:
                c.hub.stop()
        for hub, prefix in (
            (contenders[0].hub, NETWORK_PREFIX),
            (container_cold.hub, COLD_NETWORK_PREFIX),
        ):
            remove_container_leftovers(hub.data_dir / "podman.sock" if hub else None, prefix)
        for prefix in ACCOUNT_PREFIXES:
            remove_test_accounts(prefix)
        for parent in (*CGROUP_PARENTS, *SERVICE_PARENTS):
            remove_cgroups(parent)
        for path in scratch:
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
