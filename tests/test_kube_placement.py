"""KubePlacement: one setting places the scheduler's Jobs and the deployer's model servers.

Until 0.16 the Kubernetes executor and backend each declared the namespace, image
template, uid/gid and service account; the old names keep working for one release,
with a warning that names the new setting. The hub passes its ``c.KubePlacement``
to the services it starts (hub_ext/host/passing.py; the servers' side is
tests/test_kubespawner.py). Pure: no cluster, no hub.
"""

from __future__ import annotations

import json
import logging

import pytest
from traitlets.config import Config

from hub_ext.host.deprecation import MOVED_IN
from hub_ext.host.k8s import DEPRECATED_PLACEMENT, KubePlacement
from hub_ext.host.passing import CONFIG_ENV, inherited_config, passed_on
from hub_ext.services.deployer.app import DeployerService
from hub_ext.services.deployer.kube_manifests import KubeVersion, deployment_manifest
from hub_ext.services.deployer.kubernetes import KubernetesBackend
from hub_ext.services.scheduler.app import SchedulerService
from hub_ext.services.scheduler.executors.kube_manifests import job_manifest
from hub_ext.services.scheduler.executors.kubernetes import KubernetesExecutor

from .manifests import validated
from .modelspecs import KUBE_PROFILES as MODEL_PROFILES
from .modelspecs import kube_version
from .runspecs import KUBE_PROFILES as RUN_PROFILES
from .runspecs import kube_spec

PLACED = [KubernetesExecutor, KubernetesBackend]

#: A value for every setting KubePlacement owns, none of them its default.
VALUES = {
    "namespace": "shipyard-workloads",
    "image_template": "registry.example.org/shipyard-{environment}:2027.01",
    "uid": 1234,
    "gid": 2345,
    "service_account": "shipyard-pods",
}


def pod_settings(placed):
    """The settings a Job or a model version of ``placed`` gets."""
    if isinstance(placed, KubernetesExecutor):
        return placed.settings_for(kube_spec(RUN_PROFILES[0]))
    return placed.settings(kube_version(MODEL_PROFILES[0]).spec)


def placed_as(settings) -> dict:
    return {
        "namespace": settings.namespace,
        "image_template": settings.image_template,
        "uid": settings.uid,
        "gid": settings.gid,
        "service_account": settings.service_account,
    }


def test_the_table_names_every_setting_of_the_placement():
    assert set(DEPRECATED_PLACEMENT) == set(VALUES) == set(KubePlacement.class_own_traits())


