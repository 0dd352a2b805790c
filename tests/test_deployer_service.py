"""The deployer service behind a real hub: REST API, authorization, routing, rollouts, restart.

One hub with the deployer per module. Until the real backend and model server
are exercised end to end, the replicas here come from
:class:`tests.fake_backend.FakeModelBackend`, a **test double of the backend only**: it
runs real HTTP processes on loopback that speak the model server's protocol, so the
deployer, its router and the hub's proxy are all real. The service imports it by name
through its config file (:data:`tests.services.FAKE_DEPLOYER_CONFIG`; STYLE rule 21:
doubles live in tests/ and are injected through a ``Type`` trait).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from .hubtools import tagged, wait_for
from .services import DeployerClient, service_hub


@pytest.fixture(scope="module")
def dep(hub_factory):
    with service_hub(
        hub_factory, "deployer", tagged("sydep-"), tagged("shipyard-test-dep"), ["deployer"]
    ) as hub:
        yield DeployerClient(hub, hub.create_user("alice"))


@pytest.fixture(scope="module")
def bob(dep):
    return dep.hub.create_user("bob", groups=["team"])


def deploy(dep, name: str, model_uri: str) -> int:
    """A new deployment of alice's, ready; its first version's number."""
    r = dep("POST", "api/deployments", json={"name": name, "model_uri": model_uri})
    assert r.status_code == 201, r.text
    [first] = r.json()["versions"]
    dep.wait_state(name, first["version"], "ready")
    return first["version"]


def add_version(dep, name: str, **body) -> int:
    """A new version of ``name`` (not waited for); its number, as the API gives it."""
    r = dep("POST", f"api/deployments/{name}/versions", json=body)
    assert r.status_code == 201, r.text
    return r.json()["version"]


def test_openapi_describes_every_route(dep):
    from hub_ext.services.deployer.handlers import API_TABLE

    doc = dep("GET", "openapi.json", token="").json()
    for path, handler in API_TABLE:
        templated = "/" + path.replace("([a-z0-9][a-z0-9-]{0,39})", "{name}", 1)
        templated = templated.replace("([1-9][0-9]{0,8})", "{version}")
        assert templated in doc["paths"], templated
        for method in ("get", "post", "put", "patch", "delete"):
            if method.upper() in handler.__dict__ or method in handler.__dict__:
                assert method in doc["paths"][templated], (templated, method)


@pytest.mark.parametrize(
    "body,field",
    [
        ({"name": "Bad_Name", "model_uri": "models:/fake/a"}, "name"),
        ({"name": "a--b", "model_uri": "models:/fake/a"}, "name"),
        ({"name": "ok", "model_uri": "relative/path"}, "model_uri"),
        ({"name": "ok", "model_uri": "-x"}, "model_uri"),
        ({"name": "ok", "model_uri": "models:/fake/a", "replicas": 0}, "replicas"),
        ({"name": "ok", "model_uri": "models:/fake/a", "replicas": True}, "replicas"),
        ({"name": "ok", "model_uri": "models:/fake/a", "replicas": 4}, "replicas"),
        ({"name": "ok", "model_uri": "models:/fake/a", "profile": "nope"}, "profile"),
        ({"name": "ok", "model_uri": "models:/fake/a", "profile": "Not A Slug"}, "profile"),
        (
            {"name": "ok", "model_uri": "models:/fake/a", "training_summary": [1]},
            "training_summary",
        ),
        ({"name": "ok", "model_uri": "models:/fake/a", "colour": "red"}, "colour"),
        ({"model_uri": "models:/fake/a"}, "name"),
    ],
)
def test_bad_input_is_400_naming_the_field(dep, body, field):
    r = dep("POST", "api/deployments", json=body)
    assert r.status_code == 400, r.text
    assert field in r.json()["message"]


def test_bad_requests(dep):
    r = dep("POST", "api/deployments", data=b"{not json", headers={"Content-Type": "x"})
    assert r.status_code == 400 and "not JSON" in r.json()["message"]
    r = dep(
        "POST",
        "api/deployments",
        json={"name": "ok", "model_uri": "models:/fake/a", "profile": "roomy"},
    )
    assert r.status_code == 403 and "research" in r.json()["message"]
    assert dep("GET", "api/deployments/missing").status_code == 404
    assert dep("GET", "api/deployments", token="").status_code == 401
    assert dep("GET", "api/nothing-here").status_code == 404
    assert dep("GET", "api/deployments?owner=bob").status_code == 403


def test_a_gpu_profile_without_a_gpu_is_refused_with_the_reason(dep):
    """On a machine without GPU a deployment (or version) asking for the GPU profile is
    refused (409) with the reason before anything starts, not failed later on an environment
    ``shipyard up`` skipped; a version whose profile gained a GPU since fails at its start
    with that reason, and the traffic stays where it was."""
    rhea = DeployerClient(dep.hub, dep.hub.create_user("rhea", groups=["research"]))
    body = {"name": "vision", "model_uri": "models:/fake/v", "profile": "gpu"}
    r = rhea("POST", "api/deployments", json=body)
    assert r.status_code == 409, r.text
    message = r.json()["message"]
    assert "no GPU on this machine" in message and "tiny" in message, message
    assert rhea("GET", "api/deployments/vision").status_code == 404
    r = rhea("POST", "api/deployments", json={**body, "profile": "roomy"})
    assert r.status_code == 201, r.text
    [first] = [v["version"] for v in r.json()["versions"]]
    rhea.wait_state("vision", first, "ready")
    r = rhea(
        "POST",
        "api/deployments/vision/versions",
        json={"model_uri": "models:/fake/w", "profile": "gpu"},
    )
    assert r.status_code == 409 and "no GPU on this machine" in r.json()["message"], r.text

    r = rhea(
        "POST",
        "api/deployments/vision/versions",
        json={"model_uri": "models:/fake/w", "profile": "tiny"},
    )
    assert r.status_code == 201, r.text
    second = r.json()["version"]
    assert second == first + 1, "the refused version took no number"
    rhea.wait_state("vision", second, "ready")
    rhea.wait_state("vision", first, "stopped")
    # the admin gives roomy a GPU (the file is re-read): rolling back to version 1 fails
    original = dep.hub.profiles_file.read_text()
    changed = original.replace(
        "    groups: [research]\n  - slug: gpu", "    gpu: 1\n    groups: [research]\n  - slug: gpu"
    )
    assert changed != original
    dep.hub.profiles_file.write_text(changed)
    try:
        r = rhea("POST", "api/deployments/vision/rollback", json={"version": first})
        assert r.status_code == 200, r.text
        v = rhea.wait_state("vision", first, "failed")
        assert "cannot run here: no GPU on this machine" in v["reason"], v["reason"]
        assert rhea("GET", "api/deployments/vision").json()["traffic"] == {str(second): 100}
    finally:
        dep.hub.profiles_file.write_text(original)
    assert rhea("DELETE", "api/deployments/vision").status_code == 204


def test_the_backends_count_the_gpus_as_the_spawners_do():
    """LocalBackend counts its ``gpu_devices``, as LocalProfileSpawner does; Kubernetes does
    not know the node (None: nothing is refused, the cluster schedules or says why not)."""
    from hub_ext.services.deployer.kubernetes import KubernetesBackend
    from hub_ext.services.deployer.local import LocalBackend

    assert LocalBackend(gpu_devices=["0", "1"]).gpu_count == 2
    assert LocalBackend(gpu_devices=[]).gpu_count == 0
    assert KubernetesBackend().gpu_count is None


def test_deploy_invoke_and_access(dep, bob):
    r = dep("POST", "api/deployments", json={"name": "churn", "model_uri": "models:/fake/one"})
    assert r.status_code == 201, r.text
    d = r.json()
    [first] = d["versions"]
    assert first["state"] == "starting" and d["traffic"] == {}
    assert d["url"] == "/services/deployer/models/alice/churn/invocations"
    one = str(first["version"])
    dep.wait_state("churn", first["version"], "ready")
    assert dep("GET", "api/deployments/churn").json()["traffic"] == {one: 100}
    r = dep.invoke("alice", "churn")
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": ["one"]} and r.headers["X-Shipyard-Model-Version"] == one
    r = dep.invoke("alice", "churn", data="a,b\n1,2\n", headers={"Content-Type": "text/csv"})
    assert r.status_code == 200
    # limits before forwarding
    r = dep.invoke("alice", "churn", data=b"x", headers={"Content-Type": "application/pickle"})
    assert r.status_code == 415
    r = dep.invoke("alice", "churn", json={"inputs": [[0] * 2000]})
    assert r.status_code == 413
    # who may invoke
    assert dep.invoke("alice", "churn", token="").status_code == 401
    assert dep.invoke("alice", "churn", token="not-a-token").status_code == 401
    missing = dep.invoke("alice", "nothing", token=bob)
    hidden = dep.invoke("alice", "churn", token=bob)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["message"].replace("churn", "X") == missing.json()["message"].replace(
        "nothing", "X"
    )
    # a token without the scope: 403, whether or not the deployment exists
    r = dep.hub.api(
        "POST", "/users/bob/tokens", json={"scopes": ["access:services!service=deployer"]}
    )
    unscoped = r.json()["token"]
    assert dep.invoke("alice", "churn", token=unscoped).status_code == 403
    assert dep.invoke("alice", "nothing", token=unscoped).status_code == 403
    # the REST API of another user's deployment is missing too
    assert dep("GET", "api/deployments/churn", token=bob).status_code == 404
    assert dep("PUT", "api/deployments/churn/grants", token=bob, json={}).status_code == 404
    # a grant lets bob invoke (by name, then by group); he still can't manage it
    r = dep("PUT", "api/deployments/churn/grants", json={"users": ["bob"]})
    assert r.status_code == 200 and r.json()["grants"]["users"] == ["bob"]
    assert dep.invoke("alice", "churn", token=bob).status_code == 200
    dep("PUT", "api/deployments/churn/grants", json={"groups": ["team"]})
    assert dep.invoke("alice", "churn", token=bob).status_code == 200
    assert dep("DELETE", "api/deployments/churn", token=bob).status_code == 404
    dep("PUT", "api/deployments/churn/grants", json={})
    assert dep.invoke("alice", "churn", token=bob).status_code == 404
    health = dep("GET", "models/alice/churn/health")
    assert health.status_code == 200 and health.json()["status"] == "ready"
    assert dep("DELETE", "api/deployments/churn").status_code == 204


def test_failed_version_keeps_traffic(dep):
    one = deploy(dep, "keeps-traffic", "models:/fake/one")
    broken = add_version(dep, "keeps-traffic", model_uri="models:/fake-broken/x")
    v = dep.wait_state("keeps-traffic", broken, "failed")
    assert "never load" in v["reason"]
    assert dep("GET", "api/deployments/keeps-traffic").json()["traffic"] == {str(one): 100}
    assert dep.invoke("alice", "keeps-traffic").json() == {"predictions": ["one"]}
    # the failed version has no replica to call, and takes no traffic
    assert dep.invoke("alice", "keeps-traffic", version=broken).status_code == 503
    r = dep("POST", "api/deployments/keeps-traffic/promote", json={"version": broken})
    assert r.status_code == 409 and "failed" in r.json()["message"]
    r = dep("PUT", "api/deployments/keeps-traffic/traffic", json={"split": {str(broken): 100}})
    assert r.status_code == 409, r.text
    assert dep("DELETE", "api/deployments/keeps-traffic").status_code == 204


def test_canary_split_promote_rollback(dep):
    one = deploy(dep, "canary", "models:/fake/one")
    three = add_version(dep, "canary", model_uri="models:/fake/three", canary_percent=50)
    dep.wait_state("canary", three, "ready")
    assert dep("GET", "api/deployments/canary").json()["traffic"] == {
        str(one): 50,
        str(three): 50,
    }
    seen = Counter(dep.invoke("alice", "canary").json()["predictions"][0] for _ in range(20))
    assert seen == {"one": 10, "three": 10}
    assert dep.invoke("alice", "canary", version=three).json() == {"predictions": ["three"]}
    assert dep.invoke("alice", "canary", version=three + 1).status_code == 404
    # bad splits
    for split, status in [({str(one): 50}, 400), ({str(one): 50, "x": 50}, 400)]:
        assert (
            dep("PUT", "api/deployments/canary/traffic", json={"split": split}).status_code
            == status
        )
    r = dep("POST", "api/deployments/canary/promote", json={"version": three})
    assert r.json()["traffic"] == {str(three): 100} and r.json()["previous_version"] == one
    dep.wait_state("canary", one, "stopped")
    # rollback (no version: the previous one) restarts the first version, then switches
    r = dep("POST", "api/deployments/canary/rollback", json={})
    assert r.status_code == 200, r.text
    assert r.json()["traffic"] == {str(three): 100}
    dep.wait_state("canary", one, "ready")
    assert dep("GET", "api/deployments/canary").json()["traffic"] == {str(one): 100}
    assert dep.invoke("alice", "canary").json() == {"predictions": ["one"]}
    dep.wait_state("canary", three, "stopped")
    assert dep("DELETE", "api/deployments/canary").status_code == 204


def test_scale_and_metrics(dep):
    one = deploy(dep, "scaled", "models:/fake/one")
    r = dep("PATCH", "api/deployments/scaled", json={"replicas": 2})
    assert r.status_code == 200 and r.json()["replicas"] == 2
    assert dep("PATCH", "api/deployments/scaled", json={"replicas": 9}).status_code == 400
    for _ in range(5):
        assert dep.invoke("alice", "scaled").status_code == 200

    def polled():
        m = dep("GET", "api/deployments/scaled/metrics").json()["versions"][str(one)]
        # the router's figures come from the deployer's front, which reports them as they change
        seen = m.get("requests", 0) >= 5
        return m if m["drift"] and m["replicas_ready"] == 2 and seen else None

    m = wait_for(polled, 10, 0.2, "stats to be polled")
    assert m["state"] == "ready" and m["traffic"] == 100 and m["requests"] >= 5
    assert m["latency_ms"]["p50"] > 0 and m["error_rate"] == 0 and m["drift"] == {"x": 0.25}
    assert dep("DELETE", "api/deployments/scaled").status_code == 204


def test_zero_failures_under_load_during_rollout(dep):
    """Deploy a second version, then roll back to the first, while 8 clients call the model
    without pause; every client's every answer is read and must be its model's prediction."""
    one = deploy(dep, "loaded", "models:/fake/one")
    stop = threading.Event()
    lock = threading.Lock()
    results: Counter = Counter()

    def client() -> tuple[Counter, list[str]]:
        """This client's predictions and failures, until ``stop``."""
        mine: Counter = Counter()
        failures: list[str] = []
        session = requests.Session()
        session.headers["Authorization"] = f"token {dep.token}"
        url = dep.base + "models/alice/loaded/invocations"
        while not stop.is_set():
            r = session.post(url, json={"inputs": [[1]]}, timeout=30)
            if r.status_code != 200:
                failures.append(f"{r.status_code} {r.text[:200]}")
                continue
            prediction = r.json()["predictions"][0]
            mine[prediction] += 1
            with lock:
                results[prediction] += 1
        return mine, failures

    def served(tag: str, more_than: int):
        def enough() -> bool:
            for c in clients:
                if c.done():  # a client ends before ``stop`` only by an exception: raise it
                    c.result()
                    raise AssertionError("a client stopped before the end")
            return results[tag] > more_than

        return enough

    with ThreadPoolExecutor(8) as pool:
        clients = [pool.submit(client) for _ in range(8)]
        try:
            wait_for(served("one", 8), 30, 0.05, "the clients to be served")
            four = add_version(dep, "loaded", model_uri="models:/fake/four")
            dep.wait_state("loaded", four, "ready")
            dep.wait_state("loaded", one, "stopped", timeout=40)
            # the load goes on against the new version alone for a while
            wait_for(served("four", results["four"] + 16), 30, 0.05, "requests to four")
            r = dep("POST", "api/deployments/loaded/rollback", json={"version": one})
            assert r.status_code == 200, r.text
            dep.wait_state("loaded", one, "ready")
            dep.wait_state("loaded", four, "stopped", timeout=40)
            wait_for(served("one", results["one"] + 16), 30, 0.05, "requests to one again")
        finally:
            stop.set()
        answers = [c.result(timeout=60) for c in clients]  # a client's exception fails here
    for mine, failures in answers:
        assert not failures, failures[:5]
        assert sum(mine.values()) > 0, "every client was served"
        assert set(mine) <= {"one", "four"}, mine
    assert sum((mine for mine, _ in answers), Counter()) == results
    assert results["one"] > 0 and results["four"] > 0
    assert dep("DELETE", "api/deployments/loaded").status_code == 204


