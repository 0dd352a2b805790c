"""The server extension inside a real jupyter-server process."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys

import pytest
import requests

from server_ext.extension import ShipyardExtension

from .hubtools import free_port, wait_for

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


def _start_server(tmp_path, extra_env: dict[str, str]) -> tuple[subprocess.Popen, str, str]:
    token = secrets.token_hex(16)
    port = free_port()
    env = dict(
        os.environ,
        JUPYTER_TOKEN=token,
        HOME=str(tmp_path),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"),
    )
    for key in (
        "SHIPYARD_PROFILE_JSON",
        "SHIPYARD_ENV",
        "MEM_LIMIT",
        "CPU_LIMIT",
        "CPU_GUARANTEE",
        "MEM_GUARANTEE",
        "CUDA_VISIBLE_DEVICES",
    ):
        env.pop(key, None)
    env.update(extra_env)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter_server",
            f"--ServerApp.port={port}",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.root_dir={tmp_path}",
            "--ServerApp.open_browser=False",
            "--allow-root",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def up():
        assert proc.poll() is None, "jupyter server exited"
        try:
            return requests.get(
                url + "/api/status", headers={"Authorization": f"token {token}"}, timeout=2
            ).ok
        except requests.RequestException:
            return False

    wait_for(up, 60, 0.2, "jupyter server")
    return proc, url, token


@pytest.fixture
def server(tmp_path, request):
    env = getattr(request, "param", {})
    proc, url, token = _start_server(tmp_path, env)
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
