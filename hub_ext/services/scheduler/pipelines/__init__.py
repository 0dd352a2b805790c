"""Pipelines: a DAG of notebook steps described in a ``pipeline.yaml``.

The file's model (:mod:`.spec`), the checks over its graph with the run
order and what a repair reruns (:mod:`.graph`), the loader that reports every
error at its line (:mod:`.load`), the JSON schema editors use (:mod:`.schema`),
the engine's decisions over a run's step states (:mod:`.engine`: what starts,
what is skipped, how a run ends, what a repair reruns, a step's parameters),
the reading back of what a step's run recorded (:mod:`.outputs`), and the
pipelines' storage, REST models and API calls in the scheduler service
(:mod:`.store`, :mod:`.api`, :mod:`.service`).
"""

from .engine import (
    CancelPlan,
    Decision,
    RunState,
    StepState,
    advance,
    cancel,
    initial_states,
    repair_plan,
    run_outcome,
    step_parameters,
)
from .graph import downstream, problems, topological_order
from .load import Located, PipelineError, load_pipeline
from .spec import DeployStep, NotebookStep, Pipeline

__all__ = [
    "CancelPlan",
    "Decision",
    "DeployStep",
    "Located",
    "NotebookStep",
    "Pipeline",
    "PipelineError",
    "RunState",
    "StepState",
    "advance",
    "cancel",
    "downstream",
    "initial_states",
    "load_pipeline",
    "problems",
    "repair_plan",
    "run_outcome",
    "step_parameters",
    "topological_order",
]
