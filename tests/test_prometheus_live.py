"""A real Prometheus scraping a real hub, every Shipyard service and a model replica.

One hub with tracking, the scheduler, the deployer (its real LocalBackend: a model
server as the user), secrets and audit. Prometheus (Debian's ``prometheus``, on a free
loopback port: tests/prometheus.py) runs the shipped config with its targets at the hub
and the token of the hub's ``prometheus`` service, the one the embedded config declares
with ``read:metrics``. Every job is up, and one query per headline series over the HTTP
API answers data, labelled as docs/observability.md says.
"""

from __future__ import annotations

import pytest
import requests

from .conftest import needs_root
from .hubtools import tagged, wait_for
from .prometheus import PrometheusServer, config_for_hub, missing
from .services import (
    LOCAL_DEPLOYER_CONFIG,
    SERVING_PROFILES,
    DeployerClient,
    Scheduler,
    config_folder,
    create_job,
    notebook,
    service_hub,
    user_with_account,
)

_missing = missing()
pytestmark = pytest.mark.skipif(bool(_missing), reason=_missing or "")

SERVICES = ["tracking", "scheduler", "deployer", "secrets", "audit", "usage", "alerts"]
JOBS = {
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


@pytest.fixture(scope="module")
def platform(hub_factory, home_root, model_server_env):
    with service_hub(
        hub_factory,
        "prometheus",
        tagged("syprom-"),
        tagged("shipyard-test-prom"),
        SERVICES,
        configs={
            "deployer": LOCAL_DEPLOYER_CONFIG,
            "usage": "c.UsageService.sample_interval = 0.5\nc.UsageService.cpu_hour_price = 1.0\n",
        },
        profiles=SERVING_PROFILES,
        probe="alice",
    ) as hub:
        yield hub


@needs_root
def test_prometheus_scrapes_the_hub_the_services_and_a_replica(
    platform, home_root, model_dir, tmp_path
):
    hub = platform
    alice = user_with_account(hub, home_root, "alice")
    token = alice[0]
    dep = DeployerClient(hub, token)
    # a job with a cron trigger and a run of it, a real deployment answering, a call to
    # each other service
    sched = Scheduler(hub, config_folder(hub) / "clock")
    job = create_job(sched, alice, "nightly", notebook("x = 1"),
                     triggers=[{"kind": "cron", "expression": "0 3 * * *", "timezone": "UTC"}])  # fmt: skip
    run = sched.call("POST", f"api/jobs/{job['id']}/runs", token, json={}).json()
    r = dep("POST", "api/deployments", json={"name": "prom", "model_uri": str(model_dir),
                                             "profile": "serving"})  # fmt: skip
    assert r.status_code == 201, r.text
    assert sched.wait_run(run["id"], token, 180)["status"] == "succeeded"
    dep.wait_state("prom", 1, "ready", 180)
    for x in range(5):
        r = dep.invoke("alice", "prom", json={"dataframe_split": {"columns": ["x"], "data": [[x]]}})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == [pytest.approx(2 * x + 1.0)]
    auth = {"Authorization": f"token {token}"}
    for path in ("secrets/api/secrets", "audit/api/records"):
        requests.get(f"{hub.url}/services/{path}", headers=auth, timeout=30)

    # the token the embedded config made for Prometheus reads metrics, and nothing else
    token_file = hub.data_dir / "prometheus-token"
    assert token_file.stat().st_mode & 0o077 == 0
    scraper = {"Authorization": f"token {token_file.read_text().strip()}"}
    r = requests.get(f"{hub.url}/services/scheduler/metrics", headers=auth, timeout=30)
    assert r.status_code == 403 and "read:metrics" in r.json()["message"]
    r = requests.get(f"{hub.url}/services/scheduler/api/jobs", headers=scraper, timeout=30)
    assert r.status_code == 403, r.text
    r = requests.get(
        f"{hub.url}/services/tracking/api/2.0/mlflow/experiments/search",
        params={"max_results": 5}, headers=scraper, timeout=30,
    )  # fmt: skip
    assert r.status_code == 403, r.text

    config = config_for_hub(hub.url, token_file)
    with PrometheusServer(tmp_path / "prometheus", config) as prom:

        def all_up():
            targets = prom.targets()
            return set(targets) == JOBS and all(t["health"] == "up" for t in targets.values())

        try:
            wait_for(all_up, 60, 0.5, "every target up")
        except TimeoutError:
            raise AssertionError({j: t["lastError"] for j, t in prom.targets().items()}) from None

        version = 'user="alice", deployment="prom", version="1"'
        headline = {
            "jupyterhub_total_users": None,
            "jupyterhub_running_servers": None,
            'shipyard_data_dir_filesystem_avail_bytes{job="shipyard-hub"}': None,
            'shipyard_tracking_requests_total{job="shipyard-tracking"}': None,
            'shipyard_scheduler_requests_total{job="shipyard-scheduler", route="jobs"}': None,
            'shipyard_scheduler_job_next_fire_timestamp_seconds{user="alice",'
            ' job_name="nightly", profile="tiny"}': None,
            "shipyard_scheduler_runs_running": 0,
            'shipyard_scheduler_runs_finished_total{user="alice", job_name="nightly",'
            ' profile="tiny", status="succeeded"}': 1,
            'shipyard_scheduler_run_duration_seconds_count{profile="tiny", status="succeeded"}': 1,
            f'shipyard_deployer_model_requests_total{{{version}, code="200"}}': 5,
            f"shipyard_deployer_model_request_duration_seconds_count{{{version}}}": 5,
            f"shipyard_deployer_replicas_ready{{{version}}}": 1,
            f"shipyard_deployer_traffic_percent{{{version}}}": 100,
            f'shipyard_model_requests_total{{job="shipyard-model-replicas", {version},'
            ' replica="0", code="200"}': 5,
            f'shipyard_model_request_duration_seconds_count{{job="shipyard-model-replicas",'
            f" {version}}}": 5,
            'shipyard_secrets_requests_total{job="shipyard-secrets"}': None,
            'shipyard_audit_requests_total{job="shipyard-audit", code="403"}': None,
            # the job's run and the model's replica, counted from their cgroups, and priced
            'shipyard_usage_cpu_seconds_total{job="shipyard-usage", user="alice", kind="run"}'
            " > 0": None,
            'shipyard_usage_cpu_seconds_total{job="shipyard-usage", user="alice",'
            ' profile="serving", kind="replica"} > 0': None,
            'shipyard_usage_cost_total{job="shipyard-usage", user="alice", kind="run"} > 0': None,
            'shipyard_alerts_evaluations_total{job="shipyard-alerts", result="ok"} > 0': None,
        }

        def answered(expr: str, value) -> bool:
            result = prom.query(expr)
            return bool(result) and (value is None or float(result[0]["value"][1]) == value)

        for expr, value in headline.items():
            try:
                wait_for(lambda: answered(expr, value), 30, 0.5, expr)  # noqa: B023
            except TimeoutError:
                raise AssertionError(f"{expr}: {prom.query(expr)}") from None
        # the cron tick is the next 03:00 UTC, in the future
        (tick,) = prom.query(
            'shipyard_scheduler_job_next_fire_timestamp_seconds{job_name="nightly"}'
        )
        assert float(tick["value"][1]) > tick["value"][0]
        # the shipped rules are loaded and none fires against a healthy platform
        rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
        assert len(rules) == 10
        assert not prom.query('ALERTS{alertname="ShipyardServiceDown"}')
    assert dep("DELETE", "api/deployments/prom").status_code == 204
