"""Executors: real papermill runs as a test account in a cgroup; valid Kubernetes Jobs.

The local runs use the real ``base`` environment and real kernels. Each run's
notebook checks its own situation from inside (uid, cgroup, memory limit,
interpreter, environment) and writes what it saw to ``facts.json`` in its
working directory, so a failure shows the values, not just "False".

The Kubernetes Jobs are built for every profile of a small profiles file and
validated against the newest schema kubernetes-validate ships, as
test_kubespawner.py does for pods. A live run needs a cluster: it is skipped
unless KUBECONFIG is set.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from hub_ext.host.k8s import KubePlacement
from hub_ext.host.slugs import account_name, user_slug
from hub_ext.host.usage import UsageLedger
from hub_ext.profiles.model import GPU_RESOURCE
from hub_ext.profiles.quantities import parse_memory
from hub_ext.services.scheduler.executors import (
    Executor,
    ExecutorError,
    RunReport,
    RunSpec,
)
from hub_ext.services.scheduler.executors.base import (
    RESULT_FILE_ENV,
    ProgressParser,
    RunLog,
    cell_error,
    papermill_args,
    papermill_cell_count,
    parameters_yaml,
    read_user_file,
)
from hub_ext.services.scheduler.executors.kube_manifests import (
    JOB_LABEL,
    PARAMETERS_ANNOTATION,
    RUN_LABEL,
    env_secret_manifest,
    job_manifest,
    job_outcome,
)
from hub_ext.services.scheduler.executors.kubernetes import KubernetesExecutor
from hub_ext.services.scheduler.executors.local import PASSED_THROUGH, LocalExecutor
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
from .manifests import validated
from .runspecs import (
    DATA,
    EXTRA_ENV,
    FACTS_CELL,
    KUBE_PROFILES,
    MLFLOW_RUN_ID,
    PARAMETERS,
    PWNED,
    SECRETS,
    SETTINGS,
    facts_notebook,
    kube_spec,
    output_cells,
    profile,
    running,
    spec_for,
    write_notebook,
)
from .traitdocs import help_problem

ACCOUNT_PREFIX = tagged("syexec-")
CGROUP_PARENT = tagged("shipyard-test-exec")
# ------------------------------------------------------------------ helpers


def run(executor: Executor, spec: RunSpec, progress=None) -> tuple[RunReport, list, float]:
    """Execute ``spec`` in a fresh event loop; return the report, progress events, seconds."""
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
    """No process of the owner's account and no cgroup of the run is left."""
    uid = pwd.getpwnam(account_name(spec.owner, ACCOUNT_PREFIX)).pw_uid
    assert [pid for pid in processes_of(uid) if running(pid)] == []
    assert [d for d in cgroup_dirs(CGROUP_PARENT) if d.name == spec.name] == []


# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def place():
    """A world-traversable folder for snapshots and outputs (pytest's tmp is 0700)."""
    path = session_folder("exec-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def executor(home_root, base_env):
    executor = LocalExecutor(
        system_user_prefix=ACCOUNT_PREFIX,
        home_dir_template=str(home_root / "{account}"),
        cgroup_parent=CGROUP_PARENT,
        environments_dir=str(TEST_ENVS_DIR),
        gpu_devices=[],
    )
    yield executor
    remove_test_accounts(ACCOUNT_PREFIX)
    remove_cgroups(CGROUP_PARENT)


@pytest.fixture(scope="module")
def identity(executor, place):
    """One successful run, with parameters and HTML, while the service holds hub secrets."""
    notebook = facts_notebook(place / "identity.ipynb", FACTS_CELL, "#md # Who am I?")
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
        report, events, _ = run(executor, spec)
    facts = json.loads((spec.output_dir / "facts.json").read_text())
    return spec, report, events, facts


# ------------------------------------------------------------ local: a good run


@needs_root
def test_a_run_succeeds_with_its_outputs_digest_and_mlflow_run(identity, base_env):
    spec, report, _, _ = identity
    assert report.status == RunStatus.SUCCEEDED, f"{report.reason}\n{spec.log_path.read_text()}"
    assert report.reason == "" and report.error is None
    assert report.outputs == {
        "ipynb": spec.output_dir / "identity.ipynb",
        "html": spec.output_dir / "identity.html",
    }
    assert report.env_digest == base_env.digest
    assert report.mlflow_run_id == MLFLOW_RUN_ID
    assert report.log_path == spec.log_path
    assert "Executing Cell 1---" in spec.log_path.read_text()


@needs_root
def test_the_notebook_runs_as_its_owner_in_its_cgroup_on_the_environment(identity, base_env):
    spec, _, _, facts = identity
    account = pwd.getpwnam(account_name("ada", ACCOUNT_PREFIX))
    assert account.pw_name == ACCOUNT_PREFIX + "ada"  # the spawner's naming
    assert (facts["uid"], facts["gid"]) == (account.pw_uid, account.pw_gid)
    assert facts["cgroup"] == f"/{CGROUP_PARENT}/job-identity"
    assert int(facts["mem_limit"]) == parse_memory("384Mi")
    assert facts["executable"].startswith(str(base_env.path) + "/")
    assert facts["cwd"] == str(spec.output_dir)
    assert spec.output_dir.stat().st_uid == account.pw_uid


@needs_root
def test_the_runs_cgroup_is_labelled_in_the_usage_ledger_with_its_last_reading(identity, executor):
    """Usage accounting (docs/observability.md): the run's cgroup was recorded as the run's
    when it was made, and its final counters when it was removed."""
    spec, _, _, _ = identity
    ledger = UsageLedger(executor.local_host.usage_dir)
    (record,) = [r for _, r in ledger.records([CGROUP_PARENT]) if r["cgroup"] == spec.name]
    assert (record["kind"], record["owner"], record["object"]) == (
        "run",
        spec.owner,
        f"job/{spec.job_id}/run/{spec.run_id}",
    )
    assert record["profile"] == spec.profile.slug
    assert record["mem_limit"] == parse_memory("384Mi")
    assert record["final"] is not None and record["final"]["cpu_usec"] > 0


@needs_root
@pytest.mark.ci_may_skip("a host whose kernel filters no devices (no v1 devices, no cgroup BPF)")
def test_the_run_opens_only_the_standard_devices(identity, executor):
    """The run's cgroup has the device filter (#14, point 9): no GPU, nor /dev/fuse (rw-rw-rw-)."""
    if not executor.driver.filters_devices or not Path("/dev/fuse").exists():
        pytest.skip("this host's cgroup driver filters no devices, or has no /dev/fuse")
    _, _, _, facts = identity
    assert facts["devices"] == {"/dev/null": "ok", "/dev/fuse": 1}  # EPERM


@needs_root
def test_parameters_arrive_typed_and_exact_and_run_nothing(identity):
    spec, _, _, facts = identity
    assert facts["params"] == {name: repr(value) for name, value in PARAMETERS.items()}
    assert not PWNED.exists()
    injected = next(
        c
        for c in output_cells(identity[1])
        if "injected-parameters" in c["metadata"].get("tags", [])
    )
    # inside a string literal, as data
    assert "text = \"x'); import os; os.system(" in "".join(injected["source"])


@needs_root
def test_progress_arrives_for_every_cell_in_order(identity):
    _, report, events, _ = identity
    count = len(output_cells(report))  # markdown, parameters, injected, 3 code cells
    assert count == 6
    assert events == [(i, count) for i in range(count)]


@needs_root
def test_html_is_the_executed_notebook(identity):
    _, report, _, _ = identity
    html = report.outputs["html"].read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and "Who am I?" in html
    assert "PARAMETER_NAMES" in html


@needs_root
def test_the_run_sees_no_hub_secret_only_what_it_needs(identity, base_env):
    spec, report, _, facts = identity
    env = facts["env"]
    for name, value in SECRETS.items():
        assert name not in env
        assert value not in json.dumps(env)
        assert value not in spec.log_path.read_text()
        assert value not in report.outputs["ipynb"].read_text()
    # nothing of the service's environment reaches the run but locale and time zone
    same = {k for k, v in env.items() if os.environ.get(k) == v}
    assert same <= {*PASSED_THROUGH, "SHELL", "PYTHONUNBUFFERED"}, same
    account = pwd.getpwnam(account_name("ada", ACCOUNT_PREFIX))
    assert env["HOME"] == account.pw_dir and env["USER"] == account.pw_name
    assert env["SHIPYARD_ENV"] == "base"
    assert env["SHIPYARD_ENV_DIGEST"] == base_env.digest
    assert env["SHIPYARD_PROFILE"] == "tiny"
    assert env["SHIPYARD_RUN_ID"] == "identity" and env["SHIPYARD_JOB_ID"] == "job-1"
    assert env["MLFLOW_TRACKING_URI"] == EXTRA_ENV["MLFLOW_TRACKING_URI"]
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert env["PATH"].split(os.pathsep)[0] == str(base_env.bin)


# --------------------------------------------------------- local: bad endings


@needs_root
def test_a_failing_cell_is_reported_as_papermill_reports_it(executor, place):
    notebook = write_notebook(
        place / "failing.ipynb",
        "print('before')",
        "raise ValueError(f'bad {x}')",
        "print('never')",
        parameters="x = 1",
    )
    spec = spec_for(place, notebook, "failing", parameters={"x": 7}, output_formats=("html",))
    report, events, _ = run(executor, spec)

    assert report.status == RunStatus.FAILED
    # parameters (0), injected (1), print (2), raise (3)
    assert (report.error.cell_index, report.error.ename, report.error.evalue) == (
        3,
        "ValueError",
        "bad 7",
    )
    assert report.error.execution_count == 4
    assert "ValueError: bad 7" in report.error.traceback[-1]
    assert report.reason == "Cell 3 raised ValueError: bad 7"
    assert events == [(i, 5) for i in range(4)]  # the cell after the failure never started
    # papermill saved the failing notebook before reporting; no HTML of a failed run
    assert set(report.outputs) == {"ipynb"}
    cells = output_cells(report)
    assert any(o.get("ename") == "ValueError" for c in cells for o in c.get("outputs", []))
    assert "".join(cells[-1]["source"]) == "print('never')" and cells[-1]["outputs"] == []
    assert_gone(spec)


@needs_root
def test_a_run_past_its_timeout_is_killed_with_everything_it_started(executor, place):
    notebook = write_notebook(
        place / "sleepy.ipynb",
        # a process in a new session, which a process-group kill would miss
        "import subprocess\nsubprocess.Popen(['sleep', '300'], start_new_session=True)",
        "import time\ntime.sleep(300)",
    )
    spec = spec_for(place, notebook, "sleepy", owner="tim", timeout=8)
    report, events, seconds = run(executor, spec)

    assert report.status == RunStatus.TIMED_OUT, report.reason
    assert report.reason == "Stopped after the job's timeout of 8 seconds."
    assert 8 <= seconds < 8 + 10
    assert events[-1] == (1, 2)  # the sleeping cell had started
    assert "ipynb" in report.outputs  # papermill saves as cells start: a partial notebook
    assert_gone(spec)


@needs_root
def test_a_run_past_its_memory_limit_is_killed_alone(executor, place):
    notebook = write_notebook(
        place / "greedy.ipynb",
        "print('starting')",
        "block = b'x' * (600 * 2**20)",
        "print('survived')",
    )
    spec = spec_for(place, notebook, "greedy", owner="meg", profile=profile(mem_limit="256Mi"))
    report, _, seconds = run(executor, spec)

    assert report.status == RunStatus.FAILED, report.reason
    assert report.reason == (
        "Cell 1: A process of the run was killed for using more than the profile's memory "
        "limit of 256 MiB (the kernel died)."
    )
    assert (report.error.cell_index, report.error.ename) == (1, "DeadKernelError")
    assert seconds < 40
    # the service (this process) lives on, outside the run's cgroup
    assert f"/{CGROUP_PARENT}/" not in Path("/proc/self/cgroup").read_text()
    assert_gone(spec)


@needs_root
def test_cancel_kills_the_run(executor, place):
    notebook = write_notebook(place / "cancel.ipynb", "import time\ntime.sleep(300)")
    spec = spec_for(place, notebook, "cancel", owner="cal")

    async def cancel_when_sleeping(index, count):
        if index == 0:
            asyncio.get_running_loop().call_later(
                1, asyncio.ensure_future, executor.cancel("cancel")
            )

    report, _, seconds = run(executor, spec, cancel_when_sleeping)
    assert report.status == RunStatus.CANCELLED
    assert seconds < 20
    assert_gone(spec)
    asyncio.run(executor.cancel("cancel"))  # a finished run: nothing to do


def test_an_unbuilt_environment_is_refused_before_anything_runs(place, tmp_path):
    notebook = write_notebook(place / "unbuilt.ipynb", "1")
    executor = LocalExecutor(environments_dir=str(tmp_path))
    spec = spec_for(place, notebook, "unbuilt", profile=profile(environment="nowhere"))
    with pytest.raises(ExecutorError, match="shipyard env build nowhere"):
        asyncio.run(executor.execute(spec, lambda i, n: None))


# ------------------------------------------------------------ spec and helpers


@pytest.mark.parametrize(
    "parameters, message",
    [
        ({"x = 1\nimport os; os.system('id')\ny": 1}, "not a Python identifier"),
        ({"class": 1}, "not a Python identifier"),
        ({"1x": 1}, "not a Python identifier"),
        ({"x": {1, 2}}, r"parameter x is a set"),
        ({"x": b"bytes"}, "is a bytes"),
        ({"x": {"a": [object()]}}, r"parameter x\['a'\]\[0\] is a object"),
        ({"x": {1: "a"}}, "keys must be strings"),
        ({"x": "\ud800"}, "lone surrogate"),
    ],
)
def test_parameters_must_be_data(place, parameters, message):
    with pytest.raises(ValueError, match=message):
        spec_for(place, place / "n.ipynb", "r", parameters=parameters)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"timeout": float("inf")}, "finite"),
        ({"timeout": 0}, "finite"),
        ({"output_formats": ("pdf",)}, "unknown output formats"),
        ({"notebook": Path("/x/notes.py")}, "not an .ipynb"),
        ({"output_dir": Path("relative")}, "absolute"),
        ({"extra_env": {"BAD NAME": "x"}}, "variable name"),
    ],
)
def test_a_spec_is_checked_when_made(place, fields, message):
    with pytest.raises(ValueError, match=message):
        spec_for(place, fields.pop("notebook", None), "r", **fields)


