"""The model server as the deployer runs it: real processes, real MLflow models, no mocks.

Two servers live for the whole module: an sklearn model with a signature and a
training summary (formats, clients, limits, drift, metrics), and a pyfunc model
from code whose ``predict`` raises on ``a == 13`` and sleeps ``b`` seconds on
``a == 99`` (batching, failures in a batch, errors). Timeout, SIGTERM and a failed
load each start one more process.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from hub_ext.runtime import drift

from .hubtools import REPO, free_port, wait_for

COLUMNS = ["a", "b", "c", "d"]

FLAKY_MODEL = """
import time

import mlflow
from mlflow.pyfunc import PythonModel


class Flaky(PythonModel):
    def predict(self, context, model_input, params=None):
        if (model_input["a"] == 13).any():
            raise ValueError("unlucky 13")
        if (model_input["a"] == 99).any():
            time.sleep(float(model_input["b"].max()))
        return (model_input["a"] * 2 + model_input["b"]).tolist()


mlflow.models.set_model(Flaky())
"""


class ModelServerProcess:
    """``python -m hub_ext.runtime.modelserver`` on a free port."""

    def __init__(self, model_dir: Path, log_path: Path, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hub_ext.runtime.modelserver",
                "--model-uri",
                str(model_dir),
                "--port",
                str(self.port),
                *args,
            ],
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def health(self) -> dict | None:
        try:
            return requests.get(self.url + "/health", timeout=5).json()
        except requests.ConnectionError:
            return None

    def wait_ready(self, timeout: float = 60) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"model server exited:\n{self.log_path.read_text()}")
            h = self.health()
            return h and h["status"] == "ready"

        wait_for(ready, timeout=timeout, interval=0.1, what="model server ready")

    def post(self, payload, content_type="application/json", **kw) -> requests.Response:
        data = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
        return requests.post(
            self.url + "/invocations",
            data=data,
            headers={"Content-Type": content_type},
            timeout=kw.pop("timeout", 30),
            **kw,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(25)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def assert_error(r: requests.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) >= {"error_code", "message"}
    assert "Traceback" not in body["message"]
    return body


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("modelserver")


@pytest.fixture(scope="module")
def training(workdir):
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = pd.DataFrame({c: rng.normal(size=2000) for c in COLUMNS})
    y = (X.a + X.b - X.c > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    model_dir = workdir / "sklearn-model"
    mlflow.sklearn.save_model(model, model_dir, signature=infer_signature(X, model.predict(X)))
    summary = workdir / "summary.json"
    summary.write_text(json.dumps(drift.summarize(X)))
    return model, X, model_dir, summary


@pytest.fixture(scope="module")
def flaky_dir(workdir) -> Path:
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    code = workdir / "flaky_model.py"
    code.write_text(FLAKY_MODEL)
    model_dir = workdir / "flaky-model"
    signature = ModelSignature(inputs=Schema([ColSpec("double", "a"), ColSpec("double", "b")]))
    mlflow.pyfunc.save_model(model_dir, python_model=str(code), signature=signature)
    return model_dir


@pytest.fixture(scope="module")
def servers(training, flaky_dir, workdir):
    """Start both module servers at once (each takes seconds to import MLflow)."""
    _, _, model_dir, summary = training
    sk = ModelServerProcess(
        model_dir, workdir / "sklearn.log", "--training-summary", str(summary), "--name", "t/sk/1"
    )
    fl = ModelServerProcess(flaky_dir, workdir / "flaky.log", "--max-batch", "64")
    try:
        sk.wait_ready()
        fl.wait_ready()
        yield sk, fl
    finally:
        sk.stop()
        fl.stop()


@pytest.fixture(scope="module")
def sk(servers) -> ModelServerProcess:
    return servers[0]


@pytest.fixture(scope="module")
def flaky(servers) -> ModelServerProcess:
    return servers[1]


def test_health_and_ping(sk):
    h = sk.health()
    assert h["status"] == "ready" and h["name"] == "t/sk/1"
    assert requests.get(sk.url + "/ping").status_code == 200
    assert requests.get(sk.url + "/version").text


def test_every_input_format_predicts_like_the_model(sk, training):
    model, X, _, _ = training
    rows = X.iloc[:5]
    expected = model.predict(rows).tolist()
    records = rows.to_dict(orient="records")
    payloads = [
        {"dataframe_split": rows.to_dict(orient="split")},
        {"dataframe_split": {"columns": COLUMNS, "data": rows.values.tolist()}},
        # columns in another order, and the same through MLflow's own parsing
        {
            "dataframe_split": {
                "columns": COLUMNS[::-1],
                "data": rows[COLUMNS[::-1]].values.tolist(),
            }
        },
        {"dataframe_records": records},
        {"instances": records},
        {"inputs": records},
        {"inputs": {c: rows[c].tolist() for c in COLUMNS}},
        {"dataframe_records": records, "params": {}},
    ]
    for payload in payloads:
        r = sk.post(payload)
        assert r.status_code == 200, (payload, r.text)
        assert r.json() == {"predictions": expected}, payload
    r = sk.post(rows.to_csv(index=False), content_type="text/csv")
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": expected}
    # integers in double columns are converted, as MLflow does
    r = sk.post({"dataframe_records": [{"a": 1, "b": 2, "c": 0, "d": 1}]})
    assert r.json() == {
        "predictions": model.predict(pd.DataFrame([[1.0, 2.0, 0.0, 1.0]], columns=COLUMNS)).tolist()
    }


def test_mlflow_scoring_client(sk, training):
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    model, X, _, _ = training
    client = ScoringServerClient("127.0.0.1", sk.port)
    client.wait_server_ready(timeout=10)
    result = client.invoke(X.iloc[:7])
    assert result["predictions"] == model.predict(X.iloc[:7]).tolist()


def test_malformed_and_wrong_inputs(sk):
    body = assert_error(sk.post(b'{"dataframe_split": '), 400)
    assert body["error_code"] == "BAD_REQUEST"
    body = assert_error(
        sk.post({"dataframe_split": {"columns": ["a", "b", "x"], "data": [[1, 2, 3]]}}), 400
    )
    for col in COLUMNS:
        assert f"{col} (double)" in body["message"]
    body = assert_error(sk.post({"dataframe_records": [{"a": "x", "b": 1, "c": 1, "d": 1}]}), 400)
    assert "a (double)" in body["message"]
    assert_error(sk.post({"nonsense": []}), 400)
    assert_error(sk.post([1, 2]), 400)
    assert_error(sk.post(b"a,b\n1,2\n", content_type="text/csv"), 400)


def test_unsupported_content_types(sk, training):
    _, X, _, _ = training
    assert_error(sk.post(b"hello", content_type="text/plain"), 415)
    assert_error(sk.post(pickle.dumps(X.iloc[:1]), content_type="application/octet-stream"), 415)
    assert_error(sk.post(b"{}", content_type="application/json; charset=latin-1"), 415)


def _raw_request(port: int, head: bytes, body_parts, timeout: float = 10) -> tuple[bytes, float]:
    """Send ``head`` and as much of the body as the server takes; return its answer."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        try:
            for part in body_parts:
                s.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        try:
            while chunk := s.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer and b"}" in answer:
                    break
        except ConnectionResetError:
            pass
    return answer, time.monotonic() - t0


