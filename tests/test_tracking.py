"""The tracking service against a real hub and a real `mlflow server`: who may do what.

alice owns an experiment, a run (with a metric and an artifact) and a
registered model; mallory is a stranger; the hub's admin is an admin. Each is
an ordinary hub API token sent as MLflow's client sends it
(``Authorization: Bearer``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.parse
from pathlib import Path

import pytest
import requests

from .conftest import needs_root, postgres_database
from .hubtools import wait_for

pytestmark = needs_root
API = "/api/2.0/mlflow"


class Client:
    """REST calls to the tracking service as one hub user."""

    def __init__(self, base: str, token: str | None):
        self.base, self.token = base, token

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return requests.request(
            method, self.base + path, headers=headers, timeout=60, allow_redirects=False, **kwargs
        )

    def get(self, path, **params):
        return self.call("GET", path, params=params)

    def post(self, path, **body):
        return self.call("POST", path, json=body)


@pytest.fixture(scope="module")
def tracking(hub_factory):
    hub = hub_factory(name="trackhub", extra_env={"SHIPYARD_TRACKING": "1"})
    base = hub.url + "/services/tracking"
    tokens = {name: hub.create_user(name) for name in ("alice", "mallory", "admin")}
    clients = {name: Client(base, token) for name, token in tokens.items()}

    def up():
        try:
            return clients["admin"].get("/version").status_code == 200
        except requests.RequestException:
            return False

    # the gateway answers 503 until MLflow behind it is up
    wait_for(up, 180, 0.5, "the tracking service")
    yield hub, base, clients, tokens


@pytest.fixture(scope="module")
def owned(tracking):
    """alice's experiment, run (metric, artifact) and registered model."""
    _, _, clients, _ = tracking
    alice = clients["alice"]
    r = alice.post(f"{API}/experiments/create", name="alice/churn")
    assert r.status_code == 200, r.text
    experiment = r.json()["experiment_id"]
    r = alice.post(f"{API}/runs/create", experiment_id=experiment, start_time=1)
    assert r.status_code == 200, r.text
    run = r.json()["run"]["info"]["run_id"]
    r = alice.post(f"{API}/runs/log-metric", run_id=run, key="auc", value=0.9, timestamp=1)
    assert r.status_code == 200, r.text
    artifact = f"/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run}/artifacts/model.txt"
    r = alice.call("PUT", artifact, data=b"weights")
    assert r.status_code == 200, r.text
    r = alice.post(f"{API}/registered-models/create", name="alice-churn")
    assert r.status_code == 200, r.text
    return {"experiment": experiment, "run": run, "artifact": artifact, "model": "alice-churn"}


#: What each user's writes in the matrix write, told apart from the others' writes.
WRITTEN = {"alice": 0.1, "mallory": 0.666, "admin": 0.2}


def _matrix(owned, who):
    e, run, art, model = owned["experiment"], owned["run"], owned["artifact"], owned["model"]
    return [
        # (what, method, path, body or params, is it a write)
        ("read experiment", "GET", f"{API}/experiments/get", {"experiment_id": e}, False),
        ("rename experiment", "POST", f"{API}/experiments/update",
         {"experiment_id": e, "new_name": f"renamed-by-{who}"}, True),
        ("read run", "GET", f"{API}/runs/get", {"run_id": run}, False),
        ("write run", "POST", f"{API}/runs/log-metric",
         {"run_id": run, "key": "auc", "value": WRITTEN[who], "timestamp": 2}, True),
        ("read metric", "GET", f"{API}/metrics/get-history", {"run_id": run, "metric_key": "auc"},
         False),
        ("download artifact", "GET", art, None, False),
        ("upload artifact", "PUT", art.replace("model.txt", f"by-{who}.txt"), who.encode(), True),
        ("list artifacts", "GET", "/api/2.0/mlflow-artifacts/artifacts",
         {"path": f"{e}/{run}/artifacts"}, False),
        ("read model", "GET", f"{API}/registered-models/get", {"name": model}, False),
        ("write model", "POST", f"{API}/model-versions/create",
         {"name": model, "source": f"mlflow-artifacts:/{e}/{run}/artifacts", "run_id": run,
          "description": f"by {who}"}, True),
    ]  # fmt: skip


def _send(client: Client, method: str, path: str, payload) -> requests.Response:
    if method == "GET":
        return client.call("GET", path, params=payload)
    if isinstance(payload, bytes):
        return client.call(method, path, data=payload)
    return client.call(method, path, json=payload)


def _writes_seen_by_the_owner(clients, owned, who) -> dict[str, bool]:
    """Which of ``who``'s matrix writes alice finds on her objects."""
    alice, e, run = clients["alice"], owned["experiment"], owned["run"]
    r = alice.get(f"{API}/experiments/get", experiment_id=e)
    assert r.status_code == 200, r.text
    renamed = r.json()["experiment"]["name"] == f"renamed-by-{who}"
    r = alice.get(f"{API}/metrics/get-history", run_id=run, metric_key="auc")
    assert r.status_code == 200, r.text
    logged = WRITTEN[who] in {m["value"] for m in r.json()["metrics"]}
    r = alice.call("GET", owned["artifact"].replace("model.txt", f"by-{who}.txt"))
    assert r.status_code in (200, 404), r.text
    uploaded = r.status_code == 200 and r.content == who.encode()
    r = alice.get(f"{API}/model-versions/search", filter=f"name = '{owned['model']}'")
    assert r.status_code == 200, r.text
    # MLflow leaves an empty list out of its answer (the model may have no version yet)
    versions = r.json().get("model_versions", [])
    versioned = f"by {who}" in {v.get("description") for v in versions}
    return {
        "rename experiment": renamed,
        "write run": logged,
        "upload artifact": uploaded,
        "write model": versioned,
    }


