"""The embedded platform's lifecycle: `shipyard up`, Ctrl-C, hub restarts, culling."""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from hub_ext.host.cgroups import Limits, detect_driver
from hub_ext.host.passing import CONFIG_ENV
from hub_ext.host.slugs import account_name

from .conftest import TEST_PROFILES, needs_root, postgres_database
from .hubtools import (
    HIERARCHIES,
    HUB_CONFIG,
    HubProcess,
    cgroup_dirs,
    free_port,
    process_table,
    processes_of,
    remove_cgroups,
    remove_test_accounts,
    secret_leaks,
    tagged,
    wait_for,
)

pytestmark = needs_root

#: What the hubs of this module wrote and minted, for the token check at its end:
#: data dirs (their logs, their token files), more logs, and every token a test made.
_DATA_DIRS: list[Path] = []
_LOGS: list[Path] = []
_MINTED: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def no_token_in_any_log():
    """After the module: no token that its hubs minted or used is in any log they wrote.

    The tokens: each hub's admin token, every user token the tests made (:func:`mint`),
    and every token kept in a data dir (the services', the CLI's); the logs: the hubs'
    own, and every ``*.log`` under their data dirs (services, MLflow, replicas, runs).
    """
    yield
    minted = dict(_MINTED)
    logs = list(_LOGS)
    for data in _DATA_DIRS:
        for path in data.rglob("*"):
            if path.is_file() and path.name.endswith(("token", "secret")):
                minted[f"{path.relative_to(data.parent)}"] = path.read_text().strip()
        logs += [p for p in data.rglob("*.log") if p.is_file()]
    assert minted and logs
    leaks = secret_leaks(minted, logs)
    assert not leaks, "tokens written into logs:\n" + "\n".join(leaks)


@pytest.fixture
def hubs(hub_factory):
    """``hub_factory`` whose hubs' logs and tokens the module's token check reads."""

    def make(**kwargs) -> HubProcess:
        hub = hub_factory(**kwargs)
        _DATA_DIRS.append(hub.data_dir)
        _LOGS.append(hub.log_path)
        _MINTED[f"{hub.data_dir.parent.name} admin token"] = hub.admin_token
        return hub

    return make


def mint(hub: HubProcess, user: str, groups: list[str] = ()) -> str:
    """``hub.create_user``, with the token remembered for the module's token check."""
    token = hub.create_user(user, groups)
    _MINTED[f"{user}'s token ({hub.data_dir.parent.name})"] = token
    return token


