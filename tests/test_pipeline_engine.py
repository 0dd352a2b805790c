"""The pipeline engine's decisions over real pipelines loaded from YAML.

Each test drives a run the way the scheduler will: it calls ``advance`` with the
step states, applies the decision, ends steps as their notebooks would, and calls
it again, checking what starts, what is skipped and why, and how the run ends.
"""

from __future__ import annotations

import textwrap

import pytest

from hub_ext.services.scheduler.pipelines import (
    CancelPlan,
    Decision,
    RunState,
    StepState,
    advance,
    cancel,
    initial_states,
    load_pipeline,
    repair_plan,
    run_outcome,
    step_parameters,
)

P, R, S, F = StepState.pending, StepState.running, StepState.succeeded, StepState.failed
SKIP, C, REUSED = StepState.skipped, StepState.cancelled, StepState.reused

#: ingest, two feature steps in parallel, train (fan-in), and a deploy of its model.
FIVE = """\
name: churn-training
profile: cpu-small
parameters:
  region: eu
  epochs: 5
  learning_rate: 0.1
steps:
  ingest:
    notebook: notebooks/ingest.ipynb
    files:
      table: data/raw.parquet
    outputs:
      rows: integer
  features-a:
    notebook: notebooks/features_a.ipynb
    needs: [ingest]
    inputs:
      raw_table: steps.ingest.files.table
    files:
      features: data/a.parquet
  features-b:
    notebook: notebooks/features_b.ipynb
    needs: [ingest]
    inputs:
      raw_table: steps.ingest.files.table
    files:
      features: data/b.parquet
  train:
    notebook: notebooks/train.ipynb
    needs: [features-a, features-b]
    parameters:
      epochs: 20
    inputs:
      features_a: steps.features-a.files.features
      features_b: steps.features-b.files.features
      expected_rows: steps.ingest.outputs.rows
    outputs:
      model_uri: string
  deploy:
    type: deploy
    needs: [train]
    model: steps.train.outputs.model_uri
    name: churn
"""

#: The five steps with a report on one branch, an alert and a clean-up.
HANDLED = FIVE + textwrap.indent(
    textwrap.dedent(
        """\
            report:
              notebook: notebooks/report.ipynb
              needs: [features-b]
            alert:
              notebook: notebooks/alert.ipynb
              needs: [features-a, features-b]
              run_if: any_failed
            cleanup:
              notebook: notebooks/cleanup.ipynb
              needs: [deploy]
              run_if: always
            """
    ),
    "  ",
)


def small(steps: str) -> str:
    return "name: p\nprofile: cpu\nsteps:\n" + textwrap.indent(textwrap.dedent(steps), "  ")


def applied(states: dict[str, StepState], decision: Decision) -> dict[str, StepState]:
    """The states after the scheduler applied ``decision``."""
    new = dict(states)
    new.update(dict.fromkeys(decision.start, R))
    new.update(dict.fromkeys(decision.skip, SKIP))
    return new


def step(states, decision=None, **ended: StepState):
    """Apply ``decision`` (if any), end the named steps, and return the states."""
    new = applied(states, decision) if decision else dict(states)
    for step_id, state in ended.items():
        step_id = step_id.replace("_", "-")
        assert new[step_id] is R, f"{step_id} ends but was {new[step_id]}"
        new[step_id] = state
    return new


# -- advance: the order steps start in ---------------------------------------------------


def test_a_new_run_starts_only_the_steps_without_needs():
    pipeline = load_pipeline(FIVE)
    states = initial_states(pipeline)
    assert states == dict.fromkeys(pipeline.steps, P)
    assert advance(pipeline, states) == Decision(start=["ingest"], skip={}, outcome=None)


def test_both_feature_steps_start_together_and_train_waits_for_both():
    pipeline = load_pipeline(FIVE)
    states = initial_states(pipeline)
    first = advance(pipeline, states)
    states = step(states, first, ingest=S)
    second = advance(pipeline, states)
    assert second.start == ["features-a", "features-b"]  # fan-out: in parallel, run order
    states = step(states, second, features_a=S)
    assert advance(pipeline, states) == Decision()  # fan-in: features-b still runs
    states = step(states, features_b=S)
    third = advance(pipeline, states)
    assert third == Decision(start=["train"])
    states = step(states, third, train=S)
    fourth = advance(pipeline, states)
    assert fourth == Decision(start=["deploy"])
    states = step(states, fourth, deploy=S)
    assert advance(pipeline, states) == Decision(outcome=RunState.succeeded)


