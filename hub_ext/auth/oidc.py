"""OpenID Connect logins, with the provider's groups claim as hub groups.

``SHIPYARD_AUTH=oidc`` selects :class:`ShipyardOIDCAuthenticator`, a subclass of
oauthenticator's ``GenericOAuthenticator`` (the JupyterHub team's OAuth 2.0 client: the
authorization-code flow with PKCE and a state cookie, token refresh, and
``manage_groups`` support since 17.0). Any OpenID Connect provider works: Keycloak,
Entra ID, Okta, Google, Authentik, Dex.

What Shipyard sets up, and why:

Endpoints from the issuer.
    oauthenticator has no OIDC discovery; :func:`settings_from_env` reads
    ``<issuer>/.well-known/openid-configuration`` once when the hub starts (and checks
    that its ``issuer`` is the one configured, as OIDC Discovery 1.0 section 4.3 asks), so
    an admin gives one URL. Explicit ``SHIPYARD_OIDC_*_URL`` variables override it, for
    providers without discovery.
Groups claim -> hub groups, at login and at refresh.
    ``manage_groups`` with ``auth_state_groups_key`` pointing into the userinfo answer.
    Auth state is kept (encrypted; :func:`configure` makes a key in the data directory
    unless ``JUPYTERHUB_CRYPT_KEY`` is set) so that every ``auth_refresh_age`` seconds,
    and before every spawn, oauthenticator re-reads userinfo with the stored access
    token, renewing it with the refresh token when it has expired: a group removed at the
    provider is gone from the hub at the next refresh.
Refresh re-checks who may use the hub.
    JupyterHub runs ``check_allowed`` at login only. :meth:`refresh_user` runs it on the
    refreshed model too, so a user removed from every allowed group must log in again
    (and is refused) instead of keeping their session until the cookie expires.
Nobody is allowed by default.
    A provider such as Google authenticates everyone on earth; allowed groups, or an
    explicit ``SHIPYARD_OIDC_ALLOW_ALL=1``, must say who may use the hub.

Every attempt (the callback's token exchange and its checks) is recorded once in the
audit trail by :class:`~hub_ext.auth.audited.AuditedAuthenticatorMixin`.

Rejected: verifying ID tokens ourselves (``userdata_from_id_token``): the userinfo call
needs no JWKS handling, works the same for every provider, and is what refresh re-reads.
"""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

from oauthenticator.generic import GenericOAuthenticator

from hub_ext.hub.embedded import load_or_create_token

from . import AuthConfigError, _env
from ._compat import mark_cookie_request
from ._sync import record_directory_changes
from .audited import AuditedAuthenticatorMixin, note_login_failure

#: Where oauthenticator keeps the userinfo answer in auth_state.
USER_KEY = GenericOAuthenticator.user_auth_state_key

#: How long the hub's start waits for an issuer that does not answer yet (seconds).
DISCOVERY_WAIT = 15


class ShipyardOIDCAuthenticator(AuditedAuthenticatorMixin, GenericOAuthenticator):
    """GenericOAuthenticator whose refresh also re-checks the allowed groups, audited."""

    async def run_post_auth_hook(self, handler, auth_model):
        """JupyterHub's hook, then the audit records of what this login changes in the hub."""
        auth_model = await super().run_post_auth_hook(handler, auth_model)
        record_directory_changes("oidc", handler, auth_model["name"], auth_model)
        return auth_model

    async def check_allowed(self, username, auth_model):
        """oauthenticator's rules; a refusal says why in the audit record."""
        if await super().check_allowed(username, auth_model):
            return True
        note_login_failure("not in an allowed group of the identity provider")
        return False

    async def refresh_user(self, user, handler=None, **kwargs):
        """oauthenticator's refresh (userinfo again, tokens renewed), then the allow rules.

        Returns what oauthenticator returns (a new auth model with the groups claim's
        current groups, ``True``, or ``False`` for "log in again"), except ``False`` when
        the refreshed user is no longer allowed.
        """
        refreshed = await super().refresh_user(user, handler, **kwargs)
        if isinstance(refreshed, dict):
            if await super().check_allowed(refreshed["name"], refreshed):
                record_directory_changes("oidc", handler, user.name, refreshed, user=user)
            else:
                self.log.info(
                    "%s is no longer in an allowed group: a new login is needed.", user.name
                )
                refreshed = False
        if refreshed is False:
            mark_cookie_request(handler)
        return refreshed