@pytest.mark.parametrize("who", ["alice", "mallory", "admin"])
def test_permission_matrix(tracking, owned, who):
    """Owner and admin may do everything, writes included; a stranger nothing, reads included."""
    _, _, clients, _ = tracking
    client = clients[who]
    matrix = _matrix(owned, who)
    for what, method, path, payload, _ in matrix:
        r = _send(client, method, path, payload)
        if who == "mallory":
            assert r.status_code == 403, f"mallory could {what}: {r.status_code} {r.text}"
            assert r.headers["Content-Type"].startswith("application/json"), (what, r.text)
            assert r.json()["error_code"] == "PERMISSION_DENIED", what
        else:
            assert r.status_code == 200, f"{who} could not {what}: {r.status_code} {r.text}"
    # each write took effect (the owner finds it), or for the stranger none did
    done = _writes_seen_by_the_owner(clients, owned, who)
    assert set(done) == {what for what, *_, write in matrix if write}, "each write is checked"
    if who == "mallory":
        assert not any(done.values()), done
        # searches show strangers their own things and nothing of alice's (MLflow leaves
        # an empty list out of its answer: mallory's own keep a refusal from passing as one)
        r = client.post(f"{API}/experiments/create", name="mallory/matrix")
        assert r.status_code == 200, r.text
        own = r.json()["experiment_id"]
        assert client.post(f"{API}/registered-models/create", name="mallory-matrix").ok
        r = client.post(f"{API}/experiments/search", max_results=1000)
        assert r.status_code == 200 and "experiments" in r.json(), r.text
        seen = {x["experiment_id"] for x in r.json()["experiments"]}
        assert own in seen and owned["experiment"] not in seen, seen
        r = client.get(f"{API}/registered-models/search", max_results=1000)
        assert r.status_code == 200 and "registered_models" in r.json(), r.text
        seen = {m["name"] for m in r.json()["registered_models"]}
        assert "mallory-matrix" in seen and owned["model"] not in seen, seen
    else:
        assert all(done.values()), done


def test_a_run_is_always_recorded_as_the_hub_user_who_created_it(tracking, owned):
    _, _, clients, _ = tracking
    mallory = clients["mallory"]
    r = mallory.post(f"{API}/experiments/create", name="mallory/spoof")
    assert r.status_code == 200, r.text
    r = mallory.post(
        f"{API}/runs/create",
        experiment_id=r.json()["experiment_id"],
        user_id="alice",
        tags=[{"key": "mlflow.user", "value": "alice"}, {"key": "team", "value": "x"}],
    )
    assert r.status_code == 200, r.text
    info = r.json()["run"]["info"]
    assert info["user_id"] == "mallory"
    tags = {t["key"]: t["value"] for t in r.json()["run"]["data"]["tags"]}
    assert tags["mlflow.user"] == "mallory" and tags["team"] == "x"
    r = mallory.post(f"{API}/runs/create", experiment_id=owned["experiment"])
    assert r.status_code == 403, r.text


def test_owner_can_grant_read_and_the_grantee_reads_but_cannot_write(tracking, owned):
    hub, _, clients, _ = tracking
    bob_token = hub.create_user("bob")
    bob = Client(clients["alice"].base, bob_token)
    assert bob.get(f"{API}/runs/get", run_id=owned["run"]).status_code == 403
    grant = "/api/3.0/mlflow/users/permissions/grant"
    r = clients["alice"].post(
        grant,
        username="bob",
        resource_type="experiment",
        resource_id=owned["experiment"],
        permission="READ",
    )
    assert r.status_code == 200, r.text
    assert bob.get(f"{API}/runs/get", run_id=owned["run"]).status_code == 200
    r = bob.post(f"{API}/runs/log-metric", run_id=owned["run"], key="x", value=1, timestamp=1)
    assert r.status_code == 403
    # a stranger cannot hand out what is not theirs
    r = clients["mallory"].post(
        grant,
        username="mallory",
        resource_type="experiment",
        resource_id=owned["experiment"],
        permission="MANAGE",
    )
    assert r.status_code == 403


@pytest.mark.parametrize(
    "method, path, body, status, message",
    [
        ("POST", f"{API}/users/create", {"username": "x", "password": "y"}, 403,
         "Not offered by Shipyard: MLflow accounts follow hub accounts; manage users on the hub."),
        ("PATCH", f"{API}/users/update-admin", {"username": "mallory", "is_admin": True}, 403,
         "Not offered by Shipyard: admins are the hub's admins; change them on the hub."),
        ("GET", f"{API}/users/list", None, 403,
         "Only hub admins may use this: user directory."),
        ("GET", "/api/3.0/mlflow/gateway/secrets/list", None, 403,
         "Only hub admins may use this: the AI gateway holds provider secrets."),
        ("GET", "/api/2.0/mlflow/no-such-route", None, 403,
         "Not offered by Shipyard: this MLflow route has no policy in Shipyard, so it is refused."),
        ("POST", f"{API}/experiments/create", {"name": "m1", "artifact_location": "/etc"}, 400,
         "Shipyard sets where artifacts are stored (one folder per experiment in the tracking "
         "server's store); create the experiment without artifact_location."),
        ("POST", f"{API}/experiments/create", {"name": "alice/taken"}, 400,
         "Experiment names with '/' start with your user name: 'mallory/…'."),
        ("POST", f"{API}/experiments/create", b"{not json", 400, "The request body is not JSON."),
        # dot segments are resolved before the gateway: judged as what they name
        ("GET", f"{API}/runs/%2E%2E/%2E%2E/mlflow/users/list", None, 403,
         "Only hub admins may use this: user directory."),
    ],
)  # fmt: skip
def test_refusals_say_why(tracking, method, path, body, status, message):
    _, _, clients, _ = tracking
    client = clients["mallory"]
    if isinstance(body, bytes):
        r = client.call(method, path, data=body, headers={"Content-Type": "application/json"})
    else:
        r = client.call(method, path, json=body)
    assert r.status_code == status, r.text
    assert r.json()["message"] == message


