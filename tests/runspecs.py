"""Runs for the tests of the scheduler's executors: specs, notebooks, what a run must see.

The local executor's tests (and the warm pool's) build :class:`RunSpec` objects with
:func:`spec_for`, notebooks with :func:`write_notebook` (often with :data:`FACTS_CELL`,
which records what the run saw from inside), and pass :data:`PARAMETERS` and
:data:`SECRETS`. The Kubernetes Job tests (and the privacy and secrets tests, which read
the manifests) use :data:`KUBE_PROFILES`, :data:`SETTINGS` and :func:`kube_spec`.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import nbformat

from hub_ext.profiles.loader import parse_profiles
from hub_ext.profiles.model import Profile
from hub_ext.services.scheduler.executors import RunReport, RunSpec
from hub_ext.services.scheduler.executors.kube_manifests import JobSettings

PWNED = Path("/tmp/pwned")  # noqa: S108 - the file the injection string would create

#: Every kind of value a parameter can be, with the ones that break naive quoting.
PARAMETERS = {
    "text": "x'); import os; os.system('touch /tmp/pwned'); ('",
    "count": 2**70,
    "ratio": 1e-05,
    "flag": True,
    "nothing": None,
    "items": [1, "two", 3.5, False, None, "2024-01-01", "yes", "1e3"],
    "mapping": {"nested": {"a": [1e300, -0.0]}, "quote": "\"\\'\n\t{x}", "null": "null"},
    "unicode": "é 😀 \u2028 \x00",
}

#: Hub-side secrets a run must never see (SECURITY rule 8).
SECRETS = {
    "JUPYTERHUB_API_TOKEN": "hub-secret-token-0123456789",
    "SHIPYARD_TRACKING_DB_URL": "postgresql://admin:db-secret-password@db/tracking",
}

#: What the service hands a run: the owner's own tracking settings.
EXTRA_ENV = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9/services/tracking"}

MLFLOW_RUN_ID = "0123456789abcdef0123456789abcdef"

FACTS_CELL = textwrap.dedent(
    """\
    import json, os, sys

    def memory_cgroup():
        lines = [line.split(":", 2) for line in open("/proc/self/cgroup").read().splitlines()]
        for _, controllers, path in lines:
            if "memory" in controllers.split(","):
                return path, open(f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes").read().strip()
        for _, controllers, path in lines:
            if controllers == "":
                return path, open(f"/sys/fs/cgroup{path.rstrip('/')}/memory.max").read().strip()

    def opens(*paths):
        found = {}
        for p in paths:
            try:
                open(p, "rb").close()
                found[p] = "ok"
            except OSError as e:
                found[p] = e.errno
        return found

    path, limit = memory_cgroup()
    facts = {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "cgroup": path,
        "mem_limit": limit,
        "executable": sys.executable,
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "params": {name: repr(globals()[name]) for name in PARAMETER_NAMES},
        "devices": opens("/dev/null", "/dev/fuse"),
    }
    json.dump(facts, open("facts.json", "w"))
    """
)


def write_notebook(path: Path, *sources: str, parameters: str | None = None) -> Path:
    """A notebook of code cells (markdown when a source starts with '#md'); tagged parameters first."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    if parameters is not None:
        cell = nbformat.v4.new_code_cell(parameters)
        cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    for source in sources:
        if source.startswith("#md "):
            nb.cells.append(nbformat.v4.new_markdown_cell(source[4:]))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(source))
    nbformat.write(nb, path)
    return path


def facts_notebook(path: Path, facts_cell: str, *before: str) -> Path:
    """A notebook that records what it saw (``facts_cell``, after ``before``) with every
    kind of parameter, and writes :data:`MLFLOW_RUN_ID` to the run's result file."""
    from hub_ext.services.scheduler.executors.base import RESULT_FILE_ENV

    return write_notebook(
        path,
        *before,
        f"PARAMETER_NAMES = {sorted(PARAMETERS)!r}",
        facts_cell,
        "import json, os\n"
        f"json.dump({{'mlflow_run_id': {MLFLOW_RUN_ID!r}}}, "
        f"open(os.environ[{RESULT_FILE_ENV!r}], 'w'))",
        parameters="\n".join(f"{name} = None" for name in PARAMETERS),
    )


def profile(**fields) -> Profile:
    values = {"slug": "tiny", "display_name": "Tiny", "cpu_limit": "1", "mem_limit": "384Mi"}
    values.update(fields)
    return Profile(**values)


def spec_for(place: Path, notebook: Path | None, run_id: str, **kwargs) -> RunSpec:
    values = {
        "run_id": run_id,
        "job_id": "job-1",
        "owner": "ada",
        "notebook": notebook or place / "n.ipynb",
        "profile": profile(),
        "timeout": 60,
        "output_dir": place / run_id / "out",
        "log_path": place / run_id / "log.txt",
    }
    values.update(kwargs)
    return RunSpec(**values)


def running(pid: int) -> bool:
    """True unless ``pid`` is gone or a zombie (dead, only waiting for init to reap it)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def output_cells(report: RunReport) -> list[dict]:
    return json.loads(report.outputs["ipynb"].read_text())["cells"]


# -------------------------------------------------------------- Kubernetes

PROFILES_YAML = textwrap.dedent(
    """\
    profiles:
      - slug: small
        display_name: Small
        default: true
        cpu_guarantee: 250m
        cpu_limit: 1
        mem_guarantee: 512Mi
        mem_limit: 2Gi
      - slug: gpu
        display_name: GPU
        environment: pytorch
        cpu_limit: 4
        mem_limit: 16Gi
        gpu: 2
        kubernetes:
          node_selector:
            cloud.google.com/gke-accelerator: nvidia-tesla-t4
          tolerations:
            - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
      - slug: batch
        display_name: Batch
        mem_limit: 1G
        kubernetes:
          kubespawner_override:
            image: registry.example.org/batch:1.2
            priority_class_name: shipyard-batch
            environment: {OMP_NUM_THREADS: "2"}
    """
)
KUBE_PROFILES = parse_profiles(PROFILES_YAML).profiles
DATA = Path("/srv/shipyard")
SETTINGS = JobSettings(
    namespace="jobs",
    image_template="registry.example.org/shipyard-{environment}:2026.11",
    env_digest="sha256:" + "ab" * 32,
    volumes=({"name": "data", "persistentVolumeClaim": {"claimName": "shipyard-data"}},),
    volume_mounts=({"name": "data", "mountPath": str(DATA)},),
)


def kube_spec(profile: Profile, **fields) -> RunSpec:
    values = {
        "run_id": "3F2A9C-Run",
        "job_id": "nightly report",
        "owner": "Ada.Lovelace@example.org",
        "notebook": DATA / "snapshots" / "report.ipynb",
        "profile": profile,
        "timeout": 3600.5,
        "output_dir": DATA / "runs" / "3f2a9c" / "out",
        "log_path": DATA / "runs" / "3f2a9c" / "log.txt",
        "parameters": PARAMETERS,
        "extra_env": {
            "MLFLOW_TRACKING_URI": "http://hub/services/tracking",
            "MLFLOW_TRACKING_TOKEN": "t0k",
        },
    }
    values.update(fields)
    return RunSpec(**values)
