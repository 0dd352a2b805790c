"""Tokens Shipyard mints for its owners' code: only what it needs, gone with its use.

Issue 12 point 6, against a real hub with the scheduler, the tracking service and
the deployer: the run's notebook asks the hub who its token is and what it may do,
tries the services it should and should not reach, and leaves the token where the
test finds it after the run, to show it no longer works.

Issue 15 point 6, on the same hub with the real LocalBackend and model server: a
replica's tracking token is revoked once the version's model is loaded, later
replicas (a scale-up, a restart after kill -9) serve from the version's copy with
no token, and nothing of a deleted deployment stays valid.
"""

from __future__ import annotations

import json
import os
import signal
from datetime import datetime
from pathlib import Path

import psutil
import pytest
import requests

from hub_ext.services.scheduler.runenv import TOKEN_MARGIN

from .conftest import needs_root
from .hubtools import tagged, wait_for
from .services import (
    LOCAL_DEPLOYER_CONFIG,
    SERVING_PROFILES,
    create_job,
    log_model,
    notebook,
    scheduler_hub,
    users_with_accounts,
)

pytestmark = [needs_root]

PROBE = """
import json, os, urllib.error, urllib.request
token = os.environ["JUPYTERHUB_API_TOKEN"]
base = os.environ["SHIPYARD_DEPLOYER_URL"].rsplit("/services/", 1)[0]

def status(path):
    request = urllib.request.Request(base + path, headers={"Authorization": "token " + token})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as e:
        return e.code, None

code, me = status("/hub/api/user")
facts = {
    "whoami": code,
    "name": me and me.get("name"),
    "scopes": me and sorted(me.get("scopes", [])),
    "user": os.environ["JUPYTERHUB_USER"],
    "mlflow_token_same": os.environ.get("MLFLOW_TRACKING_TOKEN") == token,
    "deployments": status("/services/deployer/api/deployments")[0],
    "tracking": status("/services/tracking/api/2.0/mlflow/experiments/search?max_results=1")[0],
    "scheduler": status("/services/scheduler/api/jobs")[0],
    "hub_users": status("/hub/api/users")[0],
    "bob": status("/hub/api/users/bob")[0],
}
path = os.path.expanduser("~/run-token.json")
with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
    json.dump({"facts": facts, "token": token}, f)
"""


CGROUPS = tagged("shipyard-test-tok")


@pytest.fixture(scope="module")
def sched(hub_factory, model_server_env):
    """The hub with the scheduler, tracking and the deployer (LocalBackend, real replicas)."""
    with scheduler_hub(
        hub_factory,
        "runtok",
        tagged("sytok-"),
        CGROUPS,
        ["tracking", "deployer"],
        configs={"deployer": LOCAL_DEPLOYER_CONFIG},
        profiles=SERVING_PROFILES,
        probe="tokadmin",
    ) as client:
        yield client


@pytest.fixture(scope="module")
def users(sched, home_root):
    """alice and bob, with accounts and homes (the scheduler runs alice's jobs)."""
    return users_with_accounts(sched.hub, home_root, {"alice": [], "bob": []})


def test_a_run_token_reaches_tracking_and_the_deployer_as_its_owner_and_nothing_else(sched, users):
    alice = users["alice"]
    home: Path = alice[1]
    job = create_job(sched, alice, "probe", notebook(PROBE), timeout_seconds=300)
    r = sched.call("POST", f"api/jobs/{job['id']}/runs", alice[0], json={})
    assert r.status_code == 201, r.text
    run = sched.wait_run(r.json()["id"], alice[0], timeout=180)
    assert run["status"] == "succeeded", run
    kept = json.loads((home / "run-token.json").read_text())
    facts, token = kept["facts"], kept["token"]

    # the run acts as its owner, with exactly the two services' scopes
    assert facts["whoami"] == 200 and facts["name"] == "alice" == facts["user"]
    # (the hub adds to every token the right to read its own owner's name and groups)
    identify = {"read:users:name!user=alice", "read:users:groups!user=alice"}
    assert set(facts["scopes"]) - identify == {
        "access:services!service=tracking",
        "access:services!service=deployer",
    }, facts
    assert facts["mlflow_token_same"] is True
    # it may use tracking and the deployer (as alice) ...
    assert facts["deployments"] == 200, facts
    assert facts["tracking"] == 200, facts
    # ... and nothing else: not the scheduler, not the hub's API, not another user
    assert facts["scheduler"] in (401, 403), facts
    assert facts["hub_users"] in (401, 403), facts
    assert facts["bob"] in (403, 404), facts

    # it expired with the run: revoked at its end, and no longer listed
    def revoked():
        answer = requests.get(
            f"{sched.hub.url}/hub/api/user",
            headers={"Authorization": f"token {token}"},
            timeout=30,
        )
        return answer.status_code in (401, 403)

    wait_for(revoked, 30, 0.2, "the run's token to be revoked")
    tokens = sched.hub.api("GET", "/users/alice/tokens").json()["api_tokens"]
    assert not [t for t in tokens if f"scheduled run {run['id']} " in (t.get("note") or "")]