def test_the_executed_notebook_never_overwrites_the_snapshot(place):
    spec = spec_for(place, place / "out" / "n.ipynb", "r", output_dir=place / "out")
    with pytest.raises(ExecutorError, match="would overwrite"):
        spec.output_paths()
    assert spec_for(place, place / "n.ipynb", "r").output_formats == ("ipynb",)
    assert spec_for(place, place / "n.ipynb", "r", output_formats=["html"]).output_formats == (
        "ipynb",
        "html",
    )


class PapermillLoader(yaml.SafeLoader):
    """papermill.iorw.NoDatesSafeLoader: how papermill reads ``-f`` files."""

    yaml_implicit_resolvers = {
        k: [r for r in v if r[0] != "tag:yaml.org,2002:timestamp"]
        for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


def test_parameters_yaml_reads_back_exactly_where_json_would_not():
    assert yaml.load(parameters_yaml(PARAMETERS), Loader=PapermillLoader) == PARAMETERS
    # the reason for YAML: PyYAML reads JSON's 1e-05 as a string
    assert yaml.load(json.dumps({"r": 1e-05}), Loader=PapermillLoader) == {"r": "1e-05"}


def test_papermill_paths_are_not_format_strings():
    args = papermill_args("/in/{x}.ipynb", "/out/{x}.ipynb", "/p.yaml", "/cwd")
    # papermill calls str.format(**parameters) on both paths
    assert [a.format(x="PARAM") for a in args[:2]] == ["/in/{x}.ipynb", "/out/{x}.ipynb"]
    assert args[2:] == [
        "--parameters_file",
        "/p.yaml",
        "--cwd",
        "/cwd",
        "--log-output",
        "--no-progress-bar",
        "--log-level",
        "INFO",
    ]


def test_progress_lines_are_taken_only_in_order():
    parser = ProgressParser(3)
    lines = [
        "Executing notebook with kernel: python3",
        "Executing Cell 1---------------------------------------",
        "Executing Cell 9---------",  # printed by a cell
        "Ending Cell 1------------------------------------------",
        "  Executing Cell 2---------------------------------------",
        "Executing Cell 2---------------------------------------",
        "Executing Cell 3---------------------------------------",
        "Executing Cell 4---------------------------------------",  # papermill ran one more
    ]
    assert [e for e in map(parser.feed, lines) if e] == [(0, 3), (1, 3), (2, 3), (3, 4)]


def test_cell_count_and_error_follow_papermill():
    def cell(tags=(), outputs=()):
        return {"cell_type": "code", "metadata": {"tags": list(tags)}, "outputs": list(outputs)}

    marker = cell(["papermill-error-cell-tag"])
    error = {
        "output_type": "error",
        "ename": "KeyError",
        "evalue": "'k'",
        "traceback": ["\x1b[31mKeyError\x1b[0m"],
    }
    exit0 = {"output_type": "error", "ename": "SystemExit", "evalue": "0", "traceback": []}
    notebook = {
        "cells": [
            marker,
            cell(["parameters"]),
            cell(),
            marker,
            cell(outputs=[exit0]),
            cell(outputs=[error]),
        ]
    }
    assert papermill_cell_count(notebook, has_parameters=False) == 4
    assert papermill_cell_count(notebook, has_parameters=True) == 5
    with_injected = {"cells": [*notebook["cells"], cell(["injected-parameters"])]}
    assert papermill_cell_count(with_injected, has_parameters=True) == 5
    found = cell_error(notebook)
    assert (found.cell_index, found.ename, found.evalue, found.traceback) == (
        3,
        "KeyError",
        "'k'",
        ("KeyError",),
    )


def test_files_the_user_wrote_are_read_without_following_links(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("root only")
    (tmp_path / "link").symlink_to(secret)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "big").write_bytes(b"x" * 11)
    with pytest.raises(OSError):
        read_user_file(tmp_path / "link", 100)
    with pytest.raises(OSError, match="not a regular file"):
        read_user_file(tmp_path / "fifo", 100)
    with pytest.raises(OSError, match="larger than 10 bytes"):
        read_user_file(tmp_path / "big", 10)
    assert read_user_file(secret, 100) == b"root only"


def test_the_log_is_capped_split_into_lines_and_never_someone_elses_file(tmp_path):
    path = tmp_path / "log.txt"
    path.write_text("an earlier attempt\n")
    log = RunLog(path, limit=60)
    lines = []
    log.on_line = lines.append
    log.write(b"Executing Cell 1---\npartial ")
    log.write(b"line\n" + b"x" * 1000 + b"\nExecuting Cell 2---\n")
    log.close()
    assert lines == ["Executing Cell 1---", "partial line", "Executing Cell 2---"]
    text = path.read_text()
    assert text.startswith("Executing Cell 1---\npartial line\nxxx") and "earlier" not in text
    assert text.endswith("[shipyard] the log is cut here at 60 bytes\n")

    secret = tmp_path / "secret"
    secret.write_text("keep")
    os.link(secret, tmp_path / "hardlink")
    with pytest.raises(ExecutorError, match="not a plain file of its own"):
        RunLog(tmp_path / "hardlink", 100)
    (tmp_path / "symlink").symlink_to(secret)
    with pytest.raises(OSError):
        RunLog(tmp_path / "symlink", 100)
    assert secret.read_text() == "keep"


def test_an_executor_must_implement_the_interface_as_async_methods():
    with pytest.raises(TypeError, match="must be an `async def` instance method"):

        class Sync(Executor):
            def execute(self, spec, progress):  # not async
                pass

            async def cancel(self, run_id):
                pass

    class Half(Executor):
        async def execute(self, spec, progress):
            pass

    with pytest.raises(TypeError, match="abstract method"):
        Half()


@pytest.mark.parametrize("cls", [LocalExecutor, KubernetesExecutor], ids=lambda c: c.__name__)
def test_every_executor_trait_has_help(cls):
    for name, trait in cls.class_own_traits(config=True).items():
        assert help_problem(trait) is None, f"{cls.__name__}.{name} {help_problem(trait)}"


# -------------------------------------------------------------- Kubernetes

EXPECTED_RESOURCES = {
    "small": {
        "requests": {"cpu": "250m", "memory": str(512 * 2**20)},
        "limits": {"cpu": "1", "memory": str(2 * 2**30)},
    },
    "gpu": {
        "requests": {GPU_RESOURCE: "2"},
        "limits": {"cpu": "4", "memory": str(16 * 2**30), GPU_RESOURCE: "2"},
    },
    "batch": {"limits": {"memory": "1000000000"}},
}


@pytest.mark.parametrize("profile", KUBE_PROFILES, ids=lambda p: p.slug)
@pytest.mark.parametrize("formats", [("ipynb",), ("ipynb", "html")], ids=["ipynb", "html"])
def test_job_for_every_profile(profile, formats):
    spec = kube_spec(profile, output_formats=formats)
    job = validated(job_manifest(spec, SETTINGS))
    pod = job["spec"]["template"]["spec"]
    papermill = (pod.get("initContainers") or pod["containers"])[0]
    containers = [*pod.get("initContainers", []), *pod["containers"]]

    assert job["metadata"]["name"] == "job-" + user_slug("3F2A9C-Run")
    assert job["metadata"]["namespace"] == "jobs"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 3601
    assert job["spec"]["ttlSecondsAfterFinished"] == SETTINGS.ttl_seconds_after_finished
    labels = {
        "app.kubernetes.io/managed-by": "shipyard",
        "app.kubernetes.io/component": "scheduled-run",
        "shipyard.io/user": user_slug("Ada.Lovelace@example.org"),
        JOB_LABEL: user_slug("nightly report"),
        RUN_LABEL: user_slug("3F2A9C-Run"),
        "shipyard.io/profile": profile.slug,
    }
    assert job["metadata"]["labels"] == labels == job["spec"]["template"]["metadata"]["labels"]
    assert job["metadata"]["annotations"]["shipyard.io/owner"] == "Ada.Lovelace@example.org"

    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"] == {"fsGroup": 100}
    assert pod.get("nodeSelector", {}) == profile.kubernetes.node_selector
    assert pod.get("tolerations", []) == [
        t.model_dump(exclude_none=True) for t in profile.kubernetes.tolerations
    ]
    override = profile.kubernetes.kubespawner_override
    assert pod.get("priorityClassName") == override.get("priority_class_name")
    for container in containers:
        assert container["resources"] == EXPECTED_RESOURCES[profile.slug]
        assert container["securityContext"] == {
            "runAsUser": 1000,
            "runAsGroup": 100,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        assert container["image"] == override.get(
            "image", f"registry.example.org/shipyard-{profile.environment}:2026.11"
        )
        assert container["workingDir"] == str(spec.output_dir)
        assert {"name": "data", "mountPath": str(DATA)} in container["volumeMounts"]

    # papermill reads the parameters from the downward-API file of the pod's annotation
    assert papermill["command"] == ["python", "-m", "papermill"]
    assert papermill["args"] == papermill_args(
        spec.notebook,
        spec.output_dir / "report.ipynb",
        "/etc/shipyard/parameters.yaml",
        spec.output_dir,
    )
    annotation = job["spec"]["template"]["metadata"]["annotations"][PARAMETERS_ANNOTATION]
    assert yaml.load(annotation, Loader=PapermillLoader) == PARAMETERS
    volume = next(v for v in pod["volumes"] if v["name"] == "shipyard-parameters")
    assert volume["downwardAPI"]["items"] == [
        {
            "path": "parameters.yaml",
            "fieldRef": {"fieldPath": f"metadata.annotations['{PARAMETERS_ANNOTATION}']"},
        }
    ]
    assert "os.system" not in json.dumps(papermill["args"])

    if "html" in formats:  # nbconvert only after papermill succeeded
        assert [c["name"] for c in containers] == ["papermill", "nbconvert"]
        assert pod["containers"][0]["args"][-1] == str(spec.output_dir / "report.ipynb")
    else:
        assert [c["name"] for c in containers] == ["papermill"]

    env = {e["name"]: e for e in papermill["env"]}
    assert env["SHIPYARD_ENV"]["value"] == profile.environment
    assert env["SHIPYARD_ENV_DIGEST"]["value"] == SETTINGS.env_digest
    assert env["SHIPYARD_PROFILE"]["value"] == profile.slug
    assert env[RESULT_FILE_ENV]["value"] == str(spec.output_dir / ".shipyard-result.json")
    # the owner's token sits in a Secret, not in the Job
    assert env["MLFLOW_TRACKING_TOKEN"] == {
        "name": "MLFLOW_TRACKING_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": f"{spec.name}-env", "key": "MLFLOW_TRACKING_TOKEN"}},
    }
    assert "t0k" not in json.dumps(job)
    if profile.slug == "batch":
        assert env["OMP_NUM_THREADS"]["value"] == "2"


