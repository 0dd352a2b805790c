"""The server extension inside a real jupyter-server process."""

from __future__ import annotations

import json
import re
import secrets
import sys

import pytest
import requests

from server_ext.extension import ShipyardExtension

from .hubtools import free_port, start_jupyter_server

PROFILE = {
    "slug": "small",
    "display_name": "Small",
    "description": "",
    "environment": "base",
    "cpu_guarantee": "250m",
    "cpu_limit": "1",
    "mem_guarantee": "512Mi",
    "mem_limit": "2Gi",
    "gpu": 0,
}


@pytest.fixture
def server(tmp_path, request):
    env = getattr(request, "param", {})
    proc, url, token = start_jupyter_server(tmp_path, env)
    yield url, token
    proc.terminate()
    proc.wait(30)


@pytest.mark.parametrize(
    "server",
    [
        {
            "SHIPYARD_PROFILE_JSON": json.dumps(PROFILE),
            "SHIPYARD_ENV": "base",
            "MEM_LIMIT": str(2 * 2**30),
            "CPU_LIMIT": "1.0",
            "CUDA_VISIBLE_DEVICES": "",
        }
    ],
    indirect=True,
)
def test_profile_endpoint_reports_what_the_spawner_set(server):
    url, token = server
    r = requests.get(
        url + "/shipyard/api/profile", headers={"Authorization": f"token {token}"}, timeout=30
    )
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert body["profile"] == PROFILE
    assert body["environment"]["name"] == "base"
    assert body["environment"]["python"] == sys.executable
    assert body["limits"] == {
        "cpu_limit": 1.0,
        "cpu_guarantee": None,
        "mem_limit": 2 * 2**30,
        "mem_guarantee": None,
        "gpus": [],
    }
    assert set(body["enforced"]) == {"kind", "path", "mem_limit", "mem_usage", "cpu_limit"}
    # live use of the server's process tree: a number each time (0 % at the first look)
    assert body["usage"]["mem_bytes"] > 10 * 2**20
    assert body["usage"]["cpu_percent"] >= 0


def test_profile_endpoint_without_a_profile(server):
    url, token = server
    body = requests.get(
        url + "/shipyard/api/profile", headers={"Authorization": f"token {token}"}, timeout=30
    ).json()
    assert body["profile"] is None
    assert body["limits"]["gpus"] is None


def _routes() -> list[str]:
    app = ShipyardExtension()
    app.initialize_handlers()
    routes = [pattern for pattern, *_ in app.handlers]
    assert routes, "the extension serves no route"
    return routes


def test_every_route_refuses_anonymous_and_wrong_token_requests(server):
    """Default deny (a check_auth step): each handler refuses requests without valid credentials."""
    url, _ = server
    for route in _routes():
        path = re.sub(r"\(.*?\)", "x", route)
        for headers in ({}, {"Authorization": "token wrong"}):
            r = requests.get(url + path, headers=headers, timeout=30, allow_redirects=False)
            assert r.status_code in (401, 403), (route, headers, r.status_code)


def _experiments(url: str, token: str, query: str = "") -> requests.Response:
    r = requests.get(
        url + "/shipyard/api/experiments" + query,
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert r.headers["Content-Type"].startswith("application/json"), r.text
    return r


def test_experiments_lists_the_newest_tracked_runs_with_links(tmp_path, mlflow_server):  # noqa: F811
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.create_experiment(f"panel-{secrets.token_hex(3)}")
    older = client.create_run(experiment, run_name="older")
    client.log_metric(older.info.run_id, "rmse", 0.5)
    client.set_terminated(older.info.run_id)
    newer = client.create_run(experiment, run_name="newer", start_time=older.info.start_time + 1000)
    proc, url, token = start_jupyter_server(
        tmp_path,
        {"MLFLOW_TRACKING_URI": mlflow_server, "SHIPYARD_TRACKING_UI_URL": "/services/tracking"},
    )
    try:
        body = _experiments(url, token).json()
        assert body["tracking_ui"] == "/services/tracking"
        mine = [r for r in body["runs"] if r["experiment_id"] == experiment]
        assert [r["run_name"] for r in mine] == ["newer", "older"]
        assert mine[1]["metrics"] == {"rmse": 0.5} and mine[1]["status"] == "FINISHED"
        assert mine[0]["status"] == "RUNNING"
        assert mine[0]["url"] == (
            f"/services/tracking/#/experiments/{experiment}/runs/{newer.info.run_id}"
        )
        assert [
            r["run_name"] for r in _experiments(url, token, "?max_results=1").json()["runs"]
        ] == ["newer"]
        for bad in ("0", "101", "ten", "-1"):
            r = _experiments(url, token, f"?max_results={bad}")
            assert r.status_code == 400 and "max_results" in r.json()["message"], r.text
    finally:
        proc.terminate()
        proc.wait(30)


def test_experiments_says_when_tracking_is_off_or_unreachable(tmp_path):
    proc, url, token = start_jupyter_server(tmp_path, {"MLFLOW_TRACKING_URI": ""})
    try:
        r = _experiments(url, token)
        assert r.status_code == 404 and "SHIPYARD_TRACKING" in r.json()["message"]
    finally:
        proc.terminate()
        proc.wait(30)
    down = f"http://127.0.0.1:{free_port()}"
    proc, url, token = start_jupyter_server(tmp_path, {"MLFLOW_TRACKING_URI": down})
    try:
        r = _experiments(url, token)
        assert r.status_code == 503 and "not reachable" in r.json()["message"], r.text
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize(
    "query, sent",
    [
        ("1796551439779", ""),
        ("status=failed&1796551439779", "status=failed"),
        ("limit=5&offset=10", "limit=5&offset=10"),
        ("123=4", "123=4"),  # a digit name with a value is the user's: the service judges it
        ("name=a+b", "name=a+b"),
    ],
)
def test_forwarders_drop_only_jupyterlabs_cache_buster(query, sent):
    from server_ext.handlers.scheduler import without_cache_buster

    assert without_cache_buster(query) == sent
