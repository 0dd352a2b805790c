"""The deployer's backends: real model servers as their owners, and Kubernetes manifests.

The local tests start the real model server (``python -m
hub_ext.runtime.modelserver``) on the ``model-server`` environment,
as root, with a real scikit-learn model saved by MLflow; they share one
backend and one running version across the module (model servers take
seconds to load), in file order: start, a crash and its restart, scaling,
stopping. The Kubernetes tests build manifests and validate them against the
official schema (no cluster runs here).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import pytest_asyncio

from hub_ext.host.cgroups import detect_driver, device_rules
from hub_ext.host.k8s import KubePlacement
from hub_ext.host.slugs import account_name, user_slug
from hub_ext.host.usage import UsageLedger
from hub_ext.profiles.model import GPU_RESOURCE, Profile
from hub_ext.services.deployer.backend import DeployFailed, VersionSpec
from hub_ext.services.deployer.kube_manifests import (
    KubeVersion,
    ManifestSettings,
    deployment_manifest,
    hpa_manifest,
    manifests,
    network_policy_manifest,
    object_name,
    pod_failure,
    rolled_out,
    secret_manifest,
    service_manifest,
)
from hub_ext.services.deployer.kubernetes import KubernetesBackend
from hub_ext.services.deployer.local import LocalBackend
from hub_ext.services.deployer.local.health import get_health

from .conftest import TEST_ENVS_DIR, needs_root
from .hubtools import (
    cgroup_dirs,
    processes_of,
    remove_cgroups,
    remove_test_accounts,
    tagged,
)
from .manifests import validated
from .modelspecs import (
    EXTRA_ENV,
    KUBE_PROFILES,
    OWNER,
    READY,
    SETTINGS,
    SUMMARY,
    fake_clients,
    kube_version,
)
from .traitdocs import help_problem

ACCOUNT_PREFIX = tagged("sydeploy-")
# not "<a hub's parent>-models": a hub of the default parent puts its deployer's replicas there
CGROUP_PARENT = tagged("shipyard-test-backends")
#: Hub-side secrets in the deployer's own environment a replica must never see (SECURITY 8).
SECRETS = {
    "JUPYTERHUB_API_TOKEN": "hub-secret-token-0123456789",
    "SHIPYARD_DEPLOYER_DB_URL": "postgresql://admin:db-secret-password@db/deployer",
}


def model_profile(**fields) -> Profile:
    values = {
        "slug": "serving",
        "display_name": "Serving",
        "environment": "model-server",
        "cpu_limit": "1",
        "mem_limit": "512Mi",
    }
    values.update(fields)
    return Profile(**values)


def version_spec(model_uri: str, *, name: str = "churn", version: int = 1, **fields) -> VersionSpec:
    values = {
        "owner": OWNER,
        "name": name,
        "version": version,
        "model_uri": model_uri,
        "profile": model_profile(),
        "replicas": 1,
        "env": EXTRA_ENV,
        "training_summary": SUMMARY,
        "timeout_seconds": 10,
    }
    values.update(fields)
    return VersionSpec(**values)


def invoke(url: str, rows: list[list[float]], headers: dict[str, str]) -> list:
    """Predictions of a replica, called as the deployer calls it (with the replica's secret)."""
    body = json.dumps({"dataframe_split": {"columns": ["x"], "data": rows}}).encode()
    request = urllib.request.Request(
        f"{url}/invocations", body, {"Content-Type": "application/json", **headers}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - 127.0.0.1
        return json.loads(response.read())["predictions"]


async def ainvoke(url: str, rows: list[list[float]], headers: dict[str, str]) -> list:
    return await asyncio.to_thread(invoke, url, rows, headers)


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def proc_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def memory_cgroup(pid: int) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path
    return next(
        line.split(":", 2)[2]
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        if line.startswith("0::")
    )


def memory_limit(cgroup: str) -> int:
    v1 = Path("/sys/fs/cgroup/memory") / cgroup.lstrip("/") / "memory.limit_in_bytes"
    if v1.exists():
        return int(v1.read_text())
    return int((Path("/sys/fs/cgroup") / cgroup.lstrip("/") / "memory.max").read_text())


def alive(pid: int) -> bool:
    """True unless ``pid`` is gone or a zombie."""
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def live_processes(uid: int) -> list[int]:
    return [pid for pid in processes_of(uid) if alive(pid)]


def cgroups_of(key: str) -> list[Path]:
    return [d for d in cgroup_dirs(CGROUP_PARENT) if d.name.startswith(f"{key}-")]


async def eventually(check, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def secrets_in_environment():
    """Hub secrets in the deployer's (this test process's) environment, as a service has."""
    saved = {k: os.environ.get(k) for k in SECRETS}
    os.environ.update(SECRETS)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def make_backend(home_root: Path, place: Path, **traits) -> LocalBackend:
    values = {
        "system_user_prefix": ACCOUNT_PREFIX,
        "home_dir_template": str(home_root / "{account}"),
        "cgroup_parent": CGROUP_PARENT,
        "environments_dir": str(TEST_ENVS_DIR),
        "log_dir": str(place / "logs"),
        "runtime_dir": str(place / "run"),
        "gpu_devices": [],
        "health_interval": 0.5,
        "restart_backoff": 0.2,
        "start_timeout": 60,
    }
    values.update(traits)
    return LocalBackend(**values)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backend(home_root, place, model_server_env, secrets_in_environment):
    backend = make_backend(home_root, place)
    await backend.sweep()
    yield backend
    await backend.close()
    remove_test_accounts(ACCOUNT_PREFIX)
    remove_cgroups(CGROUP_PARENT)


@pytest.fixture(scope="module")
def spec(model_dir) -> VersionSpec:
    return version_spec(str(model_dir))


# --------------------------------------------------------------- local tests


@needs_root
@pytest.mark.asyncio(loop_scope="module")
async def test_start_serves_as_the_owner_in_its_cgroup(backend, spec, model_server_env):
    started = time.monotonic()
    await backend.start(spec)
    print(f"first replica healthy after {time.monotonic() - started:.1f}s")

    [url] = backend.endpoints(spec.key)
    assert url.startswith("http://127.0.0.1:")
    assert await ainvoke(url, [[1.0], [4.0]], backend.request_headers(spec.key)) == pytest.approx(
        [3.0, 9.0]
    )
    # the port is open to every local account: without the replica's secret, nothing
    for headers in ({}, {"X-Shipyard-Replica-Secret": "guess"}):
        with pytest.raises(urllib.error.HTTPError) as refused:
            await ainvoke(url, [[1.0]], headers)
        assert refused.value.code == 403
    with urllib.request.urlopen(f"{url}/health", timeout=10) as response:  # noqa: S310
        assert response.status == 200  # probes need no secret

    [replica] = backend.describe(spec.key)
    pid = replica["pid"]
    account = pwd.getpwnam(account_name(OWNER, ACCOUNT_PREFIX))
    assert replica["account"] == account.pw_name
    assert proc_status(pid)["Uid"].split()[:2] == [str(account.pw_uid)] * 2
    # on the profile environment's own Python
    assert Path(f"/proc/{pid}/exe").resolve() == model_server_env.python.resolve()
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    # its options come through the environment, which only its owner reads: the command
    # line, which every account reads, names neither the model nor the port
    assert cmdline[1:] == [b"-m", b"hub_ext.runtime.modelserver", b""]

    # in its own cgroup, with the profile's memory limit enforced
    cgroup = memory_cgroup(pid)
    assert cgroup == f"/{CGROUP_PARENT}/{spec.key}-r0"
    assert memory_limit(cgroup) == 512 * 2**20

    # an environment built from nothing: the owner's settings, never the deployer's secrets
    env = proc_environ(pid)
    assert env["SHIPYARD_MODELSERVER_HOST"] == "127.0.0.1"
    assert env["SHIPYARD_MODELSERVER_MODEL_URI"] == spec.model_uri
    for name in SECRETS:
        assert name not in env
    assert not set(SECRETS.values()) & set(env.values())
    assert env["MLFLOW_TRACKING_URI"] == EXTRA_ENV["MLFLOW_TRACKING_URI"]
    assert env["MLFLOW_TRACKING_TOKEN"] == EXTRA_ENV["MLFLOW_TRACKING_TOKEN"]
    assert env["HOME"] == account.pw_dir
    assert env["PATH"].split(":")[0] == str(model_server_env.bin)
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert set(env) <= {
        *EXTRA_ENV,
        *("PATH", "HOME", "USER", "LOGNAME", "PYTHONUNBUFFERED", "LANG", "LC_ALL", "TZ"),
        *("SHIPYARD_ENV", "SHIPYARD_ENV_DIGEST", "VIRTUAL_ENV", "SHIPYARD_PROFILE"),
        *("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"),
        "SHIPYARD_REPLICA_SECRET",  # readable by the owner's own account only
        *(name for name in env if name.startswith("SHIPYARD_MODELSERVER_")),  # its options
        *("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK"),  # MLflow's telemetry off
    }
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"

    # the training summary: a file only the owner can read
    summary = Path(env["SHIPYARD_MODELSERVER_TRAINING_SUMMARY"])
    info = summary.stat()
    assert (info.st_uid, info.st_mode & 0o777) == (account.pw_uid, 0o600)
    assert (summary.parent.stat().st_uid, summary.parent.stat().st_mode & 0o777) == (
        account.pw_uid,
        0o700,
    )
    assert json.loads(summary.read_text()) == SUMMARY

    # the version's log: the backend's notes and the server's own lines
    log = backend.log_tail(spec.key)
    assert f"r0: started pid {pid}" in log
    assert "r0: serving on port" in log
    assert " r0 | " in log


@needs_root
@pytest.mark.ci_may_skip("a host whose kernel filters no devices (no v1 devices hierarchy)")
@pytest.mark.asyncio(loop_scope="module")
async def test_the_replica_opens_only_the_standard_devices(backend, spec):
    """The replica started above is in a device-filtered cgroup (#14, point 9): no GPU."""
    driver = backend.driver
    if driver.kind != "cgroup1" or not driver.filters_devices:
        pytest.skip("the devices list is readable on cgroup v1 only (v2: tests/test_cgroups.py)")
    [replica] = backend.describe(spec.key)
    devices = driver.directories(replica["cgroup"])[2]
    assert replica["pid"] in {int(p) for p in (devices / "cgroup.procs").read_text().split()}
    assert (devices / "devices.list").read_text().splitlines() == device_rules(())


@needs_root
@pytest.mark.asyncio(loop_scope="module")
async def test_a_replica_that_dies_is_restarted(backend, spec):
    [before] = backend.describe(spec.key)
    os.kill(before["pid"], signal.SIGKILL)
    await eventually(lambda: not backend.endpoints(spec.key), 5, "the dead replica to leave")
    started = time.monotonic()
    [url] = await eventually(lambda: backend.endpoints(spec.key), 60, "a restarted replica")
    print(f"restarted replica healthy after {time.monotonic() - started:.1f}s")
    [after] = backend.describe(spec.key)
    assert after["pid"] != before["pid"]
    assert after["restarts"] == 1
    assert after["cgroup"] == before["cgroup"]
    assert await ainvoke(url, [[0.0]], backend.request_headers(spec.key)) == pytest.approx([1.0])
    assert "r0: was killed by SIGKILL; restarting" in backend.log_tail(spec.key)
    # usage accounting (docs/observability.md): the dead replica's cgroup instance was
    # closed with its last reading, the new one labelled as the same replica
    ledger = UsageLedger(backend.local_host.usage_dir)
    records = [r for _, r in ledger.records([CGROUP_PARENT]) if r["cgroup"] == after["cgroup"]]
    assert sorted(r["final"] is None for r in records) == [False, True]
    for record in records:
        assert (record["kind"], record["owner"], record["object"]) == (
            "replica",
            spec.owner,
            f"model/{spec.owner}/{spec.name}/v{spec.version}",
        )


@needs_root
@pytest.mark.asyncio(loop_scope="module")
async def test_a_replica_that_stops_answering_is_replaced(backend, spec, monkeypatch):
    monkeypatch.setattr(backend, "health_timeout", 0.3)
    [before] = backend.describe(spec.key)
    os.kill(before["pid"], signal.SIGSTOP)  # hangs: the port accepts, nothing answers
    try:
        await eventually(lambda: not backend.endpoints(spec.key), 5, "the hung replica to leave")
        started = time.monotonic()
        [url] = await eventually(lambda: backend.endpoints(spec.key), 60, "a fresh replica")
        print(f"hung replica replaced after {time.monotonic() - started:.1f}s")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(before["pid"], signal.SIGCONT)
    [after] = backend.describe(spec.key)
    assert after["pid"] != before["pid"] and not alive(before["pid"])
    assert await ainvoke(url, [[3.0]], backend.request_headers(spec.key)) == pytest.approx([7.0])
    assert "r0: missed 3 health checks; killing it" in backend.log_tail(spec.key)


@needs_root
@pytest.mark.asyncio(loop_scope="module")
async def test_scaling_never_leaves_the_version_without_a_replica(backend, spec, monkeypatch):
    seen: list[int] = []
    done = asyncio.Event()

    async def watch():
        while not done.is_set():
            seen.append(len(backend.endpoints(spec.key)))
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    [first] = backend.describe(spec.key)
    try:
        await backend.scale(version_spec(spec.model_uri, replicas=2))
        urls = backend.endpoints(spec.key)
        assert len(urls) == 2
        for url in urls:
            assert await ainvoke(url, [[2.0]], backend.request_headers(spec.key)) == pytest.approx(
                [5.0]
            )
        replicas = backend.describe(spec.key)
        assert [r["cgroup"] for r in replicas] == [f"{spec.key}-r0", f"{spec.key}-r1"]
        second = replicas[1]

        # the surplus replica hangs: it gets its grace, then it is killed
        os.kill(second["pid"], signal.SIGSTOP)
        monkeypatch.setattr(backend, "stop_grace", 1)
        started = time.monotonic()
        await backend.scale(version_spec(spec.model_uri, replicas=1))
        assert 1 <= time.monotonic() - started < 5
        [kept] = backend.describe(spec.key)
        assert kept["pid"] == first["pid"]  # the surplus one went; the serving one stayed
        assert backend.endpoints(spec.key) == [kept["url"]]
        assert not alive(second["pid"])
        assert [d.name for d in cgroup_dirs(CGROUP_PARENT) if d.name.endswith("-r1")] == []
    finally:
        done.set()
        await watcher
    assert min(seen) == 1 and max(seen) == 2


SLOW_MODEL = """
import time

import mlflow.pyfunc


class Slow(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        time.sleep(float(model_input["x"].max()))
        return (model_input["x"] * 2 + 1).tolist()


mlflow.models.set_model(Slow())
"""


@pytest.fixture(scope="module")
def slow_model_dir(place) -> Path:
    """A model (from code, so the environment needs no test module) that sleeps x seconds."""
    import mlflow.pyfunc

    code = place / "slow_model.py"
    code.write_text(SLOW_MODEL)
    path = place / "slow-model"
    # MLflow warns that predict has no type hints (it resets warning filters itself)
    mlflow.pyfunc.save_model(path, python_model=str(code))
    subprocess.run(["chmod", "-R", "a+rX", str(path)], check=True)  # noqa: S603, S607
    return path


@needs_root
@pytest.mark.asyncio(loop_scope="module")
async def test_a_replica_recycled_after_a_timeout_restarts_at_once(
    backend, slow_model_dir, monkeypatch
):
    monkeypatch.setattr(backend, "restart_backoff", 60)  # not for a recycle
    spec = version_spec(str(slow_model_dir), name="slow", timeout_seconds=1)
    await backend.start(spec)
    try:
        [url] = backend.endpoints(spec.key)
        assert await ainvoke(url, [[0.0]], backend.request_headers(spec.key)) == pytest.approx(
            [1.0]
        )
        [before] = backend.describe(spec.key)
        with pytest.raises(urllib.error.HTTPError) as timed_out:
            await ainvoke(url, [[3.0]], backend.request_headers(spec.key))
        assert timed_out.value.code == 504
        await eventually(lambda: not backend.endpoints(spec.key), 10, "the replica to leave")
        started = time.monotonic()
        [url] = await eventually(lambda: backend.endpoints(spec.key), 30, "its successor")
        print(f"recycled replica serving again after {time.monotonic() - started:.1f}s")
        [after] = backend.describe(spec.key)
        assert after["pid"] != before["pid"] and after["restarts"] == 1
        assert await ainvoke(url, [[0.0]], backend.request_headers(spec.key)) == pytest.approx(
            [1.0]
        )
        log = backend.log_tail(spec.key)
        assert "r0: exited after a request timed out (recycled); restarting" in log
    finally:
        await backend.stop(spec.key, grace=5)


@needs_root
@pytest.mark.asyncio(loop_scope="module")
async def test_a_model_that_fails_to_load_fails_with_its_reason(backend, place):
    broken = place / "not-a-model"
    broken.mkdir(mode=0o755)
    (broken / "README").write_text("no MLmodel here")
    spec = version_spec(str(broken), name="broken")
    with pytest.raises(DeployFailed) as failed:
        await backend.start(spec)
    reason = failed.value.reason
    print(reason)
    assert "load" in reason.lower() or "MLmodel" in reason
    assert "Traceback" not in reason.splitlines()[0]
    assert backend.endpoints(spec.key) == []
    assert backend.describe(spec.key) == []
    assert cgroups_of(spec.key) == []
    assert [p for p in (place / "run").iterdir() if p.name.startswith(spec.key)] == []
    assert "stopped" in backend.log_tail(spec.key)


@needs_root
@pytest.mark.asyncio(loop_scope="module")
async def test_an_environment_that_is_not_built(backend, model_dir):
    spec = version_spec(
        str(model_dir), name="nowhere", profile=model_profile(environment="not-built-here")
    )
    with pytest.raises(DeployFailed, match="shipyard env build not-built-here"):
        await backend.start(spec)
    assert cgroups_of(spec.key) == []


@needs_root
@pytest.mark.asyncio(loop_scope="module")
async def test_stop_leaves_nothing_behind(backend, spec, place):
    [replica] = backend.describe(spec.key)
    uid = pwd.getpwnam(replica["account"]).pw_uid
    stopping = asyncio.create_task(backend.stop(spec.key, grace=5))
    await asyncio.sleep(0)  # stop has begun
    assert backend.endpoints(spec.key) == []
    started = time.monotonic()
    await stopping
    print(f"stopped in {time.monotonic() - started:.1f}s")
    assert time.monotonic() - started < 5  # SIGTERM was enough: no wait for the grace
    assert live_processes(uid) == []
    assert cgroups_of(spec.key) == []
    assert list((place / "run").iterdir()) == []
    assert backend.describe(spec.key) == []
    await backend.stop(spec.key)  # again: nothing to do


@needs_root
@pytest.mark.asyncio(loop_scope="module")
async def test_sweep_removes_what_a_dead_deployer_left(backend, place, home_root):
    # what a deployer killed with -9 leaves: a cgroup with a process that escaped into a
    # session of its own, and a version's private folder
    driver = detect_driver(CGROUP_PARENT)
    name = "ghost--old-v1-r0"
    from hub_ext.host.cgroups import Limits

    driver.create(name, Limits(mem_limit=64 * 2**20))
    orphan = subprocess.Popen(  # noqa: S603
        ["/bin/sleep", "300"], preexec_fn=driver.preexec(name), start_new_session=True
    )
    folder = place / "run" / "ghost--old-v1-abc"
    folder.mkdir(mode=0o700)
    (folder / "training-summary.json").write_text("{}")
    try:
        fresh = make_backend(home_root, place)
        await fresh.sweep()
        assert orphan.wait(10) == -signal.SIGKILL
        assert not driver.exists(name)
        assert not folder.exists()
    finally:
        if orphan.poll() is None:
            orphan.kill()
        driver.remove(name)


DEPLOYER = """
import asyncio, json, sys
from hub_ext.services.deployer.backend import VersionSpec
from hub_ext.services.deployer.local import LocalBackend
from tests.test_deployer_backends import make_backend, version_spec
from pathlib import Path

async def main():
    backend = make_backend(Path(sys.argv[1]), Path(sys.argv[2]))
    spec = version_spec(sys.argv[3], name="survivor", replicas=2)
    await backend.start(spec)
    print(json.dumps(backend.describe(spec.key)), flush=True)
    await asyncio.sleep(300)

asyncio.run(main())
"""


@needs_root
@pytest.mark.asyncio(loop_scope="module")
async def test_replicas_outlive_a_killed_deployer_and_are_adopted(
    home_root, place, model_dir, backend
):
    """Issue 15 point 2: a deployer killed with -9 leaves its replicas serving; the next
    one serves them as soon as it has recovered (before it starts anything), takes them
    over without a restart (same pids), supervises them (one killed is restarted) and
    stops them all on a clean stop."""
    deployer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        DEPLOYER,
        str(home_root),
        str(place),
        str(model_dir),
        stdout=subprocess.PIPE,
        cwd=str(Path(__file__).parent.parent),
    )
    try:
        line = await asyncio.wait_for(deployer.stdout.readline(), 90)
        replicas = json.loads(line)
        assert len(replicas) == 2 and all(alive(r["pid"]) for r in replicas)
    finally:
        deployer.kill()  # kill -9: no clean-up of its own
        await deployer.wait()
    pids = sorted(r["pid"] for r in replicas)
    urls = sorted(r["url"] for r in replicas)
    uid = pwd.getpwnam(replicas[0]["account"]).pw_uid
    # no longer the deployer's children, and still serving
    for r in replicas:
        status, _ = await get_health(r["port"], 5)
        assert status == 200 and alive(r["pid"])

    spec = version_spec(str(model_dir), name="survivor", replicas=2)
    fresh = make_backend(home_root, place)
    try:
        await fresh.recover({spec.key})
        assert sorted(fresh.endpoints(spec.key)) == urls  # serving before start
        headers = fresh.request_headers(spec.key)
        for url in urls:
            assert await ainvoke(url, [[1.0]], headers) == pytest.approx([3.0])
        await fresh.start(spec)
        assert sorted(r["pid"] for r in fresh.describe(spec.key)) == pids  # adopted
        assert sorted(fresh.endpoints(spec.key)) == urls
        log = fresh.log_tail(spec.key)
        assert "adopted 2 replica(s) still serving" in log

        # supervised like its own: a replica killed is restarted
        os.kill(pids[0], signal.SIGKILL)
        await eventually(
            lambda: (
                len(fresh.endpoints(spec.key)) == 2
                and pids[0] not in {r["pid"] for r in fresh.describe(spec.key)}
            ),
            60,
            "the adopted replica to be restarted",
        )
        # not its child: no exit status to read, but the exit is seen at once
        assert ": exited; restarting" in fresh.log_tail(spec.key)
    finally:
        await fresh.close()
    assert live_processes(uid) == []
    assert cgroups_of(spec.key) == []
    assert not (place / "run").exists() or list((place / "run").iterdir()) == []


@needs_root
@pytest.mark.asyncio(loop_scope="module")
async def test_replicas_of_a_version_no_longer_wanted_are_removed(
    home_root, place, model_dir, backend
):
    """What a dead deployer left running for a version the database no longer wants (deleted
    meanwhile) is killed and removed at the next start, as is a record naming a pid that is
    now another process's."""
    deployer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        DEPLOYER,
        str(home_root),
        str(place),
        str(model_dir),
        stdout=subprocess.PIPE,
        cwd=str(Path(__file__).parent.parent),
    )
    try:
        replicas = json.loads(await asyncio.wait_for(deployer.stdout.readline(), 90))
    finally:
        deployer.kill()
        await deployer.wait()
    spec = version_spec(str(model_dir), name="survivor", replicas=2)
    uid = pwd.getpwnam(replicas[0]["account"]).pw_uid
    assert len(live_processes(uid)) == 2
    fresh = make_backend(home_root, place)
    await fresh.recover(set())
    await eventually(lambda: live_processes(uid) == [], 10, "the replicas to be killed")
    assert fresh.endpoints(spec.key) == []
    assert cgroups_of(spec.key) == []
    assert list((place / "run").iterdir()) == []
    await fresh.close()


@pytest.mark.parametrize("cls", [LocalBackend, KubernetesBackend], ids=lambda c: c.__name__)
def test_every_backend_trait_has_help(cls):
    traits = cls.class_own_traits(config=True)
    assert traits
    for name, trait in traits.items():
        assert help_problem(trait) is None, f"{cls.__name__}.{name} {help_problem(trait)}"
        assert ".. versionadded::" in trait.help and f"c.{cls.__name__}.{name} =" in trait.help


def test_port_range_is_checked():
    with pytest.raises(Exception, match="port_range"):
        LocalBackend(port_range=[3000, 2000])
    assert LocalBackend(port_range=[2000, 2001]).port_range == [2000, 2001]


# -------------------------------------------------------------- Kubernetes

EXPECTED_RESOURCES = {
    "serving": {
        "requests": {"cpu": "250m", "memory": str(256 * 2**20)},
        "limits": {"cpu": "1500m", "memory": str(2**30)},
    },
    "gpu": {
        "requests": {GPU_RESOURCE: "1"},
        "limits": {"memory": str(8 * 2**30), GPU_RESOURCE: "1"},
    },
    "unlimited": {},
}


@pytest.mark.parametrize("profile", KUBE_PROFILES, ids=lambda p: p.slug)
def test_deployment_for_every_profile(profile):
    kv = kube_version(profile)
    key = kv.spec.key
    deployment = validated(deployment_manifest(kv))
    name = object_name(key)
    assert name == f"model-{key}" == "model-" + user_slug(OWNER) + "--churn-v3"
    meta = deployment["metadata"]
    assert (meta["name"], meta["namespace"]) == (name, "models")
    labels = {
        "app.kubernetes.io/name": "shipyard-model",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/managed-by": "shipyard",
        "shipyard.io/user": user_slug(OWNER),
        "shipyard.io/profile": profile.slug,
        "shipyard.io/deployment": "churn",
        "shipyard.io/model-version": "3",
        "shipyard.io/version-key": key,
    }
    assert meta["labels"] == labels
    assert meta["annotations"]["shipyard.io/owner"] == OWNER
    assert meta["annotations"]["shipyard.io/model-uri"] == "models:/ada-churn/3"
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["selector"] == {"matchLabels": {"shipyard.io/version-key": key}}
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    template = spec["template"]
    assert template["metadata"]["labels"] == labels
    pod = template["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 100,
        "fsGroup": 100,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["terminationGracePeriodSeconds"] == 5 + 20 + 5
    assert pod.get("nodeSelector", {}) == profile.kubernetes.node_selector
    assert pod.get("tolerations", []) == [
        t.model_dump(exclude_none=True) for t in profile.kubernetes.tolerations
    ]
    override = profile.kubernetes.kubespawner_override
    assert pod.get("priorityClassName") == override.get("priority_class_name")

    [container] = pod["containers"]
    assert container["image"] == override.get(
        "image", f"registry.example.org/shipyard-{profile.environment}:2026.11"
    )
    assert container["command"] == ["python", "-m", "hub_ext.runtime.modelserver"]
    assert container["args"] == [
        "--model-uri",
        "models:/ada-churn/3",
        "--host",
        "0.0.0.0",  # noqa: S104 - in the pod; the NetworkPolicy admits the deployer only
        "--port",
        "8080",
        "--name",
        f"{OWNER}/churn/3",
        "--timeout",
        "12.5",
        "--max-body-bytes",
        str(2**20),
        "--training-summary",
        "/etc/shipyard/training-summary.json",
    ]
    assert container["resources"] == EXPECTED_RESOURCES[profile.slug]
    assert container["securityContext"] == {
        "runAsUser": 1000,
        "runAsGroup": 100,
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
        "readOnlyRootFilesystem": True,
    }
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    probe = {"httpGet": {"path": "/health", "port": "http"}}
    assert container["readinessProbe"]["httpGet"] == probe["httpGet"]
    assert container["livenessProbe"]["httpGet"] == probe["httpGet"]
    assert container["startupProbe"]["httpGet"] == probe["httpGet"]
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= SETTINGS.start_timeout
    assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    # a read-only root: the only writable place is an emptyDir at /tmp, which is HOME
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]  # noqa: S108
    env = {e["name"]: e for e in container["env"]}
    assert env["HOME"]["value"] == "/tmp"  # noqa: S108
    assert env["SHIPYARD_ENV"]["value"] == profile.environment
    assert env["SHIPYARD_ENV_DIGEST"]["value"] == SETTINGS.env_digest
    # the owner's token sits in a Secret, not in the Deployment
    secret = secret_manifest(kv)
    assert env["MLFLOW_TRACKING_TOKEN"] == {
        "name": "MLFLOW_TRACKING_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": name, "key": "MLFLOW_TRACKING_TOKEN"}},
    }
    assert "owner-token-0123" not in json.dumps(deployment)
    summary = next(v for v in pod["volumes"] if v["name"] == "training-summary")
    assert summary["secret"]["secretName"] == secret["metadata"]["name"] == name
    assert summary["secret"]["items"] == [
        {"key": "training-summary.json", "path": "training-summary.json", "mode": 0o440}
    ]


