"""The pipeline file: its model, the graph checks, located errors, run order, and the schema.

Every error case loads a small YAML text and checks both what the message says and
the line and column it points at, since a message at the wrong line sends the user
to the wrong place.
"""

from __future__ import annotations

import json
import os
import textwrap

import pytest
import yaml

from hub_ext.services.scheduler.pipelines import (
    DeployStep,
    NotebookStep,
    Pipeline,
    PipelineError,
    downstream,
    load_pipeline,
    problems,
    spec,
    topological_order,
)
from hub_ext.services.scheduler.pipelines import load as load_module
from hub_ext.services.scheduler.pipelines.schema import (
    SCHEMA_ID,
    SCHEMA_PATH,
    pipeline_schema,
    schema_text,
)

#: Five steps: ingest, two feature steps in parallel, train, and a gated, canaried deploy.
EXAMPLE = """\
# yaml-language-server: $schema=pipeline.schema.json
name: churn-training
description: Nightly churn model, gated and canaried.
profile: cpu-small
parameters:
  region: eu
triggers:
  - kind: cron
    expression: "0 2 * * *"
    timezone: Europe/Paris
  - kind: file
    glob: landing/*.csv
    debounce_seconds: 120
steps:
  ingest:
    notebook: notebooks/ingest.ipynb
    timeout: 30m
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
      holdout: data/holdout.parquet
  train:
    notebook: notebooks/train.ipynb
    profile: gpu-large
    needs: [features-a, features-b]
    retries: 2
    timeout: 2h
    parameters:
      epochs: 20
    inputs:
      features_a: steps.features-a.files.features
      features_b: steps.features-b.files.features
      expected_rows: steps.ingest.outputs.rows
    outputs:
      model_uri: string
      auc: number
  deploy:
    type: deploy
    needs: [train]
    model: steps.train.outputs.model_uri
    name: churn
    gate:
      metric: f1
      direction: maximize
      min_delta: 0.005
      data: steps.features-b.files.holdout
    canary:
      percent: 10
      window: 1h
      max_error_rate: 0.01
      max_latency_p99_ms: 250
      max_drift_psi: 0.2
"""


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """The 1-based line of the ``occurrence``-th line of ``text`` containing ``needle``."""
    hits = [i + 1 for i, line in enumerate(text.splitlines()) if needle in line]
    assert len(hits) >= occurrence, f"{needle!r} is not in the text {occurrence} times"
    return hits[occurrence - 1]


def where(text: str, needle: str, on: str | None = None) -> tuple[int, int]:
    """Line and column (from 1) of ``needle`` on the first line containing ``on`` (or it)."""
    line = line_of(text, on or needle)
    return line, text.splitlines()[line - 1].index(needle) + 1


def errors_of(text: str, **kwargs) -> list:
    with pytest.raises(PipelineError) as info:
        load_pipeline(text, **kwargs)
    return info.value.errors


def one_error(text: str, **kwargs):
    errors = errors_of(text, **kwargs)
    assert len(errors) == 1, "\n".join(map(str, errors))
    return errors[0]


def minimal(steps: str, head: str = "name: p\nprofile: cpu\n") -> str:
    return head + "steps:\n" + textwrap.indent(textwrap.dedent(steps).strip("\n"), "  ") + "\n"


# -- the example -------------------------------------------------------------------------


def test_the_five_step_example_parses_with_its_values_normalised():
    pipeline = load_pipeline(EXAMPLE)
    assert list(pipeline.steps) == ["ingest", "features-a", "features-b", "train", "deploy"]
    ingest, train, deploy = (pipeline.steps[s] for s in ("ingest", "train", "deploy"))
    assert isinstance(ingest, NotebookStep) and isinstance(train, NotebookStep)
    assert ingest.timeout == 1800 and train.timeout == 7200  # "30m" and "2h", in seconds
    assert train.retries == 2 and train.needs == ["features-a", "features-b"]
    assert train.inputs["expected_rows"] == "steps.ingest.outputs.rows"
    assert train.outputs == {"model_uri": "string", "auc": "number"}
    assert pipeline.profile_of("train") == "gpu-large"
    assert pipeline.profile_of("ingest") == "cpu-small"  # the pipeline's default
    assert isinstance(deploy, DeployStep)
    assert deploy.gate is not None and deploy.gate.direction == "maximize"
    assert deploy.canary is not None and deploy.canary.window == 3600
    assert [t.kind for t in pipeline.triggers] == ["cron", "file"]
    assert pipeline.triggers[1].debounce_seconds == 120
    assert problems(pipeline) == []


