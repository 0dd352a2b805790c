"""A pipeline's gated deploy step behind a real hub: tracking, the scheduler and the deployer.

``train -> deploy``: the train notebook fits a scikit-learn ``LinearRegression`` on data
it makes, logs it to MLflow as the owner and records its ``model_uri`` with
``output()``, and writes the held-out rows into the run's workspace; the deploy step
(Shipyard's built-in notebook, run as the owner with the run's token) scores the
candidate and production on them and deploys through the real deployer (LocalBackend:
real model servers as the owner).

- run 1: nothing in production, so the gate passes and version 1 serves;
- run 2: a model trained on shuffled targets is refused, with both figures in the
  step's outputs; the step succeeds (a refusal is a decision) and nothing changes;
- run 3: a better model passes and becomes version 2, taking all the traffic;
- with a canary (when the deployer has the canary policy; skipped with its reason
  otherwise), a version that passed the gate is promoted by the deployer's policy;
- the owner is told of each decision; a file whose gate names an unknown metric is a
  400 at its line;
- a deploy step to another user's deployment (``bob/iris``) is a 400 at its line, and one
  whose model is another user's (bob's registered model, bob's run) fails before anything
  is loaded or deployed, saying why in the step's reason and log.
"""

from __future__ import annotations

import contextlib
import json
import textwrap
import threading

import pytest
import requests

from .conftest import TEST_PROFILES, built_environment, needs_root
from .hubtools import tagged, wait_for
from .services import (
    LOCAL_DEPLOYER_CONFIG,
    DeployerClient,
    log_model,
    notebook,
    put_file,
    scheduler_hub,
    users_with_accounts,
)

pytestmark = [needs_root]

#: A profile on the datascience environment (papermill, scikit-learn, pandas, and the
#: model server's packages) for the steps and the deployment's replicas.
PROFILES = TEST_PROFILES.replace(
    "quotas:",
    "  - slug: science\n    display_name: Science\n    environment: datascience\n"
    "    cpu_limit: '1'\n    mem_limit: 1Gi\nquotas:",
)

PIPELINE = textwrap.dedent(
    """\
    name: gated
    profile: science
    parameters:
      quality: rough
    steps:
      train:
        notebook: train.ipynb
        outputs: {model_uri: string}
        files: {holdout: data/holdout.csv}
      deploy:
        type: deploy
        needs: [train]
        model: steps.train.outputs.model_uri
        name: churn
        gate:
          metric: rmse
          direction: minimize
          min_delta: 0.05
          data: steps.train.files.holdout
    """
)

#: 200 rows of y = 3a - 2b + 1; the last 50 are held out. "rough" fits 20 noisy rows
#: (holdout rmse ~1.1), "shuffled" 20 rows with shuffled targets (~9.6), "good" all 150
#: clean rows (~0.09).
TRAIN = notebook(
    textwrap.dedent(
        """\
        import os
        import mlflow, mlflow.sklearn
        import numpy as np, pandas as pd
        from sklearn.linear_model import LinearRegression
        from hub_ext.runtime.outputs import output, workspace

        rng = np.random.default_rng(7)
        x = rng.uniform(0, 10, size=(200, 2))
        y = 3 * x[:, 0] - 2 * x[:, 1] + 1 + rng.normal(0, 0.1, 200)
        frame = pd.DataFrame(x, columns=["a", "b"])
        path = workspace() / "data" / "holdout.csv"
        path.parent.mkdir(exist_ok=True)
        frame.iloc[150:].assign(target=y[150:]).to_csv(path, index=False)
        rows = 150 if quality == "good" else 20
        inputs, targets = frame.iloc[:rows], y[:rows].copy()
        if quality == "rough":
            targets = targets + rng.normal(0, 4, rows)
        if quality == "shuffled":
            rng.shuffle(targets)
        model = LinearRegression().fit(inputs, targets)
        mlflow.set_experiment(os.environ["MLFLOW_EXPERIMENT_NAME"])
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
                pip_requirements=mlflow.sklearn.get_default_pip_requirements(
                    include_cloudpickle=True
                ),
            )
        output("model_uri", info.model_uri)
        """
    ),
    parameters='quality = "rough"',
)

CANARY = """\
    canary:
      percent: 20
      window: 60
      max_error_rate: 0.5
"""


