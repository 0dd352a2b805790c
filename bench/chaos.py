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

The drills run in the order 3, 1, 2, 4, 5, the other services, 6 (one scale-up, and
the drill that restarts the hub last), and are printed in the order above.

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
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python bench/chaos.py`
    sys.path.insert(0, str(REPO))

import psutil  # noqa: E402
import requests  # noqa: E402

from hub_ext.host.slugs import account_name  # noqa: E402
from tests.hubtools import HubProcess, remove_cgroups, remove_test_accounts  # noqa: E402

ACCOUNT_PREFIX = "sychaos-"
CGROUP_PARENT = "shipyard-bench-chaos"
USER = "chaos"
DEPLOYMENT = "drill"
ALL_SERVICES = ("tracking", "scheduler", "deployer", "secrets", "audit")
#: HubProcess's switch for each service (the audit *service*; the audit trail is always on)
SERVICE_SWITCH = {
    "tracking": "SHIPYARD_TRACKING",
    "scheduler": "SHIPYARD_SCHEDULER",
    "deployer": "SHIPYARD_DEPLOYER",
    "secrets": "SHIPYARD_SECRETS",
    "audit": "SHIPYARD_AUDIT_SERVICE",
}
PROFILES = """
profiles:
  - slug: serving
    display_name: Serving
    default: true
    environment: model-server
    cpu_limit: 1
    mem_limit: 768Mi
"""
ROW = {"dataframe_split": {"columns": ["x"], "data": [[1.0]]}}
PREDICTION = 3.0
#: Seconds of the window before the signal (requests in flight at the signal count).
BEFORE = 1.0
#: Seconds of answers, all ok, that end a drill's window after its recovery.
SETTLE = 1.0
NOTE = (
    "numbers from a loaded machine are pessimistic: restarts and outages take longer "
    "when other work shares the cores"
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def until(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` (an error counts as not yet) until true or ``timeout``; say which."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(requests.RequestException, psutil.Error, OSError, ValueError):
            if predicate():
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def make_model(place: Path) -> Path:
    """A real scikit-learn model saved by MLflow (y = 2x + 1), readable by the account."""
    import mlflow.sklearn
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LinearRegression

    x = pd.DataFrame({"x": np.arange(10, dtype=float)})
    y = 2 * x["x"] + 1
    path = place / "model"
    # cloudpickle: MLflow 3 defaults to skops, which the model-server lock does not hold
    mlflow.sklearn.save_model(
        LinearRegression().fit(x, y),
        path,
        signature=infer_signature(x, y),
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
    )
    subprocess.run(["chmod", "-R", "a+rX", str(path)], check=True)  # noqa: S603, S607
    return path


# ------------------------------------------------------------------ the load


@dataclass
class Answer:
    due: float  # when the request was due (monotonic)
    done: float  # when its answer (or error) came
    ok: bool
    what: str  # "" when ok, else a short reason: the status code or the error's kind


