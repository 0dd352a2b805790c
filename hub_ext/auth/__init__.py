"""How people log in to Shipyard: one setting picks the authenticator.

``SHIPYARD_AUTH`` chooses where identities come from, so that switching an install
from its own accounts to the organisation's directory is one documented setting and
not an edit of ``jupyterhub_config.py``:

``native`` (the default)
    Per-user accounts kept by the hub: hashed passwords, sign-ups an admin approves,
    a password change page, lock-out after repeated failures
    (:mod:`hub_ext.auth.native`).
``ldap``
    LDAP or Active Directory through jupyterhub-ldapauthenticator
    (:mod:`hub_ext.auth.ldap`).
``oidc``
    Any OpenID Connect provider through oauthenticator's GenericOAuthenticator
    (:mod:`hub_ext.auth.oidc`).

Every choice is wrapped so that each login attempt leaves one audit record
(:mod:`hub_ext.auth.audited`). There is no shared password in any of them.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

#: The values ``SHIPYARD_AUTH`` may take, each the module that configures it.
AUTHENTICATORS = ("native", "ldap", "oidc")


class AuthConfigError(ValueError):
    """The authentication settings are incomplete or wrong; the message says what to set."""


def configure_authenticator(c, data_dir: Path) -> str:
    """Configure the hub's authenticator from ``SHIPYARD_AUTH``; return the choice.

    Parameters
    ----------
    c : traitlets.config.Config
        The hub's configuration (``get_config()`` in jupyterhub_config.py).
    data_dir : pathlib.Path
        The hub's data directory (generated credentials live there).

    Returns
    -------
    str
        The authenticator chosen: ``native``, ``ldap`` or ``oidc``.

    Raises
    ------
    AuthConfigError
        ``SHIPYARD_AUTH`` names no known authenticator, or its settings are incomplete.
    """
    choice = (os.environ.get("SHIPYARD_AUTH") or "native").strip().lower()
    if choice not in AUTHENTICATORS:
        raise AuthConfigError(
            f"SHIPYARD_AUTH={choice!r} is not known; use one of {', '.join(AUTHENTICATORS)}."
        )
    module = importlib.import_module(f"{__name__}.{choice}")
    module.configure(c, data_dir)
    return choice
