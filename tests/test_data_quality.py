"""Data quality of model inputs (issue 19 point 6): the checker, a real model server, the deployer's sums.

- The checker (:func:`hub_ext.runtime.quality.check`) is a pure function over a
  DataFrame and the expectations built from a signature and a training summary: every
  kind of issue, counted exactly, on small frames (one pass over the values) and large
  ones (vectorised), with pandas' object and string columns, and with summaries written
  before ranges and categories were recorded.
- :class:`hub_ext.services.deployer.metrics.InputIssues` sums the replicas' totals
  over their lives: restarts, replicas that miss a poll and replicas that leave.
- A real model server process (a scikit-learn pipeline with a numeric, an integer and
  a categorical input, saved by MLflow with its signature, and the training summary of
  :func:`hub_ext.runtime.drift.summarize`) answers good and bad rows as before (MLflow's
  400 where its schema enforcement refuses, 200 otherwise) and counts each issue in
  ``/stats`` and ``/metrics``; one started with ``--data-quality off`` counts nothing.

- The deployer (a real hub, its real LocalBackend, two replicas of a real MLflow model
  deployed with its training summary) shows the counts of both replicas, summed, in the
  version's metrics of its REST API.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from hub_ext.runtime import drift
from hub_ext.runtime.quality import OTHER, SMALL, Column, Expectations, QualityTracker, check
from hub_ext.services.deployer.metrics import INPUT_ISSUES, INPUT_ROWS, InputIssues

from .conftest import needs_root
from .hubtools import tagged, wait_for
from .services import LOCAL_DEPLOYER_CONFIG, SERVING_PROFILES, service_hub
from .test_modelserver import ModelServerProcess, assert_error

SIGNATURE = [Column("age", "double"), Column("visits", "long"), Column("city", "string")]
CITIES = ["paris", "lyon", "nice"]


def training_frame(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.uniform(18, 90, size=n),
            "visits": rng.integers(0, 20, size=n),
            "city": rng.choice(CITIES, size=n),
        }
    )


@pytest.fixture(scope="module")
def summary() -> dict:
    return json.loads(json.dumps(drift.summarize(training_frame())))


@pytest.fixture(scope="module")
def expect(summary) -> Expectations:
    return Expectations.build(SIGNATURE, summary)


# ------------------------------------------------------------------- the summary


def test_the_summary_records_ranges_categories_and_missing_shares():
    df = training_frame().assign(flag=lambda d: d.visits > 10)
    df.loc[:59, "city"] = None
    s = drift.summarize(df)
    assert s["version"] == drift.SUMMARY_VERSION == 2
    age, city, flag = s["features"]["age"], s["features"]["city"], s["features"]["flag"]
    assert age["min"] == df.age.min() and age["max"] == df.age.max()
    assert s["features"]["visits"]["min"] == 0 and s["features"]["visits"]["max"] == 19
    assert city["domain"] == sorted(CITIES) and city["missing"] == pytest.approx(0.1)
    assert flag["domain"] == ["False", "True"]
    many = pd.DataFrame({"id": [f"u{i}" for i in range(drift.MAX_DOMAIN + 1)]})
    assert "domain" not in drift.summarize(many)["features"]["id"]  # too many: not kept
    empty = drift.summarize(pd.DataFrame({"x": [np.nan, np.nan]}))["features"]["x"]
    assert "min" not in empty and empty["missing"] == 1.0


# ------------------------------------------------------------------- the checker


def test_a_clean_frame_has_no_issue(expect):
    train = training_frame()  # the rows the summary was made of
    assert check(train.iloc[:5], expect) == {}
    assert check(train.iloc[: SMALL * 4], expect) == {}
    assert check(train, expect) == {}
    assert check(training_frame(0), expect) == {}


def test_each_kind_of_issue_is_counted_per_feature(expect):
    df = pd.DataFrame(
        {
            "age": [30.0, np.nan, 200.0, 10.0],  # one missing, two outside 18..90
            "visits": [1, 2, 3, 25],  # 25 above the training maximum 19
            "city": ["paris", "atlantis", None, "lyon"],  # one unseen, one missing
        }
    )
    assert check(df, expect) == {
        ("missing_value", "age"): 1,
        ("out_of_range", "age"): 2,
        ("out_of_range", "visits"): 1,
        ("unseen_category", "city"): 1,
        ("missing_value", "city"): 1,
    }


def test_schema_violations(expect):
    df = pd.DataFrame(
        {
            "age": ["old", 40.0, 50],  # a string where a double goes
            "city": ["paris", 7, "nice"],  # a number where a string goes (and unseen: "7")
            "extra": [1, 2, 3],  # not in the signature
            "more": [1, 2, 3],
        }
    )
    assert check(df, expect) == {
        ("schema_violation", "age"): 1,
        ("schema_violation", "visits"): 3,  # required, absent: one per row
        ("schema_violation", "city"): 1,
        ("unseen_category", "city"): 1,
        ("schema_violation", OTHER): 6,  # two columns the signature does not name
    }
    fractions = pd.DataFrame({"age": [30.0], "visits": [2.5], "city": ["nice"]})
    assert check(fractions, expect) == {("schema_violation", "visits"): 1}
    wrong_dtypes = pd.DataFrame({"age": [True, False], "visits": [1, 2], "city": [1.5, 2.5]})
    got = check(wrong_dtypes, expect)
    assert got[("schema_violation", "age")] == 2 and got[("schema_violation", "city")] == 2
    optional = Expectations.build([*SIGNATURE, Column("note", "string", required=False)])
    assert check(training_frame(3), optional) == {("missing_value", "note"): 3}


@pytest.mark.parametrize("rows", [3, SMALL + 1, 1000], ids=["one-pass", "just-vectorised", "big"])
@pytest.mark.parametrize("strings", ["object", "str"])
def test_small_and_large_frames_and_string_dtypes_count_alike(expect, rows, strings):
    pattern = pd.DataFrame(
        {
            "age": [30.0, np.nan, 200.0],
            "visits": [1, 2, 30],
            "city": ["paris", "atlantis", None],
        }
    )
    df = pd.concat([pattern] * (rows // 3 + 1), ignore_index=True).iloc[:rows]
    df["city"] = df["city"].astype(object if strings == "object" else "string")
    per = [(i % 3) for i in range(rows)]
    expected = {
        ("missing_value", "age"): per.count(1),
        ("out_of_range", "age"): per.count(2),
        ("out_of_range", "visits"): per.count(2),
        ("unseen_category", "city"): per.count(1),
        ("missing_value", "city"): per.count(2),
    }
    assert check(df, expect) == expected


def test_a_summary_without_ranges_or_categories_checks_schema_and_missing_values(summary):
    old = json.loads(json.dumps(summary))
    old["version"] = 1
    for feature in old["features"].values():
        for key in ("min", "max", "domain"):
            feature.pop(key, None)
    expect = Expectations.build(SIGNATURE, old)
    df = pd.DataFrame({"age": [500.0, np.nan], "visits": [1, 99], "city": ["atlantis", "x"]})
    assert check(df, expect) == {("missing_value", "age"): 1}
    # and drift still works with it
    tracker = drift.DriftTracker(old)
    tracker.update(training_frame(200, seed=5))
    assert set(tracker.psi()) == {"age", "visits", "city"}


def test_without_a_signature_the_summary_features_are_checked(summary):
    expect = Expectations.build((), summary)
    df = pd.DataFrame({"age": [500.0], "whatever": ["ignored"]})
    assert check(df, expect) == {("out_of_range", "age"): 1}  # no schema: nothing else
    assert expect.features == ("age", "visits", "city")
    assert Expectations.build((), None).empty


def test_the_margin_widens_the_training_range(summary):
    low, high = summary["features"]["age"]["min"], summary["features"]["age"]["max"]
    width = high - low
    df = pd.DataFrame({"age": [high + 0.05 * width, low - 0.2 * width]})
    assert check(df, Expectations.build((), summary))[("out_of_range", "age")] == 2
    assert check(df, Expectations.build((), summary, margin=0.1)) == {("out_of_range", "age"): 1}
    with pytest.raises(ValueError, match="margin"):
        Expectations.build((), summary, margin=-1)


def test_labels_are_bounded_by_the_signature(expect):
    df = pd.DataFrame({f"c{i}": [1] for i in range(50)})
    got = check(df, expect)
    assert {feature for _, feature in got} <= set(expect.features)
    assert got[("schema_violation", OTHER)] == 50


def test_the_tracker_sums_requests(expect):
    seen = []
    tracker = QualityTracker(expect, on_counts=lambda counts, rows: seen.append((counts, rows)))
    tracker.update(pd.DataFrame({"age": [500.0], "visits": [1], "city": ["paris"]}))
    tracker.update(pd.DataFrame({"age": [600.0, 20.0], "visits": [1, 2], "city": ["x", "nice"]}))
    assert tracker.rows_checked == 3
    totals = tracker.totals()
    assert set(totals) == {"schema_violation", "missing_value", "out_of_range", "unseen_category"}
    assert totals["out_of_range"] == {"age": 2} and totals["unseen_category"] == {"city": 1}
    assert [rows for _, rows in seen] == [1, 2]


# ---------------------------------------------------- the deployer's sums over replicas


def _series(labels, kind, feature) -> float:
    return INPUT_ISSUES.labels(*labels, kind, feature)._value.get()


def test_the_deployer_sums_replica_totals_over_restarts_and_scaling():
    labels = ("dq-owner", "dq-model", "1")
    issues = InputIssues(labels)

    def report(rows, age):
        return {"rows_checked": rows, "input_issues": {"out_of_range": {"age": age}}}

    issues.update({"a": report(10, 2), "b": report(5, 1)}, ["a", "b"])
    assert issues.rows == 15 and issues.report() == {"out_of_range": {"age": 3}}
    issues.update({"a": report(12, 4)}, ["a", "b"])  # b missed this poll: kept as it was
    assert issues.rows == 17 and issues.report() == {"out_of_range": {"age": 5}}
    issues.update({"a": report(12, 4), "b": report(6, 1)}, ["a", "b"])  # b answers again
    assert issues.rows == 18 and issues.report() == {"out_of_range": {"age": 5}}
    issues.update({"a": report(3, 1), "b": report(6, 1)}, ["a", "b"])  # a restarted
    assert issues.rows == 21 and issues.report() == {"out_of_range": {"age": 6}}
    issues.update({"c": report(2, 2)}, ["c"])  # scaled: a and b gone, c new
    assert issues.rows == 23 and issues.report() == {"out_of_range": {"age": 8}}
    assert _series(labels, "out_of_range", "age") == 8
    assert INPUT_ROWS.labels(*labels)._value.get() == 23
    # malformed reports are ignored, not raised on
    issues.update({"c": {"rows_checked": "x", "input_issues": {"k": 3}}}, ["c"])
    assert issues.report() == {"out_of_range": {"age": 8}}

    from hub_ext.services.deployer.metrics import forget_version

    forget_version(*labels[:2], 1, issues=issues.labels())
    assert ("dq-owner", "dq-model", "1", "out_of_range", "age") not in {
        tuple(s.labels.values()) for m in INPUT_ISSUES.collect() for s in m.samples
    }


# ------------------------------------------------------------ a real model server


@pytest.fixture(scope="module")
def quality_model(tmp_path_factory):
    """A pipeline that takes missing values and unknown cities, saved by MLflow."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    workdir = tmp_path_factory.mktemp("data-quality")
    X = training_frame()
    X["city"] = X["city"].astype(object)
    y = (X.age > 50).astype(int)
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [("city", OneHotEncoder(handle_unknown="ignore"), ["city"])],
                    remainder="passthrough",
                ),
            ),
            ("clf", HistGradientBoostingClassifier(max_iter=10)),
        ]
    ).fit(X, y)
    model_dir = workdir / "model"
    mlflow.sklearn.save_model(
        model,
        model_dir,
        signature=infer_signature(X, model.predict(X)),
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
    )
    summary = workdir / "summary.json"
    summary.write_text(json.dumps(drift.summarize(X)))
    return model_dir, summary, workdir


