"""Servers in podman containers (``c.LocalHost.placement = "container"``), against a real hub.

The pure builders are checked without podman (the create body for a profile, the
firewall rules, the URLs a container reaches); then one hub per module, with
configurable-http-proxy and the ``base`` environment's image (built once per machine
by ``shipyard image base`` and ``shipyard image build base``, as tests/test_images.py
does, and reused while the lock holds), spawns servers as containers: a kernel runs
in one, its files are the user's, the memory limit kills a kernel, every security
default is tried from inside and refused, a hub restart re-adopts the container, and
a stop leaves no container, network or firewall rule behind. The hub runs the
scheduler and tracking too: a job scheduled by a user with no server runs in a
container of its profile's image (the scheduler inherits the placement) and logs to
tracking as its owner through the user's confined network (#17 point 7).
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import subprocess
import time
from pathlib import Path

import pytest
import requests
from traitlets.config import Config

from hub_ext.environments.catalog import get_environment
from hub_ext.environments.images import image_tag
from hub_ext.host import containerhost, containers
from hub_ext.host.cgroups import read_counters
from hub_ext.host.containers import ContainerSpec, create_spec, firewall_rules
from hub_ext.host.slugs import account_name
from hub_ext.host.usage import UsageLedger
from hub_ext.profiles.model import Profile

from . import containertools
from .conftest import TEST_PROFILES
from .containertools import ensure_base_image, needs_podman, podman
from .hubtools import REPO, run_in_kernel, stdout_of, tagged, wait_for
from .services import (
    Scheduler,
    config_folder,
    create_job,
    notebook,
    service_hub,
    user_with_account,
    wait_for_services,
)

#: A test-only environment, declared in the hub's own images folder only (see
#: :func:`images_folder`): its lock is unique to each run of this module, so its image
#: tag can never be built on the machine, whatever environments someone built there
UNBUILT = "unbuilt"

PROFILES = (
    TEST_PROFILES.split("quotas:")[0]
    + f"""  - slug: unbuilt
    display_name: Unbuilt
    environment: {UNBUILT}
    mem_limit: 512Mi
