"""The secrets service: its rules, its storage, and its clients, against a real hub.

One hub per module with the secrets service on (``secrets_hub``), two users and two
external services of the test's own: ``test-resolver`` (listed in the service's
``resolvers``, as the scheduler and the deployer are) and ``intruder`` (a service with
access to the secrets service but not a resolver). The storage is tested on SQLite and
PostgreSQL; the Kubernetes manifests are validated against the Kubernetes schema.
"""

from __future__ import annotations

import base64
import json
import os
import secrets as random
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from cryptography.fernet import Fernet
from IPython.core.error import UsageError

from hub_ext.services.common.scrub import Scrubber, StreamScrubber
from hub_ext.services.secrets.database import DatabaseBackend
from hub_ext.services.secrets.errors import Invalid
from hub_ext.services.secrets.keys import KeyFileError, load_or_create
from hub_ext.services.secrets.kubernetes import (
    UserSecretsSpec,
    parse_secret,
    secret_manifest,
)
from hub_ext.services.secrets.models import check_name

from .conftest import needs_root, postgres_database
from .hubtools import REPO, tagged, wait_for
from .manifests import validated
from .openapi_checks import assert_references_resolve
from .services import service_hub

#: Tokens of the test's own services (declared in the hub through SHIPYARD_TEST_EXTRA_SERVICES).
RESOLVER_TOKEN = random.token_hex(24)
INTRUDER_TOKEN = random.token_hex(24)


def audit_records(data_dir: Path) -> list[dict]:
    path = data_dir / "audit" / "audit.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------ names and keys


@pytest.mark.parametrize(
    "name", ["DB_PASSWORD", "api_key", "_X", "A1", "X" * 128], ids=lambda n: n[:12]
)
def test_environment_variable_names_are_secret_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name, says",
    [
        ("1ABC", "environment variable name"),
        ("A-B", "environment variable name"),
        ("A B", "environment variable name"),
        ("", "environment variable name"),
        ("X" * 129, "at most 128"),
        ("PATH", "set by Shipyard"),
        ("JUPYTERHUB_API_TOKEN", "set by Shipyard"),
        ("mlflow_tracking_token", "set by Shipyard"),
        ("SHIPYARD_RUN_ID", "set by Shipyard"),
    ],
)
def test_bad_names_are_refused_with_what_to_fix(name, says):
    with pytest.raises(Invalid) as info:
        check_name(name)
    assert says in info.value.message


def test_key_file_is_made_0600_once_and_refused_when_others_can_read_it(tmp_path):
    path = tmp_path / "keys" / "secrets.key"
    keys = load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = keys.encrypt(b"x")
    assert load_or_create(path).decrypt(token) == b"x"  # the same key, not a new one
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        load_or_create(path)
    path.chmod(0o600)
    path.write_text("not a key\n")
    with pytest.raises(KeyFileError, match="line 1"):
        load_or_create(path)


# ------------------------------------------------------------------ storage


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/secrets.sqlite"
    else:
        with postgres_database() as url:
            yield url


def _backend(db_url: str, key_file: Path) -> DatabaseBackend:
    import asyncio

    backend = DatabaseBackend(db_url=db_url, key_file=str(key_file))
    asyncio.run(backend.start())
    return backend


def test_database_backend_stores_encrypted_values_bound_to_owner_and_name(db_url, tmp_path):
    import asyncio

    from sqlalchemy import text

    from hub_ext.services.secrets.keys import KeyFileError as BoundError

    value = "s3cr3t-" + random.token_hex(8)
    backend = _backend(db_url, tmp_path / "secrets.key")
    try:
        info, created = asyncio.run(backend.put("alice", "DB_PASSWORD", value))
        assert created and info.name == "DB_PASSWORD"
        _, created = asyncio.run(backend.put("alice", "DB_PASSWORD", value + "2"))
        assert not created
        asyncio.run(backend.put("bob", "DB_PASSWORD", "bobs"))
        assert [i.name for i in asyncio.run(backend.list("alice"))] == ["DB_PASSWORD"]
        assert asyncio.run(backend.resolve("alice", ["DB_PASSWORD", "NOPE"])) == {
            "DB_PASSWORD": value + "2"
        }
        assert asyncio.run(backend.count("alice")) == 1
        with backend._engine.connect() as connection:
            rows = connection.execute(text("SELECT owner, name, ciphertext FROM secrets")).all()
            # at rest: no value, in any row, in any encoding the database shows
            dump = repr(rows).encode() + b"".join(bytes(r[2]) for r in rows)
            assert value.encode() not in dump and b"bobs" not in dump
            # a ciphertext moved to another owner's row does not decrypt there
            alice_token = next(bytes(r[2]) for r in rows if r[0] == "alice")
        with backend._engine.begin() as connection:
            connection.execute(
                text("UPDATE secrets SET ciphertext = :c WHERE owner = 'bob'"), {"c": alice_token}
            )
        with pytest.raises(BoundError, match="another row"):
            asyncio.run(backend.resolve("bob", ["DB_PASSWORD"]))
        assert asyncio.run(backend.delete("alice", "DB_PASSWORD")) is True
        assert asyncio.run(backend.delete("alice", "DB_PASSWORD")) is False
    finally:
        asyncio.run(backend.close())


