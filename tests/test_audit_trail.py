"""The audit trail is complete: every audited action, performed once, leaves exactly one record.

One real hub per module, with the tracking, scheduler, deployer, secrets and
audit services on, and real users with real tokens. :data:`CASES` is the table:
each row names an action of issue 12 (point 3) and a step that performs it
once through the hub's API or a service's API (or the CLI), returning what
the record must say (actor, target, outcome; owner where there is one).
The test runs the rows in order (later rows use what earlier ones made) and
finds, among the records written during the step, exactly one of that
action, with those fields. Denials are rows too: another user's job answers
404 and is recorded as ``denied``.

Actions not performed here are in :data:`ELSEWHERE`, each with where it is
tested; ``test_every_action_is_covered`` fails when an action is in neither,
so a new action must add its row.

The deployer runs the test double of its backend (tests/fake_backend.py's
FakeModelBackend: real HTTP processes on loopback); everything else is real.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from hub_ext.audit.actions import ACTIONS
from hub_ext.host.accounts import _create
from hub_ext.host.slugs import account_name

from .conftest import needs_root
from .hubtools import REPO, tagged, wait_for
from .openapi_checks import assert_references_resolve
from .services import service_hub

pytestmark = [needs_root]

PREFIX = tagged("syaud-")
#: Failed logins that lock an account here (the default is 5).
LOCKOUT_FAILURES = 3
#: Users who log in with a password in the steps below.
PASSWORD_USERS = ("lenny", "pat")
CGROUPS = tagged("shipyard-test-aud")

DEPLOYER_CONFIG = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
c.DeployerService.backend_class = "tests.fake_backend.FakeModelBackend"
c.DeployerService.drain_seconds = 0.5
c.DeployerService.monitor_interval = 0.5
c.DeployerService.auth_cache_seconds = 1
"""

SCHEDULER_CONFIG = """
c.SchedulerService.poll_interval = 0.3
c.SchedulerService.heartbeat_interval = 1
"""

NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "metadata": {},
            "source": "print(6 * 7)",
            "outputs": [],
            "execution_count": None,
        }
    ],
    "metadata": {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
    },
    "nbformat": 4,
    "nbformat_minor": 5,
}

#: Actions this module does not perform, and where each is tested.
ELSEWHERE = {
    "pipeline.deploy_gate": "tests/test_pipeline_deploy.py::"
    "test_the_gate_deploys_the_first_model_refuses_a_worse_one_and_deploys_a_better_one",
    "audit.retention": "tests/test_audit.py::test_retention_rotates_prunes_and_keeps_the_chain_verifiable",
}


@dataclass
class World:
    """The hub, its users' tokens, and what earlier steps made."""

    hub: Any
    tokens: dict[str, str]
    made: dict[str, Any] = field(default_factory=dict)

    @property
    def trail(self) -> Path:
        return self.hub.data_dir / "audit" / "audit.jsonl"

    def records(self) -> list[dict]:
        if not self.trail.exists():
            return []
        return [json.loads(line) for line in self.trail.read_text().splitlines() if line]

    def hub_api(self, method: str, path: str, user: str | None = None, **kw) -> requests.Response:
        token = self.tokens[user] if user else None
        return self.hub.api(method, path, token=token, **kw)

    def service(self, name: str, method: str, path: str, user: str | None, **kw):
        headers = kw.pop("headers", {})
        if user:
            headers["Authorization"] = f"token {self.tokens[user]}"
        r = requests.request(
            method, f"{self.hub.url}/services/{name}/{path}", headers=headers, timeout=60, **kw
        )
        assert r.status_code < 500, f"{method} {name}/{path}: {r.status_code} {r.text[:300]}"
        return r


def expect(actor, target, outcome="allowed", **more) -> dict:
    return {"actor": actor, "target": target, "outcome": outcome, **more}


# ------------------------------------------------------------------- the hub


def login_succeeded(w: World):
    creds = json.loads((w.hub.data_dir / "credentials.json").read_text())
    _, r = w.hub.login(creds["admin_user"], creds["admin_password"])
    assert r.status_code == 302, r.status_code
    return expect("admin", "user/admin")


def login_failed(w: World):
    _, r = w.hub.login("admin", "not-the-password")
    assert r.status_code == 403, r.status_code
    return expect(None, "user/admin", "denied", actor_kind="anonymous")