quotas:"""
    + TEST_PROFILES.split("quotas:")[1]
)

ULIMITS = ["--ulimit", "nofile=1024:2048", "--ulimit", "nproc=512:512"]


def tiny() -> Profile:
    return Profile.model_validate(
        {
            "slug": "tiny",
            "display_name": "Tiny",
            "cpu_guarantee": "100m",
            "cpu_limit": "500m",
            "mem_guarantee": "128Mi",
            "mem_limit": "400Mi",
        }
    )


IDMAPPED = "/run/shipyard/idmapped/shipyard-alice"


def spec(**changes) -> ContainerSpec:
    fields = dict(
        name="shipyard-alice",
        image="localhost/shipyard-base:0123456789ab",
        command=["jupyterhub-singleuser"],
        env={"JUPYTERHUB_API_TOKEN": "t"},
        owner="alice",
        uid=1234,
        gid=1235,
        home="/home/jupyter-alice",
        home_source=IDMAPPED,
        profile=tiny(),
        network="shipyard-alice",
        port=8888,
    )
    fields.update(changes)
    return ContainerSpec(**fields)


# ------------------------------------------------------------------ pure builders


def test_the_create_body_of_a_profile_is_secure_and_limited():
    body = create_spec(spec(), containers.rlimits(ULIMITS))
    assert body == {
        "name": "shipyard-alice",
        "image": "localhost/shipyard-base:0123456789ab",
        "command": ["jupyterhub-singleuser"],
        "env": {"JUPYTERHUB_API_TOKEN": "t"},
        "work_dir": "/home/jovyan",
        "user": "1000:100",
        "labels": {"io.shipyard.user": "alice", "io.shipyard.profile": "tiny"},
        "stop_timeout": 10,
        "privileged": False,
        "cap_drop": ["ALL"],
        "no_new_privileges": True,
        "seccomp_policy": "default",
        "read_only_filesystem": True,
        "read_write_tmpfs": False,
        "mounts": [
            {
                "destination": "/home/jovyan",
                "type": "bind",
                "source": IDMAPPED,
                "options": ["rbind", "rw", "nosuid", "nodev"],
            },
            {
                "destination": "/tmp",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["rw", "nosuid", "nodev", "mode=1777", "size=1g"],
            },
        ],
        "resource_limits": {
            "pids": {"limit": 1024},
            "memory": {
                "limit": 400 * 2**20,
                "swap": 400 * 2**20,
                "reservation": 128 * 2**20,
            },
            "cpu": {"quota": 50_000, "period": 100_000, "shares": 102},
        },
        "r_limits": [
            {"type": "nofile", "soft": 1024, "hard": 2048},
            {"type": "nproc", "soft": 512, "hard": 512},
        ],
        "netns": {"nsmode": "bridge"},
        "Networks": {"shipyard-alice": {}},
        "portmappings": [
            {"host_ip": "127.0.0.1", "container_port": 8888, "host_port": 0, "protocol": "tcp"}
        ],
    }
    # no runtime socket, no host path but the home (its idmapped mount); no user namespace
    assert [m["source"] for m in body["mounts"] if m["type"] == "bind"] == [IDMAPPED]
    assert "idmappings" not in body


def test_an_idmap_container_needs_its_home_s_idmapped_mount():
    with pytest.raises(ValueError, match="idmapped mount"):
        create_spec(spec(home_source=""), [])


def test_the_idmapped_home_shows_the_account_as_the_images_uid():
    # uid_map/gid_map lines: "<on disk (inside)> <shown (outside)> <count>"
    assert containers.idmap_lines(1234, 1235) == ("1234 1000 1\n", "1235 100 1\n")


def test_without_a_user_namespace_the_container_runs_as_the_account_on_its_home():
    body = create_spec(spec(user_namespace="none", home_source=""), [])
    assert body["user"] == "1234:1235" and "idmappings" not in body
    assert body["mounts"][0]["source"] == "/home/jupyter-alice"


def test_a_profile_without_limits_gets_only_the_pids_limit_and_no_port_when_none():
    bare = Profile.model_validate({"slug": "bare", "display_name": "Bare"})
    body = create_spec(spec(profile=bare, port=None, pids_limit=64), [])
    assert body["resource_limits"] == {"pids": {"limit": 64}}
    assert "portmappings" not in body and body["r_limits"] == []


def test_auto_uses_the_idmapped_home_unless_a_host_account_has_uid_1000(monkeypatch):
    placement = containers.ContainerPlacement()
    assert placement.user_namespace == "auto"
    monkeypatch.setattr(containers, "host_account_of_image_uid", lambda: None)
    assert placement.user_mode() == "idmap"
    monkeypatch.setattr(containers, "host_account_of_image_uid", lambda: "someone")
    assert placement.user_mode() == "none"
    assert containers.ContainerPlacement(user_namespace="idmap").user_mode() == "idmap"


def test_a_mapped_user_namespace_makes_the_images_uid_the_account():
    body = create_spec(spec(user_namespace="map", subid_base=200000), [])
    assert body["user"] == "1000:100"
    assert body["idmappings"] == {
        "UIDMap": [
            {"container_id": 0, "host_id": 200000, "size": 1000},
            {"container_id": 1000, "host_id": 1234, "size": 1},
            {"container_id": 1001, "host_id": 201001, "size": 64535},
        ],
        "GIDMap": [
            {"container_id": 0, "host_id": 200000, "size": 100},
            {"container_id": 100, "host_id": 1235, "size": 1},
            {"container_id": 101, "host_id": 200101, "size": 65435},
        ],
    }


#: What ``nvidia-ctk cdi generate`` writes for a machine with two GPUs (abridged).
NVIDIA_CDI = """\
cdiVersion: 0.5.0
kind: nvidia.com/gpu
devices:
- name: "0"
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
- name: "1"
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia1
- name: all
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
    - path: /dev/nvidia1
containerEdits:
  env:
  - NVIDIA_VISIBLE_DEVICES=void
  deviceNodes:
  - path: /dev/nvidiactl
