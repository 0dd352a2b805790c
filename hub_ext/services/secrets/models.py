"""API models of the secrets service (pydantic), apart from the ORM (STYLE rule 11).

A secret's *name* is an environment variable name, because that is how a
run or a replica receives it; names the platform itself sets in a run
(``PATH``, ``JUPYTERHUB_*``, ``MLFLOW_*``, ``SHIPYARD_*`` ...) are refused,
so a secret can never replace them. A *value* is a non-empty string without
NUL characters (an environment variable cannot hold one), up to the
service's size limit (checked by the core, which knows the setting).

No model that a user receives has a ``value`` field: a value goes in (``SetSecret``)
and out only to the scheduler and deployer (``ResolveSecretsResponse``).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from .errors import Invalid

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


#: A secret's name, for pydantic models.
SecretName = Annotated[str, AfterValidator(_as_value_error(_name))]
#: A list of distinct secret names, for pydantic models (jobs and deployments use the same rule).
SecretNames = Annotated[list[str], AfterValidator(_as_value_error(_names))]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SetSecret(_Input):
    """The value of a secret to create or replace (``PUT api/secrets/{name}``)."""

    value: str = Field(
        description="The secret's value: a non-empty string without NUL characters. "
        "Stored encrypted; never answered back."
    )


class DescribeSecret(BaseModel):
    """A secret as its owner sees it: its name and times, never its value."""

    name: str
    created_at: datetime
    updated_at: datetime


class ListSecretsResponse(BaseModel):
    """The caller's secrets, by name."""

    secrets: list[DescribeSecret]


class SetSecretResponse(BaseModel):
    """The secret after a ``PUT``: ``created`` is False when an existing value was replaced."""

    secret: DescribeSecret
    created: bool


class ResolveSecrets(_Input):
    """The scheduler or deployer asks for the values a run or replica needs."""

    owner: str = Field(min_length=1, max_length=255, description="The hub user who owns them.")
    names: SecretNames = Field(min_length=1, description="The names the job or deployment lists.")
    purpose: str = Field(
        min_length=1,
        max_length=200,
        description="What the values are for, recorded in the audit trail "
        "(e.g. 'job 3f2a run 17c0').",
    )
    details: dict[str, str] = Field(
        default_factory=dict,
        max_length=10,
        description="Non-secret facts for the audit trail (job and run, or deployment and "
        "version).",
    )


class ResolveSecretsResponse(BaseModel):
    """The values, by name; every name asked for is present (or the call fails with 404)."""

    owner: str
    values: dict[str, str]


class ErrorResponse(BaseModel):
    """Every error answer: the status, what to fix, and the bad fields of a 400."""

    status: int
    message: str
    errors: list[dict[str, str]] = Field(default_factory=list)
