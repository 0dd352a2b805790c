"""A scheduled run's token: only what the run needs, as its owner, gone with the run.

Issue 12 point 6, against a real hub with the scheduler, the tracking service and
the deployer: the run's notebook asks the hub who its token is and what it may do,
tries the services it should and should not reach, and leaves the token where the
test finds it after the run, to show it no longer works.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
import requests

from hub_ext.accounts import _create
from hub_ext.services.scheduler.runenv import TOKEN_MARGIN
from hub_ext.slugs import account_name

from .conftest import needs_root
from .hubtools import wait_for
from .test_scheduler_service import create_job, notebook, scheduler_hub

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


@pytest.fixture(scope="module")
def sched(hub_factory, tmp_path_factory):
    folder = tmp_path_factory.mktemp("run-token-config")
    with scheduler_hub(
        hub_factory,
        folder,
        "runtok",
        "sytok-",
        "shipyard-test-tok",
        SHIPYARD_TRACKING="1",
        SHIPYARD_DEPLOYER="1",
    ) as client:
        admin = client.hub.create_user("tokadmin")

        def tracking_up():  # the gateway answers 503 until MLflow behind it is up
            answer = requests.get(
                f"{client.hub.url}/services/tracking/version",
                headers={"Authorization": f"token {admin}"},
                timeout=10,
            )
            return answer.status_code == 200

        wait_for(tracking_up, 180, 0.5, "the tracking service")
        yield client


@pytest.fixture(scope="module")
def users(sched, home_root):
    """alice and bob, with accounts and homes (the scheduler runs alice's jobs)."""
    made = {}
    for name in ("alice", "bob"):
        token = sched.hub.create_user(name)
        account = account_name(name, sched.hub.account_prefix)
        entry = _create(account, str(home_root / account), f"test user {name}")
        made[name] = (token, Path(entry.pw_dir), entry)
    return made


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
