"""The deployer's front (front.py, issue 15 point 2): the process that holds the service's
port and routes model traffic outlives its control plane.

Real processes: a small control plane (a tornado app with :class:`FrontLink`, as the
deployer wires it) and the front it starts. The model traffic itself, through a real hub
and real replicas, is in test_deployer_failover.py; here: the API passed on, a control
plane killed and replaced (the front adopted, not started again), a killed front started
again on the same socket, a clean stop that closes the port, and a front without a
control plane that gives up after ``linger``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import psutil
import requests

from .hubtools import free_port, wait_for

ROOT = Path(__file__).parent.parent
CONTROL_PLANE = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from pathlib import Path
    from tornado import web
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets
    from hub_ext.services.deployer.front import FrontLink

    class NoReplicas:
        def endpoints(self, key):
            return []
        def request_headers(self, key):
            return {}

    class Echo(web.RequestHandler):
        def check_xsrf_cookie(self):
            pass
        def get(self, path):
            self.set_header("X-Echo", "1")
            self.finish({"pid": os.getpid(), "path": self.request.path,
                         "query": self.request.query})
        def delete(self, path):
            self.set_status(204)
            self.finish()
        def post(self, path):
            self.set_status(201)
            self.finish({"pid": os.getpid(), "body": self.request.body.decode()})

    SETTINGS = {
        "prefix": "/services/deployer/", "max_body_bytes": 1024**2, "max_api_body": 4 * 1024**2,
        "timeout": 5, "max_clients": 8, "queue_timeout": 1, "max_queued": 8,
        "max_discard_bytes": 4 * 1024**2, "auth_cache_seconds": 10, "auth_stale_seconds": 0,
        "groups_cache_seconds": 10,
        "breaker": {"window": 30, "min_requests": 4, "threshold": 0.5, "cooldown": 5, "probes": 2},
    }

    async def main():
        port, path, linger = int(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
        sockets = bind_sockets(0, "127.0.0.1")
        HTTPServer(web.Application([(r"(/.*)", Echo)])).add_sockets(sockets)
        hub = {"api_url": "http://127.0.0.1:9/hub/api", "token": "unused"}
        link = FrontLink(NoReplicas(), path, "127.0.0.1", port, SETTINGS, hub, linger)
        await link.open(f"http://127.0.0.1:{sockets[0].getsockname()[1]}")
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await stop.wait()
        await link.close()

    asyncio.run(main())
    """
)


class ControlPlane:
    def __init__(self, port: int, path: Path, linger: float = 60):
        self.proc = subprocess.Popen(  # noqa: S603 - the test's own script
            [sys.executable, "-c", CONTROL_PLANE, str(port), str(path), str(linger)],
            stdout=subprocess.PIPE,
            cwd=str(ROOT),
            # as the hub starts the deployer: the front must not inherit these
            env={
                **os.environ,
                "JUPYTERHUB_API_TOKEN": "front-test-token",
                "JUPYTERHUB_SERVICE_NAME": "deployer",
            },
        )
        assert self.proc.stdout.readline() == b"ready\n"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(30) == 0


def _fronts(path: Path) -> list[int]:
    return [
        p.pid
        for p in psutil.process_iter(["cmdline", "status"])
        if p.info["status"] != psutil.STATUS_ZOMBIE
        and "hub_ext.services.deployer.front" in (p.info["cmdline"] or [])
        and str(path) in (p.info["cmdline"] or [])
    ]


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def _kill_fronts(path: Path) -> None:
    for pid in _fronts(path):
        with contextlib.suppress(ProcessLookupError):
            psutil.Process(pid).kill()


def test_the_api_waits_for_the_next_control_plane_and_the_front_is_adopted(tmp_path):
    port, path = free_port(), tmp_path / "front.sock"
    url = f"http://127.0.0.1:{port}/services/deployer/"
    first = ControlPlane(port, path)
    try:
        [front] = _fronts(path)
        r = requests.get(url + "health?x=1", timeout=10)
        assert r.status_code == 200 and r.headers["X-Echo"] == "1"
        assert r.json() == {
            "pid": first.proc.pid,
            "path": "/services/deployer/health",
            "query": "x=1",
        }
        r = requests.post(url + "api/deployments", data=b'{"name": "m"}', timeout=10)
        assert r.status_code == 201 and r.json()["body"] == '{"name": "m"}'
        r = requests.delete(url + "api/deployments/m", timeout=10)
        assert r.status_code == 204 and not r.content
        environ = Path(f"/proc/{front}/environ").read_bytes()
        assert b"JUPYTERHUB_" not in environ and b"front-test-token" not in environ, (
            "the front's environment has no hub variables (its token comes over the socket)"
        )

        first.kill()
        # no control plane: model routes are the front's own (no token: its 401), at once
        r = requests.post(url + "models/alice/m/invocations", json={}, timeout=5)
        assert r.status_code == 401 and r.json()["error_code"] == "UNAUTHENTICATED"
        # an API request waits for the next control plane
        answer: dict = {}
        waiting = threading.Thread(
            target=lambda: answer.update(r=requests.get(url + "health", timeout=60))
        )
        waiting.start()
        second = ControlPlane(port, path)
        waiting.join(60)
        assert answer["r"].status_code == 200, answer["r"].text
        assert answer["r"].json()["pid"] == second.proc.pid
        assert _fronts(path) == [front], "the next control plane adopted the running front"
    finally:
        with contextlib.suppress(Exception):
            second.stop()
        first.proc.kill()
    # a clean stop: the front exits, the port closes, the Unix socket is gone
    wait_for(lambda: not _fronts(path), 15, 0.05, "the front to exit")
    assert _refused(port)
    assert not path.exists()


def test_a_killed_front_is_started_again_on_the_same_socket(tmp_path):
    # a state folder deeper than a Unix socket address allows: named through its descriptor
    state = tmp_path / ("d" * 60) / ("e" * 60)
    state.mkdir(parents=True, mode=0o700)
    port, path = free_port(), state / "front.sock"
    assert len(str(path)) > 107
    url = f"http://127.0.0.1:{port}/services/deployer/health"
    plane = ControlPlane(port, path)
    try:
        [front] = _fronts(path)
        assert path.stat().st_mode & 0o077 == 0, "only the service's account reaches it"
        psutil.Process(front).kill()
        r = requests.get(url, timeout=30)  # waits in the socket's backlog meanwhile
        assert r.status_code == 200 and r.json()["pid"] == plane.proc.pid
        wait_for(lambda: _fronts(path) not in ([], [front]), 30, 0.05, "a new front")
        assert len(_fronts(path)) == 1
    finally:
        plane.stop()
        _kill_fronts(path)
    wait_for(lambda: not _fronts(path), 15, 0.05, "the front to exit")
    assert _refused(port)


def test_a_front_without_a_control_plane_gives_up_after_linger(tmp_path):
    port, path = free_port(), tmp_path / "front.sock"
    plane = ControlPlane(port, path, linger=1)
    [front] = _fronts(path)
    plane.kill()
    try:
        wait_for(lambda: not _fronts(path), 30, 0.05, "the front to exit after linger")
    finally:
        _kill_fronts(path)
    assert not psutil.pid_exists(front) or psutil.Process(front).status() == psutil.STATUS_ZOMBIE
    assert _refused(port)
    assert not path.exists()
