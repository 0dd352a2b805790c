"""A secret's value, used by a scheduled job and by a deployed model, is found nowhere after.

Issue 12 points 5 and 8, against one real hub with the secrets service, the scheduler,
the tracking service (MLflow) and the deployer (the real LocalBackend and model server).
alice keeps ``DB_PASSWORD``; a job of hers prints it and logs to MLflow, and a model of
hers reads it in every replica. Then the hub's data directory (its database and log, the
services' databases, the secrets key and database, MLflow's database and artifacts, the
deployer's logs, the audit trail), the runs directory, the replicas' folders, and every
answer the users got are searched for the value: it is nowhere. The search is shown to
work by finding, in each place, a planted marker that is not secret.
"""

from __future__ import annotations

import hashlib
import json
import secrets as random
from pathlib import Path

import pytest
import requests

from .conftest import needs_root
from .hubtools import tagged
from .services import (
    LOCAL_DEPLOYER_CONFIG,
    SERVING_PROFILES,
    create_job,
    notebook,
    scheduler_hub,
    users_with_accounts,
)

pytestmark = [needs_root]

#: The secret's value: what must be found nowhere.
VALUE = "s3cr3t-" + random.token_hex(16)
#: A non-secret marker printed, logged and served beside it: what the search must find.
MARKER = "marker-" + random.token_hex(16)

JOB = f"""
import os, mlflow
value = os.environ["DB_PASSWORD"]
print("the password is", value)
print("{MARKER}")
experiment = os.environ["MLFLOW_EXPERIMENT_NAME"]
if mlflow.get_experiment_by_name(experiment) is None:
    mlflow.create_experiment(experiment)
mlflow.set_experiment(experiment)
with mlflow.start_run(run_name="uses-a-secret"):
    mlflow.log_param("marker", "{MARKER}")
    mlflow.log_param("password_length", len(value))
value
"""

MODEL = f"""
import hashlib, os
import mlflow.pyfunc
import pandas as pd

class ReadsTheSecret(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        print("the model sees", os.environ["DB_PASSWORD"], "{MARKER}", flush=True)

    def predict(self, context, model_input, params=None):
        digest = hashlib.sha256(os.environ["DB_PASSWORD"].encode()).hexdigest()
        return [digest] * len(model_input)

model = ReadsTheSecret()
X = pd.DataFrame({{"x": [1.0, 2.0, 3.0]}})
"""


@pytest.fixture(scope="module")
def leak(hub_factory, model_server_env):
    with scheduler_hub(
        hub_factory,
        "leak",
        tagged("sylk-"),
        tagged("shipyard-test-lk"),
        ["secrets", "tracking", "deployer"],
        configs={"deployer": LOCAL_DEPLOYER_CONFIG},
        profiles=SERVING_PROFILES,
    ) as client:
        yield client


@pytest.fixture(scope="module")
def users(leak, home_root):
    return users_with_accounts(leak.hub, home_root, {"alice": ["team"], "bob": ["team"]})


@pytest.fixture(scope="module")
def answers():
    """Every body the test got back from a service, searched at the end too."""
    return []


def secrets_call(leak, method: str, path: str, token: str, **kwargs) -> requests.Response:
    return requests.request(
        method,
        f"{leak.hub.url}/services/secrets/{path}",
        headers={"Authorization": f"token {token}"},
        timeout=30,
        **kwargs,
    )


@pytest.fixture(scope="module")
def alice_secret(leak, users):
    r = secrets_call(
        leak, "PUT", "api/secrets/DB_PASSWORD", users["alice"][0], json={"value": VALUE}
    )
    assert r.status_code == 201, r.text
    return VALUE


