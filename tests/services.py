"""Hubs with Shipyard's services on, for the tests of the services and of their clients.

:func:`service_hub` starts one real hub (``hub_factory``) with a chosen set of the
embedded platform's services, writes their config files, waits until each answers
through the hub's proxy, and at the end stops the hub and removes the cgroups its
scheduler's runs (``<cgroup parent>-jobs``) and deployer's replicas (``-models``) were
put in. :func:`scheduler_hub` is the same, giving a :class:`Scheduler` client.

Each test module passes its own account prefix and cgroup parent, wrapped in
:func:`~tests.hubtools.tagged`: modules (and whole test sessions) run at the same time,
and each ends by deleting its own accounts and cgroups.

The services' usual test configs are here too (:data:`SCHEDULER_CONFIG`,
:data:`FAKE_DEPLOYER_CONFIG`, :data:`LOCAL_DEPLOYER_CONFIG`), with the helpers the
modules share to talk to them (:class:`Scheduler`, :class:`DeployerClient`,
:func:`notebook`, :func:`create_job`) and to give users system accounts.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import requests

from hub_ext.host.accounts import _create
from hub_ext.host.slugs import account_name

from .conftest import TEST_PROFILES
from .hubtools import REPO, HubProcess, remove_cgroups, wait_for

# ------------------------------------------------------------------ configs

#: A clock the tests move by writing seconds of offset into a file (no sleeping for minutes).
CLOCK_CONFIG = """
import json, os
from datetime import datetime, timedelta, timezone

def _clock(path={clock!r}):
    try:
        offset = float(open(path).read() or 0)
    except (OSError, ValueError):
        offset = 0.0
    return datetime.now(timezone.utc) + timedelta(seconds=offset)

c.SchedulerService.clock = _clock
"""

#: The scheduler as its tests run it: short heartbeats (kill -9 recovery takes seconds) and
#: :data:`CLOCK_CONFIG`'s clock. A template: ``{clock}`` is the clock file.
SCHEDULER_CONFIG = (
    CLOCK_CONFIG
    + """
c.SchedulerService.poll_interval = 0.3
c.SchedulerService.heartbeat_interval = 1
c.SchedulerService.stale_after = 4
c.SchedulerService.file_watch_interval = 0.3
c.SchedulerService.max_notebook_size = 200000
c.SchedulerService.group_quotas = {{"limited": 1}}
c.SchedulerService.groups_cache_seconds = 0.5
c.Notifier.allow_private_webhooks = True
# a machine without GPU, whatever this one has (GPU profiles are listed unavailable)
c.LocalHost.gpu_devices = []
"""
)

#: The deployer with the test double of its backend (tests/fake_backend.py) and short
#: timings: real HTTP replicas on loopback, no model loaded.
FAKE_DEPLOYER_CONFIG = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
c.DeployerService.backend_class = "tests.fake_backend.FakeModelBackend"
c.DeployerService.drain_seconds = 1
c.DeployerService.stop_grace = 5
c.DeployerService.monitor_interval = 0.5
c.DeployerService.breaker_min_requests = 10
c.DeployerService.breaker_cooldown = 600
c.DeployerService.groups_cache_seconds = 0.5
c.DeployerService.auth_cache_seconds = 1
c.DeployerService.max_replicas = 3
c.DeployerService.max_body_size = 4096
c.DeployerService.queue_timeout = 2
c.DeployerService.max_queued_requests = 2
"""

#: The deployer with its real LocalBackend (real model servers as the user, on the
#: ``model-server`` environment of :data:`SERVING_PROFILES`), short timings.
LOCAL_DEPLOYER_CONFIG = """
c.DeployerService.drain_seconds = 1
c.DeployerService.monitor_interval = 0.5
c.DeployerService.groups_cache_seconds = 0.5
c.DeployerService.auth_cache_seconds = 1
"""

#: The test profiles and one on the model server's environment, for everyone.
SERVING_PROFILES = TEST_PROFILES.replace(
    "quotas:",
    "  - slug: serving\n    display_name: Serving\n    environment: model-server\n"
    "    cpu_limit: '1'\n    mem_limit: 768Mi\nquotas:",
)

