"""LDAP and Active Directory logins, with the directory's groups as hub groups.

``SHIPYARD_AUTH=ldap`` selects :class:`ShipyardLDAPAuthenticator`, a subclass of
jupyterhub-ldapauthenticator's ``LDAPAuthenticator`` (kept up by the JupyterHub team,
tested against OpenLDAP and AD, with injection-safe escaping of DNs and filters since
2.0). What it adds, and why:

Groups become hub groups.
    ldapauthenticator 2.0 only reports which of the DNs listed in its ``allowed_groups``
    the user is in (in ``auth_state``); it does not return ``groups`` in the auth model,
    so JupyterHub's ``manage_groups`` cannot use it. Here, after the user's own bind
    succeeds, one subtree search under :attr:`~ShipyardLDAPAuthenticator.group_search_base`
    with ldapauthenticator's ``group_search_filter`` lists every group the user is in, and
    their :attr:`~ShipyardLDAPAuthenticator.group_name_attribute` values (``cn``) become the
    user's hub groups at each login (``manage_groups = True``). Profiles, quotas and shares
    keyed on a group name follow the directory; a user removed from a group loses it at
    their next login, or sooner when a search account lets the hub re-read groups (below).
Allowed and admin groups by name.
    :attr:`~ShipyardLDAPAuthenticator.allowed_group_names` and
    :attr:`~ShipyardLDAPAuthenticator.admin_group_names` take the same names the hub
    groups get (what profiles.yaml names), not DNs; ldapauthenticator's own
    ``allowed_groups`` (DNs, one base search each) is left unset.
Group re-reads without the password.
    With a search account (``lookup_dn_search_user``), :meth:`refresh_user` re-reads a
    logged-in user's groups every ``auth_refresh_age`` seconds: removed groups go at once,
    and a user who left every allowed group, or the directory, must log in again (and is
    refused). Without a search account nothing can be read in the user's name between
    logins, so groups change at the next login.
Certificates are checked.
    ldap3's ``Tls`` defaults to ``validate=CERT_NONE``, which makes StartTLS and LDAPS
    encrypt to anyone. :func:`settings_from_env` always asks for ``CERT_REQUIRED``
    (system CAs, or ``SHIPYARD_LDAP_CA_FILE``) unless TLS is switched off outright.
The hub does not wait on the directory.
    ldap3 is synchronous, and ldapauthenticator calls it on the hub's event loop, so a
    slow directory would stall every request of the hub. Each login and refresh runs in
    a worker thread instead, and every connection has a connect and receive timeout
    (:attr:`~ShipyardLDAPAuthenticator.directory_timeout`; ldapauthenticator sets none,
    so a directory that accepts and never answers held a login forever).

Every attempt is recorded once in the audit trail by
:class:`~hub_ext.auth.audited.AuditedAuthenticatorMixin`.

Rejected: python-ldap (a C extension with libldap headers to build, where ldap3 is pure
Python and already ldapauthenticator's), and a PAM/SSSD chain (needs host configuration
outside Shipyard, and gives no group list to the hub).
"""

from __future__ import annotations

import asyncio
import contextvars
import ssl
from pathlib import Path
from urllib.parse import urlsplit

import ldap3
from ldap3.core.exceptions import LDAPBindError, LDAPException
from ldap3.core.tls import Tls
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn
from ldapauthenticator import LDAPAuthenticator
from ldapauthenticator.ldapauthenticator import TlsStrategy
from traitlets import Integer, Set, Unicode

from . import AuthConfigError, _env
from ._compat import mark_cookie_request
from ._sync import record_directory_changes
from .audited import AuditedAuthenticatorMixin, note_login_failure

#: What one login's group search found, handed from the worker thread's lookup
#: (called deep inside ldapauthenticator) back to :meth:`authenticate`.
_found: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "shipyard_ldap_found", default=None
)

#: ``SHIPYARD_LDAP_TLS`` values -> ldapauthenticator's ``tls_strategy``.
TLS_MODES = {
    "starttls": "before_bind",
    "before_bind": "before_bind",
    "ldaps": "on_connect",
    "on_connect": "on_connect",
    "insecure": "insecure",
    "none": "insecure",
}


