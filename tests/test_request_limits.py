"""A body over a service's limit gets the service's JSON 413 through the hub's proxy.

Issue #14, point 2. Every request here goes through the hub's public URL, as a client
sends it: configurable-http-proxy passes the body on without waiting for
``Expect: 100-continue`` (Python's requests never sends it), so a service that closed the
connection at its limit (tornado's ``max_body_size``) answered with the hub's HTML 503
page. The services' handler base now reads such a body to its end, keeping nothing past
the limit, and answers as it would anyway (:mod:`hub_ext.services.common.handlers`).
Checked for the scheduler, the deployer's REST API and the secrets service of one hub,
with a ``Content-Length`` body and a chunked one; and the answers that come before the
handler reads a body at all (401, an unknown path's 404, a method's 405) come after it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from hub_ext.services.deployer.core import DeployerCore

from .conftest import needs_root
from .hubtools import tagged
from .services import notebook, scheduler_hub

pytestmark = [needs_root]

#: The scheduler's limit: twice SCHEDULER_CONFIG's max_notebook_size (200000), and 1 MiB.
SCHEDULER_LIMIT = 2 * 200_000 + 1024**2
#: The deployer's REST API limit (its model traffic has its own, max_body_size).
DEPLOYER_LIMIT = DeployerCore.max_request_bytes
#: The secrets service's limit: six times max_value_size (a value JSON-escaped), and 64 KiB.
SECRETS_VALUE = 8 * 1024
SECRETS_LIMIT = 6 * SECRETS_VALUE + 64 * 1024

#: service: (method, path, limit, a body it takes, given a name)
ROUTES = {
    "scheduler": (
        "POST",
        "api/jobs",
        SCHEDULER_LIMIT,
        lambda name: {"name": name, "profile": "tiny", "notebook": notebook("x = 1")},
    ),
    "deployer": (
        "POST",
        "api/deployments",
        DEPLOYER_LIMIT,
        lambda name: {"name": name, "model_uri": "models:/fake/a"},
    ),
    "secrets": ("PUT", "api/secrets/{name}", SECRETS_LIMIT, lambda name: {"value": name}),
}


@pytest.fixture(scope="module")
def hub(hub_factory):
    with scheduler_hub(
        hub_factory,
        "request-limits",
        tagged("sylim-"),
        tagged("shipyard-test-lim"),
        ["deployer", "secrets"],
        configs={"secrets": f"c.SecretsService.max_value_size = {SECRETS_VALUE}\n"},
    ) as scheduler:
        yield scheduler.hub


@pytest.fixture(scope="module")
def token(hub):
    return hub.create_user("lena")


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def padded(value: dict, size: int) -> bytes:
    """``value`` as JSON, padded with spaces (still the same JSON) to ``size`` bytes."""
    body = json.dumps(value).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


def chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """``body`` in pieces: requests sends a generator with ``Transfer-Encoding: chunked``."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def send(
    hub, service: str, body: bytes, token: str | None, chunked: bool, name: str = "limits"
) -> requests.Response:
    method, path, *_ = ROUTES[service]
    path = path.format(name=name.upper().replace("-", "_"))
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"token {token}"
    return requests.request(
        method,
        f"{hub.url}/services/{service}/{path}",
        data=chunks(body) if chunked else body,
        headers=headers,
        timeout=60,
    )


def json_error(r: requests.Response, status: int) -> str:
    """Assert the services' JSON error with ``status`` (never the hub's HTML); its message."""
    assert r.status_code == status, (r.status_code, r.headers.get("Content-Type"), r.text[:200])
    assert r.headers["Content-Type"].startswith("application/json"), r.headers
    body = r.json()
    assert body["status"] == status and body["message"], body
    return body["message"]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("service", list(ROUTES))
def test_a_body_over_the_limit_is_a_json_413(hub, token, service, chunked):
    _, _, limit, value = ROUTES[service]
    size = 2 * limit + 12345
    message = json_error(send(hub, service, padded(value("big"), size), token, chunked), 413)
    assert f"{size} bytes, over the limit of {limit}" in message
    # the connection was read to its end: the service answers the next request as usual
    assert _answers(f"{hub.url}/services/{service}/health")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("service", list(ROUTES))
def test_a_body_at_the_limit_is_taken(hub, token, service, chunked):
    """Up to the limit nothing changes: the body, streamed in, reaches the handler whole."""
    _, _, limit, value = ROUTES[service]
    name = f"limits-{'chunked' if chunked else 'length'}"
    r = send(hub, service, padded(value(name), limit), token, chunked, name)
    assert r.status_code == 201, (r.status_code, r.text[:300])
    answer = r.json()
    if service == "secrets":
        assert answer["secret"]["name"] == name.upper().replace("-", "_"), answer
    else:
        assert answer["name"] == name, answer


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("service", list(ROUTES))
def test_a_body_over_the_limit_without_a_login_is_a_json_401(hub, service, chunked):
    _, _, limit, value = ROUTES[service]
    json_error(send(hub, service, padded(value("anon"), 2 * limit), None, chunked), 401)


def test_a_body_over_the_limit_to_an_unknown_path_is_a_json_404(hub, token):
    body = b" " * (2 * SCHEDULER_LIMIT)
    for chunked in (False, True):
        r = requests.post(
            f"{hub.url}/services/scheduler/api/nothing-here",
            data=chunks(body) if chunked else body,
            headers={"Authorization": f"token {token}"},
            timeout=60,
        )
        json_error(r, 404)


def test_a_method_no_route_implements_is_a_json_405_after_its_body(hub, token):
    """``QUERY`` (not one of tornado's methods) and ``PUT`` (not this route's) are refused
    once their body has come, as every other answer: before it, the connection closed
    under the proxy (a 503, and the next request on that connection lost as well)."""
    body = b" " * (2 * SCHEDULER_LIMIT)
    for method in ("QUERY", "PUT"):
        r = requests.request(
            method,
            f"{hub.url}/services/scheduler/api/jobs",
            data=body,
            headers={"Authorization": f"token {token}"},
            timeout=60,
        )
        json_error(r, 405)
        assert r.headers["Allow"] == "GET, POST", r.headers
