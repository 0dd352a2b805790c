"""The profiles schema: every error of a file at once, user choices, quotas, live reload, KubeSpawner."""

import logging
import os
import textwrap
from pathlib import Path

import pytest

from hub_ext.profiles.loader import ProfileError, ProfilesInvalid, load_profiles, parse_profiles
from hub_ext.profiles.model import Profile, ProfileChoiceError, Quota
from hub_ext.profiles.quantities import CPU_HINT, MEMORY_HINT
from hub_ext.profiles.store import ProfileStore
from hub_ext.profiles.z2jh import kubespawner_overrides, kubespawner_profile_list, z2jh_values

REPO = Path(__file__).resolve().parent.parent
PROFILE_KEYS = (
    "slug, display_name, description, default, environment, cpu_guarantee, cpu_limit, "
    "mem_guarantee, mem_limit, gpu, groups, kubernetes"
)


def parse(text: str, path: str = "p.yaml"):
    return parse_profiles(textwrap.dedent(text), path)


def errors_of(text: str, path: str = "p.yaml") -> str:
    with pytest.raises(ProfilesInvalid) as e:
        parse(text, path)
    return str(e.value)


# ------------------------------------------------------------- the repo's file


def test_repository_profiles_file_is_valid():
    config = load_profiles(REPO / "config" / "profiles.yaml")
    assert [p.slug for p in config.profiles] == ["small", "medium", "gpu"]
    assert [p.slug for p in config.profiles if p.default] == ["small"]
    gpu = config.get("gpu")
    assert (gpu.gpu, gpu.groups) == (1, ["gpu-users"])
    assert config.quotas.default == Quota(max_servers=2, cpu="4", memory="8Gi", gpu=0)
    assert config.quotas.groups["gpu-users"] == Quota(max_servers=3, cpu="8", memory="24Gi", gpu=1)


# ------------------------------------------------------------ every error at once

BAD_FILE = """\
profiles:
  - slug: small
    display_name: Small
    default: true
    colour: blue
    cpu_limit: 2GB
    mem_limit: 1Gi
    mem_guarantee: 2Gi
  - slug: small
    display_name: Small again
    default: true
    cpu_guarantee: 2
    cpu_limit: 1
    mem_limit: lots
    kubernetes:
      node_selektor:
        pool: gpu
  - slug: Big_One
    display_name: Big
  - 3
quotas:
  default:
    cpu: 0
"""


