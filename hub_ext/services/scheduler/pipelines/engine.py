"""The pipeline engine's decisions: what starts, what is skipped, how a run ends.

Every function here is pure: it takes a parsed :class:`~.spec.Pipeline` and the
states of one run's steps and returns what to do; it reads no database, no
file and no clock. The scheduler calls :func:`advance` inside the transaction
that records the end of a step's run (and once when a pipeline run is created)
and applies the decision in the same transaction, so the decision depends only
on what that transaction read, and the same states always give the same one.

States of a step (:class:`StepState`)::

                    advance: every need ended,
                    its run_if is met
        pending ─────────────────────────────► running ──► succeeded
          │  │                                   │   └───► failed
          │  │ advance: every need ended,        │
          │  │ its run_if is not met             └───────► cancelled   (cancel)
          │  └───────────────────────────────► skipped
          └──────────────────────────────────► cancelled   (cancel)

        repair_plan, on an ended run:
          failed, cancelled and every step after them ──► pending
          succeeded or reused elsewhere                ──► reused (counts as succeeded)

States of a pipeline run (:class:`RunState`): ``running`` until every step has
ended, then ``failed`` if a step failed, else ``cancelled`` if a step was
cancelled, else ``succeeded`` (:func:`run_outcome`). A failure wins over a
cancel: a user who cancels a run after a step failed still sees that it failed.

When a step is decided (:func:`advance`)
----------------------------------------

A pending step is decided once every step in its ``needs`` has ended
(succeeded, reused, failed, skipped or cancelled); a step without needs at once.
Its ``run_if`` then says whether it starts or is skipped:

- ``all_succeeded`` (the default): every need succeeded (or was reused).
  A need that failed, was cancelled or was skipped skips the step, as Databricks'
  ``ALL_SUCCESS`` marks it "Upstream failed" and Airflow's ``all_success`` skips
  after a skipped parent.
- ``any_failed``: at least one need *failed* (Databricks' ``AT_LEAST_ONE_FAILED``:
  "at least one dependency has failed"; when it is not met the task is
  "Excluded", here skipped). A skipped or cancelled need does not count as
  failed: a skip does not record whether a failure caused it. So an alert step
  fires for the steps it names: to alert on any failure before it, name the
  steps that may fail in its ``needs`` (or use ``always``). A step with
  ``any_failed`` and no needs never runs.
- ``always``: runs once every need has ended, however (Airflow's ``all_done``,
  Databricks' ``ALL_DONE``).

A skip cascades in the same call: the steps are visited in run order
(:func:`~.graph.topological_order`), so a skipped step's dependents, visited
after it, see it skipped and are decided at once. One pass reaches the fixed
point. A failed step thus skips what depends on it by its condition and leaves
every independent branch running; the run's outcome is set only when every step
has ended. Calling :func:`advance` again with the started steps marked running
returns nothing new, and with the same states the same decision.

Retries (a step's ``retries``) happen inside one step run; the engine sees only
how the last attempt ended.

Repair (:func:`repair_plan`)
----------------------------

A repair of an ended run reruns the steps that failed or were cancelled and
every step after them (:func:`~.graph.downstream`); every other step that
succeeded is ``reused``: the caller carries its outputs and files over, and it
counts as succeeded for the conditions. A step skipped because of a failure is
after a failed or cancelled step by construction, so it is rerun; a step skipped
for another reason (an ``any_failed`` step whose needs all succeeded) keeps its
state, as rerunning it would decide the same. The plan's states go to
:func:`advance` like a new run's.

Rejected alternatives:

- The run's outcome from its leaf steps only (Databricks and Airflow do this): an
  ``always`` clean-up step at the end that succeeds would turn a failed training
  into a successful run, and a "succeeded" pipeline that did not train is the
  wrong signal for the triggers that follow it (``after_pipeline``).
- Counting a skipped need as failed for ``any_failed``, as Airflow's
  ``one_failed`` counts a parent in ``upstream_failed``: Shipyard's one
  ``skipped`` state covers both a skip after a failure and an ``any_failed``
  step that had nothing to handle, so counting it would fire a handler after a
  handler that fired for nothing; an alert that names its steps says exactly
  what it watches.
- Running ``always`` or ``any_failed`` steps after a cancel (Databricks runs its
  failure handlers after a cancelled task): whoever cancels a run wants nothing
  more started; a repair runs them later if wanted.
- Skipping an ``all_succeeded`` step as soon as one need fails, before the others
  end (Airflow marks it ``upstream_failed`` at once): the run waits for the other
  branches anyway, and one rule for every condition (decide when every need has
  ended) gives a reason that says how each need ended.
- Failing the whole run at the first failure (fail-fast): independent branches are
  often hours of work that a repair would otherwise have to redo.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple

from .graph import downstream, topological_order
from .spec import DeployStep, Pipeline, RunIf, split_reference


class StepState(str, Enum):
    """Where one step of a pipeline run is."""

    #: Waiting for the steps it needs, or for :func:`advance` to start it.
    pending = "pending"
    #: Started: its notebook (or deployment) is running.
    running = "running"
    #: Ended well.
    succeeded = "succeeded"
    #: Ended badly (after its retries).
    failed = "failed"
    #: Not run: its ``run_if`` was not met when its needs ended.
    skipped = "skipped"
    #: Stopped or never started because the run was cancelled.
    cancelled = "cancelled"
    #: Carried over, succeeded, from before a repair: counts as succeeded everywhere.
    reused = "reused"


class RunState(str, Enum):
    """Where a pipeline run is."""

    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


#: A run's step states by step id, each a StepState or its value as stored ("failed").
States = Mapping[str, StepState | str]

#: The states of a step that has ended.
ENDED = frozenset(
    {
        StepState.succeeded,
        StepState.reused,
        StepState.failed,
        StepState.skipped,
        StepState.cancelled,
    }
)
#: The states that count as succeeded.
SUCCEEDED = frozenset({StepState.succeeded, StepState.reused})

_SAID = {
    StepState.pending: "is pending",
    StepState.running: "is running",
    StepState.succeeded: "succeeded",
    StepState.reused: "succeeded (reused)",
    StepState.failed: "failed",
    StepState.skipped: "was skipped",
    StepState.cancelled: "was cancelled",
}


@dataclass(frozen=True)
class Decision:
    """What :func:`advance` decided for a pipeline run, to apply in one transaction."""

    #: The steps to start now, in run order.
    start: list[str] = field(default_factory=list)
    #: The steps to mark skipped, each with the reason to show the user, in run order.
    skip: dict[str, str] = field(default_factory=dict)
    #: How the run ended once ``start`` and ``skip`` are applied; ``None`` while a
    #: step is still pending or running.
    outcome: RunState | None = None


class CancelPlan(NamedTuple):
    """What cancelling a pipeline run does to its steps."""

    #: The running steps to stop; each is marked cancelled when its run has stopped.
    running: list[str]
    #: The pending steps to mark cancelled at once: they never start.
    pending: list[str]


def initial_states(pipeline: Pipeline) -> dict[str, StepState]:
    """Return the states of a new run of ``pipeline``: every step pending."""
    return dict.fromkeys(pipeline.steps, StepState.pending)


def _read_states(pipeline: Pipeline, states: States) -> dict[str, StepState]:
    # every step of the pipeline, and nothing else, in the file's order
    unknown = [s for s in states if s not in pipeline.steps]
    missing = [s for s in pipeline.steps if s not in states]
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"states for steps it does not have: {', '.join(unknown)}")
        if missing:
            parts.append(f"no state for its steps {', '.join(missing)}")
        raise ValueError(
            f"the states do not match pipeline {pipeline.name!r}: {'; '.join(parts)} "
            f"(its steps: {', '.join(pipeline.steps)})"
        )
    read = {}
    for step_id in pipeline.steps:
        try:
            read[step_id] = StepState(states[step_id])
        except ValueError:
            raise ValueError(
                f"step {step_id!r} has the unknown state {states[step_id]!r}: use one of "
                f"{', '.join(s.value for s in StepState)}"
            ) from None
    return read


def _check_order(pipeline: Pipeline, states: Mapping[str, StepState]) -> None:
    # A step leaves pending only after every step it needs has ended, except when a
    # cancel marks it cancelled; anything else is a record the engine never made.
    for step_id, state in states.items():
        if state in (StepState.pending, StepState.cancelled):
            continue
        for need in pipeline.steps[step_id].needs:
            if states[need] not in ENDED:
                raise ValueError(
                    f"step {step_id!r} {_SAID[state]} but {need!r}, which it needs, "
                    f"{_SAID[states[need]]}: a step starts or is skipped only after every "
                    "step it needs has ended"
                )


def _unmet(run_if: RunIf, needs: Mapping[str, StepState]) -> str | None:
    """Why a step whose needs have ended does not run, or ``None`` when it runs."""
    if run_if is RunIf.always:
        return None
    if run_if is RunIf.all_succeeded:
        blocking = [f"upstream {n!r} {_SAID[s]}" for n, s in needs.items() if s not in SUCCEEDED]
        if not blocking:
            return None
        because = ", ".join(blocking)
    else:
        if any(s is StepState.failed for s in needs.values()):
            return None
        if needs:
            said = ", ".join(f"{n!r} {_SAID[s]}" for n, s in needs.items())
            because = f"no step it needs failed: {said}"
        else:
            because = "it needs no step, so none can fail"
    return f"not run: its condition {run_if.value} was not met ({because})"


def run_outcome(states: Iterable[StepState | str]) -> RunState | None:
    """Return how a run with these step states ended, or ``None`` while one has not.

    ``failed`` if a step failed, else ``cancelled`` if a step was cancelled, else
    ``succeeded`` (skipped steps do not make a run fail).
    """
    ended = [StepState(s) for s in states]
    if any(s not in ENDED for s in ended):
        return None
    if StepState.failed in ended:
        return RunState.failed
    if StepState.cancelled in ended:
        return RunState.cancelled
    return RunState.succeeded


def advance(pipeline: Pipeline, states: States) -> Decision:
    """Decide which pending steps start and which are skipped, and whether the run ended.

    Parameters
    ----------
    pipeline
        The pipeline the run runs (the version the run was created with).
    states
        The state of every step of the run, by step id.

    Returns
    -------
    Decision
        The steps to start (in run order), the steps to skip with their reasons, and
        the run's outcome once those are applied, if every step has then ended.

    Raises
    ------
    ValueError
        ``states`` does not name exactly the pipeline's steps, holds an unknown state,
        or has a step that left pending before a step it needs ended.
    """
    current = _read_states(pipeline, states)
    _check_order(pipeline, current)
    start: list[str] = []
    skip: dict[str, str] = {}
    # run order: a step's needs are decided before it, so skips cascade in one pass
    for step_id in topological_order(pipeline):
        if current[step_id] is not StepState.pending:
            continue
        step = pipeline.steps[step_id]
        needs = {need: current[need] for need in step.needs}
        if any(s not in ENDED for s in needs.values()):
            continue
        reason = _unmet(step.run_if, needs)
        if reason is None:
            start.append(step_id)
            current[step_id] = StepState.running
        else:
            skip[step_id] = reason
            current[step_id] = StepState.skipped
    return Decision(start=start, skip=skip, outcome=run_outcome(current.values()))


def repair_plan(pipeline: Pipeline, states: States) -> dict[str, StepState]:
    """Return the step states a repair of an ended run starts from.

    The steps that failed or were cancelled and every step after them become
    ``pending``; every other step that succeeded becomes ``reused``; the rest (skipped
    steps no failure caused) keep their state. Pass the result to :func:`advance`.

    Raises
    ------
    ValueError
        The run has not ended (a step is pending or running), or no step failed or was
        cancelled (there is nothing to repair).
    """
    current = _read_states(pipeline, states)
    _check_order(pipeline, current)
    unfinished = [s for s, state in current.items() if state not in ENDED]
    if unfinished:
        said = ", ".join(f"{s!r} {_SAID[current[s]]}" for s in unfinished)
        raise ValueError(
            f"the run of pipeline {pipeline.name!r} has not ended ({said}): wait for it "
            "to end, or cancel it, before repairing it"
        )
    broken = [s for s, state in current.items() if state in (StepState.failed, StepState.cancelled)]
    if not broken:
        raise ValueError(
            f"nothing to repair: no step of this run of pipeline {pipeline.name!r} failed "
            "or was cancelled; start a new run to run its steps again"
        )
    rerun = set(downstream(pipeline, broken))
    plan = {}
    for step_id, state in current.items():
        if step_id in rerun:
            plan[step_id] = StepState.pending
        elif state in SUCCEEDED:
            plan[step_id] = StepState.reused
        else:
            plan[step_id] = state
    return plan


def step_parameters(
    pipeline: Pipeline,
    step_id: str,
    run_parameters: Mapping[str, Any],
    outputs: Mapping[str, Mapping[str, Any]],
    files: Mapping[str, Mapping[str, str]],
) -> dict[str, Any]:
    """Return the papermill parameters of step ``step_id`` in one run.

    For a notebook step, later sources win: the pipeline's ``parameters``, the run's
    parameters (only names the pipeline declares), the step's own ``parameters``, then
    its ``inputs``, each resolved from what the steps before it left.

    A deploy step runs Shipyard's deploy notebook (:mod:`hub_ext.runtime.deploy_step`),
    whose parameters are the step's settings (:func:`deploy_parameters`): ``model_uri``
    (its ``model`` reference, resolved), ``name``, ``gate`` and ``canary`` as dicts (the
    canary's ``window`` in seconds), ``data_path`` (the gate's ``data`` file, resolved
    to its path) and ``profile`` (the step's, else the pipeline's). The pipeline's and
    the run's parameters are not the deploy notebook's.

    Parameters
    ----------
    pipeline
        The pipeline the run runs.
    step_id
        A notebook step of ``pipeline``.
    run_parameters
        The values given when the run was started, by parameter name.
    outputs
        What each step recorded, by step id then output name.
    files
        The path of each file a step left, by step id then file name, as the step's
        notebook sees it (the caller maps workspace paths to it).

    Raises
    ------
    KeyError
        ``step_id`` is not a step of the pipeline.
    ValueError
        A run parameter is one the pipeline does not declare, or an input (or a deploy
        step's model or data) reads an output or file its step did not leave.
    """
    if step_id not in pipeline.steps:
        raise KeyError(
            f"{step_id!r} is not a step of pipeline {pipeline.name!r} "
            f"(its steps: {', '.join(pipeline.steps)})"
        )
    step = pipeline.steps[step_id]
    undeclared = [name for name in run_parameters if name not in pipeline.parameters]
    if undeclared:
        declared = ", ".join(pipeline.parameters) or "none"
        raise ValueError(
            f"pipeline {pipeline.name!r} declares no parameter "
            f"{', '.join(repr(n) for n in undeclared)}: a run may set only the pipeline's "
            f"parameters (its parameters: {declared}); declare it under parameters in "
            "pipeline.yaml or fix the name"
        )
    if isinstance(step, DeployStep):
        return deploy_parameters(pipeline, step_id, outputs, files)
    values = {
        **copy.deepcopy(pipeline.parameters),
        **copy.deepcopy(dict(run_parameters)),
        **copy.deepcopy(step.parameters),
    }
    values.update(_resolve(step_id, step.inputs, "input", outputs, files))
    return values


def _resolve(
    step_id: str,
    references: Mapping[str, str],
    what: str,
    outputs: Mapping[str, Mapping[str, Any]],
    files: Mapping[str, Mapping[str, str]],
) -> dict[str, Any]:
    """Each reference's value (an output) or path (a file), by the name it is given as."""
    values: dict[str, Any] = {}
    missing = []
    for name, reference in references.items():
        source, kind, key = split_reference(reference)
        left: Mapping[str, Any] = (outputs if kind == "outputs" else files).get(source, {})
        if key in left:
            values[name] = copy.deepcopy(left[key])
            continue
        said = "recorded no output" if kind == "outputs" else "left no file"
        have = ", ".join(left) or "none"
        missing.append(
            f"its {what} {name!r} reads {reference}, but step {source!r} {said} {key!r} "
            f"(its {kind}: {have})"
        )
    if missing:
        raise ValueError(
            f"step {step_id!r} cannot start: {'; '.join(missing)}; the notebook of the step "
            "it reads must record every output and write every file it declares"
        )
    return values


def deploy_parameters(
    pipeline: Pipeline,
    step_id: str,
    outputs: Mapping[str, Mapping[str, Any]],
    files: Mapping[str, Mapping[str, str]],
) -> dict[str, Any]:
    """Return the deploy notebook's parameters for deploy step ``step_id`` (see
    :func:`step_parameters`).

    Raises
    ------
    ValueError
        The step's model or its gate's data reads what its step did not leave.
    """
    step = pipeline.steps[step_id]
    assert isinstance(step, DeployStep)
    references = {"model_uri": step.model}
    if step.gate is not None:
        references["data_path"] = step.gate.data
    resolved = _resolve(step_id, references, "setting", outputs, files)
    return {
        "model_uri": resolved["model_uri"],
        "name": step.name,
        "gate": step.gate.model_dump(mode="json", exclude={"data"}) if step.gate else None,
        "canary": step.canary.model_dump(mode="json") if step.canary else None,
        "data_path": resolved.get("data_path"),
        "profile": pipeline.profile_of(step_id),
    }


def cancel(states: States) -> CancelPlan:
    """Return what cancelling a run does: the running steps to stop, the pending to mark.

    Steps that have ended keep their state. Steps come in the order of ``states``.
    """
    read = {step_id: StepState(state) for step_id, state in states.items()}
    return CancelPlan(
        running=[s for s, state in read.items() if state is StepState.running],
        pending=[s for s, state in read.items() if state is StepState.pending],
    )