class Load:
    """An open-loop load of ``rate`` requests per second; every answer kept."""

    def __init__(self, url: str, token: str, rate: float, timeout: float):
        self.url, self.token, self.rate, self.timeout = url, token, rate, timeout
        self.answers: list[Answer] = []
        self.pending: set[float] = set()  # due times of requests not answered yet
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.local = threading.local()
        # enough threads for every request of a full request timeout at a low rate; at
        # 40/s a queue forms only while answers take longer than the pool lasts
        self.pool = ThreadPoolExecutor(max(16, min(200, int(rate * 4))), "chaos-load")
        self.clock = threading.Thread(target=self._tick, name="chaos-clock", daemon=True)

    def start(self) -> Load:
        self.clock.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self.clock.is_alive():
            self.clock.join()
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _tick(self) -> None:
        interval = 1 / self.rate
        due = time.monotonic()
        while not self.stopping.is_set():
            with self.lock:
                self.pending.add(due)
            self.pool.submit(self._one, due)
            due += interval
            self.stopping.wait(max(0.0, due - time.monotonic()))

    def _one(self, due: float) -> None:
        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = requests.Session()
            session.headers["Authorization"] = f"token {self.token}"
        try:
            r = session.post(self.url, json=ROW, timeout=self.timeout)
            if r.status_code == 200:
                try:
                    ok = abs(r.json()["predictions"][0] - PREDICTION) < 1e-6
                except (ValueError, KeyError, IndexError, TypeError):
                    ok = False
                what = "" if ok else "200 without the prediction"
            else:
                ok, what = False, describe(r)
        except requests.Timeout:
            ok, what = False, "no answer in time"
        except requests.ConnectionError:
            ok, what = False, "connection error"
        except requests.RequestException as e:
            ok, what = False, type(e).__name__
        with self.lock:
            self.answers.append(Answer(due, time.monotonic(), ok, what))
            self.pending.discard(due)

    def settled(self, since: float, seconds: float) -> bool:
        """Whether ``seconds`` of requests due after ``since`` and after the last failure
        are all answered, and ok."""
        with self.lock:
            later = [a for a in self.answers if a.due >= since]
            failures = [a.due for a in later if not a.ok]
            start = max(failures, default=since - 1e-3) + 1e-3
            if any(start <= d <= start + seconds for d in self.pending):
                return False
        return max((a.due for a in later), default=0.0) >= start + seconds

    def recent_ok(self, seconds: float = 1.0) -> bool:
        """Whether the requests due in the last ``seconds`` that have answered were all ok."""
        now = time.monotonic()
        with self.lock:
            recent = [a for a in self.answers if a.due >= now - seconds - 0.5]
        return len(recent) >= self.rate * seconds * 0.5 and all(a.ok for a in recent)

    def window(self, start: float, end: float) -> list[Answer]:
        """The answers to the requests due in ``[start, end]``, once all have come."""
        until(lambda: not any(start <= d <= end for d in list(self.pending)), self.timeout + 10)
        with self.lock:
            return sorted((a for a in self.answers if start <= a.due <= end), key=lambda a: a.due)


def describe(r: requests.Response) -> str:
    """A failed answer in a few words: status, and the deployer's error code or the page."""
    kind = "html" if "html" in r.headers.get("Content-Type", "") else ""
    with contextlib.suppress(ValueError, AttributeError):
        kind = r.json().get("error_code") or kind
    return f"{r.status_code} {kind}".strip()


# ------------------------------------------------------------------ the platform