def test_a_job_gets_the_secret_at_run_time_and_its_outputs_are_scrubbed(
    leak, users, alice_secret, answers
):
    alice, bob = users["alice"], users["bob"]
    job = create_job(
        leak,
        alice,
        "uses-secret",
        notebook(JOB),
        secrets=["DB_PASSWORD"],
        shared_with_groups=["team"],
        output_formats=["ipynb", "html"],
        timeout_seconds=300,
    )
    answers.append(json.dumps(job))
    assert job["secrets"] == ["DB_PASSWORD"]
    r = leak.call("POST", f"api/jobs/{job['id']}/runs", alice[0], json={})
    assert r.status_code == 201, r.text
    run = leak.wait_run(r.json()["id"], alice[0], timeout=240)
    assert run["status"] == "succeeded", run
    answers.append(json.dumps(run))
    output = leak.call("GET", f"api/runs/{run['id']}/output", alice[0])
    html = leak.call("GET", f"api/runs/{run['id']}/output?format=html", alice[0])
    log = leak.call("GET", f"api/runs/{run['id']}/log", alice[0])
    for answer in (output, html, log):
        assert answer.status_code == 200, answer.text
        answers.append(answer.text)
        assert MARKER in answer.text  # the run printed and the output kept what it printed...
    # ...and the value was replaced where it was printed
    assert "[secret DB_PASSWORD]" in output.text and "[secret DB_PASSWORD]" in log.text

    # bob shares the job through his group: he sees the names, never the values, and
    # cannot change the list
    shared = leak.call("GET", f"api/jobs/{job['id']}", bob[0]).json()
    assert shared["read_only"] is True and shared["secrets"] == ["DB_PASSWORD"]
    answers.append(json.dumps(shared))
    r = leak.call("PATCH", f"api/jobs/{job['id']}", bob[0], json={"secrets": []})
    assert r.status_code == 403, r.text
    assert secrets_call(leak, "GET", "api/secrets/DB_PASSWORD", bob[0]).status_code == 404
    # a job of bob's naming "DB_PASSWORD" gets bob's secret, which he does not have
    own = create_job(leak, bob, "borrow", notebook("print(1)"), secrets=["DB_PASSWORD"])
    r = leak.call("POST", f"api/jobs/{own['id']}/runs", bob[0], json={})
    failed = leak.wait_run(r.json()["id"], bob[0], timeout=120)
    assert failed["status"] == "failed"
    assert "bob has no secret named DB_PASSWORD" in failed["reason"], failed
    answers.append(json.dumps(failed))


def test_names_are_checked_when_a_job_names_them(leak, users):
    alice = users["alice"]
    r = leak.call(
        "POST",
        "api/jobs",
        alice[0],
        json={
            "name": "bad-secret",
            "profile": "tiny",
            "notebook": notebook("1"),
            "secrets": ["1X"],
        },
    )
    assert r.status_code == 400 and "environment variable name" in r.json()["message"], r.text


