"""Model versions for the tests of the deployer's backends, and a Kubernetes API double.

:func:`kube_version` is a version of :data:`OWNER`'s on one of :data:`KUBE_PROFILES`,
built with :data:`SETTINGS`, for the tests that read the Deployment, Service and Secret
the Kubernetes backend makes (the deployer's own, and the privacy and secrets tests).
:func:`fake_clients` puts :class:`FakeApi` in place of the Kubernetes client, recording
every call; :data:`READY` is a Deployment that has rolled out.
"""

from __future__ import annotations

from hub_ext.profiles.loader import parse_profiles
from hub_ext.profiles.model import Profile
from hub_ext.services.deployer.backend import VersionSpec
from hub_ext.services.deployer.kube_manifests import KubeVersion, ManifestSettings
from hub_ext.services.deployer.kubernetes import KubernetesBackend

OWNER = "Ada.Lovelace@example.org"

#: What the service hands a replica: the owner's tracking settings.
EXTRA_ENV = {
    "MLFLOW_TRACKING_URI": "http://127.0.0.1:9/services/tracking",
    "MLFLOW_TRACKING_TOKEN": "owner-token-0123",
}

SUMMARY = {"features": {"x": {"kind": "numeric", "edges": [0.0, 1.0], "proportions": [1.0]}}}

SETTINGS = ManifestSettings(
    namespace="models",
    image_template="registry.example.org/shipyard-{environment}:2026.11",
    env_digest="sha256:" + "ab" * 32,
    max_replicas=6,
    ingress_from={"app.kubernetes.io/component": "deployer"},
)

KUBE_PROFILES = parse_profiles(
    """
profiles:
  - slug: serving
    display_name: Serving
    default: true
    environment: model-server
    cpu_guarantee: 250m
    cpu_limit: 1500m
    mem_guarantee: 256Mi
    mem_limit: 1Gi
  - slug: gpu
    display_name: GPU
    environment: model-server
    mem_limit: 8Gi
    gpu: 1
    kubernetes:
      node_selector: {accelerator: nvidia-a100}
      tolerations:
        - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
      kubespawner_override:
        image: registry.example.org/custom-serving:1
        priority_class_name: models-high
  - slug: unlimited
    display_name: Unlimited
    environment: datascience
"""
).profiles


def kube_version(profile: Profile, **fields) -> KubeVersion:
    values = {
        "owner": OWNER,
        "name": "churn",
        "version": 3,
        "model_uri": "models:/ada-churn/3",
        "profile": profile,
        "replicas": 2,
        "env": EXTRA_ENV,
        "training_summary": SUMMARY,
        "timeout_seconds": 12.5,
        "max_body_bytes": 2**20,
    }
    values.update(fields)
    return KubeVersion(VersionSpec(**values), SETTINGS)


class FakeApi:
    """Records what the backend asks of one Kubernetes API group (a double for the client)."""

    def __init__(self, calls: list, deployment: dict | None = None, pods: list | None = None):
        self.calls = calls
        self.deployment = deployment or {}
        self.pods = pods or []
        self.api_client = self

    def sanitize_for_serialization(self, obj):
        return obj

    def __getattr__(self, method):
        async def call(*args, **kwargs):
            self.calls.append((method, args, kwargs))
            if method == "read_namespaced_deployment":
                return self.deployment
            if method == "list_namespaced_pod":
                return {"items": self.pods}
            return {}

        return call


def fake_clients(backend: KubernetesBackend, monkeypatch, deployment: dict, pods: list) -> list:
    calls: list = []
    core = FakeApi(calls, pods=pods)
    apps = FakeApi(calls, deployment=deployment)
    clients = {
        "Secret": (core, "secret"),
        "Service": (core, "service"),
        "Deployment": (apps, "deployment"),
        "HorizontalPodAutoscaler": (FakeApi(calls), "horizontal_pod_autoscaler"),
        "NetworkPolicy": (FakeApi(calls), "network_policy"),
    }

    async def _clients():
        return clients

    monkeypatch.setattr(backend, "_clients", _clients)
    return calls


READY = {
    "metadata": {"generation": 1, "resourceVersion": "7"},
    "status": {
        "observedGeneration": 1,
        "replicas": 2,
        "updatedReplicas": 2,
        "availableReplicas": 2,
    },
}