def test_one_placement_setting_configures_jobs_and_model_servers():
    config = Config({"KubePlacement": VALUES})
    executor, backend = KubernetesExecutor(config=config), KubernetesBackend(config=config)
    for placed in (executor, backend):
        assert placed.placement.namespace == VALUES["namespace"]
        settings = pod_settings(placed)
        assert placed_as(settings) == VALUES
        assert settings.fs_gid == VALUES["gid"]

    job = validated(
        job_manifest(kube_spec(RUN_PROFILES[0]), executor.settings_for(kube_spec(RUN_PROFILES[0])))
    )
    spec = kube_version(MODEL_PROFILES[0]).spec
    deployment = validated(deployment_manifest(KubeVersion(spec, backend.settings(spec))))
    for manifest in (job, deployment):
        assert manifest["metadata"]["namespace"] == VALUES["namespace"]
        pod = manifest["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == VALUES["service_account"]
        assert pod["securityContext"]["fsGroup"] == VALUES["gid"]
        for container in pod["containers"]:
            assert container["image"].startswith("registry.example.org/shipyard-")
            assert container["image"].endswith(":2027.01")
            assert container["securityContext"]["runAsUser"] == VALUES["uid"]
            assert container["securityContext"]["runAsGroup"] == VALUES["gid"]


@pytest.mark.parametrize("cls", PLACED, ids=lambda c: c.__name__)
def test_a_service_alone_may_be_placed_apart(cls):
    config = Config({"KubePlacement": {"namespace": "shared"}})
    config[cls.__name__] = Config({"KubePlacement": {"namespace": "apart"}})
    assert cls(config=config).placement.namespace == "apart"
    for other in PLACED:
        if other is not cls:
            assert other(config=config).placement.namespace == "shared"


@pytest.mark.parametrize("cls", PLACED, ids=lambda c: c.__name__)
def test_the_old_setting_names_still_work_with_a_warning(cls, caplog):
    config = Config({cls.__name__: dict(VALUES)})
    with caplog.at_level(logging.WARNING), pytest.warns(DeprecationWarning) as warned:
        placed = cls(config=config)
    assert placed_as(pod_settings(placed)) == VALUES
    for name in VALUES:
        message = (
            f"{cls.__name__}.{name} is deprecated since Shipyard {MOVED_IN} and will be "
            f"removed in the next release: use KubePlacement.{name}"
        )
        assert any(message in str(w.message) for w in warned), message
        assert message in caplog.text
    # the caller's config is left as it was; the other service does not read the old names
    assert config[cls.__name__]["namespace"] == VALUES["namespace"]
    other = next(c for c in PLACED if c is not cls)
    assert other(config=config).placement.namespace != VALUES["namespace"]


@pytest.mark.parametrize("cls", PLACED, ids=lambda c: c.__name__)
def test_the_new_setting_wins_over_the_old_name(cls, caplog):
    config = Config({"KubePlacement": {"uid": 4321}})
    config[cls.__name__] = Config({"uid": 1111, "gid": 2222})
    with caplog.at_level(logging.WARNING), pytest.warns(DeprecationWarning):
        placed = cls(config=config)
    assert (placed.placement.uid, placed.placement.gid) == (4321, 2222)
    assert f"Ignoring the deprecated {cls.__name__}.uid = 1111" in caplog.text


@pytest.mark.parametrize("cls", PLACED, ids=lambda c: c.__name__)
def test_the_old_constructor_arguments_still_work_with_a_warning(cls):
    with pytest.warns(
        DeprecationWarning, match=rf"{cls.__name__}\(namespace=\.\.\.\) is deprecated"
    ):
        placed = cls(namespace="models", uid=1001)
    assert (placed.placement.namespace, placed.placement.uid) == ("models", 1001)
    assert pod_settings(placed).namespace == "models"


@pytest.mark.parametrize("cls", PLACED, ids=lambda c: c.__name__)
def test_the_placement_has_the_defaults_of_before(cls):
    settings = pod_settings(cls(placement=KubePlacement(namespace="models")))
    assert placed_as(settings) == {
        "namespace": "models",
        "image_template": "shipyard/{environment}:latest",
        "uid": 1000,
        "gid": 100,
        "service_account": None,
    }
    assert settings.fs_gid == 100


def test_the_users_secrets_are_where_the_pods_are_placed():
    from hub_ext.services.secrets.kubernetes import KubernetesBackend as SecretsBackend

    config = Config({"KubePlacement": {"namespace": "shipyard-workloads"}})
    assert SecretsBackend(config=config).namespace == "shipyard-workloads"
    config.KubernetesBackend.namespace = "secrets-apart"  # the secrets service's own setting
    assert SecretsBackend(config=config).namespace == "secrets-apart"


def test_the_hub_s_placement_reaches_every_service_which_may_override_it(monkeypatch, tmp_path):
    from hub_ext.services.secrets.app import SecretsService
    from hub_ext.services.secrets.kubernetes import KubernetesBackend as SecretsBackend

    hub = Config({"KubePlacement": VALUES})
    hub.LocalHost.system_user_prefix = "sy-"
    hub.KubeProfileSpawner.KubePlacement.namespace = "servers-only"  # the hub's part alone
    environment = passed_on(hub)
    assert json.loads(environment[CONFIG_ENV]) == {
        "KubePlacement": VALUES,
        "LocalHost": {"system_user_prefix": "sy-"},
    }
    monkeypatch.setenv(CONFIG_ENV, environment[CONFIG_ENV])
    assert inherited_config() == Config(
        {"KubePlacement": VALUES, "LocalHost": {"system_user_prefix": "sy-"}}
    )

    scheduler = SchedulerService()
    scheduler.initialize(["--KubePlacement.uid=4321"])
    executor = KubernetesExecutor(parent=scheduler)
    assert placed_as(pod_settings(executor)) == {**VALUES, "uid": 4321}  # its command line wins

    config_file = tmp_path / "deployer_config.py"
    config_file.write_text('c.KubernetesBackend.KubePlacement.namespace = "models"\n')
    deployer = DeployerService()
    deployer.initialize([f"--DeployerService.config_file={config_file}"])
    backend = KubernetesBackend(parent=deployer)
    assert placed_as(pod_settings(backend)) == {**VALUES, "namespace": "models"}  # its file wins

    secrets = SecretsService()
    secrets.initialize([])
    assert SecretsBackend(parent=secrets).namespace == VALUES["namespace"]


def test_only_the_host_sections_pass_and_only_what_json_carries(monkeypatch):
    hub = Config()
    hub.KubePlacement.namespace = "shipyard-workloads"
    hub.KubePlacement.image_template = lambda: "not JSON"  # the hub's own parts alone
    hub.SchedulerService.max_concurrent_runs = 9  # the service's own file says that
    assert json.loads(passed_on(hub)[CONFIG_ENV]) == {
        "KubePlacement": {"namespace": "shipyard-workloads"}
    }
    assert passed_on(Config({"KubePlacement": {}})) == {}
    # a service takes nothing else from the variable, whoever set it
    monkeypatch.setenv(CONFIG_ENV, '{"SchedulerService": {"db_url": "x"}, "KubePlacement": {}}')
    assert inherited_config() == Config()