def test_the_env_secret_holds_the_extra_environment():
    spec = kube_spec(KUBE_PROFILES[0])
    secret = validated(env_secret_manifest(spec, SETTINGS))
    assert secret["metadata"]["name"] == f"{spec.name}-env"
    assert secret["stringData"] == spec.extra_env
    assert secret["metadata"]["labels"][RUN_LABEL] == user_slug("3F2A9C-Run")
    assert env_secret_manifest(kube_spec(KUBE_PROFILES[0], extra_env={}), SETTINGS) is None


def test_oversized_parameters_are_refused_for_kubernetes():
    # Parameters over the scheduler's bound (64 KiB as JSON) never make a spec; YAML can
    # still be larger than the annotation holds: deep keys are indented on every line.
    with pytest.raises(ValueError, match="larger than 65536 bytes"):
        kube_spec(KUBE_PROFILES[0], parameters={"blob": "x" * 300_000})
    deep: dict = {f"k{i:04d}": 1 for i in range(5000)}
    for _ in range(30):
        deep = {"a": deep}
    spec = kube_spec(KUBE_PROFILES[0], parameters={"deep": deep})
    with pytest.raises(ExecutorError, match="Pass large inputs as files"):
        job_manifest(spec, SETTINGS)


@pytest.mark.parametrize(
    "status, outcome",
    [
        (None, None),
        ({"active": 1}, None),
        ({"conditions": [{"type": "Complete", "status": "True"}]}, ("Complete", "")),
        (
            {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]},
            ("Failed", "DeadlineExceeded"),
        ),
        ({"conditions": [{"type": "Failed", "status": "False"}]}, None),
    ],
)
def test_job_outcome(status, outcome):
    assert job_outcome(status) == outcome


