"""Model versions on Kubernetes: pure manifest builders, then a thin backend.

Each function here takes one :class:`KubeVersion` (the :class:`~.backend.VersionSpec`
and the cluster's :class:`ManifestSettings`) and returns a plain dict, built
without I/O and validated against the Kubernetes schema in the tests (STYLE
rule 8, as KubeSpawner's ``objects.py`` and the scheduler's Job builder):

- :func:`deployment_manifest`: an ``apps/v1`` Deployment of model server
  pods. The image of the profile's environment, its resources (GPU
  included), node selector and tolerations, as the scheduler's Jobs get them
  (:func:`hub_ext.host.k8s.image_for`, :func:`~hub_ext.host.k8s.resources` and
  :func:`~hub_ext.host.k8s.place_pod`); the spawner's locked-down security context (non-root, no
  privilege escalation, all capabilities dropped, RuntimeDefault seccomp) plus
  a read-only root filesystem, with an ``emptyDir`` at ``/tmp`` as the only
  writable place (and ``HOME``); startup, readiness and liveness probes on
  ``GET /health``; a rolling update that never takes a ready pod away before
  its successor is ready (``maxUnavailable: 0``); and a graceful drain: the
  ``preStop`` sleep lets the Service drop the pod before the model server gets
  SIGTERM and finishes its requests, within ``terminationGracePeriodSeconds``.
  The preStop ``sleep`` action needs Kubernetes 1.30 or newer; it needs no
  ``sleep`` binary in the image.
- :func:`service_manifest`: a ClusterIP Service the deployer routes to.
- :func:`hpa_manifest`: an ``autoscaling/v2`` HorizontalPodAutoscaler on CPU,
  from ``replicas`` up to ``max_replicas`` (None for a profile without CPU to
  measure).
- :func:`secret_manifest`: the owner's tracking token and the training summary
  (mounted as a file only the pod's user reads). A token in the Deployment
  would be readable by anyone who may list Deployments. Every pod start reads
  the model through the tracking server, so the token lives as long as the
  version: short-lived, renewed by the deployer at half its life
  (:meth:`KubernetesBackend.refresh_env` applies the Secret alone: no
  rollout), revoked when the version stops.
- :func:`network_policy_manifest`: only the deployer's pods may reach the
  model servers, so nobody in the cluster bypasses its authorization.

:class:`KubernetesBackend` applies them with server-side apply through
kubernetes_asyncio and follows the rollout. **It has not been run against a
live cluster here** (none runs on these machines); what it does is small on
purpose: apply, watch one Deployment until it is rolled out or a pod reports a
failure, delete. Restarts are the Deployment controller's, routing is the
Service's; a deployer that runs many versions should share one list+watch
cache of Deployments (STYLE rule 9) instead of one watch per start.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from traitlets import Dict, Integer, Unicode, default

from hub_ext.host import telemetry
from hub_ext.host.k8s import (
    PROFILE_LABEL,
    USER_LABEL,
    container_env,
    container_security_context,
    default_namespace,
    image_for,
    kubespawner_client,
    place_pod,
    pod_settings,
    resources,
    user_secret_env,
)
from hub_ext.host.slugs import user_slug

from .backend import MODEL_SERVER_MODULE, Backend, DeployFailed, VersionSpec, model_server_args

VERSION_KEY_LABEL = "shipyard.io/version-key"
DEPLOYMENT_LABEL = "shipyard.io/deployment"
MODEL_VERSION_LABEL = "shipyard.io/model-version"
COMPONENT = "model-server"
#: Where the training summary is mounted, and its key in the Secret.
SUMMARY_DIR = "/etc/shipyard"
SUMMARY_KEY = "training-summary.json"
#: The only writable folder of a model server pod (read-only root filesystem).
SCRATCH_DIR = "/tmp"  # noqa: S108 - an emptyDir of the pod's own
FIELD_MANAGER = "shipyard-deployer"
#: The model server's port in its pod (the image's EXPOSE) and the Service's.
MODEL_PORT = 8080
#: Kubernetes object names: a DNS-1035 label (Services need a leading letter).
NAME_MAX_LENGTH = 63
#: Container states after which a pod will not become ready without a change.
_STUCK = {
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
}


@dataclass(frozen=True)
class ManifestSettings:
    """What the cluster decides about every version's objects (the backend's traits)."""

    namespace: str
    image_template: str = "shipyard/{environment}:latest"
    #: the model server image's user and group (images/model-server/Dockerfile)
    uid: int = 1000
    gid: int = 100
    fs_gid: int | None = 100
    port: int = MODEL_PORT
    max_replicas: int = 4
    cpu_target_percent: int = 70
    #: seconds a stopping pod keeps serving while the Service drops it (preStop)
    drain_seconds: int = 5
    #: seconds the model server then has for its requests in flight after SIGTERM
    grace_seconds: int = 20
    #: seconds a pod may take to load its model before the startup probe gives up
    start_timeout: int = 300
    service_account: str | None = None
    image_pull_policy: str | None = None
    priority_class_name: str | None = None
    #: SHIPYARD_ENV_DIGEST of the image, when known (the digest of the environment's lock)
    env_digest: str | None = None
    python: str = "python"
    #: pod labels of the deployer: the only pods the NetworkPolicy admits; empty for none
    ingress_from: Mapping[str, str] = field(
        default_factory=lambda: {"app.kubernetes.io/component": "deployer"}
    )
    #: namespace of the deployer's pods, when not the models' own
    ingress_namespace: str | None = None
    extra_labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class KubeVersion:
    """One version as the cluster runs it: what every builder here takes."""

    spec: VersionSpec
    settings: ManifestSettings

    @property
    def name(self) -> str:
        return object_name(self.spec.key)

    @property
    def url(self) -> str:
        """Where the deployer reaches the version: its Service."""
        return f"http://{self.name}.{self.settings.namespace}.svc:{self.settings.port}"


def object_name(key: str) -> str:
    """The name of a version's objects: ``model-<key>``, a DNS label for any key.

    Keys may start with a digit (a username's slug), which a Service name may
    not; one past the 63 characters keeps its prefix and gets a hash of the
    whole key, so two keys never share a name.
    """
    name = f"model-{key}"
    if len(name) <= NAME_MAX_LENGTH:
        return name
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    room = NAME_MAX_LENGTH - len("model-") - len(digest) - 1
    return f"model-{key[:room].rstrip('-')}-{digest}"


def labels(kv: KubeVersion) -> dict[str, str]:
    """Labels of a version's objects and pods: who, which deployment and version (slugs)."""
    spec = kv.spec
    return {
        **kv.settings.extra_labels,
        "app.kubernetes.io/name": "shipyard-model",
        "app.kubernetes.io/instance": kv.name,
        "app.kubernetes.io/component": COMPONENT,
        "app.kubernetes.io/managed-by": "shipyard",
        USER_LABEL: user_slug(spec.owner),
        PROFILE_LABEL: spec.profile.slug,
        DEPLOYMENT_LABEL: spec.name,
        MODEL_VERSION_LABEL: str(spec.version),
        VERSION_KEY_LABEL: spec.key,
    }


def selector(kv: KubeVersion) -> dict[str, str]:
    return {VERSION_KEY_LABEL: kv.spec.key}


def _metadata(kv: KubeVersion) -> dict[str, Any]:
    return {"name": kv.name, "namespace": kv.settings.namespace, "labels": labels(kv)}


def _environment(kv: KubeVersion) -> list[dict[str, Any]]:
    profile = kv.spec.profile
    plain = {
        "HOME": SCRATCH_DIR,
        "TMPDIR": SCRATCH_DIR,
        "PYTHONUNBUFFERED": "1",
        "SHIPYARD_ENV": profile.environment,
        "SHIPYARD_ENV_DIGEST": kv.settings.env_digest,
        "SHIPYARD_PROFILE": profile.slug,
        # MLflow's usage telemetry off unless the admin allows it (hub_ext/host/telemetry.py)
        **telemetry.environment(),
    }
    # the owner's secrets by reference to their Secret (the secrets service's kubernetes
    # backend), never by value; first, so a variable the platform sets wins
    secrets = user_secret_env(kv.spec.owner, sorted(kv.spec.secrets))
    return secrets + container_env(profile, plain, kv.name, kv.spec.env)


def deployment_manifest(kv: KubeVersion) -> dict[str, Any]:
    """The ``apps/v1`` Deployment of the version's model server pods."""
    spec, settings = kv.spec, kv.settings
    profile = spec.profile
    override = profile.kubernetes.kubespawner_override
    # the pod's own address; the NetworkPolicy admits the deployer
    args = model_server_args(spec, "0.0.0.0", settings.port)  # noqa: S104
    mounts = [{"name": "tmp", "mountPath": SCRATCH_DIR}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    if spec.training_summary is not None:
        args += ["--training-summary", f"{SUMMARY_DIR}/{SUMMARY_KEY}"]
        mounts.append({"name": "training-summary", "mountPath": SUMMARY_DIR, "readOnly": True})
        # the pod's user reads it through fsGroup; nobody else in the pod has a reason to
        mode = 0o440 if settings.fs_gid is not None else 0o444
        volumes.append(
            {
                "name": "training-summary",
                "secret": {
                    "secretName": kv.name,
                    "items": [{"key": SUMMARY_KEY, "path": SUMMARY_KEY, "mode": mode}],
                },
            }
        )

    def health(**timing: int) -> dict[str, Any]:  # a fresh dict each: no shared objects
        return {"httpGet": {"path": "/health", "port": "http"}, **timing}

    container: dict[str, Any] = {
        "name": COMPONENT,
        "image": image_for(profile, settings.image_template),
        "command": [settings.python, "-m", MODEL_SERVER_MODULE],
        "args": args,
        "workingDir": SCRATCH_DIR,
        "env": _environment(kv),
        "ports": [{"name": "http", "containerPort": settings.port, "protocol": "TCP"}],
        "resources": resources(profile),
        "securityContext": {
            **container_security_context(settings.uid, settings.gid),
            "readOnlyRootFilesystem": True,
        },
        # loading may take long: liveness only starts once the model has loaded
        "startupProbe": health(
            periodSeconds=2,
            timeoutSeconds=3,
            failureThreshold=max(1, math.ceil(settings.start_timeout / 2)),
        ),
        "readinessProbe": health(periodSeconds=5, timeoutSeconds=3, failureThreshold=2),
        "livenessProbe": health(periodSeconds=10, timeoutSeconds=5, failureThreshold=3),
        "lifecycle": {"preStop": {"sleep": {"seconds": settings.drain_seconds}}},
        # the last lines of a crashed server become the reason its owner sees
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    pull_policy = override.get("image_pull_policy", settings.image_pull_policy)
    if pull_policy:
        container["imagePullPolicy"] = pull_policy
    pod_context: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": settings.uid,
        "runAsGroup": settings.gid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if settings.fs_gid is not None:
        pod_context["fsGroup"] = settings.fs_gid
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_context,
        "terminationGracePeriodSeconds": settings.drain_seconds + settings.grace_seconds + 5,
        "containers": [container],
        "volumes": volumes,
        # replicas on different nodes where the cluster can: one node's loss is not an outage
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "labelSelector": {"matchLabels": selector(kv)},
                            "topologyKey": "kubernetes.io/hostname",
                        },
                    }
                ]
            }
        },
    }
    place_pod(
        pod,
        profile,
        service_account=settings.service_account,
        priority_class_name=settings.priority_class_name,
    )
    metadata = _metadata(kv)
    # what labels cannot hold (they are slugs)
    metadata["annotations"] = {
        "shipyard.io/owner": spec.owner,
        "shipyard.io/model-uri": spec.model_uri,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": spec.replicas,
            "revisionHistoryLimit": 2,
            "selector": {"matchLabels": selector(kv)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {"metadata": {"labels": labels(kv)}, "spec": pod},
        },
    }


