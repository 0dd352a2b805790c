"""KubeProfileSpawner: every profile becomes a valid, locked-down pod; bad choices are refused.

Pods are built by KubeSpawner's own code (``load_user_options`` then
``get_pod_manifest``) and validated against the newest Kubernetes schema that
kubernetes-validate ships. No cluster is contacted: KubeSpawner's constructor
only loads a client configuration, which a throwaway kubeconfig provides.
Where the pods go and as whom they run is ``c.KubePlacement``, shared with the
scheduler's Jobs and the deployer's model servers (tests/test_kube_placement.py).
"""

from __future__ import annotations

import json
import logging
import os
import re
import textwrap
from dataclasses import dataclass, field

import pytest
from jupyterhub import orm
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.config import kube_config
from tornado.web import HTTPError
from traitlets import TraitError
from traitlets.config import Config

from hub_ext.host.deprecation import MOVED_IN
from hub_ext.profiles.loader import parse_profiles
from hub_ext.profiles.model import GPU_RESOURCE, Profile
from hub_ext.services.scheduler.executors.kube_manifests import job_manifest
from hub_ext.services.scheduler.executors.kubernetes import KubernetesExecutor
from hub_ext.spawners.kubespawner import PROFILE_LABEL, USER_LABEL, KubeProfileSpawner
from hub_ext.spawners.mixin import Usage

from .manifests import validated
from .runspecs import KUBE_PROFILES as RUN_PROFILES
from .runspecs import kube_spec

PROFILES_YAML = textwrap.dedent(
    """\
    profiles:
      - slug: small
        display_name: Small
        description: For exploring data.
        default: true
        cpu_guarantee: 250m
        cpu_limit: 1
        mem_guarantee: 512Mi
        mem_limit: 2Gi
      - slug: analyst
        display_name: Analyst
        environment: datascience
        cpu_guarantee: 1
        cpu_limit: 2
        mem_guarantee: 2Gi
        mem_limit: 4Gi
        groups: [analysts]
      - slug: gpu
        display_name: GPU
        environment: pytorch
        cpu_guarantee: 2
        cpu_limit: 4
        mem_guarantee: 8Gi
        mem_limit: 16Gi
        gpu: 1
        groups: [gpu-users]
        kubernetes:
          node_selector:
            cloud.google.com/gke-accelerator: nvidia-tesla-t4
          tolerations:
            - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
      - slug: batch
        display_name: Batch
        cpu_limit: 2
        mem_limit: 1G
        kubernetes:
          kubespawner_override:
            priority_class_name: shipyard-batch
            image_pull_policy: Always
            environment: {OMP_NUM_THREADS: "2"}
    quotas:
      default: {max_servers: 2, gpu: 0}
      groups:
        gpu-users: {max_servers: 2, gpu: 1}
    """
)
PROFILES = parse_profiles(PROFILES_YAML).profiles
OPEN_SLUGS = [p.slug for p in PROFILES if not p.groups]
RESTRICTED = [p for p in PROFILES if p.groups]
ALL_GROUPS = sorted({g for p in PROFILES for g in p.groups})

#: What every pod's notebook container runs with unless an admin says otherwise.
SECURE_CONTAINER_CONTEXT = {
    "runAsUser": 1000,
    "runAsGroup": 100,
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}

KUBECONFIG = """\
apiVersion: v1
kind: Config
current-context: test
clusters: [{name: test, cluster: {server: "https://127.0.0.1:6443"}}]
contexts: [{name: test, context: {cluster: test, user: test}}]
users: [{name: test, user: {token: not-a-token}}]
"""


# ------------------------------------------------------------------ doubles


@dataclass
class FakeGroup:
    name: str


@dataclass
class FakeUser:
    """The parts of ``jupyterhub.user.User`` that a spawner reads."""

    name: str
    groups: list[FakeGroup]
    id: int = 1
    spawners: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"/user/{self.name}/"


@dataclass
class FakeOrmSpawner:
    """The row JupyterHub keeps per server: its name, last options and, when running, a Server."""

    name: str = ""
    display_name: str = ""
    user_options: dict | None = None
    server: orm.Server | None = None


