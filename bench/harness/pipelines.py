"""Pipelines as the benchmark runs them: the five-step pipeline, its notebooks, timed runs.

The pipeline is the one of ``tests/test_pipelines.py``, on data the bench makes: ``ingest``
writes a table of :data:`DEFAULT_ROWS` rows (two integer columns) into the run's workspace
and records how many rows it wrote; ``features-a`` and ``features-b`` each sum one column
of the table (a file handed on through the workspace) and record the sum; ``train``
records a score from both sums and the row count (values handed on, and a fan-in);
``report`` prints it. Every notebook records its values with
``hub_ext.runtime.outputs.output``. Two shapes of it (:func:`pipeline_file`):

- ``parallel``: ``ingest -> (features-a, features-b) -> train -> report``, the two feature
  steps at the same time;
- ``chain``: the same five steps one after another (``features-b`` needs ``features-a``).

:class:`PipelineUser` drives the pipelines of the :class:`~bench.harness.shipyard.Shipyard`
user: it writes the files into the account's home, creates the pipeline and times its runs
(:class:`TimedPipelineRun`). :func:`papermill_plan` is the same pipeline for
:meth:`~bench.harness.papermill.Papermill.pipeline_loop`, the peer.

The calls go through :class:`PipelineClient`: the scheduler's client
(:class:`~server_ext.clients.scheduler.client.SchedulerClient`) has no pipeline calls yet,
so this subclass adds the four the bench makes on the client's own transport, with its URL
rules, token and error translation. Rejected alternative: plain ``requests`` calls, which
would time a path no user takes and translate no refusal.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime

import yaml

from server_ext.clients.scheduler.client import SchedulerClient, path_segment
from tests.hubtools import wait_for

from .notebook import first_cell_start, notebook
from .shipyard import CALL_TIMEOUT, PROFILE, Shipyard, install_files

#: Rows of the table ``ingest`` writes, unless the bench is told otherwise.
DEFAULT_ROWS = 100_000
#: What each notebook imports to record values and find its workspace.
RECORD = "from hub_ext.runtime.outputs import output, workspace\n"
#: Where ``ingest`` writes the table, relative to the run's workspace.
TABLE = "data/table.csv"

NOTEBOOKS = {
    "ingest.ipynb": notebook(
        [
            ("rows = 1", ["parameters"]),
            (
                RECORD + f"path = workspace() / {TABLE!r}\n"
                "path.parent.mkdir(parents=True, exist_ok=True)\n"
                "with open(path, 'w') as f:\n"
                "    f.writelines(f'{i},{(i * 7919) % 1000}\\n' for i in range(rows))\n"
                "output('rows', rows)",
                [],
            ),
        ]
    ),
    "features.ipynb": notebook(
        [
            ("table = ''\ncolumn = 0", ["parameters"]),
            (
                RECORD + "with open(table) as f:\n"
                "    total = sum(float(line.split(',')[column]) for line in f)\n"
                "output('total', total)",
                [],
            ),
        ]
    ),
    "train.ipynb": notebook(
        [
            ("a = 0.0\nb = 0.0\nrows = 1", ["parameters"]),
            (RECORD + "output('score', (a + b) / rows)", []),
        ]
    ),
    "report.ipynb": notebook(
        [("score = 0.0", ["parameters"]), ("print('score', round(score, 3))", [])]
    ),
}

#: The steps in run order: notebook, needs, parameters, inputs, outputs, files.
STEPS: dict[str, dict] = {
    "ingest": {
        "notebook": "ingest.ipynb",
        "outputs": {"rows": "integer"},
        "files": {"table": TABLE},
    },
    "features-a": {
        "notebook": "features.ipynb",
        "needs": ["ingest"],
        "parameters": {"column": 0},
        "inputs": {"table": "steps.ingest.files.table"},
        "outputs": {"total": "number"},
    },
    "features-b": {
        "notebook": "features.ipynb",
        "needs": ["ingest"],
        "parameters": {"column": 1},
        "inputs": {"table": "steps.ingest.files.table"},
        "outputs": {"total": "number"},
    },
    "train": {
        "notebook": "train.ipynb",
        "needs": ["features-a", "features-b"],
        "inputs": {
            "a": "steps.features-a.outputs.total",
            "b": "steps.features-b.outputs.total",
            "rows": "steps.ingest.outputs.rows",
        },
        "outputs": {"score": "number"},
    },
    "report": {
        "notebook": "report.ipynb",
        "needs": ["train"],
        "inputs": {"score": "steps.train.outputs.score"},
    },
}

SHAPES = ("chain", "parallel")


def pipeline_steps(shape: str) -> dict[str, dict]:
    """The steps of the ``parallel`` or the ``chain`` shape, in run order."""
    if shape not in SHAPES:
        raise ValueError(f"unknown pipeline shape {shape!r}: one of {', '.join(SHAPES)}")
    steps = json.loads(json.dumps(STEPS))
    if shape == "chain":
        steps["features-b"]["needs"] = ["features-a"]
    return steps


def expected_score(rows: int) -> float:
    """The score ``train`` records for a table of ``rows`` rows: both columns' sums / rows."""
    return (sum(range(rows)) + sum((i * 7919) % 1000 for i in range(rows))) / rows


