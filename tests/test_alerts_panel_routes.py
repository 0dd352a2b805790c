"""The server extension's alerts routes (/shipyard/api/alerts, /shipyard/api/alerts/{id},
/shipyard/api/alerts/targets).

In a real jupyter-server (tests/hubtools.py's ``start_jupyter_server``): without an alerts
service the routes answer a 502 in the services' error schema that says why (the variable
that is not set, or the service that cannot be reached); a method the routes do not forward
answers 405; no login answers 403. tests/test_server_ext.py refuses anonymous requests on
every route of the table.

The targets routes against a stand-in for the alerts service that records what reaches it
(:class:`TargetsStandIn`): the forwarder sends the server's own token and nothing of the
browser's, passes the service's answer and its 400 on unchanged, and has no way to name
another user (the service keys the targets by the token's user: tests/test_alerts.py; the
real service behind a real hub: tests/test_browser_alerts.py).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from server_ext.clients.alerts import AlertsClient, AlertsError
from server_ext.handlers.alerts import ROUTES

from .hubtools import REPO, free_port, start_jupyter_server

ALERT_ID = "0123456789abcdef0123456789abcdef"


def test_the_alerts_url_from_the_environment():
    env = {"SHIPYARD_ALERTS_URL": "http://hub.example.org/services/alerts/"}
    assert AlertsClient.service_url(env) == "http://hub.example.org/services/alerts"
    env = {"JUPYTERHUB_PUBLIC_HUB_URL": "https://hub.example.org/hub/"}
    assert AlertsClient.service_url(env) == "https://hub.example.org/services/alerts"
    with pytest.raises(AlertsError, match="SHIPYARD_ALERTS_URL is not set"):
        AlertsClient.service_url({})


def test_the_alerts_are_read_and_the_own_targets_read_and_replaced():
    assert [(target, methods) for _, target, methods in ROUTES] == [
        ("api/alerts", ("GET",)),
        ("api/targets", ("GET", "PUT")),
        ("api/alerts/{}", ("GET",)),
    ]
    # no route names a user: the service answers the token's
    assert all("{" not in route and "(" not in route for route, target, _ in ROUTES[:2])


def test_the_spawner_passes_the_alerts_url():
    text = (REPO / "config" / "jupyterhub_config.py").read_text()
    assert '{"SHIPYARD_ALERTS_URL": public_url + "/services/alerts"}' in text


@pytest.mark.parametrize("configured", [False, True])
def test_the_routes_without_an_alerts_service(tmp_path, monkeypatch, configured):
    monkeypatch.delenv("SHIPYARD_ALERTS_URL", raising=False)
    monkeypatch.delenv("JUPYTERHUB_PUBLIC_HUB_URL", raising=False)
    env = {"JUPYTERHUB_API_TOKEN": "t"}
    if configured:
        env["SHIPYARD_ALERTS_URL"] = f"http://127.0.0.1:{free_port()}/services/alerts"
    proc, url, token = start_jupyter_server(tmp_path, env)
    headers = {"Authorization": f"token {token}"}
    try:
        answers = {
            route: requests.get(
                f"{url}/shipyard/api/alerts{route}?include_resolved=true",
                headers=headers,
                timeout=30,
            )
            for route in ("", f"/{ALERT_ID}", "/targets")
        }
        answers["/targets PUT"] = requests.put(
            f"{url}/shipyard/api/alerts/targets",
            headers=headers,
            json={"urls": ["json://hooks.example.org/a"]},
            timeout=30,
        )
        anonymous = requests.get(f"{url}/shipyard/api/alerts", timeout=30)
        put = requests.put(f"{url}/shipyard/api/alerts", headers=headers, json={}, timeout=30)
    finally:
        proc.terminate()
        proc.wait(30)
    assert anonymous.status_code == 403
    assert put.status_code == 405 and "takes GET" in put.json()["message"], put.text
    expected = "Cannot reach the alerts service" if configured else "SHIPYARD_ALERTS_URL is not set"
    for route, r in answers.items():
        assert r.status_code == 502, route
        body = r.json()
        assert body["status"] == 502 and body["errors"] == [], body
        assert expected in body["message"], body


# ------------------------------------------------------------------ the targets, forwarded

#: The tokens the stand-in knows, and whose they are.
TOKENS = {"server-token-alice": "alice", "server-token-bob": "bob"}
SCHEMES = ["json", "jsons", "slack"]
REFUSAL = "urls.1: the scheme 'ftp' is not one users may use here (allowed: json, jsons, slack)"


class TargetsStandIn(ThreadingHTTPServer):
    """``GET``/``PUT api/targets`` of the alerts service, keyed by the token's user.

    Records every request (method, path, Authorization header, body) that reaches it.
    """

    def __init__(self):
        self.requests: list[tuple[str, str, str, bytes]] = []
        self.targets = {"alice": [], "bob": ["slack://bob-webhook-token"]}
        super().__init__(("127.0.0.1", 0), _StandInHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/services/alerts"

    def answer(self, user: str) -> dict:
        shown = [url.split("://")[0] + "://…" for url in self.targets[user]]
        return {"targets": shown, "updated_at": None, "schemes": SCHEMES}


class _StandInHandler(BaseHTTPRequestHandler):
    server: TargetsStandIn

    def log_message(self, *args) -> None:
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _serve(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        auth = self.headers.get("Authorization", "")
        self.server.requests.append((self.command, self.path, auth, body))
        user = TOKENS.get(auth.removeprefix("token "))
        if user is None:
            return self._reply(
                401, {"status": 401, "message": "A hub login is needed", "errors": []}
            )
        if self.path.split("?")[0] != "/services/alerts/api/targets":
            return self._reply(404, {"status": 404, "message": "Not found", "errors": []})
        if self.command == "PUT":
            urls = json.loads(body)["urls"]
            if any(url.split("://")[0] not in SCHEMES for url in urls):
                return self._reply(400, {"status": 400, "message": REFUSAL, "errors": []})
            self.server.targets[user] = urls
        self._reply(200, self.server.answer(user))

    do_GET = do_PUT = _serve


@pytest.fixture
def stand_in():
    server = TargetsStandIn()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_targets_are_the_servers_users_own_and_a_refusal_passes_unchanged(
    tmp_path, monkeypatch, stand_in
):
    monkeypatch.delenv("JUPYTERHUB_PUBLIC_HUB_URL", raising=False)
    env = {"JUPYTERHUB_API_TOKEN": "server-token-alice", "SHIPYARD_ALERTS_URL": stand_in.url}
    proc, url, token = start_jupyter_server(tmp_path, env)
    headers = {"Authorization": f"token {token}"}
    targets = f"{url}/shipyard/api/alerts/targets"
    try:
        first = requests.get(targets, headers=headers, timeout=30)
        hook = "json://hooks.example.org/alerts?token=secret"
        put = requests.put(targets, headers=headers, json={"urls": [hook]}, timeout=30)
        refused = requests.put(
            targets, headers=headers, json={"urls": [hook, "ftp://files.example.org"]}, timeout=30
        )
        after = requests.get(targets, headers=headers, timeout=30)
        # ways a caller might try to reach bob's targets through alice's server
        bobs = [
            requests.get(f"{targets}?user=bob", headers=headers, timeout=30),
            requests.get(f"{targets}/bob", headers=headers, timeout=30),
            requests.get(f"{url}/shipyard/api/alerts/bob/targets", headers=headers, timeout=30),
            requests.get(targets, headers={"Authorization": "token server-token-bob"}, timeout=30),
        ]
        anonymous = requests.get(targets, timeout=30)
        post = requests.post(targets, headers=headers, json={"urls": []}, timeout=30)
    finally:
        proc.terminate()
        proc.wait(30)

    assert first.status_code == 200, first.text
    assert first.json() == {"targets": [], "updated_at": None, "schemes": SCHEMES}
    assert put.status_code == 200 and put.json()["targets"] == ["json://…"], put.text
    assert refused.status_code == 400, refused.text
    assert refused.json() == {"status": 400, "message": REFUSAL, "errors": []}
    assert refused.headers["Content-Type"].startswith("application/json")
    assert after.json()["targets"] == ["json://…"]  # the refused PUT changed nothing
    assert stand_in.targets == {"alice": [hook], "bob": ["slack://bob-webhook-token"]}

    # bob's targets never: alice's answer, no route, or no login
    assert bobs[0].status_code == 200 and bobs[0].json() == stand_in.answer("alice")
    assert bobs[1].status_code == 404 and bobs[2].status_code in (403, 404)
    assert bobs[3].status_code == 403
    assert all("slack://" not in r.text for r in bobs)
    assert anonymous.status_code == 403
    assert post.status_code == 405 and "takes GET, PUT" in post.json()["message"], post.text

    # what reached the service: the targets route only, always with the server's token,
    # the body as sent, never a browser's token
    assert {(m, auth) for m, _, auth, _ in stand_in.requests} == {
        ("GET", "token server-token-alice"),
        ("PUT", "token server-token-alice"),
    }
    assert {path.split("?")[0] for _, path, _, _ in stand_in.requests} == {
        "/services/alerts/api/targets"
    }
    puts = [json.loads(body) for m, _, _, body in stand_in.requests if m == "PUT"]
    assert puts == [{"urls": [hook]}, {"urls": [hook, "ftp://files.example.org"]}]


def test_the_client_reads_and_sets_the_tokens_users_targets(stand_in):
    bob = AlertsClient(stand_in.url, "server-token-bob")
    assert bob.targets() == {"targets": ["slack://…"], "updated_at": None, "schemes": SCHEMES}
    assert bob.set_targets(["jsons://hooks.example.org/b"])["targets"] == ["jsons://…"]
    with pytest.raises(AlertsError) as refused:
        bob.set_targets(["jsons://hooks.example.org/b", "ftp://x"])
    assert refused.value.status == 400 and refused.value.message == REFUSAL
    assert stand_in.targets["bob"] == ["jsons://hooks.example.org/b"]
    assert stand_in.targets["alice"] == []
