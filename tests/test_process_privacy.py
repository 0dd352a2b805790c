"""What every process Shipyard starts shows to other accounts, and whom it calls.

Issue 14 points 6 and 7, against one real hub with every service of the embedded
platform (tracking with its MLflow server, the scheduler, the deployer with the real
LocalBackend and model server, secrets, audit). alice has a server with a kernel, a
model served from an MLflow run (``runs:/<id>/model``) and a scheduled run that is
running; then every process in the hub's tree is read from ``/proc``:

- its command line (``/proc/<pid>/cmdline``, readable by every account of the machine)
  holds no secret (any variable named like a token, secret, password or key in any of
  these processes' environments), no identifier (MLflow run id, job and run ids,
  deployment and job names, a replica's port), no store URL, and no user name beyond
  the account's own (point 6);
- its environment (``/proc/<pid>/environ``, readable by its owner and root only) turns
  MLflow's usage telemetry off, and the run itself finds telemetry off and succeeds with
  every outbound connection refused (point 7).
"""

from __future__ import annotations

import re
import time

import psutil
import pytest
import requests

from hub_ext.host.slugs import account_name

from .conftest import needs_root
from .hubtools import run_in_kernel, stdout_of, tagged, wait_for
from .services import (
    LOCAL_DEPLOYER_CONFIG,
    SERVING_PROFILES,
    create_job,
    log_model,
    notebook,
    scheduler_hub,
    user_with_account,
)

PREFIX = tagged("sypv-")
CGROUPS = tagged("shipyard-test-pv")
DEPLOYMENT = "privy-model"
JOB = "privy-job"

#: A variable whose value is a secret wherever it is set.
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|_KEY$|^KEY$", re.IGNORECASE)

#: The run: every outbound connection refused (a proxy on a closed port for everything
#: that is not loopback), telemetry checked off, an MLflow run logged, then it waits for
#: the test's go (the test reads the processes meanwhile).
RUN = """
import os, time
os.environ.update(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9",
                  http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
                  NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
import mlflow
from mlflow.telemetry import get_telemetry_client
from mlflow.telemetry.utils import is_telemetry_disabled
assert is_telemetry_disabled(), "MLflow telemetry is on in the run"
assert get_telemetry_client() is None, "MLflow started its telemetry client"
experiment = os.environ["MLFLOW_EXPERIMENT_NAME"]
if mlflow.get_experiment_by_name(experiment) is None:
    mlflow.create_experiment(experiment)
mlflow.set_experiment(experiment)
with mlflow.start_run(run_name="offline"):
    mlflow.log_metric("x", 1.0)
home = os.path.expanduser("~")
open(os.path.join(home, "pv-started"), "w").close()
while not os.path.exists(os.path.join(home, "pv-go")):
    time.sleep(0.1)
"""


@pytest.fixture(scope="module")
def platform(hub_factory, model_server_env):
    with scheduler_hub(
        hub_factory,
        "privacy",
        PREFIX,
        CGROUPS,
        ["secrets", "audit", "tracking", "deployer"],
        configs={"deployer": LOCAL_DEPLOYER_CONFIG},
        profiles=SERVING_PROFILES,
    ) as client:
        yield client


@pytest.fixture(scope="module")
def alice(platform, home_root):
    return user_with_account(platform.hub, home_root, "alice")


