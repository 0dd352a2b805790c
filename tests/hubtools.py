"""A real JupyterHub + configurable-http-proxy for tests and benchmarks.

:class:`HubProcess` starts ``python -m jupyterhub`` as a subprocess with
Shipyard's embedded config (config/jupyterhub_config.py, loaded through
tests/hub_config.py) on free ports, with its own data dir, profiles file,
system-account prefix and cgroup parent, so several hubs and the developer's
own ``shipyard up`` can run side by side. Nothing is mocked: spawns create real
accounts, cgroups and jupyter-server processes.

:meth:`HubProcess.api` is the one helper tests use for the REST API; it
checks the invariants of every JSON answer (content type, a frame-ancestors CSP) on
each call, as JupyterHub's own ``api_request`` does.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import pwd
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

REPO = Path(__file__).resolve().parent.parent
HUB_CONFIG = REPO / "tests" / "hub_config.py"
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: Where Shipyard's cgroups can be: the v1 hierarchies it writes (devices: the
#: GPU filter) and the v2 root.
HIERARCHIES = tuple(CGROUP_ROOT / h for h in ("memory", "cpu", "devices", "cpuacct")) + (
    CGROUP_ROOT,
)


#: Ports this process handed out already: never twice.
_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A loopback port nothing listens on, for a server a test starts a moment later.

    Chosen below the kernel's ephemeral range, never from it: a port from that range
    (what binding port 0 gives) can be taken as the source port of any outgoing
    connection between this choice and the server's bind, and a hub with six services
    makes many connections while it starts ("Address already in use" for a service, or
    a restarted service's port taken while it was down).
    """
    low, _ = _ephemeral_range()
    first = max(1024, low - 20000)
    # each pytest-xdist worker chooses from its own slice: two workers could otherwise
    # both choose a port in the moment before either server binds it, and a test then
    # talks to the other worker's hub
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    size = (low - first) // max(workers, 1)
    first, low = first + worker * size, first + (worker + 1) * size
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(first, low)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free loopback port between {first} and {low}")


