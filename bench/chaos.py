"""Failure drills: failed model requests and seconds of outage while parts of Shipyard are killed.

One real hub (:class:`tests.hubtools.HubProcess`: ``python -m hub_ext.hub`` on the
embedded config, what ``shipyard up`` runs) with the tracking service, the scheduler,
the deployer, the secrets service and the audit service (``--services``), its real
configurable-http-proxy in front, ``sychaos-`` accounts and ``shipyard-bench-chaos``
cgroups. One deployment, ``chaos/drill``: a scikit-learn model saved by MLflow
(``y = 2x + 1``) on the ``model-server`` environment, run by the deployer's
LocalBackend with its default settings.

The load
--------
From the first drill to the last, an open-loop load of ``--rate`` (40) one-row
``POST /services/deployer/models/chaos/drill/invocations`` per second goes through the
hub's public URL (the proxy) with the user's token: a clock thread hands each request,
at its due time, to a pool of threads, so a slow or hung answer never delays the next
request. Every request is counted: *ok* is a 200 with the model's prediction, *failed*
is anything else (another status, a connection error, no answer in
``--request-timeout`` s). Latency is from the request's due time to its answer, so time
spent waiting for a free thread counts too.

The drills
----------
Each drill starts once the system is healthy (the hub API, every service's ``/health``
through the proxy, the deployment's replicas ready, and the last second of requests
answered); it waits on those states with a timeout, never for a fixed time. A drill's
window runs from 1 s before the signal until the drill's *recovery* (below) plus the
first second of answers after it, all ok. For the requests due in that window it reports:
requests sent, failed (and why), *outage* = from the due time of the first failed
request to that of the last one (0 with none), the slowest answer, and the seconds from
the signal to the recovery.

1. ``kill -9`` of one replica of a 2-replica deployment; recovered: a new replica
   process serves beside the other (the deployer reports 2 ready);
2. SIGTERM of one of 2 replicas; same;
3. ``kill -9`` of the only replica of a 1-replica deployment; same, with 1;
4. ``kill -9`` of the deployer service process; recovered: a new deployer answers
   ``/services/deployer/health`` through the proxy and reports the replicas ready;
   meanwhile its front (``hub_ext/services/deployer/front.py``) routes the model
   requests alone;
4b. ``kill -9`` of the deployer's front (the process on the deployer's port that routes
   model requests); recovered: the deployer has started a new front on the same socket,
   which answers ``/health`` and reports the replicas ready;
5. ``kill -9`` of configurable-http-proxy (JupyterHub checks its proxy every 5 s and
   starts a new one); recovered: a new proxy process routes to the hub and the
   deployer. If none within ``--recovery-timeout``, the drill says so and the hub is
   restarted (Ctrl-C, start), as an operator would, to go on;
6. ``kill -9`` of the hub process only (not its process group): for ``--hub-down`` s
   (10) the bench only watches (which services still answer, whether the models do);
   then, as nothing here restarts a hub, it starts it again as an operator would
   (same data folder, same ports) and waits until everything is healthy. The drill
   reports the same numbers, which services were still answering while the hub was
   down, which service processes were the same before and after, and the seconds from
   the restart to healthy.

And for each managed service (drill 4 is the deployer's): ``kill -9`` of the service
process (found by its command, and by its data folder or its address in its
environment, so an adopted service is found too), and the seconds from the kill to its
``/services/<name>/health`` answering 200 through the proxy from a new process (tracking: its ``/health`` route,
which is MLflow's own, with the user's token). The model load runs through these too,
and their rows are in the drill table.

The drills run in the order 3, 1, 2, 4, 4b, 5, the other services, 6 (one scale-up, and
the drill that restarts the hub last), and are printed in the order above.

The hub, its services and the deployment are :mod:`bench.harness.platform` (the deployment
made and read through the deployer's own client), the load :mod:`bench.harness.load`; this
module holds the drills, the report and :func:`main`.

Run it from the repository root, as root (it creates accounts and cgroups, and removes
them at the end, on Ctrl-C and SIGTERM too)::

    make bench                                  # runs it among the others
    .venv/bin/python bench/chaos.py
    .venv/bin/python bench/chaos.py --rate 40 --json /tmp/chaos.json --log-dir /tmp/chaos-logs

Its time is bounded: every wait has a timeout, and a drill that would start after
``--budget`` seconds (default 300) is skipped and reported as such. On an idle
machine the run takes 2 to 3 minutes, most of it the hub's start, the deployment's and
the restarts. Numbers from a loaded machine (other work on the same cores, as on a
shared 2-core test machine) are pessimistic: restarts take longer there, and so do
outages.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/chaos.py`: the repository's packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402

from bench.harness import REPO, until  # noqa: E402
from bench.harness import log as _log  # noqa: E402
from bench.harness.load import Answer, Load  # noqa: E402
from bench.harness.platform import (  # noqa: E402
    ACCOUNT_PREFIX,
    ALL_SERVICES,
    CGROUP_PARENT,
    Platform,
    alive,
    make_model,
)
from tests.hubtools import remove_test_accounts  # noqa: E402

#: Seconds of the window before the signal (requests in flight at the signal count).
BEFORE = 1.0
#: Seconds of answers, all ok, that end a drill's window after its recovery.
SETTLE = 1.0
NOTE = (
    "numbers from a loaded machine are pessimistic: restarts and outages take longer "
    "when other work shares the cores"
)
#: progress with the time of day, to read beside the hub's log
log = functools.partial(_log, clock=True)


# ------------------------------------------------------------------ drills


@dataclass
class Result:
    key: str
    label: str
    sent: int = 0
    failed: int = 0
    outage_s: float = 0.0
    max_latency_s: float = 0.0
    recovered_s: float | None = None  # from the signal to the drill's recovery
    why: dict[str, int] = field(default_factory=dict)
    note: str = ""
    skipped: str = ""
    extra: dict = field(default_factory=dict)

    def take(self, answers: list[Answer]) -> None:
        self.sent = len(answers)
        failed = [a for a in answers if not a.ok]
        self.failed = len(failed)
        self.outage_s = (failed[-1].due - failed[0].due) if failed else 0.0
        self.max_latency_s = max((a.done - a.due for a in answers), default=0.0)
        self.why = dict(collections.Counter(a.what for a in failed).most_common())


class Drills:
    def __init__(self, platform: Platform, load: Load, args):
        self.p, self.load, self.args = platform, load, args
        self.results: dict[str, Result] = {}
        self.replicas = 0
        self.deadline = time.monotonic() + args.budget
        self.broken = ""  # set when the platform could not be brought back: no more drills

    def wait_healthy(self, what: str) -> bool:
        ok = until(
            lambda: self.p.healthy(self.replicas) and self.load.recent_ok(),
            self.args.recovery_timeout,
            0.2,
        )
        if not ok:
            log(f"not healthy {self.args.recovery_timeout:.0f} s after {what}")
        return ok

    def run(self, key: str, label: str, kill, recovered, after=None) -> Result:
        try:
            return self._run(key, label, kill, recovered, after)
        except Exception as e:  # noqa: BLE001 - one drill's error is reported, the rest run
            log(f"  the drill {label!r} failed: {e!r}")
            result = self.results[key]
            result.skipped = f"the bench's drill failed: {e!r}"[:300]
            return result

    def _run(self, key: str, label: str, kill, recovered, after=None) -> Result:
        """One drill: wait healthy, ``kill()``, wait for ``recovered()``, settle, count.

        ``kill`` returns the victim's pid (None: nothing to kill, the drill is skipped);
        ``after``, when given, runs after the recovery wait (the hub drill's restart) and
        returns whether the platform is back.
        """
        result = self.results[key] = Result(key, label)
        if self.broken:
            result.skipped = self.broken
            return result
        if time.monotonic() > self.deadline:
            result.skipped = f"time budget of {self.args.budget:.0f} s spent"
            return result
        if not self.wait_healthy(f"the drill before {label!r}"):
            result.skipped = "the platform was not healthy before it"
            return result
        log(f"drill: {label}")
        signalled = time.monotonic()
        victim = kill()
        if victim is None:
            result.skipped = "no process to kill was found"
            return result
        result.extra["victim_pid"] = victim
        if until(lambda: recovered(victim), self.args.recovery_timeout):
            result.recovered_s = time.monotonic() - signalled
        else:
            result.note = f"no recovery within {self.args.recovery_timeout:.0f} s"
        if after is not None:
            after(result, victim, signalled)
        back = time.monotonic()
        if not until(lambda: self.load.settled(back, SETTLE), self.args.recovery_timeout):
            result.note = (result.note + "; " if result.note else "") + (
                f"requests still failing {self.args.recovery_timeout:.0f} s after the recovery"
            )
        result.take(self.load.window(signalled - BEFORE, time.monotonic()))
        log(
            f"  {result.failed} of {result.sent} failed, outage {result.outage_s:.2f} s, "
            f"recovered after {fmt(result.recovered_s)} s {result.note}"
        )
        return result

    # ------------------------------------------------------------ the drills

    def replica(self, key: str, label: str, sig: signal.Signals) -> Result:
        before: set[int] = set()

        def kill():
            before.update(self.p.replica_pids())
            if not before:
                return None
            victim = min(before)
            os.kill(victim, sig)
            return victim

        def recovered(victim):
            pids = self.p.replica_pids()
            return (
                not alive(victim)
                and len(pids) == self.replicas
                and pids - before
                and self.p.ready_replicas() == self.replicas
            )

        return self.run(key, label, kill, recovered)

    def service(self, name: str, key: str | None = None, label: str | None = None) -> Result:
        def kill():
            pid = self.p.service_pid(name)
            if pid:
                os.kill(pid, signal.SIGKILL)
            return pid

        def recovered(victim):
            pid = self.p.service_pid(name)
            return (
                pid not in (None, victim)
                and self.p.service_healthy(name)
                and (name != "deployer" or self.p.ready_replicas() == self.replicas)
            )

        result = self.run(
            key or f"service-{name}", label or f"kill -9 {name} service", kill, recovered
        )
        if result.recovered_s is None and not result.skipped:
            self.recover_by_restart(result)
        return result

    def front(self) -> Result:
        def kill():
            pid = self.p.front_pid()
            if pid:
                os.kill(pid, signal.SIGKILL)
            return pid

        def recovered(victim):
            pid = self.p.front_pid()
            return (
                pid not in (None, victim)
                and self.p.service_healthy("deployer")
                and self.p.ready_replicas() == self.replicas
            )

        result = self.run("front", "kill -9 the deployer's front", kill, recovered)
        if result.recovered_s is None and not result.skipped:
            self.recover_by_restart(result)
        return result

    def proxy(self) -> Result:
        def kill():
            pid = self.p.proxy_pid()
            if pid:
                os.kill(pid, signal.SIGKILL)
            return pid

        def recovered(victim):
            pid = self.p.proxy_pid()
            return (
                pid not in (None, victim)
                and self.p.hub_answers()
                and self.p.service_healthy("deployer")
            )

        result = self.run("proxy", "kill -9 configurable-http-proxy", kill, recovered)
        if result.recovered_s is None and not result.skipped:
            self.recover_by_restart(result)
        return result

    def hub(self) -> Result:
        services_before: dict[str, int | None] = {}
        replicas_before: set[int] = set()

        def kill():
            services_before.update({n: self.p.service_pid(n) for n in self.p.services})
            replicas_before.update(self.p.replica_pids())
            pid = self.p.hub.proc.pid
            os.kill(pid, signal.SIGKILL)  # the hub alone, not its process group
            self.p.hub.proc.wait()
            return pid

        def recovered(victim):  # a hub that came back by itself (nothing here restarts one)
            return self.p.hub_answers() and self.p.healthy(self.replicas)

        def after(result: Result, victim: int, signalled: float) -> None:
            if result.recovered_s is not None:
                return  # a hub came back by itself: nothing for the operator to do
            down = {
                "proxy": self.p.proxy_pid() is not None,
                **{n: self.p.service_healthy(n) for n in self.p.services},
                "model": self.load.recent_ok(),
                "replicas_alive": sorted(p for p in replicas_before if alive(p)),
            }
            result.extra["while_hub_down"] = down
            log(f"  after {self.args.hub_down:.0f} s with the hub down: {down}")
            restarted = time.monotonic()
            try:
                self.p.restart_hub()
            except Exception as e:  # noqa: BLE001 - reported, then the bench stops its drills
                self.broken = result.note = f"the hub did not start again: {e}"[:300]
                return
            if until(lambda: self.p.healthy(self.replicas), self.args.recovery_timeout, 0.1):
                now = time.monotonic()
                result.recovered_s = now - signalled
                result.extra["restart_to_healthy_s"] = now - restarted
                result.note = f"restarted by the bench {restarted - signalled:.1f} s after the kill"
            else:
                self.broken = result.note = (
                    f"not healthy {self.args.recovery_timeout:.0f} s after the hub's restart"
                )
            after_pids = {n: self.p.service_pid(n) for n in self.p.services}
            result.extra["services_kept"] = sorted(
                n
                for n in self.p.services
                if services_before[n] and services_before[n] == after_pids[n]
            )
            result.extra["replicas_kept"] = len(replicas_before & self.p.replica_pids())

        # the watch: recovered() only if a hub came back by itself within --hub-down
        timeout, self.args.recovery_timeout = self.args.recovery_timeout, self.args.hub_down
        try:
            return self.run("hub", "kill -9 hub process", kill, recovered, after)
        finally:
            self.args.recovery_timeout = timeout

    def recover_by_restart(self, result: Result) -> None:
        """A part that did not come back: restart the hub, as an operator would, to go on."""
        log("  restarting the hub to go on")
        try:
            self.p.hub.stop()
            self.p.restart_hub()
            if not until(lambda: self.p.healthy(self.replicas), self.args.recovery_timeout, 0.1):
                raise TimeoutError("not healthy after the restart")
            result.note += "; the bench restarted the hub to go on"
        except Exception as e:  # noqa: BLE001 - reported, then the bench stops its drills
            self.broken = f"the hub did not come back after {result.label!r}: {e}"[:300]


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


# ------------------------------------------------------------------ report

ORDER = [
    "replica-kill-2",
    "replica-term-2",
    "replica-kill-1",
    "deployer",
    "front",
    "proxy",
    "hub",
]


def report(results: dict[str, Result], services: list[str], header: str) -> None:
    print(header)
    print(NOTE)
    print()
    keys = ORDER + [k for k in results if k not in ORDER]
    print(f"{'drill':<40}{'sent':>6}{'failed':>8}{'outage s':>10}{'max lat s':>11}{'back s':>8}")
    for key in keys:
        r = results.get(key)
        if r is None:
            continue
        if r.skipped:
            print(f"{r.label:<40}  skipped: {r.skipped}")
            continue
        print(
            f"{r.label:<40}{r.sent:>6}{r.failed:>8}{r.outage_s:>10.2f}"
            f"{r.max_latency_s:>11.2f}{fmt(r.recovered_s):>8}"
        )
        if r.why:
            print(f"{'':<6}failed: " + ", ".join(f"{n} x {w}" for w, n in r.why.items()))
        if r.note:
            print(f"{'':<6}{r.note}")
        if r.key == "hub":
            down = r.extra.get("while_hub_down", {})
            answering = [k for k, v in down.items() if v is True]
            print(f"{'':<6}answering while the hub was down: {', '.join(answering) or 'nothing'}")
            if "restart_to_healthy_s" in r.extra:
                print(f"{'':<6}restart to healthy: {r.extra['restart_to_healthy_s']:.2f} s; "
                      f"service processes kept: {', '.join(r.extra['services_kept']) or 'none'}; "
                      f"replicas kept: {r.extra['replicas_kept']}")  # fmt: skip
    print()
    print(f"{'service':<14}{'kill -9 to /health 200 (s)':>28}")
    for name in services:
        r = results.get("deployer" if name == "deployer" else f"service-{name}")
        if r is None:
            continue
        if r.skipped:
            value = f"skipped: {r.skipped}"
        elif r.recovered_s is None:
            value = r.note
        else:
            value = fmt(r.recovered_s)
        print(f"{name:<14}{value:>28}")


def commit() -> str:
    def git(*args):
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + (
        "+uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else ""
    )


# ------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=40.0, help="model requests per second (40)")
    p.add_argument(
        "--services",
        default=",".join(ALL_SERVICES),
        help=f"managed services to run and kill (default {','.join(ALL_SERVICES)}; the "
        "deployer is always on)",
    )
    p.add_argument("--hub-down", type=float, default=10.0, help="seconds the hub stays down (10)")
    p.add_argument(
        "--recovery-timeout", type=float, default=90.0, help="longest wait for a recovery (90)"
    )
    p.add_argument("--request-timeout", type=float, default=30.0, help="per request (30)")
    p.add_argument(
        "--budget", type=float, default=300.0, help="no drill starts after this many seconds"
    )
    p.add_argument("--json", metavar="PATH", help="also write the numbers as JSON to PATH")
    p.add_argument(
        "--log-dir", type=Path, help="keep the hub's log and the services' logs in this folder"
    )
    args = p.parse_args(argv)
    args.services = [s for s in args.services.split(",") if s]
    unknown = set(args.services) - set(ALL_SERVICES)
    if unknown:
        p.error(f"unknown services: {', '.join(sorted(unknown))}")
    if "deployer" not in args.services:
        args.services.append("deployer")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM cleans up like Ctrl-C
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from bench.harness.envs import build_environment

    started = time.monotonic()
    load_before = os.getloadavg()
    built = build_environment("model-server")
    log(f"model-server environment: {built.env.path} (reused: {built.reused})")
    if args.log_dir:
        args.log_dir.mkdir(parents=True, exist_ok=True)
    # not "shipyard-...": the test suite removes accounts homed in such folders of no
    # live pytest (tests/hubtools.py, left_behind), which would take the bench's account
    workdir = Path(tempfile.mkdtemp(prefix="sychaos-"))
    workdir.chmod(0o755)
    platform = load = None
    try:
        model = make_model(workdir)
        platform = Platform(workdir, args.services, args.log_dir)
        log(f"starting the hub with {', '.join(args.services)}")
        platform.start()
        if not until(lambda: all(platform.service_healthy(n) for n in args.services), 120, 0.2):
            raise RuntimeError(f"the services did not answer:\n{platform.hub.log_tail()}")
        log("deploying the model (1 replica)")
        platform.deploy(model, 1)
        drills = Drills(platform, None, args)
        drills.replicas = 1
        if not until(lambda: platform.healthy(1), 180, 0.2):
            raise RuntimeError(f"the deployment did not serve:\n{platform.hub.log_tail()}")
        load = Load(platform.invoke_url, platform.token, args.rate, args.request_timeout).start()
        drills.load = load
        setup_s = time.monotonic() - started
        log(f"load at {args.rate:g} req/s; set up in {setup_s:.1f} s")

        drills.replica("replica-kill-1", "kill -9 the only replica (1 replica)", signal.SIGKILL)
        if not drills.broken:
            try:
                platform.scale(2)
                drills.replicas = 2
            except (requests.RequestException, RuntimeError) as e:
                drills.broken = f"scaling to 2 replicas failed: {e}"[:300]
        drills.replica("replica-kill-2", "kill -9 one replica (2 replicas)", signal.SIGKILL)
        drills.replica("replica-term-2", "SIGTERM one replica (2 replicas)", signal.SIGTERM)
        drills.service("deployer", "deployer", "kill -9 deployer service")
        drills.front()
        drills.proxy()
        for name in args.services:
            if name != "deployer":
                drills.service(name)
        drills.hub()
        load.stop()
        total = load.answers
        header = (
            f"failure drills, commit {commit()}; {os.cpu_count()} cores, load average "
            f"{load_before[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; "
            f"{args.rate:g} model requests/s through the proxy, {len(total)} in all "
            f"({sum(not a.ok for a in total)} failed); run took "
            f"{time.monotonic() - started:.0f} s"
        )
        report(drills.results, args.services, header)
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {
                        "commit": commit(),
                        "cpus": os.cpu_count(),
                        "load_average": [load_before[0], os.getloadavg()[0]],
                        "rate": args.rate,
                        "services": args.services,
                        "requests": len(total),
                        "failed": sum(not a.ok for a in total),
                        "setup_s": setup_s,
                        "total_s": time.monotonic() - started,
                        "drills": {k: vars(r) for k, r in drills.results.items()},
                        "kill_to_healthy_s": {
                            n: drills.results.get(
                                "deployer" if n == "deployer" else f"service-{n}",
                                Result("", ""),
                            ).recovered_s
                            for n in args.services
                        },
                        "note": NOTE,
                    },
                    indent=2,
                )
            )
        return 0
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        if load is not None:
            load.stop()
        log(f"cleaning up: the hub, {ACCOUNT_PREFIX} accounts, {CGROUP_PARENT} cgroups")
        if platform is not None:
            platform.stop()
            if args.log_dir:  # the services' own logs (MLflow's, the deployer's versions')
                for path in platform.data_dir.rglob("*.log"):
                    target = args.log_dir / "data" / path.relative_to(platform.data_dir)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with contextlib.suppress(OSError):
                        shutil.copy(path, target)
        else:
            remove_test_accounts(ACCOUNT_PREFIX)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
