"""Shipyard's own accounts: per-user passwords kept by the hub (``SHIPYARD_AUTH=native``).

Built on jupyterhub-nativeauthenticator (NativeAuthenticator 1.3.0), checked against the
JupyterHub in use (6.x): its sign-up, login, authorisation and change-password pages
render in JupyterHub 6's templates, its ``users_info`` table lives in the hub's own
database beside JupyterHub's tables on SQLite and PostgreSQL, and its bcrypt hashes are
per user and salted. What it lacks, or gets wrong in this JupyterHub, is fixed here in
the subclass, each at its place with the reason:

- lock-out counted failures forever (after the window a single wrong password locked
  the account again) and used ``timedelta.seconds``; it is re-implemented with a clean
  window, and the login form says the account is locked;
- its login handler's ``_render`` takes no keyword arguments, but JupyterHub 6 calls it
  with the error page's (a stale login form then answered 500), and it answered a failed
  login with 200; both fixed;
- approving, un-approving and discarding a sign-up were plain GET links, so a link on
  another site that an admin followed approved an account (no XSRF check applies to a
  navigation); here they are POST forms checked against XSRF;
- bcrypt 5 raises on passwords over 72 bytes, which made a long password a 500; such a
  password is refused with a message at sign-up and change, and is a failed login;
- names listed in ``admin_users`` were pre-approved at sign-up, so whoever signed up
  first as ``admin`` became the admin; here only an admin's approval or
  ``open_signup`` approves, and the admin account is created at first start from the
  generated credentials (``shipyard up`` prints them once);
- there was no one-time password: ``shipyard users add`` and ``reset-password`` (and
  an admin setting a password on the admin page) give one, and whoever logs in with it
  is shown a "choose your password" form and gets no session, token or server until
  they have chosen one.

Rejected alternative: JupyterHub's PAMAuthenticator over the per-user system accounts
Shipyard creates. It would need pam_faillock set up on the host for lock-out, a password
page of Shipyard's own, and it ties hub identities to host passwords (a hub password
would open ``su`` and ssh on the host), while on Kubernetes there are no host accounts.

Every login attempt leaves one audit record (:mod:`hub_ext.auth.audited`); approving a
sign-up records ``user.approve`` and every password change ``user.password_change``,
with the admin or user who did it as the actor.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path

import bcrypt
from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.orm import UserInfo
from sqlalchemy import Column, DateTime, MetaData, String, Table, inspect
from traitlets import Bool, Integer, Unicode, default

from .audited import AuditedAuthenticatorMixin, note_login_failure
from .native_pages import (
    BCRYPT_MAX_BYTES,
    TEMPLATES,
    ApprovalAPIHandler,
    AuthorizationAreaHandler,
    ChangePasswordAdminHandler,
    ChangePasswordHandler,
    DiscardHandler,
    FirstPasswordHandler,
    LoginHandler,
    OneTimePasswordAPIHandler,
    SignUpHandler,
    ToggleAuthorizationHandler,
    UserAPIHandler,
    UsersAPIHandler,
    tell,
)

#: How long the "choose your password" form of a one-time password stays valid.
TICKET_SECONDS = 600

#: The one Shipyard table beside NativeAuthenticator's ``users_info``: users who hold a
#: one-time password and must choose their own before they may use the hub. A row is
#: deleted when they do. Created idempotently at start, as ``users_info`` is: both live
#: in the hub's database, whose Alembic history is JupyterHub's own and knows neither.
_metadata = MetaData()
one_time_passwords = Table(
    "shipyard_one_time_passwords",
    _metadata,
    Column("username", String(255), primary_key=True),
    Column("issued_by", String(255), nullable=True),
    Column("issued_at", DateTime, nullable=False),
)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class ShipyardNativeAuthenticator(AuditedAuthenticatorMixin, NativeAuthenticator):
    """Per-user hashed passwords, admin-approved sign-ups, lock-out, one-time passwords.

    The default authenticator of ``shipyard up``. Users get in by signing up at
    ``/hub/signup`` and being approved by an admin at ``/hub/authorize`` (or
    ``shipyard users approve NAME``), or by an admin adding them with
    ``shipyard users add NAME``, which prints a one-time password they must change at
    their first login.
    """

    # -- NativeAuthenticator's own settings, with Shipyard's defaults and full help

    minimum_password_length = Integer(
        10,
        help="""
        The shortest password accepted at sign-up and on every password change.

        Ten characters by default (NIST SP 800-63B asks for at least eight). Passwords
        longer than 72 bytes are refused too: bcrypt ignores the rest.

        Example::

            c.ShipyardNativeAuthenticator.minimum_password_length = 12

        Environment: ``SHIPYARD_NATIVE_MIN_PASSWORD_LENGTH``.
        """,
    ).tag(config=True)

    check_common_password = Bool(
        True,
        help="""
        Refuse passwords found in a list of the 10,000 most common ones.

        The list ships with NativeAuthenticator. On by default; turn it off only where
        another policy checks passwords.

        Example::

            c.ShipyardNativeAuthenticator.check_common_password = False
        """,
    ).tag(config=True)

    allowed_failed_logins = Integer(
        5,
        help="""
        Failed logins in a row after which an account is locked (0: never lock).

        While an account is locked every login to it is refused, even with the right
        password, for ``seconds_before_next_try`` seconds; then it gets a fresh count.
        A successful login resets the count. An admin unlocks an account at once with
        ``shipyard users reset-password NAME``. The count is kept in the hub's memory
        and starts afresh when the hub restarts. Attempts at names that have no
        account are not counted (and so cannot fill the hub's memory).

        Example::

            c.ShipyardNativeAuthenticator.allowed_failed_logins = 10

        Environment: ``SHIPYARD_NATIVE_LOCKOUT_FAILURES``.
        """,
    ).tag(config=True)

    seconds_before_next_try = Integer(
        600,
        help="""
        How long, in seconds, an account stays locked after too many failed logins.

        Ten minutes by default. See ``allowed_failed_logins``.

        Example::

            c.ShipyardNativeAuthenticator.seconds_before_next_try = 1800

        Environment: ``SHIPYARD_NATIVE_LOCKOUT_SECONDS``.
        """,
    ).tag(config=True)

    enable_signup = Bool(
        True,
        help="""
        Offer the sign-up page (``/hub/signup``) where people ask for an account.

        A sign-up gives no access until an admin approves it at ``/hub/authorize`` (or
        with ``shipyard users approve NAME``), unless ``open_signup`` is on. Turn it
        off to have only the accounts admins add (``shipyard users add NAME``).

        Example::

            c.ShipyardNativeAuthenticator.enable_signup = False

        Environment: ``SHIPYARD_NATIVE_SIGNUP=0``.
        """,
    ).tag(config=True)

    open_signup = Bool(
        False,
        help="""
        Let every sign-up in without an admin's approval.

        Off by default, and it should stay off on any hub reachable by people who
        should not use it: with it on, anyone who reaches the hub gets an account.

        Example::

            c.ShipyardNativeAuthenticator.open_signup = True
        """,
    ).tag(config=True)

    # -- Shipyard's settings

    admin_credentials_file = Unicode(
        "",
        help="""
        The JSON file with the generated admin credentials that ``shipyard up`` prints.

        At start, when the admin named there (``admin_user``) has no password in the hub
        yet, the account is created with ``admin_password``, approved. Once it exists the
        file is not read again, so an admin who changed the password keeps the new one.
        Set by ``hub_ext.auth.configure_authenticator`` to ``credentials.json`` in the
        data dir; empty means no bootstrap.

        Example::

            c.ShipyardNativeAuthenticator.admin_credentials_file = "/srv/shipyard/credentials.json"
        """,
    ).tag(config=True)

    one_time_password_length = Integer(
        16,
        help="""
        Characters of the one-time passwords that ``shipyard users add`` and
        ``reset-password`` print.

        They are random (``secrets.token_urlsafe``), valid until used once, and must be
        replaced by a password of the user's own at their first login.

        Example::

            c.ShipyardNativeAuthenticator.one_time_password_length = 20
        """,
    ).tag(config=True)

    @default("allow_all")
    def _allow_all_default(self):
        # Approval is the allow list here: authenticate() refuses every account an admin
        # has not approved, so every approved account may use the hub. JupyterHub 5+
        # would otherwise allow nobody but admins.
        return True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # failures in a row and lock expiry per user; tickets of the first-password form
        self._failures: dict[str, int] = {}
        self._locked_until: dict[str, float] = {}
        self._tickets: dict[str, tuple[str, float]] = {}
        _metadata.create_all(self.db.bind, checkfirst=True)
        self._bootstrap_admin()

    def add_new_table(self):
        # NativeAuthenticator creates users_info by hand; importing its orm module already
        # registered the table on JupyterHub's metadata, which the hub created at start.
        if "users_info" not in inspect(self.db.bind).get_table_names():
            UserInfo.__table__.create(self.db.bind)

    def _bootstrap_admin(self) -> None:
        if not self.admin_credentials_file:
            return
        path = Path(self.admin_credentials_file)
        try:
            creds = json.loads(path.read_text())
            name = self.normalize_username(creds["admin_user"])
            password = creds["admin_password"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            self.log.error("Cannot read the admin credentials in %s: %s", path, e)
            return
        if self.get_user(name) is not None:
            return
        self.db.add(UserInfo(username=name, password=self._hash(password), is_authorized=True))
        self.db.commit()
        self.log.info("Created the admin account %s from %s", name, path)

    # -- passwords

    @staticmethod
    def _hash(password: str) -> bytes:
        return bcrypt.hashpw(password.encode(), bcrypt.gensalt())

    def password_problem(self, password: str, username: str | None = None) -> str | None:
        """Why ``password`` is too weak, as a sentence for the user; None if it is fine."""
        if len(password) < self.minimum_password_length:
            return f"The password must have at least {self.minimum_password_length} characters."
        if len(password.encode()) > BCRYPT_MAX_BYTES:
            return f"The password must have at most {BCRYPT_MAX_BYTES} bytes."
        if username and password.strip().lower() == username.strip().lower():
            return "The password must not be your user name."
        if self.check_common_password and self.is_password_common(password):
            return "That password is one of the most common ones; choose another."
        return None

    def is_password_strong(self, password):
        return self.password_problem(password) is None

    def get_authed_users(self):
        # NativeAuthenticator also counted admin_users and allowed_users as approved, so
        # the first to sign up under an admin's name became that admin. Only approval
        # counts here (the admin account is bootstrapped from the credentials file).
        return {info.username for info in UserInfo.all_users(self.db) if info.is_authorized}

    def set_password(self, username: str, password: str, *, one_time: bool, by: str | None):
        """Set ``username``'s password, creating its (approved) entry if it has none.

        ``one_time`` marks it to be replaced at the next login. Unlocks the account.
        """
        info = self.get_user(username)
        if info is None:
            info = UserInfo(username=username, password=self._hash(password), is_authorized=True)
            self.db.add(info)
        else:
            info.password = self._hash(password)
        table = one_time_passwords
        self.db.execute(table.delete().where(table.c.username == username))
        if one_time:
            self.db.execute(
                table.insert().values(username=username, issued_by=by, issued_at=_utcnow())
            )
        self.db.commit()
        self.unlock(username)

    def issue_one_time_password(self, username: str, by: str | None) -> str:
        """A new random password for ``username`` that must be changed at first login."""
        password = secrets.token_urlsafe(self.one_time_password_length)[
            : self.one_time_password_length
        ]
        self.set_password(username, password, one_time=True, by=by)
        return password

    def must_change_password(self, username: str) -> bool:
        table = one_time_passwords
        row = self.db.execute(table.select().where(table.c.username == username)).first()
        return row is not None

    def change_password(self, username, new_password):
        # NativeAuthenticator's change_password without the check it cannot explain;
        # callers check password_problem first and show its message
        if self.get_user(username) is None or self.password_problem(new_password, username):
            return None
        self.set_password(username, new_password, one_time=False, by=username)
        return True

    # -- lock-out

    def lockout_remaining(self, username: str) -> float:
        """Seconds ``username`` stays locked; 0 when not locked."""
        until = self._locked_until.get(username)
        if until is None:
            return 0
        remaining = until - time.monotonic()
        if remaining <= 0:
            del self._locked_until[username]
            return 0
        return remaining

    def record_failure(self, username: str) -> bool:
        """Count a failed login of ``username``; True when this failure locked it."""
        if not self.allowed_failed_logins:
            return False
        count = self._failures.get(username, 0) + 1
        if count >= self.allowed_failed_logins:
            self._failures.pop(username, None)
            self._locked_until[username] = time.monotonic() + self.seconds_before_next_try
            return True
        self._failures[username] = count
        return False

    def unlock(self, username: str) -> None:
        self._failures.pop(username, None)
        self._locked_until.pop(username, None)

    # NativeAuthenticator's names for the same, kept working for its handlers
    def is_blocked(self, username):
        return self.lockout_remaining(username) > 0

    def successful_login(self, username):
        self.unlock(username)

    # -- one-time password tickets

    def issue_ticket(self, username: str) -> str:
        now = time.monotonic()
        self._tickets = {t: v for t, v in self._tickets.items() if v[1] > now}
        ticket = secrets.token_urlsafe(32)
        self._tickets[ticket] = (username, now + TICKET_SECONDS)
        return ticket

    def ticket_user(self, ticket: str) -> str | None:
        found = self._tickets.get(ticket or "")
        if found is None or found[1] <= time.monotonic():
            return None
        return found[0]

    def use_ticket(self, ticket: str) -> None:
        self._tickets.pop(ticket, None)

    # -- login

    async def authenticate(self, handler, data):
        # NativeAuthenticator's authenticate, with the lock-out above, reasons for the
        # audit record and the login form, and the one-time password step
        if not isinstance(data, dict) or not isinstance(data.get("username"), str):
            note_login_failure("no user name given")
            return None
        username = self.normalize_username(data["username"].strip())
        password = data.get("password")
        if not isinstance(password, str) or not password:
            note_login_failure("no password given")
            return None
        info = self.get_user(username)
        if info is None:
            note_login_failure("no such user")
            return None
        remaining = self.lockout_remaining(username)
        if remaining:
            minutes = math.ceil(remaining / 60)
            tell(
                handler,
                f"Too many failed logins: this account is locked for {minutes} more "
                "minute(s). An admin can unlock it now.",
            )
            note_login_failure(
                f"locked after {self.allowed_failed_logins} failed logins", locked_out=True
            )
            return None
        right = len(password.encode()) <= BCRYPT_MAX_BYTES and info.is_valid_password(password)
        if right and info.has_2fa:
            right = info.is_valid_token(data.get("2fa"))
        if not right:
            if self.record_failure(username):
                note_login_failure(
                    f"wrong password; account locked for {self.seconds_before_next_try}s"
                )
            else:
                note_login_failure("wrong password")
            return None
        self.unlock(username)
        if not info.is_authorized:
            tell(handler, f"User {username} has not been approved by an admin yet.")
            note_login_failure("sign-up not approved yet")
            return None
        if self.must_change_password(username):
            if handler is not None:
                handler._shipyard_ticket = (self.issue_ticket(username), username)
            note_login_failure("one-time password: must choose a new password first")
            return None
        return username

    def delete_user(self, user):
        table = one_time_passwords
        self.db.execute(table.delete().where(table.c.username == user.name))
        self.db.commit()
        self.unlock(user.name)
        return super().delete_user(user)

    def get_handlers(self, app):
        return [
            (r"/login", LoginHandler),
            (r"/signup", SignUpHandler),
            (r"/first-password", FirstPasswordHandler),
            (r"/authorize", AuthorizationAreaHandler),
            (r"/authorize/([^/]+)", ToggleAuthorizationHandler),
            (r"/discard/([^/]+)", DiscardHandler),
            (r"/change-password", ChangePasswordHandler),
            (r"/change-password/([^/]+)", ChangePasswordAdminHandler),
            (r"/api/shipyard/users", UsersAPIHandler),
            (r"/api/shipyard/users/([^/]+)", UserAPIHandler),
            (r"/api/shipyard/users/([^/]+)/one-time-password", OneTimePasswordAPIHandler),
            (r"/api/shipyard/users/([^/]+)/approval", ApprovalAPIHandler),
        ]


def _int_env(name: str, default: int, minimum: int = 0) -> int:
    from . import AuthConfigError

    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise AuthConfigError(f"{name}={raw!r} is not a whole number.") from None
    if value < minimum:
        raise AuthConfigError(f"{name}={value} must be at least {minimum}.")
    return value


def configure(c, data_dir: Path) -> None:
    """Use :class:`ShipyardNativeAuthenticator`, bootstrapping the generated admin.

    Reads ``SHIPYARD_NATIVE_SIGNUP`` (``0`` turns the sign-up page off),
    ``SHIPYARD_NATIVE_LOCKOUT_FAILURES``, ``SHIPYARD_NATIVE_LOCKOUT_SECONDS`` and
    ``SHIPYARD_NATIVE_MIN_PASSWORD_LENGTH``.
    """
    from hub_ext.hub.embedded import load_or_create_credentials

    creds, _ = load_or_create_credentials(Path(data_dir))
    c.JupyterHub.authenticator_class = ShipyardNativeAuthenticator
    c.Authenticator.admin_users = {creds.admin_user}
    # users an admin adds on the admin page or with `shipyard users add` may log in
    # once they have a password (see ChangePasswordAdminHandler and the CLI)
    c.Authenticator.allow_existing_users = True
    # the nav bar links to the change-password and sign-up pages (templates/nav/page.html)
    paths = c.JupyterHub.template_paths if isinstance(c.JupyterHub.template_paths, list) else []
    c.JupyterHub.template_paths = [*paths, str(TEMPLATES / "nav")]
    cls = c.ShipyardNativeAuthenticator
    cls.admin_credentials_file = str(Path(data_dir) / "credentials.json")
    signup = os.environ.get("SHIPYARD_NATIVE_SIGNUP", "1").strip().lower()
    cls.enable_signup = signup not in {"0", "false", "no", "off"}
    cls.allowed_failed_logins = _int_env("SHIPYARD_NATIVE_LOCKOUT_FAILURES", 5)
    cls.seconds_before_next_try = _int_env("SHIPYARD_NATIVE_LOCKOUT_SECONDS", 600, minimum=1)
    cls.minimum_password_length = _int_env("SHIPYARD_NATIVE_MIN_PASSWORD_LENGTH", 10, minimum=8)