class Platform:
    """The hub, its services and the deployment, and how to find and kill each process."""

    def __init__(self, workdir: Path, services: list[str], log_dir: Path | None):
        self.workdir = workdir
        self.services = services
        self.data_dir = workdir / "hub"
        profiles = workdir / "profiles.yaml"
        profiles.write_text(PROFILES)
        homes = workdir / "homes"
        homes.mkdir()
        homes.chmod(0o755)  # the account must reach its home; mkdtemp makes 0700
        env = {switch: "0" for switch in SERVICE_SWITCH.values()}
        env.update({SERVICE_SWITCH[name]: "1" for name in services})
        self.hub = HubProcess(
            data_dir=self.data_dir,
            profiles_file=profiles,
            home_root=homes,
            account_prefix=ACCOUNT_PREFIX,
            cgroup_parent=CGROUP_PARENT,
            extra_env=env,
            log_path=log_dir / "hub.log" if log_dir else None,
        )
        hub_env = self.hub.env()
        self.service_urls = {
            hub_env[f"{SERVICE_SWITCH[name]}_URL"].rstrip("/") for name in ALL_SERVICES
        }
        self.token = ""
        self.deployer = f"{self.hub.url}/services/deployer/"
        self.invoke_url = f"{self.deployer}models/{USER}/{DEPLOYMENT}/invocations"

    # ---------------------------------------------------------------- calls

    def call(self, method: str, path: str, timeout: float = 10, **kwargs) -> requests.Response:
        headers = {"Authorization": f"token {self.token}"}
        return requests.request(
            method, self.deployer + path, headers=headers, timeout=timeout, **kwargs
        )

    def service_healthy(self, name: str) -> bool:
        url = f"{self.hub.url}/services/{name}/health"
        headers = {"Authorization": f"Bearer {self.token}"} if name == "tracking" else {}
        try:
            return requests.get(url, headers=headers, timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def hub_answers(self) -> bool:
        try:
            return requests.get(f"{self.hub.url}/hub/api/", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def ready_replicas(self) -> int:
        r = self.call("GET", f"api/deployments/{DEPLOYMENT}/metrics")
        if r.status_code != 200:
            return -1
        return ((r.json().get("versions") or {}).get("1") or {}).get("replicas_ready", 0)

    def healthy(self, replicas: int) -> bool:
        return (
            self.hub_answers()
            and all(self.service_healthy(name) for name in self.services)
            and self.ready_replicas() == replicas
            and len(self.replica_pids()) == replicas
        )

    # ------------------------------------------------------------ processes

    def replica_pids(self) -> set[int]:
        """The model servers of the bench's account (one process per replica)."""
        try:
            uid = pwd.getpwnam(account_name(USER, ACCOUNT_PREFIX)).pw_uid
        except KeyError:  # not made yet
            return set()
        return {
            p.pid
            for p in psutil.process_iter(["uids", "cmdline", "status"])
            if p.info["uids"]
            and p.info["uids"].real == uid
            and p.info["status"] != psutil.STATUS_ZOMBIE
            and "hub_ext.runtime.modelserver" in (p.info["cmdline"] or [])
        }

    def ours(self, proc: psutil.Process) -> bool:
        """Whether ``proc`` was started for this bench's hub: its data folder or one of its
        services' addresses (the audit service is given no data folder) in its environment."""
        try:
            environ = proc.environ()
        except psutil.Error:
            return False
        data = environ.get("SHIPYARD_DATA_DIR")
        if data and Path(data).resolve() == self.data_dir.resolve():
            return True
        return environ.get("JUPYTERHUB_SERVICE_URL", "").rstrip("/") in self.service_urls

    def service_pid(self, name: str) -> int | None:
        """The process of service ``name`` (``-m hub_ext.services.<name>``) of this hub."""
        module = f"hub_ext.services.{name}"
        for proc in psutil.process_iter(["cmdline", "status"]):
            cmd = proc.info["cmdline"] or []
            if (
                module in cmd
                and cmd[cmd.index(module) - 1] == "-m"
                and proc.info["status"] != psutil.STATUS_ZOMBIE
                and self.ours(proc)
            ):
                return proc.pid
        return None

    def proxy_pid(self) -> int | None:
        try:
            pid = int((self.data_dir / "proxy.pid").read_text())
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if b"configurable-http-proxy" in cmd and alive(pid) else None

    def leftovers(self) -> list[psutil.Process]:
        """Every live process this bench's hub started that is still running."""
        found = []
        for proc in psutil.process_iter(["status"]):
            if proc.pid != os.getpid() and proc.info["status"] != psutil.STATUS_ZOMBIE:
                if self.ours(proc):
                    found.append(proc)
        return found

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.hub.start(timeout=120)
        self.token = self.hub.create_user(USER)

    def restart_hub(self, timeout: float = 120) -> None:
        """Start the hub again, as an operator reruns ``shipyard up`` (same folder, ports)."""
        with contextlib.suppress(Exception):
            self.hub._log.close()
        self.hub.start(timeout=timeout)

    def deploy(self, model: Path, replicas: int) -> None:
        body = {"name": DEPLOYMENT, "model_uri": str(model), "replicas": replicas}
        r = self.call("POST", "api/deployments", json={**body, "profile": "serving"}, timeout=120)
        if r.status_code != 201:
            raise RuntimeError(f"deploying the model: {r.status_code} {r.text[:300]}")

    def scale(self, replicas: int) -> None:
        r = self.call(
            "PATCH", f"api/deployments/{DEPLOYMENT}", json={"replicas": replicas}, timeout=120
        )
        if r.status_code != 200:
            raise RuntimeError(f"scaling to {replicas}: {r.status_code} {r.text[:300]}")

    def stop(self) -> None:
        """Stop the hub as Ctrl-C does, then end whatever of this bench still runs."""
        with contextlib.suppress(Exception):
            self.hub.stop()
        for proc in self.leftovers():
            log(f"still running after the hub's stop, killed: {proc.pid} {proc.cmdline()[:4]}")
            with contextlib.suppress(psutil.Error):
                proc.kill()
        pid = self.proxy_pid()
        if pid:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        remove_test_accounts(ACCOUNT_PREFIX)  # kills the account's processes (replicas, runs)
        for parent in (CGROUP_PARENT, f"{CGROUP_PARENT}-models", f"{CGROUP_PARENT}-jobs"):
            with contextlib.suppress(Exception):
                remove_cgroups(parent)


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
    from hub_ext.environments.build import EnvironmentBuilder
    from hub_ext.environments.catalog import get_environment

    started = time.monotonic()
    load_before = os.getloadavg()
    built = EnvironmentBuilder().build(get_environment("model-server"))
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
