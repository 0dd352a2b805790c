"""Scheduled runs as Kubernetes Jobs: pure manifest builders, then a thin executor.

:func:`job_manifest` turns one :class:`~.base.RunSpec` and the cluster's
:class:`JobSettings` into a ``batch/v1`` Job, and :func:`env_secret_manifest`
into the Secret that carries the run's extra environment (the owner's MLflow
token must not sit in the Job object, which anyone who may list Jobs can read).
Both are plain dicts built without I/O and validated against the Kubernetes
schema in the tests (STYLE rule 8, as KubeSpawner's ``objects.py``).

What a Job gets from the profile, as KubeProfileSpawner's pods do:

- the image of the profile's environment (``image_template``), unless the
  profile's ``kubernetes.kubespawner_override`` names one; of those overrides a
  Job also honours ``image_pull_policy``, ``priority_class_name`` and
  ``environment``, the rest are KubeSpawner-only;
- CPU and memory requests (guarantees) and limits, ``nvidia.com/gpu``;
- the node selector and tolerations;
- the spawner's locked-down security context (non-root, no privilege
  escalation, all capabilities dropped, RuntimeDefault seccomp), no service
  account token and no service links in the environment.

These pieces are shared with the deployer's Deployments through :mod:`hub_ext.host.k8s`.

The run itself: ``activeDeadlineSeconds`` is the timeout (the cluster kills the
pod and reports ``DeadlineExceeded``), ``backoffLimit: 0`` because retries are
the scheduler's decision, ``ttlSecondsAfterFinished`` lets the cluster delete
the finished Job. The parameters are data: a pod annotation, mounted as a file
through the downward API and read by papermill's ``-f`` (no ConfigMap to create
and clean up, no parameter in any command line). With HTML requested,
papermill runs as an init container and nbconvert as the container, so the
HTML exists only when the notebook ran to its end, as on one machine.

The snapshot is read and the outputs are written at the same paths as the
scheduler sees them: the admin mounts the scheduler's data into the pod with
``volumes``/``volume_mounts`` (a ReadWriteMany volume). The log comes from
the pod's log stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from traitlets import Dict, Integer, List, Unicode, default

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

# shared with the deployer in hub_ext.host.k8s; SECURE_CONTEXT stays importable from here
from hub_ext.host.k8s import SECURE_CONTEXT as SECURE_CONTEXT
from hub_ext.host.slugs import user_slug

from .base import (
    RESULT_FILE_ENV,
    CellError,
    Executor,
    ExecutorError,
    ProgressCallback,
    ProgressParser,
    RunLog,
    RunReport,
    RunSpec,
    RunStatus,
    cell_error,
    describe_error,
    existing_outputs,
    papermill_args,
    papermill_cell_count,
    parameters_yaml,
    read_mlflow_run_id,
    read_notebook,
)

JOB_LABEL = "shipyard.io/job"
RUN_LABEL = "shipyard.io/run"
PARAMETERS_ANNOTATION = "shipyard.io/parameters"
#: Where the parameters file is mounted in the pod.
PARAMETERS_DIR = "/etc/shipyard"
PARAMETERS_FILE = "parameters.yaml"
#: Kubernetes refuses objects whose annotations total more than 256 KiB.
MAX_PARAMETERS_BYTES = 200 * 2**10


@dataclass(frozen=True)
class JobSettings:
    """What the cluster decides about every run's Job (the executor's traits)."""

    namespace: str
    image_template: str = "shipyard/{environment}:latest"
    #: jovyan and users in the Jupyter Docker Stacks images, as KubeProfileSpawner
    uid: int = 1000
    gid: int = 100
    fs_gid: int | None = 100
    ttl_seconds_after_finished: int = 24 * 3600
    service_account: str | None = None
    image_pull_policy: str | None = None
    priority_class_name: str | None = None
    #: SHIPYARD_ENV_DIGEST of the image, when known (the digest of the environment's lock)
    env_digest: str | None = None
    volumes: tuple[Mapping[str, Any], ...] = ()
    volume_mounts: tuple[Mapping[str, Any], ...] = ()
    python: str = "python"
    extra_labels: Mapping[str, str] = field(default_factory=dict)


def run_labels(spec: RunSpec) -> dict[str, str]:
    """Labels of a run's objects: who, which job and run, which profile (all slugs)."""
    return {
        "app.kubernetes.io/managed-by": "shipyard",
        "app.kubernetes.io/component": "scheduled-run",
        USER_LABEL: user_slug(spec.owner),
        JOB_LABEL: user_slug(spec.job_id),
        RUN_LABEL: user_slug(spec.run_id),
        PROFILE_LABEL: spec.profile.slug,
    }


