"""The login matrix against a real hub: who gets in, who does not, and the audit of each try.

One hub (Shipyard's embedded config, ``SHIPYARD_AUTH`` unset, so the native per-user
accounts) with a short lock-out window so the lock-out test is quick. Every login attempt
must leave exactly one ``login.*`` record in the audit trail (the JSON-lines file in the
data dir's ``audit`` folder) with the right actor and outcome.
"""

from __future__ import annotations

import json
import re
import time

import pytest
import requests

from hub_ext.cli.main import main

from .conftest import postgres_database
from .hubtools import wait_for

LOCKOUT_FAILURES = 3
LOCKOUT_SECONDS = 4

AUTH_ENV = {
    "SHIPYARD_NATIVE_LOCKOUT_FAILURES": str(LOCKOUT_FAILURES),
    "SHIPYARD_NATIVE_LOCKOUT_SECONDS": str(LOCKOUT_SECONDS),
    "SHIPYARD_SECRETS": "0",
}


@pytest.fixture(scope="module")
def hub(hub_factory):
    hub = hub_factory(name="auth", extra_env=AUTH_ENV)
    yield hub
    hub.stop()


def records(hub) -> list[dict]:
    path = hub.data_dir / "audit" / "audit.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Trail:
    """The records a block of test code added to the trail."""

    def __init__(self, hub):
        self.hub = hub
        self.start = len(records(hub))

    def new(self, prefix: str = "") -> list[dict]:
        return [r for r in records(self.hub)[self.start :] if r["action"].startswith(prefix)]

    def mark(self) -> None:
        self.start = len(records(self.hub))


def one_login_record(trail: Trail) -> dict:
    found = trail.new("login.")
    assert len(found) == 1, f"expected one login record, got {found}"
    trail.mark()
    return found[0]


def login_error(response: requests.Response) -> str:
    match = re.search(r'class="login_error">\s*([^<]*?)\s*<', response.text)
    return match.group(1) if match else ""


def signup(hub, name: str, password: str, confirmation: str | None = None):
    session = requests.Session()
    session.get(hub.url + "/hub/signup", timeout=30)
    return session.post(
        hub.url + "/hub/signup",
        data={
            "username": name,
            "signup_password": password,
            "signup_password_confirmation": password if confirmation is None else confirmation,
            "_xsrf": session.cookies.get("_xsrf"),
        },
        timeout=60,
    )


def admin_session(hub) -> requests.Session:
    creds = json.loads((hub.data_dir / "credentials.json").read_text())
    session, r = hub.login(creds["admin_user"], creds["admin_password"])
    assert r.status_code == 302, f"the bootstrapped admin cannot log in: {r.status_code}"
    return session


# ---------------------------------------------------------------- the matrix


def test_right_password_in_wrong_password_out(hub):
    password = hub.add_user_with_password("alice")
    trail = Trail(hub)

    session, r = hub.login("alice", password)
    assert r.status_code == 302
    assert session.get(hub.url + "/hub/api/user", timeout=30).json()["name"] == "alice"
    record = one_login_record(trail)
    assert record["action"] == "login.succeeded"
    assert (record["actor"], record["actor_kind"], record["outcome"]) == (
        "alice",
        "user",
        "allowed",
    )
    assert record["client"] == "127.0.0.1"

    _, r = hub.login("alice", password + "x")
    assert r.status_code == 403
    assert login_error(r) == "Invalid username or password."
    record = one_login_record(trail)
    assert record["action"] == "login.failed"
    assert (record["actor"], record["actor_kind"], record["outcome"]) == (
        None,
        "anonymous",
        "denied",
    )
    assert record["target"] == "user/alice" and record["reason"] == "wrong password"
    assert password not in json.dumps(records(hub)), "a password reached the audit trail"


def test_another_users_password_opens_nothing(hub):
    alice = hub.add_user_with_password("alice2")
    hub.add_user_with_password("bob")
    trail = Trail(hub)
    for name in ("bob", "nobody", "admin"):
        _, r = hub.login(name, alice)
        assert r.status_code == 403, f"alice2's password let someone in as {name}"
        record = one_login_record(trail)
        assert record["action"] == "login.failed" and record["target"] == f"user/{name}"
    assert trail.new() == []