def deployer_has_canary_policy() -> bool:
    """Whether this deployer takes a canary policy on a new version (``canary``)."""
    from hub_ext.services.deployer.models import CreateVersion

    return "canary" in CreateVersion.model_fields


@pytest.fixture(scope="module")
def sched(hub_factory):
    built_environment("datascience")
    with scheduler_hub(
        hub_factory,
        "pldeploy",
        tagged("sypd-"),
        tagged("shipyard-test-pd"),
        ["tracking", "deployer"],
        configs={"deployer": LOCAL_DEPLOYER_CONFIG},
        profiles=PROFILES,
        probe="pdadmin",
    ) as client:
        yield client


@pytest.fixture(scope="module")
def alice(sched, home_root):
    return users_with_accounts(sched.hub, home_root, {"alice": []})["alice"]


def _run(sched, user, pipeline_id: str, **parameters) -> dict:
    r = sched.call(
        "POST", f"api/pipelines/{pipeline_id}/runs", user[0], json={"parameters": parameters}
    )
    assert r.status_code == 201, r.text

    def ended():
        answer = requests.get(
            sched.base + f"api/pipeline-runs/{r.json()['id']}",
            headers={"Authorization": f"token {user[0]}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        run = answer.json()
        return run if run["status"] != "running" else None

    run = wait_for(ended, 240, 0.3, "the pipeline run")
    steps = {s["step"]: s for s in run["steps"]}
    if run["status"] != "succeeded":
        logs = {
            s: sched.call("GET", f"api/runs/{steps[s]['run_id']}/log", user[0]).text[-3000:]
            for s in steps
            if steps[s]["run_id"]
        }
        raise AssertionError(f"{run}\n{logs}")
    return steps


def test_the_gate_deploys_the_first_model_refuses_a_worse_one_and_deploys_a_better_one(
    sched, alice
):
    put_file(alice, "gated/pipeline.yaml", PIPELINE)
    put_file(alice, "gated/train.ipynb", TRAIN)
    r = sched.call("POST", "api/pipelines", alice[0], json={"path": "gated/pipeline.yaml"})
    assert r.status_code == 201, r.text
    pipeline = r.json()
    deploy_def = pipeline["steps"][1]
    assert deploy_def["type"] == "deploy" and deploy_def["job_id"]
    assert deploy_def["outputs"]["decision"] == "string"
    deployer = DeployerClient(sched.hub, alice[0])

    # 1: nothing in production: passed, version 1 serves
    first = _run(sched, alice, pipeline["id"])["deploy"]
    assert first["status"] == "succeeded", first
    out = first["outputs"]
    assert out["decision"] == "passed" and out["metric"] == "rmse", out
    assert out["production"] is None and 0.5 < out["candidate"] < 2, out
    assert out["version"] == 1 and out["canary_state"] is None, out
    # the decision is shown in the step's run (its log)
    log = sched.call("GET", f"api/runs/{first['run_id']}/log", alice[0]).text
    assert "nothing in production" in log, log[-2000:]
    deployment = deployer("GET", "api/deployments/churn").json()
    assert deployment["traffic"] == {"1": 100}, deployment
    version = deployment["versions"][0]
    assert version["state"] == "ready"
    assert version["model_uri"] == "models:/alice-churn/1"
    assert version["lineage"]["pipeline_step"] == "deploy"
    assert version["lineage"]["pipeline_run_id"]
    assert version["profile"] == "science"
    answer = deployer.invoke("alice", "churn", json={"dataframe_records": [{"a": 1, "b": 1}]})
    assert answer.status_code == 200, answer.text

    # 2: a worse model (shuffled targets) is refused; the step succeeds with both figures
    second = _run(sched, alice, pipeline["id"], quality="shuffled")["deploy"]
    assert second["status"] == "succeeded", second
    out = second["outputs"]
    assert out["decision"] == "refused", out
    assert out["candidate"] > 5 and out["production"] == pytest.approx(
        first["outputs"]["candidate"]
    )
    assert out["version"] is None
    assert f"production {out['production']:.6g}" in out["reason"], out
    deployment = deployer("GET", "api/deployments/churn").json()
    assert deployment["traffic"] == {"1": 100} and len(deployment["versions"]) == 1

    # 3: a better model passes and becomes version 2, which takes all the traffic
    third = _run(sched, alice, pipeline["id"], quality="good")["deploy"]
    assert third["status"] == "succeeded", third
    out = third["outputs"]
    assert out["decision"] == "passed" and out["version"] == 2, out
    assert out["candidate"] < 0.5 and out["production"] == pytest.approx(
        first["outputs"]["candidate"]
    )
    deployment = deployer("GET", "api/deployments/churn").json()
    assert deployment["versions"][-1]["model_uri"] == "models:/alice-churn/2"
    assert deployment["traffic"] == {"2": 100}, deployment

    # the owner was told of each decision, with the figures
    notes = sched.call("GET", "api/notifications", alice[0]).json()["notifications"]
    said = [n["message"] for n in notes if "deploy step deploy of pipeline gated " in n["message"]]
    assert len(said) == 3, notes
    assert any("refused: candidate rmse" in m for m in said), said
    assert any("version 2 deployed" in m for m in said), said
    # and the audit trail holds each decision, the refusal as denied with both figures
    trail = sched.hub.data_dir / "audit" / "audit.jsonl"
    gates = [
        json.loads(line)
        for line in trail.read_text().splitlines()
        if '"pipeline.deploy_gate"' in line
    ]
    assert [g["outcome"] for g in gates] == ["allowed", "denied", "allowed"], gates
    refused = gates[1]
    assert refused["owner"] == "alice" and refused["actor_kind"] == "job", refused
    assert refused["details"]["production"] == pytest.approx(second["outputs"]["production"])
    assert "refused" in refused["reason"], refused


@pytest.mark.skipif(
    not deployer_has_canary_policy(),
    reason="the deployer here has no canary policy on version creation (CreateVersion has "
    "no 'canary'): the gate is tested in full above, the canary window is not",
)
def test_a_version_that_passed_the_gate_goes_through_the_deployers_canary(sched, alice):
    canaried = PIPELINE.replace("name: gated", "name: canaried").replace(
        "name: churn", "name: churn-canary"
    )
    put_file(alice, "canaried/pipeline.yaml", canaried.replace("min_delta: 0.05", "min_delta: 0"))
    put_file(alice, "canaried/train.ipynb", TRAIN)
    r = sched.call("POST", "api/pipelines", alice[0], json={"path": "canaried/pipeline.yaml"})
    assert r.status_code == 201, r.text
    pipeline = r.json()
    first = _run(sched, alice, pipeline["id"], quality="good")["deploy"]["outputs"]
    # a deployment's first version takes all the traffic: no canary, and the step says so
    assert first["version"] == 1 and first["canary_state"] is None, first
    put_file(
        alice,
        "canaried/pipeline.yaml",
        canaried.replace("min_delta: 0.05", "min_delta: 0") + CANARY,
    )
    r = sched.call("PUT", f"api/pipelines/{pipeline['id']}", alice[0], json={})
    assert r.status_code == 200, r.text
    deployer = DeployerClient(sched.hub, alice[0])
    stop = threading.Event()

    def traffic():  # requests for the canary to judge, none of them failing
        while not stop.is_set():
            with contextlib.suppress(requests.RequestException):
                deployer.invoke(
                    "alice", "churn-canary", json={"dataframe_records": [{"a": 1, "b": 2}]}
                )
            stop.wait(0.2)

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        second = _run(sched, alice, pipeline["id"], quality="good")["deploy"]["outputs"]
    finally:
        stop.set()
        sender.join(10)
    assert second["decision"] == "passed" and second["version"] == 2, second
    assert second["canary_state"] == "promoted", second
    version = deployer("GET", "api/deployments/churn-canary/versions/2").json()
    assert version["canary"]["state"] == "promoted", version


def test_a_gate_with_an_unknown_metric_is_refused_at_its_line(sched, alice):
    put_file(alice, "badgate/pipeline.yaml", PIPELINE.replace("metric: rmse", "metric: auc"))
    put_file(alice, "badgate/train.ipynb", TRAIN)
    r = sched.call("POST", "api/pipelines", alice[0], json={"path": "badgate/pipeline.yaml"})
    assert r.status_code == 400, r.text
    assert r.json()["message"] == (
        "badgate/pipeline.yaml:16:15: steps.deploy.gate.metric: 'auc' is not a metric a gate "
        "computes: use one of rmse, mae, r2, accuracy, f1, precision, recall"
    )


#: A step that hands on the model URI it is given: the deploy step after it must refuse
#: one that is not its owner's.
FOREIGN = textwrap.dedent(
    """\
    name: foreign
    profile: science
    parameters:
      uri: ""
    steps:
      pick:
        notebook: pick.ipynb
        outputs: {model_uri: string}
      deploy:
        type: deploy
        needs: [pick]
        model: steps.pick.outputs.model_uri
        name: stolen
    """
)
PICK = notebook(
    'from hub_ext.runtime.outputs import output\noutput("model_uri", uri)',
    parameters='uri = ""',
)


def _failed_run(sched, user, pipeline_id: str, **parameters) -> dict:
    r = sched.call(
        "POST", f"api/pipelines/{pipeline_id}/runs", user[0], json={"parameters": parameters}
    )
    assert r.status_code == 201, r.text

    def ended():
        run = sched.call("GET", f"api/pipeline-runs/{r.json()['id']}", user[0]).json()
        return run if run["status"] != "running" else None

    run = wait_for(ended, 240, 0.3, "the pipeline run")
    assert run["status"] == "failed", run
    return {s["step"]: s for s in run["steps"]}


def test_a_deploy_step_for_another_users_deployment_or_model_is_refused(sched, alice, home_root):
    bob = users_with_accounts(sched.hub, home_root, {"bob": []})["bob"]
    deployer = DeployerClient(sched.hub, alice[0])
    # at creation: another user's deployment is a 400 at its line, and nothing is made
    put_file(alice, "foreign/pipeline.yaml", FOREIGN.replace("name: stolen", "name: bob/iris"))
    put_file(alice, "foreign/pick.ipynb", PICK)
    r = sched.call("POST", "api/pipelines", alice[0], json={"path": "foreign/pipeline.yaml"})
    assert r.status_code == 400, r.text
    assert r.json()["message"] == (
        "foreign/pipeline.yaml:13:11: steps.deploy.name: 'bob/iris' names the deployment "
        "'iris' of user 'bob': a deploy step deploys only to deployments of the pipeline's "
        "owner, named without an owner (and registered as '<owner>-<name>'); write the name "
        "alone, e.g. name: iris"
    )
    listed = sched.call("GET", "api/pipelines", alice[0]).json()["pipelines"]
    assert "foreign" not in [p["name"] for p in listed], listed

    # at run time: bob's run and bob's registered model are refused before anything is
    # loaded; the step fails saying why, and no deployment is made
    bob_run = log_model(sched.hub, bob[0], experiment="bob/models")
    from mlflow import MlflowClient

    with monkeypatched_env(MLFLOW_TRACKING_TOKEN=bob[0]):
        registry = MlflowClient(tracking_uri=f"{sched.hub.url}/services/tracking")
        registry.create_registered_model("bob-iris")
        registry.create_model_version("bob-iris", f"runs:/{bob_run}/model", run_id=bob_run)
    put_file(alice, "foreign/pipeline.yaml", FOREIGN)
    r = sched.call("POST", "api/pipelines", alice[0], json={"path": "foreign/pipeline.yaml"})
    assert r.status_code == 201, r.text
    pipeline_id = r.json()["id"]
    for uri, why in (
        (
            "models:/bob-iris/1",
            "the model to deploy, models:/bob-iris/1, is the registered model 'bob-iris', "
            "which is not yours",
        ),
        (
            f"runs:/{bob_run}/model",
            f"the model to deploy, runs:/{bob_run}/model, is the MLflow run {bob_run}, which "
            "is not one you can read as alice",
        ),
    ):
        steps = _failed_run(sched, alice, pipeline_id, uri=uri)
        assert steps["pick"]["status"] == "succeeded", steps
        refused = steps["deploy"]
        assert refused["status"] == "failed", refused
        assert why in refused["reason"], refused
        log = sched.call("GET", f"api/runs/{refused['run_id']}/log", alice[0]).text
        assert why in log, log[-3000:]
        assert "registered models:/" not in log, log[-3000:]
    assert deployer("GET", "api/deployments/stolen").status_code == 404


@contextlib.contextmanager
def monkeypatched_env(**values: str):
    """``os.environ`` with ``values`` set, restored after."""
    import os

    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
