"""OpenID Connect logins against a real provider, through a real hub.

One provider per module (tests/oidc_provider/: Django with django-oidc-provider, on a
free loopback port, its access tokens living 3 seconds so that refreshes exercise the
refresh-token grant) and one hub with ``SHIPYARD_AUTH=oidc`` whose endpoints come from
the provider's discovery document. Each login is the real authorization-code flow, driven
as a browser would with one ``requests.Session``: the hub's ``/hub/oauth_login`` ->
the provider's authorize endpoint -> its login form -> its consent page (asked once per
user, then remembered) -> the hub's ``/hub/oauth_callback``.

=======  ===================  ====================================
user     groups               why
=======  ===================  ====================================
alice    staff, research      an allowed user with two groups
bob      staff                leaves ``staff`` and is refused
carol    interns              not in an allowed group: refused
dave     admins               an admin through the admin group
erin     staff, research      has a session while her groups change
=======  ===================  ====================================
"""

from __future__ import annotations

import json
import os
import time
from html.parser import HTMLParser
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
from traitlets.config import Config

from hub_ext.auth import AuthConfigError, configure_authenticator
from hub_ext.auth.oidc import ShipyardOIDCAuthenticator, settings_from_env

from .auditrecords import AUDITED, all_records, directory_changes, login_records
from .conftest import needs_root
from .oidc_provider import OIDCProvider

PASSWORDS = {n: f"{n}-idp-{i}9Z" for i, n in enumerate(("alice", "bob", "carol", "dave", "erin"))}
USERS = {
    "alice": ["staff", "research"],
    "bob": ["staff"],
    "carol": ["interns"],
    "dave": ["admins"],
    "erin": ["staff", "research"],
}
TOKEN_LIFETIME = 3
REFRESH_AGE = 1


@pytest.fixture(scope="module")
def oidc(hub_factory, tmp_path_factory):
    """The provider, then the hub that uses it (its callback URL is registered first)."""
    hub = hub_factory(name="oidchub", start=False)
    provider = OIDCProvider(
        tmp_path_factory.mktemp("idp") / "provider",
        redirect_uris=[f"{hub.url}/hub/oauth_callback"],
        users={name: {"password": PASSWORDS[name], "groups": g} for name, g in USERS.items()},
        token_expire=TOKEN_LIFETIME,
    ).start()
    secret_file = tmp_path_factory.mktemp("oidc-secrets") / "client-secret"
    secret_file.write_text(provider.client_secret + "\n")
    secret_file.chmod(0o600)
    hub.extra_env.update(
        {
            "SHIPYARD_AUTH": "oidc",
            "SHIPYARD_OIDC_ISSUER": provider.issuer,
            "SHIPYARD_OIDC_CLIENT_ID": provider.client_id,
            "SHIPYARD_OIDC_CLIENT_SECRET_FILE": str(secret_file),
            "SHIPYARD_OIDC_SCOPES": "openid profile email groups",
            "SHIPYARD_OIDC_ALLOWED_GROUPS": "staff",
            "SHIPYARD_OIDC_ADMIN_GROUPS": "admins",
            "SHIPYARD_OIDC_REFRESH_AGE": str(REFRESH_AGE),
        }
    )
    hub.start()
    yield hub, provider
    hub.stop()
    provider.stop()


class FormParser(HTMLParser):
    """The first form of a page: its action and its inputs' names and values."""

    def __init__(self):
        super().__init__()
        self.action = None
        self.fields: dict[str, str] = {}
        self.submits: dict[str, str] = {}
        self._in_form = self._done = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and not self._done:
            self._in_form, self.action = True, attrs.get("action")
        elif tag == "input" and self._in_form and attrs.get("name"):
            target = self.submits if attrs.get("type") == "submit" else self.fields
            target[attrs["name"]] = attrs.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form" and self._in_form:
            self._in_form, self._done = False, True


def form_of(response: requests.Response) -> FormParser:
    parser = FormParser()
    parser.feed(response.text)
    assert parser.action is not None, f"no form at {response.url}: {response.text[:300]}"
    return parser


def follow(session: requests.Session, r: requests.Response, until: str) -> requests.Response:
    """Follow redirects one by one until one points at a URL starting with ``until``."""
    for _ in range(10):
        if r.status_code not in (301, 302, 303) or r.headers["Location"].startswith(until):
            return r
        r = session.get(urljoin(r.url, r.headers["Location"]), allow_redirects=False, timeout=30)
    raise AssertionError(f"too many redirects, last {r.url}")