def test_rotation_reencrypts_under_the_new_first_key(tmp_path):
    import asyncio

    from sqlalchemy import text

    key_file = tmp_path / "secrets.key"
    url = f"sqlite:///{tmp_path}/secrets.sqlite"
    backend = _backend(url, key_file)
    asyncio.run(backend.put("alice", "TOKEN", "old-value"))
    asyncio.run(backend.close())
    old = [line for line in key_file.read_text().splitlines() if not line.startswith("#")][0]
    new = Fernet.generate_key().decode()
    key_file.write_text(f"{new}\n{old}\n")
    backend = _backend(url, key_file)  # rotates at start
    try:
        assert asyncio.run(backend.resolve("alice", ["TOKEN"])) == {"TOKEN": "old-value"}
        with backend._engine.connect() as connection:
            token = bytes(connection.execute(text("SELECT ciphertext FROM secrets")).scalar())
        assert Fernet(new.encode()).decrypt(token).endswith(b"old-value")
    finally:
        asyncio.run(backend.close())
    key_file.write_text(f"{new}\n")  # the old key can go now
    backend = _backend(url, key_file)
    try:
        assert asyncio.run(backend.resolve("alice", ["TOKEN"])) == {"TOKEN": "old-value"}
    finally:
        asyncio.run(backend.close())


def test_migrations_match_the_orm(db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from hub_ext.services.secrets.db import make_engine, upgrade
    from hub_ext.services.secrets.orm import Base

    upgrade(db_url)
    upgrade(db_url)  # a no-op the second time
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={"compare_type": True, "version_table": "secrets_alembic_version"},
            )
            assert context.get_current_revision() == "0001"
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_database_and_key_file_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SHIPYARD_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SHIPYARD_SECRETS_DB_URL", raising=False)
    monkeypatch.delenv("SHIPYARD_SECRETS_KEY_FILE", raising=False)
    backend = DatabaseBackend()
    assert backend.db_url == f"sqlite:///{tmp_path}/secrets/secrets.sqlite"
    assert backend.key_file == str(tmp_path / "secrets.key")
    monkeypatch.setenv("SHIPYARD_SECRETS_DB_URL", "postgresql://db/secrets")
    monkeypatch.setenv("SHIPYARD_SECRETS_KEY_FILE", "/etc/shipyard/secrets.key")
    backend = DatabaseBackend()
    assert backend.db_url == "postgresql://db/secrets"
    assert backend.key_file == "/etc/shipyard/secrets.key"


# ------------------------------------------------------------------ Kubernetes


def test_a_users_secrets_are_one_valid_kubernetes_secret():
    from datetime import datetime, timezone

    when = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)
    spec = UserSecretsSpec(
        owner="Ada.Lovelace@example.org",
        namespace="jobs",
        values={"DB_PASSWORD": "pä$$\nword", "API_KEY": "k"},
        times={"DB_PASSWORD": (when, when), "API_KEY": (when, when)},
    )
    manifest = validated(secret_manifest(spec))
    assert manifest["metadata"]["name"].startswith("shipyard-secrets-ada-lovelace")
    assert len(manifest["metadata"]["name"]) <= 63
    assert base64.b64decode(manifest["data"]["DB_PASSWORD"]).decode() == "pä$$\nword"
    assert manifest["metadata"]["annotations"]["shipyard.io/owner"] == spec.owner
    assert parse_secret(manifest, spec.owner, "jobs") == spec
    assert (
        validated(secret_manifest(spec, resource_version="42"))["metadata"]["resourceVersion"]
        == "42"
    )