def test_a_deployment_gets_the_secret_in_every_replica_and_its_log_is_scrubbed(
    leak, users, alice_secret, answers, tmp_path, monkeypatch, capsys
):
    import atexit

    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    alice = users["alice"]
    base = leak.hub.url
    for name, value in {
        "IPYTHONDIR": str(tmp_path / "ipython"),
        "SHIPYARD_SPOOL_DIR": str(tmp_path / "spool"),
        "HOME": str(tmp_path),
        "JUPYTERHUB_API_TOKEN": alice[0],
        "JUPYTERHUB_USER": "alice",
        "SHIPYARD_DEPLOYER_URL": f"{base}/services/deployer",
        "MLFLOW_TRACKING_URI": f"{base}/services/tracking",
        "MLFLOW_TRACKING_TOKEN": alice[0],
        "MLFLOW_EXPERIMENT_NAME": "alice/Default",
    }.items():
        monkeypatch.setenv(name, value)
    ip = InteractiveShell.instance()
    try:
        ip.config.ShipyardMagics.poll_interval = 0.3
        ip.config.ShipyardMagics.deploy_timeout = 240
        ip.run_line_magic("load_ext", "server_ext")
        ip.run_cell(MODEL)
        ip.run_line_magic(
            "deploy", "model --name leaky --input-example X --profile serving --secret DB_PASSWORD"
        )
        out = capsys.readouterr().out
        answers.append(out)
        assert "Version 1 of 'leaky' is ready" in out, out
        r = requests.post(
            f"{base}/services/deployer/models/alice/leaky/invocations",
            json={"dataframe_split": {"columns": ["x"], "data": [[1.0]]}},
            headers={"Authorization": f"token {alice[0]}"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        answers.append(r.text)
        # the replica had the value: it answers its digest (never the value itself)
        assert r.json()["predictions"] == [hashlib.sha256(VALUE.encode()).hexdigest()]
        described = requests.get(
            f"{base}/services/deployer/api/deployments/leaky",
            headers={"Authorization": f"token {alice[0]}"},
            timeout=30,
        ).json()
        assert described["secrets"] == ["DB_PASSWORD"]
        answers.append(json.dumps(described))
        # a secret alice does not have fails the version, naming it
        with pytest.raises(UsageError) as info:
            ip.run_line_magic(
                "deploy", "model --name leaky2 --input-example X --profile serving --secret NOT_SET"
            )
        assert "alice has no secret named NOT_SET" in str(info.value)
    finally:
        manager = ip.magics_manager.registry.get("TrackingMagics")
        if manager is not None:
            atexit.unregister(manager.sender.flush)
        InteractiveShell.clear_instance()


def _files(root: Path) -> list[Path]:
    return (
        [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()] if root.exists() else []
    )


def _found(paths: list[Path], needle: str) -> list[Path]:
    forms = {needle.encode(), json.dumps(needle)[1:-1].encode()}
    hits = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if any(form in data for form in forms):
            hits.append(path)
    return hits


def test_the_value_is_found_nowhere(leak, users, answers):
    hub = leak.hub
    env = hub.env()
    data = _files(hub.data_dir)
    runs = _files(Path(env["SHIPYARD_RUNS_DIR"]))
    replicas = _files(Path("/tmp") / tagged("shipyard-test-lk-models"))
    places = {
        "the hub's data directory": data,
        "the runs directory": runs,
        "the hub's log": [hub.log_path],
        "the deployer's logs": [
            p for p in data if "deployer" in p.parts and p.suffix.startswith(".log")
        ],
        "the output notebooks": [p for p in runs if p.suffix in (".ipynb", ".html")],
        "the MLflow database": [p for p in data if "tracking" in p.parts and ".db" in p.name],
        "the audit trail": [p for p in data if "audit" in p.parts],
        "the replicas' folders": replicas,
    }
    # the search works: the planted marker is found where it was printed or logged ...
    for place in (
        "the hub's data directory",
        "the runs directory",
        "the deployer's logs",
        "the output notebooks",
        "the MLflow database",
    ):
        assert places[place], f"nothing to search in {place}"
        assert _found(places[place], MARKER), f"the marker is not in {place}: the search is blind"
    assert _found(places["the audit trail"], "secret/alice/DB_PASSWORD"), "no secret.use record"
    assert _found(places["the hub's log"], "secrets"), "the hub's log is empty"
    # ... and the value nowhere
    for place, paths in places.items():
        assert not _found(paths, VALUE), f"the value is in {place}: {_found(paths, VALUE)}"
    for text in answers:
        assert MARKER in "".join(answers)
        assert VALUE not in text, text[:500]
    # the audit trail recorded each use, for the run and the replica, on alice's behalf
    records = [
        json.loads(line)
        for line in (hub.data_dir / "audit" / "audit.jsonl").read_text().splitlines()
        if line.strip()
    ]
    uses = [r for r in records if r["action"] == "secret.use" and r["outcome"] == "allowed"]
    assert {r["actor"] for r in uses} == {"scheduler", "deployer"}, uses
    assert all(r["on_behalf_of"] == "alice" for r in uses)
    assert any("run" in r["details"] for r in uses) and any(
        "deployment" in r["details"] for r in uses
    )