#: Each service a hub can run: the variable that turns it on, the one that names its
#: config file, and the path that answers 200 once it serves (tracking's, behind the
#: hub's login, answers 503 until MLflow behind it is up).
SERVICES = {
    "scheduler": ("SHIPYARD_SCHEDULER", "SHIPYARD_SCHEDULER_CONFIG", "health"),
    "deployer": ("SHIPYARD_DEPLOYER", "SHIPYARD_DEPLOYER_CONFIG", "health"),
    "secrets": ("SHIPYARD_SECRETS", "SHIPYARD_SECRETS_CONFIG", "health"),
    "audit": ("SHIPYARD_AUDIT_SERVICE", None, "health"),
    "usage": ("SHIPYARD_USAGE", "SHIPYARD_USAGE_CONFIG", "health"),
    "alerts": ("SHIPYARD_ALERTS", "SHIPYARD_ALERTS_CONFIG", "health"),
    "tracking": ("SHIPYARD_TRACKING", None, "version"),
}

#: The configs a service gets unless the caller gives its own.
DEFAULT_CONFIGS = {"scheduler": SCHEDULER_CONFIG, "deployer": FAKE_DEPLOYER_CONFIG}


# ------------------------------------------------------------------ hubs


@contextlib.contextmanager
def service_hub(
    hub_factory,
    name: str,
    account_prefix: str,
    cgroup_parent: str,
    services: Iterable[str],
    *,
    configs: dict[str, str] | None = None,
    profiles: str = TEST_PROFILES,
    probe: str = "probe",
    extra_env: dict[str, str] | None = None,
    **hub_options,
) -> Iterator[HubProcess]:
    """A hub with ``services`` on, each answering; stopped and cleaned up at the end.

    ``hub_options`` go to ``hub_factory`` (:class:`~tests.hubtools.HubProcess`: a
    ``config_file`` of the hub's own, one that loads tests/hub_config.py and adds to it,
    as the container placement's tests give). ``configs`` maps a service to the text of
    its config file, in place of
    :data:`DEFAULT_CONFIGS`, or to ``None`` for the service's own defaults. The files go
    beside the hub's data directory (:func:`config_folder`); the scheduler's is a
    template whose ``{clock}`` is the ``clock`` file there (see :class:`Scheduler`).
    Tracking answers only a logged-in user: ``probe`` is the user whose token asks it.
    """
    services = list(services)
    unknown = set(services) - set(SERVICES)
    assert not unknown, f"no such service: {sorted(unknown)}"
    configs = {**DEFAULT_CONFIGS, **(configs or {})}
    hub = hub_factory(
        profiles=profiles,
        name=name,
        account_prefix=account_prefix,
        cgroup_parent=cgroup_parent,
        start=False,
        **hub_options,
    )
    folder = config_folder(hub)
    clock = folder / "clock"
    clock.write_text("0")
    for service in services:
        switch, config_variable, _ = SERVICES[service]
        hub.extra_env[switch] = "1"
        if config_variable and configs.get(service) is not None:
            config = folder / f"{service}_config.py"
            text = configs[service]
            config.write_text(text.format(clock=str(clock)) if service == "scheduler" else text)
            hub.extra_env[config_variable] = str(config)
    hub.extra_env.update(extra_env or {})
    try:
        hub.start()
        wait_for_services(hub, services, probe)
        yield hub
    finally:
        hub.stop()
        if "scheduler" in services:
            remove_cgroups(f"{cgroup_parent}-jobs")
        if "deployer" in services:
            remove_cgroups(f"{cgroup_parent}-models")


@contextlib.contextmanager
def scheduler_hub(
    hub_factory,
    name: str,
    account_prefix: str,
    cgroup_parent: str,
    services: Iterable[str] = (),
    **kwargs,
) -> Iterator[Scheduler]:
    """:func:`service_hub` with the scheduler (and ``services``); a client of the scheduler."""
    with service_hub(
        hub_factory, name, account_prefix, cgroup_parent, ["scheduler", *services], **kwargs
    ) as hub:
        yield Scheduler(hub, config_folder(hub) / "clock")


