"""The pages and the users API of Shipyard's own accounts (:mod:`hub_ext.auth.native`).

The login, sign-up, "choose your password", authorisation and change-password pages
(NativeAuthenticator's, fixed for JupyterHub 6 and checked against XSRF where they change
anything), and ``/hub/api/shipyard/users/...``, the REST API ``shipyard users`` calls.
Each handler reaches the authenticator as ``self.authenticator``; the authenticator lists
them in :meth:`ShipyardNativeAuthenticator.get_handlers
<hub_ext.auth.native.ShipyardNativeAuthenticator.get_handlers>`. Why each fix is needed
is in :mod:`hub_ext.auth.native`'s docstring.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from jinja2 import ChoiceLoader, FileSystemLoader
from jupyterhub import orm
from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.handlers import BaseHandler
from jupyterhub.scopes import needs_scope
from jupyterhub.utils import new_token
from nativeauthenticator import handlers as native_handlers
from nativeauthenticator.orm import UserInfo
from tornado import web
from tornado.escape import url_escape
from tornado.httputil import url_concat

from .audited import audit

TEMPLATES = Path(__file__).with_name("templates")

#: bcrypt hashes the first 72 bytes only, and bcrypt 5 refuses longer input outright.
BCRYPT_MAX_BYTES = 72


def _actor_kind(entity) -> str:
    return (
        "service"
        if isinstance(entity, orm.Service) or getattr(entity, "kind", "") == "service"
        else "user"
    )


def tell(handler, message: str) -> None:
    """Leave a message for the login form that is more helpful than "invalid"."""
    if handler is not None:
        handler._shipyard_login_message = message


# ------------------------------------------------------------------ pages


class _Templates:
    """Adds Shipyard's and NativeAuthenticator's templates after JupyterHub's.

    To both of JupyterHub's template environments: the asynchronous one of pages, and
    the synchronous one ``write_error`` renders with (NativeAuthenticator registers only
    the first, so an error on its login page could not find its template).
    """

    def initialize(self, *args, **kwargs):
        super().initialize(*args, **kwargs)
        for key in ("jinja2_env", "jinja2_env_sync"):
            env = self.settings.get(key)
            if env is not None and not getattr(env, "_shipyard_auth_templates", False):
                extra = FileSystemLoader([str(TEMPLATES), native_handlers.TEMPLATE_DIR])
                env.loader = ChoiceLoader([env.loader, extra])
                env._shipyard_auth_templates = True


class LoginHandler(_Templates, native_handlers.LoginHandler):
    """NativeAuthenticator's login page, fixed for JupyterHub 6, with the first-password step."""

    def _render(self, login_error=None, username=None, sync=False, **kwargs):
        # JupyterHub 6 renders a refused form post (a stale XSRF token, say) through
        # _render(sync=True, **error_page_namespace) from the synchronous write_error;
        # NativeAuthenticator's _render takes no keyword arguments and always renders
        # asynchronously (a 500 there). The namespace is NativeAuthenticator's.
        next_url = self.get_argument("next", default="")
        return self.render_template(
            "native-login.html",
            sync=sync,
            next=url_escape(next_url),
            username=username,
            login_error=login_error,
            custom_html=self.authenticator.custom_html,
            login_url=self.settings["login_url"],
            enable_signup=self.authenticator.enable_signup,
            two_factor_auth=self.authenticator.allow_2fa,
            authenticator_login_url=url_concat(
                self.authenticator.login_url(self.hub.base_url), {"next": next_url}
            ),
        )

    async def post(self):
        data = {
            arg: self.get_argument(arg, strip=arg == "username")
            for arg in self.request.body_arguments
            if arg != "_xsrf"
        }
        user = await self.login_user(data)
        if user:
            self._jupyterhub_user = user
            self.redirect(self.get_next_url(user))
            return
        ticket = getattr(self, "_shipyard_ticket", None)
        if ticket:
            html = await self.render_template(
                "shipyard-first-password.html",
                min_length=self.authenticator.minimum_password_length,
                ticket=ticket[0],
                user_name=ticket[1],
                next=self.get_argument("next", default=""),
            )
            self.finish(html)
            return
        self.set_status(403)
        message = getattr(self, "_shipyard_login_message", None)
        username = data.get("username", "")
        html = await self._render(
            login_error=message or "Invalid username or password.",
            username=username if len(username) <= 64 else "",
        )
        self.finish(html)