def test_advance_is_idempotent():
    pipeline = load_pipeline(HANDLED)
    states = step(initial_states(pipeline), advance(pipeline, initial_states(pipeline)), ingest=S)
    decision = advance(pipeline, states)
    assert advance(pipeline, states) == decision  # the same states, the same decision
    started = applied(states, decision)
    assert advance(pipeline, started) == Decision()  # once applied, nothing new
    ended = step(started, features_a=F, features_b=S)
    skipping = advance(pipeline, ended)
    assert skipping.skip and advance(pipeline, applied(ended, skipping)).skip == {}


def test_the_start_list_is_in_run_order_not_the_files_order():
    pipeline = load_pipeline(
        small(
            """
            late: {notebook: l.ipynb, needs: [b]}
            z: {notebook: z.ipynb}
            b: {notebook: b.ipynb, needs: [a]}
            a: {notebook: a.ipynb}
            """
        )
    )
    states = initial_states(pipeline)
    assert advance(pipeline, states).start == ["z", "a"]
    states = {**states, "z": S, "a": S}
    assert advance(pipeline, states).start == ["b"]
    # a skip reaches "late", listed before the step it needs, in the same call
    assert advance(pipeline, {**states, "a": F}).skip == {
        "b": "not run: its condition all_succeeded was not met (upstream 'a' failed)",
        "late": "not run: its condition all_succeeded was not met (upstream 'b' was skipped)",
    }


# -- advance: failures, conditions and skips ---------------------------------------------


def test_a_failed_feature_step_skips_its_dependents_and_the_rest_keeps_running():
    pipeline = load_pipeline(HANDLED)
    states = step(initial_states(pipeline), advance(pipeline, initial_states(pipeline)), ingest=S)
    parallel = advance(pipeline, states)
    assert parallel.start == ["features-a", "features-b"]
    states = step(states, parallel, features_a=F)
    # train is decided only once features-b has ended; features-b keeps running
    assert advance(pipeline, states) == Decision()

    states = step(states, features_b=S)
    decision = advance(pipeline, states)
    # the skip cascades to deploy in the same call, and cleanup (always) runs after it
    assert decision.skip == {
        "train": "not run: its condition all_succeeded was not met (upstream 'features-a' failed)",
        "deploy": "not run: its condition all_succeeded was not met (upstream 'train' was skipped)",
    }
    # the branch after features-b, the any_failed alert and the always clean-up
    assert decision.start == ["report", "alert", "cleanup"]
    assert decision.outcome is None
    states = step(states, decision, report=S, alert=S)
    assert advance(pipeline, states) == Decision()  # cleanup still runs
    states = step(states, cleanup=S)
    assert advance(pipeline, states) == Decision(outcome=RunState.failed)


def test_a_step_is_skipped_only_after_every_need_ended_with_every_reason():
    pipeline = load_pipeline(FIVE)
    states = {**initial_states(pipeline), "ingest": S, "features-a": F, "features-b": R}
    assert advance(pipeline, states) == Decision()  # train waits for features-b
    states["features-b"] = C
    assert advance(pipeline, states).skip == {
        "train": "not run: its condition all_succeeded was not met "
        "(upstream 'features-a' failed, upstream 'features-b' was cancelled)",
        "deploy": "not run: its condition all_succeeded was not met (upstream 'train' was skipped)",
    }


def test_a_clean_run_skips_the_alert_and_runs_the_clean_up():
    pipeline = load_pipeline(HANDLED)
    states = initial_states(pipeline)
    for ended in (["ingest"], ["features-a", "features-b"], ["train", "report"], ["deploy"]):
        decision = advance(pipeline, states)
        states = applied(states, decision)
        assert all(states[s] is R for s in ended)
        states.update(dict.fromkeys(ended, S))
        if ended == ["train", "report"]:
            assert decision.skip == {
                "alert": "not run: its condition any_failed was not met (no step it needs "
                "failed: 'features-a' succeeded, 'features-b' succeeded)"
            }
    last = advance(pipeline, states)
    assert last == Decision(start=["cleanup"])
    states = step(states, last, cleanup=S)
    assert advance(pipeline, states).outcome is RunState.succeeded  # a skip is no failure