def test_secret_service_hpa_and_network_policy():
    kv = kube_version(KUBE_PROFILES[0])
    name = object_name(kv.spec.key)
    selector = {"shipyard.io/version-key": kv.spec.key}

    secret = validated(secret_manifest(kv))
    assert secret["stringData"] == {
        **EXTRA_ENV,
        "training-summary.json": json.dumps(SUMMARY),
    }

    service = validated(service_manifest(kv))
    assert service["metadata"]["name"] == name
    assert service["spec"]["selector"] == selector
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]

    hpa = validated(hpa_manifest(kv))
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": name,
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 70},
            },
        }
    ]
    # more replicas than the autoscaler's maximum: the maximum follows
    assert hpa_manifest(kube_version(KUBE_PROFILES[0], replicas=9))["spec"]["maxReplicas"] == 9

    policy = validated(network_policy_manifest(kv))
    assert policy["spec"]["podSelector"] == {"matchLabels": selector}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [
        {
            "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/component": "deployer"}}}],
            "ports": [{"port": 8080, "protocol": "TCP"}],
        }
    ]


def test_what_is_left_out():
    # no CPU to measure (no request or limit): no autoscaler
    assert hpa_manifest(kube_version(KUBE_PROFILES[1])) is None
    assert hpa_manifest(kube_version(KUBE_PROFILES[2])) is None
    # no training summary: no file; no extra environment and no summary: no Secret
    kv = kube_version(KUBE_PROFILES[2], training_summary=None, env={})
    assert secret_manifest(kv) is None
    deployment = validated(deployment_manifest(kv))
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert "--training-summary" not in container["args"]
    assert all(
        v["name"] != "training-summary" for v in deployment["spec"]["template"]["spec"]["volumes"]
    )
    # no labels to admit: no NetworkPolicy (the admin's own policies decide)
    bare = KubeVersion(kv.spec, ManifestSettings(namespace="models", ingress_from={}))
    assert network_policy_manifest(bare) is None
    kinds = [m["kind"] for m in manifests(kube_version(KUBE_PROFILES[0]))]
    assert kinds == ["Secret", "Deployment", "Service", "HorizontalPodAutoscaler", "NetworkPolicy"]


