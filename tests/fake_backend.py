"""A test double of the deployer's backend: real loopback HTTP processes, no model.

:class:`FakeModelBackend` runs :data:`FAKE_MODEL_SERVER` (stdlib) processes that speak the
model server's protocol (``/health``, ``/invocations``, ``/stats``, graceful SIGTERM), so
the deployer, its router and the hub's proxy are all real. A deployer takes it by name
through its config file (``c.DeployerService.backend_class =
"tests.fake_backend.FakeModelBackend"``, STYLE rule 21: doubles live in tests/ and are
injected through a ``Type`` trait); :data:`tests.services.FAKE_DEPLOYER_CONFIG` does so.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import requests

from hub_ext.services.deployer.backend import Backend, DeployFailed, VersionSpec

from .hubtools import free_port

#: A model server double: predicts its tag for each row; ``error`` answers 500 to everything,
#: ``slow`` answers after 0.3 s, ``fail-after`` answers 500 once it has answered ``tag`` calls.
FAKE_MODEL_SERVER = r"""
import json, signal, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, tag, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
served = {"requests": 0, "errors": 0}

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        if self.path == "/health":
            self.reply(200, {"status": "ready"})
        elif self.path == "/stats":
            self.reply(200, {**served, "latency_ms": {"p50": 1.0, "p99": 2.0},
                             "window": {"seconds": 60, "requests": 0, "errors": 0},
                             "drift": {"x": 0.25}, "rows_seen": served["requests"]})
        else:
            self.reply(404, {"error_code": "NOT_FOUND", "message": "no"})
    def do_POST(self):
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers["Content-Type"].startswith("text/csv"):
            body = {"inputs": raw.decode().strip().splitlines()[1:]}
        else:
            body = json.loads(raw)
        served["requests"] += 1
        time.sleep(0.3 if mode == "slow" else 0.02)
        if mode == "error" or (mode == "fail-after" and served["requests"] > int(tag)):
            served["errors"] += 1
            return self.reply(500, {"error_code": "MODEL_ERROR", "message": "boom"})
        rows = len(body.get("inputs") or body.get("dataframe_split", {}).get("data") or [0])
        self.reply(200, {"predictions": [tag] * rows})

server = ThreadingHTTPServer(("127.0.0.1", port), H)
server.daemon_threads = False
def stop(*_):
    threading.Thread(target=server.shutdown).start()
signal.signal(signal.SIGTERM, stop)
server.serve_forever()
server.server_close()  # joins the requests in flight
"""


class FakeModelBackend(Backend):
    """Test double of a backend: loopback processes of :data:`FAKE_MODEL_SERVER`.

    ``model_uri`` (a ``models:/`` URI, a form the API accepts) says what the fake
    model does: ``models:/fake/<tag>`` predicts ``<tag>``, ``models:/fake-error/<tag>``
    answers 500, ``models:/fake-slow/<tag>`` answers after 0.3 s,
    ``models:/fake-fail-after/<n>`` answers 500 after its first ``n`` calls (per replica),
    ``models:/fake-broken/<tag>`` never starts.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.replicas: dict[str, list[tuple[subprocess.Popen, int]]] = {}

    def _spawn(self, spec: VersionSpec) -> tuple[subprocess.Popen, int]:
        kind, _, tag = spec.model_uri.removeprefix("models:/").partition("/")
        port = free_port()
        mode = {"fake-error": "error", "fake-slow": "slow", "fake-fail-after": "fail-after"}.get(
            kind, "ok"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", FAKE_MODEL_SERVER, str(port), tag, mode],
            start_new_session=True,
        )
        return proc, port

    async def _healthy(self, port: int) -> None:
        for _ in range(200):
            try:
                r = await asyncio.to_thread(
                    requests.get, f"http://127.0.0.1:{port}/health", timeout=1
                )
                if r.status_code == 200:
                    return
            except requests.RequestException:
                pass
            await asyncio.sleep(0.05)
        raise DeployFailed("the fake model server never became healthy")

    async def start(self, spec: VersionSpec) -> None:
        if spec.model_uri.startswith("models:/fake-broken/"):
            await asyncio.sleep(0.3)
            raise DeployFailed("could not load the model: fake-broken models never load")
        started = [self._spawn(spec) for _ in range(spec.replicas)]
        await asyncio.gather(*(self._healthy(port) for _, port in started))
        self.replicas[spec.key] = started

    def endpoints(self, key: str) -> list[str]:
        return [
            f"http://127.0.0.1:{port}"
            for proc, port in self.replicas.get(key, [])
            if proc.poll() is None
        ]

    async def scale(self, spec: VersionSpec) -> None:
        current = self.replicas.get(spec.key, [])
        if len(current) < spec.replicas:
            added = [self._spawn(spec) for _ in range(spec.replicas - len(current))]
            await asyncio.gather(*(self._healthy(port) for _, port in added))
            self.replicas[spec.key] = current + added
        else:
            self.replicas[spec.key], extra = current[: spec.replicas], current[spec.replicas :]
            await self._terminate(extra, 20)

    async def _terminate(self, replicas, grace: float) -> None:
        for proc, _ in replicas:
            proc.terminate()
        for proc, _ in replicas:
            try:
                await asyncio.to_thread(proc.wait, grace)
            except subprocess.TimeoutExpired:
                proc.kill()

    async def stop(self, key: str, grace: float = 20) -> None:
        await self._terminate(self.replicas.pop(key, []), grace)

    async def sweep(self) -> None:
        return

    async def close(self) -> None:
        return

    @property
    def gpu_count(self) -> int:
        """A machine without GPU, as LocalBackend with no ``gpu_devices`` reports it."""
        return 0