def test_every_error_of_a_bad_file_is_reported_with_its_line():
    with pytest.raises(ProfilesInvalid) as e:
        parse_profiles(BAD_FILE, "bad.yaml")
    assert str(e.value).splitlines() == [
        f"bad.yaml:5: profiles[0].colour: unknown key 'colour'; allowed keys: {PROFILE_KEYS}",
        f"bad.yaml:6: profiles[0].cpu_limit: '2GB' is not a Kubernetes quantity; {CPU_HINT}",
        "bad.yaml:8: profiles[0].mem_guarantee: mem_guarantee 2Gi is above mem_limit 1Gi; "
        "lower the guarantee or raise the limit",
        "bad.yaml:9: profiles[1].slug: duplicate slug 'small' (also profiles[0]); "
        "every slug must be unique",
        "bad.yaml:11: profiles[1].default: a second default (profiles[0] is already the default); "
        "mark exactly one profile as the default",
        "bad.yaml:12: profiles[1].cpu_guarantee: cpu_guarantee 2 is above cpu_limit 1; "
        "lower the guarantee or raise the limit",
        f"bad.yaml:14: profiles[1].mem_limit: 'lots' is not a Kubernetes quantity; {MEMORY_HINT}",
        "bad.yaml:16: profiles[1].kubernetes.node_selektor: unknown key 'node_selektor'; "
        "allowed keys: node_selector, tolerations, kubespawner_override",
        "bad.yaml:18: profiles[2].slug: 'Big_One' is not a valid name: use lowercase letters, "
        "digits and dashes, starting and ending with a letter or digit",
        "bad.yaml:20: profiles[3]: Input should be a valid dictionary or instance of Profile",
        f"bad.yaml:23: quotas.default.cpu: '0' must be more than zero; {CPU_HINT}",
    ]
    assert e.value.errors[0] == ProfileError(
        "bad.yaml", 5, "profiles[0].colour", f"unknown key 'colour'; allowed keys: {PROFILE_KEYS}"
    )
    assert len(e.value.errors) == 11


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param(
            """\
            profiles:
              - slug: a
                display_name: A
            """,
            "p.yaml:1: profiles: no profile has 'default: true'; "
            "mark exactly one profile as the default",
            id="no-default",
        ),
        pytest.param(
            """\
            profiles:
              - slug: a
                display_name: A
                default: true
              - slug: b
                display_name: B
                default: true
            """,
            "p.yaml:7: profiles[1].default: a second default (profiles[0] is already the "
            "default); mark exactly one profile as the default",
            id="two-defaults",
        ),
        pytest.param(
            """\
            profiles:
              - slug: a
                display_name: A
                default: 1
              - slug: b
                display_name: B
                default: true
            """,
            "p.yaml:4: profiles[0].default: 1 is not a boolean; write true or false",
            id="default-not-a-boolean",
        ),
        pytest.param(
            """\
            profiles:
              - slug: a
                display_name: A
                default: true
              - slug: a
                display_name: Again
            """,
            "p.yaml:5: profiles[1].slug: duplicate slug 'a' (also profiles[0]); "
            "every slug must be unique",
            id="duplicate-slug",
        ),
        pytest.param(
            """\
            profiles:
              - slug: -a
                display_name: A
                default: true
            """,
            "p.yaml:2: profiles[0].slug: '-a' is not a valid name: use lowercase letters, "
            "digits and dashes, starting and ending with a letter or digit",
            id="bad-slug",
        ),
        pytest.param(
            """\
            profiles:
              - slug: a
                display_name: A
                default: true
                environment: Py 3
            """,
            "p.yaml:5: profiles[0].environment: 'Py 3' is not a valid name: use lowercase "
            "letters, digits and dashes, starting and ending with a letter or digit",
            id="bad-environment",
        ),
        pytest.param(
            """\
            profiles:
              - slug: a
                display_name: A
                default: true
                gpus: 1
            """,
            f"p.yaml:5: profiles[0].gpus: unknown key 'gpus'; allowed keys: {PROFILE_KEYS}",
            id="unknown-key",
        ),
        pytest.param(
            """\
            profiles:
              - slug: a
                display_name: A
                default: true
                kubernetes:
                  tolerations:
                    - key: gpu
                      efect: NoSchedule
            """,
            "p.yaml:8: profiles[0].kubernetes.tolerations[0].efect: unknown key 'efect'; "
            "allowed keys: key, operator, value, effect, tolerationSeconds",
            id="unknown-key-in-toleration",
        ),
        pytest.param(
            """\
            profiles:
              - slug: a
                display_name: A
                default: true
                mem_limit: 2GB
            """,
            f"p.yaml:5: profiles[0].mem_limit: '2GB' is not a Kubernetes quantity; {MEMORY_HINT}",
            id="bad-memory",
        ),
        pytest.param(
            """\
            profiles:
              - slug: a
                display_name: A
                default: true
                cpu_limit: -1
            """,
            f"p.yaml:5: profiles[0].cpu_limit: '-1' is not a Kubernetes quantity; {CPU_HINT}",
            id="negative-cpu",
        ),
        pytest.param(
            """\
            profiles:
              - slug: a
                display_name: A
                default: true
                cpu_guarantee: 1500m
                cpu_limit: 1
            """,
            "p.yaml:5: profiles[0].cpu_guarantee: cpu_guarantee 1500m is above cpu_limit 1; "
            "lower the guarantee or raise the limit",
            id="cpu-guarantee-above-limit",
        ),
        pytest.param(
            """\
            profiles:
              - slug: a
                display_name: A
                default: true
                mem_limit: 1G
                mem_guarantee: 1Gi
            """,
            "p.yaml:6: profiles[0].mem_guarantee: mem_guarantee 1Gi is above mem_limit 1G; "
            "lower the guarantee or raise the limit",
            id="memory-guarantee-above-limit",
        ),
        pytest.param(
            """\
            profiles:
              - slug: a
                default: true
            """,
            "p.yaml:2: profiles[0].display_name: missing required key 'display_name'",
            id="missing-key",
        ),
        pytest.param(
            """\
            profiles:
              - slug: a
                display_name: "A
            """,
            "p.yaml:4: not valid YAML: found unexpected end of stream",
            id="invalid-yaml",
        ),
        pytest.param(
            """\
            profiles:
              - slug: a
                display_name: A
                default: true
                slug: b
            """,
            "p.yaml:5: not valid YAML: duplicate key 'slug' (first on line 2)",
            id="duplicate-key",
        ),
        pytest.param("", "p.yaml:1: expected a mapping with a 'profiles:' list", id="empty-file"),
        pytest.param(
            "# nothing but a comment\n",
            "p.yaml:1: expected a mapping with a 'profiles:' list",
            id="only-a-comment",
        ),
        pytest.param(
            "- slug: a\n  display_name: A\n",
            "p.yaml:1: expected a mapping with a 'profiles:' list",
            id="top-level-list",
        ),
        pytest.param(
            "small\n", "p.yaml:1: expected a mapping with a 'profiles:' list", id="top-level-string"
        ),
        pytest.param(
            "profiles: []\n",
            "p.yaml:1: profiles: the list is empty; define at least one profile",
            id="no-profiles",
        ),
        pytest.param(
            "quotas: {}\n",
            "p.yaml:1: profiles: missing required key 'profiles'",
            id="missing-profiles",
        ),
        pytest.param(
            """\
            profiles:
              - slug: a
                display_name: A
                default: true
            quotas:
              groups:
                students:
                  memory: 4 GB
                  servers: 2
            """,
            "p.yaml:8: quotas.groups.students.memory: '4 GB' is not a Kubernetes quantity; "
            f"{MEMORY_HINT}\n"
            "p.yaml:9: quotas.groups.students.servers: unknown key 'servers'; "
            "allowed keys: max_servers, cpu, memory, gpu",
            id="bad-quota",
        ),
    ],
)
def test_error_message(text, expected):
    assert errors_of(text) == expected