"""


def test_cdi_specs_declare_the_gpus_containers_get_one_by_one(tmp_path):
    (tmp_path / "nvidia.yaml").write_text(NVIDIA_CDI)
    (tmp_path / "other.json").write_text('{"cdiVersion": "0.5.0", "kind": "vendor.com/fpga",'
                                         ' "devices": [{"name": "a"}]}')  # fmt: skip
    (tmp_path / "broken.yaml").write_text("kind: [")
    documents = containers.read_cdi_specs([str(tmp_path), str(tmp_path / "missing")])
    assert containers.cdi_devices(documents) == ["nvidia.com/gpu=0", "nvidia.com/gpu=1"]
    placement = containers.ContainerPlacement(cdi_spec_dirs=[str(tmp_path)])
    assert placement.gpu_devices() == ["nvidia.com/gpu=0", "nvidia.com/gpu=1"]
    assert containers.ContainerPlacement(cdi_spec_dirs=[]).gpu_devices() == []


def test_a_container_with_gpus_gets_their_cdi_devices_and_no_hiding_variables():
    body = create_spec(
        spec(
            devices=("nvidia.com/gpu=1",),
            env={"CUDA_VISIBLE_DEVICES": "", "NVIDIA_VISIBLE_DEVICES": "void", "A": "b"},
        ),
        containers.rlimits(ULIMITS),
    )
    assert body["devices"] == [{"path": "nvidia.com/gpu=1"}]
    assert body["env"] == {"A": "b"}
    assert "devices" not in create_spec(spec(), containers.rlimits(ULIMITS))


def test_without_cdi_gpus_are_refused_with_the_toolkit_command():
    message = containers.gpu_refusal(1, 0, ["/etc/cdi", "/var/run/cdi"])
    assert "no CDI spec of nvidia.com/gpu is in /etc/cdi or /var/run/cdi" in message
    assert "nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml" in message
    assert containers.gpu_refusal(2, 1, ["/etc/cdi"]).endswith("declare 1.")


def test_every_server_s_spawner_shares_one_host_and_its_gpu_allocator(tmp_path):
    """Two users' servers must never be given the same GPU: one allocator for all spawners."""
    from unittest import mock

    from hub_ext.spawners.containers import ContainerProfileSpawner

    (tmp_path / "nvidia.yaml").write_text(NVIDIA_CDI)
    config = Config({"ContainerPlacement": {"cdi_spec_dirs": [str(tmp_path)],
                                            "network_prefix": "sy-gpu-test"}})  # fmt: skip
    spawners = [
        ContainerProfileSpawner(user=mock.Mock(name=name), hub=mock.Mock(), config=config)
        for name in ("ann", "bob")
    ]
    assert spawners[0].host is spawners[1].host
    assert spawners[0].gpu_count == 2
    first = spawners[0].host.allocate_gpus("sy-gpu-test-ann", 1)
    second = spawners[1].host.allocate_gpus("sy-gpu-test-bob", 1)
    assert first != second
    with pytest.raises(containerhost.ContainerFailed, match="only 0 of the machine's 2"):
        spawners[1].host.allocate_gpus("sy-gpu-test-cy", 1)
    for name in ("ann", "bob"):
        spawners[0].host.gpus.release(f"sy-gpu-test-{name}")


def test_the_host_limits_become_rlimits():
    assert containers.rlimits(ULIMITS) == [
        {"type": "nofile", "soft": 1024, "hard": 2048},
        {"type": "nproc", "soft": 512, "hard": 512},
    ]
    assert {r["type"] for r in containers.rlimits()} == {"nofile", "nproc"}


def test_the_image_is_the_environment_s_and_an_unknown_environment_is_refused():
    assert containers.image_for(tiny()) == image_tag(get_environment("base"))
    odd = Profile.model_validate({"slug": "odd", "display_name": "Odd", "environment": "nosuch"})
    with pytest.raises(containers.ImageMissing, match="No environment 'nosuch'"):
        containers.image_for(odd)
    assert "`shipyard image build base`" in str(containers.image_missing(tiny(), "x:1"))


@pytest.mark.parametrize(
    "url, reached",
    [
        ("http://127.0.0.1:8081/hub/api", "http://10.89.3.1:8081/hub/api"),
        ("http://localhost:8000/services/tracking", "http://10.89.3.1:8000/services/tracking"),
        ("http://127.0.0.1/x", "http://10.89.3.1/x"),
        ("https://hub.example.org/hub/api", "https://hub.example.org/hub/api"),
        ("http://0.0.0.0:8000/services/tracking", "http://10.89.3.1:8000/services/tracking"),
        ("http://10.0.0.5:8000/x", "http://10.0.0.5:8000/x"),
    ],
)
def test_loopback_urls_are_reached_at_the_gateway(url, reached):
    assert containers.reach_from_container(url, "10.89.3.1") == reached


def test_the_reached_ports_are_those_of_loopback_urls():
    urls = ["http://127.0.0.1:8081/hub/api", "http://localhost/x", "https://example.org:9/"]
    assert containers.loopback_ports(urls) == [80, 8081]
    assert containers.loopback_ports(["https://0.0.0.0/", "http://[::1]:7/"]) == [7, 443]


def test_firewall_rules_accept_only_the_listed_ports_and_drop_the_rest():
    rules = firewall_rules("net-a", "10.89.3.0/24", "10.89.3.1", [8081, 8000])
    tag = ["-m", "comment", "--comment", "shipyard:net-a"]
    assert rules == [
        ["-t", "mangle", "-I", "PREROUTING", "1", "-s", "10.89.3.0/24", *tag, "-j", "DROP"],
        ["-t", "mangle", "-I", "PREROUTING", "1", "-s", "10.89.3.0/24", "-m", "conntrack"]
        + ["--ctstate", "ESTABLISHED,RELATED", *tag, "-j", "ACCEPT"],
        ["-t", "mangle", "-I", "PREROUTING", "1", "-s", "10.89.3.0/24", "-d", "10.89.3.1"]
        + ["-p", "tcp", "--dport", "8000", *tag, "-j", "ACCEPT"],
        ["-t", "nat", "-I", "PREROUTING", "1", "-s", "10.89.3.0/24", "-d", "10.89.3.1"]
        + ["-p", "tcp", "--dport", "8000", *tag, "-j", "DNAT", "--to-destination"]
        + ["127.0.0.1:8000"],
        ["-t", "mangle", "-I", "PREROUTING", "1", "-s", "10.89.3.0/24", "-d", "10.89.3.1"]
        + ["-p", "tcp", "--dport", "8081", *tag, "-j", "ACCEPT"],
        ["-t", "nat", "-I", "PREROUTING", "1", "-s", "10.89.3.0/24", "-d", "10.89.3.1"]
        + ["-p", "tcp", "--dport", "8081", *tag, "-j", "DNAT", "--to-destination"]
        + ["127.0.0.1:8081"],
    ]


