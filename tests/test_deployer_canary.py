"""Watched canaries: the deployer promotes a canary whose window passes clean, rolls it
back by itself when a threshold is crossed, and resumes the watch after a ``kill -9``.

One hub with the deployer per module, its replicas from
:class:`tests.fake_backend.FakeModelBackend` (real loopback HTTP processes; the
deployer, its front and the hub's proxy are real), whose model URIs choose what the
model does: ``models:/fake-fail-after/<n>`` answers 500 after ``n`` calls,
``models:/fake-slow/<tag>`` takes 0.3 s. Traffic is sent by the test through the hub's
proxy, as callers send it; every answer is counted. The windows are the API's shortest
(10 s); the deployer judges every second (``canary_interval``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from datetime import datetime

import psutil
import pytest
import requests

from .auditrecords import all_records
from .conftest import needs_root
from .fake_backend import FAKE_MODEL_SERVER
from .hubtools import tagged, wait_for
from .services import LOCAL_DEPLOYER_CONFIG, SERVING_PROFILES, DeployerClient, service_hub

#: Client threads of a load: also the most requests in flight at any moment.
THREADS = 4
#: The fake deployer config's ``breaker_min_requests``.
BREAKER_MIN_REQUESTS = 10


@pytest.fixture(scope="module")
def dep(hub_factory):
    with service_hub(
        hub_factory, "deployer", tagged("sycw-"), tagged("shipyard-test-cw"), ["deployer"]
    ) as hub:
        yield DeployerClient(hub, hub.create_user("alice"))


class Load:
    """``THREADS`` callers of ``name`` until the block ends, counting every answer."""

    def __init__(self, dep: DeployerClient, name: str, body: dict | None = None):
        self.dep, self.name = dep, name
        self.body = body or {"inputs": [[1.0]]}
        self.codes: Counter = Counter()
        self.predictions: Counter = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(THREADS)]

    def _run(self) -> None:
        url = f"{self.dep.base}models/alice/{self.name}/invocations"
        headers = {"Authorization": f"token {self.dep.token}"}
        with requests.Session() as session:
            while not self._stop.is_set():
                try:
                    r = session.post(url, json=self.body, headers=headers, timeout=30)
                    code = r.status_code
                    answer = r.json().get("predictions", [None])[0] if code == 200 else None
                except (requests.RequestException, ValueError):
                    code, answer = "exception", None
                with self._lock:
                    self.codes[code] += 1
                    if answer is not None:
                        self.predictions[answer] += 1
                time.sleep(0.01)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.codes.values())

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)


def deploy(dep, name: str, model_uri: str) -> int:
    r = dep("POST", "api/deployments", json={"name": name, "model_uri": model_uri})
    assert r.status_code == 201, r.text
    dep.wait_state(name, 1, "ready")
    return 1


def add_canary(dep, name: str, model_uri: str, **policy) -> int:
    r = dep(
        "POST", f"api/deployments/{name}/versions", json={"model_uri": model_uri, "canary": policy}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert (
        body["canary"]["state"] == "waiting"
        and body["canary"]["policy"]["percent"] == policy["percent"]
    )
    return body["version"]


def watch(dep, name: str, version: int) -> dict:
    r = dep("GET", f"api/deployments/{name}/versions/{version}")
    assert r.status_code == 200, r.text
    return r.json()["canary"]


def wait_decided(dep, name: str, version: int, timeout: float = 60) -> dict:
    def decided():
        w = watch(dep, name, version)
        return w if w["state"] not in ("waiting", "watching") else None

    return wait_for(decided, timeout, 0.2, f"the canary {name} v{version} to be decided")


def decisions(dep, name: str) -> list[dict]:
    """The audit records of the deployer's own decisions about ``name``."""
    return [
        r
        for r in all_records(dep.hub.data_dir)
        if r["target"] == f"deployment/{name}"
        and r["action"] in ("deployment.promote", "deployment.rollback")
        and r["actor"] == "deployer"
    ]