@pytest.fixture(params=["sqlite", "postgresql"])
def hub_db_url(request):
    """The hub's database: SQLite in the data dir (embedded) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    with postgres_database() as url:
        yield url


def test_running_server_survives_hub_restart(hubs, hub_db_url):
    env = {"SHIPYARD_CLEANUP_SERVERS": "0"}
    if hub_db_url:
        env["SHIPYARD_HUB_DB_URL"] = hub_db_url
    hub = hubs(name="restart", extra_env=env)
    token = mint(hub, "sam")
    hub.start_server("sam")
    pid = hub.server_state("sam")["pid"]

    assert hub.stop(signal.SIGTERM) == 0
    os.kill(pid, 0)  # still running while the hub is down
    hub.start()
    r = requests.get(
        hub.server_url("sam") + "shipyard/api/profile",
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert r.json()["profile"]["slug"] == "tiny"
    assert hub.server_state("sam")["pid"] == pid
    assert hub.server_state("sam")["profile"]["slug"] == "tiny"
    # after the restart the hub still manages it: stopping cleans up as usual
    hub.stop_server("sam")
    uid = pwd.getpwnam(account_name("sam", hub.account_prefix)).pw_uid
    wait_for(lambda: not processes_of(uid), 10, what="sam's processes to end")
    assert not [d for d in cgroup_dirs(hub.cgroup_parent) if d.name == "sam"]
    # before its database goes (hub_db_url drops it): a hub whose PostgreSQL database was
    # dropped under it does not stop on a signal, and would hold its module's end a minute
    assert hub.stop() == 0


def _login(url: str, user: str, password: str) -> tuple[requests.Session, requests.Response]:
    session = requests.Session()
    session.get(url + "/hub/login", timeout=30)
    r = session.post(
        url + "/hub/login",
        data={"username": user, "password": password, "_xsrf": session.cookies.get("_xsrf")},
        timeout=30,
        allow_redirects=False,
    )
    return session, r


def test_shipyard_up_requires_password_and_ctrl_c_leaves_nothing(tmp_path, home_root):
    data = tmp_path / "data"
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(TEST_PROFILES)
    port, parent, prefix = free_port(), tagged("shipyard-test-up"), tagged("syup-")
    env = dict(
        os.environ,
        SHIPYARD_DATA_DIR=str(data),
        SHIPYARD_HUB_BIND_URL=f"http://127.0.0.1:{free_port()}",
        SHIPYARD_PROXY_API_URL=f"http://127.0.0.1:{free_port()}",
        SHIPYARD_CULL_TIMEOUT="0",
        SHIPYARD_TRACKING="1",
        SHIPYARD_TRACKING_URL=f"http://127.0.0.1:{free_port()}",
        # every service, as `shipyard up` runs them: Ctrl-C stops them all
        SHIPYARD_SCHEDULER="1",
        SHIPYARD_SCHEDULER_URL=f"http://127.0.0.1:{free_port()}",
        SHIPYARD_DEPLOYER="1",
        SHIPYARD_DEPLOYER_URL=f"http://127.0.0.1:{free_port()}",
        SHIPYARD_SECRETS="1",
        SHIPYARD_SECRETS_URL=f"http://127.0.0.1:{free_port()}",
        SHIPYARD_AUDIT_SERVICE="1",
        SHIPYARD_AUDIT_SERVICE_URL=f"http://127.0.0.1:{free_port()}",
        SHIPYARD_TEST_ACCOUNT_PREFIX=prefix,
        SHIPYARD_TEST_CGROUP_PARENT=parent,
        SHIPYARD_TEST_HOME_ROOT=str(home_root),
    )
    url = f"http://127.0.0.1:{port}"
    shipyard = [
        sys.executable,
        "-m",
        "hub_ext.cli",
        "up",
        "--bind-url",
        url,
        "--profiles",
        str(profiles),
        "--config",
        str(HUB_CONFIG),
    ]

    _DATA_DIRS.append(data)

    def start() -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"up-{time.monotonic_ns()}.log"
        _LOGS.append(log)
        proc = subprocess.Popen(
            shipyard,
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def up():
            assert proc.poll() is None, log.read_text()
            try:
                return requests.get(url + "/hub/login", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for(up, 60, 0.2, "shipyard up")
        return proc, log

    try:
        proc, log = start()
        creds = json.loads((data / "credentials.json").read_text())
        assert (data / "credentials.json").stat().st_mode & 0o777 == 0o600
        assert data.stat().st_mode & 0o777 == 0o700
        assert creds["admin_password"] in log.read_text(), "credentials are printed on first start"

        _, wrong = _login(url, "admin", "not-the-password")
        assert wrong.status_code == 403 and "Invalid username or password" in wrong.text
        assert "user password" not in log.read_text(), "no shared password any more"
        _, stranger = _login(url, "mallory", creds["admin_password"])
        assert stranger.status_code == 403, "a known password opens no other account"
        session, ok = _login(url, "admin", creds["admin_password"])
        assert ok.status_code == 302

        # start a server through the spawn form, as a person would
        r = session.post(
            url + "/hub/spawn",
            data={"profile": "tiny", "_xsrf": session.cookies.get("_xsrf")},
            timeout=60,
        )
        assert r.status_code == 200

        # a page, not the API: the browser's first visit goes through the hub's OAuth
        def lab_page():
            r = session.get(url + "/user/admin/lab", timeout=30)
            return r.status_code == 200 and "jupyter-config-data" in r.text

        wait_for(lab_page, 60, 0.3, "admin's JupyterLab")
        uid = pwd.getpwnam(f"{prefix}admin").pw_uid
        assert processes_of(uid)
        assert cgroup_dirs(parent)

        # the tracking service came up with the hub: MLflow's UI, after the hub's login
        def mlflow_ui():
            r = session.get(url + "/services/tracking/", timeout=30)
            return r.status_code == 200 and "MLflow" in r.text

        wait_for(mlflow_ui, 120, 0.5, "the MLflow UI through the hub")
        assert _processes_mentioning(str(data / "tracking")), "MLflow runs in the data dir"

        # a service killed outright is back at once: the hub watches its process
        for service in ("scheduler", "deployer"):
            pid = _service_pid(service, data)
            health = f"{url}/services/{service}/health"
            assert requests.get(health, timeout=5).status_code == 200
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            wait_for(
                lambda pid=pid, service=service, health=health: (
                    _service_pid(service, data) not in (None, pid)
                    and requests.get(health, timeout=5).status_code == 200
                ),
                30,
                0.05,
                f"the {service} to be restarted",
            )
            back = time.monotonic() - killed
            print(f"{service}: kill -9 to healthy in {back:.2f} s")
            assert back < 10, f"the {service} took {back:.1f} s to come back"
            assert re.search(
                rf"Service {service} exited with status -9 after [\d.]+ s; restarting it now",
                log.read_text(),
            )

        # what runs and models leave once they have run: the scheduler's and the
        # deployer's parent cgroups, the replicas' runtime folder
        for part in ("jobs", "models"):
            leftover = detect_driver(f"{parent}-{part}")
            leftover.create("done", Limits())
            leftover.remove("done")
        runtime = Path(tempfile.gettempdir()) / f"{parent}-models"
        runtime.mkdir(mode=0o711, exist_ok=True)

        stopping = time.monotonic()
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(60) == 0
        took = time.monotonic() - stopping
        stopped = log.read_text()
        for service in ("tracking", "scheduler", "deployer", "secrets", "audit"):
            assert f"Stopping service {service}..." in stopped
            assert re.search(rf"Service {service} stopped \(\d+\.\d s\)", stopped), service
        assert "Shipyard stopped in" in stopped
        # together, 3-4 s on a quiet machine; one after another took 35-42 s. The bound
        # leaves room for a loaded machine (the suite runs modules side by side)
        assert took < 20, f"Ctrl-C took {took:.1f} s: are the services stopped one by one?"
        assert not processes_of(uid), "no orphan process after Ctrl-C"
        wait_for(
            lambda: not _processes_mentioning(str(data / "tracking")),
            20,
            0.2,
            "MLflow to stop with the hub",
        )
        assert not cgroup_dirs(parent), "no leftover cgroup after Ctrl-C"
        for name in (parent, f"{parent}-jobs", f"{parent}-models"):
            for hierarchy in HIERARCHIES:  # the devices one too (the GPU filter)
                assert not (hierarchy / name).exists(), f"empty cgroup {name} left behind"
        assert not runtime.exists(), "the replicas' runtime folder is left behind"
        with pytest.raises(requests.ConnectionError):
            requests.get(url + "/hub/login", timeout=5)  # the proxy is gone too

        # second start: the same credentials, not printed again
        proc, log = start()
        assert creds["admin_password"] not in log.read_text()
        _, again = _login(url, "admin", creds["admin_password"])
        assert again.status_code == 302
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        remove_test_accounts(prefix)
        for name in (parent, f"{parent}-jobs", f"{parent}-models"):
            remove_cgroups(name)


#: The services of the crash test, and an API call of each that needs a user's token.
CRASH_SERVICES = {
    "tracking": "api/2.0/mlflow/experiments/search?max_results=1",
    "scheduler": "api/jobs",
    "deployer": "api/deployments",
    "secrets": "api/secrets",
}


def test_services_outlive_a_hub_crash_and_are_adopted(hubs):
    hub = hubs(
        name="crash",
        extra_env={
            **{f"SHIPYARD_{name.upper()}": "1" for name in CRASH_SERVICES},
            "SHIPYARD_CULL_TIMEOUT": "3600",  # the culler too: it must not outlive the hub
        },
    )
    data = hub.data_dir
    try:
        token = mint(hub, "cora")
        fresh = mint(hub, "dora")  # never used before the crash: no service has it cached
        auth = {"Authorization": f"token {token}"}

        def answers(name: str, headers: dict | None = None) -> requests.Response:
            # tracking's health is MLflow's, behind the hub's login: its API call says it
            path = CRASH_SERVICES[name] if headers or name == "tracking" else "health"
            headers = headers or (auth if name == "tracking" else None)
            return requests.get(
                f"{hub.url}/services/{name}/{path}",
                headers=headers,
                timeout=10,
                allow_redirects=False,  # to the hub's login: not an answer of the service
            )

        def all_up() -> bool:  # the tracking gateway answers "starting" until MLflow is up
            return all(
                answers(name).status_code == 200 and answers(name, auth).status_code == 200
                for name in CRASH_SERVICES
            )

        wait_for(all_up, 180, 0.5, "every service's health and API through the proxy")
        pids = {name: _recorded_pid(name, data) for name in [*CRASH_SERVICES, "idle-culler"]}
        assert pids == {name: _service_pid(name, data) for name in pids}, "the records name them"
        before = _processes_of_hub(data)
        print("before the crash:\n" + _describe(before))

        os.kill(hub.proc.pid, signal.SIGKILL)  # the hub only, not its process group
        hub.proc.wait(10)
        down = time.monotonic()
        culler = pids.pop("idle-culler")
        wait_for(lambda: not _alive(culler), 10, 0.1, "the idle culler to die with the hub")
        # while the hub is down: every service answers through the proxy, and a token it
        # has already checked is still good
        for name, pid in pids.items():
            assert _alive(pid), f"{name} died with the hub"
            assert answers(name).status_code == 200, name
            r = answers(name, auth)
            assert r.status_code == 200, (name, r.status_code, r.text[:300])
            # a token it has not seen: it cannot ask the hub; "retry later", never a 500
            r = answers(name, {"Authorization": f"token {fresh}"})
            print(f"{name}, new token while the hub is down: {r.status_code} {r.text[:200]!r}")
            assert r.status_code != 500, (name, r.text[:300])
        print(f"served {time.monotonic() - down:.1f} s without the hub")

        hub.start(timeout=120)
        log = hub.log_path.read_text()
        for name, pid in pids.items():
            assert f"Adopted service {name} (pid {pid})" in log, name
            assert _service_pids(name, data) == [pid], f"{name}: not one process, the same"
            assert answers(name).status_code == 200, name
            r = answers(name, auth)
            assert r.status_code == 200, (name, r.status_code, r.text[:300])
        r = answers("scheduler", {"Authorization": f"token {fresh}"})
        assert r.status_code == 200, r.text[:300]
        new_culler = wait_for(lambda: _service_pid("idle-culler", data), 10, 0.1, "a new culler")
        assert new_culler != culler and _service_pids("idle-culler", data) == [new_culler]
        after = _processes_of_hub(data)
        print("after the restart:\n" + _describe(after))
        _assert_all_managed(after, hub.proc.pid, data)

        # an adopted service that dies is restarted at once, as one the hub started
        killed = pids["scheduler"]
        os.kill(killed, signal.SIGKILL)
        wait_for(
            lambda: (
                _service_pid("scheduler", data) not in (None, killed)
                and answers("scheduler").status_code == 200
            ),
            30,
            0.1,
            "the adopted scheduler to be restarted",
        )
        assert "Service scheduler exited with status unknown (adopted)" in hub.log_path.read_text()

        # Ctrl-C stops everything, adopted services too: nothing of this hub is left
        assert hub.stop() == 0
        stopped = hub.log_path.read_text()
        for name in CRASH_SERVICES:
            assert re.search(rf"Service {name} stopped \(\d+\.\d s\)", stopped), name
        wait_for(lambda: not _processes_of_hub(data), 20, 0.2, "every process of the hub to end")
        assert not list((data / "services").glob("*.json")), "records of stopped services"
    finally:  # a failure with the hub killed: its services have no hub to stop them
        for pid in _processes_of_hub(data):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_culler_keeps_its_token_out_of_the_log(tmp_path):
    """The culler's passes fail (no hub): the error is logged, its token is not.

    jupyterhub-idle-culler runs its periodic pass as ``partial(cull_idle, api_token=...)``
    and tornado logs a failed one as ``Exception in callback <the partial's repr>``.
    """
    token = secrets.token_hex(32)
    _MINTED["the culler test's token"] = token
    log = tmp_path / "culler.log"
    _LOGS.append(log)
    api = f"http://127.0.0.1:{free_port()}/hub/api"  # nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hub_ext.hub.culler",
            "--timeout=60",
            "--cull-every=1",
            f"--url={api}",
        ],
        env={**env, "JUPYTERHUB_API_TOKEN": token},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(
            # two periodic passes: the first one's record is complete
            lambda: log.read_text().count("partial(<function cull_idle") >= 2,
            30,
            0.1,
            "the culler's failed periodic pass",
        )
    finally:
        proc.kill()
        proc.wait()
    text = log.read_text()
    assert "Exception in callback functools.partial(<function cull_idle" in text, text
    assert "api_token='[secret]'" in text, text
    assert token not in text


def test_a_killed_proxy_is_replaced_at_once_not_at_the_next_periodic_check(hubs, tmp_path):
    """The hub watches the proxy's process (a pidfd): with JupyterHub's periodic check set
    to a minute here, a proxy killed with -9 is still replaced within seconds."""
    config = tmp_path / "proxy_config.py"
    config.write_text(
        "c = get_config()  # noqa: F821\n"
        f"load_subconfig({str(Path(__file__).parent / 'hub_config.py')!r})  # noqa: F821\n"
        "c.ConfigurableHTTPProxy.check_running_interval = 60\n"
    )
    hub = hubs(name="proxywatch", config_file=config)
    try:
        first = json.loads((hub.data_dir / "proxy.json").read_text())["pid"]
        os.kill(first, signal.SIGKILL)
        killed = time.monotonic()

        def answers() -> bool:
            try:
                return requests.get(f"{hub.url}/hub/api/", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for(lambda: not answers(), 5, 0.05, "the killed proxy to stop answering")
        wait_for(answers, 15, 0.1, "a new proxy")
        back = time.monotonic() - killed
        second = json.loads((hub.data_dir / "proxy.json").read_text())["pid"]
        assert second != first
        assert back < 10, f"the proxy was back after {back:.1f} s"
        print(f"proxy back {back:.2f} s after kill -9")
    finally:
        hub.stop()


def test_the_culler_exits_at_sigint_even_when_it_inherited_it_ignored(tmp_path):
    """A hub started in the background hands its services SIGINT ignored; the hub stops
    them with SIGINT first. The culler, which sets no handler of its own otherwise, then
    lingered until the SIGTERM after the hub's whole interrupt timeout: a minute of Ctrl-C."""
    log = tmp_path / "culler.log"
    api = f"http://127.0.0.1:{free_port()}/hub/api"  # nothing listens: it keeps failing
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "hub_ext.hub.culler", "--cull-every=1", f"--url={api}"],
        env={**env, "JUPYTERHUB_API_TOKEN": secrets.token_hex(8)},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # noqa: PLW1509
    )
    try:
        wait_for(lambda: "cull_idle" in log.read_text(), 30, 0.1, "the culler's first pass")
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        assert time.monotonic() - started < 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_hub_passes_its_host_config_to_the_scheduler_and_deployer(hubs, tmp_path):
    """``c.KubePlacement`` and ``c.LocalHost``, set once in the hub's config, reach its services.

    The hub passes them in ``$SHIPYARD_HOST_CONFIG`` (hub_ext/host/passing.py); what a
    service makes of the variable is tests/test_kube_placement.py's and
    tests/test_local_host.py's.
    """
    config = tmp_path / "placement_config.py"
    config.write_text(
        "c = get_config()  # noqa: F821\n"
        f"load_subconfig({str(HUB_CONFIG)!r})  # noqa: F821\n"
        'c.KubePlacement.namespace = "shipyard-workloads"\n'
        'c.KubePlacement.image_template = "registry.example.org/sy-{environment}:1"\n'
    )
    hub = hubs(
        name="placement",
        config_file=config,
        # SHIPYARD_TEST_GPUS: c.LocalProfileSpawner.LocalHost, the servers' part alone
        extra_env={"SHIPYARD_SCHEDULER": "1", "SHIPYARD_DEPLOYER": "1", "SHIPYARD_TEST_GPUS": "0"},
    )
    try:
        for name in ("scheduler", "deployer"):
            wait_for(
                lambda name=name: (
                    requests.get(f"{hub.url}/services/{name}/health", timeout=10).status_code == 200
                ),
                90,
                0.5,
                f"the {name} to answer",
            )
            pid = _service_pid(name, hub.data_dir)
            assert pid, name
            environ = dict(
                entry.split("=", 1)
                for entry in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
                if "=" in entry
            )
            passed = json.loads(environ[CONFIG_ENV])
            assert passed["KubePlacement"] == {
                "namespace": "shipyard-workloads",
                "image_template": "registry.example.org/sy-{environment}:1",
            }, name
            assert passed["LocalHost"]["system_user_prefix"] == hub.account_prefix, name
            # the servers' own part of the hub's config stays the hub's
            assert "gpu_devices" not in passed["LocalHost"], name
    finally:
        hub.stop()