def password_user(w: World, name: str) -> str:
    """The password of ``name``, made by the fixture as an admin adds users."""
    return w.made[f"password:{name}"]


def login_locked_out(w: World):
    password = password_user(w, "lenny")
    for _ in range(LOCKOUT_FAILURES):
        assert w.hub.login("lenny", "not-lennys-password")[1].status_code == 403
    # locked: even the right password is refused
    assert w.hub.login("lenny", password)[1].status_code == 403
    return expect(None, "user/lenny", "denied", actor_kind="anonymous")


def user_approve(w: World):
    session = requests.Session()
    session.get(w.hub.url + "/hub/signup", timeout=30)
    r = session.post(
        w.hub.url + "/hub/signup",
        data={
            "username": "sunny",
            "signup_password": "Sunny-Sails-Far-7",
            "signup_password_confirmation": "Sunny-Sails-Far-7",
            "_xsrf": session.cookies.get("_xsrf"),
        },
        timeout=60,
    )
    assert r.status_code == 200, r.status_code
    creds = json.loads((w.hub.data_dir / "credentials.json").read_text())
    admin, r = w.hub.login(creds["admin_user"], creds["admin_password"])
    assert r.status_code == 302, r.status_code
    r = admin.post(
        w.hub.url + "/hub/authorize/sunny",
        data={"approve": "1", "_xsrf": admin.cookies.get("_xsrf")},
        timeout=30,
    )
    assert r.status_code == 200, r.status_code
    return expect("admin", "user/sunny")


def user_password_change(w: World):
    password = password_user(w, "pat")
    session, r = w.hub.login("pat", password)
    assert r.status_code == 302, r.status_code
    r = session.post(
        w.hub.url + "/hub/change-password",
        data={
            "old_password": password,
            "new_password": "Pat-Changed-It-9",
            "new_password_confirmation": "Pat-Changed-It-9",
            "_xsrf": session.cookies.get("_xsrf"),
        },
        timeout=60,
    )
    assert r.status_code == 200 and re.search("has been changed", r.text), r.status_code
    return expect("pat", "user/pat")


def user_create(w: World):
    assert w.hub_api("POST", "/users/dave").status_code == 201
    return expect("test-admin", "user/dave", owner="dave", actor_kind="service")


def user_create_denied(w: World):
    assert w.hub_api("POST", "/users/mallory", user="alice").status_code == 403
    return expect("alice", "user/mallory", "denied", actor_kind="user")


def user_update(w: World):
    r = w.hub_api("PATCH", "/users/dave", json={"name": "dave2"})
    assert r.status_code == 200, r.text
    return expect("test-admin", "user/dave", owner="dave")


def role_change(w: World):
    r = w.hub_api("PATCH", "/users/dave2", user="admin", json={"admin": True})
    assert r.status_code == 200, r.text
    return expect("admin", "user/dave2", details={"role": "admin", "granted": True})


def user_delete(w: World):
    assert w.hub_api("DELETE", "/users/dave2").status_code == 204
    return expect("test-admin", "user/dave2", owner="dave2")


def group_create(w: World):
    assert w.hub_api("POST", "/groups/auditors").status_code == 201
    return expect("test-admin", "group/auditors")


def group_members_add(w: World):
    r = w.hub_api("POST", "/groups/auditors/users", json={"users": ["alice"]})
    assert r.status_code == 200, r.text
    return expect("test-admin", "group/auditors", details={"users": ["alice"]})


def group_update(w: World):
    r = w.hub_api("PUT", "/groups/auditors/properties", json={"purpose": "audit"})
    assert r.status_code == 200, r.text
    return expect("test-admin", "group/auditors")


def group_members_remove(w: World):
    r = w.hub_api("DELETE", "/groups/auditors/users", json={"users": ["alice"]})
    assert r.status_code == 200, r.text
    return expect("test-admin", "group/auditors", details={"users": ["alice"]})


def group_delete(w: World):
    assert w.hub_api("DELETE", "/groups/auditors").status_code == 204
    return expect("test-admin", "group/auditors")


def token_create(w: World):
    r = w.hub_api("POST", "/users/alice/tokens", user="alice", json={"note": "audit test"})
    assert r.status_code == 201, r.text
    w.made["token"] = r.json()
    return expect("alice", "token/alice", owner="alice", details={"note": "audit test"})


