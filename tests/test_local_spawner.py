"""LocalProfileSpawner against a real hub: cgroup limits, accounts, groups, quotas."""

from __future__ import annotations

import contextlib
import pwd
import re
from pathlib import Path

import pytest
import requests

from hub_ext.host.cgroups import CgroupDriver, device_rules, make_driver
from hub_ext.host.localproc import oom_kills
from hub_ext.host.slugs import account_name

from .conftest import needs_root
from .hubtools import cgroup_dirs, processes_of, run_in_kernel, stdout_of, wait_for

pytestmark = needs_root

#: A node anyone may open (crw-rw-rw-) that no Shipyard cgroup allows: the device
#: filter's witness.
UNLISTED_DEVICE = next((p for p in ("/dev/fuse", "/dev/net/tun") if Path(p).exists()), "/dev/fuse")


def host_driver(hub) -> CgroupDriver:
    """The driver the hub picks on this host (v1 or v2, under systemd or not)."""
    return make_driver("auto", hub.cgroup_parent)


def cgroup_of(pid: int) -> dict[str, str]:
    """Each v1 controller's cgroup of ``pid``, and the v2 one under ``""``."""
    paths = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            paths[c] = path
    return paths


def limits_of(driver: CgroupDriver, name: str) -> tuple[int, int, int]:
    """Memory limit, CPU quota (per 100 ms) and CPU shares of cgroup ``name``, v1 or v2.

    v2's ``cpu.weight`` is given as the v1 ``cpu.shares`` it stands for (100 to 1024).
    """
    if driver.kind == "cgroup1":
        memory, cpu = driver.directories(name)[:2]
        assert int((cpu / "cpu.cfs_period_us").read_text()) == 100_000
        return (
            int((memory / "memory.limit_in_bytes").read_text()),
            int((cpu / "cpu.cfs_quota_us").read_text()),
            int((cpu / "cpu.shares").read_text()),
        )
    (directory,) = driver.directories(name)
    quota, period = (directory / "cpu.max").read_text().split()
    assert int(period) == 100_000
    weight = int((directory / "cpu.weight").read_text())
    return int((directory / "memory.max").read_text()), int(quota), weight * 1024 // 100