@pytest.mark.ci_may_skip("CI's machines have no Kubernetes cluster")
@pytest.mark.skipif(
    not os.environ.get("KUBECONFIG"),
    reason="needs a Kubernetes cluster: set KUBECONFIG (and SHIPYARD_TEST_K8S_IMAGE) to run a Job",
)
def test_a_job_runs_on_a_live_cluster(tmp_path):  # pragma: no cover - needs a cluster
    """On a one-node cluster (k3s) on this machine: the folder reaches the pod by hostPath."""
    place = Path(tempfile.mkdtemp(prefix="shipyard-k8s-"))
    place.chmod(0o777)
    notebook = write_notebook(place / "live.ipynb", "print(x)", parameters="x = 0")
    spec = spec_for(
        place, notebook, f"live-{os.getpid()}", parameters={"x": 42}, timeout=300, profile=profile()
    )
    spec.output_dir.mkdir(parents=True)
    spec.output_dir.chmod(0o777)
    placement = KubePlacement(
        namespace=os.environ.get("SHIPYARD_TEST_NAMESPACE", "default"),
        image_template=os.environ.get("SHIPYARD_TEST_K8S_IMAGE", "shipyard/{environment}:latest"),
    )
    executor = KubernetesExecutor(
        placement=placement,
        volumes=[{"name": "place", "hostPath": {"path": str(place)}}],
        volume_mounts=[{"name": "place", "mountPath": str(place)}],
    )
    report, events, _ = run(executor, spec)
    assert report.status == RunStatus.SUCCEEDED, report.reason
    assert events[-1][0] == events[-1][1] - 1
    shutil.rmtree(place, ignore_errors=True)
