"""Usage of pods on Kubernetes, read from Prometheus (hub_ext/services/usage/kubernetes.py).

The pure part: the label mapping, the PromQL and the readings of one pass's answers.
The live part: Debian's real ``prometheus`` scrapes an exporter served here that speaks
cAdvisor's and kube-state-metrics' series for two pods (alice's server, a run of bob's
holding a GPU); the usage core counts them into its database as it counts cgroups.
"""

from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hub_ext.host.usage import UsageLedger
from hub_ext.services.usage.accounting import Delta, GiB, Prices, Reading
from hub_ext.services.usage.core import UsageCore
from hub_ext.services.usage.db import make_engine, upgrade
from hub_ext.services.usage.kubernetes import (
    PrometheusPods,
    metric_label,
    pod_readings,
    pod_record,
    queries,
)
from hub_ext.services.usage.store import UsageStore

from .hubtools import free_port, wait_for
from .prometheus import PrometheusServer, metric_names, missing

NS = "shipyard"
ALICE_UID = "0a1b2c3d-0000-4000-8000-00000000a11c"
BOB_UID = "0b0b0b0b-0000-4000-8000-000000000b0b"

SERVER_LABELS = {
    "label_component": "singleuser-server",
    "label_hub_jupyter_org_username": "alice",
    "label_hub_jupyter_org_servername": "",
    "label_shipyard_io_user": "alice",
    "label_shipyard_io_profile": "small",
}
RUN_LABELS = {
    "label_app_kubernetes_io_component": "scheduled-run",
    "label_app_kubernetes_io_managed_by": "shipyard",
    "label_shipyard_io_user": "bob",
    "label_shipyard_io_job": "7",
    "label_shipyard_io_run": "42",
    "label_shipyard_io_profile": "gpu",
}
REPLICA_LABELS = {
    "label_app_kubernetes_io_component": "model-server",
    "label_shipyard_io_user": "carol",
    "label_shipyard_io_deployment": "iris",
    "label_shipyard_io_model_version": "3",
    "label_shipyard_io_profile": "cpu",
}


# ------------------------------------------------------------------ pure


def test_pod_labels_are_named_as_kube_state_metrics_names_them():
    assert metric_label("shipyard.io/user") == "label_shipyard_io_user"
    assert metric_label("app.kubernetes.io/component") == "label_app_kubernetes_io_component"
    assert metric_label("hub.jupyter.org/username") == "label_hub_jupyter_org_username"


def test_a_pod_is_labelled_as_its_process_would_be():
    def rec(labels, uid=ALICE_UID):
        return pod_record({"pod": "p", "uid": uid, **labels}, NS, 100.0, 1)

    server = rec(SERVER_LABELS)
    assert server is not None
    assert (server["id"], server["kind"], server["owner"], server["object"]) == (
        ALICE_UID.replace("-", ""),
        "server",
        "alice",
        "alice/",
    )
    assert (server["profile"], server["parent"], server["cgroup"]) == (
        "small",
        "kubernetes/shipyard",
        "p",
    )
    assert (server["gpus"], server["started"]) == (1, 100.0)
    named = rec({**SERVER_LABELS, "label_hub_jupyter_org_servername": "gpu"})
    assert named is not None and named["object"] == "alice/gpu"
    # KubeSpawner's labels alone (a spawner without Shipyard's): still alice's server
    plain = rec({"label_component": "singleuser-server", "label_hub_jupyter_org_username": "al"})
    assert plain is not None and (plain["owner"], plain["kind"], plain["profile"]) == (
        "al",
        "server",
        "",
    )
    run = rec(RUN_LABELS)
    assert run is not None and (run["kind"], run["owner"], run["object"]) == (
        "run",
        "bob",
        "job/7/run/42",
    )
    replica = rec(REPLICA_LABELS)
    assert replica is not None and (replica["kind"], replica["object"]) == (
        "replica",
        "model/carol/iris/v3",
    )
    # not Shipyard's: no owner, no kind, or no UID
    assert rec({"label_app": "postgres"}) is None
    assert rec({"label_app_kubernetes_io_component": "scheduled-run"}) is None
    assert rec({"label_shipyard_io_user": "bob"}) is None
    assert rec(SERVER_LABELS, uid="") is None


def test_the_queries_read_one_namespace_and_the_pod_level_cgroup():
    q = queries('we"ird')
    assert q["labels"] == 'kube_pod_labels{namespace="we\\"ird"}'
    assert q["cpu"] == (
        'max by (pod) (container_cpu_usage_seconds_total{namespace="we\\"ird", container="", '
        'pod!=""})'
    )
    assert q["running"] == 'kube_pod_status_phase{namespace="we\\"ird", phase="Running"} == 1'
    assert 'resource=~"cpu|memory|nvidia_com_gpu"' in q["requests"]
    read = set().union(*(metric_names(expr) for expr in queries(NS).values()))
    assert read == {
        "kube_pod_labels",
        "kube_pod_status_phase",
        "kube_pod_created",
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "kube_pod_container_resource_requests",
    }