def test_a_run_token_never_outlives_the_run_by_more_than_the_margin(sched, users):
    """Expiry is the backstop when the service dies before it can revoke."""
    alice = users["alice"]
    nb = notebook("import time; time.sleep(20)")
    job = create_job(sched, alice, "sleeper", nb, timeout_seconds=90)
    r = sched.call("POST", f"api/jobs/{job['id']}/runs", alice[0], json={})
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]

    def issued():
        tokens = sched.hub.api("GET", "/users/alice/tokens").json()["api_tokens"]
        mine = [t for t in tokens if f"scheduled run {run_id} " in (t.get("note") or "")]
        return mine[0] if mine else None

    token = wait_for(issued, 60, 0.2, "the run's token")
    created = datetime.fromisoformat(token["created"].replace("Z", "+00:00"))
    expires = datetime.fromisoformat(token["expires_at"].replace("Z", "+00:00"))
    assert (expires - created).total_seconds() <= 90 + TOKEN_MARGIN + 1
    r = sched.call("PATCH", f"api/runs/{run_id}", alice[0], json={"status": "cancelled"})
    assert r.status_code == 200, r.text
    sched.wait_run(run_id, alice[0], timeout=120)
    wait_for(lambda: issued() is None, 30, 0.2, "the token of the cancelled run to go")


# ------------------------------------------------------------- replicas' tokens


def replica_pids(hub, name: str) -> set[int]:
    """The model server processes serving ``name`` (``owner/deployment/version``)."""
    pids = set()
    for proc in psutil.Process(hub.proc.pid).children(recursive=True):
        try:
            if "hub_ext.runtime.modelserver" not in " ".join(proc.cmdline()):
                continue
            if proc.environ().get("SHIPYARD_MODELSERVER_NAME") == name:
                pids.add(proc.pid)
        except psutil.Error:
            continue
    return pids


def hub_accepts(hub, token: str) -> bool:
    answer = requests.get(
        f"{hub.url}/hub/api/user", headers={"Authorization": f"token {token}"}, timeout=30
    )
    assert answer.status_code in (200, 401, 403), answer.text
    return answer.status_code == 200


def deployment_tokens(hub, owner: str, name: str) -> list[dict]:
    """The owner's tokens whose note names the deployment (the deployer's notes do)."""
    tokens = hub.api("GET", f"/users/{owner}/tokens").json()["api_tokens"]
    return [t for t in tokens if f"{owner}/{name}/" in (t.get("note") or "")]


def test_a_replica_token_ends_once_the_model_is_loaded_and_nothing_outlives_the_deployment(
    sched, users
):
    hub = sched.hub
    token = users["alice"][0]
    headers = {"Authorization": f"token {token}"}
    deployments = f"{hub.url}/services/deployer/api/deployments"
    name = "tokmodel"
    run_id = log_model(hub, token)
    r = requests.post(
        deployments,
        json={"name": name, "model_uri": f"runs:/{run_id}/model", "profile": "serving"},
        headers=headers,
        timeout=60,
    )
    assert r.status_code == 201, r.text

    def ready():
        v = requests.get(f"{deployments}/{name}/versions/1", headers=headers, timeout=30)
        assert v.status_code == 200 and v.json()["state"] != "failed", v.text
        return v.json()["state"] == "ready"

    wait_for(ready, 240, 0.3, "the deployment")

    def predicts() -> bool:
        answer = requests.post(
            f"{hub.url}/services/deployer/models/alice/{name}/invocations",
            json={"dataframe_split": {"columns": ["x"], "data": [[1.0], [2.0]]}},
            headers=headers,
            timeout=30,
        )
        assert answer.status_code in (200, 503), answer.text
        return answer.status_code == 200 and len(answer.json()["predictions"]) == 2

    # the replica read the model with a token of alice's (tracking only) ...
    (first,) = replica_pids(hub, f"alice/{name}/1")
    replica_token = psutil.Process(first).environ().get("MLFLOW_TRACKING_TOKEN")
    assert replica_token, "the replica got no tracking token to read runs:/ with"
    # ... which is revoked now that the model is loaded, while the replica serves on
    wait_for(lambda: not hub_accepts(hub, replica_token), 30, 0.2, "the token to be revoked")
    assert predicts()
    assert deployment_tokens(hub, "alice", name) == []

    # a new replica loads the version's copy: no token is made for it
    r = requests.patch(f"{deployments}/{name}", json={"replicas": 2}, headers=headers, timeout=300)
    assert r.status_code == 200, r.text
    assert len(replica_pids(hub, f"alice/{name}/1")) == 2
    assert deployment_tokens(hub, "alice", name) == []

    # a replica killed is restarted and serves from the copy, with no valid token
    os.kill(first, signal.SIGKILL)

    def replaced():
        pids = replica_pids(hub, f"alice/{name}/1")
        return len(pids) == 2 and first not in pids and pids

    pids = wait_for(replaced, 120, 0.2, "the killed replica to be restarted")
    wait_for(predicts, 120, 0.2, "the restarted replicas to serve")
    for pid in pids:
        left = psutil.Process(pid).environ().get("MLFLOW_TRACKING_TOKEN")
        assert not left or not hub_accepts(hub, left)
    assert deployment_tokens(hub, "alice", name) == []

    # deleted: no token of the deployment is left
    r = requests.delete(f"{deployments}/{name}", headers=headers, timeout=120)
    assert r.status_code == 204, r.text
    assert deployment_tokens(hub, "alice", name) == []
    assert not hub_accepts(hub, replica_token)


