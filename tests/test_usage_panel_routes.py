"""The server extension's usage routes (/shipyard/api/usage, /shipyard/api/usage/waste).

In a real jupyter-server (tests/hubtools.py's ``start_jupyter_server``): without a usage
service the routes answer a 502 in the services' error schema that says why (the variable
that is not set, or the service that cannot be reached); a method the routes do not forward
answers 405; no login answers 403. Against a real hub with the real usage service, the
routes answer what the service answers, as the server's user, in the browser test
(tests/test_browser_usage.py): a user's own usage, 404 for another user's, 400 for a bad
query.
"""

from __future__ import annotations

import pytest
import requests

from server_ext.clients.usage import UsageClient, UsageError
from server_ext.handlers.usage import ROUTES

from .hubtools import free_port, start_jupyter_server


def test_the_usage_url_from_the_environment():
    env = {"SHIPYARD_USAGE_URL": "http://hub.example.org/services/usage/"}
    assert UsageClient.service_url(env) == "http://hub.example.org/services/usage"
    env = {"JUPYTERHUB_PUBLIC_HUB_URL": "https://hub.example.org/hub/"}
    assert UsageClient.service_url(env) == "https://hub.example.org/services/usage"
    with pytest.raises(UsageError, match="SHIPYARD_USAGE_URL is not set"):
        UsageClient.service_url({})


def test_only_the_read_routes_are_forwarded():
    assert ROUTES == [("", "api/usage", ("GET",)), ("/waste", "api/usage/waste", ("GET",))]


@pytest.mark.parametrize("configured", [False, True])
def test_the_routes_without_a_usage_service(tmp_path, monkeypatch, configured):
    monkeypatch.delenv("SHIPYARD_USAGE_URL", raising=False)
    monkeypatch.delenv("JUPYTERHUB_PUBLIC_HUB_URL", raising=False)
    env = {"JUPYTERHUB_API_TOKEN": "t"}
    if configured:
        env["SHIPYARD_USAGE_URL"] = f"http://127.0.0.1:{free_port()}/services/usage"
    proc, url, token = start_jupyter_server(tmp_path, env)
    headers = {"Authorization": f"token {token}"}
    try:
        answers = {
            route: requests.get(
                f"{url}/shipyard/api/usage{route}?by=day", headers=headers, timeout=30
            )
            for route in ("", "/waste")
        }
        anonymous = requests.get(f"{url}/shipyard/api/usage", timeout=30)
        post = requests.post(f"{url}/shipyard/api/usage", headers=headers, json={}, timeout=30)
    finally:
        proc.terminate()
        proc.wait(30)
    assert anonymous.status_code == 403
    assert post.status_code == 405 and "takes GET" in post.json()["message"], post.text
    expected = "Cannot reach the usage service" if configured else "SHIPYARD_USAGE_URL is not set"
    for route, r in answers.items():
        assert r.status_code == 502, route
        body = r.json()
        assert body["status"] == 502 and body["errors"] == [], body
        assert expected in body["message"], body


def test_the_profile_says_which_optional_services_this_server_can_reach(monkeypatch):
    """The panel shows its Usage and Alerts sections only where the hub runs the service."""
    from server_ext.handlers.server import services_here

    monkeypatch.delenv("SHIPYARD_USAGE_URL", raising=False)
    monkeypatch.delenv("SHIPYARD_ALERTS_URL", raising=False)
    assert services_here() == {"usage": False, "alerts": False}
    monkeypatch.setenv("SHIPYARD_USAGE_URL", "http://127.0.0.1:8000/services/usage")
    assert services_here() == {"usage": True, "alerts": False}