def test_a_request_waits_for_a_replica_then_gets_503_with_retry_after(dep):
    """A ready version whose only replica died (this backend double never restarts it):
    requests wait for a replica ``queue_timeout`` (2 s here) in a queue of at most
    ``max_queued_requests`` (2 here), then get 503 JSON with Retry-After; a request that
    finds the queue full gets it at once."""
    import psutil

    deploy(dep, "lonely", "models:/fake/lonely")
    assert dep.invoke("alice", "lonely").status_code == 200
    [replica] = [
        p
        for p in psutil.process_iter(["cmdline"])
        if (p.info["cmdline"] or ["", ""])[-1] == "ok" and p.info["cmdline"][-2].endswith("lonely")
    ]
    replica.kill()
    replica.wait(10)

    def timed(_):
        started = time.monotonic()
        r = dep.invoke("alice", "lonely")
        return r, time.monotonic() - started

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(timed, range(6)))
    waited, refused = [], []
    for r, seconds in answers:
        assert r.status_code == 503 and r.json()["error_code"] == "UNAVAILABLE", r.text
        assert r.headers["Retry-After"] == "2"
        message = r.json()["message"]
        if "became ready within 2 seconds" in message:
            waited.append(seconds)
        else:
            assert "2 requests wait for them already" in message, message
            refused.append(seconds)
    assert waited and refused, answers
    assert min(waited) >= 2 and max(refused) < 2, (waited, refused)
    assert dep("DELETE", "api/deployments/lonely").status_code == 204


