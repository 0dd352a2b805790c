"""The scheduler's, the deployer's and the usage service's OpenAPI documents say what the
services do.

Schemathesis (property-based tests generated from an OpenAPI document) runs
against the real services, behind a real hub, with a real user's token and
**all** its checks: not only "no 500", but every answer documented, schema-valid
requests accepted, schema-invalid ones refused, 405 answers with ``Allow``, no
answer without authentication. The few deliberate exceptions are listed in
:data:`EXCEPTIONS`, each with its reason; anything else it finds fails the test.

The run is bounded (a few examples per operation, a fixed seed by default so a
failure reproduces; ``SHIPYARD_SCHEMATHESIS_SEED`` changes it) so that each
service takes well under a minute on two cores.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from hub_ext.host.accounts import _create
from hub_ext.host.slugs import account_name

from .conftest import needs_root
from .hubtools import tagged, wait_for
from .services import (
    SCHEDULER_CONFIG,
    DeployerClient,
    notebook,
    put_file,
    scheduler_hub,
    service_hub,
    user_with_account,
)

pytestmark = [needs_root]

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
#: Examples per operation and phase: enough to find a gap in a limit or a format, small
#: enough that a service's run stays well under a minute on two cores.
MAX_EXAMPLES = int(os.environ.get("SHIPYARD_SCHEMATHESIS_EXAMPLES", "10"))
SEED = os.environ.get("SHIPYARD_SCHEMATHESIS_SEED", "14")


#: Refusals of schema-valid requests that no OpenAPI document can announce, by service and
#: operation, each with its reason. For these operations schemathesis also takes a 400 (and
#: where :data:`TOO_LARGE` says so, a 413) for a schema-valid request; every other check,
#: and every other operation, stays as strict.
EXCEPTIONS = {
    "scheduler": [
        (
            "POST",
            "/api/jobs",
            "a job's profile must be in the admin's profiles file, which the service re-reads "
            "while it runs; a cron expression must parse and fire; the parameters must be "
            "those the notebook's parameters cell declares, with its types; a webhook URL's "
            "host must resolve to public addresses (DNS decides); at most one webhook trigger "
            "and no trigger twice (relations between items JSON Schema cannot say)",
        ),
        ("PATCH", "/api/jobs/{job_id}", "the same rules as POST /api/jobs, for what is sent"),
        (
            "POST",
            "/api/jobs/{job_id}/runs",
            "a run's parameters must be those the job's notebook declares, with its types",
        ),
        (
            "PUT",
            "/api/jobs/{job_id}/notebook",
            "the new notebook must declare the job's parameters; a job without source_path "
            "needs a notebook sent",
        ),
        (
            "POST",
            "/api/previews/cron",
            "the cron expression must parse and fire, as a job's must (POST /api/jobs); the "
            "next runs must fall before the year 10000",
        ),
        (
            "POST",
            "/api/previews/parameters",
            "the notebook's parameters cell must be one papermill's inspector can read, as "
            "for POST /api/jobs",
        ),
        *[
            (
                "GET",
                path,
                "next_token must be one this service issued (it is opaque: any base64url "
                "text has the token's form)",
            )
            for path in ("/api/jobs", "/api/runs", "/api/jobs/{job_id}/runs")
        ],
    ],
    "deployer": [
        (
            "POST",
            "/api/deployments",
            "the profile must be in the admin's profiles file, which the service re-reads "
            "while it runs",
        ),
        (
            "POST",
            "/api/deployments/{name}/versions",
            "the same profile rule; and canary with canary_percent is refused (one or the "
            "other): the document does not say 'not both'",
        ),
        (
            "PUT",
            "/api/deployments/{name}/traffic",
            "the percentages of a split must sum to 100: JSON Schema has no sum",
        ),
    ],
    "usage": [
        (
            "GET",
            "/api/usage",
            "since and until must be ISO 8601 times or seconds since the epoch (a format JSON "
            "Schema has no name for), and since before until (a relation between two "
            "parameters)",
        ),
    ],
    "alerts": [
        (
            "PUT",
            "/api/targets",
            "each URL must be one apprise can use, of a scheme users may use, and its host "
            "must resolve to public addresses (apprise and DNS decide)",
        ),
    ],
}
#: Operations that take a notebook: its size in bytes is bounded by the service's
#: max_notebook_size (413), and JSON Schema bounds lengths and counts, not serialised bytes.
TOO_LARGE = {
    ("POST", "/api/jobs"),
    ("PUT", "/api/jobs/{job_id}/notebook"),
    ("POST", "/api/previews/parameters"),
}
#: What schemathesis expects of a schema-valid request by default, plus the 400 of EXCEPTIONS.
_ACCEPTED_OR_EXCEPTED = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]


def exceptions_config(service: str, folder: Path, real: dict[str, str] | None = None) -> Path:
    """A schemathesis.toml that lets the operations in ``EXCEPTIONS[service]`` answer 400,
    and draws path parameters from ``real`` (``{"path.job_id": id}``) half of the time, so
    the checks reach real objects, not only 404s; DELETE gets only drawn ones (a real
    object deleted first would leave the other operations nothing but 404s)."""
    lines = []
    for name, value in (real or {}).items():
        lines += [f"[dictionaries.{name.replace('.', '_')}]", f'values = ["{value}"]', ""]
    for method, path, reason in EXCEPTIONS[service]:
        lines += [
            f"# {reason}",
            "[[operations]]",
            f'include-method = "{method}"',
            f'include-path = "{path}"',
            "checks.positive_data_acceptance.expected-statuses = "
            + "["
            + ", ".join(
                f'"{s}"' for s in _ACCEPTED_OR_EXCEPTED + ["413"] * ((method, path) in TOO_LARGE)
            )
            + "]",
            "",
        ]
    if real:
        lines += ["[[operations]]", 'exclude-method = "DELETE"']
        lines += [
            f'parameters."{name}" = {{ dictionary = "{name.replace(".", "_")}", '
            "probability = 0.5 }"
            for name in real
        ]
    config = folder / f"schemathesis-{service}.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def schemathesis(base: str, token: str, config: Path | None = None, timeout: float = 300):
    """Run schemathesis with every check against ``base``openapi.json; return (rc, output)."""
    command = [str(SCHEMATHESIS)]
    if config is not None:
        command += ["--config-file", str(config)]
    command += [
        "run",
        base + "openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        SEED,
        # one worker: hypothesis reads lambdas' source with ``ast``, which is not thread-safe
        "--workers",
        "1",
        "--no-color",
        "--generation-database",
        "none",
        "--output-truncate",
        "false",
        "--header",
        f"Authorization: token {token}",
    ]
    # its cache (.schemathesis/) goes next to the config, never into the checkout
    cwd = config.parent if config is not None else None
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module")
def sched(hub_factory):
    # the tests' usual config, less its allowance of private webhooks (the default is off)
    config = SCHEDULER_CONFIG.replace("c.Notifier.allow_private_webhooks = True", "")
    with scheduler_hub(
        hub_factory,
        "contract-sched",
        tagged("sycon-"),
        tagged("shipyard-test-con"),
        configs={"scheduler": config},
    ) as client:
        yield client


@pytest.fixture(scope="module")
def hana(sched, home_root):
    """A user with an account and a home (notebooks by source_path), and her token."""
    return user_with_account(sched.hub, home_root, "hana")


DEEP = "__deep__"


def deep(body: dict, depth: int) -> bytes:
    """``body`` as JSON with its ``DEEP`` string replaced by a list ``depth`` levels deep
    (written as text: ``json.dumps`` itself stops near Python's recursion limit)."""
    return json.dumps(body).replace(f'"{DEEP}"', "[" * depth + "1" + "]" * depth).encode()


def refused(r: requests.Response, *words: str, status: int = 400) -> str:
    """Assert a JSON refusal with ``status`` whose message holds ``words``; return the message."""
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json"), r.headers
    message = r.json()["message"]
    for word in words:
        assert word.lower() in message.lower(), (word, message)
    return message


# ---------------------------------------------------------------- point 3: malformed input


def test_malformed_bodies_and_queries_are_400_never_500(sched, hana):
    """Issue #14, point 3: structure is checked before anything walks it, in the handler
    base every service shares (depth, size, JSON itself, Unicode), and the models are
    strict where a string or a boolean must not pass for a number."""
    token = hana[0]
    nb = notebook("x = 1", parameters="x = 1")
    job = {"name": "shape", "profile": "tiny", "notebook": nb}
    cases = [
        # parameters 1000 levels deep were a RecursionError (500)
        # a notebook whose cells is a number was a TypeError (500)
        ({**job, "notebook": {**nb, "cells": 3}}, "notebook"),
        ({**job, "notebook": {**nb, "cells": [{"cell_type": "code", "source": 3}]}}, "cells[0]"),
        (
            {**job, "notebook": {**nb, "cells": [{**nb["cells"][0], "metadata": {"tags": 7}}]}},
            "tags",
        ),
        # a string is not a number, a number not a boolean ("60" was accepted)
        ({**job, "timeout_seconds": "60"}, "timeout_seconds"),
        ({**job, "retry_attempts": True}, "retry_attempts"),
        ({**job, "paused": 1}, "paused"),
        ({**job, "notify": {"on_failure": "yes"}}, "on_failure"),
        ({**job, "parameters": {"x": 1}, "keep_runs": "5"}, "keep_runs"),
    ]
    for body, words in cases:
        r = sched.call("POST", "api/jobs", token, json=body)
        refused(r, words)
    # parameters 1000 levels deep were a RecursionError (500)
    r = sched.call("POST", "api/jobs", token, data=deep({**job, "parameters": {"x": DEEP}}, 1000))
    refused(r, "deeper than 64")
    # what json.dumps cannot write: deeper than Python's parser goes, NaN, a lone surrogate
    for raw, words in (
        (b"[" * 100_000 + b"]" * 100_000, "deeper"),
        (b'{"name": "shape", "profile": "tiny", "timeout_seconds": NaN}', "not JSON"),
        (b'{"name": "shape\\ud800", "profile": "tiny"}', "Unicode"),
    ):
        r = sched.call("POST", "api/jobs", token, data=raw)
        refused(r, words)
    # 60.0 is 60 (JSON Schema's integer): accepted
    r = sched.call("POST", "api/jobs", token, json={**job, "timeout_seconds": 60.0})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["timeout_seconds"] == 60
    # a manual run's and an update's parameters: the same guard
    r = sched.call(
        "POST", f"api/jobs/{created['id']}/runs", token, data=deep({"parameters": {"x": DEEP}}, 999)
    )
    refused(r, "deeper")
    r = sched.call("PATCH", f"api/jobs/{created['id']}", token, json={"timeout_seconds": "9"})
    refused(r, "timeout_seconds")
    # query strings: a boolean is true or false (-1 was read as false), numbers are digits
    for path, words in (
        ("api/notifications?unread=-1", "unread"),
        ("api/notifications?unread=yes", "unread"),
        ("api/jobs?paused=1", "paused"),
        ("api/jobs?limit=1e3", "limit"),
        (f"api/jobs/{created['id']}/upcoming?count=-2", "count"),
        ("api/runs?next_token=", "next_token"),
        ("api/jobs?" + "&".join(f"a{i}=1" for i in range(40)), "arguments"),
    ):
        refused(sched.call("GET", path, token), words)
    assert sched.call("GET", "api/notifications?unread=true", token).status_code == 200
    assert sched.call("DELETE", f"api/jobs/{created['id']}", token).status_code == 204


# ----------------------------------------------------- point 4: refused when it is made


def test_what_can_never_run_is_refused_when_the_job_is_made(sched, hana):
    """Issue #14, point 4: a notebook cell without ``source``, a notebook in a hidden folder,
    a webhook that points at loopback, link-local or private addresses are 400s with the
    reason when the job is saved (each was a 201 and a failure later)."""
    token, home, entry = hana
    good = notebook("print(1)")
    no_source = {**good, "cells": [{"cell_type": "code", "metadata": {}, "outputs": []}]}
    base = {"name": "never", "profile": "tiny"}
    refused(
        sched.call("POST", "api/jobs", token, json={**base, "notebook": no_source}),
        "cells[0]",
        "source",
    )
    put_file(hana, "nb/no-source.ipynb", no_source)
    refused(
        sched.call("POST", "api/jobs", token, json={**base, "source_path": "nb/no-source.ipynb"}),
        "nb/no-source.ipynb",
        "source",
    )
    # hidden folders and files, as the contents API refuses them by default
    for path in (
        ".hidden/report.ipynb",
        "work/.ipynb_checkpoints/report-checkpoint.ipynb",
        ".report.ipynb",
    ):
        put_file(hana, path, good)
        refused(
            sched.call("POST", "api/jobs", token, json={**base, "source_path": path}),
            "hidden",
        )
    # webhooks that could never be called: refused at creation, and at an update
    for url, words in (
        ("http://127.0.0.1:8081/hub/api", "not a public address"),
        ("http://localhost/hook", "not a public address"),
        ("http://169.254.169.254/latest/meta-data", "not a public address"),
        ("http://10.1.2.3/hook", "not a public address"),
        ("http://[::1]:80/hook", "not a public address"),
        ("http://no-such-host.invalid/hook", "does not resolve"),
    ):
        r = sched.call(
            "POST",
            "api/jobs",
            token,
            json={**base, "notebook": good, "notify": {"webhook_url": url}},
        )
        refused(r, "webhook_url", words)
    assert "never" not in [j["name"] for j in sched.call("GET", "api/jobs", token).json()["jobs"]]
    job = sched.call("POST", "api/jobs", token, json={**base, "notebook": good}).json()
    r = sched.call(
        "PATCH",
        f"api/jobs/{job['id']}",
        token,
        json={"notify": {"webhook_url": "http://127.0.0.1:9/hook"}},
    )
    refused(r, "not a public address")
    assert sched.call("DELETE", f"api/jobs/{job['id']}", token).status_code == 204


async def test_the_webhook_goes_to_the_addresses_that_were_checked():
    """Issue #14, point 4: the name is resolved once; the request connects to exactly the
    addresses checked (a name no DNS knows here reaches the pinned loopback server)."""
    from tornado.httpclient import AsyncHTTPClient
    from tornado.web import Application, RequestHandler

    from hub_ext.services.scheduler.notify import PinnedResolver, resolve_public

    class Hook(RequestHandler):
        def post(self):
            self.write({"host": self.request.host})

    server = Application([("/hook", Hook)]).listen(0, "127.0.0.1")
    port = next(iter(server._sockets.values())).getsockname()[1]
    client = AsyncHTTPClient(force_instance=True, resolver=PinnedResolver([(2, ("127.0.0.1", 0))]))
    try:
        r = await client.fetch(f"http://hooks.example.invalid:{port}/hook", method="POST", body="")
        assert json.loads(r.body) == {"host": f"hooks.example.invalid:{port}"}
    finally:
        client.close()
        server.stop()
    with pytest.raises(ValueError, match="not a public address"):
        await resolve_public(f"http://localhost:{port}/hook")


# ------------------------------------------------- point 5: the documents say the truth


def test_405_names_the_methods_allowed(sched, hana):
    r = requests.request(
        "PUT", sched.base + "api/jobs", headers={"Authorization": f"token {hana[0]}"}, timeout=30
    )
    assert r.status_code == 405 and r.headers["Allow"] == "GET, POST", r.headers
    r = requests.request("TRACE", sched.base + "health", timeout=30)
    assert r.status_code == 405 and r.headers["Allow"] == "GET", r.headers


def test_the_scheduler_does_what_its_openapi_document_says(sched, tmp_path):
    token = sched.hub.create_user("stella")
    body = {
        "name": "contract",
        "profile": "tiny",
        "notebook": notebook("print(n)", parameters="n = 1"),
        "triggers": [{"kind": "cron", "expression": "0 6 * * *"}, {"kind": "webhook"}],
        "concurrency_policy": "allow",
    }
    job = sched.call("POST", "api/jobs", token, json=body).json()
    run = sched.call("POST", f"api/jobs/{job['id']}/runs", token, json={}).json()
    sched.wait_run(run["id"], token)
    real = {"path.job_id": job["id"], "path.run_id": run["id"]}
    config = exceptions_config("scheduler", tmp_path, real)
    rc, output = schemathesis(sched.base, token, config)
    assert rc == 0, output


@pytest.fixture(scope="module")
def dep(hub_factory):
    with service_hub(
        hub_factory,
        "contract-deployer",
        tagged("sycdp-"),
        tagged("shipyard-test-cdp"),
        ["deployer"],
    ) as hub:
        yield DeployerClient(hub, hub.create_user("dora"))


def test_deployments_refuse_malformed_input_and_models_that_cannot_load(dep):
    """Issue #14, points 3 and 4 for the deployer: strict numbers, the shared depth guard,
    and a model URI the model server cannot load (``javascript:``) refused when it is made."""
    body = {"name": "shape", "model_uri": "models:/fake/a"}
    for change, words in (
        ({"replicas": "2"}, "replicas"),
        ({"replicas": True}, "replicas"),
        ({"model_uri": "javascript:alert(1)"}, "model_uri"),
        ({"model_uri": "s3://bucket/model"}, "model_uri"),
        ({"model_uri": "relative/model"}, "model_uri"),
        ({"model_uri": "-rf"}, "model_uri"),
    ):
        refused(dep("POST", "api/deployments", json={**body, **change}), words)
    r = dep("POST", "api/deployments", data=deep({**body, "training_summary": {"x": DEEP}}, 900))
    refused(r, "deeper than 64")
    refused(dep("POST", "api/deployments?owner=" + "x" * 300, json=body), "owner")
    # a form body tornado cannot parse is refused before routing; its audit record still works
    r = dep("POST", "api/deployments", data=b"x", headers={"Content-Type": "multipart/form-data"})
    assert r.status_code == 400, r.text
    assert "Uncaught exception" not in dep.hub.log_path.read_text()
    r = dep("PUT", "api/deployments/shape/traffic", json={"split": {"1": "100"}})
    refused(r, "split")
    assert dep("GET", "api/deployments/shape").status_code == 404
    # the limit the service enforces is the one its document states
    doc = dep("GET", "openapi.json", token="").json()
    replicas = doc["components"]["schemas"]["UpdateDeployment"]["properties"]["replicas"]
    assert replicas["maximum"] == 3  # DEPLOYER_CONFIG's max_replicas
    r = dep("PUT", "api/deployments", token="")
    assert r.status_code == 405 and r.headers["Allow"] == "GET, POST", r.headers


def test_scaling_a_version_whose_replicas_cannot_start_is_a_409(dep):
    """Found by schemathesis: a new version naming secrets replaces the deployment's list;
    scaling then could not build the running version's replicas (no secrets service on this
    hub) and the DeployFailed escaped as a 500."""
    r = dep("POST", "api/deployments", json={"name": "scaly", "model_uri": "models:/fake/a"})
    assert r.status_code == 201, r.text
    dep.wait_state("scaly", 1, "ready")
    r = dep(
        "POST",
        "api/deployments/scaly/versions",
        json={"model_uri": "models:/fake/b", "secrets": ["API_KEY"]},
    )
    assert r.status_code == 201, r.text
    dep.wait_state("scaly", 2, "failed")
    r = dep("PATCH", "api/deployments/scaly", json={"replicas": 2})
    refused(r, "version 1", "secrets", status=409)
    assert dep("DELETE", "api/deployments/scaly").status_code == 204


def test_the_deployer_does_what_its_openapi_document_says(dep, tmp_path):
    r = dep("POST", "api/deployments", json={"name": "real", "model_uri": "models:/fake/r"})
    assert r.status_code == 201, r.text
    dep.wait_state("real", 1, "ready")
    config = exceptions_config("deployer", tmp_path, {"path.name": "real"})
    rc, output = schemathesis(dep.base, dep.token, config)
    assert rc == 0, output


@pytest.fixture(scope="module")
def usage_hub(hub_factory):
    with service_hub(
        hub_factory,
        "contract-usage",
        tagged("sycus-"),
        tagged("shipyard-test-cus"),
        ["usage"],
    ) as hub:
        yield hub


@pytest.fixture(scope="module")
def alerts_service(hub_factory):
    """A hub with the alerts service alone (its disk rule; no scheduler or deployer)."""
    with service_hub(
        hub_factory,
        "contract-alerts",
        tagged("sycal-"),
        tagged("shipyard-test-cal"),
        ["alerts"],
    ) as hub:
        yield hub


def test_the_usage_service_does_what_its_openapi_document_says(usage_hub, tmp_path):
    token = usage_hub.create_user("uma")
    config = exceptions_config("usage", tmp_path)
    rc, output = schemathesis(f"{usage_hub.url}/services/usage/", token, config)
    assert rc == 0, output


def test_the_alerts_service_does_what_its_openapi_document_says(alerts_service, tmp_path):
    hub = alerts_service
    token = hub.create_user("alma")
    base = f"{hub.url}/services/alerts/"
    headers = {"Authorization": f"token {token}"}
    # malformed queries and bodies are 400s with the field named, never 500s
    for path, word in (
        ("api/alerts?include_resolved=1", "include_resolved"),
        ("api/alerts?limit=1e3", "limit"),
        ("api/alerts?state=burning", "state"),
    ):
        refused(requests.get(base + path, headers=headers, timeout=30), word)
    r = requests.put(base + "api/targets", headers=headers, json={"urls": "x"}, timeout=30)
    refused(r, "urls")
    r = requests.put(
        base + "api/targets", headers=headers, json={"urls": ["json://127.0.0.1/x"]}, timeout=30
    )
    refused(r, "not a public address")
    config = exceptions_config("alerts", tmp_path)
    rc, output = schemathesis(base, token, config)
    assert rc == 0, output


# --------------------------------------- point 12: another user's object looks missing
#
# SECURITY rule 3: a stranger's request about someone's object is answered exactly as the
# same request about an object that does not exist. Checked over every operation of each
# service's own OpenAPI document (as the running service serves it), so that a new route
# is checked, or listed below with its reason, or the test fails.

#: Response headers left out of the comparison, each with why its value may differ between
#: two answers that say the same thing. Every other header must be equal once the ids are
#: replaced, Content-Length included (the missing ids have the real ones' length). The
#: hub's proxy (configurable-http-proxy) adds no header of its own to a service's answer.
UNCOMPARED_HEADERS = {
    "date": "the second the answer was written",
}

#: Per service: the operations of its OpenAPI document that name no object of one user's,
#: (method, path) to why a stranger has no hidden object there to compare with a missing one.
NOT_PER_OBJECT = {
    "scheduler": {
        ("GET", "/openapi.json"): "the document itself, public",
        ("GET", "/health"): "the service's health, public",
        ("GET", "/metrics"): "the process's metrics, for hub admins only",
        ("GET", "/api/profiles"): "the caller's own profiles",
        ("GET", "/api/quotas"): "the group quotas' use, for hub admins and monitors only",
        ("POST", "/api/previews/cron"): "a preview of the body sent: names no object",
        ("POST", "/api/previews/parameters"): "a preview of the notebook sent: names no object",
        ("GET", "/api/jobs"): "a listing of what the caller may see (?owner= filters it)",
        ("POST", "/api/jobs"): "makes a job of the caller's own",
        ("GET", "/api/notifications"): "a listing of the caller's own notifications",
        ("GET", "/api/pipelines"): "a listing of the caller's own pipelines",
        ("POST", "/api/pipelines"): "makes a pipeline of the caller's own, from their home",
    },
    "deployer": {
        ("GET", "/openapi.json"): "the document itself, public",
        ("GET", "/health"): "the service's health, public",
        ("GET", "/metrics"): "the process's metrics, for hub admins only",
        ("GET", "/metrics/replicas"): "the replicas' metrics, for hub admins only",
        ("GET", "/api/deployments"): "a listing: a non-admin's ?owner=<another user> is 403 "
        "whoever that user is and whatever they own",
    },
}

#: Per service: the parameters (in the path or the query) that name one user's object.
OWNED_PARAMETERS = {
    "scheduler": {"job_id", "run_id", "notification_id", "pipeline_id", "pipeline_run_id"},
    "deployer": {"name", "version"},
}
#: Per service: the query parameter that names whose objects a request is about (the
#: stranger names the owner there), if any.
OWNER_PARAMETER = {"scheduler": None, "deployer": "owner"}

#: Plausible valid bodies of the checked operations ("<name>" stands for the object's
#: name): a body refused as malformed (400) would hide the ownership check behind
#: validation, so every checked operation that takes a body has one here.
BODIES = {
    "scheduler": {
        ("PATCH", "/api/jobs/{job_id}"): {"paused": True, "timeout_seconds": 30},
        ("PUT", "/api/jobs/{job_id}/notebook"): {"notebook": notebook("print('replaced')")},
        ("POST", "/api/jobs/{job_id}/runs"): {"parameters": {}},
        ("PATCH", "/api/runs/{run_id}"): {"status": "cancelled"},
        ("PATCH", "/api/notifications/{notification_id}"): {"read": True},
        ("PUT", "/api/pipelines/{pipeline_id}"): {},
        ("PATCH", "/api/pipelines/{pipeline_id}"): {"paused": True},
        ("POST", "/api/pipelines/{pipeline_id}/runs"): {"parameters": {}},
        ("PATCH", "/api/pipeline-runs/{pipeline_run_id}"): {"status": "cancelled"},
    },
    "deployer": {
        # the object named in the body, in the owner's namespace (?owner=)
        ("POST", "/api/deployments"): {"name": "<name>", "model_uri": "models:/fake/stranger"},
        ("PATCH", "/api/deployments/{name}"): {"replicas": 2},
        ("POST", "/api/deployments/{name}/versions"): {"model_uri": "models:/fake/stranger"},
        ("PUT", "/api/deployments/{name}/traffic"): {"split": {"1": 100}},
        ("POST", "/api/deployments/{name}/promote"): {"version": 1},
        ("POST", "/api/deployments/{name}/rollback"): {"version": 1},
        ("PUT", "/api/deployments/{name}/grants"): {"users": ["bob"], "groups": ["everyone"]},
    },
}

#: Request headers the document requires of a checked operation, with a plausible value.
REQUEST_HEADERS = {
    "scheduler": {
        # a secret of the real ones' form (token_urlsafe(32)), not the job's
        ("POST", "/api/webhooks/{job_id}"): {"X-Shipyard-Webhook-Secret": "s" * 43},
    },
    "deployer": {},
}

#: Model traffic (not in the deployer's OpenAPI document: it is the models' own API), by
#: (method, path) to a plausible body; the test checks this covers every route of
#: :func:`hub_ext.services.deployer.router.model_routes`.
MODEL_ROUTES = {
    ("POST", "/models/{owner}/{name}/invocations"): {"inputs": [[1.0, 2.0]]},
    ("POST", "/models/{owner}/{name}/v/{version}/invocations"): {"inputs": [[1.0, 2.0]]},
    ("GET", "/models/{owner}/{name}/health"): None,
}

_METHODS = ("get", "put", "post", "patch", "delete")


@dataclass
class Operation:
    """One operation to ask as a stranger: its path template, parameters and body."""

    method: str
    path: str
    owned: list[str]  # the owned parameters it names (path, query or body)
    query: list[str]  # the query parameters to send (owned ones, and the owner's)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def operations_to_check(service: str, doc: dict) -> list[Operation]:
    """Every operation of ``doc`` that names an owned object; fail on any that is neither
    checkable (a body or header it needs is missing here) nor listed in NOT_PER_OBJECT."""
    owned_names = OWNED_PARAMETERS[service]
    skipped = NOT_PER_OBJECT[service]
    seen, checked, problems = set(), [], []
    for path, item in doc["paths"].items():
        for method in (m for m in item if m in _METHODS):
            key = (method.upper(), path)
            seen.add(key)
            op = item[method]
            params = op.get("parameters", []) + item.get("parameters", [])
            body = BODIES[service].get(key)
            owned = [p["name"] for p in params if p["name"] in owned_names]
            owned += [n for n in owned_names if f'"<{n}>"' in json.dumps(body)]
            if key in skipped:
                if owned:
                    problems.append(f"{key} is listed as not per object, but names {owned}")
                continue
            if not owned:
                problems.append(f"{key} names no owned object: list it in NOT_PER_OBJECT")
                continue
            if "requestBody" in op and body is None:
                problems.append(f"{key} takes a body: give a valid one in BODIES")
            headers = REQUEST_HEADERS[service].get(key, {})
            for p in params:
                if not p.get("required") or p["in"] == "path":
                    continue
                if p["in"] != "header" or p["name"] not in headers:
                    problems.append(f"{key} requires {p['in']} {p['name']!r}: give a value")
            query = [
                p["name"]
                for p in params
                if p["in"] == "query"
                and (p["name"] in owned_names or p["name"] == OWNER_PARAMETER[service])
            ]
            checked.append(
                Operation(key[0], path, list(dict.fromkeys(owned)), query, body, headers)
            )
    for table in (NOT_PER_OBJECT, BODIES, REQUEST_HEADERS):
        stale = set(table[service]) - seen
        assert not stale, f"{service}: entries for operations the document lacks: {stale}"
    assert not problems, "\n".join(problems)
    return checked


def _fill(template: Any, values: dict[str, str]) -> Any:
    """``template`` with each string "<param>" replaced by ``values[param]``."""
    if isinstance(template, dict):
        return {k: _fill(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, values) for v in template]
    if isinstance(template, str) and template.startswith("<") and template.endswith(">"):
        return values[template[1:-1]]
    return template


def _ask(base: str, token: str, op: Operation, values: dict[str, str]) -> requests.Response:
    path = op.path
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    headers = {"Authorization": f"token {token}", **op.headers}
    data = None
    if op.body is not None:
        data = json.dumps(_fill(op.body, values)).encode()
        headers["Content-Type"] = "application/json"
    return requests.request(
        op.method,
        base + path.lstrip("/"),
        params={name: values[name] for name in op.query},
        data=data,
        headers=headers,
        timeout=60,
        allow_redirects=False,
    )


def _masked(r: requests.Response, values: dict[str, str], owned: list[str]) -> tuple:
    """(status line, body, headers) of ``r``, the values of ``owned`` replaced by "<param>"."""

    def mask(text: str) -> str:
        for name in sorted(owned, key=lambda n: -len(values[n])):
            # the value as a word of its own: not inside a name, an id or "6.6.1"
            pattern = rf"(?<![\w.-]){re.escape(values[name])}(?!\.?[\w-])"
            text = re.sub(pattern, f"<{name}>", text)
        return text

    headers = {
        k.lower(): mask(v) for k, v in r.headers.items() if k.lower() not in UNCOMPARED_HEADERS
    }
    return f"{r.status_code} {r.reason}", mask(r.text), headers


def stranger_differences(
    service: str,
    base: str,
    token: str,
    operations: list[Operation],
    real: dict[str, str],
    missing: dict[str, str],
) -> list[str]:
    """Ask each operation about ``real`` (another user's objects) and about ``missing``
    ones (each owned parameter in turn, then all of them); return every difference."""
    failures = []
    # DELETE last: one that wrongly succeeded would leave the others nothing to find
    for op in sorted(operations, key=lambda op: op.method == "DELETE"):
        variants = [{n: missing[n] if n == name else real[n] for n in real} for name in op.owned]
        if len(op.owned) > 1:
            variants.append({n: missing[n] if n in op.owned else real[n] for n in real})
        hidden = _ask(base, token, op, real)
        seen = _masked(hidden, real, op.owned)
        route = f"{service} {op.method} {op.path}"
        if hidden.status_code != 404:
            failures.append(
                f"{route}: another user's object answers {hidden.status_code}, "
                f"not 404: {hidden.text[:300]}"
            )
            continue
        for values in variants:
            other = _masked(_ask(base, token, op, values), values, op.owned)
            what = ", ".join(f"{n}={values[n]}" for n in op.owned if values[n] != real[n])
            if other == seen:
                continue
            headers = {
                k: (seen[2].get(k), other[2].get(k))
                for k in seen[2].keys() | other[2].keys()
                if seen[2].get(k) != other[2].get(k)
            }
            failures.append(
                f"{route}: another user's object answers unlike a missing one ({what}):\n"
                f"  status  hidden: {seen[0]!r}, missing: {other[0]!r}\n"
                f"  body    hidden: {seen[1]}\n"
                f"          missing: {other[1]}\n"
                f"  headers (hidden, missing): {headers}"
            )
    return failures


def test_another_users_jobs_runs_and_notifications_answer_as_missing_ones(sched, home_root):
    """Issue #14, point 12: every operation of the scheduler's document that names a job,
    a run or a notification answers a stranger exactly as it answers about a missing one
    (status, whole body, headers), and a stranger's writes change nothing."""
    alice = sched.hub.create_user("alice")
    bob = sched.hub.create_user("bob")
    account = account_name("alice", sched.hub.account_prefix)
    _create(account, str(home_root / account), "test user alice")
    doc = requests.get(sched.base + "openapi.json", timeout=30).json()
    operations = operations_to_check("scheduler", doc)
    # a job with a webhook whose run fails: a run, its output and a notification to hide
    body = {
        "name": "alices",
        "profile": "tiny",
        "notebook": notebook("raise ValueError('planned')"),
        "triggers": [{"kind": "webhook"}],
    }
    job = sched.call("POST", "api/jobs", alice, json=body).json()
    run = sched.call("POST", f"api/jobs/{job['id']}/runs", alice, json={}).json()
    assert sched.wait_run(run["id"], alice)["status"] == "failed"
    notes = wait_for(
        lambda: sched.call("GET", "api/notifications", alice).json()["notifications"],
        30,
        0.2,
        "alice's notification",
    )

    # a pipeline of alice's (from her home) and a run of it that failed
    home = Path(home_root / account)
    folder = home / "hidden"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "step.ipynb").write_text(json.dumps(notebook("raise ValueError('planned')")))
    (folder / "pipeline.yaml").write_text(
        "name: hidden\nprofile: tiny\nsteps:\n  only: {notebook: step.ipynb}\n"
    )
    entry = pwd.getpwnam(account)
    for path in (folder, folder / "step.ipynb", folder / "pipeline.yaml"):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    r = sched.call("POST", "api/pipelines", alice, json={"path": "hidden/pipeline.yaml"})
    assert r.status_code == 201, r.text
    pipeline = r.json()
    prun = sched.call("POST", f"api/pipelines/{pipeline['id']}/runs", alice, json={}).json()
    wait_for(
        lambda: (
            sched.call("GET", f"api/pipeline-runs/{prun['id']}", alice).json()["status"] == "failed"
        ),
        120,
        0.2,
        "alice's pipeline run to fail",
    )

    def state() -> list:
        return [
            sched.call("GET", path, alice).content
            for path in (
                f"api/jobs/{job['id']}",
                f"api/jobs/{job['id']}/notebook",
                f"api/jobs/{job['id']}/runs",
                "api/notifications",
                f"api/pipelines/{pipeline['id']}",
                f"api/pipelines/{pipeline['id']}/runs",
            )
        ]

    before = state()
    real = {
        "job_id": job["id"],
        "run_id": run["id"],
        "notification_id": notes[0]["id"],
        "pipeline_id": pipeline["id"],
        "pipeline_run_id": prun["id"],
    }
    missing = {name: uuid.uuid4().hex for name in real}
    failures = stranger_differences("scheduler", sched.base, bob, operations, real, missing)
    assert not failures, "\n".join(failures)
    assert {(op.method, op.path) for op in operations} >= {
        ("DELETE", "/api/jobs/{job_id}"),
        ("GET", "/api/runs"),  # ?job_id=
        ("POST", "/api/webhooks/{job_id}"),
        ("DELETE", "/api/pipelines/{pipeline_id}"),
        ("POST", "/api/pipeline-runs/{pipeline_run_id}/repair"),
    }
    assert state() == before, "a stranger's request changed alice's job or pipeline"