def test_a_known_password_gets_no_token_for_another_user(hub):
    """The earlier hole: POST /hub/api/users/<other>/tokens with a password."""
    alice = hub.add_user_with_password("alice3")
    hub.add_user_with_password("bea")
    trail = Trail(hub)
    url = hub.url + "/hub/api/users/{}/tokens"
    # alice's own name and password, asking for bea's token
    r = requests.post(
        url.format("bea"), json={"auth": {"username": "alice3", "password": alice}}, timeout=30
    )
    assert r.status_code == 403
    assert one_login_record(trail)["action"] == "login.succeeded"  # she is alice3, not bea
    # bea's name with alice's password
    r = requests.post(
        url.format("bea"), json={"auth": {"username": "bea", "password": alice}}, timeout=30
    )
    assert r.status_code == 403
    record = one_login_record(trail)
    assert record["action"] == "login.failed" and record["target"] == "user/bea"
    # and the same call for herself works: the refusal above is about identity
    r = requests.post(
        url.format("alice3"), json={"auth": {"username": "alice3", "password": alice}}, timeout=30
    )
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    assert hub.api("GET", "/user", token=token).json()["name"] == "alice3"
    one_login_record(trail)


def test_lock_out_after_repeated_failures_then_the_window_ends(hub):
    password = hub.add_user_with_password("carl")
    trail = Trail(hub)
    for attempt in range(LOCKOUT_FAILURES):
        _, r = hub.login("carl", f"wrong-{attempt}")
        assert r.status_code == 403
        record = one_login_record(trail)
        assert record["action"] == "login.failed"
    assert "locked" in record["reason"]
    locked_at = time.monotonic()

    # the right password is refused while the account is locked, and says so
    _, r = hub.login("carl", password)
    assert r.status_code == 403
    assert "locked" in login_error(r)
    record = one_login_record(trail)
    assert record["action"] == "login.locked_out"
    assert (record["outcome"], record["target"], record["actor"]) == ("denied", "user/carl", None)

    # another user is not affected
    other = hub.add_user_with_password("cleo")
    trail.mark()
    assert hub.login("cleo", other)[1].status_code == 302
    one_login_record(trail)

    time.sleep(max(0, LOCKOUT_SECONDS + 0.5 - (time.monotonic() - locked_at)))
    _, r = hub.login("carl", password)
    assert r.status_code == 302, "the lock did not end after its window"
    assert one_login_record(trail)["action"] == "login.succeeded"


def test_a_sign_up_waits_for_approval(hub):
    r = signup(hub, "dina", "Dina-Sails-Far-7")
    assert r.status_code == 200
    assert "sent to the admin" in r.text
    trail = Trail(hub)
    _, r = hub.login("dina", "Dina-Sails-Far-7")
    assert r.status_code == 403
    assert "not been approved" in login_error(r)
    record = one_login_record(trail)
    assert record["reason"] == "sign-up not approved yet" and record["target"] == "user/dina"

    admin = admin_session(hub)
    trail.mark()
    home = admin.get(hub.url + "/hub/home", timeout=30).text
    assert 'href="/hub/authorize"' in home and 'href="/hub/change-password"' in home
    page = admin.get(hub.url + "/hub/authorize", timeout=30)
    assert page.status_code == 200 and 'id="user-dina"' in page.text
    # approving is a POST with the XSRF token: a GET (a link followed) changes nothing
    assert admin.get(hub.url + "/hub/authorize/dina", timeout=30).status_code == 405
    assert hub.login("dina", "Dina-Sails-Far-7")[1].status_code == 403
    trail.mark()
    r = admin.post(
        hub.url + "/hub/authorize/dina",
        data={"approve": "1", "_xsrf": admin.cookies.get("_xsrf")},
        timeout=30,
    )
    assert r.status_code == 200
    approvals = trail.new("user.approve")
    assert len(approvals) == 1
    assert (approvals[0]["actor"], approvals[0]["target"]) == ("admin", "user/dina")
    trail.mark()
    assert hub.login("dina", "Dina-Sails-Far-7")[1].status_code == 302
    assert one_login_record(trail)["action"] == "login.succeeded"


def test_a_non_admin_cannot_approve_or_reach_the_admin_api(hub):
    password = hub.add_user_with_password("eve")
    signup(hub, "evebuddy", "Buddy-Of-Eve-99")
    session, _ = hub.login("eve", password)
    r = session.post(
        hub.url + "/hub/authorize/evebuddy",
        data={"approve": "1", "_xsrf": session.cookies.get("_xsrf")},
        timeout=30,
    )
    assert r.status_code == 403
    assert hub.login("evebuddy", "Buddy-Of-Eve-99")[1].status_code == 403
    token = hub.api("POST", "/users/eve/tokens", json={"note": "t"}).json()["token"]
    for method, path in [
        ("GET", "/shipyard/users"),
        ("POST", "/shipyard/users/bob/one-time-password"),
        ("POST", "/shipyard/users/evebuddy/approval"),
    ]:
        r = hub.api(method, path, token=token, json={} if method == "POST" else None)
        assert r.status_code == 403, f"{method} {path}: {r.status_code}"