def test_breaker_takes_failing_version_out(dep):
    deploy(dep, "flaky", "models:/fake/good")
    bad = add_version(dep, "flaky", model_uri="models:/fake-error/bad", canary_percent=50)
    dep.wait_state("flaky", bad, "ready")
    codes = Counter(dep.invoke("alice", "flaky").status_code for _ in range(40))
    assert codes[500] >= 5 and codes[500] <= 12, codes  # opens after ~10 requests at 50%
    assert all(dep.invoke("alice", "flaky").status_code == 200 for _ in range(10))
    # the breaker is the front's, reported to the API within a fraction of a second
    v = wait_for(
        lambda: (
            v
            if (v := dep("GET", f"api/deployments/flaky/versions/{bad}").json())["breaker"]["open"]
            else None
        ),
        10,
        0.1,
        "the API to show the open breaker",
    )
    assert "failed" in v["breaker"]["reason"]
    m = dep("GET", "api/deployments/flaky/metrics").json()["versions"][str(bad)]
    assert m["breaker"]["open"] and m["error_rate"] > 0.5
    assert dep("DELETE", "api/deployments/flaky").status_code == 204


def test_restart_brings_versions_back_and_delete(dep):
    import psutil

    deploy(dep, "steady", "models:/fake/steady")
    # the service's process as the hub recorded it (a socket holder listens on the port too)
    pid = json.loads((dep.hub.data_dir / "services" / "deployer.json").read_text())["pid"]
    starts = dep.hub.log_path.read_text().count("Starting service 'deployer'")
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie", 30)
    # the hub sees the exit at once (it watches the process) and starts it again
    wait_for(
        lambda: dep.hub.log_path.read_text().count("Starting service 'deployer'") > starts,
        60,
        0.5,
        "the hub to start the deployer again",
    )

    def serving():  # the proxy answers with the hub's HTML page while the service is down
        try:
            r = requests.post(
                dep.base + "models/alice/steady/invocations",
                json={"inputs": [[1]]},
                headers={"Authorization": f"token {dep.token}"},
                timeout=5,
            )
        except requests.RequestException:
            return False
        return r.status_code == 200

    wait_for(serving, 60, 0.3, "the restarted deployer to serve again")
    assert dep.invoke("alice", "steady").json() == {"predictions": ["steady"]}
    assert dep("DELETE", "api/deployments/steady").status_code == 204
    assert dep("GET", "api/deployments/steady").status_code == 404
    assert dep.invoke("alice", "steady").status_code == 404
    names = [d["name"] for d in dep("GET", "api/deployments").json()["deployments"]]
    assert "steady" not in names