def wait_for_services(hub: HubProcess, services: Iterable[str], probe: str = "probe") -> None:
    """Until each of ``services`` answers through the hub's proxy (again, after a restart).

    Tracking answers only a logged-in user: ``probe`` is the user whose token asks it.
    """
    services = list(services)
    token = hub.create_user(probe) if "tracking" in services else None

    def answers(service: str) -> bool:
        path = SERVICES[service][2]
        headers = {"Authorization": f"token {token}"} if service == "tracking" else {}
        try:
            r = requests.get(f"{hub.url}/services/{service}/{path}", headers=headers, timeout=10)
        except requests.RequestException:
            return False
        return r.status_code == 200

    # MLflow behind the tracking service takes minutes on a busy two-core machine
    wait_for(
        lambda: all(answers(service) for service in services),
        240 if "tracking" in services else 60,
        0.2,
        f"the services {', '.join(services)} to answer",
    )


def config_folder(hub: HubProcess) -> Path:
    """Where :func:`service_hub` writes the services' config files: beside the hub's data."""
    return hub.data_dir.parent


# ------------------------------------------------------------------ users


def user_with_account(
    hub: HubProcess, home_root: Path, name: str, groups: Sequence[str] = ()
) -> tuple[str, Path, pwd.struct_passwd]:
    """``name`` on ``hub`` (in ``groups``) with a system account and home, as a spawn makes
    them (the scheduler runs their jobs, the deployer their replicas, as that account).

    Returns ``(token, home, pwd entry)``.
    """
    token = hub.create_user(name, groups)
    account = account_name(name, hub.account_prefix)
    entry = _create(account, str(home_root / account), f"test user {name}")
    return token, Path(entry.pw_dir), entry


#: The scheduler tests' users: alice and bob in group team, carol in none.
TEAM = {"alice": ["team"], "bob": ["team"], "carol": []}


def users_with_accounts(
    hub: HubProcess, home_root: Path, groups: dict[str, list[str]]
) -> dict[str, tuple[str, Path, pwd.struct_passwd]]:
    """:func:`user_with_account` for each user of ``groups`` (name: their groups)."""
    return {name: user_with_account(hub, home_root, name, g) for name, g in groups.items()}


# ------------------------------------------------------------------ the scheduler


def notebook(*sources: str, parameters: str | None = None) -> dict:
    cells = []
    if parameters is not None:
        cells.append(
            {
                "cell_type": "code",
                "metadata": {"tags": ["parameters"]},
                "source": parameters,
                "outputs": [],
                "execution_count": None,
            }
        )
    for source in sources:
        cells.append(
            {
                "cell_type": "code",
                "metadata": {},
                "source": source,
                "outputs": [],
                "execution_count": None,
            }
        )
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


