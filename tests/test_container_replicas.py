"""Model replicas in podman containers (``c.LocalHost.placement = "container"``).

:class:`ContainerBackend` serves a real scikit-learn model with the model server in
containers of the ``model-server`` environment's image (made once per machine,
tests/containertools.py): a version serves from a container as uid 1000 with the
profile's memory limit and no secret of the deployer; a replica killed with -9 is
restarted; scaling keeps the version serving; a deployer killed with -9 leaves its
replica containers serving and the next one adopts them (same pids); a stop leaves
no container, network, firewall rule or mount behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import pytest_asyncio

from hub_ext.environments.catalog import get_environment
from hub_ext.environments.images import image_tag
from hub_ext.host.cgroups import read_counters
from hub_ext.host.usage import UsageLedger
from hub_ext.services.deployer.local.containers import ContainerBackend
from hub_ext.services.deployer.local.health import get_health

from . import containertools
from .containertools import needs_podman, podman
from .hubtools import remove_test_accounts, session_folder, tagged
from .modelspecs import EXTRA_ENV

pytestmark = needs_podman

ACCOUNT_PREFIX = tagged("syctrm-")
PREFIX = tagged("shipyard-test") + "-models"
SECRETS = {
    "JUPYTERHUB_API_TOKEN": "hub-secret-token-0123456789",
    "SHIPYARD_DEPLOYER_DB_URL": "postgresql://admin:db-secret-password@db/deployer",
}


def model_server_image() -> str:
    """The ``model-server`` environment's image: made once per machine, like the base's."""
    return containertools.ensure_image("model-server")


def make_backend(home_root: Path, place: Path, **traits) -> ContainerBackend:
    values = {
        "log_dir": str(place / "logs"),
        "runtime_dir": str(place / "run"),
        "health_interval": 0.5,
        "restart_backoff": 0.2,
        "start_timeout": 60,
    }
    values.update(traits)
    config = containertools.placement_config(PREFIX, place, ACCOUNT_PREFIX, home_root)
    return ContainerBackend(config=config, **values)


def version_spec(model_uri: str, **fields):
    from .test_deployer_backends import version_spec as process_version_spec

    return process_version_spec(model_uri, **fields)


def usage_records(backend, spec) -> list[dict]:
    """The usage ledger's records of ``spec``'s replicas (the backend's ledger and parent)."""
    ledger = UsageLedger(backend.local_host.usage_dir)
    what = f"model/{spec.owner}/{spec.name}/v{spec.version}"
    return [r for _, r in ledger.records([backend.cgroup_parent]) if r["object"] == what]


def invoke(url: str, rows: list[list[float]], headers: dict[str, str]) -> list:
    body = json.dumps({"dataframe_split": {"columns": ["x"], "data": rows}}).encode()
    request = urllib.request.Request(  # noqa: S310 - a loopback URL of the test's
        f"{url}/invocations",
        data=body,
        headers={"Content-Type": "application/json", **headers},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return json.loads(response.read())["predictions"]


async def ainvoke(url: str, rows: list[list[float]], headers: dict[str, str]) -> list:
    return await asyncio.to_thread(invoke, url, rows, headers)


async def eventually(check, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def proc_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def assert_gone() -> None:
    left = containertools.leftovers(PREFIX)
    assert left == {"containers": [], "networks": [], "rules": [], "mounts": []}, left


@pytest.fixture(scope="module")
def place():
    path = session_folder("ctr-models-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backend(home_root, place):
    model_server_image()
    containertools.remove_leftovers(PREFIX)
    saved = {k: os.environ.get(k) for k in SECRETS}
    os.environ.update(SECRETS)
    backend = make_backend(home_root, place)
    await backend.sweep()
    yield backend
    await backend.close()
    backend.containers.close(stop_service=True)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    containertools.remove_leftovers(PREFIX)
    remove_test_accounts(ACCOUNT_PREFIX)


@pytest.fixture(scope="module")
def spec(model_dir):
    return version_spec(str(model_dir))


@pytest.mark.asyncio(loop_scope="module")
async def test_a_version_serves_from_a_container_of_its_image(backend, spec):
    started = time.monotonic()
    await backend.start(spec)
    print(f"first replica container healthy after {time.monotonic() - started:.1f}s")
    [url] = backend.endpoints(spec.key)
    assert url.startswith("http://127.0.0.1:")
    headers = backend.request_headers(spec.key)
    assert await ainvoke(url, [[1.0], [4.0]], headers) == pytest.approx([3.0, 9.0])
    with pytest.raises(urllib.error.HTTPError) as refused:
        await ainvoke(url, [[1.0]], {})
    assert refused.value.code == 403

    [replica] = backend.describe(spec.key)
    name = f"{PREFIX}-{spec.key}-r0"
    found = json.loads(podman("container", "inspect", name).stdout)[0]
    assert found["ImageName"] == image_tag(get_environment("model-server"))
    assert found["Config"]["Labels"]["io.shipyard.role"] == "replica"
    assert found["State"]["Pid"] == replica["pid"]
    assert found["HostConfig"]["Memory"] == 512 * 2**20
    assert found["HostConfig"]["ReadonlyRootfs"] is True
    status = Path(f"/proc/{replica['pid']}/status").read_text()
    assert "\nUid:\t1000\t1000" in status  # the images' uid, on an idmapped home
    env = proc_environ(replica["pid"])
    for key, value in SECRETS.items():
        assert key not in env and value not in env.values()
    assert env["HOME"] == "/home/jovyan"
    assert env["MLFLOW_TRACKING_TOKEN"] == EXTRA_ENV["MLFLOW_TRACKING_TOKEN"]
    log = backend.log_tail(spec.key)
    assert f"r0: started container {name}" in log
    assert " r0 | " in log  # the server's own lines, followed through podman
    # its usage is recorded from the container's cgroup, as a replica process's would be
    (usage,) = usage_records(backend, spec)
    assert (usage["kind"], usage["owner"], usage["cgroup"]) == ("replica", spec.owner, name)
    assert usage["mem_limit"] == 512 * 2**20 and usage["final"] is None
    counters = read_counters(usage["driver"], usage["dirs"])
    assert counters is not None and counters.cpu_usec > 100_000  # it loaded a model


@pytest.mark.asyncio(loop_scope="module")
async def test_a_replica_container_killed_is_restarted(backend, spec):
    [before] = backend.describe(spec.key)
    os.kill(before["pid"], signal.SIGKILL)
    await eventually(lambda: not backend.endpoints(spec.key), 5, "the dead replica to leave")
    started = time.monotonic()
    [url] = await eventually(lambda: backend.endpoints(spec.key), 60, "a restarted replica")
    print(f"restarted replica container healthy after {time.monotonic() - started:.1f}s")
    [after] = backend.describe(spec.key)
    assert after["pid"] != before["pid"] and after["restarts"] == 1
    assert await ainvoke(url, [[0.0]], backend.request_headers(spec.key)) == pytest.approx([1.0])
    assert "r0: was killed by SIGKILL; restarting" in backend.log_tail(spec.key)


@pytest.mark.asyncio(loop_scope="module")
async def test_scaling_keeps_the_version_serving(backend, spec):
    headers = backend.request_headers(spec.key)
    failures = []
    stop = asyncio.Event()

    async def traffic():
        while not stop.is_set():
            for url in backend.endpoints(spec.key):
                try:
                    await ainvoke(url, [[2.0]], headers)
                except Exception as e:  # a refused request: what scaling must not cause
                    failures.append(repr(e))
            await asyncio.sleep(0.05)

    load = asyncio.create_task(traffic())
    try:
        await backend.scale(version_spec(spec.model_uri, replicas=2))
        assert len(backend.endpoints(spec.key)) == 2
        await backend.scale(version_spec(spec.model_uri, replicas=1))
        assert len(backend.endpoints(spec.key)) == 1
    finally:
        stop.set()
        await load
    assert failures == []


@pytest.mark.asyncio(loop_scope="module")
async def test_gpus_and_missing_images_are_refused_with_what_to_do(backend, model_dir):
    from hub_ext.services.deployer.backend import DeployFailed

    from .test_deployer_backends import model_profile

    gpu = version_spec(str(model_dir), name="gpu", profile=model_profile(gpu=1))
    with pytest.raises(DeployFailed, match="no CDI spec of nvidia.com/gpu.*nvidia-ctk cdi"):
        await backend.start(gpu)
    nowhere = version_spec(
        str(model_dir), name="nowhere", profile=model_profile(environment="no-such-env")
    )
    with pytest.raises(DeployFailed, match="no-such-env"):
        await backend.start(nowhere)
    assert backend.endpoints(gpu.key) == backend.endpoints(nowhere.key) == []


@pytest.mark.asyncio(loop_scope="module")
async def test_stop_leaves_no_container_network_or_mount(backend, spec, place):
    await backend.stop(spec.key, grace=5)
    assert backend.endpoints(spec.key) == []
    assert_gone()
    # every replica container's record is closed with its last counters
    usage = usage_records(backend, spec)
    assert usage and all(r["final"] is not None for r in usage), usage
    assert all(r["final"]["cpu_usec"] > 100_000 for r in usage), usage
    assert list((place / "run").iterdir()) == []


DEPLOYER = """
import asyncio, json, sys
from pathlib import Path
from tests.test_container_replicas import make_backend, version_spec

async def main():
    backend = make_backend(Path(sys.argv[1]), Path(sys.argv[2]))
    spec = version_spec(sys.argv[3], name="survivor", replicas=2)
    await backend.start(spec)
    print(json.dumps(backend.describe(spec.key)), flush=True)
    await asyncio.sleep(300)

asyncio.run(main())
"""


@pytest.mark.asyncio(loop_scope="module")
async def test_replica_containers_outlive_a_killed_deployer_and_are_adopted(
    home_root, place, model_dir, backend
):
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
        replicas = json.loads(await asyncio.wait_for(deployer.stdout.readline(), 120))
    finally:
        deployer.kill()  # kill -9: no clean-up of its own
        await deployer.wait()
    pids = sorted(r["pid"] for r in replicas)
    urls = sorted(r["url"] for r in replicas)
    for r in replicas:
        status, _ = await get_health(r["port"], 5)
        assert status == 200

    spec = version_spec(str(model_dir), name="survivor", replicas=2)
    fresh = make_backend(home_root, place)
    try:
        await fresh.recover({spec.key})
        assert sorted(fresh.endpoints(spec.key)) == urls  # serving before start
        await fresh.start(spec)
        assert sorted(r["pid"] for r in fresh.describe(spec.key)) == pids  # adopted
        for url in urls:
            assert await ainvoke(url, [[1.0]], fresh.request_headers(spec.key)) == pytest.approx(
                [3.0]
            )
        assert "adopted 2 replica(s) still serving" in fresh.log_tail(spec.key)
        # the adopted records are counted on (podman's inspect may lag on a loaded machine)
        watches = list(fresh._host._usage.values())
        assert len(watches) == 2, watches
        for watch in watches:
            await asyncio.wait_for(watch.counting.wait(), 60)
    finally:
        await fresh.close()
    assert_gone()
    # the adopting deployer went on with the replicas' open usage records, and closed them
    usage = usage_records(fresh, spec)
    assert len(usage) == 2 and all(r["final"] is not None for r in usage), usage