@pytest.mark.parametrize(
    ("need", "run_if", "runs"),
    [
        (S, "all_succeeded", True),
        (REUSED, "all_succeeded", True),
        (F, "all_succeeded", False),
        (SKIP, "all_succeeded", False),
        (C, "all_succeeded", False),
        (F, "any_failed", True),
        (S, "any_failed", False),
        (REUSED, "any_failed", False),
        (SKIP, "any_failed", False),  # a skipped need did not fail
        (C, "any_failed", False),  # nor did a cancelled one
        (S, "always", True),
        (F, "always", True),
        (SKIP, "always", True),
        (C, "always", True),
    ],
)
def test_each_condition_against_each_way_a_need_ended(need, run_if, runs):
    pipeline = load_pipeline(
        small(
            f"""
            up: {{notebook: u.ipynb}}
            ok: {{notebook: o.ipynb}}
            down: {{notebook: d.ipynb, needs: [up, ok], run_if: {run_if}}}
            """
        )
    )
    decision = advance(pipeline, {"up": need, "ok": S, "down": P})
    assert (decision.start == ["down"]) is runs
    assert ("down" in decision.skip) is not runs
    if not runs:
        assert decision.skip["down"].startswith(f"not run: its condition {run_if} was not met (")
        assert decision.outcome is run_outcome([need, S, SKIP])


def test_an_any_failed_step_without_needs_is_skipped_at_once_and_always_starts():
    pipeline = load_pipeline(
        small(
            """
            never: {notebook: n.ipynb, run_if: any_failed}
            first: {notebook: f.ipynb, run_if: always}
            """
        )
    )
    assert advance(pipeline, initial_states(pipeline)) == Decision(
        start=["first"],
        skip={
            "never": "not run: its condition any_failed was not met "
            "(it needs no step, so none can fail)"
        },
    )


def test_a_skip_cascades_down_a_long_chain_in_one_call():
    chain = "\n".join(f"s{i}: {{notebook: s{i}.ipynb, needs: [s{i - 1}]}}" for i in range(1, 30))
    pipeline = load_pipeline(small("s0: {notebook: s0.ipynb}\n" + chain + "\n"))
    decision = advance(pipeline, {**initial_states(pipeline), "s0": F})
    assert list(decision.skip) == [f"s{i}" for i in range(1, 30)]
    assert decision.outcome is RunState.failed


@pytest.mark.parametrize(
    ("states", "message"),
    [
        ({"ingest": P}, "no state for its steps features-a, features-b, train, deploy"),
        (
            {"ingest": P, "features-a": P, "features-b": P, "train": P, "deploy": P, "x": P},
            "states for steps it does not have: x",
        ),
        (
            {"ingest": "done", "features-a": P, "features-b": P, "train": P, "deploy": P},
            "step 'ingest' has the unknown state 'done': use one of pending, running",
        ),
        (
            {"ingest": R, "features-a": S, "features-b": P, "train": P, "deploy": P},
            "step 'features-a' succeeded but 'ingest', which it needs, is running",
        ),
    ],
)
def test_states_the_engine_never_made_are_refused(states, message):
    pipeline = load_pipeline(FIVE)
    with pytest.raises(ValueError, match=message):
        advance(pipeline, states)


def test_plain_strings_are_read_as_states():
    pipeline = load_pipeline(FIVE)
    states = {s: "pending" for s in pipeline.steps} | {"ingest": "succeeded"}
    assert advance(pipeline, states).start == ["features-a", "features-b"]


# -- the run's outcome -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("states", "outcome"),
    [
        ([S, REUSED, SKIP], RunState.succeeded),
        ([S, F, C], RunState.failed),  # a failure wins over a cancel
        ([S, C, SKIP], RunState.cancelled),
        ([S, F, R], None),
        ([S, P], None),
    ],
)
def test_the_outcome_once_every_step_ended(states, outcome):
    assert run_outcome(states) is outcome


# -- repair ------------------------------------------------------------------------------


def ended_with_features_a_failed():
    return {
        "ingest": S,
        "features-a": F,
        "features-b": S,
        "train": SKIP,
        "deploy": SKIP,
        "report": S,
        "alert": S,
        "cleanup": S,
    }


def test_a_repair_reruns_the_failed_step_and_what_follows_and_reuses_the_rest():
    pipeline = load_pipeline(HANDLED)
    states = ended_with_features_a_failed()
    assert run_outcome(states.values()) is RunState.failed
    plan = repair_plan(pipeline, states)
    assert plan == {
        "ingest": REUSED,
        "features-a": P,
        "features-b": REUSED,
        "train": P,
        "deploy": P,
        "report": REUSED,
        "alert": P,
        "cleanup": P,
    }
    first = advance(pipeline, plan)
    assert first == Decision(start=["features-a"])  # reused counts as succeeded
    states = step(plan, first, features_a=S)
    second = advance(pipeline, states)
    assert second.start == ["train"]
    assert second.skip == {
        "alert": "not run: its condition any_failed was not met (no step it needs failed: "
        "'features-a' succeeded, 'features-b' succeeded (reused))"
    }
    states = step(states, second, train=S)
    states = step(states, advance(pipeline, states), deploy=S)
    states = step(states, advance(pipeline, states), cleanup=S)
    assert advance(pipeline, states) == Decision(outcome=RunState.succeeded)


