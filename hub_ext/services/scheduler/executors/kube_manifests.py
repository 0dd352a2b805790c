"""Scheduled runs as Kubernetes Jobs: pure manifest builders.

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

These pieces are shared with the deployer's Deployments through :mod:`hub_ext.host.k8s`,
and so is the placement of the pods (namespace, image template, uid/gid, service
account: :class:`~hub_ext.host.k8s.KubePlacement`). The executor that creates the Job
and follows it is :class:`~.kubernetes.KubernetesExecutor`.

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
``volumes``/``volume_mounts`` (a ReadWriteMany volume).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
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

from .base import (
    RESULT_FILE_ENV,
    ExecutorError,
    RunSpec,
    papermill_args,
    parameters_yaml,
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
class JobSettings(PodSettings):
    """What the cluster decides about every run's Job.

    The pods' placement (:class:`~hub_ext.host.k8s.PodSettings`, from
    :class:`~hub_ext.host.k8s.KubePlacement`), then the executor's own traits.
    """

    ttl_seconds_after_finished: int = 24 * 3600
    volumes: tuple[Mapping[str, Any], ...] = ()
    volume_mounts: tuple[Mapping[str, Any], ...] = ()


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