def discover(issuer: str, ca_file: str | None = None, wait: float = DISCOVERY_WAIT) -> dict:
    """The provider's OpenID configuration from ``<issuer>/.well-known/openid-configuration``.

    Retries connection failures and 5xx answers for ``wait`` seconds (a provider started
    beside the hub may come up a little later); any other failure is an
    :class:`AuthConfigError` that names the variable to check.
    """
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    deadline = time.monotonic() + wait
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10, context=context) as r:  # noqa: S310
                document = json.load(r)
            break
        except urllib.error.HTTPError as e:
            if e.code < 500 or time.monotonic() > deadline:
                raise AuthConfigError(
                    f"SHIPYARD_OIDC_ISSUER={issuer}: {url} answered HTTP {e.code}; check the "
                    "issuer URL, or set SHIPYARD_OIDC_AUTHORIZE_URL, SHIPYARD_OIDC_TOKEN_URL "
                    "and SHIPYARD_OIDC_USERINFO_URL instead."
                ) from None
        except (OSError, ValueError) as e:
            if isinstance(e, ValueError) or time.monotonic() > deadline:
                raise AuthConfigError(
                    f"SHIPYARD_OIDC_ISSUER={issuer}: cannot read {url} ({e}); check the issuer "
                    "URL and that the hub can reach it (SHIPYARD_OIDC_CA_FILE for a private CA)."
                ) from None
        time.sleep(0.5)
    if not isinstance(document, dict):
        raise AuthConfigError(f"SHIPYARD_OIDC_ISSUER={issuer}: {url} is not a JSON object.")
    if document.get("issuer", "").rstrip("/") != issuer.rstrip("/"):
        raise AuthConfigError(
            f"SHIPYARD_OIDC_ISSUER={issuer} is not the issuer {url} names "
            f"({document.get('issuer')!r}); set SHIPYARD_OIDC_ISSUER to that value."
        )
    return document


