"""Model deployment from a notebook: ``%deploy``, ``%deployments`` and the panel's routes.

As ``tests/test_scheduler_clients.py`` does for the scheduler: the magics run in a real
IPython shell in this process, with the environment a Shipyard kernel has (the user's hub
token, ``SHIPYARD_DEPLOYER_URL``, ``MLFLOW_TRACKING_URI``/``_TOKEN`` of the tracking service,
the home); the server extension's forwarding handlers run in a real jupyter-server. Behind
them is one real hub per module with the tracking service (MLflow behind the hub's login) and
the deployer, whose local backend starts real model servers as the user, in a profile on the
``model-server`` environment. What MLflow and the deployer recorded is read back through
their REST APIs; every user error is checked for its message.

The pure helpers (URLs, names, example code, tables) and the errors that need no service are
tested without a hub.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import ipywidgets
import numpy as np
import pandas as pd
import pytest
import requests
from IPython.core.error import UsageError

from hub_ext.runtime import drift
from server_ext.clients.deployer import client as deploying
from server_ext.clients.deployer import publish as publishing
from server_ext.clients.deployer import text as shown_text
from server_ext.clients.deployer.client import DeployerClient, DeployerError
from server_ext.clients.deployer.text import VersionRow

from .conftest import needs_root
from .hubtools import free_port, ipython_shell, start_jupyter_server, tagged, wait_for
from .services import LOCAL_DEPLOYER_CONFIG, SERVING_PROFILES, service_hub

TRAIN = """
import pandas as pd
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
iris = load_iris(as_frame=True)
X = iris.data.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
y = iris.target
"""


def usage_error(call, *args) -> str:
    with pytest.raises(UsageError) as info:
        call(*args)
    return str(info.value)


# ------------------------------------------------------------------ pure helpers


@pytest.mark.parametrize(
    "environ, url",
    [
        ({"SHIPYARD_DEPLOYER_URL": "https://hub.example.org/services/deployer/"},
         "https://hub.example.org/services/deployer"),
        # the hub-side setting names where the service listens: its prefix is added
        ({"SHIPYARD_DEPLOYER_URL": "http://127.0.0.1:8004"},
         "http://127.0.0.1:8004/services/deployer"),
        ({"JUPYTERHUB_PUBLIC_HUB_URL": "https://hub.example.org/prefix/hub/"},
         "https://hub.example.org/prefix/services/deployer"),
    ],
)  # fmt: skip
def test_the_deployer_url_from_the_environment(environ, url):
    assert deploying.deployer_url(environ) == url


def test_urls_never_carry_tokens_and_a_missing_url_says_what_to_do():
    for url in ("https://alice:secret@hub.example.org/services/deployer",
                "https://hub.example.org/services/deployer?token=abc"):  # fmt: skip
        with pytest.raises(DeployerError, match="never in a URL"):
            deploying.normalise_url(url)
    with pytest.raises(DeployerError, match="not the deployer's URL"):
        deploying.normalise_url("ftp://hub.example.org")
    with pytest.raises(DeployerError, match="SHIPYARD_DEPLOYER_URL is not set. Restart"):
        deploying.deployer_url({})
    with pytest.raises(DeployerError, match="No token for the deployer"):
        DeployerClient("https://hub.example.org/services/deployer", "")


@pytest.mark.parametrize("name", ["iris", "churn-model", "a", "0x", "a" * 40, "a-b-c"])
def test_deployment_names(name):
    assert deploying.check_name(name) == name
    assert deploying.registered_name("alice", name) == f"alice-{name}"


@pytest.mark.parametrize("name", ["Iris", "a_b", "-a", "a-", "a--b", "a" * 41, "", "a/b", ".."])
def test_names_that_are_not_deployment_names(name):
    with pytest.raises(DeployerError, match="is not a deployment name: use 1 to 40 lowercase"):
        deploying.check_name(name)


def test_example_code_reads_the_token_from_the_environment():
    frame = pd.DataFrame({"a": [1.5, float("nan")], "it's": [2, 3]})
    payload = shown_text.example_payload(frame)
    assert payload == {"dataframe_split": {"columns": ["a", "it's"], "data": [[1.5, 2]]}}
    url = "https://hub.example.org/services/deployer/models/alice/iris/invocations"
    curl = shown_text.curl_example(url, payload)
    assert curl.startswith(
        'curl -X POST -H "Authorization: token $JUPYTERHUB_API_TOKEN" '
        '-H "Content-Type: application/json" -d '
    )
    assert curl.endswith(f" {url}")
    # what a shell passes to curl is the JSON itself, the quote in the column name included
    words = subprocess.run(
        ["bash", "-c", f"printf '%s\\n' {curl[len('curl ') :]}"],
        capture_output=True, text=True, env={"JUPYTERHUB_API_TOKEN": "t0k"}, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert words[3] == "Authorization: token t0k" and json.loads(words[7]) == payload
    code = shown_text.python_example(url, payload)
    assert "os.environ['JUPYTERHUB_API_TOKEN']" in code and "t0k" not in code
    compile(code, "example", "exec")

    assert shown_text.example_payload(np.array([[1.0, np.nan], [2.0, 3.0]])) == {
        "inputs": [[1.0, None]]
    }
    signature = {"inputs": json.dumps([{"type": "double", "name": "x"}])}
    assert shown_text.example_payload(None, signature) == {
        "dataframe_split": {"columns": ["x"], "data": [[0]]}
    }
    assert shown_text.example_payload() == {"inputs": [[0.0]]}


def _deployment(**fields) -> dict:
    versions = [
        {"version": 1, "state": "ready", "reason": None, "breaker": {"open": False}},
        {"version": 2, "state": "failed", "reason": "<b>boom</b> in load_context"},
        {"version": 3, "state": "ready", "reason": None,
         "breaker": {"open": True, "reason": "error rate 60% over 20 requests"}},
    ]  # fmt: skip
    return {
        "owner": "alice", "name": "churn", "profile": "serving", "replicas": 2,
        "url": "/services/deployer/models/alice/churn/invocations",
        "traffic": {"1": 90, "3": 10}, "versions": versions, **fields,
    }  # fmt: skip


STATS = {
    "1": {"replicas_ready": 2, "rate": 12.5, "error_rate": 0.0,
          "latency_ms": {"p50": 3.21, "p99": 17.0}, "drift": {"x": 0.1, "y": 0.31},
          "rows_checked": 500, "input_issues": {"out_of_range": {"x": 4, "y": 9},
                                                "missing_value": {"x": 2}},
          "breaker": {"open": False}},
    "3": {"replicas_ready": 1, "rate": 1.0, "error_rate": 0.6,
          "latency_ms": {"p50": None, "p99": None}, "drift": {},
          "rows_checked": 20, "input_issues": {},
          "breaker": {"open": True, "reason": "error rate 60% over 20 requests",
                      "serving": False}},
}  # fmt: skip


def _rows() -> list[VersionRow]:
    d = _deployment()
    return [VersionRow(d, v, STATS.get(str(v["version"]), {})) for v in reversed(d["versions"])]


def test_deployments_as_text_and_as_an_escaped_table():
    text = shown_text.deployments_text(_rows())
    header, v3, v2, v1 = text.splitlines()
    assert header.split() == [
        "NAME", "V", "TRAFFIC", "STATE", "HEALTH", "REQ/S", "P50", "MS", "P99", "MS", "ERRORS",
        "DRIFT", "INPUT", "ISSUES", "BREAKER",
    ]  # fmt: skip
    assert v1.split()[:9] == ["churn", "1", "90%", "ready", "2/2", "ready", "12.5", "3.21", "17"]
    assert "0.31 (y)" in v1 and "15 (out_of_range y)" in v1 and v1.endswith("closed")
    assert v3.split()[-8] == "0"  # rows checked, no issue (v2 failed: nothing checked)
    assert "failed: <b>boom</b> in load_context" in v2
    assert "60.0%" in v3 and v3.endswith("open: error rate 60% over 20 requests")
    assert shown_text.deployments_text([]).startswith("No deployments yet")

    from server_ext.magics.widgets import deployments_html

    html = deployments_html(_rows(), lambda d: "https://hub/" + d["url"])
    assert html.count("<code>https://hub//services/deployer/models/alice/churn/invocations") == 1
    assert "&lt;b&gt;boom&lt;/b&gt;" in html and "<b>boom</b>" not in html
    assert "<span style='color:#b00'>0.31 (y)</span>" in html  # drift past 0.25 in red
    assert ">15 (out_of_range y)</td>" in html
    assert "<span style='color:#b00'>open: error rate 60% over 20 requests</span>" in html
    assert "No deployments yet" in deployments_html([], str)


def test_the_progress_bar_through_the_stages():
    from server_ext.clients.deployer.rollout import DEPLOY_STAGES
    from server_ext.magics.widgets import DeployProgress

    progress = DeployProgress("iris", DEPLOY_STAGES)
    bar, label = progress.widget.children
    progress.update(1, "alice-iris")
    assert (bar.value, bar.max, label.value) == (1, 5, "register: alice-iris")
    progress.update(3, "version 2 starting")
    assert label.value == "starting replicas: version 2 starting"
    progress.failed("version 2 failed")
    assert (bar.bar_style, label.value) == ("danger", "version 2 failed")
    progress.done("version 2 ready")
    assert (bar.value, bar.bar_style) == (5, "success")


# ------------------------------------------------------------ the magics, for real


@pytest.fixture(scope="module")
def ip(tmp_path_factory):
    """One real IPython shell with the extension loaded, its history and spool kept apart."""
    with ipython_shell(
        tmp_path_factory.mktemp("shell"), poll_interval=0.3, deploy_timeout=240
    ) as shell:
        yield shell


def test_bad_input_says_what_to_fix_before_anything_is_sent(ip, monkeypatch):
    port = free_port()  # nothing listens: any request would be an error of its own
    monkeypatch.setenv("SHIPYARD_DEPLOYER_URL", f"http://127.0.0.1:{port}/services/deployer")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "t")
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    ip.run_cell(
        "from sklearn.linear_model import LogisticRegression\n"
        "unfitted = LogisticRegression()\nthing = object()\nrows = [[1, 2]]\n"
        "import numpy as np\nempty = np.zeros((0, 2))\n"
    )
    cases = [
        ("", "Say what to deploy: %deploy MODEL --name NAME"),
        ("unfitted", "Name the deployment: %deploy unfitted --name NAME"),
        ("unfitted --name Bad_Name", "'Bad_Name' is not a deployment name: use 1 to 40"),
        ("unfitted --name a--b", "'a--b' is not a deployment name"),
        ("unfitted --name ok --canary 101", "--canary 101: give the new version's share"),
        ("unfitted --name ok --replicas 0", "--replicas 0: give 1 or more"),
        ("unfitted --name ok --run abc", "--run 'abc' is not an MLflow run id"),
        ("nope --name ok", "No variable named 'nope' in this notebook: run the cell that"),
        ("'a b' --name ok", "'a b' is not a model: give a variable holding a model"),
        ("models:/x --name ok", "'models:/x' is not a registered model version: write"),
        ("thing --name ok", "thing is a builtins.object, which %deploy cannot log: it logs"),
        ("unfitted --name ok", "unfitted is a LogisticRegression that is not fitted yet: call"),
        ("unfitted --name ok --to 1", "--to VERSION goes with --rollback NAME"),
        ("--rollback ok --delete ok", "Give one of --rollback, --promote and --delete"),
        ("model --rollback ok", "--rollback acts on a deployment by its name and takes no"),
        ("--promote ok two", "--promote ok two: give a version number"),
        ("--delete Bad", "'Bad' is not a deployment name"),
    ]
    for line, message in cases:
        assert usage_error(ip.run_line_magic, "deploy", line).startswith(message), line
    ip.run_cell("fitted = LogisticRegression().fit([[0.0], [1.0]], [0, 1])")
    for line, message in (
        ("fitted --name ok --input-example missing", "--input-example missing: no variable"),
        ("fitted --name ok --input-example rows", "--input-example rows is a list: give a"),
        ("fitted --name ok --input-example empty", "--input-example empty has no rows"),
    ):
        assert usage_error(ip.run_line_magic, "deploy", line).startswith(message), line
    # only then the deployer, which does not answer
    unreachable = (
        f"Cannot reach the deployer at http://127.0.0.1:{port}/services/deployer "
        "(ConnectionError); ask your admin whether it runs."
    )
    assert usage_error(ip.run_line_magic, "deploy", "fitted --name ok") == unreachable
    assert usage_error(ip.run_line_magic, "deployments", "") == unreachable
    assert usage_error(ip.run_line_magic, "deploy", "--rollback ok") == unreachable
    monkeypatch.delenv("JUPYTERHUB_USER")
    assert "JUPYTERHUB_USER is not set" in usage_error(
        ip.run_line_magic, "deploy", "fitted --name ok"
    )


@pytest.mark.parametrize("configured", [False, True])
def test_the_panel_routes_without_a_deployer(tmp_path, monkeypatch, configured):
    monkeypatch.delenv("SHIPYARD_DEPLOYER_URL", raising=False)
    monkeypatch.delenv("JUPYTERHUB_PUBLIC_HUB_URL", raising=False)
    env = {"JUPYTERHUB_API_TOKEN": "t"}
    if configured:
        env["SHIPYARD_DEPLOYER_URL"] = f"http://127.0.0.1:{free_port()}/services/deployer"
    proc, url, token = start_jupyter_server(tmp_path, env)
    try:
        r = requests.get(
            f"{url}/shipyard/api/deployer/deployments",
            headers={"Authorization": f"token {token}"},
            timeout=30,
        )
        anonymous = requests.get(f"{url}/shipyard/api/deployer/deployments", timeout=30)
    finally:
        proc.terminate()
        proc.wait(30)
    assert anonymous.status_code == 403
    assert r.status_code == 502
    body = r.json()
    assert body["status"] == 502 and body["errors"] == []
    expected = "Cannot reach the deployer" if configured else "SHIPYARD_DEPLOYER_URL is not set"
    assert expected in body["message"]


# ------------------------------------------------- against the real hub and services


class Hub:
    """The module's hub: its tracking service and deployer, as alice."""

    def __init__(self, hub, token: str):
        self.hub, self.token = hub, token
        self.deployer = f"{hub.url}/services/deployer"
        self.tracking = f"{hub.url}/services/tracking"

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"token {self.token}"}
        return requests.request(
            method, f"{self.deployer}/{path}", headers=headers, timeout=60, **kwargs
        )

    def mlflow(self, path: str, **params) -> dict:
        r = requests.get(
            f"{self.tracking}/api/2.0/mlflow/{path}",
            params=params,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module")
def deployed_hub(hub_factory, model_server_env):
    with service_hub(
        hub_factory,
        "deploy-clients",
        tagged("sydc-"),
        tagged("shipyard-test-dc"),
        ["tracking", "deployer"],
        configs={"deployer": LOCAL_DEPLOYER_CONFIG},
        profiles=SERVING_PROFILES,
        probe="alice",
    ) as hub:
        yield Hub(hub, hub.create_user("alice"))


@pytest.fixture
def alice(deployed_hub, ip, monkeypatch, tmp_path):
    """What the spawner gives alice's kernels, and a notebook in a git repository."""
    home = tmp_path / "home"
    (home / "work").mkdir(parents=True)
    notebook = home / "work" / "iris.ipynb"
    notebook.write_text(
        json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    )
    git = ["git", "-C", str(home / "work"), "-c", "user.name=a", "-c", "user.email=a@b"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "iris.ipynb"], check=True)
    subprocess.run([*git, "commit", "-qm", "notebook"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
    token = deployed_hub.token
    for name, value in {
        "JUPYTERHUB_API_TOKEN": token,
        "JUPYTERHUB_USER": "alice",
        "SHIPYARD_DEPLOYER_URL": deployed_hub.deployer,
        "MLFLOW_TRACKING_URI": deployed_hub.tracking,
        "MLFLOW_TRACKING_TOKEN": token,
        "MLFLOW_EXPERIMENT_NAME": "alice/Default",
        "SHIPYARD_ENV_DIGEST": "sha256:ab12",
        "SHIPYARD_ENV": "base",
        "JPY_SESSION_NAME": str(notebook),
        "HOME": str(home),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(home)
    return {"token": token, "notebook": notebook, "commit": commit.stdout.strip()}


def model_version(hub: Hub, name: str, version: str) -> dict:
    return hub.mlflow("model-versions/get", name=name, version=version)["model_version"]


@needs_root
def test_deploy_registers_the_model_with_its_lineage(deployed_hub, ip, alice, capsys):
    """A tracked model, registered as alice-<name> with run, notebook, commit and digest."""
    ip.run_cell(TRAIN)
    ip.run_cell_magic(
        "track", "--name train-iris", "model = LogisticRegression(max_iter=300).fit(X, y)"
    )
    tracked = ip.magics_manager.registry["TrackingMagics"].last_tracked_run
    assert tracked
    ip.run_line_magic(
        "deploy", "model --name lineage --input-example X --profile serving --no-wait"
    )
    out = capsys.readouterr().out
    assert "Deploying 'lineage': version 1 from models:/alice-lineage/1." in out
    assert "It is starting; %deployments shows when it is ready." in out

    tags = {t["key"]: t["value"] for t in model_version(deployed_hub, "alice-lineage", "1")["tags"]}
    assert tags["shipyard.source_run_id"] == tracked
    assert tags["shipyard.notebook"] == str(alice["notebook"].resolve())
    assert tags["shipyard.git_commit"] == alice["commit"]
    assert tags["shipyard.git_dirty"] == "false"
    assert tags["shipyard.env_digest"] == "sha256:ab12"
    # the run the model was logged in names its source run, as a %%track run would
    logged = tags["shipyard.model_run_id"]
    run = deployed_hub.mlflow("runs/get", run_id=logged)["run"]
    run_tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert run_tags["shipyard.source_run_id"] == tracked
    assert run_tags["mlflow.runName"] == "deploy-lineage"

    # what the deployer was sent: the registered version, its lineage, signature and summary
    deployment = deployed_hub.call("GET", "api/deployments/lineage").json()
    (version,) = deployment["versions"]
    assert version["model_uri"] == "models:/alice-lineage/1"
    assert version["lineage"]["run_id"] == tracked
    assert version["lineage"]["registered_model"] == "alice-lineage"
    assert version["lineage"]["git_commit"] == alice["commit"]
    columns = [c["name"] for c in json.loads(version["signature"]["inputs"])]
    assert columns == ["sepal_length", "sepal_width", "petal_length", "petal_width"]

    # the same model by run id: a new version of the same registered model
    ip.run_line_magic("deploy", f"{logged} --name lineage --no-wait")
    out = capsys.readouterr().out
    assert "version 2 from models:/alice-lineage/2." in out
    tags = {t["key"]: t["value"] for t in model_version(deployed_hub, "alice-lineage", "2")["tags"]}
    assert tags["shipyard.source_run_id"] == logged
    assert tags["shipyard.notebook"] == str(alice["notebook"].resolve())
    # a registered version of another name is copied under alice-<name>
    ip.run_line_magic("deploy", "models:/alice-lineage/1 --name copied --no-wait")
    assert "version 1 from models:/alice-copied/1." in capsys.readouterr().out
    tags = {t["key"]: t["value"] for t in model_version(deployed_hub, "alice-copied", "1")["tags"]}
    assert tags["shipyard.copied_from"] == "models:/alice-lineage/1"

    # refusals of the deployer, in its words
    assert usage_error(ip.run_line_magic, "deploy", "model --name other --profile roomy").count(
        "research"
    )
    message = usage_error(ip.run_line_magic, "deploy", f"{'0' * 32} --name lineage")
    assert message.startswith(f"No run '{'0' * 32}'")
    message = usage_error(ip.run_line_magic, "deploy", "model --name fresh --canary 10")
    assert message.startswith("--canary: 'fresh' is not deployed yet")
    for name in ("lineage", "copied"):
        ip.run_line_magic("deploy", f"--delete {name}")
    assert "Deleted 'copied': every version is stopped" in capsys.readouterr().out
    assert deployed_hub.call("GET", "api/deployments/lineage").status_code == 404


@needs_root
def test_the_panel_routes_forward_as_the_user_and_pass_errors_on(deployed_hub, tmp_path):
    env = {
        "JUPYTERHUB_API_TOKEN": deployed_hub.token,
        "SHIPYARD_DEPLOYER_URL": deployed_hub.deployer,
    }
    proc, url, token = start_jupyter_server(tmp_path, env)
    session = requests.Session()
    session.headers["Authorization"] = f"token {token}"
    base = f"{url}/shipyard/api/deployer"
    try:
        r = session.get(f"{base}/deployments", timeout=60)
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
        assert r.json() == deployed_hub.call("GET", "api/deployments").json()
        for method, path, body in (
            ("GET", "deployments/missing", None),
            ("GET", "deployments/missing/metrics", None),
            ("GET", "deployments/missing/versions/1", None),
            ("GET", "deployments/missing/versions/1/lineage", None),
            ("PUT", "deployments/missing/traffic", {"split": {"1": 50}}),
            ("POST", "deployments/missing/promote", {"version": "x"}),
            ("POST", "deployments/missing/rollback", {}),
        ):
            direct = deployed_hub.call(method, f"api/{path}", json=body)
            forwarded = session.request(method, f"{base}/{path}", json=body, timeout=60)
            assert forwarded.status_code == direct.status_code >= 400, path
            assert forwarded.json() == direct.json()
        r = session.delete(f"{base}/deployments/missing", timeout=60)  # not forwarded
        assert r.status_code == 405 and r.json()["message"].endswith("takes GET")
        r = session.post(f"{base}/deployments", json={}, timeout=60)
        assert r.status_code == 405
    finally:
        proc.terminate()
        proc.wait(30)


def invoke(url: str, token: str, payload: dict) -> requests.Response:
    return requests.post(url, json=payload, headers={"Authorization": f"token {token}"}, timeout=60)


@needs_root
def test_deploy_serve_list_roll_back(deployed_hub, ip, alice, capsys, monkeypatch):
    shown = []  # the progress widget, kept to read its last state
    monkeypatch.setattr("server_ext.magics.deploy.display", shown.append)
    ip.run_cell(TRAIN + "model = LogisticRegression(max_iter=300).fit(X, y)\n")
    ip.run_line_magic("deploy", "model --name iris --input-example X --profile serving")
    out = capsys.readouterr().out
    url = f"{deployed_hub.deployer}/models/alice/iris/invocations"
    assert "Version 1 of 'iris' is ready (models:/alice-iris/1, profile serving" in out
    assert "takes 100% of the traffic" in out
    assert f"Endpoint: {url}\n" in out
    assert alice["token"] not in out  # SECURITY rule 8
    (progress,) = shown
    bar, label = progress.children
    assert (bar.value, bar.bar_style, label.value) == (5, "success", "version 1 ready")

    # the printed curl command, run as printed with the token from the environment
    command = out.split("\n  curl ", 1)[1].splitlines()[0]
    result = subprocess.run(
        ["bash", "-c", f"curl -s {command}"], capture_output=True, text=True,
        env={"PATH": os.environ["PATH"], "JUPYTERHUB_API_TOKEN": alice["token"]},
    )  # fmt: skip
    assert json.loads(result.stdout)["predictions"] == [0], result
    # and the Python one
    code = out.split("In Python:\n", 1)[1]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True,
        env={**os.environ, "JUPYTERHUB_API_TOKEN": alice["token"]},
    )  # fmt: skip
    assert result.stdout.strip() == "[0]", result.stderr
    rows = json.loads(ip.user_ns["X"].tail(2).to_json(orient="split", index=False))
    r = invoke(url, alice["token"], {"dataframe_split": rows})
    assert r.status_code == 200 and r.json()["predictions"] == [2, 2]

    table = ip.run_line_magic("deployments", "")
    assert isinstance(table, ipywidgets.HTML)
    assert "<b>iris</b>" in table.value and f"<code>{url}</code>" in table.value
    assert "100%" in table.value and ">ready<" in table.value and "1/1 ready" in table.value

    # a second version takes the traffic; a rollback gives it back to the first; all under
    # steady load at concurrency 8 on the real model servers, and no request fails
    statuses: list[int] = []
    versions: set[str] = set()
    done = threading.Event()

    def load() -> None:
        session = requests.Session()
        while not done.is_set():
            try:
                answer = session.post(
                    url,
                    json={"dataframe_split": rows},
                    headers={"Authorization": f"token {alice['token']}"},
                    timeout=30,
                )
                statuses.append(answer.status_code)
                versions.add(answer.headers.get("X-Shipyard-Model-Version", ""))
            except requests.RequestException as e:
                statuses.append(repr(e))

    clients = [threading.Thread(target=load, daemon=True) for _ in range(8)]
    for client in clients:
        client.start()
    try:
        ip.run_cell("model2 = LogisticRegression(max_iter=300, C=0.01).fit(X, y)")
        ip.run_line_magic("deploy", "model2 --name iris --input-example X")
        out = capsys.readouterr().out
        assert "Version 2 of 'iris' is ready (models:/alice-iris/2" in out
        wait_for(lambda: "2" in versions, 30, 0.1, "version 2 to take the traffic")
        ip.run_line_magic("deploy", "--rollback iris")
        assert "Rolled back 'iris': version 1 takes 100% of the traffic." in (
            capsys.readouterr().out
        )
        r = invoke(url, alice["token"], {"dataframe_split": rows})
        assert r.headers["X-Shipyard-Model-Version"] == "1"
        ip.run_line_magic("deploy", "--promote iris 2")
        assert "Promoted 'iris': version 2 takes 100% of the traffic." in capsys.readouterr().out
        time.sleep(1)
    finally:
        done.set()
        for client in clients:
            client.join(60)
    failed = [s for s in statuses if s != 200]
    assert not failed and len(statuses) > 100, (len(statuses), failed[:5])
    assert {"1", "2"} <= versions

    # a version that cannot load fails with its reason; the one before keeps serving
    ip.run_cell(
        "import mlflow.pyfunc\n"
        "class Broken(mlflow.pyfunc.PythonModel):\n"
        "    def load_context(self, context):\n"
        "        raise RuntimeError('the weights are missing')\n"
        "    def predict(self, context, model_input):\n"
        "        return model_input\n"
        "broken = Broken()\n"
    )
    message = usage_error(ip.run_line_magic, "deploy", "broken --name iris")
    assert message.startswith("Version 3 of 'iris' failed: "), message
    assert "the weights are missing" in message
    assert message.endswith("The previous version keeps serving: version 2 of 'iris'.")
    assert invoke(url, alice["token"], {"dataframe_split": rows}).status_code == 200
    text = shown_text.deployments_text(shown_text.version_rows(DeployerClient.from_environment()))
    assert "iris  3" in text and "failed: " in text
    ip.run_line_magic("deploy", "--delete iris")
    capsys.readouterr()


def test_the_drift_baseline_is_the_deployer_drift_modules_summary():
    frame = pd.DataFrame({"x": [float(i) for i in range(200)], "c": ["a", "b"] * 100})
    assert publishing.training_summary(frame) == json.loads(json.dumps(drift.summarize(frame)))
    array = frame[["x"]].to_numpy()
    assert publishing.training_summary(array) == json.loads(
        json.dumps(drift.summarize(pd.DataFrame({"0": array[:, 0]})))
    )
    assert publishing.training_summary(None) is None


@pytest.fixture(scope="module")
def fake_backend_hub(hub_factory):
    """A hub whose deployer's replicas are the deployer tests' double (loopback processes that
    answer their model URI's tail as the prediction): the magics' rollout flows, without
    loading models."""
    with service_hub(
        hub_factory,
        "deploy-fake",
        tagged("sydf-"),
        tagged("shipyard-test-df"),
        ["deployer"],
    ) as hub:
        yield Hub(hub, hub.create_user("alice"))


@needs_root
def test_rollouts_follow_the_deployer(fake_backend_hub, ip, monkeypatch, capsys):
    """``%deploy`` of registered models through new versions, canary, promote, rollback."""
    hub = fake_backend_hub
    for name, value in {
        "JUPYTERHUB_API_TOKEN": hub.token,
        "JUPYTERHUB_USER": "alice",
        "SHIPYARD_DEPLOYER_URL": hub.deployer,
    }.items():
        monkeypatch.setenv(name, value)

    def publish(self, progress, user, name, ref, *rest):
        # the registry is tested above; here the deployer's answers are. The double's
        # replicas never start for a "models:/fake-broken/" URI.
        version = ref.rsplit("/", 1)[1]
        uri = "models:/fake-broken/x" if version == "99" else ref
        return publishing.Published(uri, f"{user}-{name}", version, {"run_id": "0" * 32})

    monkeypatch.setattr("server_ext.clients.deployer.rollout.Rollout.publish", publish)
    url = f"{hub.deployer}/models/alice/roll/invocations"

    def served() -> str:
        r = invoke(url, hub.token, {"inputs": [[1.0]]})
        assert r.status_code == 200, r.text
        return r.headers["X-Shipyard-Model-Version"]

    ip.run_line_magic("deploy", "models:/alice-roll/1 --name roll --replicas 2")
    out = capsys.readouterr().out
    assert "Version 1 of 'roll' is ready (models:/alice-roll/1, profile tiny, 2 replica(s))" in out
    assert f"Endpoint: {url}\n" in out and hub.token not in out
    ip.run_line_magic("deploy", "models:/alice-roll/2 --name roll --canary 20")
    out = capsys.readouterr().out
    assert "Version 2 of 'roll' is ready" in out and "takes 20% of the traffic." in out
    assert "%deploy --promote roll 2 sends it all" in out
    text = shown_text.deployments_text(shown_text.version_rows(DeployerClient.from_environment()))
    assert [line.split()[:3] for line in text.splitlines()[1:]] == [
        ["roll", "2", "20%"],
        ["roll", "1", "80%"],
    ]
    table = ip.run_line_magic("deployments", "")
    assert "<code>" + url + "</code>" in table.value and "2/2 ready" in table.value
    ip.run_line_magic("deploy", "--promote roll 2")
    assert "Promoted 'roll': version 2 takes 100% of the traffic." in capsys.readouterr().out
    assert served() == "2"
    ip.run_line_magic("deploy", "--rollback roll")
    assert "Rolled back 'roll': version 1 takes 100% of the traffic." in capsys.readouterr().out
    assert served() == "1"
    # the deployer's refusals, in its words
    message = usage_error(ip.run_line_magic, "deploy", "--promote roll 9")
    assert (
        message
        == hub.call("POST", "api/deployments/roll/promote", json={"version": 9}).json()["message"]
    )
    message = usage_error(
        ip.run_line_magic, "deploy", "models:/alice-roll/3 --name roll --replicas 9"
    )
    assert "at most 3 replicas" in message
    assert message.endswith("The previous version keeps serving: version 1 of 'roll'.")
    # a version that never starts: its reason, and the version before keeps serving
    message = usage_error(ip.run_line_magic, "deploy", "models:/alice-roll/99 --name roll")
    assert message.startswith("Version 3 of 'roll' failed: could not load the model"), message
    assert message.endswith("The previous version keeps serving: version 1 of 'roll'.")
    assert served() == "1"
    ip.run_line_magic("deploy", "--delete roll")
    assert "Deleted 'roll'" in capsys.readouterr().out