def test_another_users_deployments_answer_as_missing_ones(dep):
    """Issue #14, point 12: every operation of the deployer's document that names a
    deployment or a version, asked by a stranger with ``?owner=`` its owner, and every
    model route, answer exactly as about a missing one; a stranger's writes change nothing."""
    from hub_ext.services.deployer.router import model_routes

    alice = DeployerClient(dep.hub, dep.hub.create_user("alice"))
    bob = dep.hub.create_user("bob")
    doc = alice("GET", "openapi.json", token="").json()
    operations = operations_to_check("deployer", doc)
    name = "alices-model"
    r = alice("POST", "api/deployments", json={"name": name, "model_uri": "models:/fake/a"})
    assert r.status_code == 201, r.text
    alice.wait_state(name, 1, "ready")
    # the model routes: all of router.model_routes, each with its methods
    routes = set()
    for pattern, handler in model_routes("/"):
        path = pattern.replace("([^/]+)", "{owner}", 1).replace("([a-z0-9-]+)", "{name}", 1)
        path = path.replace("([1-9][0-9]{0,8})", "{version}").replace("()", "")
        routes |= {(m.upper(), path) for m in _METHODS if m in vars(handler)}
    assert routes == set(MODEL_ROUTES), routes
    operations += [
        Operation(method, path, ["name", "version"] if "{version}" in path else ["name"], [], body)
        for (method, path), body in MODEL_ROUTES.items()
    ]

    def state() -> list:
        return [
            alice("GET", path).json()
            for path in (f"api/deployments/{name}", f"api/deployments/{name}/versions/1")
        ]

    before = state()
    real = {"owner": "alice", "name": name, "version": "1"}
    missing = {"owner": "alice", "name": "z" * len(name), "version": "2"}
    failures = stranger_differences("deployer", dep.base, bob, operations, real, missing)
    assert not failures, "\n".join(failures)
    assert state() == before, "a stranger's request changed alice's deployment"
    assert alice.invoke("alice", name).status_code == 200
    assert alice("DELETE", f"api/deployments/{name}").status_code == 204