def test_a_clean_canary_is_promoted_when_its_window_ends(dep):
    deploy(dep, "calm", "models:/fake/one")
    two = add_canary(
        dep,
        "calm",
        "models:/fake/two",
        percent=50,
        window_seconds=10,
        max_error_rate=0.1,
        max_latency_p99_ms=5000,
        max_drift_psi=1.0,
        min_requests=10,
    )
    with Load(dep, "calm") as load:
        dep.wait_state("calm", two, "ready")
        w = wait_for(
            lambda: (x := watch(dep, "calm", two))["canary"]["requests"] > 0 and x, 30, 0.2
        )
        assert w["state"] == "watching" and w["baseline_version"] == 1
        assert w["canary"]["error_rate"] == 0 and w["baseline"]["requests"] > 0
        decided = wait_decided(dep, "calm", two, 30)
    assert decided["state"] == "promoted", decided
    reason = decided["reason"]
    assert reason.startswith("promoted: its 10 s window passed") and "baseline version 1" in reason
    ends_at = datetime.fromisoformat(decided["ends_at"])
    started_at = datetime.fromisoformat(decided["started_at"])
    assert (ends_at - started_at).total_seconds() == 10
    assert datetime.fromisoformat(decided["decided_at"]) >= ends_at
    assert decided["canary"]["requests"] >= 10 and decided["canary"]["error_rate"] == 0
    assert dep("GET", "api/deployments/calm").json()["traffic"] == {str(two): 100}
    assert set(load.codes) == {200}, load.codes
    assert load.predictions["one"] > 0 and load.predictions["two"] > 0
    [record] = decisions(dep, "calm")
    assert record["action"] == "deployment.promote" and record["actor_kind"] == "service"
    assert record["on_behalf_of"] == "alice" and record["owner"] == "alice"
    assert record["reason"] == reason and record["details"]["version"] == two
    assert dep("DELETE", "api/deployments/calm").status_code == 204


def test_a_failing_canary_is_rolled_back_under_load(dep):
    """The canary answers its first 15 calls, then 500 to every one.

    The bound on the callers' failed requests: the canary's circuit breaker opens (and
    the deployer then rolls it back at its next judgement) once more than half of at
    least ``breaker_min_requests`` canary requests in its 30 s window failed, so after at
    most 15 + 1 failures; the error-rate threshold (0.2 of at least 20 requests) usually
    rolls it back sooner. Requests already in flight when it leaves the split (at most
    one per client thread) may fail too. Nothing else fails, and nothing fails after.
    """
    ok_calls = 15
    deploy(dep, "shaky", "models:/fake/good")
    two = add_canary(
        dep,
        "shaky",
        f"models:/fake-fail-after/{ok_calls}",
        percent=50,
        window_seconds=300,
        max_error_rate=0.2,
        min_requests=20,
    )
    with Load(dep, "shaky") as load:
        dep.wait_state("shaky", two, "ready")
        decided = wait_decided(dep, "shaky", two, 60)
        after = load.total
        wait_for(lambda: load.total >= after + 40, 30, 0.1, "40 answers after the rollback")
        failed_after = load.codes[500]
        wait_for(lambda: load.total >= after + 80, 30, 0.1, "80 answers after the rollback")
    print(f"\nfailing canary: {dict(load.codes)}; {decided['reason']}")
    assert decided["state"] == "rolled_back", decided
    assert "error rate" in decided["reason"] or "circuit breaker" in decided["reason"]
    assert "baseline version 1" in decided["reason"] or "breaker" in decided["reason"]
    assert set(load.codes) <= {200, 500}, load.codes
    assert 1 <= load.codes[500] <= ok_calls + 1 + THREADS, load.codes
    assert load.codes[500] == failed_after, "requests failed after the rollback"
    assert dep("GET", "api/deployments/shaky").json()["traffic"] == {"1": 100}
    [record] = decisions(dep, "shaky")
    assert record["action"] == "deployment.rollback" and record["actor"] == "deployer"
    assert record["reason"] == decided["reason"] and record["on_behalf_of"] == "alice"
    dep.wait_state("shaky", two, "stopped")
    assert watch(dep, "shaky", two)["state"] == "rolled_back"  # the drain keeps the decision
    assert dep("DELETE", "api/deployments/shaky").status_code == 204