def test_a_steps_parameters_are_the_pipelines_overridden_by_its_own():
    pipeline = load_pipeline(
        EXAMPLE.replace("      epochs: 20\n", "      epochs: 20\n      region: us\n")
    )
    assert pipeline.parameters_of("ingest") == {"region": "eu"}
    assert pipeline.parameters_of("train") == {"region": "us", "epochs": 20}
    assert pipeline.parameters_of("deploy") == {}
    pipeline.parameters_of("ingest")["region"] = "changed"  # a copy: the model is untouched
    assert pipeline.parameters == {"region": "eu"}


def test_topological_order_follows_needs_and_breaks_ties_by_the_files_order():
    assert topological_order(load_pipeline(EXAMPLE)) == [
        "ingest",
        "features-a",
        "features-b",
        "train",
        "deploy",
    ]
    # listed out of order: "report" first although it needs "b"; "z" and "a" are ready
    # at once and keep their listed order, "z" before "a"
    text = minimal(
        """
        report: {notebook: r.ipynb, needs: [b]}
        z: {notebook: z.ipynb}
        b: {notebook: b.ipynb, needs: [a]}
        a: {notebook: a.ipynb}
        c: {notebook: c.ipynb, needs: [z]}
        """
    )
    assert topological_order(load_pipeline(text)) == ["z", "a", "b", "report", "c"]


def test_downstream_is_what_a_repair_reruns_in_run_order():
    pipeline = load_pipeline(EXAMPLE)
    assert downstream(pipeline, ["features-a"]) == ["features-a", "train", "deploy"]
    assert downstream(pipeline, ["ingest"]) == list(pipeline.steps)
    assert downstream(pipeline, ["deploy"]) == ["deploy"]
    assert downstream(pipeline, ["features-b", "features-a"]) == [
        "features-a",
        "features-b",
        "train",
        "deploy",
    ]
    assert downstream(pipeline, []) == []
    with pytest.raises(KeyError, match="not steps of pipeline 'churn-training': trian"):
        downstream(pipeline, ["trian"])


# -- graph errors ------------------------------------------------------------------------


def test_a_cycle_names_its_steps_in_run_order_at_the_need_that_closes_it():
    text = minimal(
        """
        first: {notebook: f.ipynb}
        a:
          notebook: a.ipynb
          needs: [first, c]
        b:
          notebook: b.ipynb
          needs: [a]
        c:
          notebook: c.ipynb
          needs: [b]
        """
    )
    error = one_error(text)
    assert "the steps form a cycle: a -> b -> c -> a" in error.message
    assert "remove one of these needs, e.g. 'c' from the needs of 'a'" in error.message
    assert (error.line, error.column) == where(text, "c]", on="needs: [first, c]")
    assert str(error).startswith(f"pipeline.yaml:{error.line}:{error.column}: ")


def test_a_step_that_needs_itself_is_a_cycle_of_one():
    text = minimal("a:\n  notebook: a.ipynb\n  needs:\n    - a\n")
    error = one_error(text)
    assert error.message == "step 'a' needs itself: remove 'a' from its needs"
    assert error.line == line_of(text, "- a")


def test_two_separate_cycles_are_both_reported():
    text = minimal(
        """
        a: {notebook: a.ipynb, needs: [b]}
        b: {notebook: b.ipynb, needs: [a]}
        c: {notebook: c.ipynb, needs: [d]}
        d: {notebook: d.ipynb, needs: [c]}
        """
    )
    errors = errors_of(text)
    assert [e.message.split(" (")[0] for e in errors] == [
        "the steps form a cycle: a -> b -> a",
        "the steps form a cycle: c -> d -> c",
    ]
    assert [e.line for e in errors] == [line_of(text, "a: {"), line_of(text, "c: {")]


def test_an_unknown_need_is_refused_at_its_entry_with_a_suggestion():
    text = EXAMPLE.replace("needs: [features-a, features-b]", "needs: [features-a, featurs-b]")
    error = one_error(text)
    assert error.message.startswith(
        "step 'train' needs 'featurs-b', which is not a step of this pipeline "
        "(did you mean 'features-b'?): name one of ingest, features-a"
    )
    assert (error.line, error.column) == where(text, "featurs-b")