def _recorded_pid(name: str, data: Path) -> int | None:
    try:
        return json.loads((data / "services" / f"{name}.json").read_text())["pid"]
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _service_pids(name: str, data: Path) -> list[int]:
    """Every process that is the managed service ``name`` of the hub whose data is ``data``."""
    marks = (f"JUPYTERHUB_SERVICE_NAME={name}\0".encode(), str(data).encode())
    table = process_table()
    marked = {pid for pid, p in table.items() if all(m in p["environ"] for m in marks)}
    # not its children (the deployer's socket holder inherits its environment)
    return sorted(pid for pid in marked if table[pid]["ppid"] not in marked and _alive(pid))


def _processes_of_hub(data: Path) -> dict[int, dict]:
    """Every process the hub of ``data`` started, directly or not (they all name ``data``)."""
    return {
        pid: p
        for pid, p in process_table().items()
        if str(data).encode() in p["environ"] + p["cmd"].encode()
    }


def _describe(processes: dict[int, dict]) -> str:
    return "\n".join(
        f"  {pid:>7} (parent {p['ppid']:>7}) {p['cmd'][:110]}"
        for pid, p in sorted(processes.items())
    )


def _assert_all_managed(processes: dict[int, dict], hub_pid: int, data: Path) -> None:
    """Each process is the hub, a service or the proxy it adopted (recorded), or a
    descendant of one."""
    records = [*(data / "services").glob("*.json"), *data.glob("proxy.json")]
    managers = {hub_pid} | {json.loads(p.read_text())["pid"] for p in records}
    table = process_table()
    for pid in processes:
        chain, current = [], pid
        while current not in managers and current in table and current > 1:
            chain.append(current)
            current = table[current]["ppid"]
        assert current in managers, (
            f"process {pid} ({processes[pid]['cmd'][:100]}) has no manager: {chain}"
        )


