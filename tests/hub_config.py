"""Test hub config: Shipyard's embedded default plus what tests need to drive it.

Loads config/jupyterhub_config.py unchanged, then adds an admin service token
for the REST API and keeps test accounts, homes and cgroups apart from real ones.
"""

import json
import os
from pathlib import Path

c = get_config()  # noqa: F821
load_subconfig(str(Path(__file__).resolve().parent.parent / "config" / "jupyterhub_config.py"))  # noqa: F821

env = os.environ
if env.get("SHIPYARD_TEST_ADMIN_TOKEN"):
    c.JupyterHub.services.append(
        {"name": "test-admin", "api_token": env["SHIPYARD_TEST_ADMIN_TOKEN"]}
    )
    c.JupyterHub.load_roles.append(
        {
            "name": "test-admin",
            "scopes": [
                "admin:users",
                "admin:servers",
                "admin:groups",
                "admin:server_state",
                "tokens",
                "access:servers",
                "read:services",
                "list:services",
            ],
            "services": ["test-admin"],
        }
    )
# external services a test runs itself: a JSON list of {"name", "api_token", "scopes"}
for extra in json.loads(env.get("SHIPYARD_TEST_EXTRA_SERVICES", "[]")):
    c.JupyterHub.services.append({"name": extra["name"], "api_token": extra["api_token"]})
    c.JupyterHub.load_roles.append(
        {"name": extra["name"], "scopes": extra["scopes"], "services": [extra["name"]]}
    )
c.JupyterHub.spawner_class = env.get("SHIPYARD_TEST_SPAWNER", "shipyard-local")
# one setting for the servers, the scheduler's runs (<parent>-jobs) and the deployer's
# models (<parent>-models): the hub passes c.LocalHost on to the services it starts
c.LocalHost.system_user_prefix = env["SHIPYARD_TEST_ACCOUNT_PREFIX"]
c.LocalHost.cgroup_parent = env["SHIPYARD_TEST_CGROUP_PARENT"]
# the usage ledger beside the hub's data: the hub's test leaves nothing in /var/lib
c.LocalHost.usage_dir = str(Path(env["SHIPYARD_DATA_DIR"]) / "usage-ledger")
if env.get("SHIPYARD_TEST_HOME_ROOT"):
    c.LocalHost.home_dir_template = env["SHIPYARD_TEST_HOME_ROOT"] + "/{account}"
    c.SimpleLocalProcessSpawner.home_dir_template = env["SHIPYARD_TEST_HOME_ROOT"] + "/{username}"
# GPU assignment is tested with declared device indices; no GPU is touched. The servers'
# only (c.<Part>.LocalHost: that part's host): the services keep the machine's GPUs
if env.get("SHIPYARD_TEST_GPUS") is not None:
    c.LocalProfileSpawner.LocalHost.gpu_devices = [
        g for g in env["SHIPYARD_TEST_GPUS"].split(",") if g
    ]
c.JupyterHub.log_level = env.get("SHIPYARD_TEST_LOG_LEVEL", "INFO")

# the scheduler's account prefix follows c.LocalHost; named on its command line too, by
# which tests find this hub's scheduler process (tests/services.py, pgrep -f)
for service in c.JupyterHub.services:
    if service.get("name") == "scheduler":
        service["command"] = [
            *service["command"],
            f"--SchedulerService.account_prefix={env['SHIPYARD_TEST_ACCOUNT_PREFIX']}",
        ]
