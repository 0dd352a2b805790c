"""A deployment version's lineage, back to the pipeline run and its files; and its reproduction.

Pure parts first (the OpenAPI entry, the lineage a scheduled kernel records, the chain's
rows and HTML, the links a token-less request cannot follow, trigger files). Then one real
hub for the module with tracking (MLflow behind the hub's login), the scheduler and the
deployer (its test backend: no model is loaded, the chain is what is tested):

- alice's one-step pipeline runs as her account; the step writes an input file into the
  run's workspace and records, with ``publish.scheduled_lineage`` (``%deploy``'s code), the
  scheduler's variables it ran with;
- a model logged and registered in MLflow as alice is deployed with that lineage;
  ``GET .../lineage`` walks back to the registered version, the MLflow run (params,
  metrics, tags, the ``%%track`` cell), the scheduler run, the pipeline run and its step,
  the notebook's digest and parameters, and the input file's SHA-256;
- bob gets the 404 of a missing deployment; a version deployed by hand from a path says in
  ``missing`` what cannot be followed;
- ``%lineage NAME --reproduce`` in a real IPython shell runs the pipeline again and shows
  the new outputs beside the recorded ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
from datetime import datetime, timezone

import pytest
import requests
from IPython.core.error import UsageError

from hub_ext.services.deployer.lineage import LineageResolver, _Walk
from hub_ext.services.deployer.models import DescribeVersion
from hub_ext.services.deployer.openapi import build_openapi
from hub_ext.services.scheduler.worker import PipelineStep
from server_ext.clients.deployer import lineage as shown
from server_ext.clients.deployer.client import DeployerError
from server_ext.clients.deployer.publish import ModelPublisher, scheduled_lineage
from server_ext.magics.lineage import default_version

from .conftest import needs_root
from .hubtools import ipython_shell, tagged, wait_for
from .services import notebook, put_file, service_hub, users_with_accounts

# ------------------------------------------------------------------ pure parts


def test_the_lineage_route_is_in_the_openapi_document():
    doc = build_openapi()
    op = doc["paths"]["/api/deployments/{name}/versions/{version}/lineage"]["get"]
    ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.endswith("/DescribeLineage")
    schema = doc["components"]["schemas"]["DescribeLineage"]
    assert {"version", "mlflow_run", "pipeline_run", "inputs", "missing"} <= set(
        schema["properties"]
    )
    assert {p["name"] for p in op["parameters"]} == {"name", "version", "owner"}


def test_a_pipeline_step_tells_its_notebook_the_pipeline_run(tmp_path):
    step = PipelineStep("r1", "train", tmp_path, {}, {}, "p1")
    assert step.environment()["SHIPYARD_PIPELINE_RUN_ID"] == "p1"
    assert step.environment()["SHIPYARD_PIPELINE_STEP"] == "train"


def test_a_scheduled_kernel_records_where_it_ran(monkeypatch, tmp_path):
    environ = {
        "SHIPYARD_PIPELINE_RUN_ID": "p1",
        "SHIPYARD_PIPELINE_STEP": "train",
        "SHIPYARD_RUN_ID": "r1",
        "SHIPYARD_JOB_ID": "j1",
        "SHIPYARD_WORKSPACE": "/x",
    }
    assert scheduled_lineage(environ) == {
        "pipeline_run_id": "p1",
        "pipeline_step": "train",
        "scheduler_run_id": "r1",
        "job_id": "j1",
    }
    assert scheduled_lineage({"SHIPYARD_RUN_ID": ""}) == {}
    # %deploy's own lineage carries them (a kernel outside any git repository)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    publisher = ModelPublisher.__new__(ModelPublisher)
    lineage = publisher.kernel_lineage("a" * 32)
    assert lineage["run_id"] == "a" * 32
    assert lineage["pipeline_run_id"] == "p1" and lineage["scheduler_run_id"] == "r1"


def _version(lineage: dict | None, uri: str = "models:/alice-x/1") -> DescribeVersion:
    return DescribeVersion(
        version=1,
        model_uri=uri,
        profile="tiny",
        state="ready",
        created_at=datetime.now(timezone.utc),
        lineage=lineage,
    )


def test_a_request_without_a_token_says_which_links_need_one():
    resolver = LineageResolver("http://127.0.0.1:9/services/tracking", "http://127.0.0.1:9/s")
    lineage = {"run_id": "b" * 32, "pipeline_run_id": "p1", "pipeline_step": "train"}
    for header in (None, "Basic dXNlcjpwYXNz"):  # a cookie's request; a header not passed on
        doc = asyncio.run(resolver.resolve("alice", "x", _version(lineage), header))
        missing = {m.link: m.reason for m in doc.missing}
        assert doc.mlflow_run is None and doc.pipeline_run is None
        assert "needs your hub token" in missing["mlflow_run"]
        assert "needs your hub token" in missing["pipeline_run"]
        assert "Authorization: token" in missing["model_version"]
        assert doc.model_version is not None and doc.model_version.name == "alice-x"


def test_trigger_files_are_inputs_with_their_digests():
    from hub_ext.services.deployer.models import DescribeLineage, LineagePipelineRun

    walk = _Walk(None, None, DescribeLineage.model_construct(inputs=[], missing=[]))  # type: ignore[arg-type]
    walk.out.pipeline_run = LineagePipelineRun(
        id="p1",
        pipeline_id="q",
        pipeline_name="n",
        status="succeeded",
        parameters={"trigger_paths": ["in/a.csv", "in/b.csv"], "trigger_sha256s": ["1" * 64]},
    )
    walk._inputs()
    assert [(f.path, f.sha256, f.source) for f in walk.out.inputs] == [
        ("in/a.csv", "1" * 64, "trigger"),
        ("in/b.csv", None, "trigger"),
    ]


DOC = {
    "version": {
        "owner": "alice",
        "name": "churn",
        "version": 2,
        "model_uri": "models:/alice-churn/2",
        "state": "ready",
        "created_at": "2026-01-01T00:00:00Z",
    },
    "model_version": {"name": "alice-churn", "version": "2", "run_id": None},
    "mlflow_run": {"run_id": "c" * 32, "params": {"rows": "4"}, "metrics": {"score": 0.4}},
    "pipeline_run": None,
    "inputs": [{"path": "<data>.csv", "sha256": "f" * 64, "source": "step:train/table"}],
    "missing": [{"link": "pipeline_run", "reason": "the lineage names no pipeline run"}],
}


def test_the_chain_as_text_and_as_an_escaped_table():
    text = shown.lineage_text(DOC)
    assert "alice/churn v2 (ready), models:/alice-churn/2" in text
    assert "registered model" in text and '"score": 0.4' in text
    assert "missing: pipeline_run" in text and "f" * 64 in text
    table = shown.lineage_html(DOC)
    assert "&lt;data&gt;.csv" in table and "<data>" not in table


def test_a_chain_without_a_pipeline_cannot_be_reproduced_and_says_why():
    assert "does not reach one. pipeline_run: the lineage names no pipeline run" in (
        shown.cannot_reproduce(DOC) or ""
    )
    with pytest.raises(DeployerError, match="does not reach one"):
        shown.reproduce(DOC, scheduler=None)  # type: ignore[arg-type]


class RecordingScheduler:
    """The scheduler client's three calls a reproduction makes, answered from data."""

    def __init__(self, finished: dict, mlflow_run_id: str | None):
        self.finished, self.mlflow_run_id, self.calls = finished, mlflow_run_id, []

    def run_pipeline(self, pipeline_id: str, parameters: dict) -> dict:
        self.calls.append(("run", pipeline_id, parameters))
        return {**self.finished, "status": "running"}

    def get_pipeline_run(self, run_id: str) -> dict:
        self.calls.append(("get", run_id))
        return self.finished

    def get_run(self, run_id: str) -> dict:
        return {"id": run_id, "mlflow_run_id": self.mlflow_run_id}