@pytest.fixture(scope="module")
def servers(quality_model):
    """The model served with checks (and a 10 % margin) and without, started together."""
    model_dir, summary, workdir = quality_model
    on = ModelServerProcess(
        model_dir,
        workdir / "on.log",
        "--training-summary",
        str(summary),
        "--data-quality-margin",
        "0.1",
    )
    off = ModelServerProcess(
        model_dir, workdir / "off.log", "--training-summary", str(summary), "--data-quality", "off"
    )
    try:
        on.wait_ready()
        off.wait_ready()
        yield on, off
    finally:
        on.stop()
        off.stop()


def samples(server: ModelServerProcess, name: str) -> list:
    text = requests.get(server.url + "/metrics", timeout=10).text
    return [
        s
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def issues_in_metrics(server: ModelServerProcess) -> dict[tuple[str, str], float]:
    return {
        (s.labels["kind"], s.labels["feature"]): s.value
        for s in samples(server, "shipyard_model_input_issues_total")
    }


def rows_in_metrics(server: ModelServerProcess) -> float:
    (sample,) = samples(server, "shipyard_model_input_rows_total")
    return sample.value


def split(rows: list[list]) -> dict:
    return {"dataframe_split": {"columns": ["age", "visits", "city"], "data": rows}}


def test_the_model_server_counts_issues_and_answers_as_before(servers):
    on, off = servers
    before = issues_in_metrics(on)
    # every (kind, feature) series exists at 0 from the start, so rates see the first issue
    assert before[("out_of_range", "age")] == 0 and before[("unseen_category", "city")] == 0
    assert set(before) == {
        *(("schema_violation", f) for f in ("age", "visits", "city", OTHER)),
        *(("missing_value", f) for f in ("age", "visits", "city")),
        ("out_of_range", "age"),
        ("out_of_range", "visits"),
        ("unseen_category", "city"),
    }
    assert all(v == 0 for v in before.values())

    # good rows, concurrently (the fast path batches them): answered, nothing counted
    good = [split([[20.0 + i, i % 20, CITIES[i % 3]]]) for i in range(40)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(on.post, good))
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    assert issues_in_metrics(on) == before
    assert rows_in_metrics(on) == 40

    # out of range (the margin is 10 % of 18..90, about 7.2), unseen city: answered, counted
    r = on.post(split([[200.0, 3, "paris"], [95.0, 3, "atlantis"], [30.0, 3, "nice"]]))
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 3
    # missing values: the model takes them (NaN, an unseen None city), so answered too
    r = on.post({"dataframe_records": [{"age": None, "visits": 2, "city": None}]})
    assert r.status_code == 200, r.text
    # a string where a double goes: MLflow's schema enforcement refuses it; still counted
    refused = on.post(split([["old", 3, "paris"]]))
    assert "age (double)" in assert_error(refused, 400)["message"]
    # a required column absent: MLflow's 400 too, counted once per row
    missing_col = on.post({"dataframe_records": [{"age": 30.0, "city": "nice"}] * 2})
    assert_error(missing_col, 400)
    # a column the signature does not name: MLflow drops it and predicts
    extra = on.post({"dataframe_records": [{"age": 30.0, "visits": 1, "city": "nice", "z": 1}]})
    assert extra.status_code == 200, extra.text

    got = issues_in_metrics(on)
    grew = {key: got[key] - before[key] for key in got if got[key] != before[key]}
    assert grew == {
        ("out_of_range", "age"): 1,  # 200; 95 is within the margin
        ("unseen_category", "city"): 1,
        ("missing_value", "age"): 1,
        ("missing_value", "city"): 1,
        ("schema_violation", "age"): 1,
        ("schema_violation", "visits"): 2,
        ("schema_violation", OTHER): 1,
    }
    stats = requests.get(on.url + "/stats", timeout=10).json()
    assert stats["input_issues"]["out_of_range"] == {"age": 1}
    assert stats["input_issues"]["schema_violation"] == {"age": 1, "visits": 2, OTHER: 1}
    assert stats["rows_checked"] == 40 + 3 + 1 + 1 + 2 + 1 == rows_in_metrics(on)

    # the same requests to the server without checks: the same answers, nothing counted
    assert off.post(split([[200.0, 3, "atlantis"]])).status_code == 200
    assert_error(off.post(split([["old", 3, "paris"]])), 400)
    assert "input_issues" not in requests.get(off.url + "/stats", timeout=10).json()
    assert samples(off, "shipyard_model_input_issues_total") == []
    assert rows_in_metrics(off) == 0


def test_the_deployer_passes_the_options_only_when_they_are_not_the_defaults():
    from hub_ext.profiles.model import Profile
    from hub_ext.runtime.modelserver.contract import parse_args
    from hub_ext.services.deployer.backend import VersionSpec, model_server_args

    profile = Profile(slug="serving", display_name="Serving", environment="model-server")
    spec = VersionSpec("alice", "churn", 1, "models:/m/1", profile, 1)
    args = model_server_args(spec, "127.0.0.1", 8080)
    assert not any(a.startswith("--data-quality") for a in args)  # an older server starts
    off = model_server_args(
        dataclasses.replace(spec, data_quality=False, data_quality_margin=0.2), "h", 1
    )
    parsed = parse_args(off, environ={})
    assert parsed.data_quality == "off" and parsed.data_quality_margin == 0.2


def test_the_data_quality_options_are_documented_and_parsed():
    from hub_ext.runtime.modelserver.contract import options_environment, parse_args

    args = parse_args(["--model-uri", "m"], environ={})
    assert args.data_quality == "on" and args.data_quality_margin == 0.0
    env = options_environment(["--data-quality", "off", "--data-quality-margin", "0.25"])
    args = parse_args(["--model-uri", "m"], environ=env)
    assert args.data_quality == "off" and args.data_quality_margin == 0.25
    doc = (Path(__file__).parent.parent / "docs" / "deploy.md").read_text()
    for name in (
        "shipyard_model_input_issues_total",
        "shipyard_deployer_model_input_issues_total",
        "--data-quality-margin",
        "c.DeployerService.data_quality",
    ):
        assert name in doc, name


# ------------------------------------------------- the deployer, with real replicas


@pytest.fixture(scope="module")
def dq_hub(hub_factory, model_server_env):
    """A hub with the deployer on its real LocalBackend (replicas on the model server's
    environment, as the test account), polling the replicas' ``/stats`` twice a second."""
    with service_hub(
        hub_factory,
        "dataquality",
        tagged("sydq-"),
        tagged("shipyard-test-dq"),
        ["deployer"],
        configs={"deployer": LOCAL_DEPLOYER_CONFIG},
        profiles=SERVING_PROFILES,
    ) as hub:
        yield hub, hub.create_user("alice")


@needs_root
def test_input_issues_per_version_through_the_rest_api(dq_hub, model_dir):
    """Two replicas of a version deployed with its training summary: the issues of the
    requests sent through the hub's proxy, summed over both replicas, in the version's
    metrics (``GET api/deployments/{name}/metrics``), every request answered."""
    hub, token = dq_hub
    base = f"{hub.url}/services/deployer/"
    session = requests.Session()
    session.headers["Authorization"] = f"token {token}"
    train = pd.DataFrame({"x": np.arange(10, dtype=float)})  # the model's training inputs
    r = session.post(
        base + "api/deployments",
        json={
            "name": "quality",
            "model_uri": str(model_dir),
            "replicas": 2,
            "profile": "serving",
            "training_summary": json.loads(json.dumps(drift.summarize(train))),
        },
        timeout=60,
    )
    assert r.status_code == 201, r.text

    def version_metrics() -> dict:
        r = session.get(base + "api/deployments/quality/metrics", timeout=30)
        assert r.status_code == 200, r.text
        return r.json()["versions"]["1"]

    def serving():
        v = session.get(base + "api/deployments/quality/versions/1", timeout=30).json()
        if v["state"] == "failed":
            raise AssertionError(v["reason"])
        return v["state"] == "ready" and version_metrics()["replicas_ready"] == 2

    wait_for(serving, 180, 0.2, "two replicas serving")
    url = base + "models/alice/quality/invocations"
    bodies = [
        {"dataframe_split": {"columns": ["x"], "data": [[1.0], [2.0]]}},  # fine
        {"dataframe_split": {"columns": ["x"], "data": [[50.0]]}},  # outside 0..9
        {"dataframe_records": [{"x": -4.0}, {"x": 3.0}]},  # one outside
        {"dataframe_records": [{"x": 5.0, "note": "hi"}]},  # a column not in the signature
    ] * 5  # twenty requests, which the router spreads over both replicas
    for body in bodies:
        answer = session.post(url, json=body, timeout=60)
        assert answer.status_code == 200, answer.text

    def counted():
        m = version_metrics()
        return m if m["rows_checked"] >= 6 * 5 else None

    m = wait_for(counted, 30, 0.2, "the replicas' counts of all 30 rows")
    expected = {"out_of_range": {"x": 10}, "schema_violation": {"_other": 5}}
    assert m["input_issues"] == expected and m["rows_checked"] == 30
    time.sleep(1.5)  # three more polls of the replicas (monitor_interval 0.5): none adds
    m = version_metrics()
    assert m["input_issues"] == expected and m["rows_checked"] == 30
    assert session.delete(base + "api/deployments/quality", timeout=60).status_code == 204