def secret_name(spec: RunSpec) -> str:
    return f"{spec.name}-env"


def _environment(spec: RunSpec, settings: JobSettings) -> list[dict[str, Any]]:
    profile = spec.profile
    plain = {
        "SHIPYARD_ENV": profile.environment,
        "SHIPYARD_ENV_DIGEST": settings.env_digest,
        "SHIPYARD_PROFILE": profile.slug,
        "SHIPYARD_PROFILE_JSON": json.dumps(profile.public_summary()),
        "SHIPYARD_JOB_ID": spec.job_id,
        "SHIPYARD_RUN_ID": spec.run_id,
        RESULT_FILE_ENV: str(spec.result_file),
        "PYTHONUNBUFFERED": "1",
        # MLflow's usage telemetry off unless the admin allows it (hub_ext/host/telemetry.py)
        **telemetry.environment(),
    }
    # the owner's secrets by reference to their Secret (the secrets service's kubernetes
    # backend), never by value; first, so a variable the platform sets wins
    secrets = user_secret_env(spec.owner, sorted(spec.secrets))
    return secrets + container_env(profile, plain, secret_name(spec), spec.extra_env)


def job_manifest(spec: RunSpec, settings: JobSettings) -> dict[str, Any]:
    """The ``batch/v1`` Job that runs ``spec`` once, in the profile's image and limits."""
    profile = spec.profile
    override = profile.kubernetes.kubespawner_override
    outputs = spec.output_paths()
    cwd = str(spec.cwd or spec.output_dir)
    params = parameters_yaml(spec.parameters)
    if len(params.encode()) > MAX_PARAMETERS_BYTES:
        raise ExecutorError(
            f"The parameters take {len(params.encode())} bytes as YAML; a Kubernetes run takes "
            f"at most {MAX_PARAMETERS_BYTES}. Pass large inputs as files instead."
        )
    labels = {**settings.extra_labels, **run_labels(spec)}
    context = container_security_context(settings.uid, settings.gid)
    mounts = [{"name": "shipyard-parameters", "mountPath": PARAMETERS_DIR, "readOnly": True}]
    mounts += [dict(m) for m in settings.volume_mounts]
    pull_policy = override.get("image_pull_policy", settings.image_pull_policy)

    def container(name: str, args: list[str]) -> dict[str, Any]:
        c = {
            "name": name,
            "image": image_for(profile, settings.image_template),
            "command": [settings.python, "-m", args[0]],
            "args": args[1:],
            "workingDir": cwd,
            "env": _environment(spec, settings),
            "resources": resources(profile),
            "securityContext": dict(context),
            "volumeMounts": mounts,
        }
        if pull_policy:
            c["imagePullPolicy"] = pull_policy
        return c

    papermill = container(
        "papermill",
        [
            "papermill",
            *papermill_args(
                spec.notebook, outputs["ipynb"], f"{PARAMETERS_DIR}/{PARAMETERS_FILE}", cwd
            ),
        ],
    )
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "volumes": [
            {
                "name": "shipyard-parameters",
                "downwardAPI": {
                    "items": [
                        {
                            "path": PARAMETERS_FILE,
                            "fieldRef": {
                                "fieldPath": f"metadata.annotations['{PARAMETERS_ANNOTATION}']"
                            },
                        }
                    ]
                },
            },
            *(dict(v) for v in settings.volumes),
        ],
    }
    if "html" in outputs:
        html = outputs["html"]
        pod["initContainers"] = [papermill]
        pod["containers"] = [
            container(
                "nbconvert",
                [
                    "nbconvert",
                    "--to=html",
                    f"--output-dir={html.parent}",
                    f"--output={html.stem}",
                    str(outputs["ipynb"]),
                ],
            )
        ]
    else:
        pod["containers"] = [papermill]
    if settings.fs_gid is not None:
        pod["securityContext"] = {"fsGroup": settings.fs_gid}
    place_pod(
        pod,
        profile,
        service_account=settings.service_account,
        priority_class_name=settings.priority_class_name,
    )

    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": spec.name,
            "namespace": settings.namespace,
            "labels": labels,
            # the ids as they are: labels hold slugs, which cannot be read back
            "annotations": {
                "shipyard.io/run-id": spec.run_id,
                "shipyard.io/job-id": spec.job_id,
                "shipyard.io/owner": spec.owner,
            },
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": math.ceil(spec.timeout),
            "ttlSecondsAfterFinished": settings.ttl_seconds_after_finished,
            "template": {
                "metadata": {"labels": labels, "annotations": {PARAMETERS_ANNOTATION: params}},
                "spec": pod,
            },
        },
    }