def test_a_reproduction_compares_metrics_when_both_runs_logged_some_else_outputs():
    recorded = {
        **DOC,
        "pipeline_run": {
            "id": "p1",
            "pipeline_id": "q1",
            "pipeline_name": "churn",
            "status": "succeeded",
            "parameters": {"rows": 5},
            "step": {"step": "train", "status": "succeeded", "outputs": {"score": 0.5}},
        },
    }
    new = {
        "id": "p2",
        "pipeline_name": "churn",
        "status": "succeeded",
        "steps": [{"step": "train", "run_id": "r2", "outputs": {"score": 0.25}}],
    }
    scheduler = RecordingScheduler(new, "d" * 32)
    seen = []
    outcome = shown.reproduce(
        recorded,
        scheduler,  # type: ignore[arg-type]
        run_metrics=lambda run_id: seen.append(run_id) or {"score": 0.3, "loss": 1.0},
        sleep=lambda s: None,
        started=lambda run: seen.append(run["id"]),
    )
    assert scheduler.calls == [("run", "q1", {"rows": 5}), ("get", "p2")]
    assert seen == ["p2", "d" * 32]
    assert (outcome.compared, outcome.rows) == (
        "metrics",
        [("loss", None, 1.0), ("score", 0.4, 0.3)],
    )
    assert "score: 0.4 -> 0.3" in outcome.text()
    # the new step logged no MLflow run: its outputs are compared
    outcome = shown.reproduce(
        recorded,
        RecordingScheduler(new, None),  # type: ignore[arg-type]
        run_metrics=lambda run_id: {},
        sleep=lambda s: None,
    )
    assert (outcome.compared, outcome.rows) == ("outputs", [("score", 0.5, 0.25)])
    # still running past the timeout: stop waiting, saying so
    with pytest.raises(DeployerError, match="still running after 0 s"):
        shown.reproduce(
            recorded,
            RecordingScheduler({**new, "status": "running"}, None),  # type: ignore[arg-type]
            timeout=0,
            sleep=lambda s: None,
        )