def test_a_network_s_rules_are_its_own_even_where_another_s_name_begins_with_it():
    # as `iptables -S` lists them: rita's rules are not rita2's, whose name begins with hers
    listed = [
        "-A PREROUTING -s 10.89.3.0/24 -m comment --comment shipyard:net-rita2 -j DROP",
        '-A PREROUTING -s 10.89.4.0/24 -m comment --comment "shipyard:net-rita" -j DROP',
        "-A PREROUTING -s 10.89.5.0/24 -j ACCEPT",
    ]
    assert [containers.rule_of(line, "net-rita") for line in listed] == [False, True, False]
    assert [containers.rule_of(line, "net-rita2") for line in listed] == [True, False, False]


def test_each_user_has_a_network_of_their_own():
    assert containers.network_name("shipyard", "alice") == "shipyard-alice"
    assert containers.network_name("shipyard", "Al.ice") != containers.network_name(
        "shipyard", "al-ice"
    )


# ------------------------------------------------------------------ real containers


@pytest.fixture(scope="module")
def base_image() -> str:
    return ensure_base_image()


PREFIX = tagged("shipyard-test") + "-ctr"
ACCOUNT_PREFIX = tagged("syctrhub-")
CGROUP_PARENT = tagged("shipyard-test-ctrhub")
#: The hub's services: scheduled runs in containers log to tracking.
SERVICES = ("scheduler", "tracking")


def leftovers() -> dict[str, list[str]]:
    return containertools.leftovers(PREFIX)


def remove_leftovers() -> None:
    containertools.remove_leftovers(PREFIX)


def images_folder(folder: Path) -> Path:
    """The repository's ``images/`` plus :data:`UNBUILT`, for the hub's ``$SHIPYARD_IMAGES``.

    Each entry of ``images/`` is linked, so ``base`` has its lock and its image tag;
    :data:`UNBUILT` is ``base``'s lock with a random comment, so its digest, and the
    image tag made from it, are this run's alone and never built.
    """
    images = folder / "images"
    images.mkdir()
    for entry in (REPO / "images").iterdir():
        (images / entry.name).symlink_to(entry)
    unbuilt = images / UNBUILT
    unbuilt.mkdir()
    lock = (REPO / "images" / "base" / "requirements.lock").read_text()
    (unbuilt / "requirements.lock").write_text(
        f"{lock}\n# test-only, never built: {secrets.token_hex(16)}\n"
    )
    return images


@pytest.fixture(scope="module")
def hub(hub_factory, base_image, tmp_path_factory):
    """One hub with ``c.LocalHost.placement = "container"``; servers survive its restarts.

    The scheduler and tracking run beside it, as the hub starts them: the scheduler
    inherits the placement ($SHIPYARD_HOST_CONFIG) and runs jobs in containers too.
    """
    folder = tmp_path_factory.mktemp("ctr-config")
    images = images_folder(folder)
    # a container killed behind the hub's back is noticed within seconds
    config = containertools.hub_config(folder, PREFIX, "c.Spawner.poll_interval = 2\n")
    remove_leftovers()
    with service_hub(
        hub_factory,
        "ctr",
        ACCOUNT_PREFIX,
        CGROUP_PARENT,
        SERVICES,
        profiles=PROFILES,
        config_file=config,
        # servers outlive a hub stop, as in production after a crash: the restart test
        extra_env={"SHIPYARD_CLEANUP_SERVERS": "0", "SHIPYARD_IMAGES": str(images)},
    ) as hub:
        yield hub
        for user in hub.api("GET", "/users").json():
            for name in user.get("servers", {}):
                hub.stop_server(user["name"], name)
    remove_leftovers()


def inspect(name: str) -> dict:
    out = podman("container", "inspect", name)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)[0]


def container_of(hub, user: str, server: str = "") -> dict:
    return inspect(hub.server_state(user, server)["object_name"])


def usage_records(hub, container: str) -> list[dict]:
    """The usage ledger's records of a server's container (the hub's ledger, servers' folder)."""
    ledger = UsageLedger(hub.data_dir / "usage-ledger")
    return [r for _, r in ledger.records([CGROUP_PARENT]) if r["cgroup"] == container]


def usage_record(hub, container: str) -> dict:
    """The one record of ``container``, once the hub opened it (it reads the cgroup once running)."""
    wait_for(lambda: usage_records(hub, container), 15, what=f"a usage record of {container}")
    (record,) = usage_records(hub, container)
    return record