def oidc_login(hub, provider, name: str, password: str):
    """The authorization-code flow as a browser does it; returns (session, hub's answer).

    The answer is the hub callback's: 302 into the hub when allowed, 403 when not. With
    a wrong password the provider keeps its login form and the hub is never reached:
    the answer is then the provider's form page.
    """
    s = requests.Session()
    r = s.get(f"{hub.url}/hub/oauth_login", allow_redirects=False, timeout=30)
    assert r.status_code == 302, r.text
    authorize = r.headers["Location"]
    assert authorize.startswith(provider.issuer + "/authorize"), authorize
    query = parse_qs(urlsplit(authorize).query)
    assert query["response_type"] == ["code"] and "code_challenge" in query  # PKCE
    assert query["redirect_uri"] == [f"{hub.url}/hub/oauth_callback"]

    # the provider asks who this is
    r = s.get(authorize, allow_redirects=False, timeout=30)
    r = follow(s, r, f"{hub.url}/")
    login_page = s.get(r.url, timeout=30) if r.status_code != 200 else r
    form = form_of(login_page)
    r = s.post(
        urljoin(login_page.url, form.action),
        data={**form.fields, "username": name, "password": password},
        allow_redirects=False,
        timeout=30,
    )
    if r.status_code == 200:
        return s, r  # the form again: wrong password
    assert r.status_code == 302, r.text
    # back to authorize: the consent page the first time, then straight to the hub
    r = follow(s, s.get(urljoin(r.url, r.headers["Location"]), allow_redirects=False), hub.url)
    if r.status_code == 200:
        form = form_of(r)
        assert "Authorize" in r.text and "groups" in r.text.lower()
        r = s.post(
            urljoin(r.url, form.action),
            data={**form.fields, "allow": form.submits["allow"]},
            allow_redirects=False,
            timeout=30,
        )
    assert r.status_code == 302 and r.headers["Location"].startswith(
        f"{hub.url}/hub/oauth_callback?"
    ), r.text
    callback = r.headers["Location"]
    assert "code=" in callback and "state=" in callback
    r = s.get(callback, allow_redirects=False, timeout=60)
    return s, r


def login(oidc, name: str, allowed: bool, password: str | None = None):
    """Log ``name`` in through the provider; check the hub's answer and the audit record."""
    hub, provider = oidc
    before = len(login_records(hub.data_dir))
    session, r = oidc_login(hub, provider, name, password or PASSWORDS[name])
    if allowed:
        assert r.status_code == 302, f"{name}: {r.status_code} {r.text[:300]}"
        assert session.cookies.get("jupyterhub-session-id")
    else:
        assert r.status_code == 403, f"{name}: {r.status_code} {r.text[:300]}"
    if AUDITED:
        time.sleep(0.2)
        new = login_records(hub.data_dir)[before:]
        assert len(new) == 1, new
        record = new[0]
        if allowed:
            assert (record["action"], record["actor"], record["outcome"]) == (
                "login.succeeded",
                name,
                "allowed",
            )
        else:
            assert (record["action"], record["outcome"], record["reason"]) == (
                "login.failed",
                "denied",
                "not in an allowed group of the identity provider",
            )
        text = json.dumps(record)
        assert PASSWORDS[name] not in text and provider.client_secret not in text
    return session


def hub_groups(hub, name: str) -> list[str]:
    r = hub.api("GET", f"/users/{name}")
    assert r.status_code == 200, r.text
    return sorted(r.json()["groups"])


# ----------------------------------------------------------- through a real hub


@needs_root
def test_login_through_the_provider_brings_the_groups_claim(oidc):
    hub, _ = oidc
    login(oidc, "alice", allowed=True)
    model = hub.api("GET", "/users/alice").json()
    assert sorted(model["groups"]) == ["research", "staff"]
    assert model["admin"] is False
    # a second login skips the consent page (remembered) and lands the same way
    login(oidc, "alice", allowed=True)


@needs_root
def test_wrong_password_never_reaches_the_hub(oidc):
    hub, provider = oidc
    before = len(login_records(hub.data_dir))
    session, r = oidc_login(hub, provider, "carol", "not-carols-password")
    assert r.status_code == 200 and "didn't match" in r.text
    assert urlsplit(r.url).port == provider.port
    assert not session.cookies.get("jupyterhub-session-id")
    assert hub.api("GET", "/users/carol").status_code == 404
    assert len(login_records(hub.data_dir)) == before


@needs_root
def test_user_outside_the_allowed_groups_is_refused(oidc):
    hub, _ = oidc
    login(oidc, "carol", allowed=False)
    assert hub.api("GET", "/users/carol").status_code == 404


@needs_root
def test_admin_group_makes_an_admin(oidc):
    hub, _ = oidc
    login(oidc, "dave", allowed=True)
    model = hub.api("GET", "/users/dave").json()
    assert (model["admin"], model["groups"]) == (True, ["admins"])