def service_manifest(kv: KubeVersion) -> dict[str, Any]:
    """The ClusterIP Service in front of the version's ready pods."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(kv),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(kv),
            "ports": [
                {"name": "http", "port": kv.settings.port, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def hpa_manifest(kv: KubeVersion) -> dict[str, Any] | None:
    """The autoscaler: ``replicas`` at least, ``max_replicas`` at most, on CPU.

    None when the profile sets no CPU guarantee or limit: utilisation is a
    share of the pods' CPU request, which they then do not have.
    """
    profile = kv.spec.profile
    if not (profile.cpu_guarantee or profile.cpu_limit):
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(kv),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": kv.name},
            "minReplicas": kv.spec.replicas,
            "maxReplicas": max(kv.settings.max_replicas, kv.spec.replicas),
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": kv.settings.cpu_target_percent,
                        },
                    },
                }
            ],
        },
    }


def secret_manifest(kv: KubeVersion) -> dict[str, Any] | None:
    """The Secret of the version's extra environment and training summary; None if both empty."""
    data = dict(kv.spec.env)
    if kv.spec.training_summary is not None:
        data[SUMMARY_KEY] = json.dumps(kv.spec.training_summary)
    if not data:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _metadata(kv),
        "stringData": data,
    }


def network_policy_manifest(kv: KubeVersion) -> dict[str, Any] | None:
    """Only the deployer's pods reach the model servers; None when no labels are set."""
    settings = kv.settings
    if not settings.ingress_from:
        return None
    peer: dict[str, Any] = {"podSelector": {"matchLabels": dict(settings.ingress_from)}}
    if settings.ingress_namespace:
        peer["namespaceSelector"] = {
            "matchLabels": {"kubernetes.io/metadata.name": settings.ingress_namespace}
        }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(kv),
        "spec": {
            "podSelector": {"matchLabels": selector(kv)},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [peer], "ports": [{"port": settings.port, "protocol": "TCP"}]}],
        },
    }