def test_unreadable_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ProfilesInvalid) as e:
        load_profiles(missing)
    assert str(e.value) == f"{missing}: cannot read the file: No such file or directory"


def test_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"profiles:\n  - slug: a\n    display_name: \xe9t\xe9\n")
    with pytest.raises(ProfilesInvalid) as e:
        load_profiles(path)
    assert str(e.value) == f"{path}:3: not UTF-8 text (byte 0xe9); save the file as UTF-8"


# ------------------------------------------------------------ choices


CHOICES = """\
profiles:
  - slug: small
    display_name: Small
    default: true
  - slug: gpu
    display_name: GPU
    gpu: 1
    groups: [gpu-users]
  - slug: staff
    display_name: Staff
    groups: [staff, admins]
"""

GROUP_ONLY = """\
profiles:
  - slug: gpu
    display_name: GPU
    default: true
    groups: [gpu-users]
  - slug: staff
    display_name: Staff
    groups: [staff]
"""


@pytest.mark.parametrize(
    "slug, groups, expected",
    [
        ("small", [], "small"),
        ("gpu", ["gpu-users"], "gpu"),
        ("staff", ["admins"], "staff"),
        (None, [], "small"),
        ("", ["gpu-users"], "small"),
    ],
)
def test_resolve_allowed(slug, groups, expected):
    assert parse(CHOICES).resolve(slug, groups).slug == expected


@pytest.mark.parametrize(
    "text, slug, groups, status, message",
    [
        (
            CHOICES,
            "gpu",
            [],
            403,
            "Profile 'gpu' is only for members of the groups gpu-users; you are in no group. "
            "Choose one of: small.",
        ),
        (
            CHOICES,
            "staff",
            ["students", "gpu-users", "students"],
            403,
            "Profile 'staff' is only for members of the groups staff, admins; you are in "
            "gpu-users, students. Choose one of: small, gpu.",
        ),
        (
            CHOICES,
            "huge",
            ["gpu-users"],
            400,
            "Unknown profile 'huge'. Choose one of: small, gpu.",
        ),
        (
            GROUP_ONLY,
            None,
            [],
            403,
            "No profile is open to you: your groups (none) match none of the profiles' groups. "
            "Ask an admin to add you to a group.",
        ),
        (
            GROUP_ONLY,
            "gpu",
            ["x", "a"],
            403,
            "No profile is open to you: your groups (a, x) match none of the profiles' groups. "
            "Ask an admin to add you to a group.",
        ),
    ],
)
def test_resolve_refused(text, slug, groups, status, message):
    with pytest.raises(ProfileChoiceError) as e:
        parse(text).resolve(slug, groups)
    assert (e.value.status, e.value.message, str(e.value)) == (status, message, message)