def test_jobs_and_deployments_reference_the_owners_secret_never_a_value():
    from hub_ext.host.k8s import user_secrets_name
    from hub_ext.services.deployer.kube_manifests import deployment_manifest
    from hub_ext.services.scheduler.executors.kube_manifests import job_manifest

    from .modelspecs import KUBE_PROFILES as MODEL_PROFILES
    from .modelspecs import kube_version
    from .runspecs import KUBE_PROFILES as JOB_PROFILES
    from .runspecs import SETTINGS as JOB_SETTINGS
    from .runspecs import kube_spec

    value = "value-" + random.token_hex(8)
    spec = kube_spec(JOB_PROFILES[0], secrets={"DB_PASSWORD": value})
    job = validated(job_manifest(spec, JOB_SETTINGS))
    kv = kube_version(MODEL_PROFILES[0], secrets={"DB_PASSWORD": value})
    deployment = validated(deployment_manifest(kv))
    for manifest, owner in ((job, spec.owner), (deployment, kv.spec.owner)):
        assert value not in json.dumps(manifest)
        pod = manifest["spec"]["template"]["spec"]
        envs = [e for c in [*pod.get("initContainers", []), *pod["containers"]] for e in c["env"]]
        refs = [e for e in envs if e["name"] == "DB_PASSWORD"]
        assert refs, "the container lacks the secret"
        assert refs[0]["valueFrom"]["secretKeyRef"] == {
            "name": user_secrets_name(owner),
            "key": "DB_PASSWORD",
        }


# ------------------------------------------------------------------ scrubbing


def test_scrubbing_notebooks_html_and_streams(tmp_path):
    value = 'pa"ss<wörd>'
    scrubber = Scrubber({"DB_PASSWORD": value})
    notebook = {
        "cells": [{"outputs": [{"text": f"the password is {value}\n"}], "source": "print()"}],
        "metadata": {},
    }
    path = tmp_path / "out.ipynb"
    path.write_text(json.dumps(notebook))  # JSON-escaped on disk
    assert scrubber.notebook_file(path)
    text = path.read_text()
    assert "[secret DB_PASSWORD]" in text and "wörd" not in text
    json.loads(text)  # still a notebook
    html = tmp_path / "out.html"
    html.write_text("<pre>pa&quot;ss&lt;wörd&gt;</pre>")
    assert scrubber.text_file(html) and "wörd" not in html.read_text()
    link = tmp_path / "link.html"
    link.symlink_to(html)
    with pytest.raises(OSError):
        scrubber.text_file(link)  # never through a link
    written = bytearray()
    stream = StreamScrubber(scrubber, written.extend)
    data = f"a {value} b\nc {value}".encode()
    for i in range(len(data)):  # a byte at a time: a value split across writes
        stream.write(data[i : i + 1])
    stream.flush()
    assert value.encode() not in bytes(written)
    assert bytes(written).decode().count("[secret DB_PASSWORD]") == 2


# ------------------------------------------------------------------ the service