def test_a_repair_keeps_a_skip_no_failure_caused_and_reruns_cancelled_steps():
    pipeline = load_pipeline(HANDLED)
    states = {
        "ingest": S,
        "features-a": S,
        "features-b": S,
        "train": S,
        "deploy": F,
        "report": C,
        "alert": SKIP,  # nothing it needs failed
        "cleanup": S,
    }
    assert repair_plan(pipeline, states) == {
        "ingest": REUSED,
        "features-a": REUSED,
        "features-b": REUSED,
        "train": REUSED,
        "deploy": P,
        "report": P,
        "alert": SKIP,
        "cleanup": P,
    }
    assert advance(pipeline, repair_plan(pipeline, states)).start == ["deploy", "report"]


def test_a_repair_of_a_repaired_run_reuses_again():
    pipeline = load_pipeline(FIVE)
    states = {"ingest": REUSED, "features-a": S, "features-b": REUSED, "train": F, "deploy": SKIP}
    assert repair_plan(pipeline, states) == {
        "ingest": REUSED,
        "features-a": REUSED,
        "features-b": REUSED,
        "train": P,
        "deploy": P,
    }


def test_a_repair_of_a_running_or_a_successful_run_is_refused():
    pipeline = load_pipeline(HANDLED)
    running = {**ended_with_features_a_failed(), "report": R, "alert": P}
    with pytest.raises(ValueError) as info:
        repair_plan(pipeline, running)
    assert str(info.value) == (
        "the run of pipeline 'churn-training' has not ended ('report' is running, 'alert' is "
        "pending): wait for it to end, or cancel it, before repairing it"
    )
    succeeded = {**dict.fromkeys(pipeline.steps, S), "alert": SKIP, "train": REUSED}
    with pytest.raises(ValueError, match="nothing to repair: no step of this run of pipeline"):
        repair_plan(pipeline, succeeded)


# -- a step's parameters -----------------------------------------------------------------

OUTPUTS = {"ingest": {"rows": 1200}, "features-a": {}, "features-b": {}}
FILES = {
    "ingest": {"table": "/srv/shipyard/runs/pipelines/run-1/data/raw.parquet"},
    "features-a": {"features": "/srv/shipyard/runs/pipelines/run-1/data/a.parquet"},
    "features-b": {"features": "/srv/shipyard/runs/pipelines/run-1/data/b.parquet"},
}


def test_parameters_are_the_pipelines_then_the_runs_then_the_steps_then_its_inputs():
    pipeline = load_pipeline(FIVE)
    run = {"region": "us", "epochs": 10}
    assert step_parameters(pipeline, "train", run, OUTPUTS, FILES) == {
        "region": "us",  # the run's over the pipeline's
        "epochs": 20,  # the step's over the run's
        "learning_rate": 0.1,  # the pipeline's default
        "features_a": "/srv/shipyard/runs/pipelines/run-1/data/a.parquet",
        "features_b": "/srv/shipyard/runs/pipelines/run-1/data/b.parquet",
        "expected_rows": 1200,
    }
    assert step_parameters(pipeline, "ingest", {}, {}, {}) == {
        "region": "eu",
        "epochs": 5,
        "learning_rate": 0.1,
    }


def test_parameters_are_copies():
    pipeline = load_pipeline(FIVE.replace("  region: eu\n", "  region: {name: eu}\n"))
    outputs = {"ingest": {"rows": [1, 2]}}
    values = step_parameters(pipeline, "train", {}, outputs, FILES)
    values["region"]["name"] = "changed"
    values["expected_rows"].append(3)
    assert pipeline.parameters["region"] == {"name": "eu"}
    assert outputs["ingest"]["rows"] == [1, 2]


def test_a_run_parameter_the_pipeline_does_not_declare_is_refused():
    pipeline = load_pipeline(FIVE)
    with pytest.raises(ValueError) as info:
        step_parameters(pipeline, "ingest", {"regoin": "us", "seed": 1}, {}, {})
    assert str(info.value) == (
        "pipeline 'churn-training' declares no parameter 'regoin', 'seed': a run may set only "
        "the pipeline's parameters (its parameters: region, epochs, learning_rate); declare it "
        "under parameters in pipeline.yaml or fix the name"
    )


