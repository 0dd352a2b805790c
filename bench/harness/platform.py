"""The drills' platform: a hub with every managed service, one model deployment, its processes.

One real hub (:class:`tests.hubtools.HubProcess`: ``python -m hub_ext.hub`` on the embedded
config, what ``shipyard up`` runs) with the services of :data:`ALL_SERVICES` the bench was
asked for, its real configurable-http-proxy in front, ``sychaos-`` accounts and
``shipyard-bench-chaos`` cgroups (never a test session's: those are ``sy<tag>…-`` and
``shipyard-test…``). One deployment, ``chaos/drill``: a scikit-learn model saved by MLflow
(:func:`make_model`) on the ``model-server`` environment, run by the deployer's LocalBackend
with its default settings.

The deployment is made, scaled and read through
:class:`~server_ext.clients.deployer.client.DeployerClient`, the client of the ``%deploy``
magics and ``shipyard models``. Health probes are plain requests: ``/health`` is
unauthenticated (tracking's is MLflow's own and wants the token as a bearer) and a probe
must say "not yet", never raise.

A process is this bench's when its environment names this hub's data folder or one of its
services' addresses (:meth:`Platform.ours`), so a service a restarted hub adopted is found
too, and another hub's never is.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
from pathlib import Path

import psutil
import requests

from hub_ext.host.slugs import account_name
from server_ext.clients.deployer.client import DeployerClient, DeployerError
from tests.hubtools import HubProcess, remove_cgroups, remove_test_accounts

from . import log

ACCOUNT_PREFIX = "sychaos-"
CGROUP_PARENT = "shipyard-bench-chaos"
USER = "chaos"
DEPLOYMENT = "drill"
ALL_SERVICES = ("tracking", "scheduler", "deployer", "secrets", "audit")
#: HubProcess's switch for each service (the audit *service*; the audit trail is always on)
SERVICE_SWITCH = {
    "tracking": "SHIPYARD_TRACKING",
    "scheduler": "SHIPYARD_SCHEDULER",
    "deployer": "SHIPYARD_DEPLOYER",
    "secrets": "SHIPYARD_SECRETS",
    "audit": "SHIPYARD_AUDIT_SERVICE",
}
PROFILES = """
profiles:
  - slug: serving
    display_name: Serving
    default: true
    environment: model-server
    cpu_limit: 1
    mem_limit: 768Mi