def test_body_limit_on_content_length_answers_before_reading(sk):
    head = (
        f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {50 * 1024 * 1024}\r\n\r\n"
    ).encode()
    # only 64 KiB of the announced 50 MB is ever sent
    answer, elapsed = _raw_request(sk.port, head, [b"x" * 65536])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"error_code"' in answer
    assert elapsed < 3


def test_body_limit_while_streaming(sk):
    head = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"x" * (1024 * 1024)
    parts = (b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(12))
    answer, _ = _raw_request(sk.port, head, parts)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_predict_error_is_500_json(flaky):
    body = assert_error(flaky.post({"dataframe_records": [{"a": 13.0, "b": 1.0}]}), 500)
    assert body["error_code"] == "MODEL_ERROR"
    assert body["error_class"] == "ValueError"
    assert "unlucky 13" in body["message"]


def _burst(server, payloads, slow_first=None):
    with concurrent.futures.ThreadPoolExecutor(len(payloads) + 1) as pool:
        slow = None
        if slow_first is not None:
            slow = pool.submit(server.post, slow_first)
            time.sleep(0.15)  # the slow predict runs; everything below queues behind it
        results = list(pool.map(server.post, payloads))
        return results, slow.result() if slow else None


def _metric(server, name: str) -> float:
    text = requests.get(server.url + "/metrics").text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_concurrent_requests_are_batched_and_answered_each(flaky):
    count0, sum0 = (
        _metric(flaky, "shipyard_model_batch_rows_count"),
        _metric(flaky, "shipyard_model_batch_rows_sum"),
    )
    payloads = [{"dataframe_records": [{"a": float(i + 20), "b": 0.5}]} for i in range(30)]
    # the slow predict (1.5 s) holds the model while all 30 arrive, even on a busy machine
    results, slow = _burst(
        flaky, payloads, slow_first={"dataframe_records": [{"a": 99.0, "b": 1.5}]}
    )
    assert slow.status_code == 200 and slow.json() == {"predictions": [199.5]}
    for i, r in enumerate(results):
        assert r.status_code == 200, r.text
        assert r.json() == {"predictions": [(i + 20) * 2 + 0.5]}
    batches = _metric(flaky, "shipyard_model_batch_rows_count") - count0
    rows = _metric(flaky, "shipyard_model_batch_rows_sum") - sum0
    assert rows == 31
    assert batches <= 5, f"31 requests took {batches} predict calls"