def token_create_denied(w: World):
    r = w.hub_api("POST", "/users/alice/tokens", user="bob", json={"note": "steal"})
    assert r.status_code in (403, 404), r.text
    return expect("bob", "token/alice", "denied", owner="alice")


def token_delete(w: World):
    token_id = w.made["token"]["id"]
    assert w.hub_api("DELETE", f"/users/alice/tokens/{token_id}", user="alice").status_code == 204
    return expect("alice", f"token/{token_id}", owner="alice")


def server_start(w: World):
    w.hub.start_server("alice")
    return expect("test-admin", "server/alice", owner="alice", details={"profile": "tiny"})


def server_stop(w: World):
    w.hub.stop_server("alice")
    return expect("alice", "server/alice", owner="alice")


def server_start_denied(w: World):
    r = w.hub_api("POST", "/users/alice/server", user="bob")
    assert r.status_code in (403, 404), r.text
    return expect("bob", "server/alice", "denied", owner="alice")


def profiles_change(w: World):
    path = w.hub.profiles_file
    old = path.read_text()
    path.write_text(old.replace("The default for everyone.", "The default for everyone (v2)."))
    w.hub.start_server("alice")  # the spawner re-reads the file
    w.hub.stop_server("alice")
    return expect(None, f"profiles/{path.name}", actor_kind="system")


# ------------------------------------------------------------- the scheduler


def job_create(w: World):
    body = {"name": "audited", "profile": "tiny", "notebook": NOTEBOOK}
    r = w.service("scheduler", "POST", "api/jobs", "alice", json=body)
    assert r.status_code == 201, r.text
    w.made["job"] = r.json()["id"]
    return expect("alice", f"job/{w.made['job']}", owner="alice")


def job_update(w: World):
    job = w.made["job"]
    r = w.service("scheduler", "PATCH", f"api/jobs/{job}", "alice", json={"timeout_seconds": 600})
    assert r.status_code == 200, r.text
    return expect("alice", f"job/{job}", owner="alice")


def job_update_denied(w: World):
    job = w.made["job"]
    r = w.service("scheduler", "PATCH", f"api/jobs/{job}", "bob", json={"timeout_seconds": 60})
    assert r.status_code == 404, r.text
    return expect("bob", f"job/{job}", "denied", reason="not found")


def job_pause(w: World):
    job = w.made["job"]
    r = w.service("scheduler", "PATCH", f"api/jobs/{job}", "alice", json={"paused": True})
    assert r.status_code == 200, r.text
    return expect("alice", f"job/{job}", owner="alice")


def job_resume(w: World):
    job = w.made["job"]
    r = w.service("scheduler", "PATCH", f"api/jobs/{job}", "alice", json={"paused": False})
    assert r.status_code == 200, r.text
    return expect("alice", f"job/{job}", owner="alice")


def job_run(w: World):
    job = w.made["job"]
    r = w.service("scheduler", "POST", f"api/jobs/{job}/runs", "alice", json={})
    assert r.status_code == 201, r.text
    w.made["run"] = r.json()["id"]
    return expect("alice", f"job/{job}", owner="alice")


def job_run_by_trigger(w: World):
    body = {
        "name": "hooked",
        "profile": "tiny",
        "notebook": NOTEBOOK,
        "triggers": [{"kind": "webhook"}],
    }
    r = w.service("scheduler", "POST", "api/jobs", "alice", json=body)
    assert r.status_code == 201, r.text
    job = r.json()
    r = w.service(
        "scheduler",
        "POST",
        f"api/webhooks/{job['id']}",
        None,
        headers={"X-Shipyard-Webhook-Secret": job["webhook_secret"]},
    )
    assert r.status_code == 202, r.text
    # the job acts for its owner: the scheduler records the run when it starts it
    return expect(job["id"], f"job/{job['id']}", actor_kind="job", on_behalf_of="alice")


def run_output_download(w: World):
    run = w.made["run"]

    def finished():
        r = w.service("scheduler", "GET", f"api/runs/{run}", "alice")
        return r.json() if r.json()["status"] not in ("queued", "running") else None

    state = wait_for(finished, 180, 0.5, "the run to finish")
    assert state["status"] == "succeeded", state
    r = w.service("scheduler", "GET", f"api/runs/{run}/output", "alice")
    assert r.status_code == 200, r.text
    return expect("alice", f"run/{run}")


