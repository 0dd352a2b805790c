"""One audit record for every login attempt, whatever the authenticator.

JupyterHub funnels every password or directory login through
``Authenticator.get_authenticated_user(handler, data)``: the login form, the
``POST /hub/api/users/<name>/tokens`` call that authenticates with a body of
``{"auth": {"username": ..., "password": ...}}``, and oauthenticator's callback.
Wrapping that one method is therefore the narrowest place that sees *every* attempt
exactly once; wrapping ``authenticate`` instead would miss the refusals JupyterHub
itself makes after it (blocked users, ``check_allowed``), and wrapping the login
handler would miss the token API.

:class:`AuditedAuthenticatorMixin` goes first in the bases of any
:class:`~jupyterhub.auth.Authenticator` subclass::

    class ShipyardLDAPAuthenticator(AuditedAuthenticatorMixin, LDAPAuthenticator):
        ...

and then each attempt emits one of

``login.succeeded``
    actor = the user who logged in.
``login.failed``
    actor unknown (``anonymous``), target = the account that was claimed, with a short
    reason: the authenticator's own when it gave one through :func:`note_login_failure`,
    else what JupyterHub refused it for.
``login.locked_out``
    the account is locked after too many failures; the attempt was not even checked.

The record never holds the password or any other form field but the user name. The
audit package is imported lazily: an install without it (or with the trail switched off)
still logs people in, and says once in the log that logins are not audited.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any

from jupyterhub.utils import maybe_future
from tornado import web

log = logging.getLogger(__name__)

#: What the attempt in progress has learned: set by get_authenticated_user, read and
#: written by authenticate and by note_login_failure. A ContextVar, not an attribute of
#: the (shared) authenticator, because attempts run concurrently on one event loop.
_attempt: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "shipyard_login_attempt", default=None
)

#: Longest user name copied into a record; longer input is cut, as JupyterHub's
#: login handler does when it logs a failed name.
MAX_NAME = 64

_missing_audit_logged = False


def audit(action: str, **fields: Any) -> None:
    """Emit one audit record through :func:`hub_ext.audit.emit`; never raise.

    Parameters
    ----------
    action : str
        The action name, e.g. ``"login.failed"`` or ``"user.approve"``.
    **fields
        The keyword arguments of ``emit`` (actor, actor_kind, target, outcome, ...).
    """
    global _missing_audit_logged
    try:
        from hub_ext.audit import emit
    except ImportError as e:
        if not _missing_audit_logged:
            _missing_audit_logged = True
            log.error("The audit trail is not installed (%s): logins are not audited.", e)
        return
    try:
        emit(action, **fields)
    except Exception:  # emit promises not to raise; a login must not fail if it does
        log.exception("Could not record %s in the audit trail", action)


def note_login_failure(reason: str, *, locked_out: bool = False) -> None:
    """Tell the audit record of the attempt in progress why it failed.

    Called by an authenticator's ``authenticate`` (or anything it calls) when it
    refuses, so that the record says "wrong password" or "not approved yet" rather
    than a generic refusal. Outside a login attempt it does nothing.

    Parameters
    ----------
    reason : str
        A short, non-secret reason (never a password or a token).
    locked_out : bool
        The account is locked: the attempt becomes ``login.locked_out``.
    """
    attempt = _attempt.get()
    if attempt is not None:
        attempt["reason"] = reason
        attempt["locked_out"] = locked_out


def _claimed_name(authenticator, data) -> str | None:
    """The user name an attempt claims, normalised and cut short; None if it gives none."""
    if not isinstance(data, dict):
        return None
    name = data.get("username")
    if not isinstance(name, str) or not name.strip():
        return None
    try:
        name = authenticator.normalize_username(name.strip())
    except Exception:  # a normaliser that chokes on odd input: keep the raw name
        name = name.strip()
    if len(name) > MAX_NAME:
        name = f"{name[: MAX_NAME // 2]}...({len(name)} chars)"
    return name


def _client(handler) -> str | None:
    request = getattr(handler, "request", None)
    return getattr(request, "remote_ip", None)


class AuditedAuthenticatorMixin:
    """Record every login attempt in the audit trail, exactly once.

    Put it first in the bases of any JupyterHub ``Authenticator`` subclass. It wraps
    ``get_authenticated_user`` (the one entry point of every login) and
    ``authenticate`` (to tell "wrong credentials" from "JupyterHub refused the
    user"). An authenticator that knows a better reason calls
    :func:`note_login_failure` from its ``authenticate``.
    """

    async def authenticate(self, handler, data):
        result = await maybe_future(super().authenticate(handler, data))
        attempt = _attempt.get()
        if attempt is not None:
            attempt["authenticated"] = result is not None
        return result

    async def get_authenticated_user(self, handler, data):
        if _attempt.get() is not None:
            # an authenticator that re-enters: the outer call records the attempt
            return await super().get_authenticated_user(handler, data)
        attempt: dict = {"reason": None, "locked_out": False, "authenticated": None}
        token = _attempt.set(attempt)
        claimed = _claimed_name(self, data)
        try:
            try:
                result = await super().get_authenticated_user(handler, data)
            except Exception as e:
                # oauthenticator and LDAP refuse with exceptions; record, then let
                # JupyterHub answer as it would have
                status = e.status_code if isinstance(e, web.HTTPError) else None
                reason = attempt["reason"] or (
                    f"refused with HTTP {status}" if status else f"error: {type(e).__name__}"
                )
                self._audit_failure(handler, claimed, reason, attempt["locked_out"])
                raise
        finally:
            _attempt.reset(token)
        if result:
            name = result["name"] if isinstance(result, dict) else str(result)
            audit(
                "login.succeeded",
                actor=name,
                actor_kind="user",
                target=f"user/{name}",
                owner=name,
                outcome="allowed",
                client=_client(handler),
            )
            return result
        if attempt["reason"]:
            reason = attempt["reason"]
        elif attempt["authenticated"]:
            # the credentials were right, JupyterHub refused the name afterwards
            reason = "not allowed to use this hub"
        elif data is None or (isinstance(data, dict) and claimed is None):
            reason = "no credentials given"
        else:
            reason = "invalid credentials"
        self._audit_failure(handler, claimed, reason, attempt["locked_out"])
        return result

    def _audit_failure(self, handler, claimed: str | None, reason: str, locked_out: bool):
        audit(
            "login.locked_out" if locked_out else "login.failed",
            actor=None,
            actor_kind="anonymous",
            target=f"user/{claimed}" if claimed else None,
            owner=claimed,
            outcome="denied",
            reason=reason,
            client=_client(handler),
        )
