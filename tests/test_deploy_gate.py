"""A deploy step's gate and its pure parts, without a hub: the metric table, the decision,
the production version, the canary policy's body, the lineage and the built-in notebook.

The deploy step end to end (a real hub, tracking, scheduler and deployer) is in
tests/test_pipeline_deploy.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from hub_ext.runtime import deploy_step
from hub_ext.runtime.gate import METRICS, check_metric, decide, score
from hub_ext.services.scheduler.pipelines.load import PipelineError, load_pipeline
from hub_ext.services.scheduler.pipelines.spec import DEPLOY_OUTPUTS
from hub_ext.services.scheduler.pipelines.store import deploy_summary

# -- the metric table ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "metric, y_true, y_pred, expected",
    [
        ("rmse", [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 6.0], 1.0),  # sqrt(4 / 4)
        ("mae", [1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 3.0, 1.0], 1.0),  # (1 + 0 + 0 + 3) / 4
        ("r2", [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 1.0),
        ("r2", [1.0, 2.0, 3.0], [2.0, 2.0, 2.0], 0.0),  # the mean scores 0
        ("accuracy", [0, 1, 1, 0], [0, 1, 0, 0], 0.75),
        # binary (labels within {0, 1}): precision 1/1, recall 1/2, f1 2/3
        ("precision", [0, 1, 1, 0], [0, 1, 0, 0], 1.0),
        ("recall", [0, 1, 1, 0], [0, 1, 0, 0], 0.5),
        ("f1", [0, 1, 1, 0], [0, 1, 0, 0], 2 / 3),
        # booleans are binary too
        ("recall", [False, True, True, False], [False, True, False, False], 0.5),
        # macro over the target's labels: per class recall 1, 1/2, 0 -> 1/2
        ("recall", [0, 1, 1, 2], [0, 1, 0, 0], 0.5),
        # a label never predicted scores 0, without a warning
        ("precision", ["a", "b", "c"], ["a", "a", "a"], (1 / 3) / 3),
    ],
)
def test_each_metric_of_the_table_computes_what_its_name_says(metric, y_true, y_pred, expected):
    assert score(metric, y_true, y_pred) == pytest.approx(expected)


def test_the_table_is_the_documented_one_and_an_unknown_metric_names_every_metric():
    assert list(METRICS) == ["rmse", "mae", "r2", "accuracy", "f1", "precision", "recall"]
    assert {m: METRICS[m].better for m in ("rmse", "mae")} == dict.fromkeys(
        ("rmse", "mae"), "minimize"
    )
    for name in METRICS:  # the module docstring's table has a row for each
        assert f"\n{name} " in deploy_step.__doc__ or name in (
            Path(deploy_step.__file__).with_name("gate.py").read_text()
        )
    with pytest.raises(ValueError) as info:
        check_metric("auc")
    assert str(info.value) == (
        "the gate's metric 'auc' is not one Shipyard computes: use one of rmse, mae, r2, "
        "accuracy, f1, precision, recall"
    )
    with pytest.raises(ValueError, match="use one of rmse"):
        score("auc", [1], [1])


def test_a_score_needs_one_prediction_per_row_and_at_least_one_row():
    with pytest.raises(ValueError, match="made 2 predictions for 3 rows"):
        score("rmse", [1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="has no rows"):
        score("rmse", [], [])


# -- the decision -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "direction, min_delta, candidate, production, decision",
    [
        # nothing in production: passed, whatever the figure
        ("minimize", 0.5, 99.0, None, "passed"),
        # minimize: better by at least min_delta
        ("minimize", 0.0, 1.0, 2.0, "passed"),
        ("minimize", 1.0, 1.0, 2.0, "passed"),  # exactly min_delta better
        ("minimize", 1.5, 1.0, 2.0, "refused"),  # better, not by enough
        ("minimize", 0.0, 3.0, 2.0, "refused"),  # worse
        ("minimize", 0.0, 2.0, 2.0, "passed"),  # as good, with min_delta 0
        ("minimize", 0.01, 2.0, 2.0, "refused"),  # as good, with a min_delta
        # maximize: the other way round
        ("maximize", 0.0, 0.9, 0.8, "passed"),
        ("maximize", 0.1, 0.9, 0.8, "passed"),  # 0.9 - 0.8 is 0.0999...: as written, enough
        ("maximize", 0.2, 0.9, 0.8, "refused"),
        ("maximize", 0.0, 0.7, 0.8, "refused"),
        # a NaN candidate never passes; a NaN production lets a number pass
        ("maximize", 0.0, math.nan, 0.8, "refused"),
        ("maximize", 0.0, math.nan, None, "refused"),
        ("minimize", 0.0, 1.0, math.nan, "passed"),
    ],
)
def test_the_gate_passes_only_a_candidate_better_by_min_delta_in_its_direction(
    direction, min_delta, candidate, production, decision
):
    decided = decide("m", direction, min_delta, candidate, production)
    assert decided.decision == decision
    assert decided.passed is (decision == "passed")
    assert (decided.candidate, decided.production) == (candidate, production) or math.isnan(
        candidate
    )
    assert decided.reason.startswith(decision)


def test_the_decision_says_both_figures_and_why():
    refused = decide("rmse", "minimize", 0.1, 2.5, 2.0)
    assert refused.reason == (
        "refused: candidate rmse 2.5, production 2 (smaller is better, min_delta 0.1): the "
        "candidate is not better by min_delta"
    )
    passed = decide("r2", "maximize", 0.0, 0.95, 0.9)
    assert passed.reason == (
        "passed: candidate r2 0.95, production 0.9 (larger is better, min_delta 0)"
    )
    first = decide("rmse", "minimize", 0.0, 1.25, None)
    assert first.reason == "passed: nothing in production; the candidate's rmse is 1.25"


def test_the_decision_refuses_a_direction_or_min_delta_the_file_cannot_say():
    with pytest.raises(ValueError, match="maximize or minimize, not 'up'"):
        decide("rmse", "up", 0.0, 1.0, 2.0)
    with pytest.raises(ValueError, match="0 or more, not -1"):
        decide("rmse", "minimize", -1, 1.0, 2.0)


# -- production, the canary policy, lineage -----------------------------------------------


def _deployment(traffic: dict, versions=(1, 2, 3)) -> dict:
    return {
        "name": "churn",
        "traffic": traffic,
        "versions": [{"version": v, "model_uri": f"models:/alice-churn/{v}"} for v in versions],
    }


@pytest.mark.parametrize(
    "traffic, expected",
    [
        ({"1": 100}, 1),
        ({"1": 90, "2": 10}, 1),  # a canary at 10 % is not production
        ({"2": 10, "3": 90}, 3),
        ({"2": 50, "3": 50}, 3),  # a tie: the newer one
        ({"1": 0, "2": 0}, None),  # nothing routed: nothing in production
        ({}, None),
    ],
)
def test_production_is_the_version_with_the_largest_traffic_share(traffic, expected):
    found = deploy_step.production_version(_deployment(traffic))
    assert (found["version"] if found else None) == expected


def test_no_deployment_has_no_production():
    assert deploy_step.production_version(None) is None


def test_the_canary_policy_is_the_deployers_contract_with_the_window_in_seconds():
    assert deploy_step.canary_body(None) is None
    assert deploy_step.canary_body(
        {"percent": 10, "window": 120, "max_error_rate": 0.05, "max_latency_p99_ms": None}
    ) == {
        "percent": 10,
        "window_seconds": 120,
        "max_error_rate": 0.05,
        "max_latency_p99_ms": None,
        "max_drift_psi": None,
        "min_requests": deploy_step.CANARY_MIN_REQUESTS,
    }


def test_lineage_names_the_pipeline_run_and_step_when_the_scheduler_set_them():
    assert deploy_step.pipeline_lineage({}) == {}
    assert deploy_step.pipeline_lineage(
        {"SHIPYARD_PIPELINE_RUN_ID": "r1", "SHIPYARD_PIPELINE_STEP": "deploy", "X": "y"}
    ) == {"pipeline_run_id": "r1", "pipeline_step": "deploy"}


# -- the step's outputs, its notebook, what the owner is told ------------------------------


def test_the_outputs_the_step_records_are_the_ones_the_scheduler_declares():
    assert deploy_step.OUTPUTS == {k: v.value for k, v in DEPLOY_OUTPUTS.items()}


def test_the_checked_in_notebook_is_the_generated_one_with_a_parameters_cell():
    path = Path(deploy_step.__file__).with_name(deploy_step.NOTEBOOK_NAME)
    assert path.read_text() == deploy_step.notebook(), (
        "regenerate it: python -m hub_ext.runtime.deploy_step"
    )
    cells = json.loads(path.read_text())["cells"]
    parameters = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
    assert len(parameters) == 1
    names = {line.split(" = ")[0] for line in "".join(parameters[0]["source"]).splitlines()}
    # exactly what engine.deploy_parameters gives
    assert names == {"model_uri", "name", "gate", "canary", "data_path", "profile"}


def test_the_owner_is_told_the_decision_with_its_figures_and_the_canarys_end():
    refused = {"decision": "refused", "reason": "refused: candidate rmse 3, production 1 (...)"}
    assert deploy_summary(refused) == refused["reason"]
    passed = {
        "decision": "passed",
        "reason": "passed: candidate rmse 1, production 2",
        "version": 2,
        "canary_state": "rolled_back",
        "canary_reason": "error rate 0.2 > 0.05",
    }
    assert deploy_summary(passed) == (
        "passed: candidate rmse 1, production 2; version 2 deployed; canary rolled_back "
        "(error rate 0.2 > 0.05)"
    )
    first = {"decision": "passed", "reason": "passed: nothing", "version": 1}
    first["canary_reason"] = "no canary: the first version takes all the traffic"
    assert deploy_summary(first) == (
        "passed: nothing; version 1 deployed; no canary: the first version takes all the traffic"
    )


# -- the file -----------------------------------------------------------------------------

GATED = """\
name: gated
profile: tiny
steps:
  train:
    notebook: train.ipynb
    outputs: {model_uri: string}
    files: {holdout: holdout.csv}
  deploy:
    type: deploy
    needs: [train]
    model: steps.train.outputs.model_uri
    name: churn
    gate:
      metric: {metric}
      direction: minimize
      data: steps.train.files.holdout
  report:
    notebook: report.ipynb
    needs: [deploy]
    inputs: {decision: steps.deploy.outputs.decision}
