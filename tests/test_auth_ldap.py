"""LDAP logins against a real OpenLDAP server, through a real hub.

One slapd per module (tests/ldapserver.py: its own config and data, StartTLS with a CA
made for it, on a free port) and one hub with ``SHIPYARD_AUTH=ldap`` pointed at it. The
directory's people and groups:

=======  ===================  ====================================
uid      groups               why
=======  ===================  ====================================
alice    staff, research      an allowed user with two groups
bob      staff                logs in; leaves ``staff`` and is refused
carol    interns              not in an allowed group: refused
dave     admins               an admin through the admin group
erin     staff, research      has a session while her groups change
=======  ===================  ====================================

The hub binds as the user (a DN template) and has a search account (``cn=reader``),
so it re-reads a logged-in user's groups every second (``SHIPYARD_LDAP_REFRESH_AGE=1``).
The search-bind setup Active Directory needs, certificate checking and the settings'
errors are tested on the authenticator itself, against the same slapd.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from traitlets.config import Config

from hub_ext.auth import AuthConfigError, configure_authenticator
from hub_ext.auth.ldap import ShipyardLDAPAuthenticator, settings_from_env

from . import ldapserver
from .auditrecords import AUDITED, all_records, directory_changes, login_records
from .conftest import needs_root
from .hubtools import tagged, wait_for
from .ldapserver import GROUPS, PEOPLE, READER_DN, LDAPServer

_missing = ldapserver.available()
if _missing and os.environ.get("CI"):
    raise RuntimeError(f"CI installs slapd (make test-packages): {_missing}")
pytestmark = pytest.mark.skipif(bool(_missing), reason=_missing or "")

PASSWORDS = {
    name: f"{name}-pw-{i}7Q" for i, name in enumerate(("alice", "bob", "carol", "dave", "erin"))
}
GROUP_MEMBERS = {
    "staff": ["alice", "bob", "erin"],
    "research": ["alice", "erin"],
    "interns": ["carol"],
    "admins": ["dave"],
}


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    server = LDAPServer(
        tmp_path_factory.mktemp("ldap") / "slapd", users=PASSWORDS, groups=GROUP_MEMBERS
    ).start()
    yield server
    server.stop()


def ldap_env(server: LDAPServer, secrets_dir: Path) -> dict[str, str]:
    """The settings an admin gives for this directory: template bind, search account."""
    password_file = secrets_dir / "ldap-reader-password"
    password_file.write_text(server.reader_password + "\n")
    password_file.chmod(0o600)
    return {
        "SHIPYARD_AUTH": "ldap",
        "SHIPYARD_LDAP_URL": server.url,
        "SHIPYARD_LDAP_CA_FILE": str(server.ca_file),
        "SHIPYARD_LDAP_BIND_DN_TEMPLATE": f"uid={{username}},{PEOPLE}",
        "SHIPYARD_LDAP_GROUP_SEARCH_BASE": GROUPS,
        "SHIPYARD_LDAP_ALLOWED_GROUPS": "staff",
        "SHIPYARD_LDAP_ADMIN_GROUPS": "admins",
        "SHIPYARD_LDAP_BIND_USER": READER_DN,
        "SHIPYARD_LDAP_BIND_PASSWORD_FILE": str(password_file),
        "SHIPYARD_LDAP_REFRESH_AGE": "1",
    }


@pytest.fixture(scope="module")
def ldap_hub(hub_factory, directory, tmp_path_factory):
    env = ldap_env(directory, tmp_path_factory.mktemp("ldap-secrets"))
    # accounts and cgroups of its own: other modules' hubs have users named alice too
    hub = hub_factory(
        name="ldaphub",
        account_prefix=tagged("sydir-"),
        cgroup_parent=tagged("shipyard-test-ldap"),
        extra_env=env,
    )
    yield hub
    hub.stop()


def form_login(hub, name: str, password: str) -> tuple[requests.Session, requests.Response]:
    """Log in on the hub's login form, as a browser does; return the session and answer."""
    s = requests.Session()
    r = s.get(f"{hub.url}/hub/login", timeout=30)
    assert r.status_code == 200, r.text
    r = s.post(
        f"{hub.url}/hub/login",
        data={"username": name, "password": password, "_xsrf": s.cookies.get("_xsrf")},
        allow_redirects=False,
        timeout=60,
    )
    return s, r