def test_a_slow_canary_is_rolled_back_naming_the_latency(dep):
    deploy(dep, "sluggish", "models:/fake/quick")
    two = add_canary(
        dep,
        "sluggish",
        "models:/fake-slow/slow",
        percent=50,
        window_seconds=300,
        max_latency_p99_ms=150,
        min_requests=5,
    )
    with Load(dep, "sluggish") as load:
        dep.wait_state("sluggish", two, "ready")
        decided = wait_decided(dep, "sluggish", two, 60)
    assert decided["state"] == "rolled_back", decided
    reason = decided["reason"]
    assert "p99 latency" in reason and "> max_latency_p99_ms 150" in reason, reason
    assert "baseline version 1:" in reason
    assert decided["canary"]["latency_p99_ms"] >= 300
    assert decided["baseline"]["latency_p99_ms"] < 150
    assert set(load.codes) == {200}, load.codes
    assert dep("GET", "api/deployments/sluggish").json()["traffic"] == {"1": 100}
    assert [r["action"] for r in decisions(dep, "sluggish")] == ["deployment.rollback"]
    assert dep("DELETE", "api/deployments/sluggish").status_code == 204


def test_a_deployer_killed_mid_window_resumes_the_watch_and_decides_once(dep):
    deploy(dep, "phoenix", "models:/fake/old")
    two = add_canary(
        dep,
        "phoenix",
        "models:/fake/new",
        percent=30,
        window_seconds=15,
        max_error_rate=0.5,
        min_requests=5,
    )
    pid = json.loads((dep.hub.data_dir / "services" / "deployer.json").read_text())["pid"]
    with Load(dep, "phoenix") as load:
        dep.wait_state("phoenix", two, "ready")
        before = watch(dep, "phoenix", two)
        assert before["state"] == "watching"
        # the replicas of the fake backend are the deployer's children; the next one starts its own
        # (the front is a child too, which the next deployer adopts: it is left alone)
        orphans = [
            p.pid for p in psutil.Process(pid).children() if FAKE_MODEL_SERVER in p.cmdline()
        ]
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie", 30)

        def restarted():
            with contextlib.suppress(OSError, ValueError, KeyError):
                new = json.loads((dep.hub.data_dir / "services" / "deployer.json").read_text())
                if new["pid"] != pid:
                    with contextlib.suppress(requests.RequestException, AssertionError):
                        return (
                            dep("GET", f"api/deployments/phoenix/versions/{two}").status_code == 200
                        )
            return False

        wait_for(restarted, 60, 0.3, "the deployer to start again")
        decided = wait_decided(dep, "phoenix", two, 60)
        time.sleep(3)  # three more judgements: none decides again
    for orphan in orphans:
        with contextlib.suppress(ProcessLookupError):
            os.kill(orphan, signal.SIGKILL)
    assert decided["state"] == "promoted", decided
    assert decided["ends_at"] == before["ends_at"] and decided["started_at"] == before["started_at"]
    assert datetime.fromisoformat(decided["decided_at"]) >= datetime.fromisoformat(
        before["ends_at"]
    )
    assert [r["action"] for r in decisions(dep, "phoenix")] == ["deployment.promote"]
    assert dep("GET", "api/deployments/phoenix").json()["traffic"] == {str(two): 100}
    assert load.codes[200] > 0
    assert dep("DELETE", "api/deployments/phoenix").status_code == 204


def test_drift_over_the_threshold_rolls_back_naming_the_feature(dep):
    # the fake model servers report a psi of 0.25 for feature "x"
    deploy(dep, "drifty", "models:/fake/before")
    two = add_canary(
        dep, "drifty", "models:/fake/after", percent=50, window_seconds=300, max_drift_psi=0.1,
        min_requests=5,
    )  # fmt: skip
    with Load(dep, "drifty"):
        dep.wait_state("drifty", two, "ready")
        decided = wait_decided(dep, "drifty", two, 60)
    assert decided["state"] == "rolled_back", decided
    assert "drift of feature 'x' psi 0.25 > max_drift_psi 0.1" in decided["reason"]
    assert "baseline version 1: 0.25" in decided["reason"]
    assert decided["canary"]["drift_psi_max"] == 0.25
    assert dep("GET", "api/deployments/drifty").json()["traffic"] == {"1": 100}
    assert dep("DELETE", "api/deployments/drifty").status_code == 204