def settings_from_env(public_url: str | None = None) -> dict:
    """The traits of :class:`ShipyardOIDCAuthenticator` that ``SHIPYARD_OIDC_*`` give.

    Parameters
    ----------
    public_url : str, optional
        The hub's public URL (``SHIPYARD_BIND_URL``), for the default callback URL.

    Raises
    ------
    AuthConfigError
        A required variable is missing or a value is wrong; the message names it.
    """
    s: dict = {}
    ca_file = _env.get("SHIPYARD_OIDC_CA_FILE")
    if ca_file:
        if not Path(ca_file).is_file():
            raise AuthConfigError(
                f"SHIPYARD_OIDC_CA_FILE={ca_file} is not a file; point it at the PEM bundle "
                "that signed the provider's certificate."
            )
        s["http_request_kwargs"] = {"ca_certs": ca_file}

    urls = {
        "authorize_url": _env.get("SHIPYARD_OIDC_AUTHORIZE_URL"),
        "token_url": _env.get("SHIPYARD_OIDC_TOKEN_URL"),
        "userdata_url": _env.get("SHIPYARD_OIDC_USERINFO_URL"),
    }
    issuer = _env.get("SHIPYARD_OIDC_ISSUER")
    if issuer and not all(urls.values()):
        document = discover(issuer, ca_file)
        for trait, key in (
            ("authorize_url", "authorization_endpoint"),
            ("token_url", "token_endpoint"),
            ("userdata_url", "userinfo_endpoint"),
        ):
            urls[trait] = urls[trait] or document.get(key)
    for trait, variable in (
        ("authorize_url", "SHIPYARD_OIDC_AUTHORIZE_URL"),
        ("token_url", "SHIPYARD_OIDC_TOKEN_URL"),
        ("userdata_url", "SHIPYARD_OIDC_USERINFO_URL"),
    ):
        if not urls[trait]:
            raise AuthConfigError(
                f"{variable} is not set"
                + (
                    f" and {issuer}'s discovery document does not give it"
                    if issuer
                    else ": set SHIPYARD_OIDC_ISSUER to the provider's issuer URL "
                    "(its endpoints are discovered), or give the three endpoint URLs"
                )
                + "."
            )
        if not urls[trait].startswith(("https://", "http://")):
            raise AuthConfigError(f"{variable}={urls[trait]!r} is not an http(s) URL.")
    s.update(urls)

    s["client_id"] = _env.required(
        "SHIPYARD_OIDC_CLIENT_ID", "give the client id the provider registered for this hub."
    )
    secret = _env.secret("SHIPYARD_OIDC_CLIENT_SECRET")
    if secret is None:
        raise AuthConfigError(
            "SHIPYARD_OIDC_CLIENT_SECRET_FILE is not set (nor SHIPYARD_OIDC_CLIENT_SECRET): "
            "give the client secret the provider registered for this hub, in a file."
        )
    s["client_secret"] = secret
    scopes = _env.get("SHIPYARD_OIDC_SCOPES", "openid profile email")
    s["scope"] = scopes.replace(",", " ").split()
    if "openid" not in s["scope"]:
        raise AuthConfigError(
            f"SHIPYARD_OIDC_SCOPES={scopes!r} lacks openid; OpenID Connect needs it."
        )
    callback = _env.get("SHIPYARD_OIDC_CALLBACK_URL")
    if callback is None and public_url:
        callback = public_url.rstrip("/") + "/hub/oauth_callback"
    if callback:
        s["oauth_callback_url"] = callback
    s["username_claim"] = _env.get("SHIPYARD_OIDC_USERNAME_CLAIM", "preferred_username")
    s["login_service"] = _env.get("SHIPYARD_OIDC_LOGIN_SERVICE", "your organisation")
    logout = _env.get("SHIPYARD_OIDC_LOGOUT_URL")
    if logout:
        s["logout_redirect_url"] = logout

    # the groups claim -> hub groups; who may log in
    s["manage_groups"] = True
    claim = _env.get("SHIPYARD_OIDC_GROUPS_CLAIM", "groups")
    s["auth_state_groups_key"] = f"{USER_KEY}.{claim}"
    allowed = set(_env.names("SHIPYARD_OIDC_ALLOWED_GROUPS"))
    allow_all = _env.flag("SHIPYARD_OIDC_ALLOW_ALL")
    if not allowed and not allow_all:
        raise AuthConfigError(
            "SHIPYARD_OIDC_ALLOWED_GROUPS is not set: name the groups (values of the "
            f"{claim!r} claim) whose members may log in, or set SHIPYARD_OIDC_ALLOW_ALL=1 "
            "to let everyone the provider authenticates in."
        )
    s["allowed_groups"] = allowed
    s["admin_groups"] = set(_env.names("SHIPYARD_OIDC_ADMIN_GROUPS"))
    s["allow_all"] = allow_all
    # who may log in is the provider's call at every login (see the LDAP module)
    s["allow_existing_users"] = False
    # kept (encrypted) so that refresh can re-read the groups with the stored tokens
    s["enable_auth_state"] = True
    s["auth_refresh_age"] = _env.integer("SHIPYARD_OIDC_REFRESH_AGE", 300)
    return s


def configure(c, data_dir: Path) -> None:
    """Make the hub log people in through the provider ``SHIPYARD_OIDC_*`` describe.

    Parameters
    ----------
    c : traitlets.config.Config
        The hub's configuration.
    data_dir : pathlib.Path
        The hub's data directory: the auth-state encryption key is kept there
        (``auth-state-key``, 0600) unless ``JUPYTERHUB_CRYPT_KEY`` is set.

    Raises
    ------
    AuthConfigError
        A required setting is missing or wrong; the message names the variable.
    """
    settings = settings_from_env(public_url=os.environ.get("SHIPYARD_BIND_URL"))
    c.JupyterHub.authenticator_class = ShipyardOIDCAuthenticator
    for name, value in settings.items():
        setattr(c.ShipyardOIDCAuthenticator, name, value)
    if not os.environ.get("JUPYTERHUB_CRYPT_KEY"):
        c.CryptKeeper.keys = [load_or_create_token(data_dir, "auth-state-key")]
