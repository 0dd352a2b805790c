"""The Kubernetes objects of a model version: pure manifest builders.

Each function here takes one :class:`KubeVersion` (the :class:`~.backend.VersionSpec`
and the cluster's :class:`ManifestSettings`) and returns a plain dict, built
without I/O and validated against the Kubernetes schema in the tests (STYLE
rule 8, as KubeSpawner's ``objects.py`` and the scheduler's Job builder in
:mod:`hub_ext.services.scheduler.executors.kube_manifests`). The backend that
applies them is :class:`~.kubernetes.KubernetesBackend`.

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
  (:meth:`~.kubernetes.KubernetesBackend.refresh_env` applies the Secret alone:
  no rollout), revoked when the version stops.
- :func:`network_policy_manifest`: only the deployer's pods may reach the
  model servers, so nobody in the cluster bypasses its authorization.

:func:`rolled_out` and :func:`pod_failure` read the objects' status back, as
dicts, just as purely.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hub_ext.host import telemetry
from hub_ext.host.k8s import (
    PROFILE_LABEL,
    USER_LABEL,
    PodSettings,
    container_env,
    container_security_context,
    image_for,
    place_pod,
    resources,
    user_secret_env,
)
from hub_ext.host.slugs import user_slug

from .backend import MODEL_SERVER_MODULE, VersionSpec, model_server_args

VERSION_KEY_LABEL = "shipyard.io/version-key"
DEPLOYMENT_LABEL = "shipyard.io/deployment"
MODEL_VERSION_LABEL = "shipyard.io/model-version"
COMPONENT = "model-server"
#: Where the training summary is mounted, and its key in the Secret.
SUMMARY_DIR = "/etc/shipyard"
SUMMARY_KEY = "training-summary.json"
#: The only writable folder of a model server pod (read-only root filesystem).
SCRATCH_DIR = "/tmp"  # noqa: S108 - an emptyDir of the pod's own
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
class ManifestSettings(PodSettings):
    """What the cluster decides about every version's objects.

    The pods' placement (:class:`~hub_ext.host.k8s.PodSettings`, from
    :class:`~hub_ext.host.k8s.KubePlacement`), then the backend's own traits.
    """

    port: int = MODEL_PORT
    max_replicas: int = 4
    cpu_target_percent: int = 70
    #: seconds a stopping pod keeps serving while the Service drops it (preStop)
    drain_seconds: int = 5
    #: seconds the model server then has for its requests in flight after SIGTERM
    grace_seconds: int = 20
    #: seconds a pod may take to load its model before the startup probe gives up
    start_timeout: int = 300
    #: pod labels of the deployer: the only pods the NetworkPolicy admits; empty for none
    ingress_from: Mapping[str, str] = field(
        default_factory=lambda: {"app.kubernetes.io/component": "deployer"}
    )
    #: namespace of the deployer's pods, when not the models' own
    ingress_namespace: str | None = None


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
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": SCRATCH_DIR}]
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
