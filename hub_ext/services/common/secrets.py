"""What the scheduler and the deployer share to give runs and replicas their owners' secrets.

- :class:`SecretsResolver` asks the secrets service (``POST api/resolve``) for
  the values a job or deployment names, with the calling service's own hub
  token (which the hub lets through to the secrets service; the service
  refuses any caller but the scheduler and the deployer). Values come back
  for one run or replica at a time and are never stored by the caller.
- :func:`check_name` and :data:`SecretNames`: what may name a secret (an
  environment variable name, not one the platform sets), the rule of the
  secrets service and of a job's or deployment's ``secrets`` list alike;
- :class:`~.scrub.Scrubber` (in :mod:`.scrub`) then removes the values from
  what the run or replica wrote (notebooks, HTML, logs) before anyone reads it.

Shared here because both services do exactly this; neither imports the
secrets service's package (services talk over HTTP only).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from .errors import Invalid

log = logging.getLogger("shipyard.secrets.client")

#: An environment variable name, as POSIX shells accept it.
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: Longest secret name.
MAX_NAME_LENGTH = 128

#: Names a run or replica gets from the platform; a secret may not shadow them.
RESERVED_NAMES = frozenset(
    {
        "HOME",
        "LANG",
        "LD_LIBRARY_PATH",
        "LD_PRELOAD",
        "LOGNAME",
        "PATH",
        "PWD",
        "PYTHONHOME",
        "PYTHONPATH",
        "SHELL",
        "TMPDIR",
        "USER",
        "VIRTUAL_ENV",
        "CUDA_VISIBLE_DEVICES",
    }
)

#: Prefixes of names the platform sets (hub tokens, tracking, Shipyard's own).
RESERVED_PREFIXES = ("JUPYTERHUB_", "JUPYTER_", "MLFLOW_", "SHIPYARD_", "KUBERNETES_")

#: Most secret names one job or deployment may name.
MAX_SECRETS_PER_OBJECT = 50


def check_name(name: str) -> str:
    """Return ``name`` if it may name a secret; raise :class:`~.errors.Invalid` saying why not.

    Parameters
    ----------
    name : str
        The name the caller sent.

    Raises
    ------
    Invalid
        Not an environment variable name, too long, or reserved.
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise Invalid(
            f"{name!r} is not a valid secret name: use an environment variable name "
            "(letters, digits and underscores, not starting with a digit), e.g. DB_PASSWORD"
        )
    if len(name) > MAX_NAME_LENGTH:
        raise Invalid(f"a secret name has at most {MAX_NAME_LENGTH} characters")
    if name.upper() in RESERVED_NAMES or name.upper().startswith(RESERVED_PREFIXES):
        raise Invalid(
            f"{name!r} is set by Shipyard itself in runs and replicas; choose another name "
            f"(not {', '.join(sorted(RESERVED_NAMES))}, nor one starting with "
            f"{', '.join(RESERVED_PREFIXES)})"
        )
    return name


def _names(value: list[str]) -> list[str]:
    for name in value:
        check_name(name)
    if len(set(value)) != len(value):
        raise ValueError("a secret is named twice")
    if len(value) > MAX_SECRETS_PER_OBJECT:
        raise ValueError(f"at most {MAX_SECRETS_PER_OBJECT} secrets")
    return value


def _name(value: str) -> str:
    return check_name(value)


def _as_value_error(func):
    # pydantic turns ValueError (not our Invalid) into a field error
    def check(value):
        try:
            return func(value)
        except Invalid as e:
            raise ValueError(e.message) from None

    return check


def _any_case(text: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in text)


#: The JSON schema of a secret name: exactly what :func:`check_name` accepts, so the
#: OpenAPI documents say it (ECMA regexes have no case-insensitive flag: ``[Hh]...``).
NAME_SCHEMA = {
    "type": "string",
    "pattern": f"^{NAME_PATTERN.pattern}$",
    "maxLength": MAX_NAME_LENGTH,
    "not": {
        "pattern": "^(?:"
        + "|".join(
            [_any_case(n) + "$" for n in sorted(RESERVED_NAMES)]
            + [_any_case(p) for p in RESERVED_PREFIXES]
        )
        + ")"
    },
}

#: A secret's name, for pydantic models.
SecretName = Annotated[
    str, AfterValidator(_as_value_error(_name)), WithJsonSchema(NAME_SCHEMA, mode="validation")
]
#: A list of distinct secret names, for pydantic models (jobs and deployments use the same rule).
SecretNames = Annotated[
    list[str],
    AfterValidator(_as_value_error(_names)),
    WithJsonSchema(
        {
            "type": "array",
            "items": NAME_SCHEMA,
            "maxItems": MAX_SECRETS_PER_OBJECT,
            "uniqueItems": True,
        },
        mode="validation",
    ),
]


class SecretsUnavailable(Exception):
    """The values could not be had: a missing secret, or the service did not answer.

    ``str()`` says which secret or what to do; it never holds a value.
    """


class SecretsResolver:
    """Resolves owners' secrets through the secrets service.

    Parameters
    ----------
    url : str
        The secrets service's base URL, ending in ``/services/secrets/``
        (``$SHIPYARD_SECRETS_API_URL``, set by the hub's config). Empty: the
        hub runs no secrets service, and a job naming secrets cannot run.
    token : str
        The calling service's hub API token.
    """

    def __init__(self, url: str, token: str):
        self.url = url.rstrip("/") + "/" if url else ""
        self.token = token

    @classmethod
    def from_environment(cls) -> SecretsResolver:
        """The resolver of a hub-managed service (its URL and token from its environment)."""
        return cls(
            os.environ.get("SHIPYARD_SECRETS_API_URL", ""),
            os.environ.get("JUPYTERHUB_API_TOKEN", ""),
        )

    async def __call__(
        self,
        owner: str,
        names: Sequence[str],
        purpose: str,
        details: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """The values of ``owner``'s secrets ``names``, for ``purpose`` (recorded in the trail).

        Raises
        ------
        SecretsUnavailable
            A name the owner has no secret of (the message names it), or no service.
        """
        if not names:
            return {}
        if not self.url:
            raise SecretsUnavailable(
                f"it needs the secrets {', '.join(names)}, but this hub runs no secrets "
                "service (SHIPYARD_SECRETS=0); ask your admin"
            )
        body = {
            "owner": owner,
            "names": list(names),
            "purpose": purpose,
            "details": {k: str(v) for k, v in (details or {}).items()},
        }
        request = HTTPRequest(
            self.url + "api/resolve",
            method="POST",
            body=json.dumps(body),
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
            request_timeout=15,
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as e:
            message = _message(e)
            log.warning("Secrets of %s for %s refused (%s): %s", owner, purpose, e.code, message)
            raise SecretsUnavailable(message) from None
        except OSError as e:
            raise SecretsUnavailable(
                f"the secrets service did not answer ({e.strerror or e}); try again, or ask "
                "your admin whether it runs"
            ) from None
        values = json.loads(response.body)["values"]
        return {name: values[name] for name in names}


def _message(error: HTTPClientError) -> str:
    try:
        body = json.loads(error.response.body) if error.response is not None else {}
        message = body.get("message")
    except (ValueError, AttributeError):
        message = None
    return message or f"the secrets service answered {error.code}"