def running_server(base_url: str) -> orm.Server:
    return orm.Server(proto="http", ip="10.0.0.5", port=8888, base_url=base_url, cookie_name="c")


@dataclass
class FakeHub:
    public_host: str = ""
    url: str = "http://hub:8081/hub/"
    base_url: str = "/hub/"
    api_url: str = "http://hub:8081/hub/api"


# ----------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def kubeconfig(tmp_path, monkeypatch):
    """A kubeconfig for KubeSpawner's constructor, whatever ~/.kube or $KUBECONFIG hold."""
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    # kubernetes_asyncio reads $KUBECONFIG once, at import
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


@pytest.fixture
def profiles_file(tmp_path):
    path = tmp_path / "profiles.yaml"
    path.write_text(PROFILES_YAML)
    return path


@pytest.fixture
def make_spawner(profiles_file):
    """Build a spawner for a user in ``groups``, with optional extra config.

    ``placement`` is the hub's ``c.KubePlacement``; other keywords are the spawner's.
    """

    def make(groups=(), name="alice", server_name="", options=None, placement=None, **config):
        c = Config()
        c.KubeProfileSpawner.profiles_file = str(profiles_file)
        for key, value in config.items():
            setattr(c.KubeProfileSpawner, key, value)
        for key, value in (placement or {}).items():
            setattr(c.KubePlacement, key, value)
        user = FakeUser(name, [FakeGroup(g) for g in groups])
        orm_spawner = FakeOrmSpawner(name=server_name, user_options=options)
        spawner = KubeProfileSpawner(user=user, hub=FakeHub(), orm_spawner=orm_spawner, config=c)
        user.spawners[server_name] = spawner
        spawner.user_options = options or {}
        return spawner

    return make


async def pod_for(spawner) -> dict:
    """The pod KubeSpawner would create, serialised and checked against the schema."""
    await spawner.load_user_options()
    pod = await spawner.get_pod_manifest()
    async with ApiClient() as client:
        manifest = client.sanitize_for_serialization(pod)
    return validated({"apiVersion": "v1", "kind": "Pod", **manifest})


def container_env(manifest: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in manifest["spec"]["containers"][0]["env"]}


def expected_resources(profile: Profile) -> dict:
    requests, limits = {}, {}
    for target, kind, value in (
        (requests, "cpu", profile.cpu_guarantee_cores),
        (requests, "memory", profile.mem_guarantee_bytes),
        (limits, "cpu", profile.cpu_limit_cores),
        (limits, "memory", profile.mem_limit_bytes),
    ):
        if value:
            target[kind] = value
    if profile.gpu:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(profile.gpu)
    return {"requests": requests, "limits": limits}


def refusal(excinfo) -> tuple[int, str]:
    return excinfo.value.status_code, excinfo.value.log_message


# ---------------------------------------------------------------- manifests


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.slug)
async def test_pod_for_every_profile(make_spawner, profile):
    spawner = make_spawner(groups=ALL_GROUPS, options={"profile": profile.slug})
    manifest = await pod_for(spawner)
    spec = manifest["spec"]
    container = spec["containers"][0]

    assert container["resources"] == expected_resources(profile)
    assert (spec.get("nodeSelector") or {}) == profile.kubernetes.node_selector
    assert (spec.get("tolerations") or []) == [
        t.model_dump(exclude_none=True) for t in profile.kubernetes.tolerations
    ]
    assert container["securityContext"] == SECURE_CONTAINER_CONTEXT
    assert spec["securityContext"] == {"fsGroup": 100}
    labels = manifest["metadata"]["labels"]
    assert {k: labels[k] for k in (USER_LABEL, PROFILE_LABEL)} == {
        USER_LABEL: "alice",
        PROFILE_LABEL: profile.slug,
    }
    image = profile.kubernetes.kubespawner_override.get(
        "image", f"shipyard/{profile.environment}:latest"
    )
    assert container["image"] == image
    env = container_env(manifest)
    assert {k: env[k] for k in ("SHIPYARD_PROFILE", "SHIPYARD_ENV")} == {
        "SHIPYARD_PROFILE": profile.slug,
        "SHIPYARD_ENV": profile.environment,
    }
    assert json.loads(env["SHIPYARD_PROFILE_JSON"]) == profile.public_summary()
    assert spawner.profile == profile
    assert spawner.usage == Usage.of(profile)


