"""Model traffic while a replica dies, and refused bodies, through the hub's proxy.

Issue 14 points 1 and 2 (and issue 15 point 1), against one real hub per module: the
deployer on its real LocalBackend, real model servers (the ``model-server`` environment,
a scikit-learn model saved by MLflow) running as the test account, and the real
configurable-http-proxy in front, which is the path every client takes.

- A replica killed (``kill -9``) or stopped (SIGTERM) under a bounded load from the test
  (4 client threads, a capped number of requests) fails no request: with two replicas
  the router retries a refused or reset connection on the other one; with one, requests
  wait in the router's queue for the restarted replica (the wait is set above the
  restart's time here, as it is by default on a machine that is not shared by parallel
  test runs). Every answer is counted; the test waits on states (pids, ready replicas,
  answers counted), never on sleeps.
- A body over ``max_body_size`` gets the documented 413 JSON through the proxy, sent with
  a ``Content-Length`` and chunked, without ``Expect: 100-continue`` (as Python requests
  sends it); so do the other refusals of a request with a body (401, 404).
"""

from __future__ import annotations

import collections
import contextlib
import os
import pwd
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests

from hub_ext.host.slugs import account_name
from hub_ext.services.deployer.backend import version_key

from .conftest import needs_root
from .hubtools import tagged, wait_for
from .services import SERVING_PROFILES, service_hub

pytestmark = [needs_root]

#: A replica restarts in 2 to 4 s on an idle machine; the wait covers a busy test machine.
QUEUE_TIMEOUT = 30
#: Short, so that a hub killed under load is down past it (the stale answers serve then).
AUTH_CACHE_SECONDS = 2
DEPLOYER_CONFIG = f"""
c.DeployerService.drain_seconds = 1
c.DeployerService.monitor_interval = 0.5
c.DeployerService.auth_cache_seconds = {AUTH_CACHE_SECONDS}
c.DeployerService.queue_timeout = {QUEUE_TIMEOUT}
c.LocalBackend.restart_backoff = 0.2
"""
#: The model's input and what it answers (y = 2x + 1).
ROW = {"dataframe_split": {"columns": ["x"], "data": [[1.0]]}}
PREDICTION = [3.0]
#: A body well over the default ``max_body_size`` (10 MiB), as the attack run sent it.
BIG = 50 * 2**20
#: Most requests one load sends: bounded, whatever happens.
MAX_REQUESTS = 3000


class Deployer:
    """The module's hub and deployer, as alice."""

    def __init__(self, hub, token: str):
        self.hub, self.token = hub, token
        self.base = f"{hub.url}/services/deployer/"
        self.account = account_name("alice", hub.account_prefix)

    def __call__(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"token {self.token}", **kwargs.pop("headers", {})}
        return requests.request(method, self.base + path, headers=headers, timeout=60, **kwargs)

    def deploy(self, name: str, model_uri: str, replicas: int) -> None:
        r = self(
            "POST",
            "api/deployments",
            json={"name": name, "model_uri": model_uri, "replicas": replicas, "profile": "serving"},
        )
        assert r.status_code == 201, r.text

    def ready_replicas(self, name: str) -> int:
        r = self("GET", f"api/deployments/{name}/metrics")
        assert r.status_code == 200, r.text
        version = r.json()["versions"].get("1") or {}
        return version.get("replicas_ready", 0)

    def wait_serving(self, name: str, replicas: int) -> None:
        def ready():
            v = self("GET", f"api/deployments/{name}/versions/1").json()
            if v["state"] == "failed":
                raise AssertionError(f"{name} failed: {v['reason']}")
            return v["state"] == "ready" and self.ready_replicas(name) == replicas

        wait_for(ready, 120, 0.1, f"{name} to serve with {replicas} replica(s)")

    def replica_pids(self, name: str) -> set[int]:
        """The model servers of deployment ``name`` (each replica is one process), found by
        their working folder: the version's own, named after its key."""
        uid = pwd.getpwnam(self.account).pw_uid
        key = version_key("alice", name, 1)
        pids = set()
        for proc in psutil.process_iter(["uids", "cmdline", "status", "cwd"]):
            info = proc.info
            if (
                info["uids"]
                and info["uids"].real == uid
                and info["status"] != psutil.STATUS_ZOMBIE
                and "hub_ext.runtime.modelserver" in (info["cmdline"] or [])
                and Path(info["cwd"] or "/").name.startswith(f"{key}-")
            ):
                pids.add(proc.pid)
        return pids

    def all_replica_pids(self) -> set[int]:
        """Every model server of the test account, whatever its deployment."""
        uid = pwd.getpwnam(self.account).pw_uid
        return {
            proc.pid
            for proc in psutil.process_iter(["uids", "cmdline", "status"])
            if proc.info["uids"]
            and proc.info["uids"].real == uid
            and proc.info["status"] != psutil.STATUS_ZOMBIE
            and "hub_ext.runtime.modelserver" in (proc.info["cmdline"] or [])
        }

    def front_pids(self) -> set[int]:
        """The deployer's front (``front.py``) of this hub: the process on its port."""
        return {
            proc.pid
            for proc in psutil.process_iter(["cmdline", "status"])
            if proc.info["status"] != psutil.STATUS_ZOMBIE
            and "hub_ext.services.deployer.front" in (proc.info["cmdline"] or [])
            and any(str(self.hub.data_dir) in arg for arg in proc.info["cmdline"])
        }

    def service_pid(self) -> int | None:
        """The deployer's process: the hub's child running ``-m hub_ext.services.deployer``."""
        for child in psutil.Process(self.hub.proc.pid).children():
            with contextlib.suppress(psutil.Error):
                if (
                    "hub_ext.services.deployer" in child.cmdline()
                    and child.status() != psutil.STATUS_ZOMBIE
                ):
                    return child.pid
        return None