@pytest.mark.parametrize(
    "text, groups, allowed, default",
    [
        (CHOICES, [], ["small"], "small"),
        (CHOICES, ["gpu-users"], ["small", "gpu"], "small"),
        (CHOICES, ["staff", "gpu-users"], ["small", "gpu", "staff"], "small"),
        # the file's default is closed to this user: their first allowed profile
        (GROUP_ONLY, ["staff"], ["staff"], "staff"),
        (GROUP_ONLY, ["gpu-users", "staff"], ["gpu", "staff"], "gpu"),
        (GROUP_ONLY, [], [], None),
    ],
)
def test_allowed_and_default_for(text, groups, allowed, default):
    config = parse(text)
    assert [p.slug for p in config.allowed_for(groups)] == allowed
    found = config.default_for(groups)
    assert (found.slug if found else None) == default
    if default:
        assert config.resolve(None, groups).slug == default


# ------------------------------------------------- profiles this machine cannot run

TWO_GPUS = """\
profiles:
  - slug: gpu
    display_name: GPU
    default: true
    gpu: 1
  - slug: small
    display_name: Small
  - slug: pair
    display_name: Pair
    gpu: 2
"""


@pytest.mark.parametrize(
    "gpu_count, reasons",
    [
        (None, {}),  # the spawner does not know the machine (Kubernetes): nothing refused
        (0, {"gpu": "no GPU on this machine", "pair": "no GPU on this machine"}),
        (1, {"pair": "it needs 2 GPUs and this machine has 1"}),
        (2, {}),
    ],
)
def test_gpu_profiles_are_unavailable_without_the_gpus(gpu_count, reasons):
    config = parse(TWO_GPUS)
    found = {p.slug: p.unavailable_reason(gpu_count) for p in config.profiles}
    assert {slug: reason for slug, reason in found.items() if reason} == reasons


def test_a_gpu_profile_is_refused_with_the_reason_and_the_default_passes_it_over():
    config = parse(TWO_GPUS)
    with pytest.raises(ProfileChoiceError) as e:
        config.resolve("gpu", [], gpu_count=0)
    assert (e.value.status, e.value.message) == (
        409,
        "Profile 'gpu' cannot start: no GPU on this machine. Choose one of: small.",
    )
    # the file's default needs a GPU: a start without a choice gets one that can start
    assert config.default_for([], gpu_count=0).slug == "small"
    assert config.resolve(None, [], gpu_count=0).slug == "small"
    assert config.resolve(None, [], gpu_count=1).slug == "gpu"
    assert config.resolve("pair", [], gpu_count=2).slug == "pair"
    # an unknown profile lists only those that can start here
    with pytest.raises(ProfileChoiceError) as e:
        config.resolve("huge", [], gpu_count=1)
    assert e.value.message == "Unknown profile 'huge'. Choose one of: gpu, small."
    only_gpu = parse("profiles:\n  - {slug: gpu, display_name: GPU, gpu: 1, default: true}\n")
    with pytest.raises(ProfileChoiceError) as e:
        only_gpu.resolve(None, [], gpu_count=0)
    assert e.value.message == (
        "Profile 'gpu' cannot start: no GPU on this machine. None of the profiles open to "
        "you can start on this machine: ask an admin."
    )


# ------------------------------------------------------------ quotas

QUOTAS = (
    CHOICES
    + """\
quotas:
  default: {max_servers: 1, cpu: 2, memory: 4Gi, gpu: 0}
  groups:
    students: {max_servers: 2, cpu: 500m, memory: 8Gi}
    researchers: {max_servers: 5, cpu: "4", memory: 16G, gpu: 2}
    gpu-users: {max_servers: 3, cpu: 8, memory: 12Gi, gpu: 1}
    unlimited: {}
"""
)


@pytest.mark.parametrize(
    "groups, expected",
    [
        ([], Quota(max_servers=1, cpu="2", memory="4Gi", gpu=0)),
        (["nobody-knows"], Quota(max_servers=1, cpu="2", memory="4Gi", gpu=0)),
        # one group's quota replaces the default, even where the default is bigger
        (["students"], Quota(max_servers=2, cpu="500m", memory="8Gi", gpu=None)),
        # most generous per field: 16G (16.0e9) beats 12Gi (12.9e9)
        (["researchers", "gpu-users"], Quota(max_servers=5, cpu="8", memory="16G", gpu=2)),
        # a field one group leaves out is unlimited (None) for the user
        (["students", "researchers"], Quota(max_servers=5, cpu="4", memory="16G", gpu=None)),
        (["gpu-users", "unlimited"], Quota()),
    ],
)
def test_quota_for(groups, expected):
    assert parse(QUOTAS).quota_for(groups) == expected


