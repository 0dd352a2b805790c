"""Pod pieces and client setup shared by Shipyard's two Kubernetes services.

The deployer runs model servers as Deployments
(:mod:`hub_ext.services.deployer.kubernetes`) and the scheduler runs notebooks
as Jobs (:mod:`hub_ext.services.scheduler.executors.kubernetes`). Both must
treat a resource profile exactly as :class:`~hub_ext.spawners.kubespawner.KubeProfileSpawner`
treats it for a user's server: the same image, the same requests and limits,
the same node placement and the same locked-down security context. These
pieces live here, once, so that the two services cannot drift apart from each
other or from the spawner; what differs (the workload's kind, its probes, its
volumes) stays in each service's own builders.

The manifest pieces (:func:`image_for`, :func:`resources`,
:func:`container_security_context`, :func:`container_env`, :func:`place_pod`)
are pure: they build plain dicts without I/O, as the builders that use them
(STYLE rule 8). The rest is the services' setup: :func:`default_namespace`,
:func:`pod_settings` (the traits both services map to settings alike, with
:func:`environment_digest`) and :func:`kubespawner_client`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from hub_ext.profiles.model import GPU_RESOURCE, Profile

#: Pod labels for cost accounting: who runs the pod, and in which profile (servers,
#: job pods and model replicas alike).
USER_LABEL = "shipyard.io/user"
PROFILE_LABEL = "shipyard.io/profile"

#: The containers' security context, as KubeProfileSpawner's defaults plus KubeSpawner's
#: ``allow_privilege_escalation = False``: the Pod Security Standards' "restricted" level
#: https://kubernetes.io/docs/concepts/security/pod-security-standards/#restricted
SECURE_CONTEXT = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def image_for(profile: Profile, image_template: str) -> str:
    """The profile's image: its override, else the template filled with its environment.

    Parameters
    ----------
    profile : hub_ext.profiles.model.Profile
        The resource profile; ``kubernetes.kubespawner_override.image`` wins when set.
    image_template : str
        The service's ``image_template``, with an ``{environment}`` field.

    Returns
    -------
    str
        The image reference of the pod's containers.
    """
    image = profile.kubernetes.kubespawner_override.get("image")
    return (
        image
        if isinstance(image, str) and image
        else image_template.format(environment=profile.environment)
    )


def _cpu(cores: float) -> str:
    millis = round(cores * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def resources(profile: Profile) -> dict[str, dict[str, str]]:
    """Requests (guarantees) and limits of a profile, in Kubernetes quantities.

    Parameters
    ----------
    profile : hub_ext.profiles.model.Profile
        The resource profile.

    Returns
    -------
    dict
        A container's ``resources``: ``requests`` and ``limits``, each left
        out when empty; a GPU is both requested and limited.
    """
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if profile.cpu_guarantee:
        requests["cpu"] = _cpu(profile.cpu_guarantee_cores)
    if profile.mem_guarantee:
        requests["memory"] = str(profile.mem_guarantee_bytes)
    if profile.cpu_limit:
        limits["cpu"] = _cpu(profile.cpu_limit_cores)
    if profile.mem_limit:
        limits["memory"] = str(profile.mem_limit_bytes)
    if profile.gpu:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(profile.gpu)
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


def container_security_context(uid: int, gid: int) -> dict[str, Any]:
    """A container's security context: the user and group, then :data:`SECURE_CONTEXT`.

    Parameters
    ----------
    uid, gid : int
        The user and group ids the container runs as.

    Returns
    -------
    dict
        A new dict each call, so callers may add to it.
    """
    return {"runAsUser": uid, "runAsGroup": gid, **SECURE_CONTEXT}


def container_env(
    profile: Profile,
    plain: Mapping[str, str | None],
    secret: str,
    secret_keys: Iterable[str],
) -> list[dict[str, Any]]:
    """A container's ``env``: plain values, the profile's overrides, then Secret references.

    Parameters
    ----------
    profile : hub_ext.profiles.model.Profile
        The resource profile; the string values of its
        ``kubernetes.kubespawner_override.environment`` replace or extend ``plain``.
    plain : Mapping[str, str or None]
        Variables set by value, in order; those that are None are left out.
    secret : str
        Name of the Secret that holds the other variables.
    secret_keys : Iterable[str]
        Names of the variables read from ``secret`` (each under its own key).

    Returns
    -------
    list of dict
        The ``env`` entries, plain ones first.
    """
    values = dict(plain)
    override = profile.kubernetes.kubespawner_override.get("environment")
    if isinstance(override, Mapping):
        values.update({k: v for k, v in override.items() if isinstance(v, str)})
    env: list[dict[str, Any]] = [
        {"name": k, "value": v} for k, v in values.items() if v is not None
    ]
    env += [
        {"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": k}}} for k in secret_keys
    ]
    return env


#: Prefix of the Kubernetes Secret that holds one user's Shipyard secrets.
USER_SECRETS_PREFIX = "shipyard-secrets-"


def user_secrets_name(owner: str) -> str:
    """The Secret that holds ``owner``'s secrets (the secrets service's kubernetes backend).

    One Secret per user, named from the one slug function (SECURITY rule 10),
    so the secrets service that writes it and the scheduler and deployer that
    reference it agree without talking to each other.
    """
    from hub_ext.host.slugs import user_slug

    return USER_SECRETS_PREFIX + user_slug(owner)


def user_secret_env(owner: str, names: Iterable[str]) -> list[dict[str, Any]]:
    """``env`` entries that read ``owner``'s secrets ``names`` from their Secret.

    Each variable is the secret's name, read from the key of that name in
    :func:`user_secrets_name`; a key that is missing fails the pod's start
    (``optional`` is left false), as a missing secret must.
    """
    secret = user_secrets_name(owner)
    return [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": name}}}
        for name in names
    ]


def place_pod(
    pod: dict[str, Any],
    profile: Profile,
    *,
    service_account: str | None,
    priority_class_name: str | None,
) -> None:
    """Add the profile's node placement, the service account and the priority class to ``pod``.

    Parameters
    ----------
    pod : dict
        A pod spec; it gets ``nodeSelector``, ``tolerations``,
        ``serviceAccountName`` and ``priorityClassName``, in that order, each
        only when set.
    profile : hub_ext.profiles.model.Profile
        The resource profile: its node selector and tolerations, and its
        ``kubernetes.kubespawner_override.priority_class_name``, which wins.
    service_account : str or None
        The service's service account; None for the namespace's default.
    priority_class_name : str or None
        The service's priority class, when the profile names none.
    """
    if profile.kubernetes.node_selector:
        pod["nodeSelector"] = dict(profile.kubernetes.node_selector)
    if profile.kubernetes.tolerations:
        pod["tolerations"] = [
            t.model_dump(exclude_none=True) for t in profile.kubernetes.tolerations
        ]
    if service_account:
        pod["serviceAccountName"] = service_account
    priority = profile.kubernetes.kubespawner_override.get(
        "priority_class_name", priority_class_name
    )
    if priority:
        pod["priorityClassName"] = priority


def default_namespace() -> str:
    """The namespace the service's own pod runs in, as KubeSpawner finds it; else ``default``."""
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    with contextlib.suppress(OSError):
        return path.read_text().strip()
    return "default"


