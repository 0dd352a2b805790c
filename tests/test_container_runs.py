"""Scheduled runs in podman containers (``c.LocalHost.placement = "container"``).

:class:`ContainerExecutor` runs real notebooks with papermill in containers of the
``base`` environment's image (made once per machine, tests/containertools.py): the
run's notebook records from inside what it saw (uid, home, interpreter, lock digest,
memory limit, read-only root) to ``facts.json``, so a failure shows the values. The
same report, progress, outputs and parameters-as-data as processes; a timeout, a
cancel and the memory limit end the container; nothing is left behind; a scheduler
that died leaves containers its successor sweeps.
"""

from __future__ import annotations

import asyncio
import json
import pwd
import shutil
import time

import pytest

from hub_ext.environments.catalog import get_environment
from hub_ext.host.slugs import account_name
from hub_ext.host.usage import UsageLedger
from hub_ext.profiles.quantities import parse_memory
from hub_ext.services.scheduler.executors import ExecutorError, RunReport, RunSpec
from hub_ext.services.scheduler.executors.containers import ContainerExecutor
from hub_ext.services.scheduler.models import RunStatus

from . import containertools
from .containertools import ensure_base_image, needs_podman, podman
from .hubtools import remove_test_accounts, session_folder, tagged
from .runspecs import (
    EXTRA_ENV,
    MLFLOW_RUN_ID,
    PARAMETERS,
    PWNED,
    SECRETS,
    facts_notebook,
    output_cells,
    profile,
    spec_for,
    write_notebook,
)

pytestmark = needs_podman

ACCOUNT_PREFIX = tagged("syctr-")
PREFIX = tagged("shipyard-test") + "-runs"

FACTS = """\
import json, os, sys
def writable(path):
    try:
        open(path, "w").close()
        return True
    except OSError:
        return False
limit = open("/sys/fs/cgroup/memory/memory.limit_in_bytes").read().strip() \\
    if os.path.exists("/sys/fs/cgroup/memory/memory.limit_in_bytes") \\
    else open("/sys/fs/cgroup/memory.max").read().strip()
facts = {
    "uid": os.getuid(), "gid": os.getgid(), "home": os.environ["HOME"],
    "home_files": sorted(os.listdir(os.environ["HOME"])),
    "cwd": os.getcwd(), "executable": sys.executable, "mem_limit": limit,
    "root_writable": writable("/etc/shipyard-test"), "env": dict(os.environ),
    "params": {name: repr(globals()[name]) for name in PARAMETER_NAMES},
}
json.dump(facts, open("facts.json", "w"))
"""


def run(executor, spec: RunSpec, progress=None) -> tuple[RunReport, list, float]:
    events: list[tuple[int, int]] = []

    async def main():
        async def record(index, count):
            events.append((index, count))
            if progress is not None:
                await progress(index, count)

        return await executor.execute(spec, record)

    start = time.monotonic()
    report = asyncio.run(main())
    return report, events, time.monotonic() - start


def assert_gone(spec: RunSpec) -> None:
    """No container, network, firewall rule or idmapped mount of the run is left."""
    left = containertools.leftovers(PREFIX)
    assert left == {"containers": [], "networks": [], "rules": [], "mounts": []}, left


