"""The shipped Prometheus config, alert rules and Grafana dashboards, checked without a hub.

promtool checks the scrape config and the rules and runs the rules' unit tests
(config/prometheus/tests/); every dashboard query reads only metric names that
Shipyard or JupyterHub export (from their registries) and is one a real Prometheus
parses and answers (with the shipped rules loaded). The live scrape of a hub, its
services and a replica is tests/test_prometheus_live.py.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from .prometheus import (
    BUILTIN,
    DASHBOARDS,
    PROMTOOL,
    SHIPPED,
    PrometheusServer,
    config_for_hub,
    dashboard_queries,
    exported_names,
    metric_names,
    missing,
    shipped_config,
)

_missing = missing()
needs_prometheus = pytest.mark.skipif(bool(_missing), reason=_missing or "")

#: Labels every Shipyard series uses for the same thing (docs/observability.md).
STANDARD_LABELS = {"user", "profile", "job_name", "deployment", "version"}
#: Labels of older series that the standard ones replaced: none may come back.
REPLACED_LABELS = {"owner", "name", "status_code", "job", "instance"}


def _run(*args: str, cwd=SHIPPED) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)  # noqa: S603


@needs_prometheus
def test_promtool_checks_the_shipped_config_and_rules(tmp_path):
    r = _run(PROMTOOL, "check", "config", "--syntax-only", "prometheus.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    r = _run(PROMTOOL, "check", "rules", *sorted(str(p) for p in (SHIPPED / "rules").glob("*.yml")))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 10 rules found" in r.stdout
    # the full check (rule files loaded, the token file read) on the config the tests derive
    token = tmp_path / "token"
    token.write_text("not-a-real-token")
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(config_for_hub("http://127.0.0.1:8000", token)))
    r = _run(PROMTOOL, "check", "config", str(config))
    assert r.returncode == 0, r.stdout + r.stderr
    # a broken rule is refused: the check is not one that passes anything
    bad = tmp_path / "bad.yml"
    bad.write_text("groups: [{name: x, rules: [{alert: X, expr: 'rate(up[5m]'}]}]\n")
    assert _run(PROMTOOL, "check", "rules", str(bad)).returncode != 0


@needs_prometheus
def test_the_alert_rules_pass_their_unit_tests():
    """Each alert fires when it should, for the right labels, and not before (promtool)."""
    tests = sorted(str(p.relative_to(SHIPPED)) for p in (SHIPPED / "tests").glob("*.yml"))
    r = _run(PROMTOOL, "test", "rules", *tests)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout
    alerts = {
        rule["alert"]
        for group in yaml.safe_load((SHIPPED / "rules" / "shipyard.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    tested = {
        case["alertname"]
        for path in (SHIPPED / "tests").glob("*.yml")
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", ())
        if case.get("exp_alerts")
    }
    assert alerts == tested, f"alerts without a firing unit test: {sorted(alerts - tested)}"


def test_the_shipped_config_holds_no_secret_and_scrapes_every_part():
    config = shipped_config()
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {
        "shipyard-hub",
        "shipyard-tracking",
        "shipyard-scheduler",
        "shipyard-deployer",
        "shipyard-model-replicas",
        "shipyard-secrets",
        "shipyard-audit",
        "shipyard-usage",
        "shipyard-alerts",
    }
    for job in jobs.values():
        assert set(job["authorization"]) == {"credentials_file"}, job["job_name"]
    assert jobs["shipyard-hub"]["metrics_path"] == "/hub/metrics"
    assert jobs["shipyard-model-replicas"]["metrics_path"] == "/services/deployer/metrics/replicas"
    text = (SHIPPED / "prometheus.yml").read_text()
    assert not re.search(r"^\s*(credentials|bearer_token|password):", text, re.M)


def test_dashboards_read_only_exported_metric_names():
    """Every query of every dashboard names metrics some part of Shipyard exports."""
    exported = exported_names()
    assert "jupyterhub_running_servers" in exported  # the hub's own are there
    assert "shipyard_model_requests_total" in exported  # and a replica's
    unknown = {}
    for board, exprs in dashboard_queries().items():
        assert exprs, f"{board} has no query"
        for expr in exprs:
            names = metric_names(expr)
            assert names, f"{board}: no metric in {expr!r}"
            wrong = names - exported - BUILTIN
            if wrong:
                unknown.setdefault(board, []).append((sorted(wrong), expr))
    assert not unknown, json.dumps(unknown, indent=1)


def test_every_alert_rule_reads_exported_metric_names():
    exported = exported_names()
    for group in yaml.safe_load((SHIPPED / "rules" / "shipyard.yml").read_text())["groups"]:
        for rule in group["rules"]:
            names = metric_names(rule["expr"])
            assert names and names <= exported | BUILTIN, (rule["alert"], names - exported)


def test_metric_names_reads_promql():
    expr = (
        'sum by (user, le) (rate(shipyard_x_bucket{code=~"5..", user=~"$user"}[$__rate_interval]))'
        " / on (user) group_left shipyard_y_total offset 5m > bool 0 and up"
    )
    assert metric_names(expr) == {"shipyard_x_bucket", "shipyard_y_total", "up"}
    assert metric_names("histogram_quantile(0.99, x)") == {"x"}


def test_series_share_one_vocabulary_of_labels():
    """Labels say user, deployment, version, job_name, profile and code, never synonyms.

    Never ``job`` or ``instance`` either: Prometheus sets those on every scraped series.
    """
    from prometheus_client import REGISTRY

    exported_names()  # registers every module's series here
    from hub_ext.runtime.modelserver.stats import Metrics

    replica = Metrics().registry
    collectors = [*REGISTRY._collector_to_names, *replica._collector_to_names]
    labels = {
        c._name: set(c._labelnames)
        for c in collectors
        if getattr(c, "_name", "").startswith("shipyard_")
    }
    for name, names in labels.items():
        assert not names & REPLACED_LABELS, (name, names)
        assert "status" not in names or name.startswith("shipyard_scheduler_run"), (
            f"{name}: an HTTP status is labelled code"
        )
    for name in (
        "shipyard_deployer_model_requests",
        "shipyard_deployer_model_request_duration_seconds",
        "shipyard_deployer_model_retries",
        "shipyard_deployer_replicas_ready",
        "shipyard_deployer_traffic_percent",
        "shipyard_deployer_breaker_open",
        "shipyard_deployer_drift_psi",
        "shipyard_deployer_replica_scrape_errors",
    ):
        assert {"user", "deployment", "version"} <= labels[name], name
    assert labels["shipyard_scheduler_runs_finished"] == {"user", "job_name", "profile", "status"}
    for service in ("scheduler", "deployer", "secrets", "audit"):
        assert labels[f"shipyard_{service}_requests"] == {"route", "method", "code"}, service
    assert labels["shipyard_model_requests"] == {"code"}
    assert STANDARD_LABELS <= set().union(*labels.values())


@needs_prometheus
def test_a_real_prometheus_answers_every_dashboard_query(tmp_path):
    """Each query, its Grafana variables filled in, parses and evaluates in Prometheus."""
    config = {"global": {"scrape_interval": "1s"}, "scrape_configs": [],
              "rule_files": [str(SHIPPED / "rules" / "*.yml")]}  # fmt: skip
    with PrometheusServer(tmp_path / "prom", config) as prom:
        groups = prom.api("rules")["groups"]
        assert sum(len(g["rules"]) for g in groups) == 10  # the shipped rules loaded
        for board, exprs in dashboard_queries().items():
            for expr in exprs:
                filled = (
                    expr.replace("$__rate_interval", "1m")
                    .replace("$__range", "1h")
                    .replace("$user", ".*")
                    .replace("$group", ".*")
                    .replace("$profile", ".*")
                    .replace("$deployment", ".*")
                    .replace("$version", ".*")
                    .replace("$job_name", ".*")
                )
                assert "$" not in filled, (board, expr)
                prom.query(filled)  # an error answer fails here
    assert DASHBOARDS.is_dir()


def test_replica_series_are_merged_and_labelled_with_their_version():
    """Two replicas' texts become one family per name, each sample saying whose it is."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from hub_ext.runtime.modelserver.stats import Metrics
    from hub_ext.services.deployer.replica_metrics import _Families, parse, relabel

    texts = []
    for codes in ((200, 200, 500), (200,)):
        metrics = Metrics()
        for code in codes:
            metrics.observe(0.01, code)
        texts.append(parse(generate_latest(metrics.registry).decode()))
    version = {"user": "alice", "deployment": "iris", "version": "2"}
    families = relabel(
        [({**version, "replica": "0"}, texts[0]), ({**version, "replica": "1"}, texts[1])]
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    text = generate_latest(registry).decode()
    assert text.count("# TYPE shipyard_model_requests_total counter") == 1
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {
        (s.labels["replica"], s.labels["code"]): s.value
        for s in parsed["shipyard_model_requests"].samples
        if s.name.endswith("_total")
    }
    assert samples == {("0", "200"): 2.0, ("0", "500"): 1.0, ("1", "200"): 1.0}
    for sample in parsed["shipyard_model_request_duration_seconds"].samples:
        assert {k: sample.labels[k] for k in version} == version
    assert relabel([]) == []
    # a replica runs the user's code: it cannot pass for another version or add series
    spoof = parse(
        "# TYPE shipyard_model_drift_psi gauge\n"
        'shipyard_model_drift_psi{feature="a",user="bob",version="9"} 0.5\n'
        "# TYPE shipyard_deployer_model_requests_total counter\n"
        'shipyard_deployer_model_requests_total{user="bob"} 1e9\n'
    )
    (family,) = relabel([({**version, "replica": "0"}, spoof)])
    (sample,) = family.samples
    assert sample.labels == {**version, "replica": "0", "feature": "a"}
    with pytest.raises(ValueError):
        parse("shipyard_model_requests_total{code=200} not-a-number\n")


def test_the_metrics_scope_reads_metrics_and_a_metrics_only_token_nothing_else():
    from hub_ext.services.common.web import may_read_metrics, metrics_only

    scraper = {
        "kind": "service",
        "name": "prometheus",
        "scopes": ["read:metrics", "access:services!service=tracking"],
    }
    assert may_read_metrics(scraper) and metrics_only(scraper)
    # the scheduler's own token reaches tracking for its runs: not metrics-only
    scheduler = {**scraper, "name": "scheduler", "scopes": [*scraper["scopes"], "read:users"]}
    assert may_read_metrics(scheduler) and not metrics_only(scheduler)
    # a user's token with the scope (an admin's) reads metrics, and is a user's
    admin = {"kind": "user", "name": "root", "scopes": ["read:metrics", "admin:users"]}
    assert may_read_metrics(admin) and not metrics_only(admin)
    assert not may_read_metrics({"kind": "user", "name": "alice", "scopes": ["self"]})
    assert not may_read_metrics({"kind": "user", "name": "alice"})