#: A scheduled job's notebook: logs to tracking with the MLflow client the scheduler set
#: up (MLFLOW_TRACKING_URI, _TOKEN, _EXPERIMENT_NAME), tells the job its MLflow run, writes
#: a file, then waits for the test to have seen its container.
TRACKED = (
    "import json, os, time\n"
    # a tracking service out of reach fails the run in seconds, not after minutes of retries
    "os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES='0', MLFLOW_HTTP_REQUEST_TIMEOUT='10')\n"
    "import mlflow\n"
    "with mlflow.start_run() as run:\n"
    "    mlflow.log_param('alpha', alpha)\n"
    "    mlflow.log_metric('score', 0.75)\n"
    "with open(os.environ['SHIPYARD_JOB_RESULT_FILE'], 'w') as f:\n"
    "    json.dump({'mlflow_run_id': run.info.run_id}, f)\n"
    "with open('made-by-the-run.txt', 'w') as f:\n"
    "    f.write(os.environ['MLFLOW_TRACKING_URI'])\n",
    "deadline = time.time() + 60\n"
    "while not os.path.exists(os.path.expanduser('~/seen')) and time.time() < deadline:\n"
    "    time.sleep(0.1)\n",
)


def run_containers(**labels: str) -> list[dict]:
    """Run containers of this hub's instance with ``labels``, as ``podman ps`` shows them."""
    wanted = {"io.shipyard.instance": PREFIX, "io.shipyard.role": "run", **labels}
    filters = [arg for key, value in wanted.items() for arg in ("--filter", f"label={key}={value}")]
    out = podman("ps", "-a", *filters, "--format", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout or "[]")


@needs_podman
def test_a_scheduled_run_is_a_container_that_logs_to_tracking_as_its_owner(
    hub, base_image, home_root
):
    """#17 point 7: the scheduler inherits the placement; its run reaches tracking as its owner.

    rita has no server; rita2 has one, whose network's name begins with rita's: making
    and removing rita's network and rules must leave rita2's alone.
    """
    wait_for_services(hub, SERVICES)
    sched = Scheduler(hub, config_folder(hub) / "clock")
    rita = user_with_account(hub, home_root, "rita")
    other = user_with_account(hub, home_root, "rita2")
    token, home, account = rita
    assert not hub.api("GET", "/users/rita").json()["servers"], "no server of rita's runs"
    (home / "seen").unlink(missing_ok=True)
    hub.start_server("rita2")
    others_container = hub.server_state("rita2")["object_name"]
    others_network = f"{PREFIX}-rita2"
    others_ports = containers.firewall_ports(others_network)
    assert containers.firewall_present(others_network) and others_ports, others_ports
    spawned = time.monotonic()

    job = create_job(
        sched,
        rita,
        "tracked",
        notebook(*TRACKED, parameters="alpha = 0.1"),
        parameters={"alpha": 0.5},
    )
    r = sched.call("POST", f"api/jobs/{job['id']}/runs", token, json={})
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]

    # while it runs: a container of the profile's image, rita's, on rita's own network
    def running():
        found = run_containers(**{"io.shipyard.run": run_id})
        if not found:
            state = sched.call("GET", f"api/runs/{run_id}", token).json()
            assert state["status"] in ("queued", "running"), (state, hub.log_tail())
        return found[0] if found and found[0]["State"] == "running" else None

    container = wait_for(running, 90, 0.2, f"run {run_id}'s container")
    assert container["Image"] == base_image
    assert container["Labels"]["io.shipyard.user"] == "rita"
    assert container["Networks"] == [f"{PREFIX}-rita"]
    inspected = inspect(container["Names"][0])
    assert inspected["Config"]["User"] == "1000:100"
    assert inspected["HostConfig"]["ReadonlyRootfs"] is True
    assert inspected["HostConfig"]["Memory"] == 400 * 2**20  # the tiny profile's limit
    # rita's network reaches the proxy's port alone (tracking behind it); rita2's kept theirs
    assert containers.firewall_ports(f"{PREFIX}-rita") == {hub.port}
    assert containers.firewall_ports(others_network) == others_ports
    seen = home / "seen"
    seen.write_text("")
    os.chown(seen, account.pw_uid, account.pw_gid)

    run = sched.wait_run(run_id, token, timeout=90)
    log = sched.call("GET", f"api/runs/{run_id}/log", token).json()["text"]
    assert run["status"] == "succeeded", f"{run}\n{log}"
    assert run["mlflow_run_id"], f"{run}\n{log}"
    seconds = time.monotonic() - spawned

    # the file the run wrote is rita's, in her run's output, and names tracking at the gateway
    made = Path(run["output_path"]).parent / "made-by-the-run.txt"
    uri = made.read_text()
    assert uri.endswith("/services/tracking") and "127.0.0.1" not in uri, uri
    assert (made.stat().st_uid, made.stat().st_gid) == (account.pw_uid, account.pw_gid)

    # the parameter and the metric arrived in tracking, in rita's own experiment
    api = f"{hub.url}/services/tracking/api/2.0/mlflow"
    as_rita = {"Authorization": f"token {token}"}
    r = requests.get(
        f"{api}/runs/get", params={"run_id": run["mlflow_run_id"]}, headers=as_rita, timeout=30
    )
    assert r.status_code == 200, r.text
    logged = r.json()["run"]
    assert {m["key"]: m["value"] for m in logged["data"]["metrics"]} == {"score": 0.75}
    assert {p["key"]: p["value"] for p in logged["data"]["params"]} == {"alpha": "0.5"}
    r = requests.get(
        f"{api}/experiments/get",
        params={"experiment_id": logged["info"]["experiment_id"]},
        headers=as_rita,
        timeout=30,
    )
    assert r.json()["experiment"]["name"] == "rita/Default"

    # rita2 sees neither the run, its log and output, nor what it logged, nor its files
    for path in (f"api/runs/{run_id}", f"api/runs/{run_id}/log", f"api/runs/{run_id}/output"):
        r = sched.call("GET", path, other[0])
        assert r.status_code == 404, (path, r.text)
    r = requests.get(
        f"{api}/runs/get",
        params={"run_id": run["mlflow_run_id"]},
        headers={"Authorization": f"token {other[0]}"},
        timeout=30,
    )
    assert r.status_code in (403, 404), r.text
    read = subprocess.run(
        ["cat", str(made)],
        user=other[2].pw_uid,
        group=other[2].pw_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
    )
    assert read.returncode != 0 and "Permission denied" in read.stderr, read

    # no run container is left, nor rita's network, rules or mounts; rita2's rules stay
    run_name = container["Names"][0].rsplit("-", 1)[0]

    def cleaned():
        left = leftovers()
        return not run_containers() and left == {
            "containers": [others_container],
            "networks": [others_network],
            "rules": [rule for rule in left["rules"] if f"shipyard:{others_network}" in rule],
            "mounts": [m for m in left["mounts"] if run_name not in m],
        }

    wait_for(
        cleaned, 30, 0.2, f"the run's containers, rita's network and rules to go: {leftovers()}"
    )
    assert containers.firewall_ports(others_network) == others_ports
    assert containers.firewall_present(others_network)
    hub.stop_server("rita2")
    print(f"a scheduled run in a container, logged to tracking: {seconds:.1f} s")