def test_an_input_from_a_step_that_does_not_run_before_is_refused():
    # features-b runs beside features-a, not before it
    text = EXAMPLE.replace(
        "      raw_table: steps.ingest.files.table\n    files:\n      features: data/a",
        "      raw_table: steps.features-b.files.holdout\n    files:\n      features: data/a",
    )
    error = one_error(text)
    assert error.message == (
        "step 'features-a' reads steps.features-b.files.holdout, but 'features-b' does not "
        "run before 'features-a': add 'features-b' to the needs of 'features-a' (or of a "
        "step it needs)"
    )
    assert (error.line, error.column) == where(text, "steps.features-b.files.holdout")


def test_an_input_from_a_step_needed_through_others_is_fine():
    # train reads ingest's output; it needs ingest only through the feature steps
    pipeline = load_pipeline(EXAMPLE)
    assert "ingest" not in pipeline.steps["train"].needs


def test_an_output_or_file_the_step_does_not_declare_is_refused():
    text = EXAMPLE.replace(
        "expected_rows: steps.ingest.outputs.rows", "n: steps.ingest.outputs.row"
    )
    text = text.replace(
        "features_a: steps.features-a.files.features", "features_a: steps.features-a.files.table"
    )
    first, second = errors_of(text)
    assert first.message == (
        "step 'features-a' declares no file 'table': declare it under steps.features-a.files "
        "or fix the name (its files: features)"
    )
    assert first.line == line_of(text, "steps.features-a.files.table")
    assert second.message.startswith(
        "step 'ingest' declares no output 'row' (did you mean 'rows'?): declare it under "
        "steps.ingest.outputs"
    )
    assert second.line == line_of(text, "steps.ingest.outputs.row")


def test_a_reference_to_no_step_and_a_deploy_model_not_upstream_are_refused():
    text = EXAMPLE.replace("model: steps.train.outputs.model_uri", "model: steps.trian.outputs.x")
    error = one_error(text)
    assert error.message == (
        "steps.trian.outputs.x names step 'trian', which is not a step of this pipeline "
        "(did you mean 'train'?)"
    )
    assert (error.line, error.column) == where(text, "steps.trian")

    text = EXAMPLE.replace("    needs: [train]\n", "    needs: [features-b]\n")
    error = one_error(text)
    assert "'train' does not run before 'deploy'" in error.message
    assert error.line == line_of(text, "model: steps.train")


def test_a_deploy_step_to_another_users_deployment_is_refused_at_its_name():
    for written, owner in (("bob/iris", "bob"), ("~bob/iris", "bob")):
        text = EXAMPLE.replace("    name: churn\n", f"    name: {written}\n")
        error = one_error(text)
        assert error.message == (
            f"steps.deploy.name: {written!r} names the deployment 'iris' of user {owner!r}: a "
            "deploy step deploys only to deployments of the pipeline's owner, named without an "
            "owner (and registered as '<owner>-<name>'); write the name alone, e.g. name: iris"
        )
        assert (error.line, error.column) == where(text, written)


def test_a_step_without_a_profile_needs_one_or_a_pipeline_default():
    text = minimal(
        "a:\n  notebook: a.ipynb\nb:\n  notebook: b.ipynb\n  profile: cpu\n", "name: p\n"
    )
    error = one_error(text)
    assert error.message == (
        "step 'a' has no profile: set its profile, or a profile for the whole pipeline at "
        "the top of the file"
    )
    assert (error.line, error.column) == where(text, "notebook: a.ipynb")


# -- YAML-level errors -------------------------------------------------------------------


def test_a_duplicate_key_is_refused_at_the_second_naming_the_first():
    text = EXAMPLE.replace("    retries: 2\n", "    retries: 2\n    retries: 3\n")
    error = one_error(text)
    assert error.message == (
        f"the key 'retries' is already set on line {line_of(text, 'retries: 2')}: YAML would "
        "keep only the last one; remove one of them"
    )
    assert (error.line, error.column) == where(text, "retries: 3")


def test_a_duplicate_step_and_a_duplicate_top_level_key_are_both_reported():
    text = minimal("a: {notebook: a.ipynb}\na: {notebook: b.ipynb}\n") + "name: q\n"
    errors = errors_of(text)
    assert [(e.line, e.message.split(" is already")[0]) for e in errors] == [
        (line_of(text, "a: {notebook: b.ipynb}"), "the key 'a'"),
        (line_of(text, "name: q"), "the key 'name'"),
    ]