def test_admin_may_use_admin_routes(tracking):
    _, _, clients, _ = tracking
    r = clients["admin"].get(f"{API}/users/list")
    assert r.status_code == 200, r.text
    names = {u["username"] for u in r.json()["users"]}
    assert {"alice", "mallory", "admin"} <= names


def test_anonymous_and_bad_tokens_are_refused(tracking):
    _, base, _, _ = tracking
    anon = Client(base, None)
    r = anon.get("/")
    assert r.status_code == 302 and "/hub/" in r.headers["Location"], "browsers go to hub login"
    message = (
        "A valid hub API token is needed (in a Shipyard kernel MLFLOW_TRACKING_TOKEN holds "
        "one; elsewhere create one on the hub's token page)."
    )
    for client, method, path in (
        (anon, "GET", f"{API}/experiments/search"),
        (anon, "POST", f"{API}/experiments/create"),
        (Client(base, "not-a-token"), "GET", f"{API}/experiments/search"),
        (Client(base, "not-a-token"), "GET", "/"),
    ):
        r = client.call(method, path, json={"name": "x"} if method == "POST" else None)
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.json() == {"error_code": "UNAUTHENTICATED", "message": message}


def test_mlflow_itself_refuses_requests_that_skip_the_gateway(tracking, owned):
    hub, _, _, _ = tracking
    state = hub.data_dir / "tracking"
    # MLflow's loopback port, from the record the gateway keeps of it (0600, root's)
    port = json.loads((state / "mlflow.json").read_text())["port"]
    ports = [port]
    direct = f"http://127.0.0.1:{ports[0]}/services/tracking{API}/experiments/get"
    forged = {"X-Shipyard-User": "alice", "X-Shipyard-Admin": "1"}
    r = requests.get(
        direct, params={"experiment_id": owned["experiment"]}, headers=forged, timeout=30
    )
    assert r.status_code == 401
    r = requests.get(
        direct,
        params={"experiment_id": owned["experiment"]},
        auth=("shipyard-mlflow-admin", "password1234"),
        timeout=30,
    )
    assert r.status_code == 401, "no MLflow password opens it"
    assert (state / "mlflow-auth.ini").stat().st_mode & 0o777 == 0o600