class Scheduler:
    """Calls to the scheduler through the hub's proxy, as a user's token."""

    def __init__(self, hub, clock_file: Path):
        self.hub = hub
        self.base = f"{hub.url}/services/scheduler/"
        self.clock_file = clock_file

    def call(self, method: str, path: str, token: str | None, **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"token {token}"
        r = requests.request(method, self.base + path, headers=headers, timeout=60, **kwargs)
        if r.status_code >= 400 or r.headers.get("Content-Type", "").startswith("application/json"):
            # every error is JSON with a message that says what to fix
            body = r.json()
            if r.status_code >= 400:
                assert body["message"], r.text
                assert "Traceback" not in r.text
        assert r.status_code < 500, r.text
        return r

    def advance(self, seconds: float) -> None:
        current = float(self.clock_file.read_text() or 0)
        self.clock_file.write_text(str(current + seconds))

    def wait_run(self, run_id: str, token: str, timeout: float = 120, until=None) -> dict:
        until = until or (lambda r: r["status"] not in ("queued", "running"))

        def done():
            r = requests.get(
                self.base + f"api/runs/{run_id}",
                headers={"Authorization": f"token {token}"},
                timeout=30,
            )
            if r.status_code in (502, 503):  # the service is restarting
                return None
            assert r.status_code == 200, r.text
            run = r.json()
            return run if until(run) else None

        return wait_for(done, timeout, 0.2, f"run {run_id}")

    def pid(self) -> int:
        out = subprocess.run(
            [
                "pgrep",
                "-P",  # the hub's child: not a child of its own forking to start a run
                str(self.hub.proc.pid),
                "-f",
                f"hub_ext[.]services[.]scheduler --SchedulerService[.]account_prefix="
                f"{self.hub.account_prefix}",
            ],
            capture_output=True,
            text=True,
        ).stdout.split()
        assert len(out) == 1, out
        return int(out[0])


def put_file(user, relative: str, content) -> Path:
    """``content`` (text, or a dict as JSON) at ``relative`` in ``user``'s home, theirs."""
    _, home, entry = user
    path = home / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(content) if isinstance(content, dict) else content
    path.write_text(data)
    for p in (path, *[q for q in path.parents if str(q).startswith(str(home))]):
        os.chown(p, entry.pw_uid, entry.pw_gid)
    return path


def create_job(sched, user, name: str, nb: dict, **fields) -> dict:
    put_file(user, f"notebooks/{name}.ipynb", nb)
    body = {"name": name, "profile": "tiny", "source_path": f"notebooks/{name}.ipynb", **fields}
    r = sched.call("POST", "api/jobs", user[0], json=body)
    assert r.status_code == 201, r.text
    return r.json()


# ------------------------------------------------------------------ tracking and the deployer


def log_model(hub, token: str, experiment: str = "alice/privacy") -> str:
    """A scikit-learn model logged to tracking as the token's user (alice unless said
    otherwise, in ``experiment``), from here; its MLflow run id."""
    import mlflow
    import mlflow.sklearn
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    saved = os.environ.get("MLFLOW_TRACKING_TOKEN")
    os.environ["MLFLOW_TRACKING_TOKEN"] = token
    try:
        mlflow.set_tracking_uri(f"{hub.url}/services/tracking")
        found = mlflow.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else mlflow.create_experiment(experiment)
        x = pd.DataFrame({"x": np.arange(10, dtype=float)})
        model = LinearRegression().fit(x, 2 * x["x"] + 1)
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.sklearn.log_model(
                model,
                name="model",
                serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
            )
        return run.info.run_id
    finally:
        mlflow.set_tracking_uri(None)
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
        else:
            os.environ["MLFLOW_TRACKING_TOKEN"] = saved


class DeployerClient:
    """The deployer through the hub's proxy, as one user's token."""

    def __init__(self, hub, token: str):
        self.hub = hub
        self.token = token
        self.base = f"{hub.url}/services/deployer/"

    def __call__(self, method: str, path: str, token: str | None = None, **kwargs):
        headers = kwargs.pop("headers", {})
        if token != "":
            headers["Authorization"] = f"token {token or self.token}"
        r = requests.request(method, self.base + path, headers=headers, timeout=60, **kwargs)
        if r.status_code != 204 and r.content:
            # HTML is the hub's error page: the proxy found the deployer down
            assert r.headers["Content-Type"].startswith("application/json"), (
                f"{method} {path}: {r.status_code} {r.text[:120]}\n{self.hub.log_tail(40)}"
            )
        assert "frame-ancestors" in r.headers.get("Content-Security-Policy", "")
        return r

    def invoke(self, owner: str, name: str, token: str | None = None, version=None, **kw):
        path = f"models/{owner}/{name}/" + (f"v/{version}/" if version else "") + "invocations"
        kw.setdefault("json", {"inputs": [[1.0, 2.0]]})
        return self("POST", path, token=token, **kw)

    def wait_state(self, name: str, version: int, state: str, timeout: float = 30) -> dict:
        def reached():
            v = self("GET", f"api/deployments/{name}/versions/{version}").json()
            if v["state"] == "failed" and state != "failed":
                raise AssertionError(f"version {version} failed: {v['reason']}")
            return v if v["state"] == state else None

        return wait_for(reached, timeout, 0.1, f"{name} v{version} to be {state}")