def environment_digest(environment: str) -> str | None:
    """``SHIPYARD_ENV_DIGEST`` of an environment's image, when ``images/`` is at hand.

    Parameters
    ----------
    environment : str
        The profile's environment.

    Returns
    -------
    str or None
        The digest of the environment's lock; None when ``images/`` is not
        shipped with the service (the image still has it).
    """
    from hub_ext.environments.catalog import EnvironmentProblem, get_environment

    try:
        return get_environment(environment).digest
    except EnvironmentProblem:
        return None


def pod_settings(service: Any, environment: str) -> dict[str, Any]:
    """The settings both Kubernetes services take from their traits, the same way.

    Parameters
    ----------
    service : KubernetesBackend or KubernetesExecutor
        The configured service object: its ``namespace``, ``image_template``,
        ``uid``, ``gid`` (also the pods' ``fsGroup``) and ``service_account``
        (empty for the namespace's default).
    environment : str
        The profile's environment, for :func:`environment_digest`.

    Returns
    -------
    dict
        Keyword arguments of the service's settings dataclass.
    """
    return {
        "namespace": service.namespace,
        "image_template": service.image_template,
        "uid": service.uid,
        "gid": service.gid,
        "fs_gid": service.gid,
        "service_account": service.service_account or None,
        "env_digest": environment_digest(environment),
    }


async def kubespawner_client(
    error: Callable[[str], Exception], purpose: str
) -> Callable[[str], Any]:
    """KubeSpawner's ``shared_client``, once its configuration is loaded (in-cluster, else kubeconfig).

    Parameters
    ----------
    error : callable
        The exception type raised, with its message, when KubeSpawner is missing.
    purpose : str
        What needs it, the start of that message (``"Kubernetes runs"``).

    Returns
    -------
    callable
        ``shared_client(name)``: the shared client of a kubernetes_asyncio API class.
    """
    try:
        from kubespawner.clients import load_config, shared_client
    except ImportError as e:  # pragma: no cover - a dependency of Shipyard
        raise error(f"{purpose} need jupyterhub-kubespawner: {e}") from None
    await asyncio.to_thread(load_config)
    return shared_client