def test_the_default_version_is_the_one_with_the_most_traffic():
    versions = [{"version": 1}, {"version": 2}, {"version": 3}]
    assert default_version({"traffic": {"1": 90, "2": 10}, "versions": versions}) == 1
    assert default_version({"traffic": {"1": 50, "2": 50}, "versions": versions}) == 2
    assert default_version({"traffic": {}, "versions": versions}) == 3


# ------------------------------------------------------------------ one real hub

PIPELINE = textwrap.dedent(
    """\
    name: lineage
    profile: tiny
    parameters:
      rows: 4
    steps:
      train:
        notebook: train.ipynb
        outputs: {score: number, lineage: json}
        files: {table: data/input.csv}
    """
)
TRAIN = notebook(
    "from hub_ext.runtime.outputs import output, workspace\n"
    "from server_ext.clients.deployer.publish import scheduled_lineage\n"
    "path = workspace() / 'data' / 'input.csv'\n"
    "path.parent.mkdir(exist_ok=True)\n"
    "path.write_text('\\n'.join(str(i) for i in range(rows)))\n"
    "output('score', rows / 10)\n"
    "output('lineage', scheduled_lineage())",
    parameters="rows = 1",
)


@pytest.fixture(scope="module")
def hub(hub_factory):
    with service_hub(
        hub_factory,
        "lineage",
        tagged("syln-"),
        tagged("shipyard-test-ln"),
        ["tracking", "scheduler", "deployer"],
        probe="alice",
    ) as hub:
        yield hub


@pytest.fixture(scope="module")
def alice(hub, home_root):
    return users_with_accounts(hub, home_root, {"alice": []})["alice"]


def _call(hub, service: str, method: str, path: str, token: str, **kw) -> requests.Response:
    return requests.request(
        method,
        f"{hub.url}/services/{service}/{path}",
        headers={"Authorization": f"token {token}"},
        timeout=60,
        **kw,
    )


def _log_and_register(hub, token: str) -> str:
    """A model logged in an MLflow run as alice, with params, a metric and a cell; registered."""
    import mlflow
    import mlflow.sklearn
    import numpy as np
    from sklearn.linear_model import LinearRegression

    os.environ["MLFLOW_TRACKING_TOKEN"] = token
    try:
        mlflow.set_tracking_uri(f"{hub.url}/services/tracking")
        experiment_id = mlflow.create_experiment("alice/lineage")
        x = np.arange(8, dtype=float).reshape(-1, 1)
        with mlflow.start_run(
            experiment_id=experiment_id,
            tags={"mlflow.source.name": "pipelines/train.ipynb", "shipyard.env_digest": "sha256:e"},
        ) as run:
            mlflow.log_param("rows", 4)
            mlflow.log_metric("score", 0.4)
            mlflow.log_text("output('score', rows / 10)", "cell.py")
            mlflow.sklearn.log_model(
                LinearRegression().fit(x, 2 * x[:, 0]),
                name="model",
                serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
            )
        mlflow.register_model(f"runs:/{run.info.run_id}/model", "alice-lin")
        return run.info.run_id
    finally:
        mlflow.set_tracking_uri(None)
        os.environ.pop("MLFLOW_TRACKING_TOKEN", None)