def test_an_input_whose_value_or_file_was_not_left_is_refused_naming_step_and_output():
    pipeline = load_pipeline(FIVE)
    with pytest.raises(ValueError) as info:
        step_parameters(pipeline, "train", {}, {"ingest": {}}, {"features-a": FILES["features-a"]})
    assert str(info.value) == (
        "step 'train' cannot start: its input 'features_b' reads "
        "steps.features-b.files.features, but step 'features-b' left no file 'features' "
        "(its files: none); its input 'expected_rows' reads steps.ingest.outputs.rows, but "
        "step 'ingest' recorded no output 'rows' (its outputs: none); the notebook of the step "
        "it reads must record every output and write every file it declares"
    )


def test_a_deploy_step_gets_its_settings_as_the_deploy_notebooks_parameters():
    pipeline = load_pipeline(FIVE)
    outputs = {**OUTPUTS, "train": {"model_uri": "runs:/0123/model"}}
    # the pipeline's and the run's parameters are not the deploy notebook's
    assert step_parameters(pipeline, "deploy", {}, outputs, FILES) == {
        "model_uri": "runs:/0123/model",
        "name": "churn",
        "gate": None,
        "canary": None,
        "data_path": None,
        "profile": "cpu-small",
    }


def test_a_deploy_steps_gate_and_canary_are_dicts_with_the_data_resolved_to_its_path():
    gated = FIVE.replace(
        "    name: churn\n",
        "    name: churn\n"
        "    profile: gpu\n"
        "    gate: {metric: rmse, direction: minimize, min_delta: 0.5,"
        " data: steps.features-b.files.features, target: churned}\n"
        "    canary: {percent: 10, window: 2m, max_error_rate: 0.05}\n",
    )
    pipeline = load_pipeline(gated)
    outputs = {**OUTPUTS, "train": {"model_uri": "models:/m-1"}}
    assert step_parameters(pipeline, "deploy", {}, outputs, FILES) == {
        "model_uri": "models:/m-1",
        "name": "churn",
        "gate": {"metric": "rmse", "direction": "minimize", "min_delta": 0.5, "target": "churned"},
        "canary": {
            "percent": 10,
            "window": 120,
            "max_error_rate": 0.05,
            "max_latency_p99_ms": None,
            "max_drift_psi": None,
        },
        "data_path": "/srv/shipyard/runs/pipelines/run-1/data/b.parquet",
        "profile": "gpu",
    }
    # what its model or data reads must have been left
    with pytest.raises(ValueError) as info:
        step_parameters(pipeline, "deploy", {}, OUTPUTS, {})
    assert str(info.value).startswith(
        "step 'deploy' cannot start: its setting 'model_uri' reads "
        "steps.train.outputs.model_uri, but step 'train' recorded no output 'model_uri' "
        "(its outputs: none); its setting 'data_path' reads steps.features-b.files.features, "
        "but step 'features-b' left no file 'features' (its files: none)"
    )


def test_an_unknown_step_has_no_parameters():
    pipeline = load_pipeline(FIVE)
    with pytest.raises(KeyError, match="'trian' is not a step of pipeline 'churn-training'"):
        step_parameters(pipeline, "trian", {}, OUTPUTS, FILES)


# -- cancel ------------------------------------------------------------------------------


def test_cancel_stops_the_running_steps_and_marks_the_pending_ones():
    pipeline = load_pipeline(HANDLED)
    states = {
        "ingest": S,
        "features-a": R,
        "features-b": S,
        "train": P,
        "deploy": P,
        "report": R,
        "alert": P,
        "cleanup": P,
    }
    plan = cancel(states)
    assert plan == CancelPlan(
        running=["features-a", "report"], pending=["train", "deploy", "alert", "cleanup"]
    )
    running, pending = plan  # a plain pair too
    states.update(dict.fromkeys(pending, C))
    states["report"] = C
    # nothing starts after a cancel, not even the always clean-up or the alert
    assert advance(pipeline, states) == Decision()
    states["features-a"] = F  # it failed before it could be stopped
    assert advance(pipeline, states) == Decision(outcome=RunState.failed)
    assert cancel(states) == CancelPlan(running=[], pending=[])


def test_a_cancelled_run_without_failures_ends_cancelled():
    pipeline = load_pipeline(FIVE)
    states = {"ingest": S, "features-a": R, "features-b": R, "train": P, "deploy": P}
    running, pending = cancel(states)
    assert (running, pending) == (["features-a", "features-b"], ["train", "deploy"])
    states.update(dict.fromkeys(running + pending, C))
    assert advance(pipeline, states) == Decision(outcome=RunState.cancelled)