def test_a_one_time_password_must_be_changed_before_anything_else(hub):
    hub.create_user("fay")
    r = hub.api("POST", "/shipyard/users/fay/one-time-password", json={})
    assert r.status_code == 201
    one_time = r.json()["password"]
    trail = Trail(hub)

    session, form = hub.login("fay", one_time)
    assert form.status_code == 200 and "Choose your password" in form.text
    record = one_login_record(trail)
    assert record["action"] == "login.failed" and "one-time" in record["reason"]
    # no session came with it, and the token API refuses it too
    assert session.get(hub.url + "/hub/api/user", timeout=30).status_code == 403
    r = requests.post(
        hub.url + "/hub/api/users/fay/tokens",
        json={"auth": {"username": "fay", "password": one_time}},
        timeout=30,
    )
    assert r.status_code == 403
    # the hub records the refused token request as the answer goes out: it may land
    # just after the client has it
    refused = wait_for(lambda: trail.new("token.create"), 10, 0.05, "the refused token's record")
    assert refused[0]["outcome"] == "denied" and refused[0]["target"] == "token/fay"
    one_login_record(trail)

    ticket = re.search(r'name="ticket" value="([^"]+)"', form.text).group(1)

    def choose(new, again=None):
        return session.post(
            hub.url + "/hub/first-password",
            data={
                "ticket": ticket,
                "new_password": new,
                "new_password_confirmation": new if again is None else again,
                "_xsrf": session.cookies.get("_xsrf"),
            },
            timeout=60,
            allow_redirects=False,
        )

    for weak, message in [
        ("short1", "at least 10 characters"),
        ("qwertyuiop", "most common"),
        ("x" * 80, "at most 72 bytes"),
        ("fay", "at least 10"),
    ]:
        r = choose(weak)
        assert r.status_code == 400 and message in r.text, weak
    r = choose("Fay-Is-Here-2026", "Fay-Is-Here-2027")
    assert r.status_code == 400 and "differ" in r.text
    assert trail.new() == [], "refused changes leave no record"

    r = choose("Fay-Is-Here-2026")
    assert r.status_code == 302
    assert session.get(hub.url + "/hub/api/user", timeout=30).json()["name"] == "fay"
    changes = trail.new("user.password_change")
    assert len(changes) == 1 and changes[0]["actor"] == "fay"
    assert len(trail.new("login.")) == 1 and trail.new("login.")[0]["action"] == "login.succeeded"
    # the ticket was used once; the one-time password is gone
    assert choose("Fay-Again-2026-x").status_code == 403
    assert hub.login("fay", one_time)[1].status_code == 403
    assert hub.login("fay", "Fay-Is-Here-2026")[1].status_code == 302


def test_weak_passwords_are_refused_at_sign_up_and_change(hub):
    for password, message in [
        ("Sh0rt!", "at least 10 characters"),
        ("1234567890", "most common"),
        ("gustavo-pw", None),  # fine: accepted
    ]:
        r = signup(hub, "gustavo" if message is None else "gus", password)
        if message is None:
            assert r.status_code == 200 and "sent to the admin" in r.text
        else:
            assert r.status_code == 400 and message in r.text, password
    r = signup(hub, "gus", "Gus-Gus-Gus-1", "Gus-Gus-Gus-2")
    assert r.status_code == 400 and "differ" in r.text
    for bad in ("two words", "x" * 65, "a/b"):
        r = signup(hub, bad, "Good-Enough-Pass-1")
        assert r.status_code == 400 and "A user name has 1 to 64 characters" in r.text, bad
    r = signup(hub, "hansolo990", "hansolo990")
    assert r.status_code == 400 and "not be your user name" in r.text

    password = hub.add_user_with_password("hal")
    session, _ = hub.login("hal", password)
    trail = Trail(hub)

    def change(old, new, again=None):
        return session.post(
            hub.url + "/hub/change-password",
            data={
                "old_password": old,
                "new_password": new,
                "new_password_confirmation": new if again is None else again,
                "_xsrf": session.cookies.get("_xsrf"),
            },
            timeout=60,
        )

    assert change(password, "qwertyuiop").status_code == 400
    assert change(password, "tiny").status_code == 400
    assert change("not-it-at-all", "Hal-New-Pass-1").status_code == 400
    assert trail.new("user.") == []
    r = change(password, "Hal-New-Pass-1")
    assert r.status_code == 200 and "has been changed" in r.text
    change_records = trail.new("user.password_change")
    assert len(change_records) == 1 and change_records[0]["actor"] == "hal"
    assert hub.login("hal", password)[1].status_code == 403
    assert hub.login("hal", "Hal-New-Pass-1")[1].status_code == 302
    # a password longer than bcrypt takes is a refused login, not a server error
    assert hub.login("hal", "y" * 200)[1].status_code == 403


