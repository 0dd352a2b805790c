"""Fixtures that start the real things: a JupyterHub with its proxy, real spawns."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest
import requests

from hub_ext.environments.build import EnvironmentBuilder
from hub_ext.environments.catalog import BuiltEnvironment, get_environment

from .browser import ARTIFACTS, CHROMIUM
from .hubtools import (
    REPO,
    HubProcess,
    free_port,
    left_behind,
    remove_account,
    remove_cgroups,
    remove_empty_cgroups,
    remove_test_accounts,
    session_folder,
    wait_for,
)

#: Environments the tests build, kept between runs (a rebuild of an unchanged lock
#: is a no-op) and apart from a developer's own /opt/shipyard/envs. Hubs, the
#: `shipyard` CLI and spawners started by tests inherit it.
TEST_ENVS_DIR = REPO / ".shipyard-test" / "envs"
os.environ["SHIPYARD_ENVS_DIR"] = str(TEST_ENVS_DIR)

TEST_PROFILES = """
profiles:
  - slug: tiny
    display_name: Tiny
    description: The default for everyone.
    default: true
    cpu_guarantee: 100m
    cpu_limit: 500m
    mem_guarantee: 128Mi
    mem_limit: 400Mi
  - slug: roomy
    display_name: Roomy
    description: Research only.
    cpu_guarantee: 500m
    cpu_limit: 1
    mem_limit: 768Mi
    groups: [research]
  - slug: gpu
    display_name: GPU
    mem_limit: 512Mi
    gpu: 1
    groups: [research]
quotas:
  default:
    max_servers: 3
    memory: 1Gi
  groups:
    research:
      max_servers: 2
      gpu: 1
"""

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: creates system accounts and cgroups"
)


@pytest.fixture(scope="session", autouse=True)
def no_leftovers_of_an_interrupted_run():
    """Remove what a killed test run (CI timeout, a second ^C) could not clean up.

    Its test accounts would otherwise be found again by name, with their old homes and
    whatever earlier runs wrote there, and its cgroups would still hold its processes.
    A test account is one homed in a ``shipyard-*`` folder of the temporary directory
    (:func:`~tests.hubtools.session_folder`); it is left behind when that folder names no
    live pytest. A test session running meanwhile keeps its accounts and busy cgroups.
    """
    for entry in pwd.getpwall():
        if entry.pw_uid >= 1000 and left_behind(entry.pw_dir):
            remove_account(entry.pw_name)
    remove_empty_cgroups()


@pytest.fixture(scope="session")
def home_root():
    """A world-traversable directory for the test accounts' homes (pytest's tmp is 0700)."""
    path = session_folder("homes-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def built_environment(name: str) -> BuiltEnvironment:
    """The environment ``name``, built from its lock into :data:`TEST_ENVS_DIR` (once per lock)."""
    TEST_ENVS_DIR.parent.mkdir(exist_ok=True)
    TEST_ENVS_DIR.parent.chmod(0o755)  # the test accounts run the environment's Python
    return EnvironmentBuilder(TEST_ENVS_DIR).build(get_environment(name)).env


@pytest.fixture(scope="session")
def base_env() -> BuiltEnvironment:
    """The ``base`` environment, built from images/base/requirements.lock (once per lock)."""
    return built_environment("base")


@pytest.fixture(scope="module")
def model_server_env() -> BuiltEnvironment:
    """The ``model-server`` environment the serving profile uses (built once per lock)."""
    return built_environment("model-server")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real tracking server on a free loopback port; its URL."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    # Without this, MLflow 3 starts a job runner and a dozen huey consumers, each importing
    # mlflow: half a minute of both CPUs before the server answers.
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    log = open(root / "server.log", "wb")  # closed in the finally below
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         f"sqlite:///{root}/mlflow.db", "--default-artifact-root", str(root / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def healthy():
        assert proc.poll() is None, (root / "server.log").read_text()
        with suppress(requests.RequestException):
            return requests.get(f"{url}/health", timeout=2).ok

    try:
        wait_for(healthy, timeout=120, what="mlflow server /health")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn worker
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def place():
    """A world-traversable folder for models (pytest's tmp is 0700)."""
    path = session_folder("deploy-")
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)  # noqa: S603, S607