async def test_kubespawner_override_passthrough(make_spawner):
    (profile,) = [p for p in PROFILES if p.kubernetes.kubespawner_override]
    override = profile.kubernetes.kubespawner_override
    manifest = await pod_for(make_spawner(options={"profile": profile.slug}))
    spec = manifest["spec"]
    assert spec["priorityClassName"] == override["priority_class_name"]
    assert spec["containers"][0]["imagePullPolicy"] == override["image_pull_policy"]
    env = container_env(manifest)
    # dicts merge with the profile's own environment rather than replacing it
    assert {k: env[k] for k in [*override["environment"], "SHIPYARD_PROFILE"]} == {
        **override["environment"],
        "SHIPYARD_PROFILE": profile.slug,
    }


async def test_no_choice_gets_the_default(make_spawner):
    manifest = await pod_for(make_spawner())
    default = next(p for p in PROFILES if p.default)
    assert manifest["metadata"]["labels"][PROFILE_LABEL] == default.slug


async def test_admin_overrides_security_defaults(make_spawner):
    context = {"runAsNonRoot": True, "readOnlyRootFilesystem": True}
    spawner = make_spawner(container_security_context=context, uid=1234, gid=1234, fs_gid=1234)
    spec = (await pod_for(spawner))["spec"]
    # the dict replaces the defaults; allowPrivilegeEscalation stays off via its own trait
    assert spec["containers"][0]["securityContext"] == {
        "runAsUser": 1234,
        "runAsGroup": 1234,
        "allowPrivilegeEscalation": False,
        **context,
    }
    assert spec["securityContext"] == {"fsGroup": 1234}


#: The hub's c.KubePlacement, none of it the default.
PLACEMENT = {
    "namespace": "shipyard-workloads",
    "image_template": "registry.example.org/shipyard-{environment}:2026.11",
    "uid": 1234,
    "gid": 2345,
}


async def test_one_placement_places_the_servers_as_the_jobs(make_spawner):
    profile = next(p for p in PROFILES if p.environment == "pytorch")
    spawner = make_spawner(
        groups=ALL_GROUPS, placement=PLACEMENT, options={"profile": profile.slug}
    )
    assert spawner.namespace == PLACEMENT["namespace"]
    spec = (await pod_for(spawner))["spec"]
    container = spec["containers"][0]
    assert container["image"] == PLACEMENT["image_template"].format(environment=profile.environment)
    assert container["securityContext"] == {
        **SECURE_CONTAINER_CONTEXT,
        "runAsUser": PLACEMENT["uid"],
        "runAsGroup": PLACEMENT["gid"],
    }
    assert spec["securityContext"] == {"fsGroup": PLACEMENT["gid"]}

    # a Job of the same environment, from the same config, runs the same image as the same user
    run = next(p for p in RUN_PROFILES if p.environment == profile.environment)
    executor = KubernetesExecutor(config=Config({"KubePlacement": PLACEMENT}))
    job = job_manifest(kube_spec(run), executor.settings_for(kube_spec(run)))
    job_container = job["spec"]["template"]["spec"]["containers"][0]
    assert job["metadata"]["namespace"] == spawner.namespace
    assert job_container["image"] == container["image"]
    assert job_container["securityContext"] == container["securityContext"]


async def test_kubespawner_s_own_settings_win_over_the_placement(make_spawner):
    spawner = make_spawner(
        placement=PLACEMENT, namespace="servers", uid=1001, gid=1002, fs_gid=1003
    )
    assert (spawner.namespace, spawner.uid, spawner.gid, spawner.fs_gid) == (
        "servers",
        1001,
        1002,
        1003,
    )


async def test_the_servers_alone_may_be_placed_apart(make_spawner):
    spawner = make_spawner(placement=PLACEMENT, KubePlacement=Config(namespace="servers"))
    assert spawner.namespace == "servers"
    assert spawner.uid == PLACEMENT["uid"]