class LoginCheck:
    """Log in and check the answer and the one audit record it leaves."""

    def __init__(self, hub):
        self.hub = hub

    def __call__(self, name: str, password: str, allowed: bool, reason: str | None = None):
        before = len(login_records(self.hub.data_dir, name))
        session, r = form_login(self.hub, name, password)
        if allowed:
            assert r.status_code == 302, f"{name}: {r.status_code} {r.text[:300]}"
            assert session.cookies.get("jupyterhub-session-id")
        else:
            assert r.status_code == 403, f"{name}: {r.status_code}"
            assert "Invalid username or password" in r.text
        if AUDITED:
            new = wait_for(
                lambda: login_records(self.hub.data_dir, name)[before:] or None,
                10,
                0.1,
                f"the audit record of {name}'s login",
            )
            time.sleep(0.2)  # nothing more may follow
            new = login_records(self.hub.data_dir, name)[before:]
            assert len(new) == 1, new
            record = new[0]
            if allowed:
                assert (record["action"], record["actor"], record["outcome"]) == (
                    "login.succeeded",
                    name,
                    "allowed",
                )
            else:
                assert (record["action"], record["outcome"]) == ("login.failed", "denied")
                assert record["actor"] is None
                if reason:
                    assert record["reason"] == reason, record
            if len(password) >= 8:
                assert password not in json.dumps(record)
        return session


def hub_groups(hub, name: str) -> list[str]:
    r = hub.api("GET", f"/users/{name}")
    assert r.status_code == 200, r.text
    return sorted(r.json()["groups"])


# ----------------------------------------------------------- through a real hub


@needs_root
def test_directory_user_logs_in_with_their_password_and_gets_their_groups(ldap_hub):
    login = LoginCheck(ldap_hub)
    login("alice", PASSWORDS["alice"], allowed=True)
    model = ldap_hub.api("GET", "/users/alice").json()
    assert sorted(model["groups"]) == ["research", "staff"]
    assert model["admin"] is False
    # the hub groups exist with the directory's members in them
    r = ldap_hub.api("GET", "/groups/research")
    assert r.status_code == 200 and "alice" in r.json()["users"]


@needs_root
def test_wrong_password_unknown_user_and_blank_password_are_refused(ldap_hub):
    login = LoginCheck(ldap_hub)
    login("alice", "not-her-password", allowed=False, reason="invalid credentials")
    login("alice", PASSWORDS["bob"], allowed=False, reason="invalid credentials")
    login("mallory", "whatever-1234", allowed=False, reason="invalid credentials")
    login("alice", " ", allowed=False)
    # an LDAP filter or DN in the name is refused, not interpreted
    login("alice)(uid=*", PASSWORDS["alice"], allowed=False)


@needs_root
def test_user_outside_the_allowed_groups_is_refused(ldap_hub):
    LoginCheck(ldap_hub)(
        "carol", PASSWORDS["carol"], allowed=False, reason="not in an allowed directory group"
    )
    assert ldap_hub.api("GET", "/users/carol").status_code == 404


@needs_root
def test_admin_group_makes_an_admin(ldap_hub):
    since = len(all_records(ldap_hub.data_dir))
    LoginCheck(ldap_hub)("dave", PASSWORDS["dave"], allowed=True)
    model = ldap_hub.api("GET", "/users/dave").json()
    assert model["admin"] is True
    assert model["groups"] == ["admins"]
    if AUDITED:
        # the first login made the user, the group, the membership and the admin: each once
        assert directory_changes(ldap_hub.data_dir, since, "ldap") == [
            ("user.create", "user/dave", {"source": "ldap"}),
            ("group.create", "group/admins", {"source": "ldap"}),
            ("group.members_add", "group/admins", {"users": ["dave"], "source": "ldap"}),
            ("role.change", "user/dave", {"admin": True, "source": "ldap"}),
        ]
        # a login that changes nothing records nothing but the login
        since = len(all_records(ldap_hub.data_dir))
        LoginCheck(ldap_hub)("dave", PASSWORDS["dave"], allowed=True)
        assert directory_changes(ldap_hub.data_dir, since, "ldap") == []