@pytest.mark.parametrize(
    "owner, name",
    [("a", "b"), ("x" * 30, "y" * 40), ("Ünïcode User", "model-" + "z" * 34)],
)
def test_object_names_fit_kubernetes(owner, name):
    kv = kube_version(KUBE_PROFILES[0], owner=owner, name=name, version=12345)
    for manifest in manifests(kv):
        validated(manifest)
        assert len(manifest["metadata"]["name"]) <= 63
        assert manifest["metadata"]["name"][0].isalpha()
    other = kube_version(KUBE_PROFILES[0], owner=owner, name=name, version=12346)
    assert object_name(kv.spec.key) != object_name(other.spec.key)


@pytest.mark.parametrize(
    "deployment, ready",
    [
        ({"metadata": {"generation": 2}, "status": {}}, False),
        (
            {
                "metadata": {"generation": 2},
                "status": {
                    "observedGeneration": 2,
                    "replicas": 2,
                    "updatedReplicas": 2,
                    "availableReplicas": 2,
                },
            },
            True,
        ),
        (  # an old pod still counted: the rollout is not over
            {
                "metadata": {"generation": 2},
                "status": {
                    "observedGeneration": 2,
                    "replicas": 3,
                    "updatedReplicas": 2,
                    "availableReplicas": 3,
                },
            },
            False,
        ),
        (  # the controller has not seen the latest spec yet
            {
                "metadata": {"generation": 3},
                "status": {
                    "observedGeneration": 2,
                    "replicas": 2,
                    "updatedReplicas": 2,
                    "availableReplicas": 2,
                },
            },
            False,
        ),
    ],
)
def test_rolled_out(deployment, ready):
    assert rolled_out(deployment, 2) is ready


