"""What Shipyard's pods used on Kubernetes, read from Prometheus.

On Kubernetes no cgroup of a pod's is readable from the hub and no ledger record
is written for it; the cluster's Prometheus scrapes the kubelets' cAdvisor (what
each pod's cgroup used) and kube-state-metrics (each pod's labels, requests and
phase). :class:`PrometheusPods` asks Prometheus, at each sampling pass, for the
running pods of one namespace that carry Shipyard's or KubeSpawner's labels and
turns each into what a ledger record and a cgroup reading are for a process:

- the record (:func:`pod_record`): the instance's id is the pod's UID (a server
  started again is a new pod, a new instance), its kind, owner, object and
  profile come from the pod's labels, its GPUs from its ``nvidia.com/gpu``
  requests, its start from ``kube_pod_created``;
- the reading: the pod cgroup's cumulative CPU counter
  (``container_cpu_usage_seconds_total``, the pod-level series, which keeps the
  time of restarted containers) and its working set
  (``container_memory_working_set_bytes``).

The core counts them through the same store as the ledger's readings
(:meth:`UsageStore.count_all <.store.UsageStore.count_all>`): the counter is
cumulative, so a pass over the same counters adds nothing and a restarted service
continues from the last reading it counted.

Where Prometheus holds no cAdvisor series for the namespace, a pod is charged
what it *reserves* (:func:`~.accounting.requested_usage`): its CPU request times
its age stands for its CPU counter and its memory request for its memory, so the
same counting gives the requests for its lifetime. Once cAdvisor series were
seen, the source keeps to them: a pod without a series in a pass (not scraped
yet) reads no CPU or memory that pass, its GPUs still count.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from .accounting import Reading

log = logging.getLogger("shipyard.usage")

#: kube-state-metrics' names of the pod labels Shipyard reads (``label_`` and the label
#: with every character outside ``[a-zA-Z0-9_]`` as ``_``); its
#: ``--metric-labels-allowlist`` must name them (docs/observability.md).
POD_LABELS = (
    "shipyard.io/user",
    "shipyard.io/profile",
    "shipyard.io/job",
    "shipyard.io/run",
    "shipyard.io/deployment",
    "shipyard.io/model-version",
    "app.kubernetes.io/component",
    "component",
    "hub.jupyter.org/username",
    "hub.jupyter.org/servername",
)

#: The ``app.kubernetes.io/component`` of the scheduler's and the deployer's pods, and
#: KubeSpawner's ``component`` of a server's.
_KINDS = {"scheduled-run": "run", "model-server": "replica"}
SERVER_COMPONENT = "singleuser-server"
GPU_RESOURCE = "nvidia_com_gpu"


def metric_label(name: str) -> str:
    """kube-state-metrics' name of the pod label ``name``: ``label_shipyard_io_user``."""
    return "label_" + re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def queries(namespace: str) -> dict[str, str]:
    """The PromQL instant queries of one pass over ``namespace``, by what they read.

    Every answer is a vector keyed by ``pod`` (and ``uid`` where kube-state-metrics
    gives it); the pod-level cgroup series of cAdvisor is the one with ``container=""``.
    """
    ns = f"namespace={_quote(namespace)}"
    cadvisor = f'{{{ns}, container="", pod!=""}}'
    return {
        "labels": f"kube_pod_labels{{{ns}}}",
        "running": f'kube_pod_status_phase{{{ns}, phase="Running"}} == 1',
        "created": f"kube_pod_created{{{ns}}}",
        "cpu": f"max by (pod) (container_cpu_usage_seconds_total{cadvisor})",
        "memory": f"max by (pod) (container_memory_working_set_bytes{cadvisor})",
        # each container's once, should two kube-state-metrics replicas both be scraped
        "requests": (
            f"sum by (pod, resource) (max by (pod, container, resource) "
            f"(kube_pod_container_resource_requests"
            f'{{{ns}, resource=~"cpu|memory|{GPU_RESOURCE}"}}))'
        ),
    }


def pod_record(
    labels: Mapping[str, str], namespace: str, created: float, gpus: int
) -> dict[str, Any] | None:
    """The usage record of a pod from its ``kube_pod_labels`` series; None: not Shipyard's.

    ``labels`` are the series' labels (``pod``, ``uid``, ``label_...``). The owner is
    the ``shipyard.io/user`` label, else KubeSpawner's ``hub.jupyter.org/username``
    (both are slugs: a plain username as it is, an unusual one escaped); the kind is
    ``run`` (the scheduler's pods), ``replica`` (the deployer's) or ``server``
    (KubeSpawner's ``singleuser-server``); the object is named as a process's is
    (``alice/``, ``job/<job>/run/<run>``, ``model/<owner>/<name>/v<version>``).
    """

    def label(name: str) -> str:
        return str(labels.get(metric_label(name), ""))

    uid = str(labels.get("uid", "")).replace("-", "")
    pod = str(labels.get("pod", ""))
    owner = label("shipyard.io/user") or label("hub.jupyter.org/username")
    component = label("app.kubernetes.io/component")
    kind = _KINDS.get(component)
    if kind is None and (
        label("component") == SERVER_COMPONENT or label("hub.jupyter.org/username")
    ):
        kind = "server"
    if not (uid and pod and owner and kind):
        return None
    if kind == "server":
        obj = f"{owner}/{label('hub.jupyter.org/servername')}"
    elif kind == "run":
        obj = f"job/{label('shipyard.io/job')}/run/{label('shipyard.io/run')}"
    else:
        obj = (
            f"model/{owner}/{label('shipyard.io/deployment')}/v{label('shipyard.io/model-version')}"
        )
    return {
        "id": uid[:32],
        "kind": kind,
        "owner": owner,
        "object": obj,
        "profile": label("shipyard.io/profile"),
        "parent": parent_of(namespace),
        "cgroup": pod,
        "gpus": gpus,
        "cpu_limit": None,
        "mem_limit": None,
        "started": created,
    }


