"""The rules of the secrets service, the same whatever the backend.

Handlers parse and serialise; this core decides (STYLE rule 13):

- **whose**: a user reaches only their own secrets; another user's secret
  answers exactly like a missing one (SECURITY rule 3), for admins too: no
  route lets anyone read or change another user's secrets;
- **what**: names are environment variable names (:func:`~.models.check_name`),
  values non-empty strings without NUL, up to ``max_value_bytes``, and a user
  has at most ``max_secrets_per_user``;
- **who resolves**: only the services named in ``resolvers`` (the scheduler
  and the deployer) get values, for one owner at a time, with a purpose that
  goes into the audit trail; any other caller gets 403, recorded as denied;
- **the trail**: ``secret.create``, ``secret.update``, ``secret.delete`` and
  ``secret.use`` are emitted through :func:`hub_ext.audit.emit`, allowed or
  denied, with the secret's name as target and never its value.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from hub_ext.audit import emit

from .backend import SecretBackend, SecretInfo
from .errors import Forbidden, Invalid, NotFound, TooLarge
from .metrics import RESOLVED
from .models import (
    DescribeSecret,
    ListSecretsResponse,
    ResolveSecrets,
    ResolveSecretsResponse,
    SetSecretResponse,
    check_name,
)


@dataclass(frozen=True)
class Caller:
    """Who makes a request: a hub user or a hub service, and from where."""

    name: str
    kind: str = "user"
    admin: bool = False
    client: str | None = None


def _describe(info: SecretInfo) -> DescribeSecret:
    return DescribeSecret(name=info.name, created_at=info.created_at, updated_at=info.updated_at)


def _target(owner: str, name: str) -> str:
    return f"secret/{owner}/{name}"


class SecretsCore:
    """What the routes do, over one :class:`~.backend.SecretBackend`."""

    def __init__(
        self,
        backend: SecretBackend,
        *,
        max_value_bytes: int,
        max_secrets_per_user: int,
        resolvers: Collection[str],
    ):
        self.backend = backend
        self.max_value_bytes = max_value_bytes
        self.max_secrets_per_user = max_secrets_per_user
        self.resolvers = frozenset(resolvers)
        #: Largest request body: a value, JSON-escaped (up to 6 bytes a byte), and room.
        self.max_request_bytes = max_value_bytes * 6 + 64 * 1024

    async def health(self) -> dict[str, Any]:
        return {"status": "ok", **(await self.backend.health())}

    # ------------------------------------------------------------ the owner's routes

    def _user(self, caller: Caller) -> None:
        if caller.kind != "user":
            raise Forbidden("Secrets belong to hub users; a service may only resolve them.")

    def _audit(self, action: str, caller: Caller, name: str, outcome: str, reason=None) -> None:
        emit(
            action,
            actor=caller.name,
            actor_kind=caller.kind,
            target=_target(caller.name, name),
            owner=caller.name,
            outcome=outcome,
            reason=reason,
            client=caller.client,
        )

    async def list_secrets(self, caller: Caller) -> ListSecretsResponse:
        self._user(caller)
        return ListSecretsResponse(
            secrets=[_describe(i) for i in await self.backend.list(caller.name)]
        )

    async def get_secret(self, caller: Caller, name: str) -> DescribeSecret:
        self._user(caller)
        check_name(name)
        info = await self.backend.get(caller.name, name)
        if info is None:
            raise NotFound(f"you have no secret named {name!r}")
        return _describe(info)

    def _check_value(self, value: str) -> None:
        if not value:
            raise Invalid("value: a secret's value cannot be empty")
        if "\0" in value:
            raise Invalid("value: a secret's value cannot contain a NUL character")
        size = len(value.encode())
        if size > self.max_value_bytes:
            raise TooLarge(
                f"value: the value is {size} bytes, over the limit of {self.max_value_bytes}"
            )

    async def set_secret(self, caller: Caller, name: str, value: str) -> SetSecretResponse:
        self._user(caller)
        try:
            check_name(name)
            self._check_value(value)
            existing = await self.backend.get(caller.name, name)
            if existing is None:
                count = await self.backend.count(caller.name)
                if count >= self.max_secrets_per_user:
                    raise Invalid(
                        f"you have {count} secrets, the most a user may keep; "
                        "delete one you no longer need"
                    )
        except (Invalid, TooLarge) as e:
            self._audit("secret.create", caller, name, "denied", e.message)
            raise
        info, created = await self.backend.put(caller.name, name, value)
        self._audit("secret.create" if created else "secret.update", caller, name, "allowed")
        return SetSecretResponse(secret=_describe(info), created=created)

    async def delete_secret(self, caller: Caller, name: str) -> None:
        self._user(caller)
        try:
            check_name(name)
            if not await self.backend.delete(caller.name, name):
                raise NotFound(f"you have no secret named {name!r}")
        except (Invalid, NotFound) as e:
            self._audit("secret.delete", caller, name, "denied", e.message)
            raise
        self._audit("secret.delete", caller, name, "allowed")

    # ------------------------------------------------------------ the services' route

    async def resolve(self, caller: Caller, request: ResolveSecrets) -> ResolveSecretsResponse:
        """The values of ``request.names`` of ``request.owner``, for a resolver service only."""
        details = {"purpose": request.purpose, **request.details}
        if caller.kind != "service" or caller.name not in self.resolvers:
            for name in request.names:
                emit(
                    "secret.use",
                    actor=caller.name,
                    actor_kind=caller.kind,
                    on_behalf_of=request.owner,
                    target=_target(request.owner, name),
                    owner=request.owner,
                    outcome="denied",
                    reason="only the scheduler and deployer services may resolve secrets",
                    client=caller.client,
                    details=details,
                )
            RESOLVED.labels("denied").inc()
            raise Forbidden(
                "Only the services that run jobs and models "
                f"({', '.join(sorted(self.resolvers)) or 'none configured'}) may resolve secrets."
            )
        values = await self.backend.resolve(request.owner, request.names)
        missing = [n for n in request.names if n not in values]
        for name in request.names:
            emit(
                "secret.use",
                actor=caller.name,
                actor_kind="service",
                on_behalf_of=request.owner,
                target=_target(request.owner, name),
                owner=request.owner,
                outcome="failed" if missing else "allowed",
                reason=f"{request.owner} has no secret named {', '.join(missing)}"
                if missing
                else None,
                client=caller.client,
                details=details,
            )
        if missing:
            RESOLVED.labels("missing").inc()
            raise NotFound(
                f"{request.owner} has no secret named {', '.join(missing)}: set it with "
                f"'%secret set {missing[0]}' (or 'shipyard secrets set {missing[0]}'), or remove "
                "it from the job's or deployment's secrets"
            )
        RESOLVED.labels("allowed").inc()
        return ResolveSecretsResponse(owner=request.owner, values=values)