def test_a_deployer_revokes_the_tokens_its_predecessor_left(sched, users, tmp_path):
    """A deployer that died could not revoke; the next one does, from the ids it recorded."""
    import asyncio

    from hub_ext.services.deployer.core import TrackingCredentials

    hub = sched.hub
    ledger = tmp_path / "tracking-tokens.json"

    def credentials() -> TrackingCredentials:
        return TrackingCredentials(
            f"{hub.url}/hub/api", hub.admin_token, "http://tracking", 600, ledger=ledger
        )

    env = asyncio.run(credentials().issue("alice", "alice--gone-v1", "alice/gone/1"))
    token = env["MLFLOW_TRACKING_TOKEN"]
    assert hub_accepts(hub, token)
    assert (ledger.stat().st_mode & 0o777) == 0o600
    assert token not in ledger.read_text()  # ids only
    (listed,) = deployment_tokens(hub, "alice", "gone")
    created = datetime.fromisoformat(listed["created"].replace("Z", "+00:00"))
    expires = datetime.fromisoformat(listed["expires_at"].replace("Z", "+00:00"))
    assert (expires - created).total_seconds() <= 601

    asyncio.run(credentials().release_earlier())  # the next deployer, at its start
    assert not hub_accepts(hub, token)
    assert deployment_tokens(hub, "alice", "gone") == []


async def test_a_kubernetes_versions_token_is_renewed_in_its_secret_and_the_old_one_revoked(
    sched, users, monkeypatch
):
    """Pods read runs:/ models at every start, so their token lives while the version runs.

    The deployer renews it at half its life by applying the version's Secret again
    (the Kubernetes API is the one double here; the hub and its tokens are real): pods
    that start later read the new token, the old one stops working, and a stopped
    version leaves no token valid.
    """
    from dataclasses import replace

    from hub_ext.host.k8s import KubePlacement
    from hub_ext.services.deployer.core import TrackingCredentials
    from hub_ext.services.deployer.kubernetes import KubernetesBackend, object_name

    from .modelspecs import KUBE_PROFILES, READY, fake_clients, kube_version

    hub = sched.hub
    backend = KubernetesBackend(placement=KubePlacement(namespace="models"))
    assert backend.keeps_credentials  # what makes the deployer renew at all
    calls = fake_clients(backend, monkeypatch, READY, [])
    credentials = TrackingCredentials(f"{hub.url}/hub/api", hub.admin_token, "http://tracking", 60)
    spec = kube_version(KUBE_PROFILES[0], owner="alice", name="renewed").spec
    what = "alice/renewed/3"

    def secret_tokens() -> list[str]:
        return [
            c[1][2]["stringData"]["MLFLOW_TRACKING_TOKEN"]
            for c in calls
            if c[0] == "patch_namespaced_secret" and c[1][0] == object_name(spec.key)
        ]

    env = await credentials.issue("alice", spec.key, what)
    await backend.start(replace(spec, env={**spec.env, **env}))
    (first,) = secret_tokens()
    assert first == env["MLFLOW_TRACKING_TOKEN"] and hub_accepts(hub, first)

    renewed = await credentials.renew(
        spec.key, "alice", what, lambda env: backend.refresh_env(spec.key, env)
    )
    assert renewed
    first_renewal, second = secret_tokens()
    assert first_renewal == first and second != first  # the same Secret, applied again
    assert hub_accepts(hub, second)
    assert not hub_accepts(hub, first)  # the older token is revoked once the Secret holds the new
    assert [c[0] for c in calls].count("patch_namespaced_deployment") == 1  # nothing rolls out
    (listed,) = deployment_tokens(hub, "alice", "renewed")
    created = datetime.fromisoformat(listed["created"].replace("Z", "+00:00"))
    expires = datetime.fromisoformat(listed["expires_at"].replace("Z", "+00:00"))
    assert (expires - created).total_seconds() <= 61  # the short lifetime, every time

    # a Secret the API refuses: the running token stays valid, nothing else is revoked
    async def refused(env):
        raise RuntimeError("the API server refused the Secret")

    assert not await credentials.renew(spec.key, "alice", what, refused)
    assert hub_accepts(hub, second)

    # the version stops: no token of it stays valid
    await backend.stop(spec.key)
    await credentials.release(spec.key)
    assert deployment_tokens(hub, "alice", "renewed") == []
    assert not hub_accepts(hub, second)
