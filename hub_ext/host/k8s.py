"""Kubernetes placement and pod pieces shared by Shipyard's spawner and its two Kubernetes services.

The deployer runs model servers as Deployments
(:mod:`hub_ext.services.deployer.kubernetes`) and the scheduler runs notebooks
as Jobs (:mod:`hub_ext.services.scheduler.executors.kubernetes`). Both must
treat a resource profile exactly as :class:`~hub_ext.spawners.kubespawner.KubeProfileSpawner`
treats it for a user's server: the same image, the same requests and limits,
the same node placement and the same locked-down security context. These
pieces live here, once, so that the two services cannot drift apart from each
other or from the spawner; what differs (the workload's kind, its probes, its
volumes) stays in each service's own builders.

- :class:`KubePlacement` is the one configurable place of what the cluster
  decides about every Shipyard pod (namespace, image template, uid/gid, service
  account): ``c.KubePlacement.namespace = ...`` in the hub's config configures
  the users' servers, the scheduler's Jobs and the deployer's model servers
  alike (the hub passes the section on to its services,
  :mod:`hub_ext.host.passing`). It produces a :class:`PodSettings`, the typed
  value the services' builders read (their own settings extend it); the
  spawner sets KubeSpawner's own traits from it. Rejected alternative: the
  same traits declared on the spawner and both services with "keep these
  equal" in their help (what Shipyard had until 0.16); the old names still
  work for one release through :class:`KubePlaced`'s deprecation table and
  the spawner's deprecated ``image_template``.
- The manifest pieces (:func:`image_for`, :func:`resources`,
  :func:`container_security_context`, :func:`container_env`, :func:`place_pod`)
  are pure: they build plain dicts without I/O, as the builders that use them
  (STYLE rule 8).
- :func:`default_namespace` and :func:`kubespawner_client` are the services'
  setup.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from traitlets import Instance, Integer, TraitError, Unicode, default, validate
from traitlets.config import Config, LoggingConfigurable

from hub_ext.host.deprecation import warn_moved
from hub_ext.profiles.model import GPU_RESOURCE, Profile

#: Pod labels for cost accounting: who runs the pod, and in which profile (servers,
#: job pods and model replicas alike).
USER_LABEL = "shipyard.io/user"
PROFILE_LABEL = "shipyard.io/profile"

#: The user and group of Shipyard's pods: jovyan and users in the Jupyter Docker Stacks images
#: (and the model server image, images/model-server/Dockerfile), as KubeProfileSpawner's defaults
#: https://jupyter-docker-stacks.readthedocs.io/en/latest/using/common.html#user-related-configurations
DEFAULT_UID = 1000
DEFAULT_GID = 100
DEFAULT_IMAGE_TEMPLATE = "shipyard/{environment}:latest"

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


@dataclass(frozen=True)
class PodSettings:
    """What the cluster decides about every Shipyard pod: the value :class:`KubePlacement` gives.

    The services' builders take settings that extend it with their workload's
    own (``ManifestSettings`` of the deployer, ``JobSettings`` of the
    scheduler), built by :meth:`KubePlacement.settings`.
    """

    namespace: str
    image_template: str = DEFAULT_IMAGE_TEMPLATE
    uid: int = DEFAULT_UID
    gid: int = DEFAULT_GID
    #: the pods' ``fsGroup`` (the group of mounted volumes); None for none
    fs_gid: int | None = DEFAULT_GID
    service_account: str | None = None
    image_pull_policy: str | None = None
    priority_class_name: str | None = None
    #: SHIPYARD_ENV_DIGEST of the image, when known (the digest of the environment's lock)
    env_digest: str | None = None
    python: str = "python"
    extra_labels: Mapping[str, str] = field(default_factory=dict)


_Settings = TypeVar("_Settings", bound=PodSettings)


class KubePlacement(LoggingConfigurable):
    """Where and as whom Shipyard runs its pods: set once, for servers, runs and models.

    The scheduler's :class:`~hub_ext.services.scheduler.executors.kubernetes.KubernetesExecutor`
    and the deployer's :class:`~hub_ext.services.deployer.kubernetes.KubernetesBackend`
    each place their pods through one of these (their ``placement``), and
    :class:`~hub_ext.spawners.kubespawner.KubeProfileSpawner` sets KubeSpawner's
    ``namespace``, ``uid``, ``gid`` and ``fs_gid`` and the profiles' images from
    its own, so one ``c.KubePlacement.image_template = ...`` in the hub's config
    configures the users' servers, the Jobs and the model servers alike. The
    hub passes its ``c.KubePlacement`` section on to the services it starts
    (:mod:`hub_ext.host.passing`); a service's own config file
    (``$SHIPYARD_SCHEDULER_CONFIG``, ``$SHIPYARD_DEPLOYER_CONFIG``) or command
    line wins over it, and ``c.KubernetesBackend.KubePlacement.namespace = ...``
    (``c.KubeProfileSpawner.KubePlacement...`` in the hub) sets one part's alone.

    The security defaults are not settings: every container runs as
    :attr:`uid`/:attr:`gid` with :data:`SECURE_CONTEXT` (the Pod Security
    Standards' "restricted" level), and no Job or model server mounts a
    service account token. User servers are KubeSpawner's pods: they get the
    same defaults as KubeSpawner traits, which an admin may still set on
    ``c.KubeProfileSpawner`` (``uid``, ``container_security_context``...), and
    their service account is KubeSpawner's own ``service_account``, not
    :attr:`service_account` (KubeSpawner mounts the token of the account it
    names unless told otherwise, which no placement setting may decide for
    the users' servers behind the admin's back).
    """

    namespace = Unicode(
        help="""
        Namespace of the users' servers, the scheduler's Jobs and the deployer's model servers.

        Defaults to the namespace the hub's or the service's own pod runs in,
        else ``default`` (as KubeSpawner's ``namespace``). The user secrets the
        Jobs and model servers read (the secrets service's ``kubernetes``
        backend, which defaults to this namespace) must be in it too. Servers:
        ``c.KubeProfileSpawner.namespace`` still wins, and KubeSpawner's
        ``enable_user_namespaces`` replaces both.

        Example::

            c.KubePlacement.namespace = "shipyard-workloads"

        .. versionadded:: 0.16
           Replaces ``c.KubernetesExecutor.namespace`` and ``c.KubernetesBackend.namespace``;
           the default of KubeProfileSpawner's ``namespace``.
        """,
    ).tag(config=True)

    @default("namespace")
    def _default_namespace(self):
        return default_namespace()

    image_template = Unicode(
        DEFAULT_IMAGE_TEMPLATE,
        help="""
        Image of each profile's environment; ``{environment}`` is the profile's ``environment``.

        Every folder ``images/<environment>`` of Shipyard builds one image, and
        every profile names its environment; this template maps the name to
        the image its pods run. Servers, Jobs and model servers all run the
        image of their profile's environment, so a job runs, and a model is
        served, on the packages its owner's server has. Pin a tag rather than
        ``latest`` in production, so every node runs the same build. A
        profile's ``kubernetes.kubespawner_override.image`` wins.

        **An empty string is honoured by the spawner only**: servers then run
        KubeSpawner's ``image`` for every profile, while Jobs and model servers
        would get no image at all. Set it for the servers alone:
        ``c.KubeProfileSpawner.KubePlacement.image_template = ""``.

        Example::

            c.KubePlacement.image_template = "registry.example.org/shipyard-{environment}:2026.11"

        .. versionadded:: 0.16
           Replaces ``c.KubernetesExecutor.image_template``,
           ``c.KubernetesBackend.image_template`` and ``c.KubeProfileSpawner.image_template``.
        """,
    ).tag(config=True)

    @validate("image_template")
    def _validate_image_template(self, proposal):
        template = proposal.value
        try:
            template.format(environment="base")
        except (KeyError, IndexError, ValueError) as e:
            raise TraitError(
                f"image_template {template!r} is not a valid template: use {{environment}} "
                f"and no other field ({e!r})"
            ) from None
        return template

    uid = Integer(
        DEFAULT_UID,
        help="""
        User id the pods' containers run as (never 0: the pods must run as non-root).

        A user's server, the notebook of a Job and the model server of a
        Deployment all run as it, so files one writes the others can read.
        Servers: ``c.KubeProfileSpawner.uid`` still wins.

        Example::

            c.KubePlacement.uid = 1001

        .. versionadded:: 0.16
           Replaces ``c.KubernetesExecutor.uid`` and ``c.KubernetesBackend.uid``;
           the default of KubeProfileSpawner's ``uid``.
        """,
    ).tag(config=True)

    gid = Integer(
        DEFAULT_GID,
        help="""
        Group id the pods' containers run as, and their ``fsGroup``.

        Mounted volumes (a user's home, the scheduler's data, a model's
        training summary) belong to this group in the pod. Servers:
        ``c.KubeProfileSpawner.gid`` and ``fs_gid`` still win.

        Example::

            c.KubePlacement.gid = 1001

        .. versionadded:: 0.16
           Replaces ``c.KubernetesExecutor.gid`` and ``c.KubernetesBackend.gid``;
           the default of KubeProfileSpawner's ``gid`` and ``fs_gid``.
        """,
    ).tag(config=True)

    service_account = Unicode(
        "",
        help="""
        Service account of the Jobs and model servers; empty for the namespace's default.

        Its token is never mounted (``automountServiceAccountToken: false``);
        the account matters for image pull secrets and admission policies.
        **Not the users' servers'**: theirs is KubeSpawner's
        ``c.KubeProfileSpawner.service_account``, whose token KubeSpawner
        mounts unless ``automount_service_account_token`` is False.

        Example::

            c.KubePlacement.service_account = "shipyard-workloads"

        .. versionadded:: 0.16
           Replaces ``c.KubernetesExecutor.service_account`` and
           ``c.KubernetesBackend.service_account``.
        """,
    ).tag(config=True)

    def settings(self, kind: type[_Settings], environment: str, **workload: Any) -> _Settings:
        """The settings of one workload's pods: this placement's, then the workload's own.

        Parameters
        ----------
        kind : type
            :class:`PodSettings` or a subclass (the service's settings).
        environment : str
            The profile's environment, for :func:`environment_digest`.
        **workload
            The values of ``kind``'s own fields.

        Returns
        -------
        PodSettings
            A ``kind``; ``fs_gid`` is :attr:`gid`.
        """
        return kind(
            namespace=self.namespace,
            image_template=self.image_template,
            uid=self.uid,
            gid=self.gid,
            fs_gid=self.gid,
            service_account=self.service_account or None,
            env_digest=environment_digest(environment),
            **workload,
        )


def shared_by(setting: str) -> str:
    """Which pods a KubePlacement ``setting`` configures, for the deprecation warnings."""
    servers = "" if setting == "service_account" else "the users' servers, "
    return f"which {servers}the scheduler's Jobs and the deployer's model servers share"


#: KubePlacement's settings under their names before 0.16, when the executor and the
#: backend each declared them: old name -> KubePlacement's name.
DEPRECATED_PLACEMENT: dict[str, str] = {
    name: name for name in ("namespace", "image_template", "uid", "gid", "service_account")
}


class KubePlaced(LoggingConfigurable):
    """A service class whose pods :class:`KubePlacement` places: its :attr:`placement`.

    The old names of the placement's settings on the class
    (``c.KubernetesExecutor.namespace``, ``KubernetesBackend(uid=...)``) keep
    working for one release with a warning: a config value moves to the
    class's own placement (``c.<Class>.KubePlacement``) unless
    ``c.KubePlacement`` sets it (then it is ignored), as KubeSpawner's
    ``_deprecated_traits``; a constructor argument sets the placement's.
    """

    placement = Instance(
        KubePlacement,
        help="The placement of the pods: a KubePlacement configured from this one's config.",
    )

    @default("placement")
    def _default_placement(self):
        return KubePlacement(parent=self)

    def __init__(self, **kwargs):
        old = {name: kwargs.pop(name) for name in list(kwargs) if name in DEPRECATED_PLACEMENT}
        super().__init__(**kwargs)
        for name, value in old.items():
            new = DEPRECATED_PLACEMENT[name]
            self._warn_deprecated(f"{type(self).__name__}({name}=...)", new)
            setattr(self.placement, new, value)

    def _warn_deprecated(self, old: str, new: str) -> None:
        warn_moved(self.log, old, f"KubePlacement.{new}, {shared_by(new)}", stacklevel=5)

    @validate("config")
    def _move_deprecated_config(self, proposal):
        config = proposal.value
        moved: Config | None = None
        for cls in type(self).mro():
            if not (isinstance(cls, type) and issubclass(cls, KubePlaced)) or cls is KubePlaced:
                continue
            if cls.__name__ not in config:
                continue
            for old, new in DEPRECATED_PLACEMENT.items():
                if old not in config[cls.__name__]:
                    continue
                if moved is None:  # the caller's config stays as it was
                    moved = copy.deepcopy(config)
                value = moved[cls.__name__].pop(old)
                self._warn_deprecated(f"{cls.__name__}.{old}", new)
                own = moved[cls.__name__].get("KubePlacement", {})
                shared = config["KubePlacement"] if "KubePlacement" in config else {}
                if new in own or new in shared:
                    self.log.warning(
                        "Ignoring the deprecated %s.%s = %r: KubePlacement.%s is set",
                        cls.__name__,
                        old,
                        value,
                        new,
                    )
                    continue
                moved[cls.__name__].setdefault("KubePlacement", Config())[new] = value
        return config if moved is None else moved


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