def run_output_download_denied(w: World):
    run = w.made["run"]
    assert w.service("scheduler", "GET", f"api/runs/{run}/output", "bob").status_code == 404
    return expect("bob", f"run/{run}", "denied", reason="not found")


def run_cancel(w: World):
    sleeping = {**NOTEBOOK["cells"][0], "source": "import time\ntime.sleep(60)"}
    body = {"name": "sleepy", "profile": "tiny", "notebook": {**NOTEBOOK, "cells": [sleeping]}}
    job = w.service("scheduler", "POST", "api/jobs", "alice", json=body).json()["id"]
    run = w.service("scheduler", "POST", f"api/jobs/{job}/runs", "alice", json={}).json()["id"]
    r = w.service("scheduler", "PATCH", f"api/runs/{run}", "alice", json={"status": "cancelled"})
    assert r.status_code == 200, r.text
    return expect("alice", f"run/{run}")


PIPELINE = """\
name: audited
profile: tiny
parameters: {duration: 0}
steps:
  only: {notebook: only.ipynb}
"""


def _alice_file(w: World, relative: str, text: str) -> None:
    import os
    import pwd

    entry = pwd.getpwnam(account_name("alice", PREFIX))
    path = Path(entry.pw_dir) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    for p in (path, path.parent):
        os.chown(p, entry.pw_uid, entry.pw_gid)


def pipeline_create(w: World):
    sleeping = {**NOTEBOOK["cells"][0], "source": "import time\ntime.sleep(duration)"}
    parameters = {
        **NOTEBOOK["cells"][0],
        "source": "duration = 0",
        "metadata": {"tags": ["parameters"]},
    }
    _alice_file(w, "audited/only.ipynb", json.dumps({**NOTEBOOK, "cells": [parameters, sleeping]}))
    _alice_file(w, "audited/pipeline.yaml", PIPELINE)
    body = {"path": "audited/pipeline.yaml"}
    r = w.service("scheduler", "POST", "api/pipelines", "alice", json=body)
    assert r.status_code == 201, r.text
    w.made["pipeline"] = r.json()["id"]
    return expect("alice", f"pipeline/{w.made['pipeline']}", owner="alice")


def pipeline_update(w: World):
    pipeline = w.made["pipeline"]
    r = w.service("scheduler", "PUT", f"api/pipelines/{pipeline}", "alice", json={})
    assert r.status_code == 200, r.text
    return expect("alice", f"pipeline/{pipeline}", owner="alice")


def pipeline_update_denied(w: World):
    pipeline = w.made["pipeline"]
    r = w.service("scheduler", "PUT", f"api/pipelines/{pipeline}", "bob", json={})
    assert r.status_code == 404, r.text
    return expect("bob", f"pipeline/{pipeline}", "denied", reason="not found")


def pipeline_pause(w: World):
    pipeline = w.made["pipeline"]
    body = {"paused": True}
    r = w.service("scheduler", "PATCH", f"api/pipelines/{pipeline}", "alice", json=body)
    assert r.status_code == 200 and r.json()["paused"], r.text
    return expect("alice", f"pipeline/{pipeline}", owner="alice")


def pipeline_resume(w: World):
    pipeline = w.made["pipeline"]
    body = {"paused": False}
    r = w.service("scheduler", "PATCH", f"api/pipelines/{pipeline}", "alice", json=body)
    assert r.status_code == 200 and not r.json()["paused"], r.text
    return expect("alice", f"pipeline/{pipeline}", owner="alice")


def pipeline_run(w: World):
    pipeline = w.made["pipeline"]
    body = {"parameters": {"duration": 60}}
    r = w.service("scheduler", "POST", f"api/pipelines/{pipeline}/runs", "alice", json=body)
    assert r.status_code == 201, r.text
    w.made["pipeline_run"] = r.json()["id"]
    return expect("alice", f"pipeline/{pipeline}", owner="alice")


def pipeline_cancel(w: World):
    run = w.made["pipeline_run"]
    body = {"status": "cancelled"}
    r = w.service("scheduler", "PATCH", f"api/pipeline-runs/{run}", "alice", json=body)
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    return expect("alice", f"pipeline-run/{run}", owner="alice")


def pipeline_repair(w: World):
    run = w.made["pipeline_run"]
    r = w.service("scheduler", "POST", f"api/pipeline-runs/{run}/repair", "alice")
    assert r.status_code == 201, r.text
    w.made["pipeline_repair"] = r.json()["id"]
    return expect("alice", f"pipeline-run/{run}", owner="alice")