class ShipyardLDAPAuthenticator(AuditedAuthenticatorMixin, LDAPAuthenticator):
    """ldapauthenticator with the directory's groups as hub groups, audited."""

    group_search_base = Unicode(
        "",
        config=True,
        help="""Where to look for the groups a user is in; empty: groups are not read.

        One subtree search under this DN, with ``group_search_filter``, lists the groups of
        a user at each login; the :attr:`group_name_attribute` of each becomes one of the
        user's hub groups (``manage_groups`` must be True for the hub to apply them).
        ``SHIPYARD_LDAP_GROUP_SEARCH_BASE`` sets it.

        Example::

            c.ShipyardLDAPAuthenticator.group_search_base = "ou=groups,dc=example,dc=org"

        .. versionadded:: 0.9
        """,
    )

    group_name_attribute = Unicode(
        "cn",
        config=True,
        help="""The group attribute whose value is the hub group's name.

        ``cn`` in OpenLDAP and Active Directory. A group entry without the attribute is
        skipped. ``SHIPYARD_LDAP_GROUP_NAME_ATTRIBUTE`` sets it.

        Example::

            c.ShipyardLDAPAuthenticator.group_name_attribute = "cn"

        .. versionadded:: 0.9
        """,
    )

    allowed_group_names = Set(
        Unicode(),
        config=True,
        help="""Members of these directory groups may log in (names, not DNs).

        The names are values of :attr:`group_name_attribute`, the same names the hub
        groups get. Needs :attr:`group_search_base`. Users allowed otherwise
        (``allowed_users``, ``allow_all``, an admin group) are allowed too. A user who
        leaves every allowed group is refused at the next login, or at the next group
        re-read when a search account is set. ``SHIPYARD_LDAP_ALLOWED_GROUPS`` sets it
        (comma-separated).

        Example::

            c.ShipyardLDAPAuthenticator.allowed_group_names = {"data-science", "research"}

        .. versionadded:: 0.9
        """,
    )

    admin_group_names = Set(
        Unicode(),
        config=True,
        help="""Members of these directory groups are hub admins (and may log in).

        Admin status follows the directory at each login: a user who leaves these groups
        is no longer an admin, unless listed in ``admin_users``. Needs
        :attr:`group_search_base`. ``SHIPYARD_LDAP_ADMIN_GROUPS`` sets it
        (comma-separated).

        Example::

            c.ShipyardLDAPAuthenticator.admin_group_names = {"platform-admins"}

        .. versionadded:: 0.9
        """,
    )

    directory_timeout = Integer(
        30,
        config=True,
        help="""Whole seconds to wait for the directory to accept a connection, and for each answer.

        ldapauthenticator gives ldap3 no timeout, so a directory that accepts the
        connection and never answers would hold a login (and the worker thread it runs
        in, and the hub's shutdown) forever. With this, the login is refused (audited as
        "directory unavailable") and a group re-read keeps the groups the user has.
        ``SHIPYARD_LDAP_TIMEOUT`` sets it.

        Example::

            c.ShipyardLDAPAuthenticator.directory_timeout = 10

        .. versionadded:: 0.9
        """,
    )

    # ------------------------------------------------------------ login

    async def authenticate(self, handler, data):
        """Bind as the user (ldapauthenticator), then read their groups; off the event loop."""
        found: dict = {}

        def run():
            _found.set(found)
            # ldapauthenticator's authenticate is a coroutine that never awaits: ldap3 is
            # synchronous. A private loop in this worker thread runs it, group search
            # included, so the hub's loop keeps serving while the directory answers.
            return asyncio.run(super(ShipyardLDAPAuthenticator, self).authenticate(handler, data))

        try:
            # to_thread runs ``run`` in a copy of this context: the audit attempt goes along
            model = await asyncio.to_thread(run)
        except LDAPException as e:
            self.log.error("LDAP login failed: the directory could not be reached or read: %s", e)
            note_login_failure("directory unavailable")
            return None
        if model is None:
            return None
        if self.group_search_base:
            groups = found.get("groups")
            if groups is None:
                # the user's bind worked but their groups could not be read: refuse rather
                # than log them in with no groups (which would strip every group they have)
                note_login_failure("directory groups could not be read")
                return None
            self._apply_groups(model, groups)
        return model

    def get_user_attributes(self, conn, userdn):
        """Called by ldapauthenticator with the user's own bound connection: read groups too."""
        attributes = super().get_user_attributes(conn, userdn)
        found = _found.get()
        if found is not None and self.group_search_base:
            found["groups"] = self._search_groups(conn, userdn)
        return attributes

    def get_connection(self, userdn, password):
        """ldapauthenticator's ``get_connection`` with timeouts (:attr:`directory_timeout`).

        The same TLS strategies, and the same answers: a bound connection, ``None`` when
        the bind is refused, an exception when the directory cannot be reached.
        """
        if self.tls_strategy == TlsStrategy.on_connect:
            use_ssl, auto_bind = True, ldap3.AUTO_BIND_NO_TLS
        elif self.tls_strategy == TlsStrategy.before_bind:
            use_ssl, auto_bind = False, ldap3.AUTO_BIND_TLS_BEFORE_BIND
        else:
            use_ssl, auto_bind = False, ldap3.AUTO_BIND_NO_TLS
        server = ldap3.Server(
            self.server_address,
            port=self.server_port,
            use_ssl=use_ssl,
            tls=Tls(**self.tls_kwargs),
            connect_timeout=self.directory_timeout,
        )
        try:
            return ldap3.Connection(
                server,
                user=userdn,
                password=password,
                auto_bind=auto_bind,
                receive_timeout=self.directory_timeout,
            )
        except LDAPBindError:
            self.log.debug("The directory refused the bind of %s", userdn)
            return None

    def _login_value(self, conn, userdn: str) -> str:
        """The user's login attribute (``uid``), for filters on ``memberUid``."""
        attribute = self.user_attribute or "uid"
        conn.search(
            search_base=userdn,
            search_scope=ldap3.BASE,
            search_filter="(objectClass=*)",
            attributes=[attribute],
        )
        if len(conn.entries) != 1:
            return ""
        values = conn.entries[0].entry_attributes_as_dict.get(attribute) or [""]
        return str(values[0])

    def _search_groups(self, conn, userdn: str) -> list[str] | None:
        """Names of the groups ``userdn`` is in; None when the search itself failed."""
        search_filter = self.group_search_filter.format(
            userdn=escape_filter_chars(userdn),
            uid=escape_filter_chars(self._login_value(conn, userdn)),
        )
        ok = conn.search(
            search_base=self.group_search_base,
            search_scope=ldap3.SUBTREE,
            search_filter=search_filter,
            attributes=[self.group_name_attribute],
        )
        if not ok and conn.result.get("result") not in (0, 32):  # 32: no such object
            self.log.error(
                "LDAP group search under %s failed: %s",
                self.group_search_base,
                conn.result.get("description"),
            )
            return None
        names = set()
        for entry in conn.entries:
            values = entry.entry_attributes_as_dict.get(self.group_name_attribute) or []
            names.update(str(v) for v in values if str(v).strip())
        return sorted(names)

    def _apply_groups(self, model: dict, groups: list[str]) -> None:
        """Put the groups (and the admin status they give) into the auth model."""
        model["groups"] = groups
        if self.admin_group_names and model["name"] not in self.admin_users:
            model["admin"] = bool(set(groups) & self.admin_group_names)

    async def run_post_auth_hook(self, handler, auth_model):
        """JupyterHub's hook, then the audit records of what this login changes in the hub."""
        auth_model = await super().run_post_auth_hook(handler, auth_model)
        record_directory_changes("ldap", handler, auth_model["name"], auth_model)
        return auth_model

    async def check_allowed(self, username, auth_model):
        """ldapauthenticator's rules, then the allowed (and admin) group names."""
        if await super().check_allowed(username, auth_model):
            return True
        groups = set((auth_model or {}).get("groups") or ())
        if groups & (self.allowed_group_names | self.admin_group_names):
            return True
        note_login_failure("not in an allowed directory group")
        return False

    # ---------------------------------------------------------- refresh

    async def refresh_user(self, user, handler=None):
        """Re-read a logged-in user's groups with the search account.

        Returns the new auth model (groups, admin status), ``False`` when the user left
        the directory or every allowed group (JupyterHub then asks them to log in, and
        the login is refused), or ``True`` (nothing to re-read: no search account or no
        group search base, or the directory cannot be reached now).
        """
        await super().refresh_user(user, handler)
        if not (self.group_search_base and self.lookup_dn_search_user):
            return True
        try:
            found = await asyncio.to_thread(self._reread, user.name)
        except LDAPException as e:
            self.log.warning("Could not re-read %s's groups from the directory: %s", user.name, e)
            return True
        if found is None:
            self.log.info("%s is no longer in the directory: a new login is needed.", user.name)
            mark_cookie_request(handler)
            return False
        model = {"name": user.name, "admin": None}
        self._apply_groups(model, found)
        if (
            self.allow_all
            or user.name in self.allowed_users
            or model.get("admin") is True
            or set(found) & self.allowed_group_names
        ):
            record_directory_changes("ldap", handler, user.name, model, user=user)
            return model
        self.log.info("%s left every allowed directory group: a new login is needed.", user.name)
        mark_cookie_request(handler)
        return False

    def _reread(self, username: str) -> list[str] | None:
        """The user's groups read as the search account; None when the user is gone."""
        conn = self.get_connection(self.lookup_dn_search_user, self.lookup_dn_search_password)
        if conn is None:
            raise LDAPException(f"the search account {self.lookup_dn_search_user} cannot bind")
        try:
            if self.lookup_dn:
                _, userdn = self.resolve_username(username)
            else:
                userdn = None
                for template in self.bind_dn_template:
                    candidate = template.format(username=escape_rdn(username))
                    if conn.search(candidate, "(objectClass=*)", search_scope=ldap3.BASE):
                        userdn = candidate
                        break
            if not userdn:
                return None
            groups = self._search_groups(conn, userdn)
            if groups is None:
                raise LDAPException("the group search failed")
            return groups
        finally:
            conn.unbind()