@needs_podman
def test_a_server_runs_in_a_container_of_its_profile_and_its_kernel_too(hub, base_image):
    token = hub.create_user("alice")
    hub.start_server("alice")
    found = container_of(hub, "alice")
    account = pwd.getpwnam(account_name("alice", hub.account_prefix))
    assert found["ImageName"] == base_image
    # the Jupyter Docker Stacks' jovyan inside (no user namespace), the account on the home
    assert found["Config"]["User"] == "1000:100"
    assert not found["HostConfig"].get("IDMappings", {}).get("UidMap")
    host = found["HostConfig"]
    assert host["ReadonlyRootfs"] is True and host["Privileged"] is False
    assert host["Memory"] == 400 * 2**20 and host["CpuQuota"] == 50_000
    assert host["PidsLimit"] == 1024
    assert "no-new-privileges" in host["SecurityOpt"]
    # every capability podman would have given is dropped, none added (CapEff: below)
    assert {"CAP_SETUID", "CAP_SETGID", "CAP_NET_RAW", "CAP_CHOWN"} <= set(host["CapDrop"])
    assert not host.get("CapAdd")
    ports = found["NetworkSettings"]["Ports"]["8888/tcp"]
    assert [p["HostIp"] for p in ports] == ["127.0.0.1"]
    assert list(found["NetworkSettings"]["Networks"]) == [f"{PREFIX}-alice"]
    # its usage is recorded from its own cgroup, labelled as a process's server would be
    usage = usage_record(hub, hub.server_state("alice")["object_name"])
    assert (usage["kind"], usage["owner"], usage["object"]) == ("server", "alice", "server/alice/")
    assert (usage["profile"], usage["mem_limit"], usage["final"]) == ("tiny", 400 * 2**20, None)
    assert found["Id"] in usage["dirs"]["cpu"]
    before = read_counters(usage["driver"], usage["dirs"])
    assert before is not None and before.cpu_usec and before.mem_current

    code = (
        "import os, sys, pathlib, subprocess\n"
        "pathlib.Path('made-in-a-kernel.txt').write_text('hi')\n"
        "print(subprocess.run(['id', '-u'], capture_output=True, text=True).stdout.strip(),"
        " os.getgid(), os.environ['HOME'], os.getcwd(), sys.executable,"
        " os.environ['SHIPYARD_ENV_DIGEST'])"
    )
    out = stdout_of(run_in_kernel(hub.server_url("alice"), token, code)).split()
    env = get_environment("base")
    assert out == [
        "1000",
        "100",
        "/home/jovyan",
        "/home/jovyan",
        "/opt/env/bin/python",
        env.digest,
    ]
    made = Path(account.pw_dir) / "made-in-a-kernel.txt"
    assert made.read_text() == "hi"
    assert (made.stat().st_uid, made.stat().st_gid) == (account.pw_uid, account.pw_gid)
    # the kernel ran in the container's cgroup: its CPU time is in the counters
    after = read_counters(usage["driver"], usage["dirs"])
    assert after is not None and after.cpu_usec > before.cpu_usec + 100_000


