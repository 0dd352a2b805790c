"""What ``%lineage`` shows and does: a version's chain as rows, and its reproduction.

The deployer answers the chain (``GET .../versions/{v}/lineage``, one document read as the
user through the tracking service and the scheduler); here it becomes rows, shown as text or
as an escaped HTML table (:func:`lineage_rows`, :func:`lineage_text`, :func:`lineage_html`).

:func:`reproduce` starts a new run of the pipeline the version came from, with the
recorded run's parameters (a fresh run, not a repair: every step runs again), waits for it,
and lines the new results up beside the recorded ones: the metrics of the MLflow run the
deploying step's scheduler run logged, when both have one, else that step's outputs.
Nothing new is needed on the services: the scheduler's ``POST api/pipelines/{id}/runs`` is
the reproduction. A chain that does not reach a pipeline run is refused with what is
missing, as the deployer said it.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..scheduler.client import SchedulerClient
from .client import DeployerError

#: Seconds a reproduction may take by default before ``%lineage --reproduce`` stops waiting.
REPRODUCE_TIMEOUT = 1800.0


def _short(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def lineage_rows(doc: dict) -> list[tuple[str, str]]:
    """``(link, what is known)`` from the deployment version back to the input files."""
    v = doc["version"]
    rows = [
        (
            "deployment version",
            f"{v['owner']}/{v['name']} v{v['version']} ({v['state']}), {v['model_uri']}, "
            f"created {v['created_at']}",
        )
    ]
    mv = doc.get("model_version")
    if mv:
        rows.append(("registered model", f"models:/{mv['name']}/{mv['version']}"))
    run = doc.get("mlflow_run")
    if run:
        rows.append(("MLflow run", f"{run['run_id']} ({run.get('status') or 'unknown'})"))
        if run.get("params"):
            rows.append(("  params", _short(run["params"], 400)))
        if run.get("metrics"):
            rows.append(("  metrics", _short(run["metrics"], 400)))
        for key, label in (
            ("git_commit", "  git commit"),
            ("git_dirty", "  git dirty"),
            ("env", "  environment"),
            ("env_digest", "  environment digest"),
        ):
            if run.get(key):
                rows.append((label, str(run[key])))
        if run.get("cell_source"):
            rows.append(("  cell", _short(run["cell_source"], 400)))
    prun = doc.get("pipeline_run")
    if prun:
        rows.append(
            (
                "pipeline run",
                f"{prun['id']} of {prun['pipeline_name']!r} ({prun['status']}), "
                f"parameters {_short(prun.get('parameters') or {}, 300)}",
            )
        )
        step = prun.get("step")
        if step:
            rows.append(
                (
                    "  step",
                    f"{step['step']} ({step['status']}), outputs "
                    f"{_short(step.get('outputs') or {}, 300)}",
                )
            )
    sched = doc.get("scheduler_run")
    if sched:
        rows.append(
            ("scheduler run", f"{sched['id']} of job {sched['job_id']} ({sched['status']})")
        )
    nb = doc.get("notebook")
    if nb:
        rows.append(
            (
                "notebook",
                f"{nb.get('path') or '(path unknown)'}, digest {nb.get('digest') or 'unknown'}, "
                f"parameters {_short(nb.get('parameters') or {}, 300)}",
            )
        )
    for f in doc.get("inputs") or ():
        rows.append(("input file", f"{f['path']} sha256:{f.get('sha256') or '?'} ({f['source']})"))
    for m in doc.get("missing") or ():
        rows.append((f"missing: {m['link']}", m["reason"]))
    return rows


def lineage_text(doc: dict) -> str:
    """The chain as aligned lines of text."""
    rows = lineage_rows(doc)
    width = max(len(link) for link, _ in rows)
    return "\n".join(f"{link.ljust(width)}  {detail}" for link, detail in rows)


def lineage_html(doc: dict) -> str:
    """The chain as an HTML table; every value escaped (names and paths are users' text)."""
    body = "".join(
        f"<tr><th style='text-align:left'>{html.escape(link)}</th>"
        f"<td style='text-align:left'>{html.escape(detail)}</td></tr>"
        for link, detail in lineage_rows(doc)
    )
    return f"<table class='shipyard-lineage'>{body}</table>"


@dataclass
class Reproduction:
    """A new run of the pipeline, and its results beside the recorded ones."""

    pipeline_run_id: str
    status: str
    compared: str  # "metrics" (the MLflow runs') or "outputs" (the step's values)
    rows: list[tuple[str, Any, Any]] = field(default_factory=list)  # (name, recorded, new)
    reason: str = ""

    def text(self) -> str:
        head = f"Reproduction: pipeline run {self.pipeline_run_id} {self.status}"
        if self.reason:
            head += f" ({self.reason})"
        lines = [head, f"{self.compared}: recorded -> new"]
        lines += [f"  {name}: {_short(old)} -> {_short(new)}" for name, old, new in self.rows]
        return "\n".join(lines)


def cannot_reproduce(doc: dict) -> str | None:
    """Why the chain does not allow a reproduction, or None when it does."""
    if doc.get("pipeline_run"):
        return None
    reasons = [
        f"{m['link']}: {m['reason']}"
        for m in doc.get("missing") or ()
        if m["link"] in ("pipeline_run", "scheduler_run")
    ]
    return (
        "A reproduction reruns the pipeline the model came from, and this version's chain "
        "does not reach one. " + " ".join(reasons)
    ).strip()


def reproduce(
    doc: dict,
    scheduler: SchedulerClient,
    run_metrics: Callable[[str], dict[str, float]] | None = None,
    interval: float = 2.0,
    timeout: float = REPRODUCE_TIMEOUT,
    sleep: Callable[[float], None] = time.sleep,
    started: Callable[[dict], None] | None = None,
) -> Reproduction:
    """Run the version's pipeline again with the recorded parameters; compare what it made.

    Parameters
    ----------
    doc : dict
        The version's lineage (:meth:`.DeployerClient.lineage`).
    scheduler : SchedulerClient
        The scheduler, as the user.
    run_metrics : callable, optional
        ``run_metrics(mlflow_run_id)``: a run's latest metrics (the tracking client's); None
        compares the step's outputs only.
    started : callable, optional
        Called with the new pipeline run once it is created (to say so before the wait).

    Raises
    ------
    DeployerError
        The chain does not reach a pipeline run (saying what is missing), or the new run
        is still running after ``timeout`` seconds (it goes on).
    """
    why = cannot_reproduce(doc)
    if why:
        raise DeployerError(why)
    recorded = doc["pipeline_run"]
    new = scheduler.run_pipeline(recorded["pipeline_id"], recorded.get("parameters") or {})
    if started is not None:
        started(new)
    deadline = time.monotonic() + timeout
    while new["status"] == "running":
        if time.monotonic() > deadline:
            raise DeployerError(
                f"Pipeline run {new['id']} is still running after {timeout:.0f} s; it goes on: "
                "compare its results when it ends."
            )
        sleep(interval)
        new = scheduler.get_pipeline_run(new["id"])
    steps = {s["step"]: s for s in new.get("steps") or ()}
    step_name = (recorded.get("step") or {}).get("step")
    step = steps.get(step_name) if step_name else (new["steps"][-1] if new.get("steps") else None)
    if step is None:
        return Reproduction(new["id"], new["status"], "outputs", reason="no such step in it now")
    old_run = doc.get("mlflow_run") or {}
    mlflow_run = None
    if step.get("run_id") and run_metrics is not None and old_run.get("metrics"):
        mlflow_run = scheduler.get_run(step["run_id"]).get("mlflow_run_id")
    if mlflow_run and run_metrics is not None:
        metrics = run_metrics(mlflow_run)
        names = sorted(set(old_run["metrics"]) | set(metrics))
        rows = [(n, old_run["metrics"].get(n), metrics.get(n)) for n in names]
        return Reproduction(new["id"], new["status"], "metrics", rows, new.get("reason") or "")
    old = (recorded.get("step") or {}).get("outputs") or {}
    now = step.get("outputs") or {}
    rows = [(n, old.get(n), now.get(n)) for n in sorted(set(old) | set(now))]
    return Reproduction(new["id"], new["status"], "outputs", rows, new.get("reason") or "")
