"""Spawn-to-ready latency of Shipyard's LocalProfileSpawner against JupyterHub's stock spawner.

What it measures
----------------
Two real hubs run side by side (:class:`tests.hubtools.HubProcess`, Shipyard's
embedded config on free ports): one with ``LocalProfileSpawner``
(``shipyard-local``), one with JupyterHub's ``SimpleLocalProcessSpawner``
(``simple``). Both read the same one-profile file (1 CPU, 1Gi) and start the
same hub user; the Shipyard server runs as its own system account inside a
cgroup, the stock one as the hub's user (root) with its home under a temporary
0755 home root. Both start ``jupyterhub-singleuser`` from this virtualenv.

*Spawn-to-ready* is the time from sending ``POST /hub/api/users/<u>/server``
to the first ``GET /hub/api/users/<u>`` that reports the server ready, polled
every 50 ms (the POST itself returns early only for spawns slower than the
hub's 10 s ``slow_spawn_timeout``). Afterwards, and outside the timing, each
server must answer ``GET /user/<u>/api/status`` through the proxy with the
user's token.

One warm-up spawn per hub (it creates the system account) is not counted.
Then every round spawns, measures and stops once on each hub, alternating
which hub goes first, so that drift in machine load hits both alike. The
result is a table of median, min, max and n per spawner and the ratio of the
medians (target: at most 1.15).

Run it from the repository root, as root (it creates ``sybench-`` accounts and
``shipyard-bench`` cgroups, and removes them at the end, on Ctrl-C too)::

    make bench                                   # .venv/bin/python bench/spawn.py
    .venv/bin/python bench/spawn.py --rounds 20 --json
    .venv/bin/python bench/spawn.py --log-dir /tmp/bench-logs   # keep both hub logs

Rejected alternatives: the progress event stream would time the same moment
with one more moving part (SSE parsing), and sequential blocks (all Shipyard
spawns, then all stock ones) mix the spawner's cost with the machine's drift.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python bench/spawn.py`
    sys.path.insert(0, str(REPO))

import requests  # noqa: E402

from bench.harness.cli import parse_rounds  # noqa: E402
from bench.harness.envs import build_environment  # noqa: E402
from tests.hubtools import HubProcess, remove_cgroups, remove_test_accounts, wait_for  # noqa: E402

ACCOUNT_PREFIX = "sybench-"
CGROUP_PARENT = "shipyard-bench"
USER = "bench"
POLL_S = 0.05
TARGET_RATIO = 1.15
PROFILES = """
profiles:
  - slug: bench
    display_name: Bench
    default: true
    cpu_limit: 1
    mem_limit: 1Gi
