"""jupyter-scheduler 2.x under ``jupyter server``, the peer of the throughput benchmark.

It lives in a virtualenv of its own (:data:`JS_VENV`, under the repository's ignored
``.bench/``, made on first use with pip from the interpreter Shipyard's environments are made
from) so that its pins never meet Shipyard's. The server runs on a free port with a token of
the bench's, its data, runtime and config folders in the bench's scratch folder, and in a
session of its own: :meth:`JupyterScheduler.stop` ends the server and every job process it
spawned. Jobs are made with ``POST /scheduler/jobs`` and read with ``GET``, jupyter-scheduler's
own REST API, as its JupyterLab panel does.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
from pathlib import Path

import requests

from hub_ext.environments.catalog import default_python
from tests.hubtools import free_port, wait_for

from . import REPO, log
from .notebook import notebook

JS_VENV = REPO / ".bench" / "jupyter-scheduler-venv"
JS_REQUIREMENT = "jupyter_scheduler>=2.7,<3"


def ensure_jupyter_scheduler() -> Path:
    """The jupyter-scheduler virtualenv under .bench/ (made on first use); its bin folder."""
    bin_dir = JS_VENV / "bin"
    if not (bin_dir / "jupyter-server").exists():
        log(f"installing {JS_REQUIREMENT} and jupyterlab into {JS_VENV} (first run only)")
        JS_VENV.parent.mkdir(exist_ok=True)
        subprocess.run([default_python(), "-m", "venv", str(JS_VENV)], check=True)  # noqa: S603
        pip = [str(bin_dir / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)  # noqa: S603
        subprocess.run([*pip, JS_REQUIREMENT, "jupyterlab"], check=True)  # noqa: S603
    return bin_dir


class JupyterScheduler:
    """``jupyter server`` with jupyter_scheduler, on a free port, with a known token."""

    def __init__(self, scratch: Path, log_dir: Path | None):
        self.bin = ensure_jupyter_scheduler()
        self.folder = scratch / "jupyter-scheduler"
        self.root = self.folder / "root"
        self.root.mkdir(parents=True)
        (self.root / "bench.ipynb").write_text(json.dumps(notebook()))
        self.port = free_port()
        self.token = secrets.token_hex(24)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = (log_dir or self.folder) / "jupyter-server.log"
        self.proc: subprocess.Popen | None = None
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {self.token}"
        version = subprocess.run(  # noqa: S603
            [str(self.bin / "python"), "-c", "import jupyter_scheduler as j; print(j.__version__)"],
            capture_output=True,
            text=True,
            check=True,
        )
        self.version = version.stdout.strip()

    def start(self) -> None:
        """Start the server and wait until jupyter-scheduler answers ``GET /scheduler/jobs``."""
        env = {
            **{k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"},
            "PATH": os.pathsep.join([str(self.bin), os.environ.get("PATH", "")]),
            "JUPYTER_DATA_DIR": str(self.folder / "data"),
            "JUPYTER_RUNTIME_DIR": str(self.folder / "runtime"),
            "JUPYTER_CONFIG_DIR": str(self.folder / "config"),
        }
        argv = [
            str(self.bin / "jupyter"),
            "server",
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            f"--SchedulerApp.db_url=sqlite:///{self.folder / 'scheduler.sqlite'}",
        ]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(  # noqa: S603
            argv,
            env=env,
            cwd=self.folder,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter server exited; see {self.log_path}")
            try:
                return self.session.get(self.url + "/scheduler/jobs", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for(up, 60, 0.2, "jupyter server with jupyter_scheduler to answer")

    def stop(self) -> None:
        """End the server's session (the server and its job processes); again is harmless."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # its whole session: the server and any job process it spawned
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # job processes left behind
        self._log.close()

    def create_job(self, name: str) -> str:
        """``POST /scheduler/jobs`` of the bench notebook, which starts it at once; its id."""
        body = {
            "name": name,
            "input_uri": "bench.ipynb",
            "output_formats": ["ipynb"],
            "runtime_environment_name": "python3",
        }
        r = self.session.post(self.url + "/scheduler/jobs", json=body, timeout=120)
        if r.status_code != 200:
            raise RuntimeError(f"POST /scheduler/jobs: {r.status_code} {r.text[:500]}")
        return r.json()["job_id"]

    def get_job(self, job_id: str) -> dict:
        """``GET /scheduler/jobs/<id>``: the job's model, with its ``status``."""
        r = self.session.get(self.url + f"/scheduler/jobs/{job_id}", timeout=120)
        r.raise_for_status()
        return r.json()