class FirstPasswordHandler(_Templates, BaseHandler):
    """``/hub/first-password``: replace a one-time password, then log in with the new one.

    Reached only from the login form, with a ticket that proves the one-time password
    was given (valid for ten minutes, used once); a GET goes back to the login page.
    """

    async def get(self):
        self.redirect(self.settings["login_url"])

    async def post(self):
        auth = self.authenticator
        ticket = self.get_body_argument("ticket", "")
        username = auth.ticket_user(ticket)
        if username is None:
            self.set_status(403)
            html = await self.render_template(
                "shipyard-first-password.html",
                min_length=self.authenticator.minimum_password_length,
                expired=True,
                login_url=self.settings["login_url"],
            )
            self.finish(html)
            return
        new = self.get_body_argument("new_password", "", strip=False)
        confirmation = self.get_body_argument("new_password_confirmation", "", strip=False)
        problem = auth.password_problem(new, username)
        if new != confirmation:
            problem = "The two passwords differ; type the same password twice."
        if problem:
            self.set_status(400)
            html = await self.render_template(
                "shipyard-first-password.html",
                min_length=self.authenticator.minimum_password_length,
                ticket=ticket,
                user_name=username,
                next=self.get_body_argument("next", ""),
                error=problem,
            )
            self.finish(html)
            return
        auth.use_ticket(ticket)
        auth.set_password(username, new, one_time=False, by=username)
        audit(
            "user.password_change",
            actor=username,
            actor_kind="user",
            target=f"user/{username}",
            owner=username,
            outcome="allowed",
            client=self.request.remote_ip,
            details={"one_time_password_replaced": True},
        )
        # the login with the new password, recorded like any other
        user = await self.login_user({"username": username, "password": new})
        if user is None:
            self.redirect(self.settings["login_url"])
            return
        self.redirect(self.get_next_url(user))


class SignUpHandler(_Templates, native_handlers.SignUpHandler):
    """NativeAuthenticator's sign-up page, saying exactly what is wrong with a password."""

    async def post(self):
        if not self.authenticator.enable_signup:
            raise web.HTTPError(404)
        username = self.get_body_argument("username", "", strip=False)
        password = self.get_body_argument("signup_password", "", strip=False)
        confirmation = self.get_body_argument("signup_password_confirmation", "", strip=False)
        name = self.authenticator.normalize_username(username.strip())
        if not name or len(name) > 64 or not self.authenticator.validate_username(name):
            # users_info.username holds 128 characters: a longer name was a database
            # error on PostgreSQL, and NativeAuthenticator's message did not say which
            problem = "A user name has 1 to 64 characters, without spaces, commas or slashes."
        elif password != confirmation:
            problem = "The two passwords differ; type the same password twice."
        else:
            problem = self.authenticator.password_problem(password, name)
        if problem is None:
            await super().post()
            return
        self.set_status(400)
        html = await self.render_template(
            "signup.html",
            ask_email=self.authenticator.ask_email_on_signup,
            result_message=problem,
            alert="alert-danger",
            two_factor_auth=self.authenticator.allow_2fa,
            recaptcha_key=self.authenticator.recaptcha_key,
            tos=self.authenticator.tos,
        )
        self.finish(html)


class AuthorizationAreaHandler(_Templates, BaseHandler):
    """``/hub/authorize``: sign-ups and accounts, approved with POST forms (XSRF-checked)."""

    @needs_scope("admin:users")
    async def get(self):
        auth = self.authenticator
        users = [
            {
                "name": info.username,
                "approved": bool(info.is_authorized),
                "one_time": auth.must_change_password(info.username),
                "locked": auth.lockout_remaining(info.username) > 0,
                "email": info.email,
            }
            for info in self.db.query(UserInfo).order_by(UserInfo.username)
        ]
        html = await self.render_template(
            "shipyard-authorize.html", users=users, ask_email=auth.ask_email_on_signup
        )
        self.finish(html)