def test_no_default_quota_means_unlimited():
    assert parse(CHOICES).quota_for([]) is None
    assert parse(CHOICES).quota_for(["students"]) is None


# ------------------------------------------------------------ profile views


def test_profile_views():
    profile = parse(
        """\
        profiles:
          - slug: big
            display_name: Big
            default: true
            cpu_guarantee: 500m
            cpu_limit: 2
            mem_guarantee: 1.5Gi
            mem_limit: 4Gi
            gpu: 2
            environment: torch
            kubernetes:
              node_selector: {pool: gpu}
        """
    ).get("big")
    assert (
        profile.cpu_limit_cores,
        profile.cpu_guarantee_cores,
        profile.mem_limit_bytes,
        profile.mem_guarantee_bytes,
    ) == (2.0, 0.5, 4 * 2**30, 1610612736)
    assert profile.resource_lines() == [
        "CPU 2 (0.5 guaranteed)",
        "Memory 4 GiB (1.5 GiB guaranteed)",
        "GPU 2",
        "Environment torch",
    ]
    # what a user may see: never the Kubernetes passthrough
    assert profile.public_summary() == {
        "slug": "big",
        "display_name": "Big",
        "description": "",
        "environment": "torch",
        "cpu_guarantee": "500m",
        "cpu_limit": "2",
        "mem_guarantee": "1.5Gi",
        "mem_limit": "4Gi",
        "gpu": 2,
    }


def test_profile_without_limits():
    profile = Profile(slug="free", display_name="Free", cpu_guarantee="1", mem_guarantee="1Gi")
    assert profile.cpu_limit_cores is None and profile.mem_limit_bytes is None
    assert profile.resource_lines() == [
        "CPU unlimited (1 guaranteed)",
        "Memory unlimited (1 GiB guaranteed)",
        "No GPU",
        "Environment base",
    ]


def test_profile_state_round_trip():
    """Spawner state stores model_dump(mode='json'); it must validate back to the same profile."""
    profile = parse(CHOICES).get("gpu")
    assert Profile.model_validate(profile.model_dump(mode="json")) == profile


# ------------------------------------------------------------ live reload

V1 = """\
profiles:
  - slug: small
    display_name: Small
    default: true
"""
V2 = (
    V1
    + """\
  - slug: large
    display_name: Large
    mem_limit: 64Gi
"""
)
BROKEN = (
    V2
    + """\
    cpu_limit: 2 CPUs
"""
)


class _File:
    """A profiles file whose every write gets a new mtime, as a real edit a second later would."""

    def __init__(self, path: Path):
        self.path = path
        self.mtime_ns = 1_700_000_000 * 10**9

    def write(self, text: str) -> None:
        self.path.write_text(text)
        self.mtime_ns += 10**9
        os.utime(self.path, ns=(self.mtime_ns, self.mtime_ns))


def slugs_of(store: ProfileStore) -> list[str]:
    return [p.slug for p in store.get().profiles]


def test_store_rereads_a_changed_file_and_keeps_the_last_good_version(tmp_path, caplog):
    file = _File(tmp_path / "profiles.yaml")
    file.write(V1)
    store = ProfileStore(file.path)
    first = store.get()
    assert [p.slug for p in first.profiles] == ["small"]
    assert store.get() is first  # unchanged file: no re-read

    file.write(V2)
    with caplog.at_level(logging.INFO, logger="hub_ext.profiles"):
        assert slugs_of(store) == ["small", "large"]
    assert store.last_error is None
    assert [r.getMessage() for r in caplog.records] == [
        f"Reloaded profiles from {file.path} (2 profiles)"
    ]
    caplog.clear()

    file.write(BROKEN)
    with caplog.at_level(logging.INFO, logger="hub_ext.profiles"):
        assert slugs_of(store) == ["small", "large"]
        assert slugs_of(store) == ["small", "large"]  # logged once, not on every get
    problem = (
        f"{file.path}:8: profiles[1].cpu_limit: '2 CPUs' is not a Kubernetes quantity; {CPU_HINT}"
    )
    assert str(store.last_error) == problem
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "ERROR",
            f"Profiles file {file.path} changed but is invalid; keeping the previous version.\n"
            + problem,
        )
    ]

    file.write(V1)
    assert slugs_of(store) == ["small"]
    assert store.last_error is None

    file.path.unlink()
    assert slugs_of(store) == ["small"]
    assert str(store.last_error) == f"{file.path}: cannot read the file: No such file or directory"


