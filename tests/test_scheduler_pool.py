"""LocalExecutor's warm pool: real kernels started before their runs, as their owners.

Each test prewarms, runs real notebooks in the real ``base`` environment, and
ends with ``close()``, after which no process of its test accounts and no
cgroup may be left. A run's notebook reports from inside what it saw
(parameters, environment, folder, cgroup, and when its kernel process was
started), as in test_scheduler_executors.py, whose helpers (tests/runspecs.py) it shares.

That a run used a warm kernel is checked by behaviour: its kernel process
started before the run was handed to the executor, and it ran in the
``warm-…`` cgroup the pool had ready; never by timing thresholds.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import subprocess
import sys
import time

import pytest

from hub_ext.host.slugs import account_name
from hub_ext.runtime.warm import kernel_preamble, parse_request, request_line
from hub_ext.services.scheduler.executors.base import RESULT_FILE_ENV
from hub_ext.services.scheduler.executors.local import LocalExecutor
from hub_ext.services.scheduler.models import RunStatus

from .conftest import TEST_ENVS_DIR, needs_root
from .hubtools import (
    cgroup_dirs,
    processes_of,
    remove_cgroups,
    remove_test_accounts,
    session_folder,
    tagged,
)
from .runspecs import (
    EXTRA_ENV,
    FACTS_CELL,
    MLFLOW_RUN_ID,
    PARAMETERS,
    PWNED,
    SECRETS,
    output_cells,
    profile,
    running,
    spec_for,
    write_notebook,
)

ACCOUNT_PREFIX = tagged("sywarm-")
CGROUP_PARENT = tagged("shipyard-test-warm")

#: A cell that records when the kernel's own process started (epoch seconds), to 10 ms:
#: its start in clock ticks since boot against /proc/uptime. (psutil's create_time adds
#: the boot time, which the kernel gives in whole seconds: up to 1 s off.)
KERNEL_CELL = (
    "import json, os, time\n"
    "ticks = int(open('/proc/self/stat').read().rsplit(')', 1)[1].split()[19])\n"
    "age = float(open('/proc/uptime').read().split()[0]) - ticks / os.sysconf('SC_CLK_TCK')\n"
    "json.dump({'started': time.time() - age, 'pid': os.getpid()}, open('kernel.json', 'w'))"
)
#: The facts cell of tests/runspecs.py for a notebook without parameters.
FACTS_CELL_NO_PARAMS = "PARAMETER_NAMES = []\n" + FACTS_CELL


# ------------------------------------------------------------------ helpers


async def execute(executor: LocalExecutor, spec, progress=None):
    """Run ``spec``; return the report, the progress events, and when it was handed over."""
    events: list[tuple[int, int]] = []

    async def record(index, count):
        events.append((index, count))
        if progress is not None:
            await progress(index, count)

    handed_over = time.time()
    report = await executor.execute(spec, record)
    return report, events, handed_over


def warm_of(executor: LocalExecutor, owner: str) -> list[str]:
    """The cgroups of ``owner``'s ready warm processes."""
    return [w.cgroup for w in executor.pool.processes() if w.key.owner == owner]


async def wait_for_warm(executor: LocalExecutor, owner: str, besides=(), timeout=90) -> str:
    """Wait until ``owner`` has a ready warm process other than ``besides``; its cgroup."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fresh = [c for c in warm_of(executor, owner) if c not in besides]
        if fresh:
            return fresh[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no new warm process for {owner} after {timeout}s")


def uid_of(owner: str) -> int:
    return pwd.getpwnam(account_name(owner, ACCOUNT_PREFIX)).pw_uid


def live_processes(owner: str) -> list[int]:
    return [pid for pid in processes_of(uid_of(owner)) if running(pid)]


def cgroups() -> set[str]:
    return {d.name for d in cgroup_dirs(CGROUP_PARENT)}


def kernel_facts(spec) -> dict:
    return json.loads((spec.output_dir / "kernel.json").read_text())


def facts_of(spec) -> dict:
    return json.loads((spec.output_dir / "facts.json").read_text())


async def assert_all_gone(executor: LocalExecutor, *owners: str) -> None:
    """After close(): no process of the owners' accounts and no cgroup of this module."""
    await executor.close()
    assert executor.pool.processes() == [] and executor.pool.total == 0
    for owner in owners:
        assert live_processes(owner) == [], owner
    assert cgroups() == set()


# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def place():
    """A world-traversable folder for snapshots and outputs (pytest's tmp is 0700)."""
    path = session_folder("warm-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def settings(home_root, base_env):
    """How every executor of this module is configured; its accounts and cgroups go after."""
    yield {
        "system_user_prefix": ACCOUNT_PREFIX,
        "home_dir_template": str(home_root / "{account}"),
        "cgroup_parent": CGROUP_PARENT,
        "environments_dir": str(TEST_ENVS_DIR),
        "gpu_devices": [],
    }
    remove_test_accounts(ACCOUNT_PREFIX)
    remove_cgroups(CGROUP_PARENT)


@pytest.fixture
async def executor(settings):
    """A fresh executor (an empty pool, default pool settings), closed after the test."""
    executor = LocalExecutor(**settings)
    try:
        yield executor
    finally:
        await executor.close()


# ------------------------------------------------------------ a warm run


@needs_root
async def test_a_prewarmed_run_runs_in_the_kernel_started_before_it(executor, place):
    notebook = write_notebook(
        place / "warm.ipynb",
        f"PARAMETER_NAMES = {sorted(PARAMETERS)!r}",
        FACTS_CELL,
        KERNEL_CELL,
        "import json, os\n"
        f"json.dump({{'mlflow_run_id': {MLFLOW_RUN_ID!r}}}, "
        f"open(os.environ[{RESULT_FILE_ENV!r}], 'w'))",
        parameters="\n".join(f"{name} = None" for name in PARAMETERS),
    )
    spec = spec_for(
        place,
        notebook,
        "warm",
        parameters=PARAMETERS,
        extra_env=EXTRA_ENV,
        output_formats=("html",),
    )
    with pytest.MonkeyPatch.context() as mp:
        for name, value in SECRETS.items():  # the service holds hub secrets
            mp.setenv(name, value)
        assert await executor.prewarm("ada", spec.profile, wait=True) == 1
    [ready] = warm_of(executor, "ada")
    PWNED.unlink(missing_ok=True)

    report, events, handed_over = await execute(executor, spec)

    assert report.status == RunStatus.SUCCEEDED, f"{report.reason}\n{spec.log_path.read_text()}"
    assert set(report.outputs) == {"ipynb", "html"}
    assert report.mlflow_run_id == MLFLOW_RUN_ID
    # the kernel the notebook ran in existed before the run was handed over
    assert kernel_facts(spec)["started"] < handed_over
    facts = facts_of(spec)
    assert facts["cgroup"] == f"/{CGROUP_PARENT}/{ready}"
    assert (facts["uid"], facts["cwd"]) == (uid_of("ada"), str(spec.output_dir))
    assert executor.pool.served == 1
    log = spec.log_path.read_text()
    assert f"running in a kernel started beforehand ({ready})" in log
    assert "Executing Cell 1---" in log
    # parameters arrive as the exact values, the code-like string as a string
    assert facts["params"] == {name: repr(value) for name, value in PARAMETERS.items()}
    assert not PWNED.exists()
    # the run's own variables reach the kernel; no secret of the service does
    env = facts["env"]
    assert env["SHIPYARD_RUN_ID"] == "warm" and env["SHIPYARD_JOB_ID"] == "job-1"
    assert env[RESULT_FILE_ENV] == str(spec.result_file)
    assert env["MLFLOW_TRACKING_URI"] == EXTRA_ENV["MLFLOW_TRACKING_URI"]
    assert env["SHIPYARD_PROFILE"] == "tiny" and env["CUDA_VISIBLE_DEVICES"] == ""
    for value in SECRETS.values():
        assert value not in json.dumps(env) and value not in log
    # every cell reported once, in order
    count = len(output_cells(report))
    assert events == [(i, count) for i in range(count)]
    # the run's cgroup (the warm one) went with the run
    assert ready not in cgroups()

    # a replacement was started for the owner's next run; run at once, the next run
    # waits for it (still starting, or ready by now) rather than starting cold
    again = spec_for(place, notebook, "warm-again", parameters={"text": "{x}"})
    report, _, handed_over = await execute(executor, again)
    assert report.status == RunStatus.SUCCEEDED, report.reason
    assert executor.pool.served == 2
    assert "running in a kernel started beforehand" in again.log_path.read_text()
    assert facts_of(again)["cgroup"] != f"/{CGROUP_PARENT}/{ready}"
    assert facts_of(again)["params"]["text"] == repr("{x}")
    assert kernel_facts(again)["pid"] != kernel_facts(spec)["pid"]  # never the same kernel

    # and once it is ready, the next run runs in a kernel started before it came
    refill = await wait_for_warm(executor, "ada")
    third = spec_for(place, notebook, "warm-third", parameters={"text": "3"})
    report, _, handed_over = await execute(executor, third)
    assert report.status == RunStatus.SUCCEEDED, report.reason
    assert facts_of(third)["cgroup"] == f"/{CGROUP_PARENT}/{refill}"
    assert kernel_facts(third)["started"] < handed_over
    assert executor.pool.served == 3
    await assert_all_gone(executor, "ada")


@needs_root
async def test_a_failing_notebook_is_reported_alike_warm_and_cold(executor, place):
    notebook = write_notebook(
        place / "failing.ipynb",
        "print('before')",
        "raise ValueError(f'bad {x}')",
        "print('never')",
        parameters="x = 1",
    )
    results = {}
    for mode in ("cold", "warm"):
        if mode == "warm":
            assert await executor.prewarm("ada", profile(), wait=True) == 1
        spec = spec_for(place, notebook, f"failing-{mode}", parameters={"x": 7})
        report, events, _ = await execute(executor, spec)
        results[mode] = report, events, output_cells(report)
    assert executor.pool.served == 1

    (cold, cold_events, cold_cells), (warm, warm_events, warm_cells) = results.values()
    assert warm.status == cold.status == RunStatus.FAILED
    assert warm.reason == cold.reason == "Cell 3 raised ValueError: bad 7"
    assert warm.error.execution_count == cold.error.execution_count == 4
    assert warm.error.traceback == cold.error.traceback
    assert warm_events == cold_events == [(i, 5) for i in range(4)]
    # papermill saved the failing notebook, with its marker cells, the same way
    assert [c["source"] for c in warm_cells] == [c["source"] for c in cold_cells]
    assert [c.get("execution_count") for c in warm_cells] == [
        c.get("execution_count") for c in cold_cells
    ]
    await assert_all_gone(executor, "ada")


@needs_root
async def test_a_notebook_naming_another_kernel_fails_as_it_would_cold(executor, place):
    notebook = write_notebook(place / "other-kernel.ipynb", "print('never')")
    data = json.loads(notebook.read_text())
    data["metadata"]["kernelspec"]["name"] = "no-such-kernel"
    notebook.write_text(json.dumps(data))
    for mode in ("cold", "warm"):
        if mode == "warm":
            assert await executor.prewarm("ada", profile(), wait=True) == 1
        spec = spec_for(place, notebook, f"other-kernel-{mode}")
        report, events, _ = await execute(executor, spec)
        assert report.status == RunStatus.FAILED and events == []
        assert report.reason.startswith("papermill exited with status 1:"), report.reason
        assert "No such kernel named no-such-kernel" in spec.log_path.read_text()
    assert executor.pool.served == 1
    await assert_all_gone(executor, "ada")


# --------------------------------------------------------- bad endings


@needs_root
async def test_a_warm_run_past_its_timeout_is_killed_with_its_cgroup(executor, place):
    notebook = write_notebook(
        place / "sleepy.ipynb",
        # a process in a new session, which a process-group kill would miss
        "import subprocess\nsubprocess.Popen(['sleep', '300'], start_new_session=True)",
        "import time\ntime.sleep(300)",
    )
    spec = spec_for(place, notebook, "sleepy", owner="tim", timeout=6)
    await executor.prewarm("tim", spec.profile, wait=True)
    [ready] = warm_of(executor, "tim")

    report, events, handed_over = await execute(executor, spec)

    assert report.status == RunStatus.TIMED_OUT, report.reason
    assert events[-1] == (1, 2)
    assert executor.pool.served == 1
    assert ready not in cgroups()
    # what tim still runs is the refill's, in a cgroup of its own
    refill = {pid for name in cgroups() for pid in executor.driver.pids(name)}
    assert set(live_processes("tim")) <= refill
    await assert_all_gone(executor, "tim")


@needs_root
async def test_cancel_kills_a_warm_run(executor, place):
    notebook = write_notebook(place / "cancel.ipynb", KERNEL_CELL, "import time\ntime.sleep(300)")
    spec = spec_for(place, notebook, "cancel", owner="cal")
    await executor.prewarm("cal", spec.profile, wait=True)
    [ready] = warm_of(executor, "cal")

    async def cancel_when_sleeping(index, count):
        if index == 1:
            asyncio.get_running_loop().call_later(
                0.5, asyncio.ensure_future, executor.cancel("cancel")
            )

    report, _, handed_over = await execute(executor, spec, cancel_when_sleeping)
    assert report.status == RunStatus.CANCELLED
    assert kernel_facts(spec)["started"] < handed_over
    assert not running(kernel_facts(spec)["pid"])
    assert ready not in cgroups()
    await assert_all_gone(executor, "cal")


@needs_root
async def test_a_warm_run_past_its_memory_limit_is_reported_as_cold(executor, place):
    notebook = write_notebook(
        place / "greedy.ipynb", "print('starting')", "block = b'x' * (600 * 2**20)"
    )
    small = profile(mem_limit="256Mi")
    spec = spec_for(place, notebook, "greedy", owner="meg", profile=small)
    await executor.prewarm("meg", small, wait=True)
    report, _, _ = await execute(executor, spec)
    assert executor.pool.served == 1
    assert report.status == RunStatus.FAILED, report.reason
    assert report.reason == (
        "Cell 1: A process of the run was killed for using more than the profile's memory "
        "limit of 256 MiB (the kernel died)."
    )
    await assert_all_gone(executor, "meg")


# ------------------------------------------------------------- the pool


@needs_root
async def test_a_warm_process_serves_only_its_owner_and_profile(executor, place):
    notebook = write_notebook(place / "whose.ipynb", KERNEL_CELL, FACTS_CELL_NO_PARAMS)
    await executor.prewarm("ada", profile(), wait=True)
    [adas] = warm_of(executor, "ada")

    # another owner, same profile: cold, in a job cgroup, as bob
    bob = spec_for(place, notebook, "bobs", owner="bob")
    report, _, handed_over = await execute(executor, bob)
    assert report.status == RunStatus.SUCCEEDED, report.reason
    assert facts_of(bob)["cgroup"] == f"/{CGROUP_PARENT}/{bob.name}"
    assert facts_of(bob)["uid"] == uid_of("bob")
    assert kernel_facts(bob)["started"] > handed_over
    # the same owner with another profile, or other limits: cold too
    for slug, fields in [("roomy", {}), ("tiny", {"mem_limit": "512Mi"})]:
        other = spec_for(place, notebook, f"ada-{slug}", profile=profile(slug=slug, **fields))
        report, _, handed_over = await execute(executor, other)
        assert report.status == RunStatus.SUCCEEDED, report.reason
        assert facts_of(other)["cgroup"] == f"/{CGROUP_PARENT}/{other.name}"
        assert kernel_facts(other)["started"] > handed_over
    assert executor.pool.served == 0
    assert warm_of(executor, "ada") == [adas]  # still waiting for ada's next tiny run
    await assert_all_gone(executor, "ada", "bob")


@needs_root
async def test_the_pool_is_bounded_and_stops_idle_and_dead_processes(executor, place):
    executor.warm_pool_size = 2
    executor.warm_pool_max = 3
    assert await executor.prewarm("ada", profile(), wait=True) == 2
    assert await executor.prewarm("ada", profile(), wait=True) == 2  # full for ada
    assert await executor.prewarm("bob", profile(), wait=True) == 1  # 3 in all
    assert len(executor.pool.processes()) == 3
    assert await executor.prewarm("ada", profile(gpu=1), wait=True) == 0  # GPUs: never
    assert await executor.prewarm("ada", profile(environment="nowhere"), wait=True) == 0

    # a warm process whose kernel dies is dropped, its cgroup removed, never used
    [bobs] = warm_of(executor, "bob")
    driver = executor.driver
    warm_pid = next(w.pid for w in executor.pool.processes() if w.cgroup == bobs)
    kernel = next(pid for pid in driver.pids(bobs) if pid != warm_pid)
    os.kill(kernel, 9)
    deadline = time.monotonic() + 30
    while (warm_of(executor, "bob") or bobs in cgroups()) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert warm_of(executor, "bob") == [] and bobs not in cgroups()

    notebook = write_notebook(place / "after-death.ipynb", KERNEL_CELL)
    spec = spec_for(place, notebook, "after-death", owner="bob")
    report, _, handed_over = await execute(executor, spec)
    assert report.status == RunStatus.SUCCEEDED and kernel_facts(spec)["started"] > handed_over

    # idle ones are stopped after warm_idle_timeout
    executor.warm_pool_size = 1
    executor.warm_idle_timeout = 1
    assert await executor.prewarm("bob", profile(), wait=True) == 1
    [idle] = warm_of(executor, "bob")
    deadline = time.monotonic() + 30
    while (warm_of(executor, "bob") or idle in cgroups()) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert warm_of(executor, "bob") == [] and idle not in cgroups()
    assert executor.pool.served == 0
    await assert_all_gone(executor, "ada", "bob")


@needs_root
def test_warm_processes_of_an_event_loop_that_ended_are_never_used_and_are_stopped(settings, place):
    executor = LocalExecutor(**settings)
    assert asyncio.run(executor.prewarm("eve", profile(), wait=True)) == 1
    [old] = warm_of(executor, "eve")

    notebook = write_notebook(place / "new-loop.ipynb", KERNEL_CELL, FACTS_CELL_NO_PARAMS)
    spec = spec_for(place, notebook, "new-loop", owner="eve")
    report, _, handed_over = asyncio.run(execute(executor, spec))
    assert report.status == RunStatus.SUCCEEDED, report.reason
    assert facts_of(spec)["cgroup"] == f"/{CGROUP_PARENT}/{spec.name}"  # cold
    assert executor.pool.served == 0

    async def in_a_third_loop():
        assert await executor.prewarm("eve", profile(), wait=True) == 1  # stops the old first
        assert old not in cgroups() and old not in warm_of(executor, "eve")
        await assert_all_gone(executor, "eve")

    asyncio.run(in_a_third_loop())


async def test_nothing_is_pooled_when_the_pool_is_off_or_the_profile_has_gpus(tmp_path):
    executor = LocalExecutor(environments_dir=str(tmp_path), warm_pool_size=0)
    assert await executor.prewarm("ada", profile()) == 0
    executor.warm_pool_size = 1
    assert await executor.prewarm("ada", profile(gpu=1)) == 0
    assert await executor.prewarm("ada", profile(environment="nowhere")) == 0  # not built
    assert executor.pool.total == 0
    await executor.close()


# ----------------------------------------------------------- the protocol

#: Values that would break any hand-made quoting.
NASTY = {
    "QUOTES": "x'); import os; os.system('touch /tmp/pwned'); ('",
    "TRIPLE": "\"\"\"'''\\",
    "LINES": "a\nb\r\n\u2028c",
    "NUL_ISH": "\x01\x7f é 😀",
    "BRACES": "{x} {{y}}",
}


def test_the_kernel_preamble_is_data_only_and_sets_exactly_the_values(tmp_path):
    code = kernel_preamble(NASTY, str(tmp_path / "it's {here}"))
    (tmp_path / "it's {here}").mkdir()
    probe = code + "import json, os\nprint(json.dumps([dict(os.environ), os.getcwd()]))"
    PWNED.unlink(missing_ok=True)
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env={}
    )
    env, cwd = json.loads(out.stdout)
    assert {k: env[k] for k in NASTY} == NASTY
    assert cwd == str(tmp_path / "it's {here}")
    assert not PWNED.exists()
    with pytest.raises(TypeError):
        kernel_preamble({"A": 1}, "/")


def test_the_request_line_reads_back_and_bad_requests_are_refused():
    line = request_line(
        input="/i.ipynb", output="/o.ipynb", parameters_file="/p", cwd="/", env=NASTY
    )
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert parse_request(line.rstrip(b"\n"))["env"] == NASTY
    for bad in (
        b"[]",
        b'{"input": 1, "output": "/o", "parameters_file": "/p", "cwd": "/", "env": {}}',
        b'{"input": "/i", "output": "/o", "parameters_file": "/p", "cwd": "/", "env": {"A": 1}}',
        b'{"input": "/i", "output": "/o", "parameters_file": "/p", "cwd": "/", "env": {},'
        b' "execution_timeout": -1}',
    ):
        with pytest.raises(ValueError):
            parse_request(bad)