@pytest.fixture(scope="module")
def scene(platform, alice):
    """alice's server and kernel, a served model and a running run; their ids."""
    hub = platform.hub
    token, home, _ = alice
    hub.start_server("alice", profile="tiny")
    out = stdout_of(run_in_kernel(hub.server_url("alice"), token, "print('kernel', 6 * 7)"))
    assert "kernel 42" in out, out

    mlflow_run = log_model(hub, token)
    deployer = f"{hub.url}/services/deployer/api/deployments"
    headers = {"Authorization": f"token {token}"}
    r = requests.post(
        deployer,
        json={"name": DEPLOYMENT, "model_uri": f"runs:/{mlflow_run}/model", "profile": "serving"},
        headers=headers,
        timeout=60,
    )
    assert r.status_code == 201, r.text

    def ready():
        v = requests.get(f"{deployer}/{DEPLOYMENT}/versions/1", headers=headers, timeout=30)
        assert v.status_code == 200, v.text
        assert v.json()["state"] != "failed", v.text
        return v.json()["state"] == "ready"

    wait_for(ready, 240, 0.3, "the deployment")

    job = create_job(platform, alice, JOB, notebook(RUN), timeout_seconds=300)
    r = platform.call("POST", f"api/jobs/{job['id']}/runs", token, json={})
    assert r.status_code == 201, r.text
    run = r.json()

    def waiting_or_over():
        if (home / "pv-started").exists():
            return True
        r = platform.call("GET", f"api/runs/{run['id']}", token)
        return r.json()["status"] not in ("queued", "running")

    wait_for(waiting_or_over, 240, 0.2, "the run to start its wait")
    return {
        "mlflow_run": mlflow_run,
        "job": job,
        "run": run,
        "token": token,
        "home": home,
        "account": account_name("alice", PREFIX),
    }


def shipyard_processes(hub) -> list[psutil.Process]:
    """Every process the hub started, and theirs (servers, kernels, services, runs, replicas)."""
    return psutil.Process(hub.proc.pid).children(recursive=True)


def describe(proc: psutil.Process) -> str:
    try:
        return f"pid {proc.pid} ({proc.username()}): {' '.join(proc.cmdline())[:300]}"
    except psutil.Error:
        return f"pid {proc.pid} (gone)"


@needs_root
def test_no_command_line_shows_a_secret_or_an_identifier(platform, scene):
    hub = platform.hub
    procs = shipyard_processes(hub)
    kinds = " ".join(" ".join(p.cmdline()) for p in procs)
    # the scene is there: a server, a kernel, the run, a replica, MLflow and the services
    for marker in (
        "jupyterhub.singleuser",
        "ipykernel",
        "hub_ext.runtime.modelserver",
        "mlflow",
        "hub_ext.services.scheduler",
        "hub_ext.services.tracking",
        "hub_ext.services.secrets",
        "hub_ext.services.audit",
    ):
        assert marker in kinds, f"no process runs {marker}"

    secrets = {scene["token"], hub.admin_token}
    ports = set()
    for proc in procs:
        try:
            environ = proc.environ()
        except psutil.Error:
            continue
        secrets |= {v for k, v in environ.items() if SECRET_NAME.search(k) and len(v) >= 8}
        if "hub_ext.runtime.modelserver" in " ".join(proc.cmdline()):
            ports |= {c.laddr.port for c in proc.net_connections("tcp") if c.status == "LISTEN"}
    assert ports, "no replica listens"
    identifiers = {
        scene["mlflow_run"]: "the MLflow run id",
        scene["job"]["id"]: "the job's id",
        scene["run"]["id"]: "the run's id",
        DEPLOYMENT: "the deployment's name",
        JOB: "the job's name",
    }
    found = []
    for proc in procs:
        try:
            line = "\0".join(proc.cmdline())
        except psutil.Error:
            continue
        for secret in secrets:
            if secret in line:
                found.append(f"a secret ({secret[:4]}...) in {describe(proc)}")
        for value, what in identifiers.items():
            if value in line:
                found.append(f"{what} in {describe(proc)}")
        for port in ports:
            if re.search(rf"(?<!\d){port}(?!\d)", line):
                found.append(f"a replica's port in {describe(proc)}")
        if re.search(r"(sqlite|postgresql|mysql)[+a-z]*:", line):
            found.append(f"a store URL in {describe(proc)}")
        if "alice" in line.replace(scene["account"], ""):
            found.append(f"the user name in {describe(proc)}")
    assert not found, "\n".join(found)