@needs_root
def test_group_removed_at_the_provider_is_gone_at_the_next_login(oidc):
    hub, provider = oidc
    login(oidc, "bob", allowed=True)
    assert hub_groups(hub, "bob") == ["staff"]
    provider.set_groups("bob", ["staff", "research"])
    since = len(all_records(hub.data_dir))
    login(oidc, "bob", allowed=True)
    assert hub_groups(hub, "bob") == ["research", "staff"]
    if AUDITED:
        assert directory_changes(hub.data_dir, since, "oidc") == [
            ("group.members_add", "group/research", {"users": ["bob"], "source": "oidc"})
        ]
    provider.set_groups("bob", ["interns"])
    try:
        login(oidc, "bob", allowed=False)
    finally:
        provider.set_groups("bob", ["staff"])


@needs_root
def test_a_session_follows_the_provider_at_each_refresh(oidc):
    """Groups are re-read every SHIPYARD_OIDC_REFRESH_AGE seconds with the stored tokens."""
    hub, provider = oidc
    session = login(oidc, "erin", allowed=True)
    assert hub_groups(hub, "erin") == ["research", "staff"]
    provider.set_groups("erin", ["staff"])
    try:
        # past the access token's life: the refresh token gets a new one, then userinfo
        time.sleep(TOKEN_LIFETIME + 0.5)
        since = len(all_records(hub.data_dir))
        r = session.get(f"{hub.url}/hub/home", allow_redirects=False, timeout=30)
        assert r.status_code == 200, r.status_code
        assert hub_groups(hub, "erin") == ["staff"]
        if AUDITED:
            assert directory_changes(hub.data_dir, since, "oidc") == [
                ("group.members_remove", "group/research", {"users": ["erin"], "source": "oidc"})
            ]

        # out of every allowed group: the session ends at the next refresh
        provider.set_groups("erin", ["interns"])
        time.sleep(REFRESH_AGE + 0.2)
        r = session.get(f"{hub.url}/hub/home", allow_redirects=False, timeout=30)
        assert r.status_code == 302 and "/hub/login" in r.headers["Location"], r.status_code
        login(oidc, "erin", allowed=False)
        # the hub ended the session cleanly (no "Failed to get current user" traceback)
        assert "Failed to get current user" not in hub.log_tail(400)
    finally:
        provider.set_groups("erin", ["staff", "research"])


# ------------------------------------------------------------ settings errors


@needs_root
def test_a_hub_missing_a_setting_stops_at_start_and_names_it(oidc, hub_factory):
    _, provider = oidc
    hub = hub_factory(
        name="oidcbad",
        start=False,
        extra_env={"SHIPYARD_AUTH": "oidc", "SHIPYARD_OIDC_ISSUER": provider.issuer},
    )
    with pytest.raises(RuntimeError, match="SHIPYARD_OIDC_CLIENT_ID is not set"):
        hub.start()


BASE_ENV = {
    "SHIPYARD_OIDC_AUTHORIZE_URL": "https://idp.example.org/authorize",
    "SHIPYARD_OIDC_TOKEN_URL": "https://idp.example.org/token",
    "SHIPYARD_OIDC_USERINFO_URL": "https://idp.example.org/userinfo",
    "SHIPYARD_OIDC_CLIENT_ID": "shipyard",
    "SHIPYARD_OIDC_CLIENT_SECRET": "s3cret-value",
    "SHIPYARD_OIDC_ALLOWED_GROUPS": "staff",
}


