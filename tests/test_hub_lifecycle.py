"""The embedded platform's lifecycle: `shipyard up`, Ctrl-C, hub restarts, culling."""

from __future__ import annotations

import json
import os
import pwd
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from hub_ext.cgroups import Limits, detect_driver

from .conftest import TEST_PROFILES, needs_root, postgres_database
from .hubtools import (
    HIERARCHIES,
    HUB_CONFIG,
    HubProcess,
    cgroup_dirs,
    free_port,
    processes_of,
    remove_cgroups,
    remove_test_accounts,
    wait_for,
)

pytestmark = needs_root


@pytest.fixture(params=["sqlite", "postgresql"])
def hub_db_url(request):
    """The hub's database: SQLite in the data dir (embedded) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    with postgres_database() as url:
        yield url


def test_running_server_survives_hub_restart(hub_factory, hub_db_url):
    env = {"SHIPYARD_CLEANUP_SERVERS": "0"}
    if hub_db_url:
        env["SHIPYARD_HUB_DB_URL"] = hub_db_url
    hub = hub_factory(name="restart", extra_env=env)
    token = hub.create_user("sam")
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
    uid = pwd.getpwnam("sytest-sam").pw_uid
    wait_for(lambda: not processes_of(uid), 10, what="sam's processes to end")
    assert not [d for d in cgroup_dirs(hub.cgroup_parent) if d.name == "sam"]


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
    port, parent, prefix = free_port(), "shipyard-test-up", "syup-"
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

    def start() -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"up-{time.monotonic_ns()}.log"
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
        assert took < 10, f"Ctrl-C took {took:.1f} s"
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


def test_idle_servers_are_culled(hub_factory):
    hub = hub_factory(name="cull", extra_env={"SHIPYARD_CULL_TIMEOUT": "5"})
    services = hub.api("GET", "/services").json()
    assert "idle-culler" in services
    hub.create_user("ida")
    hub.start_server("ida")
    wait_for(
        lambda: "" not in hub.api("GET", "/users/ida").json()["servers"],
        60,
        1,
        "the culler to stop ida's idle server",
    )
    uid = pwd.getpwnam("sytest-ida").pw_uid
    wait_for(lambda: not processes_of(uid), 10, what="ida's processes to end")
    hub.stop()


def test_profiles_usage_shows_who_runs_what(hub_factory):
    hub = hub_factory(name="usage")
    hub.create_user("una", ["research"])
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