"""


def test_a_gate_names_a_metric_of_the_table_at_its_line_and_later_steps_read_the_decision():
    pipeline = load_pipeline(GATED.replace("{metric}", "rmse"), "p/pipeline.yaml")
    assert pipeline.steps["deploy"].gate.target == "target"
    with pytest.raises(PipelineError) as info:
        load_pipeline(GATED.replace("{metric}", "auc"), "p/pipeline.yaml")
    assert str(info.value) == (
        "p/pipeline.yaml:14:15: steps.deploy.gate.metric: 'auc' is not a metric a gate "
        "computes: use one of rmse, mae, r2, accuracy, f1, precision, recall"
    )
    with pytest.raises(PipelineError, match="step 'deploy' declares no output 'decisoin'"):
        load_pipeline(
            GATED.replace("{metric}", "rmse").replace(".decision}", ".decisoin}"),
            "p/pipeline.yaml",
        )


def test_the_docs_gated_deploy_example_is_a_valid_pipeline():
    docs = (Path(__file__).resolve().parent.parent / "docs" / "pipelines.md").read_text()
    section = docs.split("## Gated deploy", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    pipeline = load_pipeline(example, "docs/pipelines.md")
    deploy = pipeline.steps["deploy"]
    assert deploy.gate.metric == "rmse" and deploy.canary.window == 600
    assert pipeline.steps["report"].inputs == {"decision": "steps.deploy.outputs.decision"}


# -- what makes the step fail, with what to fix --------------------------------------------


def test_held_out_data_that_is_missing_or_lacks_the_target_fails_the_step(tmp_path):
    with pytest.raises(deploy_step.DeployStepError, match="is not a file: the step that writes"):
        deploy_step.read_holdout(str(tmp_path / "missing.csv"), "target")
    data = tmp_path / "holdout.csv"
    data.write_text("a,b,y\n1,2,3\n")
    with pytest.raises(deploy_step.DeployStepError) as info:
        deploy_step.read_holdout(str(data), "target")
    assert str(info.value) == (
        f"the held-out data {data} has no column 'target' (its columns: a, b, y): set the "
        "gate's target to the column the model predicts"
    )
    inputs, truth = deploy_step.read_holdout(str(data), "y")
    assert list(inputs.columns) == ["a", "b"] and list(truth) == [3]


def test_a_model_that_does_not_load_fails_the_step_naming_it(tmp_path):
    data = tmp_path / "holdout.csv"
    data.write_text("a,target\n1,2\n")
    inputs, truth = deploy_step.read_holdout(str(data), "target")
    missing = str(tmp_path / "no-model")
    with pytest.raises(
        deploy_step.DeployStepError, match=f"cannot load the candidate model {missing}"
    ):
        deploy_step.model_score(missing, "rmse", inputs, truth, "candidate")


@pytest.mark.parametrize(
    "uri, foreign",
    [
        ("models:/bob-iris/1", "bob-iris"),
        ("models:/bob-iris@champion", "bob-iris"),
        ("models:/alicebob-iris/2", "alicebob-iris"),  # not 'alice-' followed by a name
        ("models:/alice-iris/3", None),
        ("models:/alice-iris@champion", None),
        ("models:/m-0123456789abcdef0123456789abcdef", None),  # a logged model: asked
        ("runs:/0123456789abcdef0123456789abcdef/model", None),  # a run: asked
    ],
)
def test_a_registered_model_of_another_user_is_refused_by_its_name(uri, foreign):
    why = deploy_step.foreign_model(uri, "alice")
    if foreign is None:
        assert why is None
    else:
        assert why is not None and why.startswith(
            f"the model to deploy, {uri}, is the registered model {foreign!r}, which is not "
            "yours: a deploy step deploys only models you own (yours are registered as "
            "'alice-<deployment>')"
        ), why


def test_an_unknown_metric_fails_the_step_before_anything_is_loaded(monkeypatch):
    monkeypatch.delenv("JUPYTERHUB_USER", raising=False)  # nothing else would get this far
    with pytest.raises(deploy_step.DeployStepError, match="use one of rmse, mae"):
        deploy_step.deploy("runs:/x/model", "churn", {"metric": "auc"}, None, None, None)


# -- following the canary --------------------------------------------------------------------


class Versions:
    """The deployer's version page, answering each look with the next canary state."""

    def __init__(self, *states: str | None):
        self.states = list(states)
        self.looks = 0

    def get_version(self, name: str, number: int) -> dict:
        state = self.states[min(self.looks, len(self.states) - 1)]
        self.looks += 1
        canary = {"state": state, "reason": f"{state} by the policy"} if state else None
        return {"version": number, "state": "ready", "canary": canary}