def test_spawn_two_profiles_enforces_limits_and_accounts(hub, base_env):
    hub.create_user("alice")
    hub.create_user("rita", ["research"])
    hub.start_server("alice")
    hub.start_server("rita", profile="roomy")

    driver = host_driver(hub)
    for user, mem, quota, shares in (
        ("alice", 400 * 2**20, 50_000, 102),
        ("rita", 768 * 2**20, 100_000, 512),
    ):
        state = hub.server_state(user)
        pid = state["pid"]
        cg = cgroup_of(pid)
        where = "/" + "/".join(filter(None, [driver.base, hub.cgroup_parent, user]))
        controllers = ["memory", "cpu"] if driver.kind == "cgroup1" else [""]
        assert {c: cg[c] for c in controllers} == dict.fromkeys(controllers, where)
        assert limits_of(driver, user) == (mem, quota, shares)
        account = pwd.getpwnam(account_name(user, hub.account_prefix))
        status = Path(f"/proc/{pid}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        assert set(map(int, uids)) == {account.pw_uid}, "server must run as the user's own account"
        assert Path(f"/proc/{pid}/cwd").resolve() == Path(account.pw_dir)
        assert state["profile"]["slug"] == ("tiny" if user == "alice" else "roomy")
        # the server process runs the interpreter of its profile's environment
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert argv[:3] == [str(base_env.python).encode(), b"-m", b"jupyterhub.singleuser"]
        environ = dict(
            item.split(b"=", 1)
            for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if b"=" in item
        )
        assert environ[b"SHIPYARD_ENV_DIGEST"] == base_env.digest.encode()
        assert environ[b"PATH"].startswith(str(base_env.bin).encode() + b":")
        assert state["environment"] == {
            "name": "base",
            "digest": base_env.digest,
            "path": str(base_env.path),
        }


def test_profile_api_reports_profile_and_enforced_limits(hub, base_env):
    token = hub.create_user("alice")
    r = requests.get(
        hub.server_url("alice") + "shipyard/api/profile",
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["profile"]["slug"] == "tiny"
    assert body["profile"]["mem_limit"] == "400Mi"
    assert body["limits"]["mem_limit"] == 400 * 2**20
    assert body["limits"]["cpu_limit"] == 0.5
    assert body["limits"]["gpus"] == []
    assert body["enforced"]["kind"] == host_driver(hub).kind
    assert body["enforced"]["mem_limit"] == 400 * 2**20
    assert body["enforced"]["cpu_limit"] == 0.5
    assert body["user"] == "alice"
    assert body["environment"]["name"] == "base"
    assert body["environment"]["digest"] == base_env.digest
    assert body["environment"]["python"] == str(base_env.python)
    # without a token: jupyter-server's auth applies
    anon = requests.get(
        hub.server_url("alice") + "shipyard/api/profile", timeout=30, allow_redirects=False
    )
    assert anon.status_code in (302, 401, 403)
    # another user's token does not open alice's server
    rita = hub.create_user("rita", ["research"])
    other = requests.get(
        hub.server_url("alice") + "shipyard/api/profile",
        headers={"Authorization": f"token {rita}"},
        timeout=30,
        allow_redirects=False,
    )
    assert other.status_code in (302, 403)


def test_profile_outside_groups_is_refused_with_reason(hub):
    hub.create_user("bob")
    r = hub.api("POST", "/users/bob/servers/big", json={"profile": "roomy"})
    assert r.status_code == 403
    assert r.json()["message"] == (
        "Profile 'roomy' is only for members of the groups research; you are in no group. "
        "Choose one of: tiny."
    )
    assert "big" not in hub.api("GET", "/users/bob").json()["servers"]


@pytest.mark.parametrize(
    "options, status, message",
    [
        ({"profile": "huge"}, 400, "Unknown profile 'huge'. Choose one of: tiny."),
        (
            {"profile": "tiny", "mem_limit": "64G"},
            400,
            "Unknown server option(s): 'mem_limit'. Only 'profile' can be chosen; resources, "
            "images, environment and volumes come from the profile.",
        ),
        (
            {"image": "evil", "uid": 0},
            400,
            "Unknown server option(s): 'image', 'uid'. Only 'profile' can be chosen; resources, "
            "images, environment and volumes come from the profile.",
        ),
        ({"profile": ["tiny"]}, 400, "'profile' must be a profile slug (a string), not ['tiny']."),
    ],
)
def test_bad_options_are_refused_with_message(hub, options, status, message):
    hub.create_user("carol")
    r = hub.api("POST", "/users/carol/servers/x", json=options)
    assert r.status_code == status
    assert r.json()["message"] == message


def _login(hub, user: str, password: str) -> requests.Session:
    session = requests.Session()
    session.get(hub.url + "/hub/login", timeout=30)
    r = session.post(
        hub.url + "/hub/login",
        data={"username": user, "password": password, "_xsrf": session.cookies.get("_xsrf")},
        timeout=30,
        allow_redirects=False,
    )
    assert r.status_code == 302, f"login failed: {r.status_code}"
    return session


def test_spawn_form_lists_allowed_profiles_and_refuses_tampering(hub):
    session = _login(hub, "dave", hub.add_user_with_password("dave"))
    form = session.get(hub.url + "/hub/spawn/dave/f1", timeout=30)
    assert form.status_code == 200
    assert 'value="tiny"' in form.text and "checked" in form.text
    assert 'value="roomy"' not in form.text and 'value="gpu"' not in form.text
    assert "Memory 400 MiB (128 MiB guaranteed)" in form.text
    # a tampered form asks for a profile dave's groups do not allow
    r = session.post(
        hub.url + "/hub/spawn/dave/f1",
        data={"profile": "roomy", "_xsrf": session.cookies.get("_xsrf")},
        timeout=60,
        allow_redirects=False,
    )
    assert r.status_code == 403
    assert "Profile &#39;roomy&#39; is only for members of the groups research" in r.text
    assert "f1" not in hub.api("GET", "/users/dave").json()["servers"]


def test_quota_refuses_with_quota_and_current_use(hub):
    hub.create_user("erin")
    hub.start_server("erin", "one")
    hub.start_server("erin", "two")  # 2 x 400Mi of the default quota's 1Gi
    r = hub.api("POST", "/users/erin/servers/three", json={})
    assert r.status_code == 403
    assert r.json()["message"] == (
        "Quota exceeded: the default quota allows 1 GiB memory across your servers; you already "
        "use 800 MiB in 2 running server(s) and profile 'tiny' needs 400 MiB. Stop a server or "
        "choose a smaller profile."
    )
    hub.create_user("rosa", ["research"])
    hub.start_server("rosa", profile="tiny")
    hub.start_server("rosa", "second", profile="tiny")
    r = hub.api("POST", "/users/rosa/servers/third", json={"profile": "tiny"})
    assert r.status_code == 403
    assert r.json()["message"] == (
        "Quota exceeded: group research allows 2 running server(s) and you already run 2: "
        "'default' (tiny), 'second' (tiny). Stop one first."
    )
    for name in ("one", "two"):
        hub.stop_server("erin", name)
    hub.stop_server("rosa", "second")
    hub.stop_server("rosa")


def test_gpu_assignment_does_not_overlap(hub):
    gina = hub.create_user("gina", ["research"])
    hub.create_user("hugo", ["research"])
    hub.create_user("ivan", ["research"])
    hub.start_server("gina", profile="gpu")
    hub.start_server("hugo", profile="gpu")
    gpus = [hub.server_state(u)["gpus"] for u in ("gina", "hugo")]
    assert sorted(gpus) == [["0"], ["1"]]

    # the kernel enforces it (#14, point 9): each server's cgroup may open its own GPU's
    # node and the standard ones, nothing else, whatever CUDA_VISIBLE_DEVICES says
    driver = host_driver(hub)
    if driver.filters_devices:
        for user, devices in zip(("gina", "hugo"), gpus, strict=True):
            listed = (driver.directories(user)[2] / "devices.list").read_text().splitlines()
            assert listed == device_rules(tuple(devices)), user
        probe = (
            "import os\n"
            "os.environ.pop('CUDA_VISIBLE_DEVICES', None)\n"
            f"for p in ('/dev/null', {UNLISTED_DEVICE!r}):\n"
            "    try:\n"
            "        open(p, 'rb').close()\n"
            "        print(p, 'ok')\n"
            "    except OSError as e:\n"
            "        print(p, e.errno)\n"
        )
        out = stdout_of(run_in_kernel(hub.server_url("gina"), gina, probe))
        assert out.splitlines() == ["/dev/null ok", f"{UNLISTED_DEVICE} 1"], out
    r = hub.api("POST", "/users/ivan/server", json={"profile": "gpu"})
    assert r.status_code == 409
    assert r.json()["message"].startswith(
        "This profile needs 1 GPU(s) but only 0 of the machine's 2 are free"
    )
    hub.stop_server("gina")
    hub.start_server("ivan", profile="gpu")
    assert hub.server_state("ivan")["gpus"] == gpus[0]
    for user in ("hugo", "ivan"):
        hub.stop_server(user)


def test_stop_leaves_no_process_and_no_cgroup(hub):
    hub.create_user("zoe")
    hub.start_server("zoe")
    uid = pwd.getpwnam(account_name("zoe", hub.account_prefix)).pw_uid
    assert processes_of(uid)
    hub.stop_server("zoe")
    assert wait_for(lambda: not processes_of(uid), 10, what="zoe's processes to end") is True
    assert not [d for d in cgroup_dirs(hub.cgroup_parent) if d.name == "zoe"]


def test_kernel_past_memory_limit_is_killed_and_others_live_on(hub, base_env):
    olga = hub.create_user("olga")
    pete = hub.create_user("pete")
    hub.start_server("olga")
    hub.start_server("pete")
    url = hub.server_url("olga")
    ok = run_in_kernel(url, olga, "import os; print(open(f'/proc/{os.getpid()}/cgroup').read())")
    driver = host_driver(hub)
    where = "/" + "/".join(filter(None, [driver.base, hub.cgroup_parent, "olga"]))
    controller = "memory" if driver.kind == "cgroup1" else ""
    assert f":{controller}:{where}\n" in stdout_of(ok), "kernels must run in the server's cgroup"
    where = run_in_kernel(
        url, olga, "import os, sys; print(sys.executable, os.environ['SHIPYARD_ENV_DIGEST'])"
    )
    assert stdout_of(where).split() == [str(base_env.python), base_env.digest], (
        "kernels must run in the profile's environment"
    )

    messages = run_in_kernel(url, olga, "x = b'1' * (1 << 30)\nprint('survived')", timeout=90)
    states = [
        m["content"]["execution_state"] for m in messages if m["header"]["msg_type"] == "status"
    ]
    assert "restarting" in states or "dead" in states, f"kernel was not killed: {states}"
    assert "survived" not in stdout_of(messages)
    assert oom_kills(driver, "olga") >= 1

    # the hub, olga's server and another user's server all live on
    assert hub.api("GET", "/users/olga").json()["servers"][""]["ready"]
    for user, token in (("olga", olga), ("pete", pete)):
        r = requests.get(
            hub.server_url(user) + "api/status",
            headers={"Authorization": f"token {token}"},
            timeout=30,
        )
        assert r.status_code == 200, (user, r.text)
    hub.stop_server("olga")
    hub.stop_server("pete")


def test_named_servers_keep_their_own_profile_and_last_choice_is_remembered(hub):
    token = hub.create_user("nora", ["research"])
    hub.start_server("nora", profile="roomy")
    hub.start_server("nora", "small", profile="tiny")
    assert hub.server_state("nora")["profile"]["slug"] == "roomy"
    assert hub.server_state("nora", "small")["profile"]["slug"] == "tiny"
    r = requests.get(
        hub.server_url("nora", "small") + "shipyard/api/profile",
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert r.json()["profile"]["slug"] == "tiny"
    # the admin sees each server's profile in the REST API (and so the admin page)
    servers = hub.api("GET", "/users/nora").json()["servers"]
    assert servers[""]["user_options"] == {"profile": "roomy"}
    hub.stop_server("nora", "small")
    hub.stop_server("nora")
    # a start without options reuses the last choice
    hub.start_server("nora")
    assert hub.server_state("nora")["profile"]["slug"] == "roomy"
    hub.stop_server("nora")


@contextlib.contextmanager
def extra_profile(hub, yaml_item: str):
    """The hub's profiles file with one more profile (first in the list) for the block."""
    original = hub.profiles_file.read_text()
    hub.profiles_file.write_text(original.replace("profiles:\n", "profiles:\n" + yaml_item, 1))
    try:
        yield
    finally:
        hub.profiles_file.write_text(original)


def test_spawn_of_an_environment_not_built_is_refused_with_the_fix(hub):
    hub.create_user("ed")
    # gpu: an environment of images/ that no test builds (the browser test builds
    # datascience into the same test envs folder)
    sci = "  - slug: sci\n    display_name: Sci\n    environment: gpu\n"
    with extra_profile(hub, sci):
        r = hub.api("POST", "/users/ed/server", json={"profile": "sci"})
        assert r.status_code == 503
        assert r.json()["message"] == (
            "The environment 'gpu' of profile 'sci' is not built on this machine. "
            "An admin builds it with `shipyard env build gpu` (`shipyard up` builds "
            "every profile's environment)."
        )
        assert hub.api("GET", "/users/ed").json()["servers"] == {}


def test_profiles_file_is_reread_without_restart(hub):
    session = _login(hub, "uma", hub.add_user_with_password("uma"))
    before = session.get(hub.url + "/hub/spawn/uma/r", timeout=30).text
    assert 'value="fresh"' not in before
    fresh = "  - slug: fresh\n    display_name: Fresh\n    mem_limit: 300Mi\n"
    with extra_profile(hub, fresh):
        after = session.get(hub.url + "/hub/spawn/uma/r", timeout=30).text
        assert 'value="fresh"' in after
        # an invalid edit keeps the last good version in force
        hub.profiles_file.write_text("profiles: [oops")
        still = session.get(hub.url + "/hub/spawn/uma/r", timeout=30)
        assert still.status_code == 200 and 'value="fresh"' in still.text
        assert "is invalid; keeping the previous version" in hub.log_tail(200)


def test_a_gpu_profile_on_a_machine_without_gpu_is_shown_disabled_and_refused(hub_factory):
    """No GPU: the GPU card says so and cannot be chosen; a crafted choice is refused with
    that reason, not with the environment that `shipyard up` did not build for it."""
    hub = hub_factory(name="nogpu", extra_env={"SHIPYARD_TEST_GPUS": ""})
    session = _login(hub, "gwen", hub.add_user_with_password("gwen", ["research"]))
    form = session.get(hub.url + "/hub/spawn/gwen/g1", timeout=30)
    assert form.status_code == 200
    card = re.search(r'<label class="([^"]*)" data-profile="gpu"(.*?)</label>', form.text, re.S)
    assert card, "the GPU profile is listed (gwen's groups allow it)"
    assert "shipyard-unavailable" in card.group(1)
    assert re.search(r'<input type="radio" name="profile" value="gpu" disabled>', card.group(2))
    assert "Not available: no GPU on this machine." in card.group(2)
    assert re.search(r'value="tiny" checked', form.text)
    assert form.text.count(" checked") == 1
    refusal = "Profile 'gpu' cannot start: no GPU on this machine. Choose one of: tiny, roomy."
    r = session.post(
        hub.url + "/hub/spawn/gwen/g1",
        data={"profile": "gpu", "_xsrf": session.cookies.get("_xsrf")},
        timeout=60,
        allow_redirects=False,
    )
    assert r.status_code == 409
    assert refusal.replace("'", "&#39;") in r.text
    assert "not built" not in r.text
    r = hub.api("POST", "/users/gwen/servers/g2", json={"profile": "gpu"})
    assert (r.status_code, r.json()["message"]) == (409, refusal)
    assert hub.api("GET", "/users/gwen").json()["servers"] == {}


def test_a_stop_is_woken_by_the_servers_exit_not_by_polling():
    """wait_for_death returns once the process exits, asking poll() once (no back-off)."""
    import asyncio
    import subprocess
    import sys

    from hub_ext.spawners.spawner import LocalProfileSpawner

    class Counting(LocalProfileSpawner):
        polls = 0

        async def poll(self):
            self.polls += 1
            return await super().poll()

    async def main():
        spawner = Counting()
        spawner.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.6)"])
        spawner.pid = spawner.proc.pid
        assert await spawner.wait_for_death(timeout=0.2) is False  # still running
        spawner.polls = 0
        assert await spawner.wait_for_death(timeout=10) is True
        assert spawner.proc is None or spawner.proc.poll() is not None
        assert spawner.polls == 1, f"polled {spawner.polls} times"
        spawner.pid = 0
        assert await spawner.wait_for_death(timeout=1) is True  # nothing to wait for

    asyncio.run(main())