def test_one_bad_request_does_not_fail_its_batch(flaky):
    payloads = [{"dataframe_records": [{"a": float(i + 20), "b": 1.0}]} for i in range(20)]
    payloads[5] = {"dataframe_records": [{"a": 13.0, "b": 1.0}]}  # predict raises
    payloads[9] = {"dataframe_split": {"columns": ["a", "zz"], "data": [[1.0, 2.0]]}}  # schema
    results, _ = _burst(flaky, payloads, slow_first={"dataframe_records": [{"a": 99.0, "b": 0.4}]})
    for i, r in enumerate(results):
        if i == 5:
            assert assert_error(r, 500)["error_class"] == "ValueError"
        elif i == 9:
            assert "a (double), b (double)" in assert_error(r, 400)["message"]
        else:
            assert r.status_code == 200, r.text
            assert r.json() == {"predictions": [(i + 20) * 2 + 1.0]}


def test_stats_and_metrics(sk, flaky):
    stats = requests.get(flaky.url + "/stats").json()
    assert stats["requests"] > 0 and stats["errors"] >= 2
    assert set(stats["latency_ms"]) == {"p50", "p99"}
    assert stats["window"]["seconds"] == 60 and stats["window"]["requests"] > 0
    assert stats["drift"] == {} and stats["rows_seen"] == 0
    text = requests.get(flaky.url + "/metrics").text
    for series in (
        'shipyard_model_requests_total{code="200"}',
        'shipyard_model_requests_total{code="500"}',
        "shipyard_model_request_duration_seconds_bucket",
        "shipyard_model_batch_rows_bucket",
    ):
        assert series in text


def test_metrics_off_keeps_stats_and_serves_no_metrics(training, workdir):
    """``--metrics off``: no Prometheus series nor /metrics; /stats, drift and checks stay."""
    _, X, model_dir, summary = training
    server = ModelServerProcess(
        model_dir, workdir / "metrics-off.log", "--training-summary", str(summary),
        "--metrics", "off",
    )  # fmt: skip
    try:
        server.wait_ready()
        for start in range(0, 120, 40):
            assert server.post(
                {"dataframe_split": X.iloc[start : start + 40].to_dict(orient="split")}
            ).ok
        assert (
            server.post({"dataframe_split": {"columns": ["a"], "data": [[1.0]]}}).status_code == 400
        )
        r = requests.get(server.url + "/metrics", timeout=10)
        assert r.status_code == 404 and r.json()["error_code"] == "NOT_FOUND"
        stats = requests.get(server.url + "/stats", timeout=10).json()
        assert stats["requests"] == 4 and stats["rows_seen"] == 120
        assert stats["rows_checked"] >= 120 and set(stats["drift"]) == set(COLUMNS)
    finally:
        server.stop()


def test_drift(sk, training):
    _, X, _, _ = training
    rng = np.random.default_rng(1)
    like = pd.DataFrame({c: rng.normal(size=300) for c in COLUMNS})
    for start in range(0, 300, 50):  # training-like rows, several requests
        assert sk.post(
            {"dataframe_split": like.iloc[start : start + 50].to_dict(orient="split")}
        ).ok
    stats = requests.get(sk.url + "/stats").json()
    assert stats["rows_seen"] >= 300
    assert set(stats["drift"]) == set(COLUMNS)
    assert max(stats["drift"].values()) < 0.15, stats["drift"]
    shifted = like.assign(a=like.a + 3)
    for _ in range(10):
        assert sk.post({"dataframe_split": shifted.to_dict(orient="split")}).ok
    stats = requests.get(sk.url + "/stats").json()
    assert stats["drift"]["a"] > 1.0, stats["drift"]
    assert stats["drift"]["b"] < 0.15
    text = requests.get(sk.url + "/metrics").text
    assert 'shipyard_model_drift_psi{feature="a"}' in text


