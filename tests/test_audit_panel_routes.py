"""The server extension's audit routes (/shipyard/api/audit/...), for the panel's admin section.

In a real jupyter-server (tests/hubtools.py's ``start_jupyter_server``): without an audit
service the routes answer a 502 that says why; against a real hub running the real audit
service they answer exactly what the service answers, as the server's user: the records and
the verification for an admin, the service's 403 for anyone else, the service's 400 for a
filter it refuses. The profile answer's ``admin`` (the panel's hint to show the section) is
checked here outside a hub and in the browser (tests/test_browser_audit.py) inside one. The
panel's types of the service's answers are generated from its OpenAPI document
(tests/test_panel_types.py fails when they are stale).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import requests

from server_ext.clients.audit import AuditClient, AuditError
from server_ext.handlers.server import owner_is_admin

from .conftest import needs_root
from .hubtools import free_port, start_jupyter_server, tagged
from .services import service_hub


def test_the_audit_url_from_the_environment():
    env = {"SHIPYARD_AUDIT_URL": "http://hub.example.org/services/audit/"}
    assert AuditClient.service_url(env) == "http://hub.example.org/services/audit"
    env = {"JUPYTERHUB_PUBLIC_HUB_URL": "https://hub.example.org/hub/"}
    assert AuditClient.service_url(env) == "https://hub.example.org/services/audit"
    with pytest.raises(AuditError, match="SHIPYARD_AUDIT_URL is not set"):
        AuditClient.service_url({})
    with pytest.raises(AuditError, match="carries a credential"):
        AuditClient("http://hub.example.org/services/audit?token=abc", "t")


@pytest.mark.parametrize(
    ("hub_user", "owner", "admin"),
    [
        ({"name": "root", "admin": True}, "root", True),
        ({"name": "root", "admin": False}, "root", False),
        ({"name": "root"}, "root", False),  # the hub did not say
        # an admin visiting another user's server: the forwarders call as the owner
        ({"name": "root", "admin": True}, "alice", False),
        (None, "root", False),  # a server outside JupyterHub
    ],
)
def test_the_admin_hint_is_the_owners_flag_from_the_hub(monkeypatch, hub_user, owner, admin):
    monkeypatch.setenv("JUPYTERHUB_USER", owner)
    user = SimpleNamespace(hub_user=hub_user) if hub_user is not None else SimpleNamespace()
    assert owner_is_admin(user) is admin


@pytest.mark.parametrize("configured", [False, True])
def test_the_routes_without_an_audit_service(tmp_path, monkeypatch, configured):
    monkeypatch.delenv("SHIPYARD_AUDIT_URL", raising=False)
    monkeypatch.delenv("JUPYTERHUB_PUBLIC_HUB_URL", raising=False)
    env = {"JUPYTERHUB_API_TOKEN": "t"}
    if configured:
        env["SHIPYARD_AUDIT_URL"] = f"http://127.0.0.1:{free_port()}/services/audit"
    proc, url, token = start_jupyter_server(tmp_path, env)
    headers = {"Authorization": f"token {token}"}
    try:
        answers = {
            route: requests.get(f"{url}/shipyard/api/audit/{route}", headers=headers, timeout=30)
            for route in ("records", "verify")
        }
        anonymous = requests.get(f"{url}/shipyard/api/audit/records", timeout=30)
        profile = requests.get(f"{url}/shipyard/api/profile", headers=headers, timeout=30)
    finally:
        proc.terminate()
        proc.wait(30)
    assert anonymous.status_code == 403
    expected = "Cannot reach the audit service" if configured else "SHIPYARD_AUDIT_URL is not set"
    for route, r in answers.items():
        assert r.status_code == 502, route
        body = r.json()
        assert body["status"] == 502 and body["errors"] == [], body
        assert expected in body["message"], body
    # outside a hub nobody is a hub admin: the panel shows no Audit section
    assert profile.status_code == 200 and profile.json()["admin"] is False


# ------------------------------------------------------------- against the real service


@pytest.fixture(scope="module")
def audit_hub(hub_factory):
    """A hub with the audit service; API tokens of its bootstrapped admin and of a user."""
    with service_hub(
        hub_factory,
        "audit-routes",
        tagged("syaur-"),
        tagged("shipyard-test-audit-routes"),
        ["audit"],
    ) as hub:
        admin = json.loads((hub.data_dir / "credentials.json").read_text())["admin_user"]
        r = hub.api("POST", f"/users/{admin}/tokens", json={"note": "test", "expires_in": 3600})
        assert r.status_code == 201, r.text
        yield hub, {"admin": r.json()["token"], "user": hub.create_user("bob")}


@needs_root
@pytest.mark.parametrize("who", ["admin", "user"])
def test_the_routes_answer_what_the_service_answers(audit_hub, tmp_path, who):
    hub, tokens = audit_hub
    service = f"{hub.url}/services/audit"
    proc, url, token = start_jupyter_server(
        tmp_path, {"JUPYTERHUB_API_TOKEN": tokens[who], "SHIPYARD_AUDIT_URL": service}
    )
    server = requests.Session()
    server.headers["Authorization"] = f"token {token}"
    direct = requests.Session()
    direct.headers["Authorization"] = f"token {tokens[who]}"
    base = f"{url}/shipyard/api/audit"
    try:
        # user records do not change while the test reads them (reads are audit.read)
        for query in ("action=user&limit=5", "action=user.create&user=bob", "since=yesterday"):
            expected = direct.get(f"{service}/api/records?{query}", timeout=60)
            # JupyterLab's cache-busting key is dropped: the service refuses unknown keys
            forwarded = server.get(f"{base}/records?{query}&1765000000000", timeout=60)
            assert forwarded.status_code == expected.status_code, (query, forwarded.text)
            assert forwarded.headers["Content-Type"].startswith("application/json")
            assert forwarded.json() == expected.json(), query
        verify = server.get(f"{base}/verify", timeout=120)
        refused = server.post(f"{base}/records", json={}, timeout=60)
    finally:
        proc.terminate()
        proc.wait(30)
    assert refused.status_code == 405 and refused.json()["message"].endswith("takes GET")
    if who == "admin":
        assert forwarded.status_code == 400 and "since" in forwarded.json()["message"]
        assert expected.json()["message"] == forwarded.json()["message"]
        assert verify.status_code == 200 and verify.json()["ok"] is True, verify.text
        created = direct.get(f"{service}/api/records?action=user.create", timeout=60).json()
        assert "user/bob" in {rec["target"] for rec in created["records"]}, created
    else:
        assert forwarded.status_code == 403 and "admins" in forwarded.json()["message"]
        assert verify.status_code == 403 and "admins" in verify.json()["message"]


@needs_root
def test_the_records_query_goes_through_the_shared_guard(audit_hub):
    """Issue #14, point 3: the audit service's query is checked like the other services'
    (number of arguments, length of a value) before it is parsed."""
    hub, tokens = audit_hub
    direct = requests.Session()
    direct.headers["Authorization"] = f"token {tokens['admin']}"
    records = f"{hub.url}/services/audit/api/records"
    r = direct.get(records + "?" + "&".join(f"a{i}=1" for i in range(40)), timeout=60)
    assert r.status_code == 400 and "more than 32 arguments" in r.json()["message"], r.text
    r = direct.get(records + "?limit=" + "9" * 5000, timeout=60)
    assert r.status_code == 400 and "longer than" in r.json()["message"], r.text