def test_too_little_traffic_is_rolled_back_not_promoted(dep):
    deploy(dep, "quiet", "models:/fake/a")
    two = add_canary(
        dep, "quiet", "models:/fake/b", percent=50, window_seconds=10, min_requests=1000
    )
    dep.wait_state("quiet", two, "ready")
    calls = [dep.invoke("alice", "quiet").status_code for _ in range(10)]
    assert set(calls) == {200}
    decided = wait_decided(dep, "quiet", two, 30)
    assert decided["state"] == "rolled_back", decided
    seen = decided["canary"]["requests"]
    assert 0 < seen < 10 and decided["reason"] == (
        f"not enough traffic ({seen} of 1000) to judge the canary"
    )
    assert dep("GET", "api/deployments/quiet").json()["traffic"] == {"1": 100}
    [record] = decisions(dep, "quiet")
    assert record["action"] == "deployment.rollback" and record["reason"] == decided["reason"]
    assert dep("DELETE", "api/deployments/quiet").status_code == 204


def test_traffic_set_by_hand_stops_the_watch(dep):
    deploy(dep, "manual", "models:/fake/a")
    two = add_canary(dep, "manual", "models:/fake/b", percent=10, window_seconds=10, min_requests=0)
    dep.wait_state("manual", two, "ready")
    assert watch(dep, "manual", two)["state"] == "watching"
    r = dep("PUT", "api/deployments/manual/traffic", json={"split": {"1": 50, str(two): 50}})
    assert r.status_code == 200, r.text
    stopped = watch(dep, "manual", two)
    assert stopped["state"] == "stopped", stopped
    assert stopped["reason"] == (
        "the watch was stopped: the traffic was set by hand (version 1: 50 %, version 2: 50 %)"
    )
    time.sleep(12)  # past the window: nothing is decided, the split stays as set
    assert watch(dep, "manual", two)["state"] == "stopped"
    assert dep("GET", "api/deployments/manual").json()["traffic"] == {"1": 50, str(two): 50}
    assert decisions(dep, "manual") == []
    assert dep("DELETE", "api/deployments/manual").status_code == 204


@pytest.mark.parametrize(
    "body,words",
    [
        (
            {"canary": {"percent": 0, "window_seconds": 60}},
            ["canary.percent", "greater than or equal to 1"],
        ),
        (
            {"canary": {"percent": 100, "window_seconds": 60}},
            ["canary.percent", "less than or equal to 99"],
        ),
        ({"canary": {"percent": 10, "window_seconds": 0}}, ["canary.window_seconds", "10"]),
        ({"canary": {"percent": 10, "window_seconds": "60"}}, ["canary.window_seconds", "number"]),
        (
            {"canary": {"percent": 10, "window_seconds": 60, "max_error_rate": 2}},
            ["max_error_rate"],
        ),
        ({"canary": {"percent": 10, "window_seconds": 60, "min_requests": -1}}, ["min_requests"]),
        ({"canary": {"percent": 10}}, ["canary.window_seconds", "required"]),
        (
            {"canary": {"percent": 10, "window_seconds": 60}, "canary_percent": 10},
            ["canary and canary_percent: give one of them, not both"],
        ),
    ],
    ids=[
        "percent-0",
        "percent-100",
        "window-0",
        "window-string",
        "error-rate-2",
        "min-requests",
        "no-window",
        "both",
    ],
)
def test_bad_canary_policies_are_400_saying_what_to_fix(dep, body, words):
    if dep("GET", "api/deployments/policed").status_code == 404:
        deploy(dep, "policed", "models:/fake/p")
    r = dep(
        "POST", "api/deployments/policed/versions", json={"model_uri": "models:/fake/q", **body}
    )
    assert r.status_code == 400, r.text
    for word in words:
        assert word in r.json()["message"], r.json()["message"]


def test_a_canary_needs_a_serving_version(dep):
    r = dep("POST", "api/deployments", json={"name": "fresh", "model_uri": "models:/fake-broken/x"})
    assert r.status_code == 201, r.text
    r = dep(
        "POST",
        "api/deployments/fresh/versions",
        json={"model_uri": "models:/fake/y", "canary": {"percent": 10, "window_seconds": 60}},
    )
    assert r.status_code == 409 and "no version serving yet" in r.json()["message"], r.text
    assert dep("DELETE", "api/deployments/fresh").status_code == 204