def test_store_raises_when_the_first_version_is_invalid(tmp_path):
    file = _File(tmp_path / "profiles.yaml")
    file.write("profiles: []\n")
    store = ProfileStore(file.path)
    with pytest.raises(ProfilesInvalid) as e:
        store.get()
    assert (
        str(e.value) == f"{file.path}:1: profiles: the list is empty; define at least one profile"
    )
    file.write(V1)
    assert slugs_of(store) == ["small"]


def test_store_for_path_is_shared_per_file(tmp_path, monkeypatch):
    (tmp_path / "a.yaml").write_text(V1)
    (tmp_path / "b.yaml").write_text(V1)
    monkeypatch.chdir(tmp_path)
    store = ProfileStore.for_path(tmp_path / "a.yaml")
    assert ProfileStore.for_path("a.yaml") is store
    assert ProfileStore.for_path(tmp_path / "b.yaml") is not store


# ------------------------------------------------------------ KubeSpawner, z2jh

KUBE = """\
profiles:
  - slug: small
    display_name: Small
    description: Explore.
    default: true
    cpu_guarantee: 250m
    cpu_limit: 1
    mem_guarantee: 512Mi
    mem_limit: 1.5Gi
  - slug: gpu
    display_name: GPU
    environment: torch
    mem_limit: 2G
    gpu: 2
    groups: [gpu-users]
    kubernetes:
      node_selector:
        accelerator: t4
      tolerations:
        - key: nvidia.com/gpu
          operator: Exists
          effect: NoSchedule
      kubespawner_override:
        environment:
          EXTRA: "1"
          SHIPYARD_ENV: null
        node_selector:
          zone: a
        extra_resource_limits:
          nvidia.com/gpu: "4"
        image_pull_policy: Always
        cpu_limit: 3
        mem_limit: null
"""

SMALL_ENTRY = {
    "display_name": "Small",
    "slug": "small",
    "description": "Explore.",
    "default": True,
    "kubespawner_override": {
        "cpu_guarantee": 0.25,
        "cpu_limit": 1.0,
        "mem_guarantee": "512M",
        "mem_limit": "1536M",
        "environment": {"SHIPYARD_PROFILE": "small", "SHIPYARD_ENV": "base"},
    },
}
GPU_ENTRY = {
    "display_name": "GPU",
    "slug": "gpu",
    "description": "",
    "kubespawner_override": {
        # passthrough replaces a scalar, and None is passed on as KubeSpawner's "unset"
        "cpu_limit": 3,
        "mem_limit": None,
        "extra_resource_guarantees": {"nvidia.com/gpu": "2"},
        # dicts merge key by key
        "extra_resource_limits": {"nvidia.com/gpu": "4"},
        "node_selector": {"accelerator": "t4", "zone": "a"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        # ... and None deletes a generated key
        "environment": {"SHIPYARD_PROFILE": "gpu", "EXTRA": "1"},
        "image_pull_policy": "Always",
    },
}


def test_kubespawner_profile_list():
    assert kubespawner_profile_list(parse(KUBE).profiles) == [SMALL_ENTRY, GPU_ENTRY]


def test_kubespawner_profile_list_with_images():
    entries = kubespawner_profile_list(
        parse(KUBE).profiles, "registry.example.org/sy-{environment}:1"
    )
    assert [e["kubespawner_override"]["image"] for e in entries] == [
        "registry.example.org/sy-base:1",
        "registry.example.org/sy-torch:1",
    ]


def test_z2jh_values():
    assert z2jh_values(parse(KUBE)) == {"singleuser": {"profileList": [SMALL_ENTRY, GPU_ENTRY]}}


def test_overrides_of_a_bare_profile():
    profile = Profile(slug="bare", display_name="Bare")
    assert kubespawner_overrides(profile) == {
        "environment": {"SHIPYARD_PROFILE": "bare", "SHIPYARD_ENV": "base"}
    }


def test_repository_profiles_gpu_resources():
    config = load_profiles(REPO / "config" / "profiles.yaml")
    override = kubespawner_overrides(config.get("gpu"))
    assert override["extra_resource_guarantees"] == {"nvidia.com/gpu": "1"}
    assert override["extra_resource_limits"] == {"nvidia.com/gpu": "1"}
    assert "extra_resource_limits" not in kubespawner_overrides(config.get("small"))
