"""Spawn-to-ready of servers in podman containers against processes and JupyterHub's stock spawner.

What it measures
----------------
Issue #17 asks for the container placement (``c.LocalHost.placement =
"container"``, docs/containers.md) to cost at most 1.5 times the process
placement. Three real hubs run side by side (:class:`tests.hubtools.HubProcess`,
Shipyard's embedded config on free ports), all reading the one-profile file of
``bench/spawn.py`` (1 CPU, 1Gi) and starting the same hub user:

- ``container``: ``ContainerProfileSpawner``, the server a podman container of
  the ``base`` environment's image, as its own account, on its own bridge
  network with the per-user firewall;
- ``process``: ``LocalProfileSpawner``, the server a process of its own account
  in a cgroup, on the ``base`` environment's virtualenv;
- ``stock``: JupyterHub's ``SimpleLocalProcessSpawner`` (the ``LocalProcessSpawner``
  that needs no system account per hub user), the server a process of the hub's
  user (root).

Spawn-to-ready, the proxy check that follows it and stop-to-gone are measured
exactly as ``bench/spawn.py`` does (its functions, not a copy): from ``POST
/hub/api/users/<u>/server`` to the first ``GET`` that reports the server ready,
polled every 50 ms; the stop from ``DELETE`` to its 204. One warm-up spawn per hub
(accounts, the first network, page cache) is not counted; every round then spawns,
measures and stops once on each hub, rotating which hub goes first so that drift in
the machine's load hits all three alike. The table gives median, p90, min and max
per placement, the ratio of medians container/process (target: at most 1.5) and
container/stock.

Scheduled runs and ``%deploy`` replicas do not run in containers yet (both
placements run them as processes, docs/containers.md "Not done yet"), so their rows
of issue #17 are printed as not measured rather than timed twice as processes.

Needs root, podman, iptables and the ``base`` image (``shipyard image base``, then
``shipyard image build base``); it checks them first and says what is missing. Run
it from the repository root::

    .venv/bin/python bench/containers.py
    .venv/bin/python bench/containers.py --rounds 20 --json
    .venv/bin/python bench/containers.py --log-dir /tmp/bench-logs   # keep the hub logs

It removes what it made at the end, on Ctrl-C and SIGTERM too: the hubs (and the
podman API service the container hub started), the ``sybench-``/``sybenchc-``
accounts, the ``shipyard-bench``/``shipyard-bench-ctr`` cgroups, and the containers,
networks and firewall rules of the ``shipyard-bench-ctr`` prefix.

Rejected alternatives: a second script per pair (container/process here,
process/stock in bench/spawn.py) would compare numbers taken under different loads;
timing ``podman run`` alone would leave out what the spawner adds (the network, its
firewall, the API round trips) and what a user waits for.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python bench/containers.py`
    sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from bench.spawn import (  # noqa: E402
    ACCOUNT_PREFIX,
    BENCH_CONFIG,
    CGROUP_PARENT,
    METHOD,
    PROFILES,
    USER,
    Contender,
    one_spawn,
    start_hub,
)
from hub_ext.environments.build import EnvironmentBuilder  # noqa: E402
from hub_ext.environments.catalog import get_environment  # noqa: E402
from hub_ext.environments.images import BASE_TAG, image_tag  # noqa: E402
from hub_ext.host.containers import INSTANCE_LABEL, remove_firewall  # noqa: E402
from tests.hubtools import HubProcess, remove_cgroups, remove_test_accounts  # noqa: E402

TARGET_RATIO = 1.5
#: The container hub's own account prefix and cgroup parent: its account's home is
#: under its own home root, so it must not be the process hub's account
CONTAINER_ACCOUNT_PREFIX = "sybenchc-"
CONTAINER_CGROUP_PARENT = f"{CGROUP_PARENT}-ctr"
#: Prefix of the container hub's containers, networks and firewall rules (and the value
#: of their INSTANCE_LABEL): nothing else on the machine carries it
NETWORK_PREFIX = "shipyard-bench-ctr"
NOT_MEASURED = {
    "run": (
        "trigger to first cell of a scheduled run in a container: not measured, "
        "scheduled runs do not run in containers yet (processes in either placement)"
    ),
    "deploy": (
        "%deploy to first 200 in a container: not measured, "
        "model replicas do not run in containers yet (processes in either placement)"
    ),
}


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


def container_config(folder: Path) -> Path:
    """bench/hub_config.py plus the container placement under this bench's prefix."""
    config = folder / "jupyterhub_config.py"
    config.write_text(
        "c = get_config()  # noqa: F821\n"
        f"load_subconfig({str(BENCH_CONFIG)!r})  # noqa: F821\n"
        "c.LocalHost.placement = 'container'\n"
        f"c.ContainerPlacement.network_prefix = {NETWORK_PREFIX!r}\n"
    )
    return config


def start_container_hub(contender: Contender, log_dir: Path | None, scratch: list[Path]) -> None:
    """Start the container hub the way :func:`bench.spawn.start_hub` starts the others.

    It differs only in its config file and its account prefix and cgroup parent,
    which ``start_hub`` fixes.
    """
    data = Path(tempfile.mkdtemp(prefix=f"sybench-{contender.key}-"))
    homes = Path(tempfile.mkdtemp(prefix=f"sybench-{contender.key}-homes-"))
    homes.chmod(0o755)  # the account must reach its home; mkdtemp makes 0700
    scratch += [data, homes]
    (data / "profiles.yaml").write_text(PROFILES)
    contender.hub = HubProcess(
        data_dir=data / "data",
        profiles_file=data / "profiles.yaml",
        account_prefix=CONTAINER_ACCOUNT_PREFIX,
        cgroup_parent=CONTAINER_CGROUP_PARENT,
        home_root=homes,
        spawner_class=contender.spawner_class,
        log_path=log_dir / f"{contender.key}-hub.log" if log_dir else None,
        config_file=container_config(data),
    )
    contender.hub.start()
    contender.token = contender.hub.create_user(USER)


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


def report(contenders: list[Contender], rounds: int, as_json: bool) -> None:
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
            "not_measured": NOT_MEASURED,
        }
        print(json.dumps(results, indent=2))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="measured spawns per hub (10)")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument("--log-dir", type=Path, help="keep the three hub logs in this directory")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


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
    scratch: list[Path] = []
    # the process hub's servers run on the base environment: build it first (a no-op
    # when the lock is unchanged), so that its first spawn does not wait for it
    built = EnvironmentBuilder().build(get_environment("base"))
    print(f"base environment: {built.env.path} (reused: {built.reused})", file=sys.stderr)
    remove_container_leftovers(None)
    try:
        for c in contenders:
            print(f"starting the {c.key} hub ({c.spawner_class})", file=sys.stderr)
            if c.key == "container":
                start_container_hub(c, args.log_dir, scratch)
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
        report(contenders, args.rounds, args.json)
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        print(
            "cleaning up: hubs, sybench-/sybenchc- accounts, shipyard-bench cgroups, "
            f"{NETWORK_PREFIX} containers, networks and firewall rules",
            file=sys.stderr,
        )
        for c in contenders:
            if c.hub is not None:
                c.hub.stop()
        container_hub = contenders[0].hub
        remove_container_leftovers(
            container_hub.data_dir / "podman.sock" if container_hub else None
        )
        remove_test_accounts(ACCOUNT_PREFIX)
        remove_test_accounts(CONTAINER_ACCOUNT_PREFIX)
        remove_cgroups(CGROUP_PARENT)
        remove_cgroups(CONTAINER_CGROUP_PARENT)
        for path in scratch:
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
