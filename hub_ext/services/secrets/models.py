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

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

# The naming rule is shared with the scheduler and the deployer (a job's ``secrets``).
from ..common.secrets import (
    MAX_NAME_LENGTH,
    NAME_PATTERN,
    RESERVED_NAMES,
    RESERVED_PREFIXES,
    SecretName,
    SecretNames,
    check_name,
)

__all__ = [
    "MAX_NAME_LENGTH",
    "NAME_PATTERN",
    "RESERVED_NAMES",
    "RESERVED_PREFIXES",
    "SecretName",
    "SecretNames",
    "check_name",
]


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