def test_kernel_logs_as_its_user_without_setup_and_sees_no_hub_secret(tracking):
    hub, base, clients, tokens = tracking
    from .hubtools import run_in_kernel, stdout_of

    hub.start_server("alice")
    code = (
        "import mlflow, os\n"
        "with mlflow.start_run() as run:\n"
        "    mlflow.log_metric('loss', 0.25)\n"
        "print(run.info.run_id, run.info.experiment_id)\n"
        "print(sorted(k for k in os.environ if 'SECRET' in k or k.endswith('DB_URL')))\n"
    )
    out = stdout_of(run_in_kernel(hub.server_url("alice"), tokens["alice"], code, timeout=120))
    lines = out.strip().splitlines()[-2:]  # after MLflow's own "View run at" links
    run_id, experiment_id = lines[0].split()
    assert lines[1] == "[]", "no hub-side secret in the kernel's environment"
    r = clients["alice"].get(f"{API}/experiments/get", experiment_id=experiment_id)
    assert r.json()["experiment"]["name"] == "alice/Default"
    r = clients["alice"].get(f"{API}/runs/get", run_id=run_id)
    assert r.json()["run"]["data"]["metrics"][0]["value"] == 0.25
    assert clients["mallory"].get(f"{API}/runs/get", run_id=run_id).status_code == 403

    # the magics are loaded in every kernel, and log through the gateway as alice
    tracked = (
        "%%track --name tracked --param lr=0.1\n"
        "for i in range(100):\n"
        "    log(loss=1 / (i + 1))\n"
        "print('trained')\n"
    )
    out = stdout_of(run_in_kernel(hub.server_url("alice"), tokens["alice"], tracked, timeout=120))
    assert "trained" in out

    def finished():  # the cell does not wait for its run's end: the kernel sends it after
        r = clients["alice"].post(
            f"{API}/runs/search",
            experiment_ids=[experiment_id],
            filter="tags.`mlflow.runName` = 'tracked'",
        )
        runs = r.json().get("runs", [])
        assert len(runs) <= 1, r.text
        return runs and runs[0]["info"]["status"] == "FINISHED" and runs

    runs = wait_for(finished, 30, what="the tracked run to be complete")
    data = runs[0]["data"]
    assert {p["key"]: p["value"] for p in data["params"]}["lr"] == "0.1"
    tags = {t["key"]: t["value"] for t in data["tags"]}
    assert any(v.startswith("sha256:") for k, v in tags.items() if "digest" in k), tags
    history = clients["alice"].get(
        f"{API}/metrics/get-history", run_id=runs[0]["info"]["run_id"], metric_key="loss"
    )
    assert len(history.json()["metrics"]) == 100

    # %compare takes the names %runs shows; through the gateway, a run that is missing or
    # another user's is "no run", never a refused token
    r = clients["mallory"].post(f"{API}/experiments/create", name="mallory/own")
    theirs = clients["mallory"].post(
        f"{API}/runs/create", experiment_id=r.json()["experiment_id"], start_time=1
    )
    theirs = theirs.json()["run"]["info"]["run_id"]
    compare = (
        "from IPython.core.error import UsageError\n"
        "ip = get_ipython()\n"
        "shown = ip.run_line_magic('compare', 'tracked tracked').value\n"
        "print('compared:', '>tracked</a>' in shown and '<b>Parameters</b>' in shown)\n"
        f"for line in ('nope tracked', '{theirs} tracked'):\n"
        "    try:\n"
        "        ip.run_line_magic('compare', line)\n"
        "    except UsageError as e:\n"
        "        print('refused:', e)\n"
    )
    out = stdout_of(run_in_kernel(hub.server_url("alice"), tokens["alice"], compare, timeout=120))
    assert "compared: True\n" in out, out
    assert (
        "refused: No run named 'nope' in experiment 'alice/Default': %runs shows its runs' "
        "names and ids (a run id finds a run of any experiment).\n"
    ) in out
    assert (
        f"refused: No run '{theirs}': no run you can read has that id, and no run in "
        "experiment 'alice/Default' has that name. %runs shows runs' names and ids.\n"
    ) in out
    assert "token" not in out
    state = hub.server_state("alice")
    environ = Path(f"/proc/{state['pid']}/environ").read_bytes()
    assert b"SHIPYARD_TRACKING_GATEWAY_SECRET" not in environ
    assert b"MLFLOW_FLASK_SERVER_SECRET_KEY" not in environ
    assert urllib.parse.quote(base, safe=":/").encode() in environ
    hub.stop_server("alice")


#: The GraphQL queries of MLflow's UI (its run, experiment, artifact, chart and model pages),
#: with the variables they take from an experiment id, a run id and a model name.
GRAPHQL = {
    "mlflowGetExperiment": (
        "query MlflowGetExperimentQuery($input: MlflowGetExperimentInput) {"
        " mlflowGetExperiment(input: $input) { apiError { code message }"
        " experiment { experimentId name artifactLocation lifecycleStage lastUpdateTime"
        " tags { key value } } } }",
        lambda e, run, model: {"input": {"experimentId": e}},
    ),
    "mlflowGetRun": (
        'query GetRun($data: MlflowGetRunInput!) @component(name: "MLflow.ExperimentRunTracking")'
        " { mlflowGetRun(input: $data) { apiError { code message } run {"
        " info { runUuid experimentId runName status startTime endTime artifactUri"
        " lifecycleStage userId }"
        " experiment { experimentId name tags { key value } artifactLocation }"
        " modelVersions { status version name source }"
        " data { metrics { key value step timestamp } params { key value }"
        " tags { key value } }"
        " inputs { datasetInputs { dataset { digest name source sourceType } } } } } }",
        lambda e, run, model: {"data": {"runId": run}},
    ),
    "mlflowListArtifacts": (
        "query ListArtifacts($input: MlflowListArtifactsInput) {"
        " mlflowListArtifacts(input: $input) { apiError { code message } rootUri"
        " files { path isDir fileSize } } }",
        lambda e, run, model: {"input": {"runId": run, "path": ""}},
    ),
    "mlflowGetMetricHistoryBulkInterval": (
        "query GetMetricHistoryBulkInterval($data: MlflowGetMetricHistoryBulkIntervalInput) {"
        " mlflowGetMetricHistoryBulkInterval(input: $data) { __typename"
        " metrics { timestamp step runId key value } apiError { code message } } }",
        lambda e, run, model: {"data": {"runIds": [run], "metricKey": "auc", "maxResults": 320}},
    ),
    "mlflowSearchRuns": (
        "mutation SearchRuns($data: MlflowSearchRunsInput) { mlflowSearchRuns(input: $data) {"
        " apiError { code message } nextPageToken runs { info { runUuid runName experimentId"
        " status } data { metrics { key value } params { key value } tags { key value } } } } }",
        lambda e, run, model: {"data": {"experimentIds": [e], "maxResults": 100}},
    ),
    "mlflowSearchDatasets": (
        "mutation SearchDatasets($input: MlflowSearchDatasetsInput) {"
        " mlflowSearchDatasets(input: $input) { apiError { code message }"
        " datasetSummaries { experimentId name digest context } } }",
        lambda e, run, model: {"input": {"experimentIds": [e]}},
    ),
    "mlflowSearchModelVersions": (
        "query SearchModelVersions($input: MlflowSearchModelVersionsInput) {"
        " mlflowSearchModelVersions(input: $input) { apiError { code message }"
        " modelVersions { name version runId source description } } }",
        lambda e, run, model: {"input": {"filter": f"name = '{model}'"}},
    ),
}