class Load:
    """``threads`` clients calling a model without pause through the proxy; every answer counted.

    At most :data:`MAX_REQUESTS` requests in all. ``failures`` holds every answer that was
    not the model's prediction (status and body) and every request that got no answer.
    """

    def __init__(self, deployer: Deployer, name: str, threads: int = 4, rate: float = 0):
        self.url = f"{deployer.base}models/alice/{name}/invocations"
        self.token = deployer.token
        self.threads = threads
        #: requests per second of all clients together (0: each sends its next one at once)
        self.rate = rate
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.sent = self.ok = 0
        self.failures: list[str] = []
        self.slowest = 0.0

    def _client(self) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"token {self.token}"
        interval = self.threads / self.rate if self.rate else 0
        due = time.monotonic()
        while not self.stop.is_set():
            with self.lock:
                if self.sent >= MAX_REQUESTS:
                    return
                self.sent += 1
            if interval:  # a steady rate: the next request is due one interval later
                self.stop.wait(max(0.0, due - time.monotonic()))
                due = max(due + interval, time.monotonic() - interval)
            started = time.monotonic()
            try:
                r = session.post(self.url, json=ROW, timeout=QUEUE_TIMEOUT + 30)
                ok = r.status_code == 200 and r.json()["predictions"] == pytest.approx(PREDICTION)
                outcome = "" if ok else f"{r.status_code} {r.text[:200]}"
            except requests.RequestException as e:
                outcome = f"no answer: {e!r}"
            with self.lock:
                self.slowest = max(self.slowest, time.monotonic() - started)
                if outcome:
                    self.failures.append(outcome)
                else:
                    self.ok += 1

    def wait_ok(self, count: int, what: str) -> None:
        def reached():
            if self.ok >= count:
                return True
            if all(f.done() for f in self.futures):
                raise AssertionError(
                    f"the load ended ({self.sent} requests) before {what}: {self.failures[:3]}"
                )
            return False

        wait_for(reached, QUEUE_TIMEOUT + 60, 0.02, what)

    def __enter__(self) -> Load:
        self.pool = ThreadPoolExecutor(self.threads)
        self.futures = [self.pool.submit(self._client) for _ in range(self.threads)]
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for future in self.futures:
            future.result()
        self.pool.shutdown()


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def deployer(hub_factory, model_server_env):
    with service_hub(
        hub_factory,
        "failover",
        tagged("syfo-"),
        tagged("shipyard-test-fo"),
        ["deployer"],
        # the real LocalBackend, with its own timings (see DEPLOYER_CONFIG)
        configs={"deployer": DEPLOYER_CONFIG},
        profiles=SERVING_PROFILES,
    ) as hub:
        client = Deployer(hub, hub.create_user("alice"))
        yield client
        # a clean stop (Ctrl-C) stops every replica, the adopted ones too, and leaves none
        hub.stop()
        wait_for(lambda: not client.all_replica_pids(), 30, 0.1, "no replica left after a stop")
        wait_for(lambda: not client.front_pids(), 20, 0.1, "the deployer's front to exit")