def _vector(values: dict[str, float], **labels) -> list[dict]:
    return [{"metric": {"pod": pod, **labels}, "value": [0, str(v)]} for pod, v in values.items()]


def _answers(cpu: dict[str, float], memory: dict[str, float]) -> dict[str, list[dict]]:
    return {
        "labels": [
            {"metric": {"pod": "a", "uid": ALICE_UID, **SERVER_LABELS}, "value": [0, "1"]},
            {"metric": {"pod": "b", "uid": BOB_UID, **RUN_LABELS}, "value": [0, "1"]},
            # the same pod from a second kube-state-metrics replica
            {
                "metric": {"pod": "b", "uid": BOB_UID, "instance": "ksm-2", **RUN_LABELS},
                "value": [0, "1"],
            },  # fmt: skip
            {"metric": {"pod": "c", "uid": "c" * 32, **RUN_LABELS}, "value": [0, "1"]},
        ],
        "running": _vector({"a": 1, "b": 1}),  # c finished
        "created": _vector({"a": 1000.0, "b": 1500.0, "c": 1000.0}),
        "cpu": _vector(cpu),
        "memory": _vector(memory),
        "requests": _vector({"a": 0.5, "b": 2.0}, resource="cpu")
        + _vector({"a": 2 * GiB, "b": GiB}, resource="memory")
        + _vector({"b": 1.0}, resource="nvidia_com_gpu"),
    }


def test_measured_pods_read_cadvisor_and_the_requests_stand_in_without_it():
    sample = pod_readings(_answers({"a": 12.5, "b": 3.0}, {"a": 5 * GiB}), NS, 2000.0, False)
    assert sample.measured
    (a, ra), (b, rb) = sample.pods  # c is not running
    assert (a["owner"], a["gpus"], a["started"]) == ("alice", 0, 1000.0)
    assert (ra.at, ra.cpu_usec, ra.mem_current) == (2000.0, 12_500_000, 5 * GiB)
    assert (b["owner"], b["gpus"], b["started"]) == ("bob", 1, 1500.0)
    assert (rb.cpu_usec, rb.mem_current) == (3_000_000, None)  # no memory series: none read
    # no cAdvisor series at all: the requests for the pod's age
    sample = pod_readings(_answers({}, {}), NS, 2000.0, False)
    assert not sample.measured
    (_, ra), (_, rb) = sample.pods
    assert (ra.cpu_usec, ra.mem_current) == (round(0.5 * 1000 * 1e6), 2 * GiB)
    assert (rb.cpu_usec, rb.mem_current) == (round(2.0 * 500 * 1e6), GiB)
    # once measured, a pass without series reads nothing rather than the requests
    sample = pod_readings(_answers({}, {}), NS, 2000.0, True)
    assert sample.measured
    assert [(r.cpu_usec, r.mem_current) for _, r in sample.pods] == [(None, None)] * 2


# ------------------------------------------------------------------ live


class Exporter:
    """cAdvisor's and kube-state-metrics' series of fake pods, on a free loopback port."""

    def __init__(self):
        self.pods: dict[str, dict] = {}
        self.lock = threading.Lock()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                body = exporter.text().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Exporter:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def set(self, pod: str, **values) -> None:
        with self.lock:
            self.pods.setdefault(pod, {}).update(values)

    def drop(self, pod: str) -> None:
        with self.lock:
            del self.pods[pod]

    def text(self) -> str:
        lines = []
        with self.lock:
            for pod, v in self.pods.items():
                ids = f'namespace="{v["namespace"]}",pod="{pod}",uid="{v["uid"]}"'
                labels = ",".join(f'{k}="{x}"' for k, x in v["labels"].items())
                lines.append(f"kube_pod_labels{{{ids},{labels}}} 1")
                for phase in ("Pending", "Running", "Succeeded"):
                    up = 1 if phase == v["phase"] else 0
                    lines.append(f'kube_pod_status_phase{{{ids},phase="{phase}"}} {up}')
                lines.append(f"kube_pod_created{{{ids}}} {v['created']}")
                for resource, unit, amount in (
                    ("cpu", "core", v["cpu_request"]),
                    ("memory", "byte", v["mem_request"]),
                    ("nvidia_com_gpu", "integer", v["gpus"]),
                ):
                    if amount:
                        lines.append(
                            "kube_pod_container_resource_requests{"
                            f'{ids},container="main",node="n1",resource="{resource}",'
                            f'unit="{unit}"}} {amount}'
                        )
                cg = f'namespace="{v["namespace"]}",pod="{pod}"'
                cgroup = f'id="/kubepods/pod{v["uid"]}"'
                # the pod's cgroup (container="") and its container's, which is not read
                lines.append(f'container_cpu_usage_seconds_total{{{cg},container="",{cgroup}}} '
                             f"{v['cpu']}")  # fmt: skip
                lines.append(f'container_cpu_usage_seconds_total{{{cg},container="main"}} '
                             f"{v['cpu'] / 2}")  # fmt: skip
                lines.append(f'container_memory_working_set_bytes{{{cg},container="",{cgroup}}} '
                             f"{v['mem']}")  # fmt: skip
        return "\n".join(lines) + "\n"


