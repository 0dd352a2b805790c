"""The real ``mlflow server`` behind the gateway: its auth config, command and lifetime.

MLflow runs on a free loopback port, with MLflow's basic-auth app (its permission
model) and Shipyard's authorization function (:mod:`.mlflow_auth`), so it answers
only requests that carry the gateway's secret. The secrets it needs (the gateway
secret, Flask's key, the bootstrap admin's password) are made at each start of
MLflow; the auth config that names the databases is written 0600.

**MLflow outlives its gateway.** Starting MLflow takes seconds to tens of seconds
(``mlflow server`` imports MLflow, then uvicorn imports it again, then both
databases are checked), and a gateway killed outright (kill -9, the OOM killer)
is restarted by the hub at once: so MLflow is not tied to the gateway process.
Each start writes a record, ``mlflow.json`` in the state dir (0600, as the auth
config: it holds the gateway secret), with MLflow's pid and start time (field 22
of ``/proc/<pid>/stat``, so a pid the system has given to another process since
is never taken for it), its port, a digest of its configuration and the gateway
that owns it. A gateway that starts adopts the recorded MLflow when that process
still runs with the same configuration (and waits for it to answer, should the
last gateway have died while MLflow was starting); one with another
configuration is stopped and a fresh one started.

Nothing is orphaned for good: a clean stop of the service (SIGINT or SIGTERM,
the hub's Ctrl-C) stops MLflow, and MLflow itself (:mod:`.mlflow_keeper`) stops
once no running gateway has owned it for :data:`OWNER_GRACE` seconds (a gateway
killed and not restarted, say by an operator who then stopped the hub).

Rejected: a faster start alone. Running uvicorn on MLflow's app directly would
save one import of MLflow, but the app reads its store settings from private
variables that only the ``mlflow server`` command sets, and the database checks
remain; it would still take many seconds on a loaded machine, against well
under one to adopt.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from hub_ext import __version__
from hub_ext.host import telemetry
from hub_ext.host.process import start_time, write_private

from . import mlflow_auth
from .mlflow_auth import SECRET_ENV

#: MLflow's own admin account, used by nobody: hub admins are MLflow admins
#: through the gateway. A hub user of this name is refused.
BOOTSTRAP_ADMIN = "shipyard-mlflow-admin"
AUTH_FUNCTION = "hub_ext.services.tracking.mlflow_auth:authenticate_from_gateway"
#: The record of the running MLflow, in the state dir.
RECORD = "mlflow.json"
#: Where :mod:`.mlflow_keeper` finds the record (in MLflow's environment only).
RECORD_ENV = "SHIPYARD_TRACKING_MLFLOW_RECORD"
#: Seconds MLflow keeps running without a running gateway that owns it. The hub
#: restarts a dead gateway at once; this only ends an MLflow nobody will adopt.
OWNER_GRACE = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_record(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


@dataclass
class MlflowServer:
    """Settings of one MLflow server process (see TrackingService's traits)."""

    backend_store_uri: str
    auth_db_uri: str
    artifacts_destination: str
    static_prefix: str  # "/services/tracking": MLflow serves every route under it
    state_dir: Path
    workers: int = 1
    port: int = 0
    secret: str = ""
    proc: subprocess.Popen | None = None
    pid: int = 0  # MLflow's process (its group's leader), started here or adopted
    started: str = ""  # its start time, from /proc/<pid>/stat
    adopted: bool = False
    _stale: dict | None = None  # a recorded MLflow that cannot be adopted: stopped at start

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def record_path(self) -> Path:
        return self.state_dir / RECORD

    def write_auth_config(self) -> Path:
        path = self.state_dir / "mlflow-auth.ini"
        text = (
            "[mlflow]\n"
            "default_permission = NO_PERMISSIONS\n"
            f"database_uri = {self.auth_db_uri}\n"
            f"admin_username = {BOOTSTRAP_ADMIN}\n"
            f"admin_password = {secrets.token_urlsafe(32)}\n"
            f"authorization_function = {AUTH_FUNCTION}\n"
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        path.chmod(0o600)
        return path

    def command(self) -> list[str]:
        """``mlflow server`` (under its keeper) with no setting on its command line.

        See :meth:`environment`, and :mod:`.mlflow_keeper` for the keeper.
        """
        keeper = "hub_ext.services.tracking.mlflow_keeper"
        return [sys.executable, "-m", keeper, "server", "--app-name", "basic-auth"]

    def settings(self) -> dict[str, str]:
        """MLflow's settings, the same at every start (no secret, no port)."""
        return {
            "MLFLOW_BACKEND_STORE_URI": self.backend_store_uri,
            "MLFLOW_DEFAULT_ARTIFACT_ROOT": "mlflow-artifacts:/",
            "MLFLOW_SERVE_ARTIFACTS": "true",
            "MLFLOW_ARTIFACTS_DESTINATION": self.artifacts_destination,
            "MLFLOW_HOST": "127.0.0.1",
            "MLFLOW_WORKERS": str(self.workers),
            "MLFLOW_STATIC_PREFIX": self.static_prefix,
            "MLFLOW_AUTH_CONFIG_PATH": str(self.state_dir / "mlflow-auth.ini"),
            "MLFLOW_SERVER_ENABLE_GRAPHQL_AUTH": "true",
            # MLflow's background job runner (GenAI evaluation, prompt optimisation)
            # starts dozens of worker processes; tracking does not need it
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            # MLflow's usage telemetry off unless the admin allows it
            **telemetry.environment(),
        }

    def digest(self) -> str:
        """What a running MLflow must have been started with to be adopted.

        Its settings and command, the versions of MLflow and Shipyard, and the code of
        the authorization function that runs inside it: a change to any of them
        (a new trait value, an upgrade) starts a new MLflow.
        """
        try:
            mlflow_version = metadata.version("mlflow")
        except metadata.PackageNotFoundError:
            mlflow_version = ""
        what = {
            "command": self.command(),
            "settings": self.settings(),
            "versions": [mlflow_version, __version__],
            "auth": hashlib.sha256(Path(mlflow_auth.__file__).read_bytes()).hexdigest(),
        }
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()

    def environment(self) -> dict[str, str]:
        """MLflow's whole environment, its settings included.

        Every setting goes through the environment (``mlflow server`` reads each option
        from its ``MLFLOW_*`` variable), never through the command line: every account
        of the machine reads a process's command line, and a PostgreSQL store URL holds
        its password; only the service's account (and root) reads the environment.
        """
        # nothing of the hub's: the service's own token is not MLflow's business
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("JUPYTERHUB_", "SHIPYARD_", "MLFLOW_"))
        }
        env.update(self.settings())
        env.update(
            {
                "MLFLOW_PORT": str(self.port),
                "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(32),
                SECRET_ENV: self.secret,
                RECORD_ENV: str(self.record_path),
            }
        )
        return env

    def prepare(self) -> None:
        """Adopt the recorded MLflow, or choose a port and secret for a new one.

        Called before the gateway starts serving, which needs the port and the secret;
        reads only the record and /proc. A recorded MLflow that cannot be adopted is
        stopped by :meth:`start`.
        """
        record = read_record(self.record_path)
        if record is not None:
            try:
                pid, started = int(record["pid"]), str(record["started"])
                same = record["digest"] == self.digest()
                port, secret = int(record["port"]), str(record["secret"])
            except (KeyError, TypeError, ValueError):
                pid, started, same = 0, "", False
            if same and start_time(pid) == started:
                self.pid, self.started, self.port, self.secret = pid, started, port, secret
                self.adopted = True
                return
            self._stale = record
        self.port = self.port or free_port()
        self.secret = self.secret or secrets.token_urlsafe(32)

    def start(self, timeout: float = 120) -> None:
        """Have MLflow answer (adopted, or started); raise RuntimeError with its log if not."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o700)
        if self.adopted:
            self._own()
            try:
                self._wait_until_healthy(time.monotonic() + timeout)
                return
            except RuntimeError:
                # alive but not answering: a fresh one, on the same port, with the same secret
                self.stop()
                self.adopted = False
        if self._stale is not None:
            self._stop_recorded(self._stale)
            self._stale = None
        if "://" not in self.artifacts_destination:
            Path(self.artifacts_destination).mkdir(parents=True, exist_ok=True)
        self.write_auth_config()
        log = open(self.state_dir / "mlflow.log", "ab")  # noqa: SIM115 - the child's stdout
        # its own session: it outlives this process (see the module's docstring), and
        # `mlflow server` runs uvicorn as a child of its own, which stop() ends too
        self.proc = subprocess.Popen(  # noqa: S603 - argv built here
            self.command(),
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.pid, self.started = self.proc.pid, start_time(self.proc.pid) or ""
        self._own()
        try:
            self._wait_until_healthy(time.monotonic() + timeout)
        except RuntimeError:
            self.stop()
            raise

    def _own(self) -> None:
        """Record MLflow, owned by this process (the gateway), for its keeper and the next gateway."""
        write_private(
            self.record_path,
            json.dumps(
                {
                    "pid": self.pid,
                    "started": self.started,
                    "port": self.port,
                    "secret": self.secret,
                    "digest": self.digest(),
                    "gateway": {"pid": os.getpid(), "started": start_time(os.getpid())},
                }
            ),
        )

    def running(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return bool(self.pid) and start_time(self.pid) == self.started

    def _wait_until_healthy(self, deadline: float) -> None:
        health = f"{self.url}{self.static_prefix}/health"
        while time.monotonic() < deadline:
            if not self.running():
                code = self.proc.returncode if self.proc is not None else "unknown"
                raise RuntimeError(f"mlflow server exited with {code}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(health, timeout=2) as r:  # noqa: S310 - loopback
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"mlflow server did not answer in time:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = (self.state_dir / "mlflow.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _stop_recorded(self, record: dict) -> None:
        """Stop a recorded MLflow of another configuration, or one that no longer answers."""
        try:
            stale = MlflowServer(**{**self._fields(), "pid": int(record["pid"])})
            stale.started = str(record["started"])
        except (KeyError, TypeError, ValueError):
            self.record_path.unlink(missing_ok=True)
            return
        stale.stop()

    def _fields(self) -> dict:
        names = ("backend_store_uri", "auth_db_uri", "artifacts_destination", "static_prefix")
        return {n: getattr(self, n) for n in names} | {"state_dir": self.state_dir}

    def _wait_exit(self, timeout: float) -> bool:
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self) -> None:
        """Stop MLflow (its whole process group) and forget its record."""
        signalled = False
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            if not self.pid or not self.running():
                break
            try:
                os.killpg(self.pid, sig)  # its group: the group's leader is MLflow itself
            except OSError:
                break
            signalled = True
            if self._wait_exit(wait):
                break
        if signalled:
            # the group may outlive its leader for a moment (uvicorn, its child); a group
            # that still exists keeps its id from being given to another process
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except OSError:
                pass
        record = read_record(self.record_path)
        if record is None or record.get("pid") in (self.pid, None):
            self.record_path.unlink(missing_ok=True)
        self.pid, self.started, self.proc = 0, "", None