# ------------------------------------------------- point 1: a replica dies under load


@pytest.fixture(scope="module")
def deployment(deployer, model_dir):
    """The module's deployment, made when a test first needs it; ``serving(n)`` scales it
    to ``n`` replicas and waits until all serve, whatever ran before."""
    name = "failover"
    made: list[int] = []

    def serving(replicas: int) -> str:
        if not made:
            deployer.deploy(name, str(model_dir), replicas)
            made.append(replicas)
        else:
            r = deployer("PATCH", f"api/deployments/{name}", json={"replicas": replicas})
            assert r.status_code == 200, r.text
        deployer.wait_serving(name, replicas)
        # a replica removed by scaling down may still be finishing (SIGTERM, then gone)
        wait_for(lambda: len(deployer.replica_pids(name)) == replicas, 30, 0.05, "the scale")
        return name

    yield serving
    if made:
        assert deployer("DELETE", f"api/deployments/{name}").status_code == 204


def _dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize(
    "replicas, sig",
    [(2, signal.SIGKILL), (2, signal.SIGTERM), (1, signal.SIGKILL), (1, signal.SIGTERM)],
    ids=["2-replicas-kill-9", "2-replicas-sigterm", "1-replica-kill-9", "1-replica-sigterm"],
)
def test_no_request_fails_when_a_replica_dies_under_load(deployer, deployment, replicas, sig):
    """With two replicas the other one answers (a refused or reset request is resent);
    with one, requests wait for its restart. Not one request fails either way, from
    before the signal until after the restarted replica serves again."""
    name = deployment(replicas)
    before = deployer.replica_pids(name)
    assert len(before) == replicas, before
    victim = min(before)
    with Load(deployer, name) as load:
        load.wait_ok(30, "30 answers before the signal")
        signalled_at, answered = time.monotonic(), load.ok
        os.kill(victim, sig)
        wait_for(lambda: _dead(victim), 30, 0.02, "the replica to exit")
        # the restarted replica: a new process, serving beside the others
        wait_for(
            lambda: (
                deployer.replica_pids(name) - before and deployer.ready_replicas(name) == replicas
            ),
            QUEUE_TIMEOUT,
            0.05,
            "the replica to be restarted",
        )
        back_after = time.monotonic() - signalled_at
        load.wait_ok(load.ok + 30, "30 answers after the replica came back")
    print(
        f"\n{replicas} replica(s), {sig.name}: {load.sent} requests, {len(load.failures)} "
        f"failed, {load.ok - answered} answered after the signal, restarted after "
        f"{back_after:.1f}s, slowest answer {load.slowest:.2f}s"
    )
    assert load.failures == [], load.failures[:5]
    assert load.ok == load.sent
    if replicas == 1:  # some requests did wait for the restart
        assert load.slowest >= 0.5 * back_after


def test_what_counts_as_a_request_never_answered():
    """Refused, reset or closed connections, and connections not made in time, are resent;
    a model that answers too slowly is not (504), nor is any other error."""
    from tornado.httpclient import HTTPClientError
    from tornado.simple_httpclient import HTTPStreamClosedError, HTTPTimeoutError

    from hub_ext.services.deployer.router import _failure

    assert _failure(ConnectionRefusedError(111, "Connection refused")) == "unreachable"
    assert _failure(ConnectionResetError(104, "Connection reset by peer")) == "unreachable"
    assert _failure(HTTPStreamClosedError("Stream closed")) == "unreachable"
    assert _failure(HTTPTimeoutError("Timeout while connecting")) == "unreachable"
    assert _failure(HTTPTimeoutError("Timeout during request")) == "timeout"
    # the curl client's messages (pycurl is optional)
    assert _failure(HTTPClientError(599, "Empty reply from server")) == "unreachable"
    assert _failure(HTTPClientError(599, "Connection timed out after 5001 ms")) == "unreachable"
    assert _failure(HTTPClientError(599, "Operation timed out after 35000 ms")) == "timeout"
    assert _failure(HTTPTimeoutError("Timeout in request queue")) == "timeout"
    assert _failure(TimeoutError()) == "timeout"
    assert _failure(ValueError("a bug")) is None
    assert _failure(HTTPClientError(500)) is None