def env_secret_manifest(spec: RunSpec, settings: JobSettings) -> dict[str, Any] | None:
    """The Secret holding ``spec.extra_env`` for the Job's ``secretKeyRef`` s; None if empty."""
    if not spec.extra_env:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": secret_name(spec),
            "namespace": settings.namespace,
            "labels": {**settings.extra_labels, **run_labels(spec)},
        },
        "stringData": dict(spec.extra_env),
    }


def job_outcome(status: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """``(condition type, reason)`` of a finished Job's status dict, None while it runs."""
    for condition in (status or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return condition["type"], condition.get("reason") or ""
    return None


# ------------------------------------------------------------ the executor


@dataclass(eq=False)
class _KubeRun:
    spec: RunSpec
    parser: ProgressParser
    cancelled: bool = False
    oom_killed: bool = False


class KubernetesExecutor(Executor):
    """Runs each notebook as a Kubernetes Job built by :func:`job_manifest`.

    Select it with ``c.SchedulerService.executor_class = "kubernetes"``. It
    uses KubeSpawner's client configuration (in-cluster, else the kubeconfig).
    **Thin by design**: it creates the Job, watches that one Job and follows
    its pod's log; a service running many runs should share one list+watch
    cache per namespace (STYLE rule 9) instead of one watch per run.
    """

    namespace = Unicode(
        help="""
        Namespace of the runs' Jobs.

        Defaults to the namespace the scheduler's own pod runs in, else ``default``.

        Example::

            c.KubernetesExecutor.namespace = "shipyard-jobs"

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    @default("namespace")
    def _default_namespace(self):
        return default_namespace()

    image_template = Unicode(
        "shipyard/{environment}:latest",
        help="""
        Image of each profile's environment; ``{environment}`` is the profile's ``environment``.

        Keep it equal to ``c.KubeProfileSpawner.image_template`` so a job runs
        in the image its owner's server runs in. A profile's
        ``kubernetes.kubespawner_override.image`` wins.

        Example::

            c.KubernetesExecutor.image_template = "registry.example.org/shipyard-{environment}:2026.11"

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    uid = Integer(
        1000,
        help="""
        User id the notebook runs as in the pod (never 0: the pod must run as non-root).

        Example::

            c.KubernetesExecutor.uid = 1001

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    gid = Integer(
        100,
        help="""
        Group id the notebook runs as in the pod, and the group of mounted volumes.

        Example::

            c.KubernetesExecutor.gid = 1001

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    ttl_seconds_after_finished = Integer(
        24 * 3600,
        help="""
        Seconds the cluster keeps a finished Job (and its pod's log) before deleting it.

        The scheduler has already copied the log and outputs by then.

        Example::

            c.KubernetesExecutor.ttl_seconds_after_finished = 3600

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    service_account = Unicode(
        "",
        help="""
        Service account of the runs' pods; empty for the namespace's default.

        Its token is never mounted (``automountServiceAccountToken: false``);
        the account matters for image pull secrets and admission policies.

        Example::

            c.KubernetesExecutor.service_account = "shipyard-jobs"

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    volumes = List(
        Dict(),
        help="""
        Volumes of every run's pod, as in a pod spec.

        The pod reads the snapshot and writes the outputs at the paths the
        scheduler uses, so mount the scheduler's data volume (ReadWriteMany) here
        and in ``volume_mounts`` at the same path.

        Example::

            c.KubernetesExecutor.volumes = [
                {"name": "data", "persistentVolumeClaim": {"claimName": "shipyard-data"}}
            ]

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    volume_mounts = List(
        Dict(),
        help="""
        Volume mounts of every run's containers, as in a container spec.

        Example::

            c.KubernetesExecutor.volume_mounts = [{"name": "data", "mountPath": "/srv/shipyard"}]

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    max_log_bytes = Integer(
        50 * 2**20,
        help="""
        Largest log kept per run; what a notebook prints beyond it is dropped.

        Example::

            c.KubernetesExecutor.max_log_bytes = 200 * 1024 * 1024

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._runs: dict[str, _KubeRun] = {}

    def settings_for(self, spec: RunSpec) -> JobSettings:
        return JobSettings(
            **pod_settings(self, spec.profile.environment),
            ttl_seconds_after_finished=self.ttl_seconds_after_finished,
            volumes=tuple(self.volumes),
            volume_mounts=tuple(self.volume_mounts),
        )

    async def _clients(self):
        shared_client = await kubespawner_client(ExecutorError, "Kubernetes runs")
        return shared_client("BatchV1Api"), shared_client("CoreV1Api")

    async def execute(self, spec: RunSpec, progress: ProgressCallback) -> RunReport:
        if spec.run_id in self._runs:
            raise ExecutorError(f"Run {spec.run_id} is already running here.")
        settings = self.settings_for(spec)
        job = job_manifest(spec, settings)
        secret = env_secret_manifest(spec, settings)
        try:
            notebook = json.loads(spec.notebook.read_bytes())
        except (OSError, ValueError) as e:
            raise ExecutorError(f"Cannot read the snapshot {spec.notebook}: {e}") from None
        run = _KubeRun(spec, ProgressParser(papermill_cell_count(notebook, bool(spec.parameters))))
        # on the shared volume: the pod writes into it as uid/gid, which the admin's
        # volume must allow (fsGroup, or a folder writable by the group)
        spec.output_dir.mkdir(parents=True, exist_ok=True)
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        batch, core = await self._clients()
        ns = settings.namespace
        self._runs[spec.run_id] = run
        follower = None
        try:
            if secret:
                await core.create_namespaced_secret(ns, secret)
            created = await batch.create_namespaced_job(ns, job)
            if secret:  # deleted with the Job, by the garbage collector
                owner = {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": spec.name,
                    "uid": created.metadata.uid,
                }
                await core.patch_namespaced_secret(
                    secret_name(spec), ns, {"metadata": {"ownerReferences": [owner]}}
                )
            if run.cancelled:  # cancelled while the Job was being created
                await batch.delete_namespaced_job(spec.name, ns, propagation_policy="Background")
            follower = asyncio.create_task(self._follow_log(run, core, ns, progress))
            outcome = await self._wait(run, batch, ns)
            await self._check_oom(run, core, ns)
        except asyncio.CancelledError:
            # the service is stopping: leave no run behind that nobody watches
            with contextlib.suppress(Exception):
                await batch.delete_namespaced_job(spec.name, ns, propagation_policy="Background")
            raise
        finally:
            self._runs.pop(spec.run_id, None)
            if follower is not None:
                with contextlib.suppress(asyncio.TimeoutError, Exception):
                    await asyncio.wait_for(follower, 10)
        return self._report(run, outcome, settings)

    async def _wait(self, run: _KubeRun, batch, ns: str) -> tuple[str, str] | None:
        """The Job's outcome; None when it is gone (cancelled, or deleted by someone)."""
        from kubernetes_asyncio import watch
        from kubernetes_asyncio.client.exceptions import ApiException

        name = run.spec.name
        serialize = batch.api_client.sanitize_for_serialization
        while not run.cancelled:
            # read, then watch from that version: nothing is missed in between, and a
            # Job deleted before the watch started is noticed
            try:
                job = await batch.read_namespaced_job_status(name, ns)
            except ApiException as e:
                if e.status == 404:
                    return None
                raise
            outcome = job_outcome(serialize(job.status))
            if outcome:
                return outcome
            try:
                async with watch.Watch() as w:
                    async for event in w.stream(
                        batch.list_namespaced_job,
                        ns,
                        field_selector=f"metadata.name={name}",
                        resource_version=job.metadata.resource_version,
                        timeout_seconds=60,
                    ):
                        if event["type"] == "DELETED":
                            return None
                        outcome = job_outcome(serialize(event["object"].status))
                        if outcome:
                            return outcome
            except ApiException as e:
                if e.status != 410:  # 410 Gone: the version expired; read again
                    raise
        return None

    async def _follow_log(self, run: _KubeRun, core, ns: str, progress: ProgressCallback) -> None:
        """Copy the papermill container's log to the run's log, reporting cells as they start."""
        selector = f"job-name={run.spec.name}"
        while True:
            pods = await core.list_namespaced_pod(ns, label_selector=selector)
            pod = pods.items[0] if pods.items else None
            statuses = []
            if pod is not None:
                statuses = (pod.status.init_container_statuses or []) + (
                    pod.status.container_statuses or []
                )
            if any(
                s.name == "papermill" and s.state and (s.state.running or s.state.terminated)
                for s in statuses
            ):
                break
            if pod is not None and pod.status.phase in ("Failed", "Succeeded"):
                return
            await asyncio.sleep(1)
        response = await core.read_namespaced_pod_log(
            pod.metadata.name, ns, container="papermill", follow=True, _preload_content=False
        )
        found: list[tuple[int, int]] = []

        def on_line(line: str) -> None:
            event = run.parser.feed(line)
            if event:
                found.append(event)

        log = RunLog(run.spec.log_path, self.max_log_bytes, run.spec.secrets)
        log.on_line = on_line
        try:
            async for chunk in response.content.iter_any():
                log.write(chunk)
                while found:
                    event = found.pop(0)
                    try:
                        result = progress(*event)
                        if inspect.isawaitable(result):
                            await result
                    except Exception:
                        self.log.exception("Progress callback failed for cell %d of %d", *event)
        finally:
            log.close()
            response.release()

    async def _check_oom(self, run: _KubeRun, core, ns: str) -> None:
        pods = await core.list_namespaced_pod(ns, label_selector=f"job-name={run.spec.name}")
        for pod in pods.items:
            for status in (pod.status.init_container_statuses or []) + (
                pod.status.container_statuses or []
            ):
                terminated = status.state and status.state.terminated
                if terminated and terminated.reason == "OOMKilled":
                    run.oom_killed = True

    def _report(
        self, run: _KubeRun, outcome: tuple[str, str] | None, settings: JobSettings
    ) -> RunReport:
        spec = run.spec
        outputs = existing_outputs(spec.output_paths())
        common = {
            "outputs": outputs,
            "env_digest": settings.env_digest,
            "mlflow_run_id": read_mlflow_run_id(spec.result_file),
            "log_path": spec.log_path,
        }
        if run.cancelled or outcome is None:
            return RunReport(RunStatus.CANCELLED, "Cancelled while running.", **common)
        kind, reason = outcome
        if kind == "Complete":
            return RunReport(RunStatus.SUCCEEDED, **common)
        if reason == "DeadlineExceeded":
            return RunReport(
                RunStatus.TIMED_OUT,
                f"Stopped after the job's timeout of {spec.timeout:g} seconds.",
                **common,
            )
        notebook = read_notebook(outputs["ipynb"]) if "ipynb" in outputs else None
        error = cell_error(notebook) if notebook is not None else None
        if error is not None:
            return RunReport(RunStatus.FAILED, describe_error(error), error, **common)
        if run.oom_killed:
            text = "Killed for using more than the profile's memory limit (OOMKilled)."
            error = CellError(run.parser.last, None, "DeadKernelError", text)
            return RunReport(RunStatus.FAILED, text, error, **common)
        return RunReport(
            RunStatus.FAILED,
            f"The Job failed ({reason or 'no reason given'}); see the log.",
            **common,
        )

    async def cancel(self, run_id: str) -> None:
        run = self._runs.get(run_id)
        if run is None or run.cancelled:
            return
        run.cancelled = True
        batch, _ = await self._clients()
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            await batch.delete_namespaced_job(
                run.spec.name, self.namespace, propagation_policy="Background"
            )
        except ApiException as e:
            if e.status != 404:
                raise