def _approve(handler, user_name: str, approved: bool) -> UserInfo:
    """Set a sign-up's approval; record it with the admin as actor."""
    info = handler.authenticator.get_user(user_name)
    if info is None:
        raise web.HTTPError(404, f"No sign-up or account called {user_name}.")
    changed = bool(info.is_authorized) != approved
    info.is_authorized = approved
    handler.db.commit()
    if changed:
        actor = handler.current_user
        audit(
            "user.approve" if approved else "user.update",
            actor=actor.name,
            actor_kind=_actor_kind(actor),
            target=f"user/{info.username}",
            owner=info.username,
            outcome="allowed",
            client=handler.request.remote_ip,
            details=None if approved else {"approved": False},
        )
    return info


class ToggleAuthorizationHandler(_Templates, BaseHandler):
    """``POST /hub/authorize/NAME`` approves or withdraws approval (``approve=1|0``)."""

    @needs_scope("admin:users")
    async def post(self, user_name):
        approved = self.get_body_argument("approve", "1") != "0"
        _approve(self, user_name, approved)
        self.redirect(self.hub.base_url + "authorize")


class DiscardHandler(_Templates, BaseHandler):
    """``POST /hub/discard/NAME`` deletes a sign-up that was not approved."""

    @needs_scope("admin:users")
    async def post(self, user_name):
        info = self.authenticator.get_user(user_name)
        if info is not None and not info.is_authorized:
            self.db.delete(info)
            self.db.commit()
        self.redirect(self.hub.base_url + "authorize")


class ChangePasswordHandler(_Templates, native_handlers.ChangePasswordHandler):
    """``/hub/change-password``: a user changes their own password."""

    @web.authenticated
    async def post(self):
        user = self.current_user
        auth = self.authenticator
        info = auth.get_user(user.name)
        old = self.get_body_argument("old_password", "", strip=False)
        new = self.get_body_argument("new_password", "", strip=False)
        confirmation = self.get_body_argument("new_password_confirmation", "", strip=False)
        problem = None
        if info is None:
            problem = "Your password is not kept by this hub; an admin can set one."
        elif len(old.encode()) > BCRYPT_MAX_BYTES or not info.is_valid_password(old):
            auth.record_failure(user.name)
            problem = "Your current password was incorrect. Please try again."
        elif new != confirmation:
            problem = "The two new passwords differ; type the same password twice."
        else:
            problem = auth.password_problem(new, user.name)
        if problem is None:
            auth.set_password(user.name, new, one_time=False, by=user.name)
            audit(
                "user.password_change",
                actor=user.name,
                actor_kind="user",
                target=f"user/{user.name}",
                owner=user.name,
                outcome="allowed",
                client=self.request.remote_ip,
            )
            alert, message = "alert-success", "Your password has been changed."
        else:
            self.set_status(400)
            alert, message = "alert-danger", problem
        html = await self.render_template(
            "change-password.html", user_name=user.name, result_message=message, alert=alert
        )
        self.finish(html)


class ChangePasswordAdminHandler(_Templates, native_handlers.ChangePasswordAdminHandler):
    """``/hub/change-password/NAME``: an admin sets a password the user must change.

    Also the admin page's way in for a user an admin created there: it gives them a
    password entry (approved) if they have none.
    """

    def _known(self, user_name: str) -> bool:
        return self.authenticator.user_exists(user_name) or self.find_user(user_name) is not None

    @needs_scope("admin:users")
    async def get(self, user_name):
        if not self._known(user_name):
            raise web.HTTPError(404)
        html = await self.render_template("change-password-admin.html", user_name=user_name)
        self.finish(html)

    @needs_scope("admin:users")
    async def post(self, user_name):
        if not self._known(user_name):
            raise web.HTTPError(404)
        auth = self.authenticator
        new = self.get_body_argument("new_password", "", strip=False)
        confirmation = self.get_body_argument("new_password_confirmation", "", strip=False)
        problem = auth.password_problem(new, user_name)
        if new != confirmation:
            problem = "The two passwords differ; type the same password twice."
        if problem is None:
            auth.set_password(user_name, new, one_time=True, by=self.current_user.name)
            _log_out_everywhere(self, user_name)
            audit(
                "user.password_change",
                actor=self.current_user.name,
                actor_kind=_actor_kind(self.current_user),
                target=f"user/{user_name}",
                owner=user_name,
                outcome="allowed",
                client=self.request.remote_ip,
                details={"one_time": True},
            )
            alert = "alert-success"
            message = (
                f"The password of {user_name} is set. It works once: at their next login "
                "they choose their own."
            )
        else:
            self.set_status(400)
            alert, message = "alert-danger", problem
        html = await self.render_template(
            "change-password-admin.html",
            user_name=user_name,
            result_message=message,
            alert=alert,
        )
        self.finish(html)