def test_drift_summary_and_psi_functions():
    rng = np.random.default_rng(2)
    df = pd.DataFrame(
        {"x": rng.normal(size=1000), "k": rng.choice(["u", "v", "w"], size=1000, p=[0.6, 0.3, 0.1])}
    )
    summary = drift.summarize(df)
    json.dumps(summary)
    assert len(summary["features"]["x"]["edges"]) == 9
    assert summary["features"]["k"]["categories"] == ["u", "v", "w"]
    tracker = drift.DriftTracker(summary)
    tracker.update(df.iloc[:50])
    assert tracker.psi() == {}  # fewer than 100 rows
    tracker.update(df.iloc[50:])
    assert all(v < 0.01 for v in tracker.psi().values())
    other = drift.DriftTracker(summary)
    other.update(pd.DataFrame({"x": rng.normal(size=500) * 3, "k": ["w"] * 500}))
    values = other.psi()
    assert values["x"] > 0.25 and values["k"] > 1


def test_timeout_answers_504_then_exits(flaky_dir, workdir):
    server = ModelServerProcess(flaky_dir, workdir / "timeout.log", "--timeout", "1")
    try:
        server.wait_ready()
        t0 = time.monotonic()
        r = server.post({"dataframe_records": [{"a": 99.0, "b": 4.0}]})
        body = assert_error(r, 504)
        assert body["error_code"] == "TIMEOUT"
        assert time.monotonic() - t0 < 3
        assert server.proc.wait(15) == 75
    finally:
        server.stop()


def test_sigterm_finishes_in_flight_request_and_exits_0(flaky_dir, workdir):
    server = ModelServerProcess(flaky_dir, workdir / "sigterm.log")
    try:
        server.wait_ready()
        result = {}
        t = threading.Thread(
            target=lambda: result.setdefault(
                "r", server.post({"dataframe_records": [{"a": 99.0, "b": 1.5}]})
            )
        )
        t.start()
        time.sleep(0.5)
        server.proc.send_signal(signal.SIGTERM)
        t.join(20)
        assert result["r"].status_code == 200
        assert result["r"].json() == {"predictions": [199.5]}
        assert server.proc.wait(20) == 0
    finally:
        server.stop()


def test_failed_load_is_reported_then_exits_nonzero(workdir):
    bad = workdir / "bad-model"
    bad.mkdir()
    (bad / "MLmodel").write_text(
        textwrap.dedent(
            """\
            flavors:
              python_function:
                loader_module: shipyard_no_such_loader
                python_version: 3.11.0
            """
        )
    )
    server = ModelServerProcess(bad, workdir / "bad.log")
    try:
        h = wait_for(
            lambda: (h := server.health()) and h["status"] == "failed" and h,
            timeout=60,
            what="failed health",
        )
        assert "shipyard_no_such_loader" in h["message"]
        assert "Traceback" not in h["message"]
        r = server.post({"dataframe_records": [{"a": 1.0}]})
        assert_error(r, 503)
        assert server.proc.wait(20) == 3
    finally:
        server.stop()


def test_imports_only_the_model_server_environment():
    """The module must run on images/model-server: no hub-side packages at import."""
    code = (
        "import sys, hub_ext.runtime.modelserver.cli, hub_ext.runtime.drift\n"
        "bad = [m for m in ('jupyterhub', 'traitlets', 'pydantic', 'sqlalchemy', 'tornado', 'mlflow')"
        " if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert out.stdout.strip() == ""


def test_a_downloaded_model_is_kept_and_restarts_load_the_copy(training, workdir):
    """A replica restarted after its source is gone (or its token expired) still serves."""
    _, _, model_dir, _ = training
    source = workdir / "remote-model"
    shutil.copytree(model_dir, source)
    cache = workdir / "version-folder" / "model"
    cache.parent.mkdir()
    uri = source.as_uri()  # not a local folder path: downloaded through MLflow
    payload = {"dataframe_split": {"columns": COLUMNS, "data": [[0.5, 1.0, 2.0, 3.0]]}}
    answers = []
    for attempt in range(2):
        server = ModelServerProcess(
            uri, workdir / f"cached-{attempt}.log", "--model-cache", str(cache)
        )
        try:
            server.wait_ready()
            r = server.post(payload)
            assert r.status_code == 200, r.text
            answers.append(r.json())
        finally:
            server.stop()
        assert (cache / "MLmodel").is_file()
        assert [p.name for p in cache.parent.iterdir()] == ["model"]  # no download left over
        shutil.rmtree(source, ignore_errors=True)  # the second start has only the copy
    assert answers[0] == answers[1]