@pytest.fixture(scope="module")
def model_dir(place) -> Path:
    """A real scikit-learn model saved by MLflow: y = 2x + 1."""
    import mlflow.sklearn
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LinearRegression

    x = pd.DataFrame({"x": np.arange(10, dtype=float)})
    y = 2 * x["x"] + 1
    model = LinearRegression().fit(x, y)
    path = place / "model"
    # cloudpickle: MLflow 3 defaults to skops, which the model-server lock does not hold
    mlflow.sklearn.save_model(
        model,
        path,
        signature=infer_signature(x, y),
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
    )
    subprocess.run(["chmod", "-R", "a+rX", str(path)], check=True)  # noqa: S603, S607
    return path


@pytest.fixture
def page(request):
    """A chromium tab (tests/browser.py); a failed test leaves its screenshot and HTML."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.set_default_timeout(30_000)
        page = context.new_page()
        yield page
        if getattr(request.node, "failed", False):
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / f"{request.node.name}.png"
            page.screenshot(path=str(shot), full_page=True)
            (ARTIFACTS / f"{request.node.name}.html").write_text(page.content())
            print(f"screenshot of the failure: {shot}")
        browser.close()


@pytest.fixture(scope="module")
def hub_factory(tmp_path_factory, home_root, base_env):
    """Start hubs on free ports; every one is stopped and cleaned up when its module ends.

    Per module, not per session: a hub left running (with its services, MLflow, the
    deployer's replicas) until the last module would take the CPU that later modules'
    hubs and kernels wait for.
    """
    hubs: list[HubProcess] = []

    def make(
        profiles: str = TEST_PROFILES, name: str = "hub", start: bool = True, **kwargs
    ) -> HubProcess:
        data = tmp_path_factory.mktemp(name)
        profiles_file = data / "profiles.yaml"
        profiles_file.write_text(profiles)
        hub = HubProcess(
            data_dir=data / "data", profiles_file=profiles_file, home_root=home_root, **kwargs
        )
        hubs.append(hub)
        return hub.start() if start else hub

    yield make
    # side by side: a module with ten hubs (servers, services) stops in the time of one
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda hub: hub.stop(), hubs))
    for hub in hubs:
        remove_test_accounts(hub.account_prefix)
        remove_cgroups(hub.cgroup_parent)


@pytest.fixture(scope="module")
def hub(hub_factory):
    """One running hub for a test module (users and servers persist between its tests)."""
    hub = hub_factory(extra_env={"SHIPYARD_TEST_GPUS": "0,1"})
    yield hub
    hub.stop()


POSTGRES = "postgresql://postgres@127.0.0.1:5432"


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database on the machine's server, dropped afterwards; yields its URL.

    Skips where PostgreSQL is not running, except in CI, whose machines run it.
    """
    import psycopg

    name = f"shipyard_test_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(POSTGRES + "/postgres", connect_timeout=5, autocommit=True)
    except psycopg.OperationalError as e:
        if os.environ.get("CI"):
            raise  # CI's machine runs PostgreSQL: its absence is a failure there
        pytest.skip(f"PostgreSQL is not reachable at 127.0.0.1:5432: {e}")
    admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Mark a test whose body failed (``item.failed``), for fixtures that keep evidence."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        item.failed = True
    if report.skipped and os.environ.get("CI") and not item.get_closest_marker("ci_may_skip"):
        # CI's machines have root, PostgreSQL, slapd and chromium: a test that skips there
        # means CI is misconfigured, and passing by skipping would hide it
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} skipped under CI ({reason}); CI must run it. A test that may "
            "skip there says why with @pytest.mark.ci_may_skip(reason)."
        )