def manifests(kv: KubeVersion) -> list[dict[str, Any]]:
    """Every object of a version, in the order they are applied."""
    built = [
        secret_manifest(kv),
        deployment_manifest(kv),
        service_manifest(kv),
        hpa_manifest(kv),
        network_policy_manifest(kv),
    ]
    return [m for m in built if m is not None]


def rolled_out(deployment: Mapping[str, Any], replicas: int) -> bool:
    """True when a Deployment (as a dict) runs ``replicas`` ready pods of its latest template."""
    status = deployment.get("status") or {}
    generation = (deployment.get("metadata") or {}).get("generation") or 0
    return (
        (status.get("observedGeneration") or 0) >= generation
        and (status.get("updatedReplicas") or 0) >= replicas
        and (status.get("availableReplicas") or 0) >= replicas
        and (status.get("replicas") or 0) == (status.get("updatedReplicas") or 0)
    )


def pod_failure(pod: Mapping[str, Any]) -> str | None:
    """Why a pod (as a dict) will not become ready without a change, or None.

    A model that fails to load makes its server exit non-zero: the container
    ends in ``CrashLoopBackOff``, and its last lines are the termination
    message (``FallbackToLogsOnError``).
    """
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (status.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason not in _STUCK:
            continue
        last = (status.get("lastState") or {}).get("terminated") or {}
        if last.get("message"):
            return f"The model server exited with status {last.get('exitCode')}:\n{last['message']}"
        return f"{reason}: {waiting.get('message') or 'no message'}"
    return None


# ------------------------------------------------------------ the backend


class KubernetesBackend(Backend):
    """Runs each version as a Deployment, a Service and an autoscaler built above.

    Select it with ``c.DeployerService.backend_class = "kubernetes"``. It uses
    KubeSpawner's client configuration (in-cluster, else the kubeconfig).
    **Not run against a live cluster in Shipyard's tests** (the manifests are
    validated against the official schema; this class only applies them).
    Replicas survive a deployer restart: :meth:`sweep` finds the versions that
    are rolled out and routes to them again. The ``grace`` of :meth:`stop` is
    the pods' ``terminationGracePeriodSeconds`` (:attr:`drain_seconds` plus
    :attr:`grace_seconds`), fixed when they were created.
    """

    namespace = Unicode(
        help="""
        Namespace of the versions' Deployments, Services and autoscalers.

        Defaults to the namespace the deployer's own pod runs in, else ``default``.

        Example::

            c.KubernetesBackend.namespace = "shipyard-models"

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    @default("namespace")
    def _default_namespace(self):
        return default_namespace()

    image_template = Unicode(
        "shipyard/{environment}:latest",
        help="""
        Image of each profile's environment; ``{environment}`` is the profile's ``environment``.

        Keep it equal to ``c.KubeProfileSpawner.image_template`` and the
        scheduler's, so a model is served on the packages it was trained with.
        A profile's ``kubernetes.kubespawner_override.image`` wins.

        Example::

            c.KubernetesBackend.image_template = "registry.example.org/shipyard-{environment}:2026.11"

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    uid = Integer(
        1000,
        help="""
        User id the model server runs as in the pod (never 0: the pod must run as non-root).

        Example::

            c.KubernetesBackend.uid = 1001

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    gid = Integer(
        100,
        help="""
        Group id the model server runs as, and the group that may read the training summary.

        Example::

            c.KubernetesBackend.gid = 1001

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    max_replicas = Integer(
        4,
        min=1,
        help="""
        Most replicas the autoscaler may run of one version (never fewer than asked for).

        The autoscaler adds replicas while their CPU use is above
        ``cpu_target_percent`` of their request. **Only honoured by the
        Kubernetes backend**; the local one runs exactly ``replicas``.

        Example::

            c.KubernetesBackend.max_replicas = 10

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    cpu_target_percent = Integer(
        70,
        min=1,
        help="""
        Average CPU use, in percent of the pods' request, the autoscaler keeps replicas at.

        Example::

            c.KubernetesBackend.cpu_target_percent = 50

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    drain_seconds = Integer(
        5,
        min=0,
        help="""
        Seconds a stopping pod keeps serving before its SIGTERM (the ``preStop`` sleep).

        Endpoints leave Services asynchronously; without this pause a request
        routed just before could meet a closed port.

        Example::

            c.KubernetesBackend.drain_seconds = 10

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    grace_seconds = Integer(
        20,
        min=0,
        help="""
        Seconds a model server has after SIGTERM to finish its requests before it is killed.

        Example::

            c.KubernetesBackend.grace_seconds = 60

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    start_timeout = Integer(
        300,
        min=1,
        help="""
        Seconds a version may take to roll out (pull the image, load the model) before it fails.

        Example::

            c.KubernetesBackend.start_timeout = 900

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    service_account = Unicode(
        "",
        help="""
        Service account of the model pods; empty for the namespace's default.

        Its token is never mounted (``automountServiceAccountToken: false``);
        the account matters for image pull secrets and admission policies.

        Example::

            c.KubernetesBackend.service_account = "shipyard-models"

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    deployer_pod_labels = Dict(
        {"app.kubernetes.io/component": "deployer"},
        help="""
        Labels of the deployer's pods: the only pods a NetworkPolicy lets reach model servers.

        Empty creates no NetworkPolicy (the cluster's own policies decide). The
        policy is only enforced where the cluster's network plugin enforces
        NetworkPolicies.

        Example::

            c.KubernetesBackend.deployer_pod_labels = {"hub.jupyter.org/network-access-deployer": "true"}

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    deployer_namespace = Unicode(
        "",
        help="""
        Namespace of the deployer's pods, when it is not ``namespace``.

        Example::

            c.KubernetesBackend.deployer_namespace = "jupyterhub"

        .. versionadded:: 0.4
        """,
    ).tag(config=True)

    #: Pods read the model at every start (no copy outlives a pod): the version's
    #: tracking token stays valid while it runs, renewed by the deployer in its Secret.
    keeps_credentials = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._ready: dict[str, str] = {}
        #: the spec each running version was last applied with (its Secret's source)
        self._specs: dict[str, VersionSpec] = {}

    @property
    def start_seconds(self) -> float:
        return float(self.start_timeout)

    def settings(self, spec: VersionSpec) -> ManifestSettings:
        return ManifestSettings(
            **pod_settings(self, spec.profile.environment),
            max_replicas=self.max_replicas,
            cpu_target_percent=self.cpu_target_percent,
            drain_seconds=self.drain_seconds,
            grace_seconds=self.grace_seconds,
            start_timeout=self.start_timeout,
            ingress_from=dict(self.deployer_pod_labels),
            ingress_namespace=self.deployer_namespace or None,
        )

    async def _clients(self) -> dict[str, Any]:
        shared_client = await kubespawner_client(DeployFailed, "Kubernetes deployments")
        return {
            "Secret": (shared_client("CoreV1Api"), "secret"),
            "Service": (shared_client("CoreV1Api"), "service"),
            "Deployment": (shared_client("AppsV1Api"), "deployment"),
            "HorizontalPodAutoscaler": (
                shared_client("AutoscalingV2Api"),
                "horizontal_pod_autoscaler",
            ),
            "NetworkPolicy": (shared_client("NetworkingV1Api"), "network_policy"),
        }

    async def _apply(self, kv: KubeVersion) -> None:
        """Server-side apply of every object: creates or updates, whoever made it before."""
        clients = await self._clients()
        for manifest in manifests(kv):
            api, kind = clients[manifest["kind"]]
            await getattr(api, f"patch_namespaced_{kind}")(
                kv.name,
                kv.settings.namespace,
                manifest,
                field_manager=FIELD_MANAGER,
                force=True,
                _content_type="application/apply-patch+yaml",
            )

    async def _delete(self, name: str, namespace: str) -> None:
        from kubernetes_asyncio.client.exceptions import ApiException

        clients = await self._clients()
        # the autoscaler first: it would scale the Deployment back up
        for kind in ("HorizontalPodAutoscaler", "Deployment", "Service", "NetworkPolicy", "Secret"):
            api, method = clients[kind]
            try:
                await getattr(api, f"delete_namespaced_{method}")(
                    name, namespace, propagation_policy="Background"
                )
            except ApiException as e:
                if e.status != 404:
                    raise

    async def _wait_rolled_out(self, kv: KubeVersion) -> None:
        """Until the Deployment is rolled out; DeployFailed when a pod is stuck or time is up."""
        from kubernetes_asyncio import watch

        clients = await self._clients()
        apps, _ = clients["Deployment"]
        core, _ = clients["Service"]
        serialize = apps.api_client.sanitize_for_serialization
        ns, name = kv.settings.namespace, kv.name
        loop = asyncio.get_running_loop()
        deadline = loop.time() + kv.settings.start_timeout
        label_selector = f"{VERSION_KEY_LABEL}={kv.spec.key}"
        while True:
            deployment = serialize(await apps.read_namespaced_deployment(name, ns))
            if rolled_out(deployment, kv.spec.replicas):
                return
            pods = serialize(await core.list_namespaced_pod(ns, label_selector=label_selector))
            for pod in pods.get("items") or []:
                reason = pod_failure(pod)
                if reason:
                    raise DeployFailed(reason)
            left = deadline - loop.time()
            if left <= 0:
                conditions = (deployment.get("status") or {}).get("conditions") or []
                detail = "; ".join(c.get("message", "") for c in conditions if c.get("message"))
                raise DeployFailed(
                    f"The version was not ready after {kv.settings.start_timeout} seconds"
                    + (f": {detail}" if detail else ".")
                )
            # wait for the Deployment to change (or a few seconds, to look at the pods again)
            async with watch.Watch() as w:
                async for event in w.stream(
                    apps.list_namespaced_deployment,
                    ns,
                    field_selector=f"metadata.name={name}",
                    resource_version=deployment["metadata"].get("resourceVersion"),
                    timeout_seconds=max(1, min(5, int(left))),
                ):
                    if rolled_out(serialize(event["object"]), kv.spec.replicas):
                        return

    async def start(self, spec: VersionSpec) -> None:
        kv = KubeVersion(spec, self.settings(spec))
        try:
            await self._apply(kv)
            await self._wait_rolled_out(kv)
        except DeployFailed:
            await self._delete(kv.name, kv.settings.namespace)
            raise
        except Exception as e:
            self.log.exception("Deploying %s failed", spec.display_name)
            with contextlib.suppress(Exception):
                await self._delete(kv.name, kv.settings.namespace)
            raise DeployFailed(f"Kubernetes refused the version: {e}") from None
        self._ready[spec.key] = kv.url
        self._specs[spec.key] = spec

    def endpoints(self, key: str) -> list[str]:
        url = self._ready.get(key)
        return [url] if url else []

    async def scale(self, spec: VersionSpec) -> None:
        """Apply again with the new count: the autoscaler's minimum and the Deployment's replicas.

        Raises
        ------
        DeployFailed
            The new replicas did not become ready in time; the ones that were
            ready keep serving (``maxUnavailable: 0``).
        """
        kv = KubeVersion(spec, self.settings(spec))
        self._specs[spec.key] = spec
        await self._apply(kv)
        await self._wait_rolled_out(kv)
        self._ready[spec.key] = kv.url

    async def refresh_env(self, key: str, env: Mapping[str, str]) -> None:
        """Apply the version's Secret again with ``env``: pods that start later read it.

        Only the Secret changes (the Deployment names the same keys), so nothing
        rolls out; a running pod keeps the environment it started with.
        """
        spec = self._specs.get(key)
        if spec is None:
            return
        spec = replace(spec, env=dict(env))
        manifest = secret_manifest(KubeVersion(spec, self.settings(spec)))
        if manifest is None:
            return
        api, kind = (await self._clients())["Secret"]
        await getattr(api, f"patch_namespaced_{kind}")(
            manifest["metadata"]["name"],
            manifest["metadata"]["namespace"],
            manifest,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
        )
        self._specs[key] = spec

    async def stop(self, key: str, grace: float = 20) -> None:
        self._ready.pop(key, None)
        self._specs.pop(key, None)
        await self._delete(object_name(key), self.namespace)

    async def sweep(self) -> None:
        """Route again to the versions rolled out before this deployer started.

        Objects of versions the service no longer wants are removed by its
        :meth:`stop` calls: only its database knows which those are.
        """
        clients = await self._clients()
        apps, _ = clients["Deployment"]
        found = await apps.list_namespaced_deployment(
            self.namespace,
            label_selector=f"app.kubernetes.io/component={COMPONENT},"
            "app.kubernetes.io/managed-by=shipyard",
        )
        for item in apps.api_client.sanitize_for_serialization(found).get("items") or []:
            meta = item.get("metadata") or {}
            key = (meta.get("labels") or {}).get(VERSION_KEY_LABEL)
            replicas = (item.get("spec") or {}).get("replicas") or 1
            if key and rolled_out(item, replicas):
                self._ready[key] = f"http://{meta['name']}.{self.namespace}.svc:{MODEL_PORT}"

    async def close(self) -> None:
        """Nothing to release: the clients are KubeSpawner's shared ones; the pods run on."""
        self._ready.clear()