def set_env(monkeypatch, env: dict) -> None:
    for name in [n for n in os.environ if n.startswith("SHIPYARD_OIDC_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SHIPYARD_AUTH", "oidc")
    for name, value in env.items():
        if value is not None:
            monkeypatch.setenv(name, value)


@pytest.mark.parametrize(
    "change, variable",
    [
        ({"SHIPYARD_OIDC_AUTHORIZE_URL": None}, "SHIPYARD_OIDC_AUTHORIZE_URL"),
        ({"SHIPYARD_OIDC_USERINFO_URL": "idp.example.org/ui"}, "SHIPYARD_OIDC_USERINFO_URL"),
        ({"SHIPYARD_OIDC_CLIENT_ID": None}, "SHIPYARD_OIDC_CLIENT_ID"),
        ({"SHIPYARD_OIDC_CLIENT_SECRET": None}, "SHIPYARD_OIDC_CLIENT_SECRET_FILE"),
        ({"SHIPYARD_OIDC_CLIENT_SECRET_FILE": "/nonexistent"}, "SHIPYARD_OIDC_CLIENT_SECRET_FILE"),
        ({"SHIPYARD_OIDC_ALLOWED_GROUPS": None}, "SHIPYARD_OIDC_ALLOWED_GROUPS"),
        ({"SHIPYARD_OIDC_SCOPES": "profile email"}, "SHIPYARD_OIDC_SCOPES"),
        ({"SHIPYARD_OIDC_CA_FILE": "/nonexistent/ca.pem"}, "SHIPYARD_OIDC_CA_FILE"),
        ({"SHIPYARD_OIDC_REFRESH_AGE": "-1"}, "SHIPYARD_OIDC_REFRESH_AGE"),
    ],
)
def test_a_missing_or_wrong_setting_names_the_variable(monkeypatch, tmp_path, change, variable):
    set_env(monkeypatch, {**BASE_ENV, **change})
    with pytest.raises(AuthConfigError, match=variable):
        configure_authenticator(Config(), tmp_path)


def test_nothing_at_all_asks_for_the_issuer(monkeypatch, tmp_path):
    set_env(monkeypatch, {})
    with pytest.raises(AuthConfigError, match="SHIPYARD_OIDC_ISSUER"):
        configure_authenticator(Config(), tmp_path)


@needs_root
def test_a_wrong_issuer_is_named(oidc, monkeypatch, tmp_path):
    _, provider = oidc
    env = {k: v for k, v in BASE_ENV.items() if not k.endswith("_URL")}
    # no discovery document there
    set_env(monkeypatch, {**env, "SHIPYARD_OIDC_ISSUER": provider.url})
    with pytest.raises(AuthConfigError, match="SHIPYARD_OIDC_ISSUER=.*HTTP 404"):
        configure_authenticator(Config(), tmp_path)
    # a document that names another issuer (the provider calls itself 127.0.0.1)
    other = provider.issuer.replace("127.0.0.1", "localhost")
    set_env(monkeypatch, {**env, "SHIPYARD_OIDC_ISSUER": other})
    with pytest.raises(AuthConfigError, match="is not the issuer"):
        configure_authenticator(Config(), tmp_path)


@needs_root
def test_the_settings_an_admin_gives(oidc, monkeypatch, tmp_path):
    _, provider = oidc
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    set_env(
        monkeypatch,
        {
            "SHIPYARD_OIDC_ISSUER": provider.issuer,
            "SHIPYARD_OIDC_CLIENT_ID": "shipyard",
            "SHIPYARD_OIDC_CLIENT_SECRET_FILE": str(secret),
            "SHIPYARD_OIDC_SCOPES": "openid,profile,groups",
            "SHIPYARD_OIDC_GROUPS_CLAIM": "realm_access.roles",
            "SHIPYARD_OIDC_ALLOWED_GROUPS": "staff,research",
            "SHIPYARD_OIDC_ADMIN_GROUPS": "admins",
            "SHIPYARD_BIND_URL": "https://hub.example.org/",
        },
    )
    c = Config()
    assert configure_authenticator(c, tmp_path) == "oidc"
    assert c.JupyterHub.authenticator_class is ShipyardOIDCAuthenticator
    a = ShipyardOIDCAuthenticator(config=c)
    assert a.authorize_url == provider.issuer + "/authorize"
    assert a.token_url == provider.issuer + "/token"
    assert a.userdata_url == provider.issuer + "/userinfo"
    assert a.client_secret == "from-a-file"
    assert a.scope == ["openid", "profile", "groups"]
    assert a.auth_state_groups_key == "oauth_user.realm_access.roles"
    assert a.allowed_groups == {"staff", "research"} and a.admin_groups == {"admins"}
    assert a.oauth_callback_url == "https://hub.example.org/hub/oauth_callback"
    assert a.manage_groups and a.enable_auth_state and not a.allow_existing_users
    assert a.username_claim == "preferred_username"
    # auth state (the tokens) is encrypted with a key kept in the data directory
    key = tmp_path / "auth-state-key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert c.CryptKeeper["keys"] == [key.read_text().strip()]
    assert settings_from_env()["allow_all"] is False


@needs_root
def test_no_secret_reaches_the_hub_log(oidc):
    """After every login above: no password, client secret or token is in the hub's log."""
    hub, provider = oidc
    login(oidc, "alice", allowed=True)
    log = hub.log_path.read_text(errors="replace")
    assert "alice" in log
    for secret in [provider.client_secret, *PASSWORDS.values()]:
        assert secret not in log
    # the access and refresh tokens the hub holds for alice are encrypted at rest
    state = hub.api("GET", "/users/alice").json()["auth_state"]  # admin:auth_state
    assert state["access_token"] and state["refresh_token"]
    db = b"".join(p.read_bytes() for p in hub.data_dir.glob("jupyterhub.sqlite*"))
    assert state["access_token"].encode() not in db
    assert state["refresh_token"].encode() not in db