class SecretsAPI:
    def __init__(self, hub):
        self.hub = hub
        self.base = f"{hub.url}/services/secrets/"

    def call(self, method: str, path: str, token: str | None, **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"token {token}"
        r = requests.request(method, self.base + path, headers=headers, timeout=30, **kwargs)
        assert r.status_code < 500, r.text
        if r.status_code >= 400:
            body = r.json()
            assert body["message"] and "Traceback" not in r.text, r.text
        if r.status_code != 204:
            assert r.headers["Content-Type"].startswith("application/json"), r.headers
            assert "frame-ancestors" in r.headers["Content-Security-Policy"]
        return r


@pytest.fixture(scope="module")
def api(hub_factory):
    config = (
        'c.SecretsService.resolvers = ["scheduler", "deployer", "test-resolver"]\n'
        'c.SecretsService.max_value_size = "1K"\n'
    )
    services = [
        {
            "name": "test-resolver",
            "api_token": RESOLVER_TOKEN,
            "scopes": ["access:services!service=secrets"],
        },
        {
            "name": "intruder",
            "api_token": INTRUDER_TOKEN,
            "scopes": ["access:services!service=secrets"],
        },
    ]
    with service_hub(
        hub_factory,
        "secrets",
        tagged("sysec-"),
        tagged("shipyard-test-sec"),
        ["secrets"],
        configs={"secrets": config},
        extra_env={"SHIPYARD_TEST_EXTRA_SERVICES": json.dumps(services)},
    ) as hub:
        yield SecretsAPI(hub)


@pytest.fixture(scope="module")
def tokens(api):
    return {name: api.hub.create_user(name) for name in ("alice", "bob")}


def test_openapi_describes_every_route(api):
    from hub_ext.services.secrets.handlers import routes

    spec = api.call("GET", "openapi.json", None).json()
    for pattern, handler in routes("/"):
        path = "/" + pattern.lstrip("/").replace("([^/]+)", "{name}")
        methods = {m for m in ("get", "put", "post", "delete") if m in vars(handler)}
        assert path in spec["paths"], path
        assert methods <= set(spec["paths"][path]), (path, methods)
    assert "value" not in spec["components"]["schemas"]["DescribeSecret"]["properties"]
    assert_references_resolve(spec)


def test_set_list_update_delete_never_answer_a_value(api, tokens):
    alice = tokens["alice"]
    value = "v-" + random.token_hex(12)
    r = api.call("PUT", "api/secrets/DB_PASSWORD", alice, json={"value": value})
    assert r.status_code == 201 and r.json()["created"] is True
    r2 = api.call("PUT", "api/secrets/DB_PASSWORD", alice, json={"value": value + "x"})
    assert r2.status_code == 200 and r2.json()["created"] is False
    listed = api.call("GET", "api/secrets", alice)
    assert [s["name"] for s in listed.json()["secrets"]] == ["DB_PASSWORD"]
    one = api.call("GET", "api/secrets/DB_PASSWORD", alice)
    assert set(one.json()) == {"name", "created_at", "updated_at"}
    for answer in (r, r2, listed, one):
        assert value not in answer.text
    assert api.call("DELETE", "api/secrets/DB_PASSWORD", alice).status_code == 204
    assert api.call("GET", "api/secrets", alice).json() == {"secrets": []}
    assert api.call("DELETE", "api/secrets/DB_PASSWORD", alice).status_code == 404


def test_another_users_secret_answers_exactly_like_a_missing_one(api, tokens):
    alice, bob = tokens["alice"], tokens["bob"]
    api.call("PUT", "api/secrets/ALICE_ONLY", alice, json={"value": "alice-value"})
    hidden = api.call("GET", "api/secrets/ALICE_ONLY", bob)
    missing = api.call("GET", "api/secrets/ALICE_ONLY_NOT", bob)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["message"].replace("ALICE_ONLY", "X") == missing.json()["message"].replace(
        "ALICE_ONLY_NOT", "X"
    )
    assert api.call("DELETE", "api/secrets/ALICE_ONLY", bob).status_code == 404
    assert api.call("GET", "api/secrets", bob).json() == {"secrets": []}
    # bob's own secret of that name is another secret
    assert api.call("PUT", "api/secrets/ALICE_ONLY", bob, json={"value": "b"}).status_code == 201
    assert api.call("GET", "api/secrets/ALICE_ONLY", alice).status_code == 200


@pytest.mark.parametrize(
    "path, body, status, says",
    [
        ("api/secrets/1ABC", {"value": "x"}, 400, "environment variable name"),
        ("api/secrets/A-B", {"value": "x"}, 400, "environment variable name"),
        ("api/secrets/PATH", {"value": "x"}, 400, "set by Shipyard"),
        ("api/secrets/OK", {"value": ""}, 400, "empty"),
        ("api/secrets/OK", {"value": "a\u0000b"}, 400, "NUL"),
        ("api/secrets/OK", {"value": "x" * 1025}, 413, "1024"),
        ("api/secrets/OK", {"valeu": "x"}, 400, "valeu"),
        ("api/secrets/OK", {"value": 3}, 400, "value"),
        ("api/secrets/OK", "not json", 400, "JSON"),
    ],
)
def test_bad_input_gets_a_clear_4xx(api, tokens, path, body, status, says):
    kwargs = {"data": body} if isinstance(body, str) else {"json": body}
    r = api.call("PUT", path, tokens["alice"], **kwargs)
    assert r.status_code == status, r.text
    assert says in r.json()["message"]
    assert "OK" not in [
        s["name"] for s in api.call("GET", "api/secrets", tokens["alice"]).json()["secrets"]
    ]


def test_without_a_login_401(api):
    assert api.call("GET", "api/secrets", None).status_code == 401
    assert api.call("POST", "api/resolve", None, json={}).status_code == 401
    assert api.call("GET", "api/nothing", None).status_code == 404


def test_only_the_resolver_services_get_values_and_every_use_is_audited(api, tokens):
    alice = tokens["alice"]
    value = "resolve-" + random.token_hex(10)
    api.call("PUT", "api/secrets/API_KEY", alice, json={"value": value})
    body = {
        "owner": "alice",
        "names": ["API_KEY"],
        "purpose": "job j1 run r1",
        "details": {"job": "j1", "run": "r1"},
    }
    # users (the owner too), and services that are not resolvers: 403
    for token in (alice, tokens["bob"], INTRUDER_TOKEN):
        r = api.call("POST", "api/resolve", token, json=body)
        assert r.status_code == 403, r.text
        assert value not in r.text
    r = api.call("POST", "api/resolve", RESOLVER_TOKEN, json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {"owner": "alice", "values": {"API_KEY": value}}
    missing = api.call("POST", "api/resolve", RESOLVER_TOKEN, json={**body, "names": ["NOPE"]})
    assert missing.status_code == 404 and "NOPE" in missing.json()["message"]
    bad = api.call("POST", "api/resolve", RESOLVER_TOKEN, json={**body, "names": ["1X"]})
    assert bad.status_code == 400

    def uses():
        return [
            r
            for r in audit_records(api.hub.data_dir)
            if r["action"] == "secret.use" and r["target"] == "secret/alice/API_KEY"
        ]

    records = wait_for(lambda: len(uses()) >= 4 and uses(), 10, 0.2, "the secret.use records")
    allowed = [r for r in records if r["outcome"] == "allowed"]
    assert len(allowed) == 1
    assert allowed[0]["actor"] == "test-resolver" and allowed[0]["actor_kind"] == "service"
    assert allowed[0]["on_behalf_of"] == "alice" and allowed[0]["owner"] == "alice"
    assert allowed[0]["details"]["job"] == "j1"
    denied = [r for r in records if r["outcome"] == "denied"]
    assert {r["actor"] for r in denied} >= {"alice", "bob", "intruder"}


def test_changes_are_audited_and_no_value_reaches_the_trail_or_the_logs(api, tokens):
    alice = tokens["alice"]
    value = "trail-" + random.token_hex(10)
    api.call("PUT", "api/secrets/TRAIL", alice, json={"value": value})
    api.call("PUT", "api/secrets/TRAIL", alice, json={"value": value + "2"})
    api.call("DELETE", "api/secrets/TRAIL", alice)
    api.call("DELETE", "api/secrets/TRAIL", alice)  # denied: missing
    api.call("PUT", "api/secrets/1TRAIL", alice, json={"value": value})  # denied: bad name

    def mine():
        return [r for r in audit_records(api.hub.data_dir) if r["target"] == "secret/alice/TRAIL"]

    records = wait_for(lambda: len(mine()) >= 4 and mine(), 10, 0.2, "the secret records")
    assert [(r["action"], r["outcome"]) for r in records] == [
        ("secret.create", "allowed"),
        ("secret.update", "allowed"),
        ("secret.delete", "allowed"),
        ("secret.delete", "denied"),
    ]
    assert all(r["actor"] == "alice" and r["actor_kind"] == "user" for r in records)
    bad = wait_for(
        lambda: [
            r for r in audit_records(api.hub.data_dir) if r["target"] == "secret/alice/1TRAIL"
        ],
        10,
        0.2,
        "the denied create",
    )
    assert [(r["action"], r["outcome"]) for r in bad] == [("secret.create", "denied")]
    assert "environment variable name" in bad[0]["reason"]
    for path in [api.hub.log_path, *(api.hub.data_dir / "audit").iterdir()]:
        if path.is_file():
            assert value.encode() not in path.read_bytes(), path


def test_values_are_encrypted_at_rest_with_a_key_file_outside_the_database(api, tokens):
    value = "at-rest-" + random.token_hex(10)
    assert (
        api.call("PUT", "api/secrets/AT_REST", tokens["alice"], json={"value": value}).status_code
        == 201
    )
    folder = api.hub.data_dir / "secrets"
    files = [p for p in folder.iterdir() if p.name.startswith("secrets.sqlite")]
    assert files, list(folder.iterdir())
    found = b"".join(p.read_bytes() for p in files)
    assert b"AT_REST" in found  # the search works: the name is there...
    assert value.encode() not in found  # ...and the value is not
    key = api.hub.data_dir / "secrets.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes().strip() not in found


# ------------------------------------------------------------------ %secret and the CLI


@pytest.fixture
def shell(api, tokens, tmp_path, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("SHIPYARD_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("SHIPYARD_SECRETS_URL", api.base)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", tokens["alice"])
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "server_ext")  # registers %secret with the others
    yield ip
    import atexit

    manager = ip.magics_manager.registry.get("TrackingMagics")
    if manager is not None:
        atexit.unregister(manager.sender.flush)
    InteractiveShell.clear_instance()


def test_secret_magic_reads_the_value_with_getpass_only(shell, api, tokens, monkeypatch, capsys):
    assert "secret" in shell.magics_manager.magics["line"]
    value = "magic-" + random.token_hex(10)
    prompts = []
    monkeypatch.setattr("getpass.getpass", lambda prompt="": prompts.append(prompt) or value)
    shell.run_line_magic("secret", "set MAGIC_KEY")
    assert prompts and "MAGIC_KEY" in prompts[0]
    shell.run_line_magic("secret", "list")
    out = capsys.readouterr().out
    assert "MAGIC_KEY" in out and value not in out
    resolved = api.call(
        "POST",
        "api/resolve",
        RESOLVER_TOKEN,
        json={"owner": "alice", "names": ["MAGIC_KEY"], "purpose": "test"},
    )
    assert resolved.json()["values"] == {"MAGIC_KEY": value}
    shell.run_line_magic("secret", "delete MAGIC_KEY")
    assert "deleted" in capsys.readouterr().out
    for line, says in [
        ("set", "Name the secret"),
        ("set A hunter2", "only a verb and a NAME"),
        ("set A=hunter2", "only a verb and a NAME"),
        ("show A", "Unknown %secret verb"),
        ("list A", "takes no name"),
        ("delete MAGIC_KEY", "no secret named"),
        ("set 1BAD", "environment variable name"),
    ]:
        with pytest.raises(UsageError, match=says):
            shell.run_line_magic("secret", line)


def shipyard(env: dict, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hub_ext.cli", *args],
        cwd=REPO,
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_sets_from_stdin_lists_and_deletes_never_from_argv(api, tokens):
    env = {"SHIPYARD_SECRETS_URL": api.base, "JUPYTERHUB_API_TOKEN": tokens["bob"]}
    value = "cli-" + random.token_hex(10)
    done = shipyard(env, "secrets", "set", "CLI_KEY", "--stdin", stdin=value + "\n")
    assert done.returncode == 0, done.stderr
    assert "created" in done.stdout and value not in done.stdout + done.stderr
    listed = shipyard(env, "secrets", "list")
    assert listed.returncode == 0 and "CLI_KEY" in listed.stdout and value not in listed.stdout
    resolved = api.call(
        "POST",
        "api/resolve",
        RESOLVER_TOKEN,
        json={"owner": "bob", "names": ["CLI_KEY"], "purpose": "test"},
    )
    assert resolved.json()["values"] == {"CLI_KEY": value}  # the newline was the shell's
    # no value on the command line, no prompt without a terminal
    refused = shipyard(env, "secrets", "set", "CLI_KEY", "hunter2")
    assert refused.returncode != 0 and "unrecognized arguments" in refused.stderr
    no_tty = shipyard(env, "secrets", "set", "CLI_KEY", stdin="")
    assert no_tty.returncode != 0 and "--stdin" in no_tty.stderr
    bad = shipyard(env, "secrets", "set", "1BAD", "--stdin", stdin="x")
    assert bad.returncode != 0 and "environment variable name" in bad.stderr
    assert "Traceback" not in bad.stderr
    deleted = shipyard(env, "secrets", "delete", "CLI_KEY")
    assert deleted.returncode == 0, deleted.stderr
    again = shipyard(env, "secrets", "delete", "CLI_KEY")
    assert again.returncode != 0 and "no secret named" in again.stderr
    no_token = shipyard(
        {"SHIPYARD_SECRETS_URL": api.base, "JUPYTERHUB_API_TOKEN": ""}, "secrets", "list"
    )
    assert no_token.returncode != 0 and "No token" in no_token.stderr


pytestmark = [needs_root]