def test_the_step_follows_the_canary_until_the_deployer_promotes_or_rolls_it_back():
    for end in ("promoted", "rolled_back"):
        versions = Versions("waiting", "watching", "watching", end)
        canary = deploy_step._wait_canary(versions, "churn", 2, 60, lambda s: None)
        assert canary == {"state": end, "reason": f"{end} by the policy"}
        assert versions.looks == 4


def test_a_canary_still_undecided_after_its_window_and_margin_fails_the_step(monkeypatch):
    monkeypatch.setattr(deploy_step, "CANARY_MARGIN_SECONDS", 0)
    with pytest.raises(deploy_step.DeployStepError) as info:
        deploy_step._wait_canary(Versions("watching"), "churn", 2, 0, lambda s: None)
    assert str(info.value).startswith(
        "the canary of version 2 of 'churn' is still watching 0 s after it started"
    )


def test_a_rerun_after_a_scheduler_restart_follows_the_version_it_made_instead_of_another():
    env = {"SHIPYARD_PIPELINE_RUN_ID": "r1", "SHIPYARD_PIPELINE_STEP": "deploy"}
    deployment = {
        "versions": [
            {"version": 1, "lineage": {"pipeline_run_id": "r0", "pipeline_step": "deploy"}},
            {"version": 2, "lineage": {"pipeline_run_id": "r1", "pipeline_step": "deploy"}},
            {"version": 3, "lineage": None},
        ]
    }
    assert deploy_step.deployed_by_this_step(deployment, env)["version"] == 2
    other_step = {**env, "SHIPYARD_PIPELINE_STEP": "deploy-b"}
    assert deploy_step.deployed_by_this_step(deployment, other_step) is None
    assert deploy_step.deployed_by_this_step(deployment, {}) is None, "not a pipeline step"
    assert deploy_step.deployed_by_this_step(None, env) is None
