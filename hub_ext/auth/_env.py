"""Reading the ``SHIPYARD_LDAP_*`` / ``SHIPYARD_OIDC_*`` settings from the environment.

The directory authenticators are configured by environment variables so that switching
an install to the organisation's directory is one documented setting and not an edit of
``jupyterhub_config.py``. Every problem is an :class:`~hub_ext.auth.AuthConfigError`
whose message names the variable to set or fix, raised while the hub loads its config,
so a misconfigured hub stops at start with that message instead of refusing every login
later with a log line nobody reads.

Secrets (the LDAP search account's password, the OIDC client secret) are read from a
file named by ``<NAME>_FILE`` first, the way container platforms mount secrets, and
from ``<NAME>`` itself otherwise; neither value is ever logged.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import AuthConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def get(name: str, default: str | None = None) -> str | None:
    """The variable's value with surrounding blanks removed; ``default`` when unset or blank."""
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    return value.strip()


def required(name: str, why: str) -> str:
    """The variable's value; an :class:`AuthConfigError` saying ``why`` when it is unset."""
    value = get(name)
    if value is None:
        raise AuthConfigError(f"{name} is not set: {why}")
    return value


def flag(name: str, default: bool = False) -> bool:
    """A yes/no variable (1/0, true/false, yes/no, on/off)."""
    value = os.environ.get(name)
    if value is None:
        return default
    value = value.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise AuthConfigError(f"{name}={value!r} is not a yes/no value; use 1 or 0.")


def integer(name: str, default: int, minimum: int = 0) -> int:
    """A whole number of at least ``minimum``."""
    value = get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise AuthConfigError(f"{name}={value!r} is not a whole number.") from None
    if number < minimum:
        raise AuthConfigError(f"{name}={number} is below {minimum}.")
    return number


def names(name: str, sep: str = ",") -> list[str]:
    """A ``sep``-separated list (blanks around items and empty items dropped)."""
    value = get(name)
    if value is None:
        return []
    return [item.strip() for item in value.split(sep) if item.strip()]


def secret(name: str) -> str | None:
    """A secret from the file named by ``<name>_FILE``, else from ``<name>``; None if neither.

    The file's content is used without its trailing newline. A ``_FILE`` that cannot be
    read is an error naming it (never its content).
    """
    path = get(f"{name}_FILE")
    if path is not None:
        try:
            value = Path(path).read_text().rstrip("\r\n")
        except OSError as e:
            raise AuthConfigError(
                f"{name}_FILE={path} cannot be read ({e.strerror}); "
                "point it at a file the hub can read."
            ) from None
        if not value:
            raise AuthConfigError(f"{name}_FILE={path} is empty.")
        return value
    return os.environ.get(name) or None