def wait_for(predicate, timeout: float = 30, interval: float = 0.1, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


#: Tells apart the accounts and cgroups of test sessions that run at the same time: each
#: pytest-xdist worker's number, after SHIPYARD_TEST_TAG (set it in a second checkout
#: that tests beside this one). Empty for a lone session, so names stay as written.
RUN_TAG = os.environ.get("SHIPYARD_TEST_TAG", "") + os.environ.get(
    "PYTEST_XDIST_WORKER", ""
).removeprefix("gw")


def tagged(name: str) -> str:
    """``name``, a test account prefix (``sy…-``) or cgroup parent (``shipyard-test…``),
    with this session's :data:`RUN_TAG` after its fixed head.

    ``tagged("syfo-")`` is ``"sy1fo-"`` on worker ``gw1``; a derived name keeps matching:
    ``tagged("shipyard-test-fo") + "-models" == tagged("shipyard-test-fo-models")``.
    """
    for head in ("shipyard-test", "sy"):
        if name.startswith(head):
            return head + RUN_TAG + name[len(head) :]
    raise ValueError(f"{name!r} is not a test account prefix or cgroup parent")


@dataclass
class HubProcess:
    """One JupyterHub with Shipyard's embedded config, on free ports."""

    data_dir: Path
    profiles_file: Path
    account_prefix: str = field(default_factory=lambda: tagged("sytest-"))
    cgroup_parent: str = field(default_factory=lambda: tagged("shipyard-test"))
    home_root: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    spawner_class: str = "shipyard-local"
    log_path: Path | None = None
    config_file: Path = HUB_CONFIG

    def __post_init__(self):
        self.port = free_port()
        self.hub_port = free_port()
        self.proxy_api_port = free_port()
        self.tracking_port = free_port()
        self.scheduler_port = free_port()
        self.deployer_port = free_port()
        self.audit_port = free_port()
        self.secrets_port = free_port()
        self.usage_port = free_port()
        self.alerts_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_token = secrets.token_hex(32)
        self.proc: subprocess.Popen | None = None
        self.log_path = self.log_path or (self.data_dir / "hub.log")

    # ------------------------------------------------------------ lifecycle

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "SHIPYARD_DATA_DIR": str(self.data_dir),
                "SHIPYARD_BIND_URL": self.url,
                "SHIPYARD_HUB_BIND_URL": f"http://127.0.0.1:{self.hub_port}",
                "SHIPYARD_PROXY_API_URL": f"http://127.0.0.1:{self.proxy_api_port}",
                "SHIPYARD_PROFILES": str(self.profiles_file),
                "SHIPYARD_TEST_ADMIN_TOKEN": self.admin_token,
                "SHIPYARD_TEST_ACCOUNT_PREFIX": self.account_prefix,
                "SHIPYARD_TEST_CGROUP_PARENT": self.cgroup_parent,
                "SHIPYARD_TEST_SPAWNER": self.spawner_class,
                "SHIPYARD_CULL_TIMEOUT": "0",
                # MLflow only for the tests of tracking (extra_env SHIPYARD_TRACKING=1)
                "SHIPYARD_TRACKING": "0",
                "SHIPYARD_TRACKING_URL": f"http://127.0.0.1:{self.tracking_port}",
                # the scheduler only for its own tests (extra_env SHIPYARD_SCHEDULER=1)
                "SHIPYARD_SCHEDULER": "0",
                "SHIPYARD_SCHEDULER_URL": f"http://127.0.0.1:{self.scheduler_port}",
                # the deployer only for its own tests (extra_env SHIPYARD_DEPLOYER=1)
                "SHIPYARD_DEPLOYER": "0",
                "SHIPYARD_DEPLOYER_URL": f"http://127.0.0.1:{self.deployer_port}",
                # the audit service only for its own tests (extra_env SHIPYARD_AUDIT_SERVICE=1)
                "SHIPYARD_AUDIT_SERVICE": "0",
                "SHIPYARD_AUDIT_SERVICE_URL": f"http://127.0.0.1:{self.audit_port}",
                # the secrets service only for its own tests (extra_env SHIPYARD_SECRETS=1)
                "SHIPYARD_SECRETS": "0",
                "SHIPYARD_SECRETS_URL": f"http://127.0.0.1:{self.secrets_port}",
                # the usage service only for its own tests (extra_env SHIPYARD_USAGE=1)
                "SHIPYARD_USAGE": "0",
                "SHIPYARD_USAGE_URL": f"http://127.0.0.1:{self.usage_port}",
                # the alerts service only for its own tests (extra_env SHIPYARD_ALERTS=1)
                "SHIPYARD_ALERTS": "0",
                "SHIPYARD_ALERTS_URL": f"http://127.0.0.1:{self.alerts_port}",
                "PATH": os.pathsep.join(
                    [str(Path(sys.prefix) / "bin"), os.environ.get("PATH", "")]
                ),
            }
        )
        if self.home_root:
            env["SHIPYARD_TEST_HOME_ROOT"] = str(self.home_root)
            # runs write outputs as the test accounts: somewhere they can reach
            env["SHIPYARD_RUNS_DIR"] = str(self.home_root / f"runs-{self.port}")
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60) -> HubProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            # Shipyard's hub (what `shipyard up` runs): JupyterHub with its services started,
            # watched and stopped in parallel (hub_ext/hub/app.py)
            [sys.executable, "-m", "hub_ext.hub", "-f", str(self.config_file)],
            cwd=self.data_dir,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._log = log

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                return requests.get(self.url + "/hub/api/", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        try:
            wait_for(up, timeout, 0.2, "the hub to answer")
        except TimeoutError:
            raise TimeoutError(f"hub did not start:\n{self.log_tail()}") from None
        return self

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> int:
        """Stop the hub as Ctrl-C would; return its exit code."""
        if self.proc is None or self.proc.poll() is not None:
            self._kill_leftover_proxy()
            self._kill_leftover_services()
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait()
        self._log.close()
        self._kill_leftover_proxy()
        self._kill_leftover_services()
        return code

    def _kill_leftover_services(self) -> None:
        """Services outlive a hub that dies (they are adopted by the next one, as in
        production); a hub the tests end for good must not leave them running."""
        from hub_ext.host.process import is_running

        left = []
        for record in (self.data_dir / "services").glob("*.json"):
            try:
                info = json.loads(record.read_text())
                if is_running(info["pid"], info["started"]):
                    os.kill(info["pid"], signal.SIGTERM)  # a clean stop ends its children too
                    left.append((info["pid"], info["started"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        deadline = time.monotonic() + 15
        while left and time.monotonic() < deadline:
            left = [(pid, started) for pid, started in left if is_running(pid, started)]
            time.sleep(0.1)
        for pid, _ in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _kill_leftover_proxy(self) -> None:
        """A hub that fails at start leaves its proxy running: end it, or it outlives the tests."""
        try:
            pid = int((self.data_dir / "proxy.pid").read_text())
            if b"configurable-http-proxy" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            pass

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # ------------------------------------------------------------------ API

    def api(self, method: str, path: str, token: str | None = None, **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {})
        headers["Authorization"] = f"token {token or self.admin_token}"
        r = requests.request(
            method, f"{self.url}/hub/api{path}", headers=headers, timeout=60, **kwargs
        )
        if r.content and r.status_code != 204:
            assert r.headers.get("Content-Type", "").startswith("application/json"), (
                f"{method} {path}: {r.status_code} answered {r.headers.get('Content-Type')}"
            )
        assert "frame-ancestors" in r.headers.get("Content-Security-Policy", ""), (
            f"{method} {path} lacks CSP"
        )
        return r

    def create_user(self, name: str, groups: list[str] = ()) -> str:
        """Create ``name`` (in ``groups``) and return an API token of theirs."""
        r = self.api("POST", f"/users/{name}")
        assert r.status_code in (201, 409), r.text
        for group in groups:
            r = self.api("POST", f"/groups/{group}")
            assert r.status_code in (201, 409), r.text
            r = self.api("POST", f"/groups/{group}/users", json={"users": [name]})
            assert r.status_code == 200, r.text
        r = self.api("POST", f"/users/{name}/tokens", json={"note": "test", "expires_in": 3600})
        assert r.status_code == 201, r.text
        return r.json()["token"]

    def login(self, user: str, password: str) -> tuple[requests.Session, requests.Response]:
        """Log in through the hub's login form; return the session and the form's answer.

        A successful login answers 302 (not followed); a refused one 403; a one-time
        password 200 with the "choose your password" form.
        """
        session = requests.Session()
        session.get(self.url + "/hub/login", timeout=30)
        r = session.post(
            self.url + "/hub/login",
            data={"username": user, "password": password, "_xsrf": session.cookies.get("_xsrf")},
            timeout=60,
            allow_redirects=False,
        )
        return session, r

    def add_user_with_password(
        self, name: str, groups: list[str] = (), password: str | None = None
    ) -> str:
        """Create ``name`` the way an admin does, and give them a password of their own.

        As ``shipyard users add`` does: the user is created through the REST API and gets
        a one-time password (``/hub/api/shipyard/users/NAME/one-time-password``), which
        they replace at their first login. Returns the password they chose.
        """
        self.create_user(name, groups)
        r = self.api("POST", f"/shipyard/users/{name}/one-time-password", json={})
        assert r.status_code == 201, r.text
        session, form = self.login(name, r.json()["password"])
        ticket = re.search(r'name="ticket" value="([^"]+)"', form.text)
        assert form.status_code == 200 and ticket, f"no first-password form: {form.status_code}"
        password = password or f"{name}-Pw-{secrets.token_hex(6)}"
        r = session.post(
            self.url + "/hub/first-password",
            data={
                "ticket": ticket.group(1),
                "new_password": password,
                "new_password_confirmation": password,
                "_xsrf": session.cookies.get("_xsrf"),
            },
            timeout=60,
            allow_redirects=False,
        )
        assert r.status_code == 302, f"first password refused: {r.status_code}"
        return password

    def server_url(self, user: str, server: str = "") -> str:
        return f"{self.url}/user/{user}/{server + '/' if server else ''}"

    def start_server(self, user: str, server: str = "", timeout: float = 90, **options) -> dict:
        """Start a server through the REST API and wait until it is ready; return its model."""
        path = f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"
        r = self.api("POST", path, json=options)
        assert r.status_code in (201, 202), f"{r.status_code}: {r.text}"
        return self.wait_ready(user, server, timeout)

    def wait_ready(self, user: str, server: str = "", timeout: float = 90) -> dict:
        def ready():
            model = self.api("GET", f"/users/{user}").json()
            s = model["servers"].get(server)
            if s is None:
                # stopped: the spawn failed
                raise RuntimeError(
                    f"server {user}/{server} stopped while starting:\n{self.log_tail()}"
                )
            return s if s["ready"] else None

        return wait_for(ready, timeout, 0.2, f"server {user}/{server} to be ready")

    def stop_server(self, user: str, server: str = "", timeout: float = 60) -> None:
        path = f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"
        r = self.api("DELETE", path)
        assert r.status_code in (202, 204), r.text

        def stopped():
            model = self.api("GET", f"/users/{user}").json()
            return server not in model["servers"]

        wait_for(stopped, timeout, 0.2, f"server {user}/{server} to stop")

    def server_state(self, user: str, server: str = "") -> dict:
        model = self.api("GET", f"/users/{user}").json()
        return model["servers"][server]["state"]


# ------------------------------------------------------------------ clean-up


def accounts_with_prefix(prefix: str) -> list[str]:
    return [p.pw_name for p in pwd.getpwall() if p.pw_name.startswith(prefix)]


def processes_of(uid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid == uid and (entry / "status").read_text():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def cgroup_dirs(parent: str) -> list[Path]:
    """Every cgroup directory under ``parent`` (v1 controllers and v2)."""
    found = []
    for base in HIERARCHIES:
        directory = base / parent
        if directory.is_dir():
            found.extend(p for p in directory.iterdir() if p.is_dir())
    return found


#: In each ``shipyard-*`` folder a test session makes: the pid of that session's pytest.
OWNER_FILE = ".pytest-owner"


def session_folder(prefix: str) -> Path:
    """A world-traversable temporary folder ``shipyard-<prefix>…`` (pytest's tmp is 0700).

    It carries this session's pid, so another session that starts meanwhile can tell it
    from what an interrupted run left (see :func:`left_behind`).
    """
    path = Path(tempfile.mkdtemp(prefix=f"shipyard-{prefix}"))
    path.chmod(0o755)
    (path / OWNER_FILE).write_text(str(os.getpid()))
    return path


def left_behind(home: str) -> bool:
    """Whether an account homed at ``home`` is a test account of a run that no longer runs.

    Test accounts live in the ``shipyard-*`` folders of :func:`session_folder`; one whose
    folder names no live pytest (or no pytest at all) is a leftover.
    """
    temp = Path(tempfile.gettempdir())
    try:
        top = temp / Path(home).relative_to(temp).parts[0]
    except (ValueError, IndexError):
        return False
    if not top.name.startswith("shipyard-"):
        return False
    try:
        pid = int((top / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return True
    return pid != os.getpid() and not psutil.pid_exists(pid)


def remove_account(name: str) -> None:
    """Kill every process of the account ``name``, then delete it and its home."""
    from hub_ext.host.accounts import delete_account

    uid = pwd.getpwnam(name).pw_uid
    for pid in processes_of(uid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    delete_account(name)


def remove_test_accounts(prefix: str) -> None:
    for name in accounts_with_prefix(prefix):
        remove_account(name)


#: A cgroup younger than this is never taken for a leftover: it may have been made a moment
#: ago by another test session (the other xdist worker, a second checkout) and not yet
#: joined by its process.
LEFTOVER_CGROUP_AGE = 600.0


def remove_empty_cgroups(pattern: str = "shipyard-test*") -> None:
    """Remove the cgroups under parents matching ``pattern`` that hold no process.

    What an interrupted run left, once its accounts' processes are gone; a cgroup with a
    process in it (another test session's, running now) is left alone, and so is one made
    in the last :data:`LEFTOVER_CGROUP_AGE` seconds: between its creation and its process
    joining it, another session's cgroup is empty too, and removing it then failed that
    session's start with "Exception occurred in preexec_fn".
    """
    oldest = time.time() - LEFTOVER_CGROUP_AGE
    for base in HIERARCHIES:
        for parent in base.glob(pattern) if base.is_dir() else []:
            for child in [p for p in parent.iterdir() if p.is_dir()] + [parent]:
                try:
                    if child.stat().st_ctime > oldest:
                        continue
                    if not (child / "cgroup.procs").read_text().strip():
                        child.rmdir()
                except OSError:
                    continue


def remove_cgroups(parent: str) -> None:
    """Remove every cgroup under ``parent``, and the usage ledger's records of them."""
    from hub_ext.host.cgroups import detect_driver
    from hub_ext.host.local import LocalHost

    driver = detect_driver(parent)
    for directory in cgroup_dirs(parent):
        driver.remove(directory.name)
    for base in HIERARCHIES:
        try:
            (base / parent).rmdir()
        except OSError:
            pass
    # what LocalHost.launch recorded with the default ledger (tests that make their own
    # LocalHost); a hub's tests keep theirs in the hub's data dir (tests/hub_config.py)
    shutil.rmtree(Path(LocalHost().usage_dir) / parent, ignore_errors=True)


def read_json(path: Path):
    return json.loads(path.read_text())


def run_in_kernel(server_url: str, token: str, code: str, timeout: float = 60) -> list[dict]:
    """Start a kernel in a user server, run ``code`` over the websocket, return iopub messages.

    Stops at the execute reply, or when the kernel reports ``restarting`` /
    ``dead`` (e.g. killed by the OOM killer), or at ``timeout``.
    """
    import uuid
    from datetime import datetime, timezone

    import websocket

    headers = {"Authorization": f"token {token}"}
    r = requests.post(
        server_url + "api/kernels", headers=headers, json={"name": "python3"}, timeout=60
    )
    assert r.status_code == 201, r.text
    kernel_id = r.json()["id"]
    ws_url = server_url.replace("http://", "ws://") + f"api/kernels/{kernel_id}/channels"
    ws = websocket.create_connection(
        ws_url, header=[f"Authorization: token {token}"], timeout=timeout
    )
    session = uuid.uuid4().hex
    msg_id = uuid.uuid4().hex
    ws.send(
        json.dumps(
            {
                "header": {
                    "msg_id": msg_id,
                    "username": "test",
                    "session": session,
                    "msg_type": "execute_request",
                    "version": "5.3",
                    "date": datetime.now(timezone.utc).isoformat(),
                },
                "parent_header": {},
                "metadata": {},
                "content": {
                    "code": code,
                    "silent": False,
                    "store_history": False,
                    "user_expressions": {},
                    "allow_stdin": False,
                    "stop_on_error": True,
                },
                "channel": "shell",
                "buffers": [],
            }
        )
    )
    messages = []
    deadline = time.monotonic() + timeout
    replied = idle = False
    try:
        # Done when both the reply (shell channel) and the kernel's "idle" after this
        # request (iopub) came: the channels are not ordered, so output printed by the
        # code can arrive after the reply.
        while time.monotonic() < deadline and not (replied and idle):
            try:
                msg = json.loads(ws.recv())
            except websocket.WebSocketTimeoutException:
                break
            messages.append(msg)
            kind = msg.get("msg_type") or msg["header"]["msg_type"]
            mine = msg["parent_header"].get("msg_id") == msg_id
            if kind == "status" and msg["content"]["execution_state"] in ("restarting", "dead"):
                break
            if kind == "execute_reply" and mine:
                replied = True
            if kind == "status" and mine and msg["content"]["execution_state"] == "idle":
                idle = True
    finally:
        ws.close()
    return messages


def stdout_of(messages: list[dict]) -> str:
    return "".join(m["content"]["text"] for m in messages if m["header"]["msg_type"] == "stream")


@contextlib.contextmanager
def ipython_shell(root: Path, **settings) -> Iterator:
    """One real IPython shell with the extension loaded, its history and spool in ``root``.

    ``settings`` are ``ShipyardMagics`` traits (``poll_interval=0.2``). At the end the
    magics' sender is not flushed at exit (runs still waiting are not retried then).
    """
    import pytest
    from IPython.core.interactiveshell import InteractiveShell

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IPYTHONDIR", str(root / "ipython"))
        mp.setenv("SHIPYARD_SPOOL_DIR", str(root / "spool"))
        shell = InteractiveShell.instance()
        for name, value in settings.items():
            setattr(shell.config.ShipyardMagics, name, value)
        shell.run_line_magic("load_ext", "server_ext")
        yield shell
    atexit.unregister(shell.magics_manager.registry["TrackingMagics"].sender.flush)
    InteractiveShell.clear_instance()


def start_jupyter_server(
    tmp_path: Path, extra_env: dict[str, str]
) -> tuple[subprocess.Popen, str, str]:
    """A jupyter-server with the server extension, as a spawner starts one, answering.

    Home and root ``tmp_path``; none of the spawner's profile variables unless
    ``extra_env`` sets them. Returns the process (the caller ends it), its URL and token.
    """
    token = secrets.token_hex(16)
    port = free_port()
    env = dict(
        os.environ,
        JUPYTER_TOKEN=token,
        HOME=str(tmp_path),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"),
    )
    for key in (
        "SHIPYARD_PROFILE_JSON",
        "SHIPYARD_ENV",
        "MEM_LIMIT",
        "CPU_LIMIT",
        "CPU_GUARANTEE",
        "MEM_GUARANTEE",
        "CUDA_VISIBLE_DEVICES",
    ):
        env.pop(key, None)
    env.update(extra_env)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter_server",
            f"--ServerApp.port={port}",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.root_dir={tmp_path}",
            "--ServerApp.open_browser=False",
            "--allow-root",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def up():
        assert proc.poll() is None, "jupyter server exited"
        try:
            return requests.get(
                url + "/api/status", headers={"Authorization": f"token {token}"}, timeout=2
            ).ok
        except requests.RequestException:
            return False

    wait_for(up, 60, 0.2, "jupyter server")
    return proc, url, token


# ------------------------------------------------------------------ crash checks


def secret_leaks(secrets: dict[str, str], paths) -> list[str]:
    """Where any of ``secrets`` (label: value) appears in the files ``paths``.

    Returns ``"<path>:<line>: <label>"`` for each line holding one; never the value
    itself, so a failing test does not print the secret it found.
    """
    found = []
    wanted = {label: value.encode() for label, value in secrets.items() if value}
    for path in paths:
        try:
            lines = Path(path).read_bytes().splitlines()
        except OSError:
            continue
        for number, line in enumerate(lines, 1):
            found += [f"{path}:{number}: {label}" for label, v in wanted.items() if v in line]
    return found


def process_table() -> dict[int, dict]:
    """Every process: ``{pid: {"ppid", "cmd", "environ"}}`` (what ``/proc`` lets us read)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] == "Z":
            continue
        table[int(entry.name)] = {"ppid": int(fields[1]), "cmd": cmd.strip(), "environ": environ}
    return table