def test_pod_failure_carries_the_model_servers_last_lines():
    crashed = {
        "status": {
            "containerStatuses": [
                {
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                    "lastState": {
                        "terminated": {
                            "exitCode": 1,
                            "message": "failed to load model: no MLmodel",
                        }
                    },
                }
            ]
        }
    }
    assert pod_failure(crashed) == (
        "The model server exited with status 1:\nfailed to load model: no MLmodel"
    )
    pulling = {
        "status": {
            "containerStatuses": [
                {"state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}}
            ]
        }
    }
    assert pod_failure(pulling) == "ImagePullBackOff: not found"
    starting = {"status": {"containerStatuses": [{"state": {"running": {}}}]}}
    assert pod_failure(starting) is None
    assert pod_failure({"status": {}}) is None


async def test_kubernetes_backend_applies_then_deletes(monkeypatch):
    backend = KubernetesBackend(placement=KubePlacement(namespace="models"))
    calls = fake_clients(backend, monkeypatch, READY, [])
    spec = kube_version(KUBE_PROFILES[0]).spec
    await backend.start(spec)
    applied = [(c[0], c[1][0], c[1][1], c[2]["_content_type"]) for c in calls if "patch" in c[0]]
    name = object_name(spec.key)
    assert applied == [
        (f"patch_namespaced_{kind}", name, "models", "application/apply-patch+yaml")
        for kind in ("secret", "deployment", "service", "horizontal_pod_autoscaler")
    ] + [("patch_namespaced_network_policy", name, "models", "application/apply-patch+yaml")]
    assert all(c[2]["field_manager"] == "shipyard-deployer" for c in calls if "patch" in c[0])
    assert backend.endpoints(spec.key) == [f"http://{name}.models.svc:8080"]

    calls.clear()
    await backend.stop(spec.key)
    assert backend.endpoints(spec.key) == []
    assert [c[0] for c in calls] == [
        "delete_namespaced_horizontal_pod_autoscaler",
        "delete_namespaced_deployment",
        "delete_namespaced_service",
        "delete_namespaced_network_policy",
        "delete_namespaced_secret",
    ]


async def test_kubernetes_backend_reports_a_crashing_model_and_cleans_up(monkeypatch):
    backend = KubernetesBackend(placement=KubePlacement(namespace="models"))
    crashed = {
        "status": {
            "containerStatuses": [
                {
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "message": "failed to load model"}},
                }
            ]
        }
    }
    calls = fake_clients(backend, monkeypatch, {"metadata": {"generation": 1}}, [crashed])
    spec = kube_version(KUBE_PROFILES[0]).spec
    with pytest.raises(DeployFailed, match="failed to load model"):
        await backend.start(spec)
    assert backend.endpoints(spec.key) == []
    assert "delete_namespaced_deployment" in [c[0] for c in calls]


def test_a_replica_record_of_an_older_deployer_names_its_process_in_todays_form():
    """Older deployers recorded psutil's create_time (a float): an upgrade still adopts."""
    import subprocess

    import psutil

    from hub_ext.host.process import start_time
    from hub_ext.services.deployer.local.records import _read_older_start_time

    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        created = psutil.Process(sleeper.pid).create_time()
        older = {"pid": sleeper.pid, "started": created}
        _read_older_start_time(older)
        assert older["started"] == start_time(sleeper.pid)  # the same process, today's form
        another = {"pid": sleeper.pid, "started": created - 5.0}
        _read_older_start_time(another)
        assert another["started"] == ""  # the pid is another process's: matches nothing
        today = {"pid": sleeper.pid, "started": start_time(sleeper.pid)}
        _read_older_start_time(today)
        assert today["started"] == start_time(sleeper.pid)  # today's records are left alone
    finally:
        sleeper.kill()
        sleeper.wait()
    gone = {"pid": sleeper.pid, "started": created}
    _read_older_start_time(gone)
    assert gone["started"] == ""