@needs_root
def test_every_process_has_mlflow_telemetry_off(platform, scene):
    missing = []
    for proc in shipyard_processes(platform.hub):
        try:
            environ = proc.environ()
        except psutil.Error:
            continue
        if environ.get("MLFLOW_DISABLE_TELEMETRY") != "true" or environ.get("DO_NOT_TRACK") != (
            "true"
        ):
            missing.append(describe(proc))
    assert not missing, "telemetry not turned off in:\n" + "\n".join(missing)


@needs_root
def test_a_run_with_outbound_connections_refused_succeeds_quickly(platform, scene):
    token, home = scene["token"], scene["home"]
    go = home / "pv-go"
    go.touch()
    released = time.monotonic()
    run = platform.wait_run(scene["run"]["id"], token, timeout=120)
    assert run["status"] == "succeeded", run
    # nothing waits on an unreachable telemetry host when the kernel and papermill end
    assert time.monotonic() - released < 30


# ------------------------------------------------------------------ without a hub


def test_telemetry_is_off_unless_the_admin_allows_it():
    from hub_ext.host import telemetry

    assert telemetry.environment({}) == {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    assert telemetry.environment({"SHIPYARD_MLFLOW_TELEMETRY": "0"}) == telemetry.OFF
    # allowed: nothing turns it off, and the processes a service starts are told so too
    assert telemetry.environment({"SHIPYARD_MLFLOW_TELEMETRY": "1"}) == {
        "SHIPYARD_MLFLOW_TELEMETRY": "1"
    }


def test_mlflow_server_gets_its_settings_and_telemetry_through_the_environment(tmp_path):
    from hub_ext.services.tracking.mlflow_process import MlflowServer

    server = MlflowServer(
        backend_store_uri="postgresql://mlflow:hunter2@db/mlflow",
        auth_db_uri="sqlite:///auth.db",
        artifacts_destination=str(tmp_path / "artifacts"),
        static_prefix="/services/tracking",
        state_dir=tmp_path,
        port=5005,
    )
    assert "hunter2" not in " ".join(server.command())
    env = server.environment()
    assert env["MLFLOW_BACKEND_STORE_URI"] == "postgresql://mlflow:hunter2@db/mlflow"
    assert env["MLFLOW_PORT"] == "5005" and env["MLFLOW_DISABLE_TELEMETRY"] == "true"


def test_model_server_options_come_from_its_environment():
    from hub_ext.runtime.modelserver.contract import options_environment, parse_args

    env = options_environment(
        ["--model-uri", "runs:/abc/model", "--port", "8123", "--timeout", "2.5"]
    )
    assert env["SHIPYARD_MODELSERVER_MODEL_URI"] == "runs:/abc/model"
    args = parse_args([], env)
    assert (args.model_uri, args.port, args.timeout) == ("runs:/abc/model", 8123, 2.5)
    assert parse_args(["--port", "9"], env).port == 9  # the command line wins


def test_kubernetes_runs_and_replicas_have_mlflow_telemetry_off():
    from hub_ext.services.deployer.kube_manifests import deployment_manifest
    from hub_ext.services.scheduler.executors.kube_manifests import job_manifest

    from .modelspecs import KUBE_PROFILES as MODEL_PROFILES
    from .modelspecs import kube_version
    from .runspecs import KUBE_PROFILES as RUN_PROFILES
    from .runspecs import SETTINGS, kube_spec

    job = job_manifest(kube_spec(RUN_PROFILES[0]), SETTINGS)
    deployment = deployment_manifest(kube_version(MODEL_PROFILES[0]))
    for pod in (job["spec"]["template"]["spec"], deployment["spec"]["template"]["spec"]):
        for container in pod["containers"]:
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert env["MLFLOW_DISABLE_TELEMETRY"] == env["DO_NOT_TRACK"] == "true"