# ----------------------------- the real LocalBackend: a model that breaks after N calls

#: A model that answers ``FAIL_AFTER`` calls, then raises at every one (MLflow's models
#: from code: the class is in the model's own file, which the model server loads).
FAIL_AFTER = 15
FAILING_MODEL = f"""
import mlflow
from mlflow.pyfunc import PythonModel


class BreaksAfter(PythonModel):
    calls = 0

    def predict(self, context, model_input, params=None):
        BreaksAfter.calls += 1
        if BreaksAfter.calls > {FAIL_AFTER}:
            raise RuntimeError("this model breaks after {FAIL_AFTER} calls")
        return [3.0] * len(model_input)


mlflow.models.set_model(BreaksAfter())
"""


@pytest.fixture(scope="module")
def failing_model_dir(place) -> str:
    import mlflow.pyfunc

    code = place / "breaks_after.py"
    code.write_text(FAILING_MODEL)
    path = place / "breaks-after"
    mlflow.pyfunc.save_model(path, python_model=str(code))
    subprocess.run(["chmod", "-R", "a+rX", str(path)], check=True)  # noqa: S603, S607
    return str(path)


@pytest.fixture(scope="module")
def local_dep(hub_factory, model_server_env):
    with service_hub(
        hub_factory,
        "deployer",
        tagged("sycwl-"),
        tagged("shipyard-test-cwl"),
        ["deployer"],
        configs={"deployer": LOCAL_DEPLOYER_CONFIG},
        profiles=SERVING_PROFILES,
    ) as hub:
        yield DeployerClient(hub, hub.create_user("alice"))


@needs_root
def test_a_real_model_that_breaks_is_rolled_back_under_load(
    local_dep, model_dir, failing_model_dir
):
    """Real model servers (LocalBackend, the ``model-server`` environment): the baseline is
    y = 2x + 1, the canary a model whose ``predict`` raises after its first 15 calls.

    The bound on the callers' failed requests is the breaker's, as with the fake backend
    above: its 30 s window opens it once more than half of at least
    ``breaker_min_requests`` (20 by default here) canary requests failed, so after at most
    15 + 1 failures past the first 20 requests; the error-rate threshold (0.2 of at least
    20) usually rolls it back sooner. Plus at most one request in flight per thread.
    """
    dep, name = local_dep, "real-canary"
    r = dep(
        "POST",
        "api/deployments",
        json={"name": name, "model_uri": str(model_dir), "profile": "serving"},
    )
    assert r.status_code == 201, r.text
    dep.wait_state(name, 1, "ready", 180)
    two = add_canary(
        dep,
        name,
        failing_model_dir,
        percent=50,
        window_seconds=300,
        max_error_rate=0.2,
        min_requests=20,
    )
    with Load(dep, name, {"dataframe_split": {"columns": ["x"], "data": [[1.0]]}}) as load:
        dep.wait_state(name, two, "ready", 180)
        decided = wait_decided(dep, name, two, 120)
        after = load.total
        wait_for(lambda: load.total >= after + 40, 60, 0.1, "40 answers after the rollback")
        failed_after = load.codes[500]
        wait_for(lambda: load.total >= after + 80, 60, 0.1, "80 answers after the rollback")
    print(f"\nreal failing canary: {dict(load.codes)}; {decided['reason']}")
    assert decided["state"] == "rolled_back", decided
    assert "error rate" in decided["reason"] or "circuit breaker" in decided["reason"]
    assert set(load.codes) <= {200, 500}, load.codes
    assert 1 <= load.codes[500] <= FAIL_AFTER + 1 + THREADS, load.codes
    assert load.codes[500] == failed_after, "requests failed after the rollback"
    assert {round(p, 6) for p in load.predictions} == {3.0}  # both models answer 3
    assert sum(load.predictions.values()) == load.codes[200]
    assert dep("GET", f"api/deployments/{name}").json()["traffic"] == {"1": 100}
    assert [r["action"] for r in decisions(dep, name)] == ["deployment.rollback"]
    dep.wait_state(name, two, "stopped", 60)
    assert dep("DELETE", f"api/deployments/{name}").status_code == 204