def test_a_user_added_on_the_admin_page_gets_in_through_a_password_the_admin_sets(hub):
    assert hub.api("POST", "/users/ivy").status_code == 201  # what the admin page does
    trail = Trail(hub)
    assert hub.login("ivy", "Anything-At-All-1")[1].status_code == 403
    assert one_login_record(trail)["reason"] == "no such user"
    admin = admin_session(hub)
    trail.mark()
    r = admin.post(
        hub.url + "/hub/change-password/ivy",
        data={
            "new_password": "Ivy-Starts-Here-1",
            "new_password_confirmation": "Ivy-Starts-Here-1",
            "_xsrf": admin.cookies.get("_xsrf"),
        },
        timeout=30,
    )
    assert r.status_code == 200 and "works once" in r.text
    change = trail.new("user.password_change")
    assert len(change) == 1 and (change[0]["actor"], change[0]["target"]) == ("admin", "user/ivy")
    _, form = hub.login("ivy", "Ivy-Starts-Here-1")
    assert form.status_code == 200 and "Choose your password" in form.text


# ------------------------------------------------------------------ the CLI


def users_cli(hub, capsys, *argv) -> tuple[int, str, str]:
    code = main(
        [
            "users",
            *argv,
            "--data-dir",
            str(hub.data_dir),
            "--hub-api-url",
            hub.url + "/hub/api",
        ]
    )
    out, err = capsys.readouterr()
    return code, out, err


def test_shipyard_users_add_list_reset_approve(hub, capsys):
    trail = Trail(hub)
    code, out, err = users_cli(hub, capsys, "add", "jon", "--group", "research")
    assert code == 0, err
    assert "Added user jon to group(s) research." in out
    one_time = re.search(r"One-time password: (\S+)", out).group(1)
    assert hub.api("GET", "/users/jon").json()["groups"] == ["research"]
    change = trail.new("user.password_change")
    assert len(change) == 1
    assert (change[0]["actor"], change[0]["actor_kind"]) == ("shipyard-cli", "service")
    assert one_time not in json.dumps(records(hub))

    # the one-time password leads to the "choose your password" form, nothing else
    _, form = hub.login("jon", one_time)
    assert form.status_code == 200 and "Choose your password" in form.text

    # refused: an existing user, a sign-up's name, bad names and groups
    signup(hub, "kim", "Kim-Signs-Up-1")
    for argv, message in [
        (("add", "jon"), "User jon exists already"),
        (("add", "kim"), "User kim exists already (or has signed up)"),
        (("add", "Bad Name"), "'Bad Name' is not a valid user name"),
        (("add", "lee", "--group", "no/slash"), "'no/slash' is not a valid group name"),
        (("reset-password", "nobody"), "No user called nobody"),
        (("approve", "nobody"), "No sign-up or account called nobody"),
    ]:
        code, out, err = users_cli(hub, capsys, *argv)
        assert code == 1 and message in err, (argv, err)
        assert "Traceback" not in err
    assert hub.api("GET", "/users/lee").status_code == 404

    code, out, err = users_cli(hub, capsys, "approve", "kim")
    assert code == 0 and "Approved kim" in out
    assert hub.login("kim", "Kim-Signs-Up-1")[1].status_code == 302

    code, out, _ = users_cli(hub, capsys, "list", "--json")
    listed = {u["name"]: u for u in json.loads(out)}
    assert listed["jon"]["must_change_password"] is True
    assert listed["kim"]["approved"] is True and listed["kim"]["must_change_password"] is False
    assert listed["admin"]["admin"] is True
    code, out, _ = users_cli(hub, capsys, "list")
    assert re.search(r"^jon\s+no\s+|^jon\s+yes", out, re.M) or "jon" in out
    assert "one-time password" in out

    # reset-password unlocks a locked account and gives a new one-time password
    for attempt in range(LOCKOUT_FAILURES):
        hub.login("kim", f"wrong-{attempt}")
    assert "locked" in login_error(hub.login("kim", "Kim-Signs-Up-1")[1])
    code, out, err = users_cli(hub, capsys, "reset-password", "kim")
    assert code == 0, err
    new = re.search(r"One-time password for kim: (\S+)", out).group(1)
    assert hub.login("kim", "Kim-Signs-Up-1")[1].status_code == 403
    _, form = hub.login("kim", new)
    assert form.status_code == 200 and "Choose your password" in form.text