def pipeline_file(
    shape: str, rows: int, triggers: list[dict] | None = None, name: str | None = None
) -> str:
    """The ``pipeline.yaml`` of one shape on the bench's profile, named ``bench-<shape>``."""
    spec: dict = {
        "name": name or f"bench-{shape}",
        "description": f"The five-step bench pipeline, {shape}.",
        "profile": PROFILE,
        "parameters": {"rows": rows},
        "steps": pipeline_steps(shape),
    }
    if triggers:
        spec["triggers"] = triggers
    return yaml.safe_dump(spec, sort_keys=False)


def papermill_plan(shape: str, rows: int) -> dict:
    """The pipeline of one shape for :meth:`~bench.harness.papermill.Papermill.pipeline_loop`."""
    steps = pipeline_steps(shape)
    return {
        "parameters": {"rows": rows},
        "files": {step_id: step.get("files", {}) for step_id, step in steps.items()},
        "steps": [
            {
                "id": step_id,
                "notebook": NOTEBOOKS[step["notebook"]],
                "parameters": step.get("parameters", {}),
                "inputs": step.get("inputs", {}),
            }
            for step_id, step in steps.items()
        ],
    }


def epoch(stamp: str) -> float:
    """Epoch seconds of one of the service's ISO times."""
    return datetime.fromisoformat(stamp).timestamp()


class PipelineClient(SchedulerClient):
    """The scheduler's client with the pipeline calls the bench makes (see the module's text)."""

    def create_pipeline(self, path: str) -> dict:
        """``POST api/pipelines``: the pipeline of the ``pipeline.yaml`` at ``path`` (home-relative)."""
        return self._call("POST", "api/pipelines", json={"path": path})

    def run_pipeline(self, pipeline_id: str, parameters: dict | None = None) -> dict:
        """``POST api/pipelines/{id}/runs``: start a run."""
        body = {"parameters": parameters or {}}
        return self._call("POST", f"api/pipelines/{path_segment(pipeline_id)}/runs", json=body)

    def list_pipeline_runs(self, pipeline_id: str) -> list[dict]:
        """``GET api/pipelines/{id}/runs``: the runs, newest first."""
        return self._call("GET", f"api/pipelines/{path_segment(pipeline_id)}/runs")["runs"]

    def get_pipeline_run(self, run_id: str) -> dict:
        """``GET api/pipeline-runs/{id}``."""
        return self._call("GET", f"api/pipeline-runs/{path_segment(run_id)}")