def test_a_merge_key_may_be_overridden():
    text = minimal(
        """
        a: &base {notebook: a.ipynb, retries: 1}
        b:
          <<: *base
          retries: 3
        """
    )
    pipeline = load_pipeline(text)
    assert pipeline.steps["b"].retries == 3
    assert pipeline.steps["b"].notebook == "a.ipynb"


def test_yaml_syntax_errors_empty_files_and_non_mappings_are_located():
    error = one_error("name: p\nsteps: [a\n")
    assert error.message.startswith("not valid YAML: ")
    assert error.line == 3
    error = one_error("")
    assert (error.line, error.message) == (
        1,
        "the file is empty: a pipeline needs at least name and steps",
    )
    error = one_error("- a\n- b\n")
    assert error.message.startswith("a pipeline file is a mapping")
    error = one_error("name: p\n---\nname: q\n")
    assert "expected a single document" in error.message


def test_aliases_that_expand_too_far_or_loop_are_refused_before_building_the_data():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 7):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    text = "name: p\nparameters:\n" + textwrap.indent("\n".join(lines), "  ") + "\n"
    error = one_error(text + minimal("a: {notebook: a.ipynb}", ""))
    assert "more than 100000 values once its aliases are expanded" in error.message
    error = one_error("name: p\nsteps: &s\n  a: *s\n")
    assert error.message == "an alias refers to a node it is inside: remove the loop"


def test_keys_yaml_reads_as_booleans_or_numbers_are_refused_with_how_to_quote_them():
    text = "name: p\nprofile: cpu\non: 3\nsteps:\n  1: {notebook: a.ipynb}\n"
    first, second = errors_of(text)
    assert (first.line, first.column) == (3, 1)
    assert first.message == "the key 'on' is read as true or false, not as text: quote it ('on')"
    assert (second.line, second.column) == (5, 3)
    assert second.message == "the key '1' is read as a number, not as text: quote it ('1')"
    load_pipeline(text.replace("on: 3\n", "").replace("  1:", "  '1':"))


def test_a_file_over_the_size_limit_is_refused():
    error = one_error("name: p\n#" + "x" * load_module.MAX_FILE_BYTES + "\n")
    assert error.message == f"the file is over {load_module.MAX_FILE_BYTES} bytes"


# -- field errors ------------------------------------------------------------------------


def test_unknown_fields_are_refused_at_their_key_with_a_suggestion():
    text = EXAMPLE.replace("    retries: 2\n", "    retries: 2\n    timout: 3\n")
    text = text.replace("      metric: f1\n", "      metric: f1\n      treshold: 1\n")
    text = text.replace("description: Nightly", "descripton: Nightly")
    errors = errors_of(text)
    assert [str(e) for e in errors] == [
        f"pipeline.yaml:{line_of(text, 'descripton')}:1: unknown field 'descripton' in the "
        "file (did you mean 'description'?): remove it or fix its spelling",
        f"pipeline.yaml:{line_of(text, 'timout')}:5: unknown field 'timout' in steps.train "
        "(did you mean 'timeout'?): remove it or fix its spelling",
        f"pipeline.yaml:{line_of(text, 'treshold')}:7: unknown field 'treshold' in "
        "steps.deploy.gate: remove it or fix its spelling",
    ]


def test_a_step_of_an_unknown_type_or_with_the_other_kinds_fields_is_refused():
    text = minimal("a: {notebook: a.ipynb, type: shell}\n")
    error = one_error(text)
    assert error.message == (
        "steps.a.type: a step's type is notebook (the default) or deploy, not 'shell'"
    )
    assert (error.line, error.column) == where(text, "shell")
    text = minimal(
        "a: {notebook: a.ipynb, outputs: {m: string}}\n"
        "d: {type: deploy, notebook: x.ipynb, needs: [a], model: steps.a.outputs.m, name: m}\n"
    )
    error = one_error(text)
    assert error.message == (
        "unknown field 'notebook' in steps.d (a field of another kind of step or trigger): "
        "remove it or fix its spelling"
    )
    assert (error.line, error.column) == where(text, "notebook: x.ipynb")


