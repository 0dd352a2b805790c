"""One ``c.LocalHost`` configures the spawner, the executor and the backend (hub_ext/host/local.py).

The old per-class names keep working for one release, with a warning naming
the new setting; the hub passes its ``LocalHost`` section to the services
(hub_ext/host/passing.py).
"""

import json

import pytest
from traitlets.config import Config

from hub_ext.host.local import LocalHost
from hub_ext.host.passing import CONFIG_ENV, inherited_config, passed_on
from hub_ext.services.deployer.app import DeployerService
from hub_ext.services.deployer.local import LocalBackend
from hub_ext.services.scheduler.app import SchedulerService
from hub_ext.services.scheduler.executors.local import LocalExecutor
from hub_ext.spawners.spawner import LocalProfileSpawner

PARTS = [(LocalProfileSpawner, ""), (LocalExecutor, "-jobs"), (LocalBackend, "-models")]


def host_config() -> Config:
    c = Config()
    c.LocalHost.cgroup_driver = "rlimit"
    c.LocalHost.cgroup_parent = "lab"
    c.LocalHost.system_user_prefix = "sy-"
    c.LocalHost.home_dir_template = "/srv/homes/{account}"
    c.LocalHost.create_system_users = False
    c.LocalHost.environments_dir = "/srv/envs"
    c.LocalHost.gpu_devices = ["1"]
    c.LocalHost.cleanup_timeout = 30
    return c


@pytest.mark.parametrize("cls, suffix", PARTS, ids=lambda p: getattr(p, "__name__", p))
def test_one_local_host_setting_configures_each_part(cls, suffix, recwarn):
    part = cls(config=host_config())
    host = part.local_host
    assert (host.cgroup_driver, host.system_user_prefix, host.home_dir_template) == (
        "rlimit",
        "sy-",
        "/srv/homes/{account}",
    )
    assert (host.create_system_users, host.environments_dir, host.cleanup_timeout) == (
        False,
        "/srv/envs",
        30,
    )
    assert part.cgroup_parent == f"lab{suffix}"
    assert part.gpu_count == 1
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


OLD_NAMES = [
    (LocalProfileSpawner, "cgroup_driver", "rlimit", "cgroup_driver"),
    (LocalProfileSpawner, "system_user_prefix", "old-", "system_user_prefix"),
    (LocalProfileSpawner, "home_dir_template", "/h/{account}", "home_dir_template"),
    (LocalProfileSpawner, "create_system_users", False, "create_system_users"),
    (LocalProfileSpawner, "environments_dir", "/old/envs", "environments_dir"),
    (LocalProfileSpawner, "gpu_devices", ["3"], "gpu_devices"),
    (LocalProfileSpawner, "cgroup_cleanup_timeout", 40, "cleanup_timeout"),
    (LocalExecutor, "system_user_prefix", "old-", "system_user_prefix"),
    (LocalExecutor, "environments_dir", "/old/envs", "environments_dir"),
    (LocalExecutor, "cleanup_timeout", 40, "cleanup_timeout"),
    (LocalExecutor, "gpu_devices", [], "gpu_devices"),  # an empty value counts too
    (LocalBackend, "create_system_users", True, "create_system_users"),
    (LocalBackend, "environments_dir", "/old/envs", "environments_dir"),
    (LocalBackend, "gpu_devices", ["3"], "gpu_devices"),
    (LocalBackend, "cleanup_timeout", 40, "cleanup_timeout"),
]


@pytest.mark.parametrize(
    "cls, old, value, new", OLD_NAMES, ids=[f"{c.__name__}.{o}" for c, o, _, _ in OLD_NAMES]
)
def test_an_old_name_still_works_for_its_part_with_a_warning(cls, old, value, new):
    c = host_config()
    c[cls.__name__][old] = value
    with pytest.warns(DeprecationWarning, match=rf"{cls.__name__}\.{old} is deprecated") as seen:
        part = cls(config=c)
    assert f"use c.LocalHost.{new}," in str(seen[0].message)
    assert getattr(part.local_host, new) == value
    # the other parts keep the LocalHost value
    for other, _ in PARTS:
        if other is not cls:
            assert getattr(other(config=c).local_host, new) == getattr(LocalHost(config=c), new)


@pytest.mark.parametrize("cls, suffix", PARTS, ids=lambda p: getattr(p, "__name__", p))
def test_a_part_s_own_cgroup_parent_is_deprecated_but_honoured(cls, suffix):
    c = host_config()
    c[cls.__name__].cgroup_parent = "mine"
    with pytest.warns(DeprecationWarning, match="use c.LocalHost.cgroup_parent"):
        part = cls(config=c)
    assert part.cgroup_parent == "mine"


def test_the_hub_s_section_reaches_a_service_which_may_override_it(monkeypatch, tmp_path):
    environment = passed_on(host_config())
    assert json.loads(environment[CONFIG_ENV])["LocalHost"]["system_user_prefix"] == "sy-"
    assert passed_on(Config()) == {}
    monkeypatch.setenv(CONFIG_ENV, environment[CONFIG_ENV])
    assert inherited_config().LocalHost.environments_dir == "/srv/envs"

    scheduler = SchedulerService()
    scheduler.initialize(["--LocalHost.cleanup_timeout=50"])
    executor = LocalExecutor(parent=scheduler)
    assert executor.local_host.system_user_prefix == "sy-"
    assert executor.local_host.cleanup_timeout == 50  # the service's command line wins
    assert executor.cgroup_parent == "lab-jobs"
    assert scheduler.account_prefix == "sy-"  # it reads the owners' notebooks

    config_file = tmp_path / "deployer_config.py"
    config_file.write_text("c.LocalHost.gpu_devices = []\n")
    deployer = DeployerService()
    deployer.initialize([f"--DeployerService.config_file={config_file}"])
    backend = LocalBackend(parent=deployer)
    assert backend.local_host.environments_dir == "/srv/envs"
    assert backend.gpu_count == 0  # the service's config file wins
    assert backend.cgroup_parent == "lab-models"
