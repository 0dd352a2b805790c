"""Pipelines from a kernel or a terminal: the steps ``%pipeline`` and ``shipyard pipeline`` share.

The wire calls are :class:`~server_ext.clients.scheduler.client.SchedulerClient`'s; here is
what both callers do with them, so a notebook and a terminal read the same words:

- :func:`pipeline_file`: the ``pipeline.yaml`` to read, relative to the home (the one given,
  else the one beside the kernel's notebook);
- :func:`create_or_update`: ``create`` again after editing the file updates the pipeline made
  from that same file, as ``%schedule`` updates its job; a name taken by a pipeline of
  another file stays the service's 409;
- :func:`run_parameters`: ``k=v`` texts read against the pipeline's declared parameters (the
  service checks only their names, so the types are read here, from each default);
- :func:`run_text` and :func:`pipelines_text`: the tables users read, with each step's state,
  attempt and duration, and what a failed or skipped step says.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .client import SchedulerClient, SchedulerError
from .jobs import current_notebook
from .text import format_time

#: The file ``%pipeline create`` reads when given none: beside the kernel's notebook.
DEFAULT_FILE = "pipeline.yaml"
#: A step's reason is cut to this many characters in a table.
MAX_REASON = 200


def pipeline_file(
    explicit: str | None, namespace: dict | None = None, home: Path | None = None
) -> str:
    """The pipeline file as a path relative to the home, which is what the service reads.

    ``explicit`` is relative to the home (an absolute path inside the home is made
    relative). Without it, ``pipeline.yaml`` in the folder of the notebook the kernel runs.

    Raises
    ------
    SchedulerError
        For an absolute path outside the home, or no path when the kernel's notebook is
        unknown (a terminal, a console).
    """
    home = (home or Path.home()).resolve()
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_absolute():
            return path.as_posix()
        try:
            return path.resolve().relative_to(home).as_posix()
        except ValueError:
            raise SchedulerError(
                f"{explicit} is outside your home {home}: a pipeline file is read from your "
                "home; give its path relative to it, e.g. churn/pipeline.yaml."
            ) from None
    try:
        notebook = current_notebook(None, namespace, home)
    except SchedulerError:
        raise SchedulerError(
            "Cannot tell which folder this kernel's notebook is in: give the pipeline file, "
            "relative to your home, e.g. %pipeline create churn/pipeline.yaml."
        ) from None
    return (Path(notebook).parent / DEFAULT_FILE).as_posix()


@dataclass(frozen=True)
class Created:
    """What :func:`create_or_update` did: the pipeline, and whether it is new."""

    pipeline: dict
    created: bool


def create_or_update(client: SchedulerClient, path: str, user: str | None = None) -> Created:
    """The pipeline of the file at ``path``: a new one, or the caller's from that file, re-read.

    ``user`` is whose pipelines count (default ``$JUPYTERHUB_USER``; an admin lists
    everyone's).
    """
    user = user or os.environ.get("JUPYTERHUB_USER")
    mine = [
        p
        for p in client.list_pipelines()["pipelines"]
        if p["source_path"] == path and (user is None or p["owner"] == user)
    ]
    if mine:
        return Created(client.update_pipeline(mine[0]["id"], path), created=False)
    return Created(client.create_pipeline(path), created=True)


def split_assignments(items: list[str]) -> dict[str, str]:
    """``["rows=5", "region=eu"]`` as ``{"rows": "5", "region": "eu"}``, each name once."""
    texts: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise SchedulerError(
                f"--param {item!r} is not NAME=VALUE: write e.g. --param rows=5 or "
                "--param region=eu."
            )
        if name in texts and texts[name] != value:
            raise SchedulerError(f"--param {name} is given twice with different values.")
        texts[name] = value
    return texts


def run_parameters(pipeline: dict, items: list[str]) -> dict[str, Any]:
    """The ``NAME=VALUE`` texts as values of the pipeline's parameters.

    A parameter whose default is a string takes the text as it is; any other is read as
    JSON (``5``, ``0.5``, ``true``, ``[1, 2]``; Python's ``True``/``False``/``None`` too).
    A name the pipeline does not declare is refused here, with the names it does.
    """
    declared = pipeline.get("parameters") or {}
    values: dict[str, Any] = {}
    for name, text in split_assignments(items).items():
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise SchedulerError(
                f"Pipeline {pipeline['name']!r} has no parameter {name!r} (it declares: "
                f"{known}): add it under parameters: in {pipeline['source_path']}, or leave "
                "it out."
            )
        default = declared[name]
        if isinstance(default, str):
            values[name] = text
            continue
        python = {"True": "true", "False": "false", "None": "null"}
        try:
            values[name] = json.loads(python.get(text.strip(), text))
        except ValueError:
            raise SchedulerError(
                f"--param {name}={text}: {name}'s default is {json.dumps(default)}, so give "
                'a JSON value (5, 0.5, true, [1, 2], "text" in quotes).'
            ) from None
    return values


def duration_text(seconds: float | None) -> str:
    """``4.2s``, ``3m 05s``, ``1h 02m``; empty when unknown."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole // 60 % 60:02d}m"


def step_detail(step: dict) -> str:
    """What a step's row says beyond its state: a reason, else the values it recorded."""
    if step["status"] in ("failed", "skipped", "cancelled") and step.get("reason"):
        return " ".join(step["reason"].split())[:MAX_REASON]
    if step.get("outputs"):
        return ", ".join(f"{k}={json.dumps(v)}" for k, v in step["outputs"].items())[:MAX_REASON]
    return ""


def run_headline(run: dict) -> str:
    """``Pipeline 'churn' run <id>: failed (step fragile failed)``."""
    reason = f" ({run['reason']})" if run.get("reason") and run["status"] != "succeeded" else ""
    repair = f", a repair of {run['repair_of']}" if run.get("repair_of") else ""
    return f"Pipeline {run['pipeline_name']!r} run {run['id']}{repair}: {run['status']}{reason}"


def _columns(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def run_text(run: dict) -> str:
    """The run's headline, then one line per step: state, attempt, duration, detail."""
    rows = [["STEP", "STATE", "ATTEMPT", "DURATION", "DETAIL"]]
    for step in run["steps"]:
        rows.append(
            [
                step["step"],
                step["status"],
                str(step["attempt"] or ""),
                duration_text(step.get("duration_seconds")),
                step_detail(step),
            ]
        )
    return f"{run_headline(run)}\n{_columns(rows)}"


def pipelines_text(pipelines: list[dict], last_runs: dict[str, dict | None]) -> str:
    """One line per pipeline: name, steps, its file, its newest run and that run's id."""
    if not pipelines:
        return (
            "No pipelines yet: write a pipeline.yaml beside its notebooks, then "
            "%pipeline create PATH (or `shipyard pipeline create PATH`)."
        )
    rows = [["NAME", "STEPS", "FILE", "LAST RUN", "LAST RUN ID", "ID"]]
    for p in pipelines:
        run = last_runs.get(p["id"])
        last = f"{run['status']} {format_time(run['ended_at'] or run['created_at'])}" if run else ""
        rows.append(
            [
                p["name"],
                str(len(p["steps"])),
                p["source_path"],
                last,
                run["id"] if run else "",
                p["id"],
            ]
        )
    return _columns(rows)


def last_runs(client: SchedulerClient, pipelines: list[dict]) -> dict[str, dict | None]:
    """Each pipeline's newest run (None when it has not run)."""
    found: dict[str, dict | None] = {}
    for p in pipelines:
        runs = client.pipeline_runs(p["id"])["runs"]
        found[p["id"]] = runs[0] if runs else None
    return found