def test_a_missing_field_points_at_the_mapping_that_lacks_it():
    text = minimal("a:\n  needs: []\n")
    error = one_error(text)
    assert error.message == "steps.a needs 'notebook': add it"
    assert (error.line, error.column) == where(text, "needs: []")
    error = one_error("steps:\n  a: {notebook: a.ipynb}\n")
    assert (error.line, error.message) == (1, "the file needs 'name': add it")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2 hours", "'2 hours' is not a duration: write whole seconds (90) or days, hours"),
        ("1m30h", "'1m30h' is not a duration"),
        ("0", "timeout must be between 1 and 86400 seconds, not 0"),
        ("2d", "timeout must be between 1 and 86400 seconds, not 172800"),
        ("90000", "timeout must be between 1 and 86400 seconds, not 90000"),
        ("true", "Input should be a valid integer"),
        ("'60'", "'60' is not a duration"),  # text is not a number, as in the jobs' API
    ],
)
def test_bad_durations_are_refused_at_the_value(value, message):
    text = minimal(f"a:\n  notebook: a.ipynb\n  timeout: {value}\n")
    error = one_error(text)
    assert error.message.startswith("steps.a.timeout: ")
    assert message in error.message
    assert (error.line, error.column) == where(text, value, on="timeout:")


@pytest.mark.parametrize(
    ("value", "duration"), [("90s", 90), ("30m", 1800), ("1h30m", 5400), ("1d", 86400), (45, 45)]
)
def test_durations_read_as_seconds(value, duration):
    text = minimal(f"a:\n  notebook: a.ipynb\n  timeout: {value}\n")
    assert load_pipeline(text).steps["a"].timeout == duration


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/home/alice/a.ipynb", "must be relative to the folder of pipeline.yaml"),
        ("../other/a.ipynb", "must not contain '..'"),
        ("nb/../../a.ipynb", "must not contain '..'"),
        ("~/a.ipynb", "must be relative"),
        ("nb//a.ipynb", "has an empty part"),
        (".hidden/a.ipynb", "no part may start with '.'"),
        ("script.py", "it must end in '.ipynb'"),
    ],
)
def test_bad_notebook_paths_are_refused_at_the_value(path, message):
    text = minimal(f"a:\n  notebook: '{path}'\n")
    error = one_error(text)
    assert error.message.startswith(f"steps.a.notebook: notebook {path!r}")
    assert message in error.message
    assert (error.line, error.column) == where(text, f"'{path}'")


def test_bad_step_ids_and_names_are_refused_at_the_key():
    text = minimal("Train:\n  notebook: a.ipynb\n", "name: My Pipeline\nprofile: cpu\n")
    first, second = errors_of(text)
    assert first.message.startswith("name: pipeline name 'My Pipeline' is not valid: use 1 to 63")
    assert first.line == 1
    assert second.message.startswith("steps.Train: step id 'Train' is not valid")
    assert (second.line, second.column) == where(text, "Train:")


@pytest.mark.parametrize(
    ("edit", "where", "message"),
    [
        (("retries: 2", "retries: 11"), "retries: 11", "retry_attempts must be between 0 and 10"),
        (("percent: 10", "percent: 100"), "percent: 100", "less than or equal to 99"),
        (("direction: maximize", "direction: up"), "direction: up", "'maximize' or 'minimize'"),
        (("min_delta: 0.005", "min_delta: -1"), "min_delta: -1", "min_delta must be at least 0"),
        (("min_delta: 0.005", "min_delta: '1'"), "min_delta: '1'", "must be a number, not '1'"),
        (("max_error_rate: 0.01", "max_error_rate: 2"), "max_error_rate: 2", "at most 1"),
        (("window: 1h", "window: 10s"), "window: 10s", "between 60 and 604800 seconds"),
        (("auc: number", "auc: float"), "auc: float", "'string', 'number', 'integer', 'boolean'"),
        (
            ("data: steps.features-b.files.holdout", "data: steps.train.outputs.auc"),
            "data: steps.train",
            "is not a reference to a step's file: write steps.<step id>.files.<name>",
        ),
        (
            ("model: steps.train.outputs.model_uri", "model: train/model_uri"),
            "model: train/",
            "is not a reference to a step's output or file",
        ),
        (("epochs: 20", "os.system: 20"), "os.system: 20", "is not a Python identifier"),
        (
            ("features_a: steps.features-a", "class: steps.features-a"),
            "class: steps",
            "parameter name 'class' is not a Python identifier",
        ),
        (("debounce_seconds: 120", "debounce_seconds: 7200"), "debounce_seconds", "3600"),
        (("timezone: Europe/Paris", "timezone: Mars/Olympus"), "timezone:", "unknown time zone"),
    ],
)
def test_field_errors_are_refused_at_their_value(edit, where, message):
    text = EXAMPLE.replace(*edit)
    assert text != EXAMPLE
    error = one_error(text)
    assert message in error.message
    assert error.line == line_of(text, where)