@needs_root
def test_group_removed_in_the_directory_is_gone_at_the_next_login(ldap_hub, directory):
    login = LoginCheck(ldap_hub)
    login("alice", PASSWORDS["alice"], allowed=True)
    assert hub_groups(ldap_hub, "alice") == ["research", "staff"]
    directory.remove_member("research", "alice")
    try:
        since = len(all_records(ldap_hub.data_dir))
        login("alice", PASSWORDS["alice"], allowed=True)
        assert hub_groups(ldap_hub, "alice") == ["staff"]
        assert "alice" not in ldap_hub.api("GET", "/groups/research").json()["users"]
        if AUDITED:
            assert directory_changes(ldap_hub.data_dir, since, "ldap") == [
                ("group.members_remove", "group/research", {"users": ["alice"], "source": "ldap"})
            ]
    finally:
        directory.add_member("research", "alice")
    # and a group added in the directory comes back the same way
    since = len(all_records(ldap_hub.data_dir))
    login("alice", PASSWORDS["alice"], allowed=True)
    assert hub_groups(ldap_hub, "alice") == ["research", "staff"]
    if AUDITED:
        assert directory_changes(ldap_hub.data_dir, since, "ldap") == [
            ("group.members_add", "group/research", {"users": ["alice"], "source": "ldap"})
        ]


@needs_root
def test_user_removed_from_the_allowed_group_is_refused_at_the_next_login(ldap_hub, directory):
    login = LoginCheck(ldap_hub)
    login("bob", PASSWORDS["bob"], allowed=True)
    r = ldap_hub.api("POST", "/users/bob/tokens", json={"expires_in": 600})
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    assert ldap_hub.api("GET", "/user", token=token).json()["name"] == "bob"
    directory.remove_member("staff", "bob")
    try:
        # known to the hub now, but the directory decides: no allow_existing_users
        login("bob", PASSWORDS["bob"], allowed=False, reason="not in an allowed directory group")
        # and the tokens he had stop working once his groups are re-read
        time.sleep(1.2)  # past SHIPYARD_LDAP_REFRESH_AGE
        assert ldap_hub.api("GET", "/user", token=token).status_code == 403
    finally:
        directory.add_member("staff", "bob")


@needs_root
def test_a_session_follows_the_directory_through_the_search_account(ldap_hub, directory):
    """Groups are re-read every SHIPYARD_LDAP_REFRESH_AGE seconds, without a new login."""
    session = LoginCheck(ldap_hub)("erin", PASSWORDS["erin"], allowed=True)
    assert hub_groups(ldap_hub, "erin") == ["research", "staff"]
    directory.remove_member("research", "erin")
    try:
        time.sleep(1.2)  # past SHIPYARD_LDAP_REFRESH_AGE
        since = len(all_records(ldap_hub.data_dir))
        r = session.get(f"{ldap_hub.url}/hub/home", allow_redirects=False, timeout=30)
        assert r.status_code == 200, r.status_code
        assert hub_groups(ldap_hub, "erin") == ["staff"]
        if AUDITED:
            assert directory_changes(ldap_hub.data_dir, since, "ldap") == [
                ("group.members_remove", "group/research", {"users": ["erin"], "source": "ldap"})
            ]

        # out of every allowed group: the session ends (login again, which is refused)
        directory.remove_member("staff", "erin")
        time.sleep(1.2)
        r = session.get(f"{ldap_hub.url}/hub/home", allow_redirects=False, timeout=30)
        assert r.status_code == 302 and "/hub/login" in r.headers["Location"], r.status_code
        LoginCheck(ldap_hub)(
            "erin", PASSWORDS["erin"], allowed=False, reason="not in an allowed directory group"
        )
        # the hub ended the session cleanly (no "Failed to get current user" traceback)
        assert "Failed to get current user" not in ldap_hub.log_tail(400)
    finally:
        directory.add_member("research", "erin")
        directory.add_member("staff", "erin")


# ----------------------------------------------- the authenticator on its own


@pytest.fixture
def audit_trail(tmp_path, monkeypatch):
    """Records of in-process logins go to a trail of the test's own."""
    monkeypatch.setenv("SHIPYARD_AUDIT_DIR", str(tmp_path / "audit"))
    monkeypatch.delenv("SHIPYARD_AUDIT_DB_URL", raising=False)
    if AUDITED:
        from hub_ext.audit import reset

        reset()
    yield tmp_path
    if AUDITED:
        from hub_ext.audit import reset

        reset()