_missing = missing()


@pytest.mark.skipif(bool(_missing), reason=_missing or "")
def test_pods_are_counted_from_prometheus_once_across_a_restart_and_closed_when_gone(
    tmp_path, caplog
):
    url = f"sqlite:///{tmp_path / 'usage.sqlite'}"
    upgrade(url)
    created = round(time.time()) - 3600

    def core() -> UsageCore:
        return UsageCore(
            UsageLedger(tmp_path / "ledger"),  # no cgroup parent: the pods only
            [],
            UsageStore(make_engine(url)),
            prices=Prices(),
            profile_prices={},
            currency="USD",
            idle_after=3600,
            rightsizing_days=30,
            pods=PrometheusPods(prom.url, NS),
        )

    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [],
    }
    with Exporter() as exporter:
        config["scrape_configs"] = [
            {
                "job_name": "kube",
                "honor_labels": True,
                "scrape_interval": "1s",
                "static_configs": [{"targets": [f"127.0.0.1:{exporter.port}"]}],
            }
        ]
        common = {"namespace": NS, "phase": "Running", "created": created}
        exporter.set("jupyter-alice", uid=ALICE_UID, labels=SERVER_LABELS, cpu=100.0,
                     mem=2 * GiB, cpu_request=0.5, mem_request=GiB, gpus=0, **common)  # fmt: skip
        exporter.set("run-7-42", uid=BOB_UID, labels=RUN_LABELS, cpu=50.0, mem=GiB,
                     cpu_request=2, mem_request=GiB, gpus=1, **common)  # fmt: skip
        # not counted: another namespace's, a pod without Shipyard's labels, a finished run
        exporter.set("other", uid="1" * 32, labels=SERVER_LABELS, cpu=9.0, mem=GiB,
                     cpu_request=1, mem_request=GiB, gpus=1, **{**common, "namespace": "x"})  # fmt: skip
        exporter.set("postgres", uid="2" * 32, labels={"label_app": "db"}, cpu=9.0, mem=GiB,
                     cpu_request=1, mem_request=GiB, gpus=0, **common)  # fmt: skip
        exporter.set("run-7-41", uid="3" * 32, labels=RUN_LABELS, cpu=9.0, mem=GiB,
                     cpu_request=1, mem_request=GiB, gpus=1, **{**common, "phase": "Succeeded"})  # fmt: skip
        with PrometheusServer(tmp_path / "prom", config) as prom:

            def shows(expr: str, value: float | None) -> bool:
                result = prom.query(expr)
                if value is None:
                    return not result
                return bool(result) and float(result[0]["value"][1]) == value

            alice_cpu = 'container_cpu_usage_seconds_total{pod="jupyter-alice",container=""}'
            bob_cpu = 'container_cpu_usage_seconds_total{pod="run-7-42",container=""}'
            wait_for(lambda: shows(alice_cpu, 100.0) and shows(bob_cpu, 50.0), 30, 0.2,
                     "prometheus to scrape the pods")  # fmt: skip

            first = core()
            t1 = time.time()
            counted = first.sample(now=t1)
            assert counted.cpu_seconds == pytest.approx(150.0)
            hours1 = (t1 - created) / 3600
            assert counted.gpu_hours == pytest.approx(hours1, rel=0.05)
            # the same pass again, and a later one over the same counters: no CPU twice
            assert first.sample(now=t1) == Delta()
            later = first.sample(now=t1 + 0.5)
            assert later.cpu_seconds == 0.0

            exporter.set("jupyter-alice", cpu=160.0)
            exporter.set("run-7-42", cpu=80.0)
            wait_for(lambda: shows(alice_cpu, 160.0) and shows(bob_cpu, 80.0), 30, 0.2,
                     "prometheus to scrape the new counters")  # fmt: skip

            # the service restarted: a new core on the same database
            second = core()
            t2 = time.time()
            counted = second.sample(now=t2)
            assert counted.cpu_seconds == pytest.approx(90.0)

            exporter.drop("run-7-42")
            wait_for(lambda: shows(bob_cpu, None) and shows(
                'kube_pod_labels{pod="run-7-42"}', None), 30, 0.2, "bob's pod to go")  # fmt: skip
            t3 = time.time()
            second.sample(now=t3)
            store = second.store
            assert store.ended(BOB_UID.replace("-", ""))
            assert not store.ended(ALICE_UID.replace("-", ""))
            assert store.open_instances("kubernetes/shipyard")[0]["owner"] == "alice"

            # Prometheus down: logged, nothing counted, nothing ended
            second.pods = PrometheusPods(f"http://127.0.0.1:{free_port()}", NS)
            with caplog.at_level(logging.WARNING, "shipyard.usage"):
                assert second.sample(now=t3 + 1) == Delta()
            assert "Could not read the pods' usage" in caplog.text
            assert not store.ended(ALICE_UID.replace("-", ""))

    rows = {(r.owner, r.key): r.usage for r in store.usage("object", 0, time.time() + 3600)}
    assert set(rows) == {("alice", "alice/"), ("bob", "job/7/run/42")}
    alice, bob = rows[("alice", "alice/")], rows[("bob", "job/7/run/42")]
    assert alice.cpu_seconds == pytest.approx(160.0, rel=0.05)
    assert alice.mem_gib_hours == pytest.approx(2 * (t3 - created) / 3600, rel=0.05)
    assert alice.gpu_hours == 0.0
    assert bob.cpu_seconds == pytest.approx(80.0, rel=0.05)
    assert bob.mem_gib_hours == pytest.approx((t2 - created) / 3600, rel=0.05)
    assert bob.gpu_hours == pytest.approx((t2 - created) / 3600, rel=0.05)
    kinds = {r.key: r.usage for r in store.usage("kind", 0, time.time() + 3600)}
    assert set(kinds) == {"server", "run"}
    profiles = {(r.owner, r.profile) for r in store.usage("user", 0, time.time() + 3600)}
    assert profiles == {("alice", "small"), ("bob", "gpu")}