# ------------------------------------------ point 2: refused bodies through the proxy


def _chunks(size: int, piece: int = 2**20):
    sent = 0
    while sent < size:
        yield b"x" * min(piece, size - sent)
        sent += piece


@pytest.fixture(scope="module")
def refusing(deployer):
    """A deployment that exists (its only version fails at once: a missing model)."""
    deployer.deploy("refusing", "/nonexistent/model", 1)
    yield "refusing"
    deployer("DELETE", "api/deployments/refusing")


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize(
    "path, auth, status, code",
    [
        ("models/alice/refusing/invocations", True, 413, "REQUEST_TOO_LARGE"),
        ("models/alice/nothing-here/invocations", True, 404, "NOT_FOUND"),
        ("models/alice/refusing/invocations", False, 401, "UNAUTHENTICATED"),
    ],
    ids=["too-large", "missing", "no-token"],
)
def test_a_refused_body_gets_its_json_answer_through_the_proxy(
    deployer, refusing, framing, path, auth, status, code
):
    """50 MiB without ``Expect: 100-continue``: the answer is the deployer's JSON, not the
    hub's HTML 503 page (the proxy's, when the deployer closed the connection mid-body)."""
    body = b"x" * BIG if framing == "content-length" else _chunks(BIG)
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = f"token {deployer.token}"
    r = requests.post(deployer.base + path, data=body, headers=headers, timeout=120)
    sent = r.request.headers
    assert "Expect" not in sent
    assert ("Transfer-Encoding" in sent) == (framing == "chunked"), sent
    assert r.status_code == status, r.text[:300]
    assert r.headers["Content-Type"].startswith("application/json"), r.text[:300]
    assert r.json()["error_code"] == code
    # the connection served its answer whole: the next request is answered as usual
    started = time.monotonic()
    r = deployer("POST", "models/alice/refusing/invocations", json=ROW)
    assert r.status_code == 503 and r.json()["error_code"] == "UNAVAILABLE", r.text
    # its version is not ready (starting, then failed): no replica is coming, no wait
    assert "Retry-After" not in r.headers and time.monotonic() - started < QUEUE_TIMEOUT / 2


# ------------------------------ issue 15 point 2: the deployer is killed under load


def test_the_replicas_outlive_a_deployer_killed_under_load(deployer, model_dir):
    """``kill -9`` of the deployer at 40 requests per second fails no model request: its
    front (front.py), a process of its own that holds the port and routes model requests,
    goes on serving the replicas (which outlive the deployer) with the last table it was
    given, so requests are answered while no deployer runs at all; the hub starts a new
    deployer, which adopts the running replicas (the same processes serve on) and the
    same front. Every failed request is counted and printed; the module's teardown checks
    that a clean stop of the hub then leaves no replica and no front."""
    name = "survivor"
    deployer.deploy(name, str(model_dir), 2)
    deployer.wait_serving(name, 2)
    wait_for(lambda: len(deployer.replica_pids(name)) == 2, 30, 0.05, "two model servers")
    before = deployer.replica_pids(name)
    fronts = deployer.front_pids()
    assert len(fronts) == 1, fronts
    victim = deployer.service_pid()
    assert victim is not None
    with Load(deployer, name, threads=8, rate=40) as load:
        load.wait_ok(80, "2 s of answers before the kill")
        killed_at, answered = time.monotonic(), load.ok
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: _dead(victim), 30, 0.02, "the deployer to exit")

        def serving_again():
            pid = deployer.service_pid()
            if pid in (None, victim):
                return False
            with contextlib.suppress(requests.RequestException, AssertionError):
                return deployer.ready_replicas(name) == 2
            return False

        wait_for(serving_again, 60, 0.05, "a new deployer serving both replicas")
        back_after = time.monotonic() - killed_at
        load.wait_ok(load.ok + 80, "2 s of answers after the restart")
    statuses = collections.Counter(f.split(" ", 1)[0] for f in load.failures)
    print(
        f"\ndeployer kill -9 at 40 req/s: {load.sent} requests, {len(load.failures)} failed "
        f"{dict(statuses)}, {load.ok - answered} answered after the kill, new deployer serving after "
        f"{back_after:.1f}s, slowest answer {load.slowest:.2f}s"
    )
    assert deployer.replica_pids(name) == before, "the replicas were restarted, not adopted"
    assert deployer.front_pids() == fronts, "the front was replaced, not adopted"
    assert not load.failures, load.failures[:5]
    assert load.slowest < 5, "a model request waited for the deployer's restart"


