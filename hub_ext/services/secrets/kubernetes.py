"""The ``kubernetes`` secret backend: one Kubernetes Secret per user.

On Kubernetes, users' secrets are Kubernetes Secrets, so the cluster's own
protection applies (RBAC, encryption at rest configured for the API server,
audit logs), and runs and replicas read them through ``secretKeyRef``
(:func:`hub_ext.host.k8s.user_secret_env`): the pods get the values from the API
server, not from Shipyard. (The scheduler and the deployer still resolve them
once per run or start, through this service, only to scrub outputs and logs.)

- :func:`secret_manifest` is the pure builder (STYLE rule 8): one typed spec
  in, the v1 Secret out, validated against the Kubernetes schema in tests.
  Each secret is a key of the Secret's ``data``; creation and update times
  are in an annotation (a Secret keeps no per-key times).
- :class:`KubernetesBackend` reads and replaces that Secret with
  kubernetes_asyncio (KubeSpawner's shared client), with the Secret's
  ``resourceVersion`` for optimistic concurrency: two writes at once retry
  instead of one losing the other's key.

Rejected: one Secret per (user, name), which makes a pod reference many
objects and a user's list a label query; and a Secret per run, which copies
values around.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from traitlets import Unicode, default

from hub_ext.host.k8s import KubePlacement, kubespawner_client, user_secrets_name

from .backend import SecretBackend, SecretInfo
from .errors import Unavailable

#: Annotation with each key's creation and update time (ISO 8601), as JSON.
TIMES_ANNOTATION = "shipyard.io/secret-times"
#: Annotation with the owner's hub username, as typed (labels cannot hold every name).
OWNER_ANNOTATION = "shipyard.io/owner"


@dataclass(frozen=True)
class UserSecretsSpec:
    """What one user's Secret holds.

    Parameters
    ----------
    owner : str
        The hub user.
    namespace : str
        Where the Secret lives (the namespace of the runs and replicas).
    values : Mapping[str, str]
        The secrets by name.
    times : Mapping[str, tuple of datetime]
        ``(created_at, updated_at)`` of each name in ``values``.
    """

    owner: str
    namespace: str
    values: Mapping[str, str] = field(default_factory=dict)
    times: Mapping[str, tuple[datetime, datetime]] = field(default_factory=dict)


def secret_manifest(spec: UserSecretsSpec, resource_version: str | None = None) -> dict[str, Any]:
    """The v1 Secret of ``spec``: one ``data`` key per secret, times in an annotation."""
    times = {
        name: [spec.times[name][0].isoformat(), spec.times[name][1].isoformat()]
        for name in sorted(spec.values)
    }
    metadata: dict[str, Any] = {
        "name": user_secrets_name(spec.owner),
        "namespace": spec.namespace,
        "labels": {
            "app.kubernetes.io/name": "shipyard",
            "app.kubernetes.io/component": "user-secrets",
            "app.kubernetes.io/managed-by": "shipyard-secrets",
        },
        "annotations": {
            OWNER_ANNOTATION: spec.owner,
            TIMES_ANNOTATION: json.dumps(times, sort_keys=True),
        },
    }
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "data": {
            name: base64.b64encode(spec.values[name].encode()).decode()
            for name in sorted(spec.values)
        },
    }


def parse_secret(manifest: Mapping[str, Any], owner: str, namespace: str) -> UserSecretsSpec:
    """The spec of a Secret as read back (the inverse of :func:`secret_manifest`)."""
    data = manifest.get("data") or {}
    annotations = (manifest.get("metadata") or {}).get("annotations") or {}
    try:
        raw_times = json.loads(annotations.get(TIMES_ANNOTATION) or "{}")
    except ValueError:
        raw_times = {}
    epoch = datetime.fromtimestamp(0, timezone.utc)
    values, times = {}, {}
    for name, encoded in data.items():
        values[name] = base64.b64decode(encoded).decode()
        pair = raw_times.get(name) or []
        try:
            times[name] = (datetime.fromisoformat(pair[0]), datetime.fromisoformat(pair[1]))
        except (IndexError, TypeError, ValueError):
            times[name] = (epoch, epoch)
    return UserSecretsSpec(owner, namespace, values, times)


class KubernetesBackend(SecretBackend):
    """Users' secrets as Kubernetes Secrets, one per user, in one namespace."""

    namespace = Unicode(
        help="""
        The namespace of the users' Secrets: the one runs and model replicas run in.

        Defaults to ``c.KubePlacement.namespace``, the namespace of the
        scheduler's Jobs and the deployer's model servers (put it in this
        service's config too, or in one file the three load), which defaults
        to the service's own namespace (in a pod), else ``default``. A
        ``secretKeyRef`` only reaches a Secret in the pod's own namespace.

        Example::

            c.KubernetesBackend.namespace = "shipyard-jobs"

        .. versionadded:: 0.4
        .. versionchanged:: 0.16
           Defaults to ``c.KubePlacement.namespace``.
        """
    ).tag(config=True)

    @default("namespace")
    def _default_namespace(self):
        return KubePlacement(parent=self).namespace

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._api = None

    async def start(self) -> None:
        shared_client = await kubespawner_client(Unavailable, "Kubernetes secrets")
        self._api = shared_client("CoreV1Api")

    async def health(self) -> dict[str, Any]:
        return {"backend": "kubernetes", "namespace": self.namespace}

    # ------------------------------------------------------------ I/O

    async def _read(self, owner: str) -> tuple[UserSecretsSpec, str | None]:
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            secret = await self._api.read_namespaced_secret(
                user_secrets_name(owner), self.namespace
            )
        except ApiException as e:
            if e.status == 404:
                return UserSecretsSpec(owner, self.namespace), None
            raise Unavailable(f"the Kubernetes API answered {e.status} reading a Secret") from None
        manifest = self._api.api_client.sanitize_for_serialization(secret)
        return (
            parse_secret(manifest, owner, self.namespace),
            manifest["metadata"].get("resourceVersion"),
        )

    async def _write(self, spec: UserSecretsSpec, version: str | None) -> bool:
        """Write ``spec``; False when the Secret changed since it was read (retry)."""
        from kubernetes_asyncio.client.exceptions import ApiException

        name = user_secrets_name(spec.owner)
        try:
            if not spec.values:
                if version is not None:
                    await self._api.delete_namespaced_secret(name, self.namespace)
            elif version is None:
                await self._api.create_namespaced_secret(self.namespace, secret_manifest(spec))
            else:
                await self._api.replace_namespaced_secret(
                    name, self.namespace, secret_manifest(spec, version)
                )
        except ApiException as e:
            if e.status in (404, 409):
                return False
            raise Unavailable(f"the Kubernetes API answered {e.status} writing a Secret") from None
        return True

    async def _change(self, owner: str, change) -> Any:
        for _ in range(5):
            spec, version = await self._read(owner)
            values, times = dict(spec.values), dict(spec.times)
            result = change(values, times)
            if await self._write(UserSecretsSpec(owner, self.namespace, values, times), version):
                return result
        raise Unavailable(f"{owner}'s Secret kept changing while it was written; try again")

    # ------------------------------------------------------------ interface

    async def list(self, owner: str) -> list[SecretInfo]:
        spec, _ = await self._read(owner)
        return [SecretInfo(n, *spec.times[n]) for n in sorted(spec.values)]

    async def get(self, owner: str, name: str) -> SecretInfo | None:
        spec, _ = await self._read(owner)
        return SecretInfo(name, *spec.times[name]) if name in spec.values else None

    async def count(self, owner: str) -> int:
        spec, _ = await self._read(owner)
        return len(spec.values)

    async def put(self, owner: str, name: str, value: str) -> tuple[SecretInfo, bool]:
        def change(values, times):
            now = datetime.now(timezone.utc)
            created = name not in values
            values[name] = value
            times[name] = (now if created else times[name][0], now)
            return SecretInfo(name, *times[name]), created

        return await self._change(owner, change)

    async def delete(self, owner: str, name: str) -> bool:
        def change(values, times):
            found = values.pop(name, None) is not None
            times.pop(name, None)
            return found

        return await self._change(owner, change)

    async def resolve(self, owner: str, names: Collection[str]) -> dict[str, str]:
        spec, _ = await self._read(owner)
        return {n: spec.values[n] for n in names if n in spec.values}