def _log_out_everywhere(handler, user_name: str) -> None:
    """End the user's browser sessions: a reset password is for a lost or stolen account."""
    user = handler.find_user(user_name)
    if user is not None:
        user.orm_user.cookie_id = new_token()
        handler.db.commit()


# -------------------------------------------------------------------- REST API
# Used by `shipyard users` (hub_ext/auth/cli.py) with the CLI's admin token.


def _user_model(handler, name: str) -> dict | None:
    auth = handler.authenticator
    info = auth.get_user(name)
    user = handler.find_user(name)
    if info is None and user is None:
        return None
    remaining = auth.lockout_remaining(name)
    return {
        "name": name,
        "hub_user": user is not None,
        "admin": bool(user.admin) if user is not None else False,
        "groups": sorted(g.name for g in user.groups) if user is not None else [],
        "has_password": info is not None,
        "approved": bool(info.is_authorized) if info is not None else False,
        "must_change_password": auth.must_change_password(name),
        "locked_seconds": math.ceil(remaining) if remaining else 0,
    }


class UsersAPIHandler(APIHandler):
    """``GET /hub/api/shipyard/users``: every account and sign-up, with its login state."""

    @needs_scope("admin:users")
    async def get(self):
        names = {u.name for u in self.db.query(orm.User)} | {
            i.username for i in self.db.query(UserInfo)
        }
        self.write(json.dumps([_user_model(self, n) for n in sorted(names)]))


class UserAPIHandler(APIHandler):
    """``GET /hub/api/shipyard/users/NAME``: one account's login state, 404 if none."""

    @needs_scope("admin:users")
    async def get(self, user_name):
        model = _user_model(self, user_name)
        if model is None:
            raise web.HTTPError(404, f"No user or sign-up called {user_name}.")
        self.write(json.dumps(model))


class OneTimePasswordAPIHandler(APIHandler):
    """``POST /hub/api/shipyard/users/NAME/one-time-password``: issue one; answers it once.

    The hub user must exist (``POST /hub/api/users/NAME`` makes one). With
    ``{"new": true}`` it refuses (409) a user who already has a password, so that
    ``shipyard users add`` never takes over an account. Issuing one unlocks the
    account and ends the user's browser sessions.
    """

    @needs_scope("admin:users")
    async def post(self, user_name):
        body = self.get_json_body() or {}
        if not isinstance(body, dict):
            raise web.HTTPError(400, 'The body must be a JSON object such as {"new": true}.')
        user = self.find_user(user_name)
        if user is None:
            raise web.HTTPError(404, f"No user called {user_name}; add them first.")
        auth = self.authenticator
        if body.get("new") and auth.get_user(user.name) is not None:
            raise web.HTTPError(409, f"{user.name} has a password already.")
        password = auth.issue_one_time_password(user.name, by=self.current_user.name)
        _log_out_everywhere(self, user.name)
        audit(
            "user.password_change",
            actor=self.current_user.name,
            actor_kind=_actor_kind(self.current_user),
            target=f"user/{user.name}",
            owner=user.name,
            outcome="allowed",
            client=self.request.remote_ip,
            details={"one_time": True},
        )
        self.set_status(201)
        self.write(json.dumps({"name": user.name, "password": password}))


class ApprovalAPIHandler(APIHandler):
    """``POST /hub/api/shipyard/users/NAME/approval``: approve a sign-up."""

    @needs_scope("admin:users")
    async def post(self, user_name):
        info = _approve(self, user_name, True)
        self.write(json.dumps(_user_model(self, info.username)))


# ------------------------------------------------------------------ configure
