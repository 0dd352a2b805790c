"""Lineage: what a ``%%track`` run records about where and how its cell ran.

A run should be explainable and repeatable months later, so ``%%track`` records what people
forget to write down: the notebook (its path, and a copy as saved when the cell started), the
cell's source, papermill's parameters, the git commit and whether the code differed from it,
the installed packages and their digest, the Python version, and the profile and environment
the platform set. All of it is read from the kernel (its history, working directory,
environment and ``sys.path``), never from the server, so it lives apart from
:mod:`server_ext.clients.tracking.client`; the magics only pass it on in a
:class:`~server_ext.clients.tracking.client.RunPlan`. :class:`KernelRuns` remembers which run
of this kernel trained a model, for the lineage ``%deploy`` records.

Each reader degrades to recording less, never to failing the cell: no notebook, no repository,
no git, or no papermill cell just leaves that part out. Rejected alternative: reading papermill's
parameters from the notebook file, which may hold a stale injected cell and which cannot be
found under papermill at all (see :func:`papermill_parameters`).
"""

from __future__ import annotations

import ast
import contextlib
import functools
import getpass
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from .client import MAX_PARAM_VALUE

#: Environment variables the platform sets in kernels, and the tags they become.
ENV_TAGS = {
    "SHIPYARD_PROFILE": "shipyard.profile",
    "SHIPYARD_ENV": "shipyard.env",
    "SHIPYARD_ENV_DIGEST": "shipyard.env_digest",
}
#: papermill's Python translator starts the cell it injects with this comment.
PAPERMILL_MARKER = "# Parameters"


def papermill_parameters(shell) -> dict[str, str]:
    """The variables papermill injected, from this kernel's history.

    papermill puts its parameters in a cell tagged ``injected-parameters`` whose source starts
    with ``# Parameters`` followed by ``name = literal`` lines. The kernel's history says which
    of those ran in *this* kernel; the notebook file may hold a stale one from an earlier
    papermill run, and under papermill there is no ``JPY_SESSION_NAME`` to find the file by.
    The last such cell wins. Values are recorded as papermill wrote them: strings as they
    are, other literals as their ``repr``.
    """
    for source in reversed(shell.history_manager.input_hist_raw):
        if source.lstrip().split("\n", 1)[0].strip() == PAPERMILL_MARKER:
            return _assignments(source)
    return {}