#: Run in a kernel: each attempt that the container's defaults must refuse, and how it went.
ATTEMPTS = r"""
import ctypes, errno, json, os, socket, urllib.request
results = {}
def attempt(name, fn):
    try:
        fn()
        results[name] = "allowed"
    except Exception as e:
        results[name] = type(e).__name__ + ": " + str(e)[:80]
def write_root():
    open("/etc/shipyard-was-here", "w").write("x")
def mount():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
def setuid():
    os.setuid(0)
def connect(host, port):
    def go():
        with socket.create_connection((host, port), timeout=3):
            pass
    return go
attempt("write /", write_root)
attempt("mount", mount)
attempt("setuid 0", setuid)
for path in ("/run/podman/podman.sock", "/var/run/docker.sock", SOCKET):
    if os.path.exists(path):
        results["socket " + path] = "visible"
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
results["CapEff"] = status["CapEff"].strip()
results["NoNewPrivs"] = status["NoNewPrivs"].strip()
results["Seccomp"] = status["Seccomp"].strip()
gateway = os.environ["JUPYTERHUB_API_URL"].split("//")[1].split(":")[0]
attempt("other user's server", connect(OTHER_IP, 8888))
attempt("host port not allowed", connect(gateway, PROXY_API_PORT))
attempt("internet", connect("1.1.1.1", 80))
attempt("hub api", lambda: urllib.request.urlopen(os.environ["JUPYTERHUB_API_URL"], timeout=5))
print(json.dumps(results))
"""


@needs_podman
def test_every_security_default_is_tried_from_inside_and_refused(hub):
    token = hub.create_user("mallory")
    hub.create_user("victor")
    hub.start_server("mallory")
    hub.start_server("victor")
    victor = container_of(hub, "victor")
    victor_ip = victor["NetworkSettings"]["Networks"][f"{PREFIX}-victor"]["IPAddress"]
    code = (
        ATTEMPTS.replace("OTHER_IP", repr(victor_ip))
        .replace("PROXY_API_PORT", str(hub.proxy_api_port))
        .replace("SOCKET", repr(str(hub.data_dir / "podman.sock")))
    )
    messages = run_in_kernel(hub.server_url("mallory"), token, code)
    results = json.loads(stdout_of(messages).strip().splitlines()[-1])
    assert (
        results["write /"].startswith("OSError") and "Read-only file system" in results["write /"]
    )
    assert "Operation not permitted" in results["mount"]
    assert results["setuid 0"].startswith("PermissionError")
    assert not [k for k in results if k.startswith("socket")], results
    assert results["CapEff"] == "0000000000000000"
    assert results["NoNewPrivs"] == "1"
    assert results["Seccomp"] == "2"  # a filter: podman's default profile
    for blocked in ("other user's server", "host port not allowed", "internet"):
        assert results[blocked].startswith(("TimeoutError", "ConnectionRefusedError")), results
    assert results["hub api"] == "allowed", results
    hub.stop_server("victor")


@needs_podman
def test_a_kernel_past_the_memory_limit_is_killed_and_the_server_lives_on(hub):
    token = hub.create_user("olga")
    hub.start_server("olga")
    url = hub.server_url("olga")
    messages = run_in_kernel(url, token, "x = b'1' * (1 << 30)\nprint('survived')", timeout=90)
    states = [
        m["content"]["execution_state"] for m in messages if m["header"]["msg_type"] == "status"
    ]
    assert "restarting" in states or "dead" in states, f"kernel was not killed: {states}"
    assert "survived" not in stdout_of(messages)
    # the container's own cgroup counted the kill (cgroup v1 or v2)
    found = container_of(hub, "olga")
    cgroup = found["State"].get("CgroupPath", "")
    counters = [
        Path("/sys/fs/cgroup/memory") / cgroup.lstrip("/") / "memory.oom_control",
        Path("/sys/fs/cgroup") / cgroup.lstrip("/") / "memory.events",
    ]
    kills = [
        int(line.split()[1])
        for f in counters
        if f.exists()
        for line in f.read_text().splitlines()
        if line.startswith("oom_kill ")
    ]
    assert kills and kills[0] >= 1, (cgroup, kills)
    assert found["State"]["Running"]
    r = requests.get(url + "api/status", headers={"Authorization": f"token {token}"}, timeout=30)
    assert r.status_code == 200, r.text
    hub.stop_server("olga")