async def test_the_placement_s_service_account_is_not_the_servers(make_spawner):
    # KubeSpawner would mount the token of a service account it names
    spawner = make_spawner(placement={"service_account": "shipyard-pods"})
    spec = (await pod_for(spawner))["spec"]
    assert "serviceAccountName" not in spec
    assert spec["automountServiceAccountToken"] is False


async def test_empty_image_template_keeps_kubespawner_image(make_spawner):
    spawner = make_spawner(
        KubePlacement=Config(image_template=""), image="quay.io/jupyter/scipy-notebook:2025-01-06"
    )
    manifest = await pod_for(spawner)
    assert manifest["spec"]["containers"][0]["image"] == "quay.io/jupyter/scipy-notebook:2025-01-06"


@pytest.mark.parametrize("template", ["shipyard/{env}:1", "shipyard/{}:1", "shipyard/{environment"])
@pytest.mark.parametrize("where", ["placement", "old name"])
async def test_bad_image_template_is_refused(make_spawner, template, where):
    with pytest.raises(TraitError, match="environment"):
        if where == "placement":
            make_spawner(placement={"image_template": template})
        else:
            with pytest.warns(DeprecationWarning):
                make_spawner(image_template=template)


async def test_the_old_image_template_still_works_with_a_warning(make_spawner, caplog):
    profile = next(p for p in PROFILES if p.environment != "base")
    template = "registry.example.org/shipyard-{environment}:2026.11"
    with caplog.at_level(logging.WARNING), pytest.warns(DeprecationWarning) as warned:
        spawner = make_spawner(
            groups=ALL_GROUPS, image_template=template, options={"profile": profile.slug}
        )
    message = (
        f"KubeProfileSpawner.image_template is deprecated since Shipyard {MOVED_IN} and will "
        "be removed in the next release: use KubePlacement.image_template"
    )
    assert any(message in str(w.message) for w in warned)
    assert message in caplog.text
    manifest = await pod_for(spawner)
    assert manifest["spec"]["containers"][0]["image"] == template.format(
        environment=profile.environment
    )


async def test_the_placement_s_image_template_wins_over_the_old_name(make_spawner, caplog):
    with caplog.at_level(logging.WARNING), pytest.warns(DeprecationWarning):
        spawner = make_spawner(placement=PLACEMENT, image_template="old/{environment}:1")
    assert spawner.placement.image_template == PLACEMENT["image_template"]
    assert "Ignoring the deprecated KubeProfileSpawner.image_template" in caplog.text


# ----------------------------------------------------------------- refusals


@pytest.mark.parametrize("profile", RESTRICTED, ids=lambda p: p.slug)
async def test_profile_outside_groups_is_forbidden(make_spawner, profile):
    spawner = make_spawner(groups=["nobody-special"], options={"profile": profile.slug})
    with pytest.raises(HTTPError) as e:
        await spawner.load_user_options()
    status, message = refusal(e)
    assert status == 403
    assert all(group in message for group in profile.groups)
    assert spawner.profile is None


async def test_unknown_profile_is_refused(make_spawner):
    spawner = make_spawner(options={"profile": "huge"})
    with pytest.raises(HTTPError) as e:
        await spawner.load_user_options()
    status, message = refusal(e)
    assert status == 400
    assert "'huge'" in message and all(slug in message for slug in OPEN_SLUGS)


@pytest.mark.parametrize(
    "key, value",
    [
        ("image", "evil"),
        ("cpu_limit", 64),
        ("mem_limit", "1T"),
        ("uid", 0),
        ("privileged", True),
        ("volumes", [{"name": "root", "hostPath": {"path": "/"}}]),
        ("environment", {"LD_PRELOAD": "/tmp/x.so"}),
        ("node_selector", {"pool": "gpu"}),
        ("profile-option-small--image", "evil"),
    ],
)
async def test_options_other_than_profile_are_refused(make_spawner, key, value):
    spawner = make_spawner(options={"profile": "small", key: value})
    image_before = spawner.image
    with pytest.raises(HTTPError) as e:
        await spawner.load_user_options()
    status, message = refusal(e)
    assert status == 400
    assert repr(key) in message
    assert (spawner.image, spawner.uid, spawner.privileged) == (image_before, 1000, False)