def test_users_cli_without_a_hub_says_what_to_do(tmp_path, capsys):
    assert main(["users", "list", "--data-dir", str(tmp_path)]) == 1
    assert "No hub token in" in capsys.readouterr().err
    (tmp_path / "cli-token").write_text("x")
    code = main(
        [
            "users",
            "list",
            "--data-dir",
            str(tmp_path),
            "--hub-api-url",
            "http://127.0.0.1:9/hub/api",
        ]
    )
    assert code == 1 and "Cannot reach the hub" in capsys.readouterr().err


# ------------------------------------------------------------------ PostgreSQL


def test_accounts_live_in_the_hubs_postgresql_database(hub_factory):
    import psycopg

    with postgres_database() as url:
        pg_hub = hub_factory(
            name="auth-pg",
            extra_env={
                **AUTH_ENV,
                "SHIPYARD_HUB_DB_URL": url.replace("postgresql://", "postgresql+psycopg://"),
            },
        )
        try:
            password = pg_hub.add_user_with_password("pia")
            assert pg_hub.login("pia", password)[1].status_code == 302
            assert pg_hub.login("pia", "not-her-password")[1].status_code == 403
            assert admin_session(pg_hub)
            with psycopg.connect(url) as conn:
                tables = {
                    row[0]
                    for row in conn.execute(
                        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                    )
                }
                assert {"users", "users_info", "shipyard_one_time_passwords"} <= tables
                hashed = conn.execute(
                    "SELECT password FROM users_info WHERE username = 'pia'"
                ).fetchone()[0]
                assert password.encode() not in bytes(hashed)
        finally:
            pg_hub.stop()


# ------------------------------------------------------------------ settings


def test_native_settings_come_from_the_environment(tmp_path, monkeypatch):
    from traitlets.config import Config

    from hub_ext.auth import AuthConfigError, configure_authenticator
    from hub_ext.auth.native import ShipyardNativeAuthenticator

    monkeypatch.delenv("SHIPYARD_AUTH", raising=False)
    for name, value in {
        "SHIPYARD_NATIVE_SIGNUP": "0",
        "SHIPYARD_NATIVE_LOCKOUT_FAILURES": "7",
        "SHIPYARD_NATIVE_LOCKOUT_SECONDS": "90",
        "SHIPYARD_NATIVE_MIN_PASSWORD_LENGTH": "12",
    }.items():
        monkeypatch.setenv(name, value)
    c = Config()
    assert configure_authenticator(c, tmp_path) == "native"
    assert c.JupyterHub.authenticator_class is ShipyardNativeAuthenticator
    native = c.ShipyardNativeAuthenticator
    assert (native.enable_signup, native.allowed_failed_logins) == (False, 7)
    assert (native.seconds_before_next_try, native.minimum_password_length) == (90, 12)
    assert native.admin_credentials_file == str(tmp_path / "credentials.json")
    assert c.Authenticator.admin_users == {"admin"}
    assert "user_password" not in (tmp_path / "credentials.json").read_text()

    for name, value, message in [
        ("SHIPYARD_NATIVE_LOCKOUT_FAILURES", "many", "is not a whole number"),
        ("SHIPYARD_NATIVE_LOCKOUT_SECONDS", "0", "must be at least 1"),
        ("SHIPYARD_NATIVE_MIN_PASSWORD_LENGTH", "4", "must be at least 8"),
    ]:
        monkeypatch.setenv(name, value)
        with pytest.raises(AuthConfigError, match=message):
            configure_authenticator(Config(), tmp_path)
        monkeypatch.delenv(name)


def test_a_stale_login_form_gets_the_login_page_not_a_server_error(hub):
    """JupyterHub 6 renders a refused form post through _render(**kwargs)."""
    r = requests.post(
        hub.url + "/hub/login", data={"username": "alice", "password": "x"}, timeout=30
    )
    assert r.status_code == 403
    assert 'id="login_submit"' in r.text and "Login form invalid or expired" in r.text