def parent_of(namespace: str) -> str:
    """The ``parent`` of a namespace's instances in the store: ``kubernetes/<namespace>``."""
    return f"kubernetes/{namespace}"


@dataclass(frozen=True)
class PodSample:
    """One pass's running pods: their records and readings."""

    pods: list[tuple[dict[str, Any], Reading]]
    measured: bool


def pod_readings(
    answers: Mapping[str, list[dict[str, Any]]], namespace: str, at: float, measured: bool
) -> PodSample:
    """The running Shipyard pods in ``answers`` (:func:`queries`' results) and their readings.

    ``measured``: cAdvisor series were seen before (a pod without one reads nothing);
    else, with no cAdvisor series in ``answers``, the requests stand for the counters.
    """

    def by_pod(name: str) -> dict[str, float]:
        return {s["metric"].get("pod", ""): float(s["value"][1]) for s in answers.get(name, ())}

    cpu, memory, created = by_pod("cpu"), by_pod("memory"), by_pod("created")
    running = set(by_pod("running"))
    measured = measured or bool(cpu or memory)
    asked: dict[tuple[str, str], float] = {}
    for s in answers.get("requests", ()):
        asked[(s["metric"].get("pod", ""), s["metric"].get("resource", ""))] = float(s["value"][1])
    pods = []
    seen: set[str] = set()
    for series in answers.get("labels", ()):
        labels = series["metric"]
        pod = labels.get("pod", "")
        if pod not in running or pod in seen:  # a pod twice: two kube-state-metrics
            continue
        seen.add(pod)
        started = min(created.get(pod, at), at)
        gpus = round(asked.get((pod, GPU_RESOURCE), 0.0))
        record = pod_record(labels, namespace, started, gpus)
        if record is None:
            continue
        if measured:
            cpu_usec = round(cpu[pod] * 1e6) if pod in cpu else None
            mem = round(memory[pod]) if pod in memory else None
        else:
            cpu_usec = round(asked.get((pod, "cpu"), 0.0) * (at - started) * 1e6)
            mem = round(asked.get((pod, "memory"), 0.0))
        pods.append((record, Reading(at, cpu_usec, mem, None)))
    return PodSample(pods, measured)


class PrometheusPods:
    """The running pods of one namespace and what they used, from Prometheus' HTTP API.

    Parameters
    ----------
    url : str
        Prometheus' base URL (``http://prometheus.monitoring:9090``).
    namespace : str
        The namespace of Shipyard's pods.
    token_file : str
        A file holding a bearer token to send (read at each pass); empty: none.
    """

    def __init__(self, url: str, namespace: str, token_file: str = "", timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.namespace = namespace
        self.parent = parent_of(namespace)
        self.token_file = token_file
        self.timeout = timeout
        self.measured = False
        self.http = requests.Session()

    def headers(self) -> dict[str, str]:
        """The request headers of one pass: the bearer token, read from its file now."""
        if not self.token_file:
            return {}
        return {"Authorization": "Bearer " + Path(self.token_file).read_text().strip()}

    def query(
        self, expr: str, at: float, headers: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """An instant query's vector at ``at``; raises on an error or an odd answer."""
        if headers is None:
            headers = self.headers()
        r = self.http.get(
            f"{self.url}/api/v1/query",
            params={"query": expr, "time": f"{at:.3f}"},
            headers=headers,
            timeout=self.timeout,
        )
        try:
            body = r.json()
        except ValueError:
            raise RuntimeError(f"Prometheus answered {r.status_code} without JSON") from None
        if r.status_code != 200 or body.get("status") != "success":
            raise RuntimeError(f"Prometheus answered {r.status_code}: {body.get('error', body)}")
        data = body.get("data") or {}
        if data.get("resultType") != "vector":
            raise RuntimeError(f"Prometheus answered a {data.get('resultType')}, not a vector")
        return list(data["result"])

    def read(self, at: float) -> list[tuple[dict[str, Any], Reading]]:
        """The running pods at ``at`` and their readings; raises when Prometheus fails."""
        headers = self.headers()  # the token file once a pass, not once a query
        answers = {
            name: self.query(expr, at, headers) for name, expr in queries(self.namespace).items()
        }
        sample = pod_readings(answers, self.namespace, at, self.measured)
        self.measured = sample.measured
        return sample.pods
