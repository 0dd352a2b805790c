"""The real ``mlflow server`` behind the gateway: its auth config, command and lifetime.

MLflow runs as a child of the tracking service, on a free loopback port, with
MLflow's basic-auth app (its permission model) and Shipyard's authorization
function (:mod:`.mlflow_auth`), so it answers only requests that carry the
gateway's secret. The secrets it needs (the gateway secret, Flask's key, the
bootstrap admin's password) are made at each start and live in this process
tree only; the auth config that names the databases is written 0600.
"""

from __future__ import annotations

import ctypes
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
from pathlib import Path

from hub_ext import telemetry

from .mlflow_auth import SECRET_ENV

#: MLflow's own admin account, used by nobody: hub admins are MLflow admins
#: through the gateway. A hub user of this name is refused.
BOOTSTRAP_ADMIN = "shipyard-mlflow-admin"
AUTH_FUNCTION = "hub_ext.services.tracking.mlflow_auth:authenticate_from_gateway"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent() -> None:
    """Get SIGTERM when the parent process dies, even by kill -9 (Linux; elsewhere nothing)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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
        """``mlflow server`` with no setting on its command line: see :meth:`environment`."""
        return [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth"]

    def environment(self, config: Path) -> dict[str, str]:
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
        env.update(
            {
                "MLFLOW_BACKEND_STORE_URI": self.backend_store_uri,
                "MLFLOW_DEFAULT_ARTIFACT_ROOT": "mlflow-artifacts:/",
                "MLFLOW_SERVE_ARTIFACTS": "true",
                "MLFLOW_ARTIFACTS_DESTINATION": self.artifacts_destination,
                "MLFLOW_HOST": "127.0.0.1",
                "MLFLOW_PORT": str(self.port),
                "MLFLOW_WORKERS": str(self.workers),
                "MLFLOW_STATIC_PREFIX": self.static_prefix,
                "MLFLOW_AUTH_CONFIG_PATH": str(config),
                "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(32),
                "MLFLOW_SERVER_ENABLE_GRAPHQL_AUTH": "true",
                # MLflow's background job runner (GenAI evaluation, prompt optimisation)
                # starts dozens of worker processes; tracking does not need it
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                SECRET_ENV: self.secret,
                # MLflow's usage telemetry off unless the admin allows it
                **telemetry.environment(),
            }
        )
        return env

    def prepare(self) -> None:
        """Choose the port and the gateway secret (before the gateway starts serving)."""
        self.port = self.port or free_port()
        self.secret = self.secret or secrets.token_urlsafe(32)

    def start(self, timeout: float = 120) -> None:
        """Start MLflow and return once it answers; raise RuntimeError with its log if not."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o700)
        if "://" not in self.artifacts_destination:
            Path(self.artifacts_destination).mkdir(parents=True, exist_ok=True)
        self.prepare()
        config = self.write_auth_config()
        self._kill_leftover()
        log = open(self.state_dir / "mlflow.log", "ab")  # noqa: SIM115 - the child's stdout
        # its own process group: `mlflow server` runs uvicorn as a child of its own,
        # and stop() must end both
        self.proc = subprocess.Popen(  # noqa: S603 - argv built here
            self.command(),
            env=self.environment(config),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - no threads yet
        )
        (self.state_dir / "mlflow.pgid").write_text(str(self.proc.pid))
        deadline = time.monotonic() + timeout
        health = f"{self.url}{self.static_prefix}/health"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(health, timeout=2) as r:  # noqa: S310 - loopback
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer in {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = (self.state_dir / "mlflow.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _kill_leftover(self) -> None:
        """End an MLflow left running by a service that was killed (kill -9 skips stop())."""
        try:
            pgid = int((self.state_dir / "mlflow.pgid").read_text())
            os.killpg(pgid, signal.SIGTERM)
        except (OSError, ValueError):
            return
        time.sleep(0.5)
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass

    def stop(self) -> None:
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
            except OSError:
                break
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # the group may outlive its leader for a moment
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        (self.state_dir / "mlflow.pgid").unlink(missing_ok=True)