@dataclass
class TimedPipelineRun:
    """One pipeline run that succeeded, timed from the POST that started it.

    All times are this machine's clock: the bench's ``time.time()`` at the POST and the
    service's ``started_at`` and ``ended_at`` of the run and of its steps' runs.
    """

    run_id: str
    #: POST of the run to the run's ``ended_at``
    wall_s: float
    #: per step: its run's ``started_at`` minus the latest ``ended_at`` of the steps it
    #: needs (for a step that needs none, minus the POST): the scheduling gap
    gaps_s: dict[str, float]
    #: per step: its run's ``started_at`` to the step's ``ended_at``
    durations_s: dict[str, float]
    #: per step: its run's ``started_at`` to papermill's start of its first cell
    to_first_cell_s: dict[str, float]
    #: the values each step recorded
    outputs: dict[str, dict]
    #: the steps whose run used a kernel the warm pool had started
    warm_steps: list[str] = field(default_factory=list)


class PipelineUser:
    """The pipelines of the :class:`~bench.harness.shipyard.Shipyard` user, once it started."""

    def __init__(self, shipyard: Shipyard):
        self.shipyard = shipyard
        self.client = PipelineClient(shipyard.scheduler.url, shipyard.token, CALL_TIMEOUT)

    def install(self, folder: str, pipeline_text: str) -> str:
        """Write ``pipeline.yaml`` and the notebooks to ``folder`` in the home; its path there."""
        files = {f"{folder}/{name}": json.dumps(nb) for name, nb in NOTEBOOKS.items()}
        files[f"{folder}/pipeline.yaml"] = pipeline_text
        install_files(self.shipyard.account, files)
        return f"{folder}/pipeline.yaml"

    def create(self, folder: str, pipeline_text: str) -> dict:
        """Install the files in ``folder`` and create the pipeline: its description."""
        return self.client.create_pipeline(self.install(folder, pipeline_text))

    def wait(self, run_id: str, interval: float, timeout: float = 600) -> dict:
        """The pipeline run once it has ended, asked every ``interval`` seconds."""

        def ended():
            run = self.client.get_pipeline_run(run_id)
            return run if run["status"] != "running" else None

        return wait_for(ended, timeout, interval, f"pipeline run {run_id}")

    @staticmethod
    def check(run: dict) -> None:
        """Raise unless the run and every step succeeded, with the reasons of those that did not."""
        if run["status"] == "succeeded":
            return
        reasons = [
            f"{s['step']}: {s['status']}: {(s['reason'] or '').strip()[-500:]}"
            for s in run["steps"]
            if s["status"] != "succeeded"
        ]
        raise RuntimeError(f"pipeline run {run['id']} {run['status']}: " + "; ".join(reasons))

    def timed_run(
        self, pipeline: dict, parameters: dict | None = None, interval: float = 0.2
    ) -> TimedPipelineRun:
        """Start a run of ``pipeline``, wait for it to succeed, and time it from the POST.

        ``interval`` is how often the run is asked for meanwhile; the figures are the
        service's own records, not the moment the bench saw the end.
        """
        posted = time.time()
        run_id = self.client.run_pipeline(pipeline["id"], parameters)["id"]
        run = self.wait(run_id, interval)
        self.check(run)
        needs = {step["id"]: step["needs"] for step in pipeline["steps"]}
        steps = {s["step"]: s for s in run["steps"]}
        gaps, durations = {}, {}
        for step_id, step in steps.items():
            before = [epoch(steps[need]["ended_at"]) for need in needs[step_id]]
            gaps[step_id] = epoch(step["started_at"]) - (max(before) if before else posted)
            durations[step_id] = epoch(step["ended_at"]) - epoch(step["started_at"])
        return TimedPipelineRun(
            run_id=run_id,
            wall_s=epoch(run["ended_at"]) - posted,
            gaps_s=gaps,
            durations_s=durations,
            to_first_cell_s={
                step_id: first_cell_start(self.shipyard.output(s["run_id"]))
                - epoch(s["started_at"])
                for step_id, s in steps.items()
            },
            outputs={step_id: s["outputs"] for step_id, s in steps.items()},
            warm_steps=[
                step_id
                for step_id, s in steps.items()
                if self.shipyard.used_warm_kernel(s["run_id"])
            ],
        )


def median_by_step(samples: list[dict[str, float]]) -> dict[str, float]:
    """The median of each step's figure over several runs (steps in the first run's order)."""
    return {step: statistics.median(s[step] for s in samples) for step in samples[0]}