def _graphql(client: Client, query: str, variables: dict | None = None) -> dict:
    r = client.call("POST", "/graphql", json={"query": query, "variables": variables})
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json"), r.text
    return r.json()


def test_graphql_shows_a_stranger_nothing_and_changes_nothing(tracking, owned):
    """mallory sends the UI's GraphQL queries for alice's ids: she gets what she would get
    for ids that do not exist (nothing), and GraphQL has no way to write."""
    _, _, clients, _ = tracking
    alice, mallory = clients["alice"], clients["mallory"]
    e, run, model = hers = (owned["experiment"], owned["run"], owned["model"])
    missing = ("987654321", "f" * 32, "no-such-model")
    # alice's run has an input dataset and her model a version, for the searches to find
    r = alice.post(
        f"{API}/runs/log-inputs",
        run_id=run,
        datasets=[{"dataset": {"name": "train", "digest": "d1", "source_type": "local",
                               "source": "{}"}}],
    )  # fmt: skip
    assert r.status_code == 200, r.text
    r = alice.post(
        f"{API}/model-versions/create",
        name=model,
        source=f"mlflow-artifacts:/{e}/{run}/artifacts",
        run_id=run,
    )
    assert r.status_code == 200, r.text
    run_before = alice.get(f"{API}/runs/get", run_id=run).json()

    def normalized(answer: dict, ids: tuple) -> str:
        text = json.dumps(answer, sort_keys=True)
        for value, placeholder in zip(ids, ("<experiment>", "<run>", "<model>"), strict=True):
            text = re.sub(rf"\b{re.escape(value)}\b", placeholder, text)
        return text

    def found(answer: dict, field: str) -> list:
        """What the answer holds of objects (its fields but the error and the type name)."""
        value = answer["data"][field]
        return [v for k, v in (value or {}).items() if k not in ("apiError", "__typename") and v]

    for field, (query, variables) in GRAPHQL.items():
        # the owner's answer: the query is the UI's and finds her objects
        mine = _graphql(alice, query, variables(*hers))
        assert not mine.get("errors") and found(mine, field), (field, mine)
        text = json.dumps(mine)
        assert f'"{e}"' in text or run in text or model in text, (field, mine)
        seen = _graphql(mallory, query, variables(*hers))
        absent = _graphql(mallory, query, variables(*missing))
        assert normalized(seen, hers) == normalized(absent, missing), (field, seen, absent)
        # nothing of alice's: no object (a search finds none), no name of hers
        assert not seen.get("errors") and not found(seen, field), (field, seen)
        text = json.dumps(seen)
        assert "renamed-by" not in text and "alice/churn" not in text, text
        assert "model.txt" not in text and "auc" not in text, text

    # GraphQL offers no writes: its mutations are searches (and MLflow's echo test)
    schema = _graphql(mallory, "{ __schema { mutationType { fields { name } } } }")
    mutations = {f["name"] for f in schema["data"]["__schema"]["mutationType"]["fields"]}
    assert mutations <= {"mlflowSearchRuns", "mlflowSearchDatasets", "testMutation"}, mutations
    # and the writes MLflow's REST API has are no GraphQL fields, for mallory or alice
    for client in (mallory, alice):
        for write in (
            f'mlflowSetTag(input: {{runId: "{owned["run"]}", key: "k", value: "v"}})',
            f'mlflowLogMetric(input: {{runId: "{owned["run"]}", key: "auc", value: 1}})',
            f'mlflowDeleteRun(input: {{runId: "{owned["run"]}"}})',
            f'mlflowUpdateExperiment(input: {{experimentId: "{owned["experiment"]}", '
            f'newName: "taken"}})',
            f'mlflowDeleteRegisteredModel(input: {{name: "{owned["model"]}"}})',
        ):
            answer = _graphql(client, f"mutation {{ {write} {{ apiError {{ code }} }} }}")
            assert answer["data"] is None and answer["errors"], (write, answer)
            assert "Cannot query field" in answer["errors"][0], answer
    assert alice.get(f"{API}/runs/get", run_id=run).json() == run_before
    r = alice.get(f"{API}/registered-models/get", name=model)
    assert r.status_code == 200, "the model is still there"