"""
METHOD = (
    f"POST /users/{USER}/server until GET /users/{USER} reports ready "
    f"(polled every {POLL_S * 1000:.0f} ms); proxy check afterwards, not timed"
)

# The stock spawner runs servers as root, which needs --allow-root: bench/hub_config.py
# is tests/hub_config.py plus that flag.
BENCH_CONFIG = REPO / "bench" / "hub_config.py"


@dataclass
class Contender:
    """One hub and its spawn-to-ready samples."""

    key: str
    spawner_class: str
    label: str
    hub: HubProcess | None = None
    token: str = ""
    samples: list[float] = field(default_factory=list)
    stops: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "spawner_class": self.spawner_class,
            "spawner": self.label,
            "n": len(self.samples),
            "median_s": statistics.median(self.samples),
            "min_s": min(self.samples),
            "max_s": max(self.samples),
            "samples_s": self.samples,
            "stop_median_s": statistics.median(self.stops) if self.stops else None,
            "stop_samples_s": self.stops,
        }


def start_hub(
    contender: Contender,
    log_dir: Path | None,
    scratch: list[Path],
    *,
    account_prefix: str = ACCOUNT_PREFIX,
    cgroup_parent: str = CGROUP_PARENT,
    config_lines: str = "",
    extra_env: Callable[[Path], dict[str, str]] | None = None,
    profiles: str = PROFILES,
) -> None:
    """Start the contender's hub on :data:`PROFILES` and make the hub user :data:`USER`.

    The keywords are for ``bench/containers.py``, whose hubs add to this one: a hub
    beside another needs its own ``account_prefix`` (its account's home is under its
    own home root) and ``cgroup_parent``; ``config_lines`` are appended to a config
    file that loads :data:`BENCH_CONFIG`; ``extra_env`` is called with the hub's
    scratch folder and gives the hub's extra environment (its services); ``profiles``
    replaces :data:`PROFILES` (its first profile stays the default, which spawns use).
    """
    data = Path(tempfile.mkdtemp(prefix=f"sybench-{contender.key}-"))
    homes = Path(tempfile.mkdtemp(prefix=f"sybench-{contender.key}-homes-"))
    homes.chmod(0o755)  # the account must reach its home; mkdtemp makes 0700
    scratch += [data, homes]
    (data / "profiles.yaml").write_text(profiles)
    config = BENCH_CONFIG
    if config_lines:
        config = data / "jupyterhub_config.py"
        config.write_text(
            "c = get_config()  # noqa: F821\n"
            f"load_subconfig({str(BENCH_CONFIG)!r})  # noqa: F821\n" + config_lines
        )
    contender.hub = HubProcess(
        data_dir=data / "data",
        profiles_file=data / "profiles.yaml",
        account_prefix=account_prefix,
        cgroup_parent=cgroup_parent,
        home_root=homes,
        extra_env=extra_env(data) if extra_env else {},
        spawner_class=contender.spawner_class,
        log_path=log_dir / f"{contender.key}-hub.log" if log_dir else None,
        config_file=config,
    )
    contender.hub.start()
    contender.token = contender.hub.create_user(USER)


def spawn_to_ready(hub: HubProcess, timeout: float = 90) -> float:
    """Seconds from the spawn request to the hub reporting the server ready."""
    started = time.perf_counter()
    r = hub.api("POST", f"/users/{USER}/server")
    assert r.status_code in (201, 202), f"spawn refused: {r.status_code} {r.text}"

    def ready() -> bool:
        server = hub.api("GET", f"/users/{USER}").json()["servers"].get("")
        if server is None:
            raise RuntimeError(f"the server stopped while starting:\n{hub.log_tail()}")
        return server["ready"]

    wait_for(ready, timeout, POLL_S, "the server to be ready")
    return time.perf_counter() - started


def check_proxy(contender: Contender) -> None:
    url = contender.hub.server_url(USER) + "api/status"
    r = requests.get(url, headers={"Authorization": f"token {contender.token}"}, timeout=30)
    assert r.status_code == 200, f"{contender.label}: GET {url} answered {r.status_code}"


def stop_to_gone(hub: HubProcess) -> float:
    """Seconds from the stop request to the hub answering that the server is gone.

    JupyterHub's ``DELETE`` waits for the spawner's stop (up to its 10 s
    ``slow_stop_timeout``) and answers 204 once the server is stopped.
    """
    started = time.perf_counter()
    r = hub.api("DELETE", f"/users/{USER}/server")
    assert r.status_code == 204, f"the stop took over 10 s: {r.status_code} {r.text}"
    return time.perf_counter() - started


def one_spawn(contender: Contender) -> float:
    seconds = spawn_to_ready(contender.hub)
    check_proxy(contender)
    contender.stops.append(stop_to_gone(contender.hub))
    return seconds


def report(contenders: list[Contender], rounds: int, as_json: bool) -> None:
    shipyard, stock = (c.summary() for c in contenders)
    ratio = shipyard["median_s"] / stock["median_s"]
    print(f"spawn-to-ready latency, {rounds} interleaved rounds on this machine")
    print(f"measured: {METHOD}")
    print(f"{'spawner':<36}{'median':>9}{'min':>9}{'max':>9}{'n':>5}")
    for c, s in zip(contenders, (shipyard, stock), strict=True):
        print(
            f"{c.key + ' (' + c.label + ')':<36}"
            f"{s['median_s']:>8.3f}s{s['min_s']:>8.3f}s{s['max_s']:>8.3f}s{s['n']:>5}"
        )
    print("stop (DELETE .../server until the hub answers 204: the server's process is gone)")
    for c, s in zip(contenders, (shipyard, stock), strict=True):
        print(f"{c.key + ' (' + c.label + ')':<36}{s['stop_median_s']:>8.3f}s median")
    verdict = "within target" if ratio <= TARGET_RATIO else "ABOVE TARGET"
    print(f"ratio (shipyard/stock) of medians: {ratio:.2f}")
    print(f"target: at most {TARGET_RATIO:.2f} ({verdict})")
    if as_json:
        results = {
            "rounds": rounds,
            "method": METHOD,
            "shipyard": shipyard,
            "stock": stock,
            "ratio_of_medians": ratio,
            "target_ratio": TARGET_RATIO,
        }
        print(json.dumps(results, indent=2))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return parse_rounds(
        argv, __doc__.splitlines()[0], "measured spawns per spawner", "both hub logs"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.log_dir:
        args.log_dir.mkdir(parents=True, exist_ok=True)
    # SIGTERM cleans up like Ctrl-C (the hubs run in sessions of their own)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    contenders = [
        Contender("shipyard", "shipyard-local", "LocalProfileSpawner"),
        Contender("stock", "simple", "SimpleLocalProcessSpawner"),
    ]
    scratch: list[Path] = []
    # Shipyard's servers run on the profile's environment: build it first (a no-op
    # when the lock is unchanged), so the first spawn does not wait for it
    built = build_environment("base")
    print(f"base environment: {built.env.path} (reused: {built.reused})", file=sys.stderr)
    try:
        for c in contenders:
            print(f"starting the {c.key} hub ({c.spawner_class})", file=sys.stderr)
            start_hub(c, args.log_dir, scratch)
            print(f"warm-up spawn on the {c.key} hub (not counted)", file=sys.stderr)
            one_spawn(c)
            c.stops.clear()
        for i in range(args.rounds):
            order = contenders if i % 2 == 0 else contenders[::-1]
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
        print("cleaning up: hubs, sybench- accounts, shipyard-bench cgroups", file=sys.stderr)
        for c in contenders:
            if c.hub is not None:
                c.hub.stop()
        remove_test_accounts(ACCOUNT_PREFIX)
        remove_cgroups(CGROUP_PARENT)
        for path in scratch:
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