@pytest.fixture(scope="module")
def deployed(hub, alice):
    """alice's pipeline run, and version 1 of ``lin`` deployed with the step's lineage."""
    token = alice[0]
    put_file(alice, "pipelines/pipeline.yaml", PIPELINE)
    put_file(alice, "pipelines/train.ipynb", TRAIN)
    r = _call(
        hub, "scheduler", "POST", "api/pipelines", token, json={"path": "pipelines/pipeline.yaml"}
    )
    assert r.status_code == 201, r.text
    pipeline = r.json()
    r = _call(
        hub, "scheduler", "POST", f"api/pipelines/{pipeline['id']}/runs", token,
        json={"parameters": {"rows": 5}},
    )  # fmt: skip
    assert r.status_code == 201, r.text

    run_id = r.json()["id"]

    def ended():
        run = _call(hub, "scheduler", "GET", f"api/pipeline-runs/{run_id}", token).json()
        return run if run["status"] != "running" else None

    prun = wait_for(ended, 240, 0.3, "the pipeline run")
    assert prun["status"] == "succeeded", prun
    [step] = prun["steps"]
    run_id = _log_and_register(hub, token)
    lineage = {
        "run_id": run_id,
        "registered_model": "alice-lin",
        "model_version": "1",
        "notebook": "pipelines/train.ipynb",
        **step["outputs"]["lineage"],
    }
    body = {"name": "lin", "model_uri": "models:/alice-lin/1", "lineage": lineage}
    r = _call(hub, "deployer", "POST", "api/deployments", token, json=body)
    assert r.status_code == 201, r.text
    return {"pipeline_run": prun, "step": step, "mlflow_run": run_id}


@needs_root
def test_lineage_walks_back_to_the_pipeline_run_its_step_and_the_input_file(hub, alice, deployed):
    step, prun = deployed["step"], deployed["pipeline_run"]
    recorded = step["outputs"]["lineage"]
    # the step recorded the scheduler's variables it ran with
    assert recorded == {
        "pipeline_run_id": prun["id"],
        "pipeline_step": "train",
        "scheduler_run_id": step["run_id"],
        "job_id": recorded["job_id"],
    }
    r = _call(hub, "deployer", "GET", "api/deployments/lin/versions/1/lineage", alice[0])
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["missing"] == [], doc["missing"]
    assert doc["version"]["model_uri"] == "models:/alice-lin/1"
    assert doc["model_version"] == {
        "name": "alice-lin",
        "version": "1",
        "run_id": deployed["mlflow_run"],
    }
    run = doc["mlflow_run"]
    assert run["run_id"] == deployed["mlflow_run"]
    assert run["params"] == {"rows": "4"} and run["metrics"] == {"score": 0.4}
    assert run["notebook"] == "pipelines/train.ipynb" and run["env_digest"] == "sha256:e"
    assert run["cell_source"] == "output('score', rows / 10)"
    assert doc["pipeline_run"]["id"] == prun["id"]
    assert doc["pipeline_run"]["parameters"] == {"rows": 5}
    assert doc["pipeline_run"]["step"]["step"] == "train"
    assert doc["pipeline_run"]["step"]["outputs"]["score"] == 0.5
    sched = _call(hub, "scheduler", "GET", f"api/runs/{step['run_id']}", alice[0]).json()
    assert doc["scheduler_run"]["id"] == step["run_id"]
    assert doc["notebook"] == {
        "path": "pipelines/train.ipynb",
        "digest": sched["notebook_digest"],
        "parameters": sched["parameters"],
    }
    assert sched["parameters"]["rows"] == 5
    table = step["files"]["table"]
    assert doc["inputs"] == [
        {"path": table["path"], "sha256": table["sha256"], "source": "step:train/table"}
    ]
    assert len(table["sha256"]) == 64
    # never a token in the answer
    assert alice[0] not in r.text


