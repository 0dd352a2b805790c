"""Scheduled runs as Kubernetes Jobs: the executor that creates them and follows them.

The Job and its Secret come from the pure builders of :mod:`.kube_manifests`
(:func:`~.kube_manifests.job_manifest`, :func:`~.kube_manifests.env_secret_manifest`);
the pods' namespace, image, user and service account from the executor's
:class:`~hub_ext.host.k8s.KubePlacement`, which the deployer's Kubernetes backend
shares (``c.KubePlacement.*``). The executor creates the Job (and the Secret,
owned by the Job so the cluster deletes both), watches that one Job, follows
its pod's log into the run's log, and reports how the run ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
from dataclasses import dataclass

from traitlets import Dict, Integer, List

from hub_ext.host.k8s import KubePlaced, kubespawner_client

from ..models import RunStatus
from .base import (
    CellError,
    Executor,
    ExecutorError,
    ProgressCallback,
    ProgressParser,
    RunLog,
    RunReport,
    RunSpec,
    cell_error,
    describe_error,
    existing_outputs,
    papermill_cell_count,
    read_mlflow_run_id,
    read_notebook,
)
from .kube_manifests import (
    JobSettings,
    env_secret_manifest,
    job_manifest,
    job_outcome,
    secret_name,
)

# ------------------------------------------------------------ the executor


@dataclass(eq=False)
class _KubeRun:
    spec: RunSpec
    parser: ProgressParser
    cancelled: bool = False
    oom_killed: bool = False


class KubernetesExecutor(KubePlaced, Executor):
    """Runs each notebook as a Kubernetes Job built by :func:`job_manifest`.

    Select it with ``c.SchedulerService.executor_class = "kubernetes"``. It
    uses KubeSpawner's client configuration (in-cluster, else the kubeconfig).
    **Thin by design**: it creates the Job, watches that one Job and follows
    its pod's log; a service running many runs should share one list+watch
    cache per namespace (STYLE rule 9) instead of one watch per run.

    The pods' namespace, image, user and service account are its
    :attr:`placement`'s (``c.KubePlacement.*``, shared with the deployer's
    Kubernetes backend); ``c.KubernetesExecutor.namespace`` and the other old
    names still work for one release, with a deprecation warning.
    """

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
        return self.placement.settings(
            JobSettings,
            spec.profile.environment,
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
                run.spec.name, self.placement.namespace, propagation_policy="Background"
            )
        except ApiException as e:
            if e.status != 404:
                raise