@pytest.mark.parametrize("value", [["small"], 3, {"slug": "small"}])
async def test_profile_of_the_wrong_type_is_refused(make_spawner, value):
    spawner = make_spawner(options={"profile": value})
    with pytest.raises(HTTPError) as e:
        await spawner.load_user_options()
    assert refusal(e)[0] == 400


async def test_quota_counts_servers_restored_after_a_restart(make_spawner):
    gpu = next(p for p in PROFILES if p.gpu)
    running = make_spawner(groups=gpu.groups, server_name="train", options={"profile": gpu.slug})
    await running.load_user_options()
    state = running.get_state()

    # a new hub process: the running server comes back from its state only
    restarted = make_spawner(groups=gpu.groups, server_name="train")
    restarted.load_state(state)
    restarted.orm_spawner.server = running_server("/user/alice/train/")
    again = make_spawner(groups=gpu.groups, options={"profile": gpu.slug})
    again.user.spawners["train"] = restarted
    with pytest.raises(HTTPError) as e:
        await again.run_pre_spawn_hook()
    status, message = refusal(e)
    assert status == 403 and "GPU" in message and "1 running server" in message

    again.user_options = {"profile": "small"}  # within the quota next to 'train'
    await again.run_pre_spawn_hook()
    assert again.profile.slug == "small"


# ------------------------------------------------------------ form and list


@pytest.mark.parametrize("groups", [[], *([g] for g in ALL_GROUPS), ALL_GROUPS])
async def test_spawn_form_lists_only_allowed_profiles(make_spawner, groups):
    spawner = make_spawner(groups=groups)
    html = await spawner.get_options_form()
    allowed = [p.slug for p in PROFILES if p.allows(groups)]
    assert re.findall(r'data-profile="([^"]+)"', html) == allowed
    assert [p["slug"] for p in spawner.profile_list(spawner)] == allowed


async def test_mixin_form_wins_over_kubespawner_form(make_spawner):
    spawner = make_spawner()
    assert spawner.options_form == spawner.render_profiles_form
    # KubeSpawner's parser drops unknown fields; the mixin keeps them so they are refused
    assert spawner.options_from_form({"profile": ["small"], "image": ["evil"]}) == {
        "profile": "small",
        "image": "evil",
    }


async def test_profile_list_follows_the_file(make_spawner, profiles_file):
    spawner = make_spawner()
    assert [p["slug"] for p in spawner.profile_list(spawner)] == OPEN_SLUGS

    profiles_file.write_text(
        PROFILES_YAML.replace("slug: batch", "slug: nightly").replace("Batch", "Nightly")
    )
    stat = profiles_file.stat()
    os.utime(profiles_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))

    expected = ["nightly" if slug == "batch" else slug for slug in OPEN_SLUGS]
    assert [p["slug"] for p in spawner.profile_list(spawner)] == expected
    spawner.user_options = {"profile": "nightly"}
    manifest = await pod_for(spawner)
    assert manifest["metadata"]["labels"][PROFILE_LABEL] == "nightly"


# -------------------------------------------------------------------- state


async def test_state_keeps_the_profile_until_stopped(make_spawner):
    gpu = next(p for p in PROFILES if p.gpu)
    spawner = make_spawner(groups=gpu.groups, options={"profile": gpu.slug})
    await spawner.load_user_options()
    state = spawner.get_state()
    assert state["profile"] == gpu.model_dump(mode="json")

    restored = make_spawner(groups=gpu.groups)
    restored.load_state(state)
    assert (restored.profile, restored.usage) == (gpu, Usage.of(gpu))
    assert restored.pod_name == spawner.pod_name

    restored.clear_state()
    assert (restored.profile, restored.usage) == (None, None)
    assert "profile" not in restored.get_state()


async def test_configured_profile_list_is_warned_about(make_spawner, caplog):
    make_spawner()
    assert "profile_list is configured" not in caplog.text
    make_spawner(profile_list=[{"display_name": "Other", "kubespawner_override": {}}])
    assert "profile_list is configured" in caplog.text