@needs_root
def test_others_get_a_404_and_a_version_deployed_by_hand_says_what_is_missing(hub, alice, deployed):
    bob = hub.create_user("bob")
    hidden = _call(hub, "deployer", "GET", "api/deployments/lin/versions/1/lineage", bob)
    missing = _call(hub, "deployer", "GET", "api/deployments/nope/versions/1/lineage", bob)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["message"] == "no deployment 'lin'"
    assert missing.json()["message"] == "no deployment 'nope'"
    owner = _call(hub, "deployer", "GET", "api/deployments/lin/versions/1/lineage?owner=alice", bob)
    assert owner.status_code == 404
    # bob's own version naming alice's runs: read as bob, none of them is shown
    step = deployed["step"]
    lineage = {"run_id": deployed["mlflow_run"], **step["outputs"]["lineage"]}
    body = {"name": "borrowed", "model_uri": "/srv/models/borrowed", "lineage": lineage}
    r = _call(hub, "deployer", "POST", "api/deployments", bob, json=body)
    assert r.status_code == 201, r.text
    r = _call(hub, "deployer", "GET", "api/deployments/borrowed/versions/1/lineage", bob)
    doc = r.json()
    reasons = {m["link"]: m["reason"] for m in doc["missing"]}
    assert doc["mlflow_run"] is doc["pipeline_run"] is doc["scheduler_run"] is None
    assert doc["inputs"] == []
    assert reasons["mlflow_run"].startswith(f"run {deployed['mlflow_run']}: ")
    assert "not yours to read" in reasons["pipeline_run"], reasons
    assert "not yours to read" in reasons["scheduler_run"], reasons
    body = {"name": "hand", "model_uri": "/srv/models/hand"}
    r = _call(hub, "deployer", "POST", "api/deployments", alice[0], json=body)
    assert r.status_code == 201, r.text
    doc = _call(hub, "deployer", "GET", "api/deployments/hand/versions/1/lineage", alice[0]).json()
    reasons = {m["link"]: m["reason"] for m in doc["missing"]}
    assert set(reasons) == {
        "model_version",
        "mlflow_run",
        "pipeline_run",
        "scheduler_run",
        "notebook",
        "inputs",
    }
    assert "not a registered model version" in reasons["model_version"]
    assert "no MLflow run" in reasons["mlflow_run"]
    assert "not deployed from a pipeline step" in reasons["pipeline_run"]
    assert doc["mlflow_run"] is doc["pipeline_run"] is doc["notebook"] is None


@needs_root
def test_lineage_magic_shows_the_chain_and_reproduces_the_pipeline(
    hub, alice, deployed, tmp_path_factory, monkeypatch, capsys
):
    token = alice[0]
    for name, value in {
        "JUPYTERHUB_API_TOKEN": token,
        "JUPYTERHUB_USER": "alice",
        "SHIPYARD_DEPLOYER_URL": f"{hub.url}/services/deployer",
        "SHIPYARD_SCHEDULER_URL": f"{hub.url}/services/scheduler",
        "MLFLOW_TRACKING_URI": f"{hub.url}/services/tracking",
        "MLFLOW_TRACKING_TOKEN": token,
    }.items():
        monkeypatch.setenv(name, value)
    with ipython_shell(tmp_path_factory.mktemp("shell"), poll_interval=0.3) as ip:
        ip.run_line_magic("lineage", "hand")
        out = capsys.readouterr().out
        assert "missing: pipeline_run" in out and "/srv/models/hand" in out
        with pytest.raises(UsageError, match="does not reach one"):
            ip.run_line_magic("lineage", "hand --reproduce")
        ip.run_line_magic("lineage", "lin --version 1 --reproduce")
    out = capsys.readouterr().out
    prun = deployed["pipeline_run"]
    assert f"pipeline run   {prun['id']} of 'lineage' (succeeded)" in out or prun["id"] in out
    assert deployed["step"]["files"]["table"]["sha256"] in out
    assert "Started pipeline run" in out and "with {'rows': 5}" in out
    assert "succeeded" in out.split("Reproduction:")[1]
    assert "score: 0.5 -> 0.5" in out
    assert token not in out
    json.dumps(out)  # plain text