# ------------------------------------ issue 15 point 3: the hub is killed under load


def test_models_answer_while_the_hub_is_down_and_restarts(deployer, model_dir):
    """``kill -9`` of the hub process only, under a load from two callers (the owner, and
    one granted through a hub group), both of whose tokens the router checked before the
    crash; the hub stays down past the router's auth cache, then starts again on the same
    data folder. Not one request fails, before, during or after: the router answers a
    token it knows from the hub's last answer while the hub cannot be reached
    (``auth_stale_seconds``), and the restarted hub adopts the running proxy instead of
    replacing it (no refused connection, no 404 of an empty routing table). A token the
    router has never seen gets 503 JSON with Retry-After while the hub is down."""
    hub = deployer.hub
    name = "hubless"
    deployer.deploy(name, str(model_dir), 1)
    r = deployer("PUT", f"api/deployments/{name}/grants", json={"groups": ["hubless-readers"]})
    assert r.status_code == 200, r.text
    reader = hub.create_user("hubless-reader", ["hubless-readers"])
    fresh = hub.create_user("alice")  # alice's too, but never shown to the router
    deployer.wait_serving(name, 1)
    proxy_pid = int((hub.data_dir / "proxy.pid").read_text())
    owner = Load(deployer, name, threads=2, rate=10)
    granted = Load(deployer, name, threads=2, rate=10)
    granted.token = reader
    with owner, granted:
        owner.wait_ok(20, "answers to the owner before the crash")
        granted.wait_ok(20, "answers to the group's member before the crash")
        os.kill(hub.proc.pid, signal.SIGKILL)  # the hub only, not its process group
        hub.proc.wait(10)
        hub._log.close()
        down_at = time.monotonic()
        try:
            # down past the router's auth cache: these answers come from the stale entries
            sent = owner.sent + granted.sent
            wait_for(
                lambda: owner.sent + granted.sent >= sent + 20 * (AUTH_CACHE_SECONDS + 2),
                60,
                0.02,
                "requests sent past the auth cache's age with the hub down",
            )
            unseen = requests.post(
                f"{deployer.base}models/alice/{name}/invocations",
                json=ROW,
                headers={"Authorization": f"token {fresh}"},
                timeout=30,
            )
            down_failures = len(owner.failures) + len(granted.failures)
        finally:  # started again whatever happened: the module's other tests need it
            hub.start(timeout=120)
        down_for = time.monotonic() - down_at
        owner.wait_ok(owner.ok + 20, "answers to the owner after the restart")
        granted.wait_ok(granted.ok + 20, "answers to the group's member after the restart")
    failures = owner.failures + granted.failures
    statuses = collections.Counter(f.split(" ", 1)[0] for f in failures)
    print(
        f"\nhub kill -9, down {down_for:.1f}s, restarted: {owner.sent + granted.sent} requests, "
        f"{len(failures)} failed {dict(statuses)} ({down_failures} while the hub was down), "
        f"slowest answer {max(owner.slowest, granted.slowest):.2f}s"
    )
    # a token the router never saw could not be checked: "retry later", not 401/404/500
    assert unseen.status_code == 503, unseen.text[:300]
    assert unseen.json()["error_code"] == "UNAVAILABLE", unseen.text[:300]
    assert unseen.headers.get("Retry-After"), unseen.headers
    assert not [f for f in failures if f.startswith("404")], failures[:5]
    assert failures == [], failures[:5]
    assert "Adopted configurable-http-proxy" in hub.log_path.read_text()
    assert int((hub.data_dir / "proxy.pid").read_text()) == proxy_pid, "the proxy was replaced"
    # a token never seen is checked by the hub again
    r = requests.post(
        f"{deployer.base}models/alice/{name}/invocations",
        json=ROW,
        headers={"Authorization": f"token {fresh}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text[:300]
    assert deployer("DELETE", f"api/deployments/{name}").status_code == 204