def _service_pid(name: str, data: Path) -> int | None:
    """The PID of the hub's managed service ``name`` whose hub keeps its data in ``data``."""
    marks = (f"JUPYTERHUB_SERVICE_NAME={name}\0".encode(), str(data).encode())
    for pid in _processes_mentioning(str(data)):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if all(mark in environ for mark in marks):
            return pid
    return None


def _processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line or environment contains ``text``.

    The environment too: MLflow gets its settings (its folders) there, off its command line.
    """
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if any(
                    text.encode() in Path(f"/proc/{pid}/{part}").read_bytes()
                    for part in ("cmdline", "environ")
                ):
                    found.append(int(pid))
            except OSError:
                continue
    return found


def test_idle_servers_are_culled(hubs):
    hub = hubs(name="cull", extra_env={"SHIPYARD_CULL_TIMEOUT": "5"})
    services = hub.api("GET", "/services").json()
    assert "idle-culler" in services
    mint(hub, "ida")
    hub.start_server("ida")
    wait_for(
        lambda: "" not in hub.api("GET", "/users/ida").json()["servers"],
        60,
        1,
        "the culler to stop ida's idle server",
    )
    uid = pwd.getpwnam(account_name("ida", hub.account_prefix)).pw_uid
    wait_for(lambda: not processes_of(uid), 10, what="ida's processes to end")
    hub.stop()


def test_profiles_usage_shows_who_runs_what(hubs):
    hub = hubs(name="usage")
    mint(hub, "una", ["research"])
    hub.start_server("una", profile="roomy")
    token = (hub.data_dir / "cli-token").read_text().strip()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "hub_ext.cli",
            "profiles",
            "usage",
            "--json",
            "--hub-api-url",
            hub.url + "/hub/api",
            "--token",
            token,
            "--file",
            str(hub.profiles_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert {
        "user": "una",
        "server": "(default)",
        "profile": "roomy",
        "cpu": 1.0,
        "memory": 768 * 2**20,
        "gpu": 0,
    } in rows
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "hub_ext.cli",
            "profiles",
            "usage",
            "--hub-api-url",
            hub.url + "/hub/api",
            "--token",
            "wrong",
            "--file",
            str(hub.profiles_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1
    assert bad.stderr.startswith("shipyard: The hub refused the token (403)")
    assert "Traceback" not in bad.stderr
    hub.stop()


_ = HubProcess  # re-exported for readers: the class every fixture here builds on