#: What a browser sends with a page view, a script, a font and a fetch of the page's own
#: origin (Sec-Fetch-* are set by the browser, never by a page's code).
NAVIGATE = {
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Site": "same-origin",
    "Sec-Fetch-Dest": "document",
}
SCRIPT = {"Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Dest": "script"}
FONT = {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Dest": "font"}
FETCH = {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Dest": "empty"}


@pytest.fixture(scope="module")
def browser(tracking, owned):
    """alice logged in on the hub's page, then on the UI (the service's OAuth), as a browser.

    Returns the session and the ``_xsrf`` cookie's value that the UI's page reads.
    """
    hub, base, _, _ = tracking
    session, r = hub.login("alice", hub.add_user_with_password("alice"))
    assert r.status_code == 302, r.status_code
    r = session.get(base + "/", headers=NAVIGATE, timeout=60)
    assert r.status_code == 200 and r.url == base + "/", (r.status_code, r.url)
    xsrf = session.cookies.get("_xsrf", path="/services/tracking/")
    assert xsrf, "the UI's page view leaves the service's _xsrf cookie"
    return session, xsrf


def test_ui_opens_after_hub_login(tracking, browser):
    hub, base, _, _ = tracking
    session, _ = browser
    r = session.get(base + "/", headers=NAVIGATE, timeout=60)
    assert r.status_code == 200, r.text[:500]
    assert "MLflow" in r.text
    services = hub.api("GET", "/services").json()
    assert services["tracking"]["display"] is True


def test_the_ui_page_loads_the_xsrf_script_first(tracking, browser):
    """MLflow's page carries the script, whole and unencoded, whatever the browser accepts."""
    _, base, _, _ = tracking
    session, _ = browser
    r = session.get(
        base + "/",
        headers={**NAVIGATE, "Accept-Encoding": "gzip, deflate, br", "If-None-Match": '"mlflow"'},
        timeout=60,
        stream=True,
    )
    body = r.raw.read()  # as sent: nothing decoded by requests
    assert r.status_code == 200
    assert "Content-Encoding" not in r.headers
    assert int(r.headers["Content-Length"]) == len(body)
    tag = b'<script src="/services/tracking/shipyard/xsrf.js"></script>'
    assert body.count(tag) == 1, body[:400]
    assert body.index(tag) < body.index(b"static-files/static/js/main."), "before MLflow's code"
    # cached by the gateway's own ETag, of the page with the script
    again = session.get(
        base + "/", headers={**NAVIGATE, "If-None-Match": r.headers["Etag"]}, timeout=60
    )
    assert again.status_code == 304

    script = session.get(base + "/shipyard/xsrf.js", headers=SCRIPT, timeout=30)
    assert script.status_code == 200
    assert script.headers["Content-Type"].startswith("text/javascript")
    assert "X-XSRFToken" in script.text and "_xsrf" in script.text
    anonymous = requests.get(
        base + "/shipyard/xsrf.js", headers=SCRIPT, timeout=30, allow_redirects=False
    )
    assert anonymous.status_code == 401, "for logged-in users only"


def test_cookie_requests_need_the_xsrf_token(tracking, owned, browser):
    """The login cookie works with the page's token; without it, from anywhere, it does not."""
    _, base, _, _ = tracking
    session, xsrf = browser
    search = base + "/ajax-api/2.0/mlflow/experiments/search"

    def fetch(method="GET", url=search, headers=FETCH, **kwargs):
        return session.request(
            method, url, headers=headers, timeout=60, allow_redirects=False, **kwargs
        )

    # what the UI sends: its own experiment, and the same through GraphQL
    r = fetch(headers={**FETCH, "X-XSRFToken": xsrf}, params={"max_results": 100})
    assert r.status_code == 200, r.text
    assert owned["experiment"] in {e["experiment_id"] for e in r.json()["experiments"]}
    graphql = {
        "query": "query($id: String) { mlflowGetRun(input: {runId: $id}) { run { info "
        "{ runId } } } }",
        "variables": {"id": owned["run"]},
    }
    r = fetch("POST", base + "/graphql", {**FETCH, "X-XSRFToken": xsrf}, json=graphql)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["mlflowGetRun"]["run"]["info"]["runId"] == owned["run"]

    # the cookie alone: from this origin, from another origin of the same site (another
    # port: the browser sends the cookie), from a form, or with a wrong token
    cookie_only = (
        "A request with the hub's login cookie needs the X-XSRFToken header holding the "
        "_xsrf cookie's value, which MLflow's pages here send: reload the page; other "
        "clients send a hub API token."
    )
    other = {
        "Sec-Fetch-Mode": "cors",
        "Sec-Fetch-Site": "same-site",
        "Origin": "http://127.0.0.1:1",
    }
    form = {**NAVIGATE, "Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:1"}
    create = base + "/api/2.0/mlflow/experiments/create"
    for method, url, headers in (
        ("GET", search, FETCH),
        ("GET", search, other),
        ("POST", create, {**other, "Content-Type": "text/plain"}),
        ("POST", create, form),
        ("GET", search, {**other, "X-XSRFToken": xsrf[:-4] + "AAAA"}),
    ):
        r = fetch(method, url, headers, data='{"name": "alice/forged"}')
        assert r.status_code == 401, (method, headers, r.status_code, r.text)
        assert r.json() == {"error_code": "UNAUTHENTICATED", "message": cookie_only}
    r = requests.get(search, headers={"Authorization": f"Bearer {xsrf}"}, timeout=30)
    assert r.status_code == 401, "the XSRF token is no API token"
    r = fetch(headers={**FETCH, "X-XSRFToken": xsrf}, params={"max_results": 100})
    assert "alice/forged" not in {e["name"] for e in r.json()["experiments"]}

    # a fetch without the token is answered, never sent through the hub's OAuth (which
    # would replace the login and _xsrf cookies under the page's requests in flight)
    r = fetch(url=base + "/get-artifact", params={"path": "model.txt", "run_uuid": owned["run"]})
    assert r.status_code == 401, r.headers.get("Location")

    # MLflow's public bundle: fonts and workers load in cors mode from this origin only
    css = session.get(base + "/", headers=NAVIGATE, timeout=60).text
    asset = "/" + re.search(r"(static-files/static/css/main\.[0-9a-f]+\.css)", css).group(1)
    assert fetch(url=base + asset, headers=FONT).status_code == 200
    r = fetch(url=base + asset, headers={**FONT, "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 401


def test_the_xsrf_script_goes_into_any_page_mlflow_may_send():
    """gzip or deflate, a nonce for a script policy, no <head>: the page is handled or says why."""
    import gzip
    import zlib

    from hub_ext.services.tracking.ui import NotInjectable, with_script

    page = b'<!doctype html><html><HEAD lang="en"><script nonce="r4nd0m" src="m.js"></script>'
    tag = b'<script src="/services/tracking/shipyard/xsrf.js" nonce="r4nd0m"></script>'
    expected = page.replace(b'<HEAD lang="en">', b'<HEAD lang="en">' + tag)
    for encoding, body in (
        (None, page),
        ("identity", page),
        ("gzip", gzip.compress(page)),
        ("deflate", zlib.compress(page)),
    ):
        assert with_script(body, encoding, "/services/tracking/") == expected, encoding
    for encoding, body in (
        ("br", page),
        ("gzip", b"not gzip"),
        (None, b"<html><body>no head</body></html>"),
    ):
        with pytest.raises(NotInjectable):
            with_script(body, encoding, "/services/tracking/")


def test_dot_segments_that_reach_the_gateway_are_refused(tracking):
    """Behind the proxy, too: a path is judged by the policy only in its plain form."""
    import http.client

    hub, _, _, tokens = tracking
    conn = http.client.HTTPConnection("127.0.0.1", hub.tracking_port, timeout=30)
    conn.request(
        "GET",
        "/services/tracking/api/2.0/mlflow/runs/../users/list",
        headers={"Authorization": f"Bearer {tokens['mallory']}"},
    )
    r = conn.getresponse()
    assert r.status == 400
    assert json.loads(r.read())["message"] == "Paths with '.' or '..' are refused."


def test_on_postgresql_a_restart_loses_nothing(hub_factory):
    """MLflow's store and its permissions on PostgreSQL, through a restart of the hub."""
    with postgres_database() as store, postgres_database() as auth:
        hub = hub_factory(
            name="trackpg",
            extra_env={
                "SHIPYARD_TRACKING": "1",
                "SHIPYARD_TRACKING_DB_URL": store.replace("postgresql://", "postgresql+psycopg://"),
                "SHIPYARD_TRACKING_AUTH_DB_URL": auth.replace(
                    "postgresql://", "postgresql+psycopg://"
                ),
            },
        )
        base = hub.url + "/services/tracking"
        alice = Client(base, hub.create_user("alice"))
        mallory = Client(base, hub.create_user("mallory"))
        wait_for(lambda: alice.get("/version").status_code == 200, 180, 0.5, "MLflow on PostgreSQL")
        experiment = alice.post(f"{API}/experiments/create", name="alice/pg").json()[
            "experiment_id"
        ]
        run = alice.post(f"{API}/runs/create", experiment_id=experiment).json()["run"]["info"]
        assert not (hub.data_dir / "tracking" / "mlflow.db").exists(), "nothing went to SQLite"

        hub.stop()
        hub.start()
        wait_for(lambda: alice.get("/version").status_code == 200, 180, 0.5, "MLflow again")
        r = alice.get(f"{API}/runs/get", run_id=run["run_id"])
        assert r.status_code == 200 and r.json()["run"]["info"]["experiment_id"] == experiment
        assert mallory.get(f"{API}/runs/get", run_id=run["run_id"]).status_code == 403
        hub.stop()


def test_sharing_with_a_group_lets_its_members_read_and_nobody_else(tracking):
    hub, base, clients, _ = tracking
    alice, mallory = clients["alice"], clients["mallory"]
    bob = Client(base, hub.create_user("bob", ["team"]))
    carol = Client(base, hub.create_user("carol", ["teamwork"]))
    experiment = alice.post(f"{API}/experiments/create", name="alice/shared").json()[
        "experiment_id"
    ]
    run = alice.post(f"{API}/runs/create", experiment_id=experiment).json()["run"]["info"]["run_id"]
    assert alice.post(f"{API}/registered-models/create", name="alice-shared").status_code == 200
    assert bob.get(f"{API}/runs/get", run_id=run).status_code == 403, "not shared yet"

    # a stranger cannot share what is not theirs
    r = mallory.post(
        f"{API}/experiments/set-experiment-tag",
        experiment_id=experiment,
        key="shipyard.groups",
        value="team",
    )
    assert r.status_code == 403
    r = alice.post(
        f"{API}/experiments/set-experiment-tag",
        experiment_id=experiment,
        key="shipyard.groups",
        value="team",
    )
    assert r.status_code == 200, r.text
    r = alice.post(
        f"{API}/registered-models/set-tag", name="alice-shared", key="shipyard.groups", value="team"
    )
    assert r.status_code == 200, r.text

    assert bob.get(f"{API}/runs/get", run_id=run).status_code == 200
    assert bob.get(f"{API}/registered-models/get", name="alice-shared").status_code == 200
    r = bob.post(f"{API}/runs/log-metric", run_id=run, key="x", value=1, timestamp=1)
    assert r.status_code == 403, "shared means read-only"
    found = bob.post(f"{API}/experiments/search", max_results=100).json()["experiments"]
    assert experiment in {e["experiment_id"] for e in found}
    # 'teamwork' is not 'team', and strangers stay strangers
    assert carol.get(f"{API}/runs/get", run_id=run).status_code == 403
    assert mallory.get(f"{API}/registered-models/get", name="alice-shared").status_code == 403
    # who joins the group later reads it too (once the hub's identity, cached by the
    # gateway for up to 30 s per token, says so: a new token here)
    dave = Client(base, hub.create_user("dave"))
    assert dave.get(f"{API}/runs/get", run_id=run).status_code == 403
    dave = Client(base, hub.create_user("dave", ["team"]))
    assert dave.get(f"{API}/runs/get", run_id=run).status_code == 200
    # sharing never lowers the owner's own permission
    r = alice.post(f"{API}/runs/log-metric", run_id=run, key="y", value=1, timestamp=1)
    assert r.status_code == 200


def test_prometheus_metrics_for_admins_only(tracking):
    _, _, clients, _ = tracking
    clients["alice"].get(f"{API}/experiments/search")
    r = clients["mallory"].get("/shipyard/metrics")
    assert r.status_code == 403
    r = clients["admin"].get("/shipyard/metrics")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    assert 'shipyard_tracking_requests_total{access="mlflow",code="200"}' in r.text
    assert 'shipyard_tracking_requests_total{access="admin",code="403"}' in r.text
    assert "shipyard_tracking_request_duration_seconds_bucket" in r.text


def test_a_hub_killed_hard_leaves_tracking_running_until_the_hub_is_ended(hub_factory):
    """Services outlive a hub crash (the next hub adopts them); ending the hub ends them."""
    hub = hub_factory(name="trackkill", extra_env={"SHIPYARD_TRACKING": "1"})
    token = hub.create_user("admin")
    admin = Client(hub.url + "/services/tracking", token)
    wait_for(lambda: admin.get("/version").status_code == 200, 180, 0.5, "MLflow")
    state = str(hub.data_dir / "tracking")

    def ours() -> list[int]:
        found = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes()
                    env = Path(f"/proc/{pid}/environ").read_bytes()
                except OSError:
                    continue
                # MLflow's settings (its state dir) are in its environment, not its argv
                if state.encode() in env or (
                    b"hub_ext.services.tracking" in argv and str(hub.data_dir).encode() in env
                ):
                    found.append(int(pid))
        return found

    running = set(ours())
    assert len(running) >= 2, "the service and MLflow run"
    os.kill(hub.proc.pid, 9)
    hub.proc.wait()
    assert set(ours()) == running, "a hub crash leaves the service and MLflow as they were"
    hub.stop()  # what ends a hub for good: its recorded services are stopped too
    wait_for(lambda: not ours(), 30, 0.3, "the service and MLflow to end with the hub")


def _environ_has(pid: str, *marks: bytes) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return all(mark in environ for mark in marks)


def _tracking_gateway(data: Path) -> int | None:
    """The tracking service's process of the hub whose data dir is ``data``."""
    marks = (b"JUPYTERHUB_SERVICE_NAME=tracking\0", str(data).encode())
    found = [int(p) for p in os.listdir("/proc") if p.isdigit() and _environ_has(p, *marks)]
    # MLflow gets none of the hub's variables: these are the gateway (and no child of it)
    return min(found) if found else None


def _mlflow_processes(state: Path) -> dict[int, int]:
    """MLflow's processes of the tracking state dir ``state``: pid -> parent pid."""
    mark = f"MLFLOW_AUTH_CONFIG_PATH={state}/".encode()
    found = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit() and _environ_has(pid, mark):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] not in ("Z", "X"):
                found[int(pid)] = int(fields[1])
    return found


def test_a_killed_gateway_is_back_in_seconds_with_the_same_mlflow(hub_factory):
    """kill -9 of the tracking service: the new gateway adopts the MLflow that still runs.

    Before, MLflow died with its gateway and the service waited for a new one
    (about 30 s on a loaded machine); the hub's Ctrl-C still ends MLflow.
    """
    hub = hub_factory(name="trackadopt", extra_env={"SHIPYARD_TRACKING": "1"})
    alice = Client(hub.url + "/services/tracking", hub.create_user("alice"))
    wait_for(lambda: alice.get("/version").status_code == 200, 180, 0.5, "MLflow")
    r = alice.post(f"{API}/experiments/create", name="alice/kept")
    assert r.status_code == 200, r.text
    experiment = r.json()["experiment_id"]
    data, state = hub.data_dir, hub.data_dir / "tracking"

    gateway = _tracking_gateway(data)
    mlflow = _mlflow_processes(state)
    leaders = [pid for pid, parent in mlflow.items() if parent not in mlflow]
    assert gateway and len(leaders) == 1, (gateway, mlflow)

    def answers() -> bool:
        try:
            r = alice.get(f"{API}/experiments/get", experiment_id=experiment)
        except requests.RequestException:
            return False
        return r.status_code == 200 and _tracking_gateway(data) not in (None, gateway)

    killed = time.monotonic()
    os.kill(gateway, signal.SIGKILL)
    wait_for(answers, 120, 0.05, "the tracking API through a new gateway")
    back = time.monotonic() - killed
    print(f"tracking: kill -9 of the gateway to the API answering in {back:.2f} s")
    after = _mlflow_processes(state)
    assert set(after) == set(mlflow), f"MLflow was not adopted: {mlflow} before, {after} after"
    r = alice.get(f"{API}/experiments/get", experiment_id=experiment)
    assert r.json()["experiment"]["name"] == "alice/kept"
    assert back < 20, f"the tracking service took {back:.1f} s to come back"

    # the hub's Ctrl-C stops the service, which stops the MLflow it adopted
    stopping = time.monotonic()
    assert hub.stop() == 0
    wait_for(lambda: not _mlflow_processes(state), 20, 0.2, "MLflow to end with the hub")
    print(f"tracking: the hub's Ctrl-C to no MLflow left in {time.monotonic() - stopping:.2f} s")
    assert not (state / "mlflow.json").exists()