def _assignments(source: str) -> dict[str, str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if not isinstance(target, ast.Name):
                continue
            try:
                value = ast.literal_eval(node.value)
                text = value if isinstance(value, str) else repr(value)
            except ValueError:
                text = ast.get_source_segment(source, node.value) or ""
            found[target.id] = text[:MAX_PARAM_VALUE]
    return found


def notebook_path() -> Path | None:
    """The notebook this kernel runs, from ``JPY_SESSION_NAME`` (jupyter-server sets it)."""
    name = os.environ.get("JPY_SESSION_NAME")
    if not name:
        return None
    path = Path(name)
    for candidate in (path, Path.cwd() / path, Path.cwd() / path.name):
        if candidate.suffix == ".ipynb" and candidate.is_file():
            return candidate.resolve()
    return None


def installed_packages() -> list[str]:
    """``name==version`` of every installed distribution, sorted (what the digest covers).

    Reading every distribution's metadata takes a few hundred milliseconds, so the list is
    cached until a directory on ``sys.path`` changes (``%pip install`` adds one to it).
    """
    state = []
    for entry in sys.path:
        with contextlib.suppress(OSError):
            state.append((entry, os.stat(entry or ".").st_mtime_ns))
    return list(_distributions(tuple(state)))


@functools.lru_cache(maxsize=1)
def _distributions(path_state: tuple) -> tuple[str, ...]:
    found = set()
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.add(f"{name.lower().replace('_', '-')}=={dist.version}")
    return tuple(sorted(found))


def git_tags(directory: Path) -> dict[str, str]:
    """Commit and dirty state of the repository holding ``directory``; empty if none."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        # Untracked files (data, outputs) do not make the code differ from the commit.
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"mlflow.source.git.commit": commit, "shipyard.git.dirty": str(dirty).lower()}


@functools.cache
def _account() -> str:
    """The kernel's account name (a password-database lookup, so once per kernel)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


@functools.lru_cache(maxsize=4)
def _digest(packages: tuple[str, ...]) -> str:
    return "sha256:" + hashlib.sha256("\n".join(packages).encode()).hexdigest()


def git_directory(notebook: Path | None) -> Path:
    """Where the code of a run lives: the notebook's folder, or the working directory."""
    return notebook.parent if notebook else Path.cwd()


def lineage_tags(notebook: Path | None, packages: list[str], git: bool = True) -> dict[str, str]:
    """Tags saying who ran what, where, with which code and packages.

    ``git=False`` leaves out the commit and dirty state (:func:`git_tags`, two ``git``
    processes), for a caller that reads them apart, off its critical path.
    """
    tags = {
        "mlflow.user": os.environ.get("JUPYTERHUB_USER") or _account(),
        "mlflow.source.type": "NOTEBOOK",
        "shipyard.packages_digest": _digest(tuple(packages)),
        "shipyard.python": sys.version.split()[0],
    }
    if notebook:
        tags["mlflow.source.name"] = str(notebook)
    for variable, tag in ENV_TAGS.items():
        if os.environ.get(variable):
            tags[tag] = os.environ[variable]
    if git:
        tags.update(git_tags(git_directory(notebook)))
    return tags


def snapshot(
    notebook: Path | None, source: str, packages: list[str]
) -> tuple[dict[str, Path], dict[str, str]]:
    """The artifacts a run keeps: the notebook as saved, the cell's source, the package list.

    Returns the files to copy into the spool when the cell starts (by artifact name) and the
    texts to write there (by artifact name).
    """
    files = {f"notebook/{notebook.name}": notebook} if notebook else {}
    texts = {"cell.py": source, "packages.txt": "\n".join(packages) + "\n"}
    return files, texts


#: Set by Shipyard's scheduler for a scheduled run: where to say which MLflow run it logged.
JOB_RESULT_FILE_ENV = "SHIPYARD_JOB_RESULT_FILE"


def report_to_job(run_id: str | None) -> None:
    """Tell a scheduled job which MLflow run this notebook logged (``{"mlflow_run_id": …}``).

    The scheduler's executors read the file after the notebook ends and record the
    run id with the job's run; outside a scheduled job the variable is unset and
    nothing is written. A file that cannot be written costs the job its link to
    MLflow, never the cell.
    """
    path = os.environ.get(JOB_RESULT_FILE_ENV)
    if not path or not run_id:
        return
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"mlflow_run_id": run_id}, f)
    except OSError:
        pass


@dataclass
class KernelRuns:
    """The runs this kernel made: where the source run of a deployed model comes from.

    ``last_tracked_run`` is the newest ``%%track`` run; ``deploy_runs`` are the runs
    ``%deploy`` logged models in, which are never a model's source. A ``%%track`` run is
    created in the background, so its id is asked for (``resolve_tracked()``, which
    waits while the server answers) only when something needs it.
    """

    resolve_tracked: Callable[[], str | None] | None = None
    deploy_runs: set[str] = field(default_factory=set)
    _last_known: str | None = None

    @property
    def last_tracked_run(self) -> str | None:
        """The id of the newest ``%%track`` run (or of the newest whose id is known)."""
        if self.resolve_tracked is not None:
            run_id = self.resolve_tracked()
            if run_id is None:
                return self._last_known
            self._last_known, self.resolve_tracked = run_id, None
        return self._last_known

    def source_run(self) -> str | None:
        """The run that trained a model of this kernel: the last ``%%track`` or mlflow run."""
        if self.last_tracked_run:
            return self.last_tracked_run
        import mlflow
        from mlflow.exceptions import MlflowException

        try:
            last = mlflow.last_active_run()
        except MlflowException:
            # the run is gone, or not this user's any more (deleted, another tracking
            # server or token): the model is deployed without a source run, not refused
            return None
        if last is not None and last.info.run_id not in self.deploy_runs:
            return last.info.run_id
        return None