"""
#: Seconds a probe of the deployment may take: a hung deployer is "not yet", soon.
PROBE_TIMEOUT = 10.0
#: Seconds a change of the deployment may take (it starts replicas).
CHANGE_TIMEOUT = 120.0


def alive(pid: int | None) -> bool:
    """Whether process ``pid`` runs (a zombie, waiting to be reaped, does not)."""
    if not pid:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def make_model(place: Path) -> Path:
    """A real scikit-learn model saved by MLflow (y = 2x + 1), readable by the account."""
    import mlflow.sklearn
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LinearRegression

    x = pd.DataFrame({"x": np.arange(10, dtype=float)})
    y = 2 * x["x"] + 1
    path = place / "model"
    # cloudpickle: MLflow 3 defaults to skops, which the model-server lock does not hold
    mlflow.sklearn.save_model(
        LinearRegression().fit(x, y),
        path,
        signature=infer_signature(x, y),
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
    )
    subprocess.run(["chmod", "-R", "a+rX", str(path)], check=True)  # noqa: S603, S607
    return path


class Platform:
    """The hub, its services and the deployment, and how to find and kill each process."""

    def __init__(self, workdir: Path, services: list[str], log_dir: Path | None):
        self.workdir = workdir
        self.services = services
        self.data_dir = workdir / "hub"
        profiles = workdir / "profiles.yaml"
        profiles.write_text(PROFILES)
        homes = workdir / "homes"
        homes.mkdir()
        homes.chmod(0o755)  # the account must reach its home; mkdtemp makes 0700
        env = {switch: "0" for switch in SERVICE_SWITCH.values()}
        env.update({SERVICE_SWITCH[name]: "1" for name in services})
        self.hub = HubProcess(
            data_dir=self.data_dir,
            profiles_file=profiles,
            home_root=homes,
            account_prefix=ACCOUNT_PREFIX,
            cgroup_parent=CGROUP_PARENT,
            extra_env=env,
            log_path=log_dir / "hub.log" if log_dir else None,
        )
        hub_env = self.hub.env()
        self.service_urls = {
            hub_env[f"{SERVICE_SWITCH[name]}_URL"].rstrip("/") for name in ALL_SERVICES
        }
        self.token = ""
        self.deployer_url = f"{self.hub.url}/services/deployer"
        self.invoke_url = f"{self.deployer_url}/models/{USER}/{DEPLOYMENT}/invocations"
        #: the user's clients of the deployer, once :meth:`start` made the user
        self.probe: DeployerClient | None = None
        self.control: DeployerClient | None = None

    # ---------------------------------------------------------------- probes

    def _client(self, which: DeployerClient | None) -> DeployerClient:
        """``which`` of the deployer's clients, once the user exists."""
        if which is None:
            raise RuntimeError("the platform is not started")
        return which

    def service_healthy(self, name: str) -> bool:
        """Whether ``/services/<name>/health`` answers 200 through the proxy."""
        url = f"{self.hub.url}/services/{name}/health"
        headers = {"Authorization": f"Bearer {self.token}"} if name == "tracking" else {}
        try:
            return requests.get(url, headers=headers, timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def hub_answers(self) -> bool:
        """Whether the hub's API answers through the proxy."""
        try:
            return requests.get(f"{self.hub.url}/hub/api/", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def ready_replicas(self) -> int:
        """The replicas of the deployment's version 1 the deployer reports ready; -1 unknown."""
        try:
            metrics = self._client(self.probe).metrics(DEPLOYMENT)
        except DeployerError:  # refused, or not reached (a restart): not yet
            return -1
        return ((metrics.get("versions") or {}).get("1") or {}).get("replicas_ready", 0)

    def healthy(self, replicas: int) -> bool:
        """The hub, every service, and ``replicas`` replicas ready and running."""
        return (
            self.hub_answers()
            and all(self.service_healthy(name) for name in self.services)
            and self.ready_replicas() == replicas
            and len(self.replica_pids()) == replicas
        )

    # ------------------------------------------------------------ processes

    def replica_pids(self) -> set[int]:
        """The model servers of the bench's account (one process per replica)."""
        try:
            uid = pwd.getpwnam(account_name(USER, ACCOUNT_PREFIX)).pw_uid
        except KeyError:  # not made yet
            return set()
        return {
            p.pid
            for p in psutil.process_iter(["uids", "cmdline", "status"])
            if p.info["uids"]
            and p.info["uids"].real == uid
            and p.info["status"] != psutil.STATUS_ZOMBIE
            and "hub_ext.runtime.modelserver" in (p.info["cmdline"] or [])
        }

    def ours(self, proc: psutil.Process) -> bool:
        """Whether ``proc`` was started for this bench's hub: its data folder or one of its
        services' addresses (the audit service is given no data folder) in its environment."""
        try:
            environ = proc.environ()
        except psutil.Error:
            return False
        data = environ.get("SHIPYARD_DATA_DIR")
        if data and Path(data).resolve() == self.data_dir.resolve():
            return True
        return environ.get("JUPYTERHUB_SERVICE_URL", "").rstrip("/") in self.service_urls

    def front_pid(self) -> int | None:
        """The deployer's front (``-m hub_ext.services.deployer.front``) of this hub."""
        for proc in psutil.process_iter(["cmdline", "status"]):
            cmd = proc.info["cmdline"] or []
            if (
                "hub_ext.services.deployer.front" in cmd
                and proc.info["status"] != psutil.STATUS_ZOMBIE
                and self.ours(proc)
            ):
                return proc.pid
        return None

    def service_pid(self, name: str) -> int | None:
        """The process of service ``name`` (``-m hub_ext.services.<name>``) of this hub."""
        module = f"hub_ext.services.{name}"
        for proc in psutil.process_iter(["cmdline", "status"]):
            cmd = proc.info["cmdline"] or []
            if (
                module in cmd
                and cmd[cmd.index(module) - 1] == "-m"
                and proc.info["status"] != psutil.STATUS_ZOMBIE
                and self.ours(proc)
            ):
                return proc.pid
        return None

    def proxy_pid(self) -> int | None:
        """configurable-http-proxy, from the hub's pid file, while it runs."""
        try:
            pid = int((self.data_dir / "proxy.pid").read_text())
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if b"configurable-http-proxy" in cmd and alive(pid) else None

    def leftovers(self) -> list[psutil.Process]:
        """Every live process this bench's hub started that is still running."""
        found = []
        for proc in psutil.process_iter(["status"]):
            if proc.pid != os.getpid() and proc.info["status"] != psutil.STATUS_ZOMBIE:
                if self.ours(proc):
                    found.append(proc)
        return found

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the hub and make the user the deployment and the load belong to."""
        self.hub.start(timeout=120)
        self.token = self.hub.create_user(USER)
        self.probe = DeployerClient(self.deployer_url, self.token, PROBE_TIMEOUT)
        self.control = DeployerClient(self.deployer_url, self.token, CHANGE_TIMEOUT)

    def restart_hub(self, timeout: float = 120) -> None:
        """Start the hub again, as an operator reruns ``shipyard up`` (same folder, ports)."""
        with contextlib.suppress(Exception):
            self.hub._log.close()
        self.hub.start(timeout=timeout)

    def deploy(self, model: Path, replicas: int) -> None:
        """Deploy the model as :data:`DEPLOYMENT` on the ``serving`` profile."""
        body = {"name": DEPLOYMENT, "model_uri": str(model), "replicas": replicas}
        try:
            self._client(self.control).create_deployment({**body, "profile": "serving"})
        except DeployerError as e:
            raise RuntimeError(f"deploying the model: {e.status} {str(e)[:300]}") from None

    def scale(self, replicas: int) -> None:
        """Give the deployment ``replicas`` replicas."""
        try:
            self._client(self.control).scale(DEPLOYMENT, replicas)
        except DeployerError as e:
            raise RuntimeError(f"scaling to {replicas}: {e.status} {str(e)[:300]}") from None

    def stop(self) -> None:
        """Stop the hub as Ctrl-C does, then end whatever of this bench still runs."""
        with contextlib.suppress(Exception):
            self.hub.stop()
        for proc in self.leftovers():
            log(
                f"still running after the hub's stop, killed: {proc.pid} {proc.cmdline()[:4]}",
                clock=True,
            )
            with contextlib.suppress(psutil.Error):
                proc.kill()
        pid = self.proxy_pid()
        if pid:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        remove_test_accounts(ACCOUNT_PREFIX)  # kills the account's processes (replicas, runs)
        for parent in (CGROUP_PARENT, f"{CGROUP_PARENT}-models", f"{CGROUP_PARENT}-jobs"):
            with contextlib.suppress(Exception):
                remove_cgroups(parent)