def test_an_error_answer_is_an_error(tmp_path):
    """A Prometheus that answers but not with a vector fails the read (the pass logs it)."""

    sent: list[str | None] = []

    class Odd(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            sent.append(self.headers.get("Authorization"))
            body = b'{"status":"error","errorType":"bad_data","error":"parse error"}'
            self.send_response(400)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Odd)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        pods = PrometheusPods(f"http://127.0.0.1:{server.server_address[1]}", NS)
        with pytest.raises(RuntimeError, match="400: parse error"):
            pods.read(time.time())
        token = tmp_path / "token"
        token.write_text("s3cret\n")
        pods = PrometheusPods(f"http://127.0.0.1:{server.server_address[1]}", NS, str(token))
        with pytest.raises(RuntimeError):
            pods.read(time.time())
        assert sent == [None, "Bearer s3cret"]
    finally:
        server.shutdown()
        server.server_close()


def test_a_pod_read_without_a_cpu_series_keeps_its_instance_open(tmp_path):
    """A pass where cAdvisor had no series for a pod (cpu None) counts its time, not an end;
    a counter below the last counted still ends it (another cgroup under the name)."""
    url = f"sqlite:///{tmp_path / 'usage.sqlite'}"
    upgrade(url)
    store = UsageStore(make_engine(url))
    (rec, _), *_ = pod_readings(_answers({"a": 10.0}, {"a": GiB}), NS, 2000.0, False).pods
    first = store.count(rec, Reading(2000.0, 10_000_000, GiB, None), False)
    assert first is not None and first.cpu_seconds == 10.0
    gap = store.count(rec, Reading(2360.0, None, None, None), False)
    assert gap is not None and gap.cpu_seconds == 0.0
    assert gap.mem_gib_hours == pytest.approx(0.1)  # the last level held for 0.1 h
    assert not store.ended(rec["id"])
    assert store.count(rec, Reading(2400.0, 5_000_000, GiB, None), False) == Delta()
    assert store.ended(rec["id"])


def test_the_service_reads_pods_only_with_a_prometheus_url(tmp_path):
    from traitlets.config import Config

    from hub_ext.services.usage.app import UsageService

    config = Config()
    config.UsageService.db_url = f"sqlite:///{tmp_path / 'usage.sqlite'}"
    assert UsageService(config=config).make_core().pods is None
    config.UsageService.prometheus_url = "http://prometheus.monitoring:9090/"
    config.UsageService.kubernetes_namespace = "shipyard"
    config.UsageService.prometheus_token_file = "/run/token"
    pods = UsageService(config=config).make_core().pods
    assert pods is not None
    assert (pods.url, pods.namespace, pods.parent, pods.token_file) == (
        "http://prometheus.monitoring:9090",
        "shipyard",
        "kubernetes/shipyard",
        "/run/token",
    )
