"""Two Shipyards on one machine share no machine-wide name (hub_ext/host/instance.py).

Every name that two instances could otherwise share (cgroups, system accounts,
environments, run outputs, the replicas' temporary folder) derives from
``$SHIPYARD_INSTANCE``; the default keeps the names installs always had.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from hub_ext.environments.catalog import default_envs_dir
from hub_ext.host import instance
from hub_ext.host.local import LocalHost
from hub_ext.services.deployer.local import LocalBackend
from hub_ext.services.scheduler.app import SchedulerService
from hub_ext.services.scheduler.executors.local import LocalExecutor
from hub_ext.spawners.spawner import LocalProfileSpawner

ROOT = Path(__file__).resolve().parents[1]


def machine_wide_names() -> dict[str, str]:
    """Every machine-wide name, as the one place that holds each defaults it here."""
    host, scheduler = LocalHost(), SchedulerService()
    return {
        "servers' cgroup": host.cgroup_parent_of(),
        "runs' cgroup": host.cgroup_parent_of("jobs"),
        "replicas' cgroup": host.cgroup_parent_of("models"),
        "accounts": host.system_user_prefix,
        "accounts (scheduler)": scheduler.account_prefix,
        "replicas' folder": LocalBackend().runtime_dir,
        "runs' outputs": scheduler.runs_dir,
        "environments": host.environments_dir,
    }


def test_the_spawner_executor_and_backend_take_their_names_from_the_host():
    parts = {"": LocalProfileSpawner(), "jobs": LocalExecutor(), "models": LocalBackend()}
    for part, user in parts.items():
        assert user.cgroup_parent == user.local_host.cgroup_parent_of(part)
        assert user.local_host.environments_dir == str(default_envs_dir())


@pytest.fixture
def as_root_defaults(monkeypatch):
    """The defaults a root hub gets: no overriding variables."""
    if os.geteuid() != 0:
        pytest.skip("the /opt and /var/lib defaults are the root hub's")
    for name in ("SHIPYARD_INSTANCE", "SHIPYARD_ENVS_DIR", "SHIPYARD_RUNS_DIR"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_default_instance_keeps_the_names_installs_had(as_root_defaults):
    tmp = tempfile.gettempdir()
    assert machine_wide_names() == {
        "servers' cgroup": "shipyard",
        "runs' cgroup": "shipyard-jobs",
        "replicas' cgroup": "shipyard-models",
        "accounts": "jupyter-",
        "accounts (scheduler)": "jupyter-",
        "replicas' folder": f"{tmp}/shipyard-models",
        "runs' outputs": "/var/lib/shipyard/runs",
        "environments": "/opt/shipyard/envs",
    }


def test_a_second_instance_shares_no_machine_wide_name(as_root_defaults):
    default = machine_wide_names()
    as_root_defaults.setenv("SHIPYARD_INSTANCE", "staging")
    staging = machine_wide_names()
    for what, name in staging.items():
        assert name != default[what], f"{what} is shared: {name}"
    tmp = tempfile.gettempdir()
    assert staging == {
        "servers' cgroup": "staging",
        "runs' cgroup": "staging-jobs",
        "replicas' cgroup": "staging-models",
        "accounts": "staging-",
        "accounts (scheduler)": "staging-",
        "replicas' folder": f"{tmp}/staging-models",
        "runs' outputs": "/var/lib/staging/runs",
        "environments": "/opt/staging/envs",
    }


@pytest.mark.parametrize("bad", ["Staging", "1st", "a_b", "x" * 21, "../etc"])
def test_an_unusable_instance_name_is_refused_with_what_to_use(monkeypatch, bad):
    monkeypatch.setenv("SHIPYARD_INSTANCE", bad)
    with pytest.raises(instance.InvalidInstanceName, match="lowercase letters, digits and dashes"):
        instance.name()


def test_shipyard_up_refuses_an_unusable_instance_before_starting_anything(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "hub_ext.cli", "up", "--instance", "Prod_1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, SHIPYARD_DATA_DIR=str(tmp_path / "data")),
    )
    assert done.returncode == 1
    assert "is not a usable instance name" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists(), "nothing was started or written"


def test_every_service_the_hub_starts_gets_the_instance_name(tmp_path):
    """The services derive their names from the hub's instance: the config passes it on."""
    probe = f"""
import json
from traitlets.config import PyFileConfigLoader
config = PyFileConfigLoader("jupyterhub_config.py", path={str(ROOT / "config")!r}).load_config()
print(json.dumps({{s["name"]: s.get("environment", {{}}).get("SHIPYARD_INSTANCE")
                   for s in config.JupyterHub.services if "command" in s}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, SHIPYARD_INSTANCE="staging", SHIPYARD_DATA_DIR=str(tmp_path)),
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"tracking", "scheduler", "deployer", "secrets", "audit", "usage", "alerts"} <= set(
        services
    )
    assert set(services.values()) == {"staging"}, services
