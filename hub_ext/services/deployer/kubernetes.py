"""Model versions on Kubernetes: the backend that applies the manifests and follows them.

The objects come from the pure builders of :mod:`.kube_manifests`, over one
:class:`~.kube_manifests.KubeVersion`; the pods' namespace, image, user and
service account from the backend's :class:`~hub_ext.host.k8s.KubePlacement`,
which the scheduler's Kubernetes executor shares (``c.KubePlacement.*``).

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
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from traitlets import Dict, Integer, Unicode

from hub_ext.host.k8s import KubePlaced, kubespawner_client

from .backend import Backend, DeployFailed, VersionSpec
from .kube_manifests import (
    COMPONENT,
    MODEL_PORT,
    VERSION_KEY_LABEL,
    KubeVersion,
    ManifestSettings,
    manifests,
    object_name,
    pod_failure,
    rolled_out,
    secret_manifest,
)

FIELD_MANAGER = "shipyard-deployer"


class KubernetesBackend(KubePlaced, Backend):
    """Runs each version as a Deployment, a Service and an autoscaler built by :mod:`.kube_manifests`.

    Select it with ``c.DeployerService.backend_class = "kubernetes"``. It uses
    KubeSpawner's client configuration (in-cluster, else the kubeconfig).
    **Not run against a live cluster in Shipyard's tests** (the manifests are
    validated against the official schema; this class only applies them).
    Replicas survive a deployer restart: :meth:`sweep` finds the versions that
    are rolled out and routes to them again. The ``grace`` of :meth:`stop` is
    the pods' ``terminationGracePeriodSeconds`` (:attr:`drain_seconds` plus
    :attr:`grace_seconds`), fixed when they were created.

    The pods' namespace, image, user and service account are its
    :attr:`placement`'s (``c.KubePlacement.*``, shared with the scheduler's
    Kubernetes executor); ``c.KubernetesBackend.namespace`` and the other old
    names still work for one release, with a deprecation warning.
    """

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
        Namespace of the deployer's pods, when it is not the models' (``c.KubePlacement.namespace``).

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
        return self.placement.settings(
            ManifestSettings,
            spec.profile.environment,
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
        await self._delete(object_name(key), self.placement.namespace)

    async def sweep(self) -> None:
        """Route again to the versions rolled out before this deployer started.

        Objects of versions the service no longer wants are removed by its
        :meth:`stop` calls: only its database knows which those are.
        """
        clients = await self._clients()
        apps, _ = clients["Deployment"]
        found = await apps.list_namespaced_deployment(
            self.placement.namespace,
            label_selector=f"app.kubernetes.io/component={COMPONENT},"
            "app.kubernetes.io/managed-by=shipyard",
        )
        for item in apps.api_client.sanitize_for_serialization(found).get("items") or []:
            meta = item.get("metadata") or {}
            key = (meta.get("labels") or {}).get(VERSION_KEY_LABEL)
            replicas = (item.get("spec") or {}).get("replicas") or 1
            if key and rolled_out(item, replicas):
                self._ready[key] = (
                    f"http://{meta['name']}.{self.placement.namespace}.svc:{MODEL_PORT}"
                )

    async def close(self) -> None:
        """Nothing to release: the clients are KubeSpawner's shared ones; the pods run on."""
        self._ready.clear()