def authenticator_from_env(monkeypatch, env: dict[str, str]) -> ShipyardLDAPAuthenticator:
    for name in [n for n in os.environ if n.startswith("SHIPYARD_LDAP_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    c = Config()
    assert configure_authenticator(c, Path("/nonexistent")) == "ldap"
    assert c.JupyterHub.authenticator_class is ShipyardLDAPAuthenticator
    return ShipyardLDAPAuthenticator(config=c)


def attempt(authenticator, name: str, password: str):
    return asyncio.run(
        authenticator.get_authenticated_user(None, {"username": name, "password": password})
    )


def test_search_bind_as_active_directory_needs(directory, tmp_path, monkeypatch, audit_trail):
    """No DN template: the search account finds the user's DN by attribute, then binds."""
    env = ldap_env(directory, tmp_path)
    del env["SHIPYARD_LDAP_BIND_DN_TEMPLATE"]
    env["SHIPYARD_LDAP_USER_SEARCH_BASE"] = PEOPLE
    env["SHIPYARD_LDAP_USER_ATTRIBUTE"] = "uid"
    authenticator = authenticator_from_env(monkeypatch, env)
    assert authenticator.lookup_dn and not authenticator.bind_dn_template
    model = attempt(authenticator, "alice", PASSWORDS["alice"])
    assert model["name"] == "alice"
    assert sorted(model["groups"]) == ["research", "staff"]
    assert model["admin"] is False
    assert attempt(authenticator, "alice", "wrong") is None
    assert attempt(authenticator, "nobody-here", "x-password") is None
    assert attempt(authenticator, "carol", PASSWORDS["carol"]) is None


def test_the_directory_certificate_is_checked(directory, tmp_path, monkeypatch, audit_trail):
    """StartTLS to a server whose CA the hub was not given fails: no login, no password sent."""
    env = ldap_env(directory, tmp_path)
    del env["SHIPYARD_LDAP_CA_FILE"]
    authenticator = authenticator_from_env(monkeypatch, env)
    assert authenticator.tls_kwargs["validate"] == 2  # ssl.CERT_REQUIRED
    assert attempt(authenticator, "alice", PASSWORDS["alice"]) is None
    if AUDITED:
        lines = (audit_trail / "audit" / "audit.jsonl").read_text().splitlines()
        record = json.loads(lines[-1])
        assert (record["action"], record["reason"]) == ("login.failed", "directory unavailable")
    # and with the CA it works
    env["SHIPYARD_LDAP_CA_FILE"] = str(directory.ca_file)
    authenticator = authenticator_from_env(monkeypatch, env)
    assert attempt(authenticator, "alice", PASSWORDS["alice"])["name"] == "alice"


def test_ldaps_as_active_directory_offers_it(directory, tmp_path, monkeypatch, audit_trail):
    env = ldap_env(directory, tmp_path)
    env["SHIPYARD_LDAP_URL"] = directory.ldaps_url
    authenticator = authenticator_from_env(monkeypatch, env)
    assert authenticator.tls_strategy.name == "on_connect"
    assert authenticator.server_port == int(directory.ldaps_url.rsplit(":", 1)[1])
    assert attempt(authenticator, "alice", PASSWORDS["alice"])["groups"] == ["research", "staff"]
    assert attempt(authenticator, "alice", "wrong") is None
    # the certificate is checked here too
    del env["SHIPYARD_LDAP_CA_FILE"]
    assert attempt(authenticator_from_env(monkeypatch, env), "alice", PASSWORDS["alice"]) is None


def test_a_directory_that_never_answers_refuses_the_login_in_time(
    directory, tmp_path, monkeypatch, audit_trail
):
    """A listener that accepts and stays silent: the login gives up after the timeout."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        env = ldap_env(directory, tmp_path)
        env["SHIPYARD_LDAP_URL"] = f"ldap://127.0.0.1:{silent.getsockname()[1]}"
        env["SHIPYARD_LDAP_TIMEOUT"] = "1"
        authenticator = authenticator_from_env(monkeypatch, env)
        started = time.monotonic()
        assert attempt(authenticator, "alice", PASSWORDS["alice"]) is None
        assert time.monotonic() - started < 5
        if AUDITED:
            record = all_records(audit_trail)[-1]
            assert (record["action"], record["reason"]) == (
                "login.failed",
                "directory unavailable",
            )
    finally:
        silent.close()


def test_plain_ldap_only_when_asked_for(directory, tmp_path, monkeypatch, audit_trail):
    env = ldap_env(directory, tmp_path)
    env["SHIPYARD_LDAP_TLS"] = "insecure"
    authenticator = authenticator_from_env(monkeypatch, env)
    assert authenticator.tls_strategy.name == "insecure"
    assert attempt(authenticator, "alice", PASSWORDS["alice"])["groups"] == ["research", "staff"]


def test_a_refresh_re_reads_groups_and_asks_a_vanished_user_to_log_in(
    directory, tmp_path, monkeypatch, audit_trail
):
    """The search account re-reads a hub user's groups (without their password)."""

    class Group:
        def __init__(self, name):
            self.name = name

    class User:  # what the hub holds: erin, in staff only so far
        name = "erin"
        admin = False
        groups = [Group("staff")]

    authenticator = authenticator_from_env(monkeypatch, ldap_env(directory, tmp_path))
    refreshed = asyncio.run(authenticator.refresh_user(User()))
    assert refreshed["groups"] == ["research", "staff"]
    if AUDITED:
        assert directory_changes(audit_trail, 0, "ldap") == [
            ("group.members_add", "group/research", {"users": ["erin"], "source": "ldap"})
        ]
    User.name = "ghost"
    assert asyncio.run(authenticator.refresh_user(User())) is False


# ------------------------------------------------------------ settings errors


@needs_root
def test_a_hub_missing_a_setting_stops_at_start_and_names_it(hub_factory, directory):
    hub = hub_factory(
        name="ldapbad",
        start=False,
        extra_env={"SHIPYARD_AUTH": "ldap", "SHIPYARD_LDAP_URL": directory.url},
    )
    with pytest.raises(RuntimeError, match="SHIPYARD_LDAP_BIND_DN_TEMPLATE is not set"):
        hub.start()


BASE_ENV = {
    "SHIPYARD_LDAP_URL": "ldap://ldap.example.org",
    "SHIPYARD_LDAP_BIND_DN_TEMPLATE": "uid={username},ou=people,dc=example,dc=org",
    "SHIPYARD_LDAP_GROUP_SEARCH_BASE": "ou=groups,dc=example,dc=org",
    "SHIPYARD_LDAP_ALLOWED_GROUPS": "staff",
}


def test_shipyard_up_names_a_missing_setting_before_starting_anything(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_LDAP_")}
    env["SHIPYARD_AUTH"] = "ldap"
    r = subprocess.run(
        [sys.executable, "-m", "hub_ext.cli", "up", "--data-dir", str(tmp_path / "data")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.startswith("shipyard: The login settings are incomplete: SHIPYARD_LDAP_URL")
    assert "Traceback" not in r.stderr and "Starting JupyterHub" not in r.stdout


@pytest.mark.parametrize(
    "change, variable",
    [
        ({"SHIPYARD_LDAP_URL": None}, "SHIPYARD_LDAP_URL"),
        ({"SHIPYARD_LDAP_URL": "http://ldap.example.org"}, "SHIPYARD_LDAP_URL"),
        ({"SHIPYARD_LDAP_BIND_DN_TEMPLATE": None}, "SHIPYARD_LDAP_BIND_DN_TEMPLATE"),
        ({"SHIPYARD_LDAP_BIND_DN_TEMPLATE": "uid=x,dc=org"}, "SHIPYARD_LDAP_BIND_DN_TEMPLATE"),
        ({"SHIPYARD_LDAP_ALLOWED_GROUPS": None}, "SHIPYARD_LDAP_ALLOWED_GROUPS"),
        ({"SHIPYARD_LDAP_GROUP_SEARCH_BASE": None}, "SHIPYARD_LDAP_GROUP_SEARCH_BASE"),
        ({"SHIPYARD_LDAP_TLS": "maybe"}, "SHIPYARD_LDAP_TLS"),
        ({"SHIPYARD_LDAP_URL": "ldaps://h", "SHIPYARD_LDAP_TLS": "starttls"}, "SHIPYARD_LDAP_TLS"),
        ({"SHIPYARD_LDAP_CA_FILE": "/nonexistent/ca.pem"}, "SHIPYARD_LDAP_CA_FILE"),
        ({"SHIPYARD_LDAP_BIND_USER": "cn=reader,dc=org"}, "SHIPYARD_LDAP_BIND_PASSWORD_FILE"),
        (
            {"SHIPYARD_LDAP_BIND_USER": "cn=r", "SHIPYARD_LDAP_BIND_PASSWORD_FILE": "/nonexistent"},
            "SHIPYARD_LDAP_BIND_PASSWORD_FILE",
        ),
        ({"SHIPYARD_LDAP_USER_FILTER": "(objectClass=person)"}, "SHIPYARD_LDAP_USER_SEARCH_BASE"),
        ({"SHIPYARD_LDAP_GROUP_FILTER": "(member=x)"}, "SHIPYARD_LDAP_GROUP_FILTER"),
        ({"SHIPYARD_LDAP_REFRESH_AGE": "soon"}, "SHIPYARD_LDAP_REFRESH_AGE"),
        ({"SHIPYARD_LDAP_ALLOW_ALL": "perhaps"}, "SHIPYARD_LDAP_ALLOW_ALL"),
    ],
)
def test_a_missing_or_wrong_setting_names_the_variable(monkeypatch, change, variable):
    for name in [n for n in os.environ if n.startswith("SHIPYARD_LDAP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SHIPYARD_AUTH", "ldap")
    for name, value in {**BASE_ENV, **change}.items():
        if value is not None:
            monkeypatch.setenv(name, value)
    with pytest.raises(AuthConfigError, match=variable):
        configure_authenticator(Config(), Path("/nonexistent"))


def test_the_settings_an_admin_gives(monkeypatch, tmp_path):
    for name in [n for n in os.environ if n.startswith("SHIPYARD_LDAP_")]:
        monkeypatch.delenv(name)
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    for name, value in {
        **BASE_ENV,
        "SHIPYARD_LDAP_URL": "ldaps://ad.example.org",
        "SHIPYARD_LDAP_BIND_DN_TEMPLATE": "",
        "SHIPYARD_LDAP_USER_SEARCH_BASE": "ou=people,dc=example,dc=org",
        "SHIPYARD_LDAP_USER_ATTRIBUTE": "sAMAccountName",
        "SHIPYARD_LDAP_BIND_USER": "cn=svc,dc=example,dc=org",
        "SHIPYARD_LDAP_BIND_PASSWORD_FILE": str(secret),
        "SHIPYARD_LDAP_ALLOWED_GROUPS": "staff, research",
        "SHIPYARD_LDAP_ADMIN_GROUPS": "admins",
    }.items():
        monkeypatch.setenv(name, value)
    s = settings_from_env()
    assert s["server_address"] == "ad.example.org"
    assert (s["tls_strategy"], s["server_port"]) == ("on_connect", 636)
    assert s["lookup_dn"] and s["lookup_dn_user_dn_attribute"] == "sAMAccountName"
    assert s["lookup_dn_search_password"] == "s3cret"
    assert s["allowed_group_names"] == {"staff", "research"}
    assert s["admin_group_names"] == {"admins"}
    assert s["manage_groups"] and not s["allow_existing_users"] and not s["allow_all"]


@needs_root
def test_directory_groups_decide_the_profiles_at_the_next_spawn(ldap_hub, directory):
    """``roomy`` is for ``research`` (tests/conftest.py): the directory decides who gets it.

    No new login in between: a spawn re-reads the groups with the search account first.
    """
    LoginCheck(ldap_hub)("alice", PASSWORDS["alice"], allowed=True)
    ldap_hub.start_server("alice", profile="roomy")
    ldap_hub.stop_server("alice")
    directory.remove_member("research", "alice")
    try:
        time.sleep(1.2)  # past SHIPYARD_LDAP_REFRESH_AGE
        r = ldap_hub.api("POST", "/users/alice/server", json={"profile": "roomy"})
        assert r.status_code == 403, r.text
        assert "only for members of the groups research" in r.json()["message"]
        assert hub_groups(ldap_hub, "alice") == ["staff"]
    finally:
        directory.add_member("research", "alice")


@needs_root
def test_no_password_reaches_the_hub_log(ldap_hub, directory):
    """After every login above: neither a user's nor the search account's password is logged."""
    LoginCheck(ldap_hub)("alice", PASSWORDS["alice"], allowed=True)
    log = ldap_hub.log_path.read_text(errors="replace")
    assert "alice" in log
    for secret in [directory.reader_password, *PASSWORDS.values()]:
        assert secret not in log