def pipeline_delete(w: World):
    pipeline, repair = w.made["pipeline"], w.made["pipeline_repair"]
    body = {"status": "cancelled"}
    w.service("scheduler", "PATCH", f"api/pipeline-runs/{repair}", "alice", json=body)
    r = w.service("scheduler", "DELETE", f"api/pipelines/{pipeline}", "alice")
    assert r.status_code == 204, r.text
    return expect("alice", f"pipeline/{pipeline}")


def job_delete(w: World):
    job = w.made["job"]
    assert w.service("scheduler", "DELETE", f"api/jobs/{job}", "alice").status_code == 204
    return expect("alice", f"job/{job}")


# -------------------------------------------------------------- the deployer


def wait_version(w: World, version: int, state: str = "ready") -> None:
    def reached():
        r = w.service("deployer", "GET", f"api/deployments/churn/versions/{version}", "alice")
        return r.status_code == 200 and r.json()["state"] == state

    wait_for(reached, 60, 0.2, f"churn v{version} to be {state}")


def deployment_create(w: World):
    body = {"name": "churn", "model_uri": "models:/fake/one"}
    r = w.service("deployer", "POST", "api/deployments", "alice", json=body)
    assert r.status_code == 201, r.text
    wait_version(w, 1)
    return expect("alice", "deployment/churn", owner="alice")


def deployment_create_version(w: World):
    body = {"model_uri": "models:/fake/two", "canary_percent": 50}
    r = w.service("deployer", "POST", "api/deployments/churn/versions", "alice", json=body)
    assert r.status_code == 201, r.text
    wait_version(w, 2)
    return expect("alice", "deployment/churn", owner="alice")


def deployment_scale(w: World):
    r = w.service("deployer", "PATCH", "api/deployments/churn", "alice", json={"replicas": 2})
    assert r.status_code == 200, r.text
    return expect("alice", "deployment/churn", owner="alice")


def deployment_traffic(w: World):
    body = {"split": {"1": 80, "2": 20}}
    r = w.service("deployer", "PUT", "api/deployments/churn/traffic", "alice", json=body)
    assert r.status_code == 200, r.text
    return expect("alice", "deployment/churn", owner="alice")


def deployment_promote(w: World):
    body = {"version": 2}
    r = w.service("deployer", "POST", "api/deployments/churn/promote", "alice", json=body)
    assert r.status_code == 200, r.text
    wait_version(w, 1, "stopped")
    return expect("alice", "deployment/churn", owner="alice")


def deployment_rollback(w: World):
    r = w.service("deployer", "POST", "api/deployments/churn/rollback", "alice", json={})
    assert r.status_code == 200, r.text
    wait_version(w, 1)
    return expect("alice", "deployment/churn", owner="alice")


def model_invoke_denied(w: World):
    r = w.service(
        "deployer", "POST", "models/alice/churn/invocations", "bob", json={"inputs": [[1]]}
    )
    assert r.status_code == 404, r.text
    return expect("bob", "deployment/churn", "denied", owner="alice", reason="not found")


def deployment_grant(w: World):
    body = {"users": ["bob"], "groups": [], "services": []}
    r = w.service("deployer", "PUT", "api/deployments/churn/grants", "alice", json=body)
    assert r.status_code == 200, r.text
    return expect("alice", "deployment/churn", owner="alice", details={"users": ["bob"]})


def deployment_delete(w: World):
    assert w.service("deployer", "DELETE", "api/deployments/churn", "alice").status_code == 204
    return expect("alice", "deployment/churn", owner="alice")


# -------------------------------------------------------------- the tracking gateway

MLFLOW = "api/2.0/mlflow"
GRANTS = "api/3.0/mlflow/users/permissions"


def experiment(w: World) -> str:
    if "experiment" not in w.made:
        r = w.service(
            "tracking", "POST", f"{MLFLOW}/experiments/create", "alice", json={"name": "alice/aud"}
        )
        assert r.status_code == 200, r.text
        w.made["experiment"] = r.json()["experiment_id"]
        # bob's MLflow account is made at his first request, as for any user
        r = w.service("tracking", "GET", f"{MLFLOW}/experiments/search?max_results=1", "bob")
        assert r.status_code == 200, r.text
    return w.made["experiment"]