def settings_from_env() -> dict:
    """The traits of :class:`ShipyardLDAPAuthenticator` that ``SHIPYARD_LDAP_*`` give.

    Raises
    ------
    AuthConfigError
        A required variable is missing or a value is wrong; the message names it.
    """
    s: dict = {}
    url = _env.get("SHIPYARD_LDAP_URL")
    host = _env.get("SHIPYARD_LDAP_HOST")
    scheme = None
    port = None
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
            raise AuthConfigError(
                f"SHIPYARD_LDAP_URL={url!r} is not an LDAP URL; "
                "write ldap://host[:port] (StartTLS) or ldaps://host[:port]."
            )
        scheme, host = parts.scheme, parts.hostname
        try:
            port = parts.port
        except ValueError:
            raise AuthConfigError(f"SHIPYARD_LDAP_URL={url!r} has a bad port.") from None
    elif not host:
        raise AuthConfigError(
            "SHIPYARD_LDAP_URL is not set: give the directory's address, "
            "e.g. SHIPYARD_LDAP_URL=ldap://ldap.example.org (or SHIPYARD_LDAP_HOST)."
        )
    s["server_address"] = host
    if _env.get("SHIPYARD_LDAP_PORT"):
        port = _env.integer("SHIPYARD_LDAP_PORT", 389, minimum=1)

    tls = (_env.get("SHIPYARD_LDAP_TLS") or ("ldaps" if scheme == "ldaps" else "starttls")).lower()
    if tls not in TLS_MODES:
        raise AuthConfigError(
            f"SHIPYARD_LDAP_TLS={tls!r} is not known; use starttls, ldaps or insecure."
        )
    strategy = TLS_MODES[tls]
    if scheme == "ldaps" and strategy != "on_connect":
        raise AuthConfigError(
            f"SHIPYARD_LDAP_URL is ldaps:// but SHIPYARD_LDAP_TLS={tls}; "
            "use ldap:// for StartTLS, or drop SHIPYARD_LDAP_TLS."
        )
    s["tls_strategy"] = strategy
    s["server_port"] = port or (636 if strategy == "on_connect" else 389)
    ca_file = _env.get("SHIPYARD_LDAP_CA_FILE")
    if strategy == "insecure":
        s["tls_kwargs"] = {}
    else:
        s["tls_kwargs"] = {"validate": ssl.CERT_REQUIRED}
        if ca_file:
            if not Path(ca_file).is_file():
                raise AuthConfigError(
                    f"SHIPYARD_LDAP_CA_FILE={ca_file} is not a file; "
                    "point it at the PEM bundle that signed the directory's certificate."
                )
            s["tls_kwargs"]["ca_certs_file"] = ca_file

    # how a login name becomes a DN: a template, or a search (Active Directory)
    templates = _env.names("SHIPYARD_LDAP_BIND_DN_TEMPLATE", sep=";")
    search_base = _env.get("SHIPYARD_LDAP_USER_SEARCH_BASE")
    attribute = _env.get("SHIPYARD_LDAP_USER_ATTRIBUTE", "uid")
    bind_user = _env.get("SHIPYARD_LDAP_BIND_USER")
    bind_password = _env.secret("SHIPYARD_LDAP_BIND_PASSWORD")
    if templates:
        for template in templates:
            if "{username}" not in template:
                raise AuthConfigError(
                    f"SHIPYARD_LDAP_BIND_DN_TEMPLATE entry {template!r} lacks {{username}}; "
                    "e.g. uid={username},ou=people,dc=example,dc=org"
                )
        s["bind_dn_template"] = templates
    elif search_base:
        s["lookup_dn"] = True
        s["lookup_dn_user_dn_attribute"] = attribute
    else:
        raise AuthConfigError(
            "SHIPYARD_LDAP_BIND_DN_TEMPLATE is not set, nor SHIPYARD_LDAP_USER_SEARCH_BASE: "
            "set SHIPYARD_LDAP_BIND_DN_TEMPLATE=uid={username},ou=people,dc=example,dc=org, "
            "or SHIPYARD_LDAP_USER_SEARCH_BASE (with SHIPYARD_LDAP_BIND_USER and "
            "SHIPYARD_LDAP_BIND_PASSWORD_FILE) to look users up, as Active Directory needs."
        )
    s["user_attribute"] = attribute
    if search_base:
        s["user_search_base"] = search_base
    if bind_user:
        if bind_password is None:
            raise AuthConfigError(
                "SHIPYARD_LDAP_BIND_PASSWORD_FILE is not set (nor SHIPYARD_LDAP_BIND_PASSWORD): "
                f"the search account {bind_user} needs its password."
            )
        s["lookup_dn_search_user"] = bind_user
        s["lookup_dn_search_password"] = bind_password
    user_filter = _env.get("SHIPYARD_LDAP_USER_FILTER")
    if user_filter:
        if not search_base:
            raise AuthConfigError(
                "SHIPYARD_LDAP_USER_SEARCH_BASE is not set: SHIPYARD_LDAP_USER_FILTER "
                "searches under it."
            )
        s["search_filter"] = user_filter

    # groups -> hub groups, and who may log in
    group_base = _env.get("SHIPYARD_LDAP_GROUP_SEARCH_BASE")
    allowed = set(_env.names("SHIPYARD_LDAP_ALLOWED_GROUPS"))
    admins = set(_env.names("SHIPYARD_LDAP_ADMIN_GROUPS"))
    if (allowed or admins) and not group_base:
        raise AuthConfigError(
            "SHIPYARD_LDAP_GROUP_SEARCH_BASE is not set: SHIPYARD_LDAP_ALLOWED_GROUPS and "
            "SHIPYARD_LDAP_ADMIN_GROUPS name groups found under it "
            "(e.g. ou=groups,dc=example,dc=org)."
        )
    if group_base:
        s["group_search_base"] = group_base
        s["manage_groups"] = True
        s["group_name_attribute"] = _env.get("SHIPYARD_LDAP_GROUP_NAME_ATTRIBUTE", "cn")
        group_filter = _env.get("SHIPYARD_LDAP_GROUP_FILTER")
        if group_filter:
            if "{userdn}" not in group_filter and "{uid}" not in group_filter:
                raise AuthConfigError(
                    f"SHIPYARD_LDAP_GROUP_FILTER={group_filter!r} names neither {{userdn}} "
                    "nor {uid}; e.g. (member={userdn})."
                )
            s["group_search_filter"] = group_filter
    s["allowed_group_names"] = allowed
    s["admin_group_names"] = admins
    allow_all = _env.flag("SHIPYARD_LDAP_ALLOW_ALL")
    if not allowed and not allow_all:
        raise AuthConfigError(
            "SHIPYARD_LDAP_ALLOWED_GROUPS is not set: name the directory groups whose members "
            "may log in (with SHIPYARD_LDAP_GROUP_SEARCH_BASE), or set "
            "SHIPYARD_LDAP_ALLOW_ALL=1 to let every directory account in."
        )
    s["allow_all"] = allow_all
    # who may log in is the directory's call at every login: users the hub has seen
    # before are not allowed for that alone (JupyterHub's allow_existing_users)
    s["allow_existing_users"] = False
    s["auth_refresh_age"] = _env.integer("SHIPYARD_LDAP_REFRESH_AGE", 300)
    s["directory_timeout"] = _env.integer("SHIPYARD_LDAP_TIMEOUT", 30, minimum=1)
    # with a search account, a failed re-read means "left the directory or every allowed
    # group" (an unreachable directory keeps the session): then the user's API tokens stop
    # working too, not only their browser session (JupyterHub's auth_refresh_strict)
    s["auth_refresh_strict"] = bool(bind_user and group_base)
    # and a server starts with the groups the directory has now (they pick its profile)
    s["refresh_pre_spawn"] = bool(bind_user and group_base)
    return s


def configure(c, data_dir: Path) -> None:
    """Make the hub log people in against the directory ``SHIPYARD_LDAP_*`` describe.

    Parameters
    ----------
    c : traitlets.config.Config
        The hub's configuration.
    data_dir : pathlib.Path
        The hub's data directory (unused: the directory keeps every credential).

    Raises
    ------
    AuthConfigError
        A required setting is missing or wrong; the message names the variable.
    """
    settings = settings_from_env()
    c.JupyterHub.authenticator_class = ShipyardLDAPAuthenticator
    for name, value in settings.items():
        setattr(c.ShipyardLDAPAuthenticator, name, value)