@pytest.fixture(scope="module")
def place():
    path = session_folder("ctr-runs-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def executor(home_root, place):
    ensure_base_image()
    containertools.remove_leftovers(PREFIX)
    config = containertools.placement_config(PREFIX, place, ACCOUNT_PREFIX, home_root)
    executor = ContainerExecutor(config=config)
    yield executor
    executor.containers.close(stop_service=True)
    containertools.remove_leftovers(PREFIX)
    remove_test_accounts(ACCOUNT_PREFIX)


@pytest.fixture(scope="module")
def identity(executor, place):
    """One run with parameters and HTML, while the service holds hub secrets."""
    notebook = facts_notebook(place / "identity.ipynb", FACTS, "#md # Who am I?")
    spec = spec_for(
        place,
        notebook,
        "identity",
        parameters=PARAMETERS,
        output_formats=("html",),
        extra_env=EXTRA_ENV,
    )
    PWNED.unlink(missing_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        for name, value in SECRETS.items():
            mp.setenv(name, value)
        report, events, seconds = run(executor, spec)
    facts = json.loads((spec.output_dir / "facts.json").read_text())
    return spec, report, events, facts, seconds


def test_a_run_in_a_container_succeeds_with_its_outputs_and_progress(identity, executor):
    spec, report, events, _, seconds = identity
    assert report.status == RunStatus.SUCCEEDED, f"{report.reason}\n{spec.log_path.read_text()}"
    assert report.outputs == {
        "ipynb": spec.output_dir / "identity.ipynb",
        "html": spec.output_dir / "identity.html",
    }
    assert report.mlflow_run_id == MLFLOW_RUN_ID
    assert "Executing Cell 1---" in spec.log_path.read_text()
    count = len(output_cells(report))
    assert events == [(i, count) for i in range(count)]
    html = report.outputs["html"].read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and "Who am I?" in html
    # each of its containers (papermill's, nbconvert's) is counted as the run's, from its
    # cgroup, and closed with its last reading as podman deleted the cgroup
    ledger = UsageLedger(executor.local_host.usage_dir)
    what = spec.usage_object or f"job/{spec.job_id}/run/{spec.run_id}"
    usage = [r for _, r in ledger.records([executor.cgroup_parent]) if r["object"] == what]
    assert len(usage) == 2, usage
    for record in usage:
        assert (record["kind"], record["owner"], record["driver"]) == (
            spec.usage_kind,
            spec.owner,
            containertools.cgroup_kind(),
        )
        assert record["cgroup"].startswith(f"{PREFIX}-") and record["final"] is not None
    papermill = min(usage, key=lambda r: r["cgroup"])  # its container is -1, nbconvert's -2
    # papermill and its kernel: well over half a second of CPU, as the cgroup counted it
    assert papermill["final"]["cpu_usec"] > 500_000
    assert papermill["final"]["mem_peak"] > 20 * 2**20
    print(f"a run of {count} cells in containers, with HTML: {seconds:.1f} s")


def test_the_run_is_the_image_s_as_uid_1000_with_the_owner_s_files(identity, home_root):
    spec, _, _, facts, _ = identity
    account = pwd.getpwnam(account_name("ada", ACCOUNT_PREFIX))
    assert (facts["uid"], facts["gid"]) == (1000, 100)
    assert facts["home"] == "/home/jovyan"
    assert facts["executable"].startswith("/opt/env/")  # the image's environment
    assert facts["env"]["SHIPYARD_ENV_DIGEST"] == get_environment("base").digest
    assert facts["cwd"] == str(spec.output_dir)
    assert int(facts["mem_limit"]) == parse_memory("384Mi")
    assert facts["root_writable"] is False
    # what the run wrote is the owner's on the host
    for path in (spec.output_dir / "facts.json", spec.output_dir / "identity.ipynb"):
        assert (path.stat().st_uid, path.stat().st_gid) == (account.pw_uid, account.pw_gid)


def test_parameters_are_data_and_no_hub_secret_reaches_the_container(identity):
    spec, report, _, facts, _ = identity
    assert facts["params"] == {name: repr(value) for name, value in PARAMETERS.items()}
    assert not PWNED.exists()
    env = facts["env"]
    for name, value in SECRETS.items():
        assert name not in env and value not in json.dumps(env)
        assert value not in spec.log_path.read_text()
        assert value not in report.outputs["ipynb"].read_text()
    # the owner's URLs on the host's loopback are reached at the network's gateway
    assert env["MLFLOW_TRACKING_URI"].endswith(":9/services/tracking")
    assert "127.0.0.1" not in env["MLFLOW_TRACKING_URI"]


def test_nothing_of_a_finished_run_is_left(identity):
    assert_gone(identity[0])


def test_a_run_past_its_timeout_is_stopped_with_its_container(executor, place):
    notebook = write_notebook(place / "sleepy.ipynb", "import time\ntime.sleep(300)")
    spec = spec_for(place, notebook, "sleepy", owner="tim", timeout=10)
    report, _, seconds = run(executor, spec)
    assert report.status == RunStatus.TIMED_OUT, report.reason
    assert 10 <= seconds < 10 + 15
    assert_gone(spec)


def test_a_run_past_its_memory_limit_is_told_so(executor, place):
    notebook = write_notebook(
        place / "greedy.ipynb",
        "print('starting')",
        "block = b'x' * (600 * 2**20)",
        "print('survived')",
    )
    spec = spec_for(place, notebook, "greedy", owner="meg", profile=profile(mem_limit="256Mi"))
    report, _, _ = run(executor, spec)
    assert report.status == RunStatus.FAILED, report.reason
    assert "memory limit of 256 MiB" in report.reason, report.reason
    assert_gone(spec)


def test_cancel_stops_the_container(executor, place):
    notebook = write_notebook(place / "cancel.ipynb", "import time\ntime.sleep(300)")
    spec = spec_for(place, notebook, "cancel", owner="cal")

    async def cancel_when_sleeping(index, count):
        if index == 0:
            asyncio.get_running_loop().call_later(
                1, asyncio.ensure_future, executor.cancel("cancel")
            )

    report, _, seconds = run(executor, spec, cancel_when_sleeping)
    assert report.status == RunStatus.CANCELLED
    assert seconds < 30
    assert_gone(spec)


def test_a_missing_image_and_a_gpu_profile_are_refused_with_what_to_do(executor, place):
    notebook = write_notebook(place / "refused.ipynb", "1")
    unknown = spec_for(
        place, notebook, "noimage", profile=profile(environment="no-such-environment")
    )
    with pytest.raises(ExecutorError, match="no-such-environment"):
        asyncio.run(executor.execute(unknown, lambda i, n: None))
    gpu = spec_for(place, notebook, "gpu", profile=profile(gpu=1))
    with pytest.raises(ExecutorError, match="no CDI spec of nvidia.com/gpu.*nvidia-ctk cdi"):
        asyncio.run(executor.execute(gpu, lambda i, n: None))
    assert_gone(gpu)


def test_a_prewarmed_run_runs_in_a_container_started_before_it(executor, place):
    """The warm pool in containers: one started beforehand serves one run, then is gone."""
    notebook = facts_notebook(place / "warm.ipynb", FACTS)
    spec = spec_for(
        place,
        notebook,
        "warm",
        owner="wendy",
        parameters=PARAMETERS,
        extra_env=EXTRA_ENV,
        output_formats=("html",),
    )
    PWNED.unlink(missing_ok=True)

    async def main():
        assert await executor.prewarm("wendy", spec.profile, wait=True) == 1
        [warm] = [w.cgroup for ws in executor.pool._ready.values() for w in ws]
        assert podman("container", "exists", warm).returncode == 0
        started = time.monotonic()
        report = await executor.execute(spec, lambda index, count: None)
        return warm, report, time.monotonic() - started

    warm, report, seconds = asyncio.run(main())
    assert report.status == RunStatus.SUCCEEDED, f"{report.reason}\n{spec.log_path.read_text()}"
    assert set(report.outputs) == {"ipynb", "html"}
    assert report.mlflow_run_id == MLFLOW_RUN_ID
    log = spec.log_path.read_text()
    assert f"in container {warm} of" in log and "started beforehand" in log
    facts = json.loads((spec.output_dir / "facts.json").read_text())
    assert facts["params"] == {name: repr(value) for name, value in PARAMETERS.items()}
    assert not PWNED.exists()
    assert (facts["uid"], facts["home"]) == (1000, "/home/jovyan")
    assert "127.0.0.1" not in facts["env"]["MLFLOW_TRACKING_URI"]
    account = pwd.getpwnam(account_name("wendy", ACCOUNT_PREFIX))
    for path in spec.output_dir.iterdir():  # moved out of the exchange folder: the owner's
        assert path.stat().st_uid == account.pw_uid, path
    assert executor.pool.served == 1
    print(f"a warm run in a container, with HTML: {seconds:.1f} s")
    # the warm container served its one run and went with it; the refill went at close
    asyncio.run(executor.pool.close())
    assert_gone(spec)


def test_a_sweep_removes_the_runs_a_dead_scheduler_left(executor, place):
    """A run container left running (its scheduler killed) goes at the next start's sweep."""
    image = ensure_base_image()
    name = f"{PREFIX}-job-left-1"
    made = podman(
        "run",
        "-d",
        "--name",
        name,
        "--label",
        f"io.shipyard.instance={PREFIX}",
        "--label",
        "io.shipyard.role=run",
        "--label",
        "io.shipyard.run=left",
        *["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"],
        image,
        "sleep",
        "300",
    )
    assert made.returncode == 0, made.stderr
    assert asyncio.run(executor.sweep()) == [name]
    assert podman("container", "exists", name).returncode == 1


def test_a_pipeline_step_reads_and_writes_its_workspace_at_the_same_path(executor, identity, place):
    """A pipeline step's workspace is bound into its container at its own path (not warm):
    the file parameters and the values it records are where the scheduler reads them."""
    import os

    from hub_ext.services.scheduler.pipelines.outputs import read_outputs
    from hub_ext.services.scheduler.pipelines.spec import OutputType

    account = pwd.getpwnam(account_name("ada", ACCOUNT_PREFIX))
    workspace = place / "workspace-1"
    for folder in (workspace, workspace / ".outputs"):
        folder.mkdir(parents=True, exist_ok=True)
        os.chown(folder, account.pw_uid, account.pw_gid)
        os.chmod(folder, 0o700)
    (workspace / "in.txt").write_text("1\n2\n3\n")
    os.chown(workspace / "in.txt", account.pw_uid, account.pw_gid)
    recorded = workspace / ".outputs" / "step-1.jsonl"
    notebook = write_notebook(
        place / "step.ipynb",
        "from hub_ext.runtime.outputs import output, workspace\n"
        "rows = open(table).read().splitlines()\n"
        "(workspace() / 'out.txt').write_text(str(len(rows)))\n"
        "output('rows', len(rows))",
        parameters="table = ''",
    )
    spec = spec_for(
        place,
        notebook,
        "step-1",
        parameters={"table": str(workspace / "in.txt")},
        extra_env={"SHIPYARD_WORKSPACE": str(workspace), "SHIPYARD_OUTPUTS": str(recorded)},
    )
    report, _, _ = run(executor, spec)  # identity's run made ada's account
    assert report.status == RunStatus.SUCCEEDED, f"{report.reason}\n{spec.log_path.read_text()}"
    assert (workspace / "out.txt").read_text() == "3"
    assert (workspace / "out.txt").stat().st_uid == account.pw_uid
    assert read_outputs(recorded, {"rows": OutputType.integer}) == {"rows": 3}