def test_a_canary_without_any_limit_is_refused():
    text = EXAMPLE.replace("      max_error_rate: 0.01\n      max_latency_p99_ms: 250\n", "")
    text = text.replace("      max_drift_psi: 0.2\n", "")
    error = one_error(text)
    assert error.message == (
        "steps.deploy.canary: a canary needs at least one limit: set max_error_rate, "
        "max_latency_p99_ms or max_drift_psi"
    )
    assert error.line == line_of(text, "percent: 10")  # the canary mapping starts there


def test_a_parameter_set_both_as_a_value_and_as_an_input_is_refused():
    text = EXAMPLE.replace("      epochs: 20\n", "      epochs: 20\n      features_a: x\n")
    error = one_error(text)
    assert (
        error.message == "steps.train: features_a is set both in parameters and in inputs: keep one"
    )
    assert error.line == line_of(text, "notebook: notebooks/train.ipynb")


def test_needs_listing_a_step_twice_and_a_trigger_without_kind_are_refused():
    text = minimal("a: {notebook: a.ipynb}\nb: {notebook: b.ipynb, needs: [a, a]}\n")
    assert "needs lists 'a' twice" in one_error(text).message
    text = "name: p\nprofile: cpu\ntriggers:\n  - glob: x.csv\n" + minimal(
        "a: {notebook: a.ipynb}", ""
    )
    error = one_error(text)
    assert error.message.startswith("triggers[0] needs a kind: one of after_job, after_pipeline")
    assert error.line == 4


def test_other_triggers_are_the_jobs_trigger_models_plus_after_pipeline():
    text = (
        "name: p\nprofile: cpu\ntriggers:\n  - kind: webhook\n  - kind: after_pipeline\n"
        "    pipeline: nightly-etl\n"
        f"  - kind: after_job\n    upstream_job_id: {'a' * 32}\n"
    ) + minimal("a: {notebook: a.ipynb}", "")
    pipeline = load_pipeline(text)
    assert [t.kind for t in pipeline.triggers] == ["webhook", "after_pipeline", "after_job"]
    error = one_error(text.replace("nightly-etl", "Nightly ETL"))
    assert error.message.startswith("triggers[1].pipeline: pipeline name 'Nightly ETL'")
    assert (error.line, error.column) == where(
        text.replace("nightly-etl", "Nightly ETL"), "Nightly ETL"
    )


def test_every_error_is_reported_at_once_in_the_files_order():
    text = EXAMPLE.replace("timeout: 30m", "timeout: soon").replace("percent: 10", "percent: 0")
    text = text.replace("    retries: 2\n", "    retries: 2\n    retries: 2\n")
    errors = errors_of(text)
    assert [e.line for e in errors] == sorted(e.line for e in errors)
    assert len(errors) == 3
    assert str(PipelineError(errors)) == "\n".join(
        f"{e.source}:{e.line}:{e.column}: {e.message}" for e in errors
    )


def test_the_source_name_is_the_one_given_and_the_error_is_a_400():
    error = errors_of("name: p\n", source="ml/pipeline.yaml")[0]
    assert str(error).startswith("ml/pipeline.yaml:1:1: ")
    with pytest.raises(PipelineError) as info:
        load_pipeline("name: p\n")
    assert info.value.status == 400


# -- notebooks on disk -------------------------------------------------------------------


def write_notebooks(base, names):
    for name in names:
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')


NOTEBOOKS = ["ingest", "features_a", "features_b", "train"]


def test_notebooks_that_exist_beside_the_file_pass(tmp_path):
    write_notebooks(tmp_path, [f"notebooks/{n}.ipynb" for n in NOTEBOOKS])
    assert load_pipeline(EXAMPLE, base_dir=tmp_path).name == "churn-training"