@needs_podman
def test_quotas_count_containers_and_a_missing_image_is_refused_with_the_command(hub):
    hub.create_user("quinn", ["research"])
    hub.start_server("quinn", profile="tiny")
    hub.start_server("quinn", "second", profile="tiny")
    r = hub.api("POST", "/users/quinn/servers/third", json={"profile": "tiny"})
    assert r.status_code == 403 and "Quota exceeded" in r.json()["message"], r.text
    hub.stop_server("quinn", "second")
    unbuilt = image_tag(get_environment(UNBUILT, Path(hub.extra_env["SHIPYARD_IMAGES"])))
    assert podman("image", "exists", unbuilt).returncode == 1, f"{unbuilt} cannot exist"
    r = hub.api("POST", "/users/quinn/servers/unbuilt", json={"profile": "unbuilt"})
    assert r.status_code == 503, r.text
    message = r.json()["message"]
    assert f"`shipyard image build {UNBUILT}`" in message and unbuilt in message, message
    r = hub.api("POST", "/users/quinn/servers/gpu", json={"profile": "gpu"})
    assert r.status_code == 409, r.text
    hub.stop_server("quinn")


@needs_podman
def test_a_hub_restart_re_adopts_the_container_and_a_stop_leaves_nothing(hub):
    token = hub.create_user("sam")
    hub.start_server("sam")
    state = hub.server_state("sam")
    before = inspect(state["object_name"])["Id"]
    usage = usage_record(hub, state["object_name"])

    assert hub.stop() == 0
    assert inspect(state["object_name"])["State"]["Running"], "the container outlives the hub"
    hub.start()
    r = requests.get(
        hub.server_url("sam") + "shipyard/api/profile",
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert r.json()["profile"]["slug"] == "tiny"
    assert hub.server_state("sam")["object_id"] == before
    # the restarted hub went on with the container's open usage record, not a second one
    assert usage_record(hub, state["object_name"])["id"] == usage["id"]
    running = read_counters(usage["driver"], usage["dirs"])
    assert running is not None and running.cpu_usec

    hub.stop_server("sam")
    # closed with its last counters, read before podman deleted the cgroup with the container
    (stopped,) = usage_records(hub, state["object_name"])
    assert stopped["id"] == usage["id"] and stopped["final"]["cpu_usec"] >= running.cpu_usec
    assert read_counters(usage["driver"], usage["dirs"]) is None
    wait_for(
        lambda: not any(f"{PREFIX}-sam" in n for n in sum(leftovers().values(), [])),
        30,
        what="sam's container, network, rules and idmapped home to go",
    )
    assert podman("container", "exists", state["object_name"]).returncode == 1


@needs_podman
def test_a_container_killed_with_sigkill_is_noticed_and_cleaned_up_and_can_start_again(hub):
    token = hub.create_user("kim")
    hub.start_server("kim")
    name = hub.server_state("kim")["object_name"]
    assert podman("kill", "--signal", "KILL", name).returncode == 0

    def gone():
        return "" not in hub.api("GET", "/users/kim").json()["servers"]

    wait_for(gone, 30, what="the hub to notice kim's container died")
    wait_for(
        lambda: not any(f"{PREFIX}-kim" in n for n in sum(leftovers().values(), [])),
        30,
        what="kim's container, network, rules and idmapped home to go",
    )
    hub.start_server("kim")
    r = requests.get(
        hub.server_url("kim") + "api/status",
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    hub.stop_server("kim")


@needs_podman
def test_an_idle_container_is_culled_and_leaves_nothing(hub_factory, base_image, tmp_path_factory):
    """The idle culler stops a server in a container as it stops a process: through the
    hub's API, which removes the container, its mount and the user's network."""
    config = containertools.hub_config(tmp_path_factory.mktemp("ctr-cull"), PREFIX)
    hub = hub_factory(
        name="ctr-cull",
        account_prefix=tagged("syctc-"),
        config_file=config,
        extra_env={"SHIPYARD_CULL_TIMEOUT": "5"},
    )
    try:
        assert "idle-culler" in hub.api("GET", "/services").json()
        hub.create_user("ida")
        hub.start_server("ida", timeout=120)
        name = hub.server_state("ida")["object_name"]
        assert podman("container", "exists", name).returncode == 0
        wait_for(
            lambda: "" not in hub.api("GET", "/users/ida").json()["servers"],
            60,
            1,
            "the culler to stop ida's idle server",
        )
        left = leftovers()
        assert not [n for n in left["containers"] + left["networks"] if "ida" in n], left
        assert not [m for m in left["mounts"] if name in m], left
    finally:
        hub.stop()