def permission_grant(w: World):
    body = {
        "username": "bob",
        "resource_type": "experiment",
        "resource_id": experiment(w),
        "permission": "READ",
    }
    r = w.service("tracking", "POST", f"{GRANTS}/grant", "alice", json=body)
    assert r.status_code == 200, r.text
    return expect("alice", f"experiment/{experiment(w)}", details={"permission": "READ"})


def permission_grant_denied(w: World):
    body = {
        "username": "bob",
        "resource_type": "experiment",
        "resource_id": experiment(w),
        "permission": "MANAGE",
    }
    r = w.service("tracking", "POST", f"{GRANTS}/grant", "bob", json=body)
    assert r.status_code == 403, r.text
    return expect("bob", f"experiment/{experiment(w)}", "denied")


def permission_revoke(w: World):
    body = {"username": "bob", "resource_type": "experiment", "resource_id": experiment(w)}
    r = w.service("tracking", "POST", f"{GRANTS}/revoke", "alice", json=body)
    assert r.status_code == 200, r.text
    return expect("alice", f"experiment/{experiment(w)}")


def tracking_share(w: World):
    body = {"experiment_id": experiment(w), "key": "shipyard.groups", "value": "team"}
    r = w.service(
        "tracking", "POST", f"{MLFLOW}/experiments/set-experiment-tag", "alice", json=body
    )
    assert r.status_code == 200, r.text
    return expect("alice", f"experiment/{experiment(w)}", details={"groups": ["team"]})


# ----------------------------------------------------------------- secrets

SECRET_VALUE = "s3cr3t-value-of-alice-0042"


def secret_create(w: World):
    r = w.service(
        "secrets", "PUT", "api/secrets/DB_PASSWORD", "alice", json={"value": SECRET_VALUE}
    )
    assert r.status_code == 201, r.text
    return expect("alice", "secret/alice/DB_PASSWORD", owner="alice")


def secret_update(w: World):
    r = w.service(
        "secrets", "PUT", "api/secrets/DB_PASSWORD", "alice", json={"value": SECRET_VALUE + "!"}
    )
    assert r.status_code == 200, r.text
    return expect("alice", "secret/alice/DB_PASSWORD", owner="alice")


def secret_use(w: World):
    body = {"name": "withsecret", "profile": "tiny", "notebook": NOTEBOOK}
    body["secrets"] = ["DB_PASSWORD"]
    r = w.service("scheduler", "POST", "api/jobs", "alice", json=body)
    assert r.status_code == 201, r.text
    job = r.json()["id"]
    r = w.service("scheduler", "POST", f"api/jobs/{job}/runs", "alice", json={})
    assert r.status_code == 201, r.text
    return expect(
        "scheduler",
        "secret/alice/DB_PASSWORD",
        owner="alice",
        on_behalf_of="alice",
        actor_kind="service",
    )


def secret_use_denied(w: World):
    body = {"owner": "alice", "names": ["DB_PASSWORD"], "purpose": "a user trying"}
    r = w.service("secrets", "POST", "api/resolve", "bob", json=body)
    assert r.status_code == 403, r.text
    return expect("bob", "secret/alice/DB_PASSWORD", "denied", owner="alice")


def secret_delete_denied(w: World):
    # bob cannot reach alice's secret: his own namespace has no such name
    assert w.service("secrets", "DELETE", "api/secrets/DB_PASSWORD", "bob").status_code == 404
    return expect("bob", "secret/bob/DB_PASSWORD", "denied", owner="bob")


def secret_delete(w: World):
    r = w.service("secrets", "DELETE", "api/secrets/DB_PASSWORD", "alice")
    assert r.status_code == 204, r.text
    return expect("alice", "secret/alice/DB_PASSWORD", owner="alice")


# ----------------------------------------------------------- the CLI, the audit API