def test_a_missing_notebook_is_reported_at_its_steps_notebook_line(tmp_path):
    write_notebooks(tmp_path, [f"notebooks/{n}.ipynb" for n in NOTEBOOKS if n != "train"])
    error = one_error(EXAMPLE, base_dir=tmp_path)
    assert error.message.startswith("step 'train': no notebook 'notebooks/train.ipynb' beside")
    assert (error.line, error.column) == where(EXAMPLE, "notebooks/train.ipynb")


def test_a_notebook_that_links_out_of_the_folder_or_is_a_folder_is_refused(tmp_path):
    base = tmp_path / "project"
    write_notebooks(base, [f"notebooks/{n}.ipynb" for n in NOTEBOOKS if n != "train"])
    write_notebooks(tmp_path, ["elsewhere/train.ipynb"])
    os.symlink(tmp_path / "elsewhere", base / "notebooks" / "sub")
    text = EXAMPLE.replace("notebooks/train.ipynb", "notebooks/sub/train.ipynb")
    error = one_error(text, base_dir=base)
    assert "no notebook 'notebooks/sub/train.ipynb' beside pipeline.yaml" in error.message
    (base / "notebooks" / "dir.ipynb").mkdir()
    text = EXAMPLE.replace("notebooks/train.ipynb", "notebooks/dir.ipynb")
    error = one_error(text, base_dir=base)
    assert error.message == "step 'train': 'notebooks/dir.ipynb' is not a file"


def test_notebooks_are_not_checked_without_a_base_dir():
    assert load_pipeline(EXAMPLE).steps["ingest"].notebook == "notebooks/ingest.ipynb"


# -- the JSON schema ---------------------------------------------------------------------


def test_the_checked_in_schema_is_the_generated_one():
    assert SCHEMA_PATH.read_text(encoding="utf-8") == schema_text(), (
        "pipeline.schema.json is out of date: run "
        "`python -m hub_ext.services.scheduler.pipelines.schema` and commit it"
    )
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["$id"] == SCHEMA_ID
    assert schema["title"] == "Shipyard pipeline"
    assert schema["description"].startswith("A Shipyard pipeline (pipeline.yaml)")
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"name", "steps"}


OWN_MODELS = [
    spec.Pipeline,
    spec.NotebookStep,
    spec.DeployStep,
    spec.Gate,
    spec.Canary,
    spec.PipelineFileTrigger,
    spec.AfterPipelineTrigger,
]


@pytest.mark.parametrize("model", OWN_MODELS, ids=lambda m: m.__name__)
def test_every_field_of_the_pipelines_own_models_is_described_in_the_schema(model):
    schema = pipeline_schema()
    described = schema if model is Pipeline else schema["$defs"][model.__name__]
    assert described.get("description"), f"{model.__name__} has no docstring"
    own = model.__annotations__
    missing = [f for f in own if not described["properties"][f].get("description")]
    assert not missing, f"{model.__name__} fields without a description: {missing}"


def test_the_schema_validates_the_example_and_refuses_what_the_model_refuses():
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema is not installed: the schema's own check is skipped"
    )
    schema = pipeline_schema()
    validator = jsonschema.Draft202012Validator(schema)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert list(validator.iter_errors(yaml.safe_load(EXAMPLE))) == []
    for old, new in [
        ("retries: 2", "retries: 2\n    timout: 3"),  # an unknown field
        ("timeout: 2h", "timeout: 2 hours"),
        ("notebook: notebooks/train.ipynb", "notebook: ../train.ipynb"),
        ("notebook: notebooks/train.ipynb", "notebook: train.py"),
        ("percent: 10", "percent: 100"),
        ("model: steps.train.outputs.model_uri", "model: train"),
        ("name: churn\n", "name: Churn\n"),
        ("  train:\n", "  Train:\n"),
        ("features_a: steps.features-a", "lambda: steps.features-a"),
        ("type: deploy", "type: deploy\n    notebook: x.ipynb"),  # a field of the other kind
    ]:
        data = yaml.safe_load(EXAMPLE.replace(old, new, 1))
        assert list(validator.iter_errors(data)), f"the schema accepts {new!r}"
        with pytest.raises(PipelineError):
            load_pipeline(EXAMPLE.replace(old, new, 1))
    no_limit = yaml.safe_load(EXAMPLE)
    for key in ("max_error_rate", "max_latency_p99_ms", "max_drift_psi"):
        del no_limit["steps"]["deploy"]["canary"][key]
    assert list(validator.iter_errors(no_limit)), "the schema accepts a canary with no limit"