def environment_build(w: World):
    r = subprocess.run(
        [sys.executable, "-m", "hub_ext.cli", "env", "build", "nosuchenv"],
        env=w.hub.env(),
        cwd=w.hub.data_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and "nosuchenv" in r.stderr, r.stderr
    return expect("root", "environment/nosuchenv", "failed", actor_kind="system")


def audit_read(w: World):
    r = w.service("audit", "GET", "api/records?limit=5", "admin")
    assert r.status_code == 200, r.text
    return expect("admin", "audit/records")


def audit_read_denied(w: World):
    r = w.service("audit", "GET", "api/records", "alice")
    assert r.status_code == 403, r.text
    assert r.json()["message"] == "The audit trail is for hub admins."
    return expect("alice", "audit/records", "denied", reason="The audit trail is for hub admins.")


def audit_read_anonymous(w: World):
    assert w.service("audit", "GET", "api/verify", None).status_code == 401
    return expect(None, "audit/verify", "denied", actor_kind="anonymous")


#: (action, step), in the order they run.
CASES: list[tuple[str, Callable[[World], dict]]] = [
    ("login.succeeded", login_succeeded),
    ("login.failed", login_failed),
    ("login.locked_out", login_locked_out),
    ("user.approve", user_approve),
    ("user.password_change", user_password_change),
    ("user.create", user_create),
    ("user.create", user_create_denied),
    ("user.update", user_update),
    ("role.change", role_change),
    ("user.delete", user_delete),
    ("group.create", group_create),
    ("group.members_add", group_members_add),
    ("group.update", group_update),
    ("group.members_remove", group_members_remove),
    ("group.delete", group_delete),
    ("token.create", token_create),
    ("token.create", token_create_denied),
    ("token.delete", token_delete),
    ("server.start", server_start),
    ("server.stop", server_stop),
    ("server.start", server_start_denied),
    ("profiles.change", profiles_change),
    ("job.create", job_create),
    ("job.update", job_update),
    ("job.update", job_update_denied),
    ("job.pause", job_pause),
    ("job.resume", job_resume),
    ("job.run", job_run),
    ("job.run", job_run_by_trigger),
    ("run.output_download", run_output_download),
    ("run.output_download", run_output_download_denied),
    ("run.cancel", run_cancel),
    ("job.delete", job_delete),
    ("pipeline.create", pipeline_create),
    ("pipeline.update", pipeline_update),
    ("pipeline.update", pipeline_update_denied),
    ("pipeline.pause", pipeline_pause),
    ("pipeline.resume", pipeline_resume),
    ("pipeline.run", pipeline_run),
    ("pipeline.cancel", pipeline_cancel),
    ("pipeline.repair", pipeline_repair),
    ("pipeline.delete", pipeline_delete),
    ("deployment.create", deployment_create),
    ("deployment.create", deployment_create_version),
    ("deployment.scale", deployment_scale),
    ("deployment.traffic", deployment_traffic),
    ("deployment.promote", deployment_promote),
    ("deployment.rollback", deployment_rollback),
    ("model.invoke_denied", model_invoke_denied),
    ("deployment.grant", deployment_grant),
    ("deployment.delete", deployment_delete),
    ("tracking.permission_grant", permission_grant),
    ("tracking.permission_grant", permission_grant_denied),
    ("tracking.permission_revoke", permission_revoke),
    ("tracking.share", tracking_share),
    ("secret.create", secret_create),
    ("secret.update", secret_update),
    ("secret.use", secret_use),
    ("secret.use", secret_use_denied),
    ("secret.delete", secret_delete_denied),
    ("secret.delete", secret_delete),
    ("environment.build", environment_build),
    ("audit.read", audit_read),
    ("audit.read", audit_read_denied),
    ("audit.read", audit_read_anonymous),
]


def admin_token(hub) -> str:
    """A token of the hub's generated admin, who logs in with the generated password."""
    creds = json.loads((hub.data_dir / "credentials.json").read_text())
    session, r = hub.login(creds["admin_user"], creds["admin_password"])
    assert r.status_code == 302, r.status_code
    r = session.post(
        f"{hub.url}/hub/api/users/{creds['admin_user']}/tokens",
        json={"note": "audit test"},
        headers={"X-XSRFToken": session.cookies.get("_xsrf")},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    return r.json()["token"]


@pytest.fixture(scope="module")
def world(hub_factory, home_root):
    with service_hub(
        hub_factory,
        "audit",
        PREFIX,
        CGROUPS,
        ["tracking", "scheduler", "deployer", "audit", "secrets"],
        # this module's own: the real clock, and shorter drains than the deployer tests'
        configs={"scheduler": SCHEDULER_CONFIG, "deployer": DEPLOYER_CONFIG},
        probe="alice",
        extra_env={"SHIPYARD_NATIVE_LOCKOUT_FAILURES": str(LOCKOUT_FAILURES)},
    ) as hub:
        tokens = {
            "alice": hub.create_user("alice", ["team"]),
            "bob": hub.create_user("bob"),
        }
        tokens["admin"] = admin_token(hub)
        # alice's runs need her system account, as a hub spawn would make it
        account = account_name("alice", PREFIX)
        _create(account, str(home_root / account), "audit test user alice")
        w = World(hub, tokens)
        # users with passwords of their own, made before any step counts records (adding
        # one is itself a one-time password and a first password change)
        for name in PASSWORD_USERS:
            w.made[f"password:{name}"] = hub.add_user_with_password(name)
        yield w


def test_every_action_is_covered():
    performed = {action for action, _ in CASES}
    assert performed.isdisjoint(ELSEWHERE)
    assert performed | set(ELSEWHERE) == set(ACTIONS), (
        f"no row for {sorted(set(ACTIONS) - performed - set(ELSEWHERE))}"
    )


@pytest.mark.parametrize("action, step", CASES, ids=[f"{a}:{s.__name__}" for a, s in CASES])
def test_each_action_leaves_exactly_one_record(world, action, step):
    before = len(world.records())
    want = step(world)

    def recorded():
        return [r for r in world.records()[before:] if r["action"] == action]

    wait_for(recorded, 15, 0.1, f"a record of {action}")
    time.sleep(0.5)  # a second record would come now
    found = recorded()
    assert len(found) == 1, json.dumps(found, indent=1)
    record = found[0]
    for key, value in want.items():
        if key == "details":
            assert value.items() <= (record["details"] or {}).items(), record
        else:
            assert record[key] == value, (key, record)
    if want["outcome"] == "denied":
        assert record["reason"], record
    if record["actor_kind"] == "user" and action not in ("server.stop",):
        assert record["client"], record  # from where


def test_the_trail_of_every_writer_verifies(world):
    """The hub, four services and the CLI wrote one chain; the file and the table agree."""
    records = world.records()
    sources = {r["source"] for r in records}
    assert {"hub", "scheduler", "deployer", "tracking", "audit"} <= sources, sources
    r = world.service("audit", "GET", "api/verify", "admin")
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["ok"], report["problems"]
    assert report["file_records"] == report["table_records"] >= len(records)


# ----------------------------------------------------------------- the audit API


def test_records_api_pages_and_filters(world):
    page = world.service("audit", "GET", "api/records?limit=3", "admin").json()
    assert len(page["records"]) == 3
    seqs = [r["seq"] for r in page["records"]]
    assert seqs == sorted(seqs, reverse=True)  # newest first
    nxt = world.service(
        "audit", "GET", f"api/records?limit=3&before={page['next_before']}", "admin"
    )
    assert [r["seq"] for r in nxt.json()["records"]][0] < seqs[-1]
    jobs = world.service("audit", "GET", "api/records?action=job&user=alice&since=1h", "admin")
    actions = {r["action"] for r in jobs.json()["records"]}
    assert actions and all(a.startswith("job.") for a in actions)
    record = jobs.json()["records"][0]
    assert {"seq", "__timestamp__", "action", "actor", "outcome", "prev_hash", "hash"} <= set(
        record
    )


@pytest.mark.parametrize(
    "query, message",
    [
        ("since=yesterday", "is not a time"),
        ("action=nope", "is not an audited action"),
        ("limit=0", "limit must be from 1 to 1000"),
        ("before=x", "give the seq of a record"),
        ("color=red", "unknown filter(s) color"),
    ],
)
def test_records_api_refuses_bad_filters(world, query, message):
    r = world.service("audit", "GET", f"api/records?{query}", "admin")
    assert r.status_code == 400, r.text
    assert message in r.json()["message"]


def test_audit_api_is_for_admins_only(world):
    for path in ("api/records", "api/verify", "metrics"):
        assert world.service("audit", "GET", path, "bob").status_code == 403
        assert world.service("audit", "GET", path, None).status_code == 401
    assert world.service("audit", "GET", "metrics", "admin").status_code == 200


def test_audit_openapi_covers_every_route(world):
    from tornado import web

    from hub_ext.services.audit.handlers import routes

    doc = world.service("audit", "GET", "openapi.json", None).json()
    for path, handler in routes("/"):
        for method in ("get", "post", "put", "patch", "delete"):
            if getattr(handler, method) is not getattr(web.RequestHandler, method):
                assert method in doc["paths"][path], (path, method)
    assert_references_resolve(doc)
