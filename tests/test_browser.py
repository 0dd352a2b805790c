"""The whole journey in a real browser: Debian's chromium driven by Playwright.

One scientist, one hub with every service of the embedded platform (tracking, scheduler,
deployer): log in on the hub's page, pick a profile card, open JupyterLab, write a notebook
that trains and tracks a model, schedule it with the toolbar's dialog, run it now from the
Shipyard panel and watch it succeed there, deploy the model twice with the Deploy dialog
(which writes and runs a %deploy cell), call the endpoint, and roll back from the panel;
then open MLflow's UI from the panel's link to the tracked run and find there her run, its
metric and artifacts, her experiment and her registered model, and nothing of another user's.

Then the panel's pipelines against the real scheduler (a run as a live graph, repair, Add
pipeline's errors, Schedule pipeline from the file browser, pause and resume, and a
notebook's Schedule… dialog scheduling the pipeline it is a step of), and a deployment
version's Lineage dialog against real tracking, scheduler and deployer: the whole chain
from the version back to the input file's digest.

Playwright cannot download its own browsers here, so it drives /usr/bin/chromium
(``apt-get install chromium``; `make test` installs it). A failing step leaves a screenshot
and the page's HTML in test-artifacts/browser/.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import pwd
import re
import threading
from pathlib import Path

import pytest
import requests

from hub_ext.host.slugs import account_name

from . import containertools
from .browser import ARTIFACTS, CHROMIUM, panel_section
from .conftest import TEST_PROFILES, built_environment, needs_root
from .hubtools import free_port, tagged, wait_for
from .services import notebook, put_file, service_hub

#: The test profiles, and one on the data-science environment (scikit-learn, pandas) that
#: both the notebook and its model servers run in.
PROFILES = TEST_PROFILES.replace(
    "quotas:",
    "  - slug: science\n    display_name: Data science\n"
    "    description: numpy, pandas, scikit-learn\n    environment: datascience\n"
    "    cpu_limit: '1'\n    mem_limit: 1Gi\nquotas:",
)

TRAIN = """%%track --name browser-run
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
iris = load_iris(as_frame=True)
X = iris.data.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
model = LogisticRegression(max_iter=300).fit(X, iris.target)
log(accuracy=float(model.score(X, iris.target)))
"""

pytestmark = [
    needs_root,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() and not os.environ.get("CI"),
        reason=f"no chromium at {CHROMIUM}: apt-get install chromium",
    ),
]


@pytest.fixture(scope="module")
def science_env():
    """The ``datascience`` environment the profile above uses (built once per lock)."""
    return built_environment("datascience")


#: The container placement's names: its networks, containers and mounts.
CONTAINERS = tagged("shipyard-test") + "-brw"


@pytest.fixture(scope="module", params=["process", "container"])
def platform(request, hub_factory, science_env, tmp_path_factory):
    """The embedded platform with every service, and alice, a user the admin added.

    Twice: users' code as processes (the default), then in podman containers
    (``c.LocalHost.placement = "container"``: the server, the scheduled run and the
    model's replicas from the ``datascience`` environment's image; docs/containers.md).
    """
    config_file = None
    if request.param == "container":
        if not containertools.usable():
            pytest.skip("needs root, podman and iptables for the container placement")
        containertools.ensure_image("datascience")
        containertools.remove_leftovers(CONTAINERS)
        config_file = containertools.hub_config(tmp_path_factory.mktemp("brw"), CONTAINERS)
    with service_hub(
        hub_factory,
        "browser" if request.param == "process" else "browser-ctr",
        tagged("sybrw-") if request.param == "process" else tagged("sybrc-"),
        tagged("shipyard-test-browser"),
        ["tracking", "scheduler", "deployer"],
        **({"config_file": config_file} if config_file is not None else {}),
        # the scheduler as shipped; the deployer's real backend, draining in a second
        configs={
            "scheduler": None,
            "deployer": "c.DeployerService.drain_seconds = 1\n"
            "c.DeployerService.monitor_interval = 1\n",
        },
        profiles=PROFILES,
        probe="alice",
    ) as hub:
        # added as an admin does (a one-time password), with a password of her own chosen
        password = hub.add_user_with_password("alice")
        token = hub.api("POST", "/users/alice/tokens", json={"note": "test", "expires_in": 3600})
        yield hub, token.json()["token"], password, request.param
    if config_file is not None:
        # stopping the platform stops every server, warm kernel and replica it made
        left = containertools.leftovers(CONTAINERS)
        containertools.remove_leftovers(CONTAINERS)
        assert left == {"containers": [], "networks": [], "rules": [], "mounts": []}, left


def type_into_cell(page, index: int, code: str) -> None:
    """Put ``code`` into the notebook's cell ``index`` as typed text (no auto-indent)."""
    editor = page.locator(".jp-NotebookPanel:visible .jp-Cell").nth(index).locator(".cm-content")
    editor.click()
    page.keyboard.insert_text(code)


class Tracking:
    """MLflow's REST API through the gateway, as one hub user (their API token)."""

    API = "/api/2.0/mlflow"

    def __init__(self, hub, token: str):
        self.base, self.token = f"{hub.url}/services/tracking", token

    def __call__(self, method: str, path: str, **kwargs) -> dict:
        r = requests.request(
            method,
            self.base + self.API + path,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60,
            **kwargs,
        )
        assert r.status_code == 200, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()


def someone_elses_work(hub, name: str = "bob") -> dict[str, str]:
    """An experiment, a run with a metric and an artifact, and a model of ``name``'s.

    Made through the gateway with their own token, as their notebooks would.
    """
    other = Tracking(hub, hub.create_user(name))
    experiment = other("POST", "/experiments/create", json={"name": f"{name}/secret-study"})
    experiment = experiment["experiment_id"]
    run = other("POST", "/runs/create", json={"experiment_id": experiment, "run_name": "secret"})
    run = run["run"]["info"]["run_id"]
    other("POST", "/runs/log-metric", json={"run_id": run, "key": "secret_auc", "value": 1,
                                            "timestamp": 1})  # fmt: skip
    r = requests.put(
        f"{other.base}/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run}/artifacts/secret.txt",
        data=b"not for alice",
        headers={"Authorization": f"Bearer {other.token}"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    other("POST", "/registered-models/create", json={"name": f"{name}-secret-model"})
    return {"experiment": experiment, "experiment_name": f"{name}/secret-study", "run": run,
            "metric": "secret_auc", "model": f"{name}-secret-model"}  # fmt: skip


#: What MLflow's UI shows when the gateway refuses its calls.
REFUSED = re.compile(r"status code 40[13]|hub API token is needed|X-XSRFToken")


def body_text(ui) -> str:
    return ui.locator("body").inner_text()


def mlflow_ui_shows_only_own_work(ui, hub, token: str, run_id: str, other: dict) -> None:
    """MLflow's UI, in tab ``ui`` (logged in by the hub alone), shows the user's work only.

    The user's run (its name, metrics and artifacts), experiment and registered models come
    from the REST API with the user's ``token``; ``other`` is :func:`someone_elses_work`.
    Each page is first seen with the user's data, so what it lacks it does not show.
    """
    mine = Tracking(hub, token)
    run = mine("GET", "/runs/get", params={"run_id": run_id})["run"]
    experiment_id = run["info"]["experiment_id"]
    experiment = mine("GET", "/experiments/get", params={"experiment_id": experiment_id})
    metrics = [m["key"] for m in run["data"]["metrics"]]
    artifacts = mine("GET", "/artifacts/list", params={"run_id": run_id}).get("files", [])
    models = [m["name"] for m in mine("GET", "/registered-models/search")["registered_models"]]
    assert metrics and artifacts and models, (metrics, artifacts, models)
    page = f"{hub.url}/services/tracking/#/experiments/{experiment_id}/runs/{run_id}"

    def shows(*texts: str, timeout: float = 30) -> None:
        def seen(text: str) -> bool:
            refused = ui.get_by_text(REFUSED).first
            if refused.count():  # fail at once, with what MLflow's page says
                raise AssertionError(f"MLflow's UI shows {refused.inner_text()!r}")
            return ui.get_by_text(text, exact=True).count() > 0

        for text in texts:
            wait_for(functools.partial(seen, text), timeout, 0.3, f"{text!r} in MLflow's UI")

    # the run: its name and metrics, then its artifacts (their top-level names)
    if ui.url != page:
        ui.goto(page)
    shows(run["info"]["run_name"], *metrics, timeout=60)
    ui.get_by_role("tab", name="Artifacts").first.click()
    shows(*[a["path"].rsplit("/", 1)[-1] for a in artifacts])
    # the experiments and the registered models
    ui.goto(f"{hub.url}/services/tracking/#/experiments")
    shows(experiment["experiment"]["name"])
    assert other["experiment_name"] not in body_text(ui)
    ui.goto(f"{hub.url}/services/tracking/#/models")
    shows(*models)
    assert other["model"] not in body_text(ui)
    # another user's run, by its address: refused, so none of it shows
    with ui.expect_response(lambda r: r.url.endswith("/graphql")) as answer:
        ui.goto(f"{hub.url}/services/tracking/#/experiments/{other['experiment']}/runs/"
                f"{other['run']}")  # fmt: skip
    assert answer.value.status == 200  # GraphQL's errors come inside
    ui.wait_for_timeout(2000)
    text = body_text(ui)
    assert other["metric"] not in text and "secret.txt" not in text, text[:2000]

    # a page of another origin on the same host (the browser sends the hub's cookies with
    # its requests) cannot read the token: its forged request is refused, and made nothing
    with page_elsewhere() as elsewhere:
        ui.goto(elsewhere)
        create = f"{hub.url}/services/tracking/ajax-api/2.0/mlflow/experiments/create"
        with ui.expect_response(lambda r: r.url == create) as answer:
            ui.evaluate(
                """url => fetch(url, {method: 'POST', mode: 'no-cors', credentials: 'include',
                                      body: JSON.stringify({name: 'alice/forged'})})""",
                create,
            )
        assert answer.value.status == 401, answer.value.status
    found = mine("POST", "/experiments/search", json={"max_results": 1000})["experiments"]
    assert "alice/forged" not in {e["name"] for e in found}


@contextlib.contextmanager
def page_elsewhere():
    """A page served from another port of the hub's host: another origin, the same site."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<!doctype html><title>elsewhere</title>")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


# the whole first hour in one test: a spawn, a kernel, a run, two deploys and a rollback,
# each a cold start of its own; minutes on a loaded two-core machine
@pytest.mark.timeout(600)
def test_login_schedule_run_deploy_and_roll_back_in_the_browser(platform, page):
    hub, token, password, placement = platform
    # -- log in through the hub's own page, pick a profile card, start the server
    page.goto(f"{hub.url}/hub/login")
    page.fill("#username_input", "alice")
    page.fill("#password_input", password)
    page.click("#login_submit")
    page.wait_for_url(re.compile(r"/hub/spawn"))
    card = page.locator('.shipyard-profile[data-profile="science"]')
    assert "Data science" in card.inner_text()
    card.click()
    page.locator('#spawn_form [type="submit"]').click()
    page.wait_for_url(re.compile(r"/user/alice/lab"), timeout=180_000)
    page.wait_for_selector("#shipyard-panel", state="attached", timeout=90_000)

    # -- the panel shows the server's profile
    page.locator(
        '.jp-SideBar [title="Shipyard"], .jp-SideBar [data-id="shipyard-panel"]'
    ).first.click()
    profile = panel_section(page, "profile")
    wait_for(lambda: "Data science" in profile.inner_text(), 30, 0.5, "the profile section")

    # -- a new notebook that trains a model in a tracked cell
    page.locator('.jp-LauncherCard[data-category="Notebook"]').first.click()
    page.wait_for_selector(".jp-NotebookPanel:visible .jp-Cell .cm-content")
    wait_for(
        lambda: "| Idle" in page.locator("#jp-main-statusbar").inner_text(),
        120,
        0.5,
        "the notebook's kernel",
    )
    type_into_cell(page, 0, TRAIN)
    page.keyboard.press("Shift+Enter")
    output = page.locator(".jp-NotebookPanel:visible .jp-Cell").nth(0).locator(".jp-OutputArea")
    wait_for(lambda: "browser-run" in output.inner_text(), 120, 0.5, "the tracked cell's run")
    page.keyboard.press("Control+s")  # the first save asks for a name
    rename = page.locator(".jp-Dialog")
    rename.locator("input.jp-mod-styled").first.fill("iris.ipynb")
    rename.locator("button", has_text="Rename and Save").click()
    page.locator(".jp-NotebookPanel:visible").wait_for()
    wait_for(
        lambda: (
            "iris.ipynb"
            in page.locator(
                ".jp-mod-current .lm-TabBar-tabLabel, .lm-TabBar-tab.jp-mod-current"
            ).first.inner_text()
        ),
        30,
        0.3,
        "the notebook saved as iris.ipynb",
    )

    # -- schedule it with the toolbar's dialog; the preview reads the cron expression
    page.locator(".shipyard-schedule-button").first.click()
    dialog = page.locator(".jp-Dialog")
    dialog.locator('[name="shipyard-job-name"]').fill("nightly-iris")
    dialog.locator('[name="shipyard-cron"]').fill("30 5 * * 1-5")
    wait_for(
        lambda: (
            "05:30" in dialog.locator(".shipyard-cron-preview").inner_text()
            or "5:30" in dialog.locator(".shipyard-cron-preview").inner_text()
        ),
        10,
        0.2,
        "the cron preview",
    )
    assert dialog.locator(".shipyard-next-runs li").count() == 3
    dialog.locator('[name="shipyard-profile"]').select_option("science")
    dialog.locator("button", has_text="Schedule").click()

    # -- run it now from the panel and see the run succeed there
    job = panel_section(page, "jobs").locator('[data-shipyard-job="nightly-iris"]')
    job.wait_for(timeout=30_000)
    job.locator('[data-action="run-now"]').click()
    job.locator('.shipyard-status[data-status="succeeded"]').wait_for(timeout=240_000)

    if placement == "container":  # the server and the run were containers of the image
        assert_in_containers(hub, token, "server")

    # the scheduled run tracked a second MLflow run; the experiments section lists both
    experiments = panel_section(page, "experiments")
    wait_for(lambda: experiments.inner_text().count("browser-run") >= 2, 60, 1, "both tracked runs")

    # -- deploy the model with the Deploy dialog: it writes and runs a %deploy cell
    def deploy() -> None:
        page.locator(".shipyard-deploy-button").first.click()
        dialog = page.locator(".jp-Dialog")
        dialog.locator('[name="shipyard-deploy-model"]').fill("model")
        dialog.locator('[name="shipyard-deploy-name"]').fill("iris")
        dialog.locator("button", has_text="Deploy").click()

    deploy()
    deployment = panel_section(page, "deployments").locator('[data-shipyard-deployment="iris"]')
    deployment.wait_for(timeout=180_000)
    wait_for(lambda: deployment.get_attribute("data-live-version") == "1", 180, 1, "version 1 live")
    cells = page.locator(".jp-NotebookPanel:visible .jp-Cell")
    assert "%deploy model --name iris" in cells.nth(1).inner_text()

    # -- call the endpoint as an MLflow client would
    endpoint = f"{hub.url}/services/deployer/models/alice/iris/invocations"
    row = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
    r = requests.post(
        endpoint,
        json={"dataframe_records": [row]},
        headers={"Authorization": f"token {token}"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == [0]
    anonymous = requests.post(endpoint, json={"dataframe_records": [row]}, timeout=60)
    assert anonymous.status_code in (401, 403)

    if placement == "container":
        assert_in_containers(hub, token, "replica")

    # -- a second version, then roll back from the panel
    deploy()
    wait_for(lambda: deployment.get_attribute("data-live-version") == "2", 180, 1, "version 2 live")
    deployment.locator('[data-action="rollback"]').click()
    page.locator(".jp-Dialog button", has_text="Roll back").click()
    # a rollback to a stopped version starts it again (a cold start, as long as a deploy's)
    wait_for(lambda: deployment.get_attribute("data-live-version") == "1", 180, 0.5, "the rollback")
    r = requests.get(
        f"{hub.url}/services/deployer/api/deployments/iris",
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text

    # -- MLflow's UI, from the panel's link to the tracked run, logged in by the hub alone
    other = someone_elses_work(hub)
    link = experiments.locator('[data-action="open-run"]', has_text="browser-run").first
    run_id = link.locator("xpath=ancestor::li[@data-shipyard-run]").get_attribute(
        "data-shipyard-run"
    )
    with page.context.expect_page() as opened:
        link.click()
    mlflow_ui_shows_only_own_work(opened.value, hub, token, run_id, other)

    # -- a notebook with parameters: the Schedule dialog shows what the scheduler makes of
    # the cron expression and of each value typed, while it is typed
    schedule_with_parameters(page, hub, token)


def assert_in_containers(hub, token: str, role: str) -> None:
    """alice's ``role`` (server, replica) runs in a container; her last run ran in one."""
    found = containertools.podman(
        "ps",
        "--filter",
        f"label=io.shipyard.instance={CONTAINERS}",
        "--filter",
        f"label=io.shipyard.role={role}",
        "--filter",
        "label=io.shipyard.user=alice",
        "--format",
        "{{.Image}}",
    ).stdout.split()
    assert found and all("shipyard-datascience" in image for image in found), found
    if role == "server":
        headers = {"Authorization": f"token {token}"}
        runs = requests.get(f"{hub.url}/services/scheduler/api/runs", headers=headers, timeout=30)
        assert runs.status_code == 200, runs.text
        last = runs.json()["runs"][0]["id"]
        log = requests.get(
            f"{hub.url}/services/scheduler/api/runs/{last}/log", headers=headers, timeout=30
        )
        assert "in container" in log.text and "shipyard-datascience" in log.text, log.text[:2000]


def schedule_with_parameters(page, hub, token: str) -> None:
    """Schedule a notebook with a ``parameters`` cell from the dialog, past a bad value."""
    entry = pwd.getpwnam(account_name("alice", hub.account_prefix))
    path = Path(entry.pw_dir) / "params.ipynb"
    path.write_text(
        json.dumps(notebook("print(city, n)", parameters="city = 'Berlin'  # where\nn: int = 3\n"))
    )
    os.chown(path, entry.pw_uid, entry.pw_gid)
    page.goto(f"{hub.url}/user/alice/lab/tree/params.ipynb")
    button = page.locator(".jp-NotebookPanel:visible .shipyard-schedule-button")
    button.wait_for(timeout=90_000)
    button.click()
    dialog = page.locator(".jp-Dialog")
    # the parameters as the scheduler read the cell (papermill's inspector), defaults bare
    dialog.locator('[name="shipyard-param-n"]').wait_for(timeout=30_000)
    assert dialog.locator('[name="shipyard-param-city"]').input_value() == "Berlin"
    assert dialog.locator('[name="shipyard-param-n"]').input_value() == "3"
    dialog.locator('[name="shipyard-job-name"]').fill("with-params")
    dialog.locator('[name="shipyard-tz"]').fill("Europe/Berlin")
    # a cron expression the scheduler refuses: its message; then its next runs
    dialog.locator('[name="shipyard-cron"]').fill("61 * * * *")
    preview = dialog.locator(".shipyard-cron-preview")
    # on a loaded machine (CI's two cores, the server in a container) the answer takes seconds
    wait_for(lambda: preview.get_attribute("data-valid") == "false", 60, 0.2, "the refusal")
    assert "'61 * * * *' is not valid" in preview.inner_text()
    dialog.locator('[name="shipyard-cron"]').fill("0 7 * * *")
    runs = dialog.locator(".shipyard-next-runs li")
    wait_for(lambda: runs.count() == 3, 60, 0.2, "the next runs")
    assert all(" 07:00 CE" in text for text in runs.all_inner_texts()), runs.all_inner_texts()
    # a bad value: the scheduler's message beside its input
    dialog.locator('[name="shipyard-param-n"]').fill("three")
    error = dialog.locator('.shipyard-param-error[data-param="n"]')
    error.wait_for(timeout=60_000)
    assert "n must be a whole number" in error.inner_text()
    dialog.locator('[name="shipyard-param-n"]').fill("4")
    dialog.locator('[name="shipyard-param-city"]').fill("Paris")
    wait_for(lambda: error.count() == 0, 60, 0.2, "the value accepted")
    dialog.locator("button", has_text="Schedule").click()

    def scheduled() -> dict | None:
        r = requests.get(
            f"{hub.url}/services/scheduler/api/jobs",
            headers={"Authorization": f"token {token}"},
            timeout=30,
        )
        return next((j for j in r.json()["jobs"] if j["name"] == "with-params"), None)

    wait_for(scheduled, 30, 0.5, "the job with parameters")
    job = scheduled()
    assert job["parameters"] == {"city": "Paris", "n": 4}
    assert job["triggers"][0]["trigger"]["expression"] == "0 7 * * *"


# ------------------------------------------------------------------ pipelines in the panel

#: Two steps: ``first`` records twice the pipeline's ``value`` (and fails on 0), ``second``
#: gets it.
PANEL_PIPELINE = """\
name: panel-pair
description: Two steps, the second needs the first.
profile: tiny
parameters:
  value: 3
steps:
  first:
    notebook: first.ipynb
    outputs: {doubled: integer}
  second:
    notebook: second.ipynb
    needs: [first]
    inputs: {doubled: steps.first.outputs.doubled}
"""
FIRST = notebook(
    "assert value, 'value must not be 0'\n"
    "from hub_ext.runtime.outputs import output\noutput('doubled', 2 * value)",
    parameters="value = 0",
)
SECOND = notebook("print('got', doubled)", parameters="doubled = 0")
#: One step, started at 06:00 in Paris (never during the test: it is paused at once).
CRON_PIPELINE = """\
name: panel-nightly
profile: tiny
parameters:
  value: 3
triggers:
  - {kind: cron, expression: "0 6 * * *", timezone: Europe/Paris}
steps:
  only: {notebook: first.ipynb}
"""
#: One step and no trigger: its notebook's Schedule… dialog gives it its cron trigger.
DAILY_PIPELINE = """\
# the daily run: its schedule is set from the notebook's Schedule dialog
name: panel-daily
profile: tiny
parameters:
  value: 3
steps:
  first: {notebook: first.ipynb}
"""
#: A pipeline beside it that the scheduler refuses (a need that names no step).
BROKEN_DAILY = """\
name: panel-broken
profile: tiny
steps:
  first: {notebook: first.ipynb, needs: [nope]}
"""
#: A file with two mistakes: a need that names no step, a notebook that is not there.
BAD_PIPELINE = """\
name: broken
profile: tiny
steps:
  a: {notebook: first.ipynb, needs: [nope]}
  b: {notebook: gone.ipynb}
"""


@pytest.fixture(scope="module")
def pipeline_platform(hub_factory):
    """A hub with the scheduler alone (users' code as processes), and alice with a password."""
    with service_hub(
        hub_factory,
        "browser-pl",
        tagged("sybrp-"),
        tagged("shipyard-test-brp"),
        ["scheduler"],
        probe="alice",
    ) as hub:
        password = hub.add_user_with_password("alice")
        token = hub.api("POST", "/users/alice/tokens", json={"note": "test", "expires_in": 3600})
        yield hub, token.json()["token"], password


def open_panel(page, hub, name: str, password: str, profile: str) -> None:
    """Log ``name`` in on the hub's page, start their server on ``profile``, open the panel."""
    page.goto(f"{hub.url}/hub/login")
    page.fill("#username_input", name)
    page.fill("#password_input", password)
    page.click("#login_submit")
    page.wait_for_url(re.compile(r"/hub/spawn"))
    page.locator(f'.shipyard-profile[data-profile="{profile}"]').click()
    page.locator('#spawn_form [type="submit"]').click()
    page.wait_for_url(re.compile(rf"/user/{name}/lab"), timeout=180_000)
    page.wait_for_selector("#shipyard-panel", state="attached", timeout=90_000)
    page.locator(
        '.jp-SideBar [title="Shipyard"], .jp-SideBar [data-id="shipyard-panel"]'
    ).first.click()


def scheduler_call(hub, token: str, method: str, path: str, **kwargs) -> requests.Response:
    return requests.request(
        method,
        f"{hub.url}/services/scheduler/{path}",
        headers={"Authorization": f"token {token}"},
        timeout=60,
        **kwargs,
    )


def test_a_pipeline_runs_from_the_panel_as_a_live_graph(pipeline_platform, page):
    hub, token, password = pipeline_platform
    open_panel(page, hub, "alice", password, "tiny")
    # her home exists now: the pipeline's files, and the pipeline added through the API
    entry = pwd.getpwnam(account_name("alice", hub.account_prefix))
    alice = (token, Path(entry.pw_dir), entry)
    put_file(alice, "pair/pipeline.yaml", PANEL_PIPELINE)
    put_file(alice, "pair/first.ipynb", FIRST)
    put_file(alice, "pair/second.ipynb", SECOND)
    r = scheduler_call(hub, token, "POST", "api/pipelines", json={"path": "pair/pipeline.yaml"})
    assert r.status_code == 201, r.text
    pipeline = r.json()

    # -- the Pipelines section lists it; Run asks for its parameter, then the run shows as
    # a graph whose nodes follow the steps until both have succeeded
    page.locator('#shipyard-panel [data-action="refresh"]').click()
    section = panel_section(page, "pipelines")
    item = section.locator('[data-shipyard-pipeline="panel-pair"]')
    item.wait_for(timeout=30_000)
    item.locator('[data-action="select-pipeline"]').click()
    item.locator('[data-action="run-pipeline"]').click()
    dialog = page.locator(".jp-Dialog")
    value = dialog.locator('[name="shipyard-param-value"]')
    assert value.input_value() == "3"
    value.fill("5")
    dialog.locator("button", has_text="Run").click()
    graph = item.locator(".shipyard-pipeline-run")
    for step in ("first", "second"):
        node = graph.locator(f'[data-shipyard-step="{step}"][data-status="succeeded"]')
        node.wait_for(timeout=240_000)
        assert "succeeded" in node.locator(".shipyard-status").inner_text()
        assert node.locator('[data-action="step-logs"]').count() == 1
    wait_for(lambda: graph.get_attribute("data-status") == "succeeded", 30, 0.5, "the run ended")
    assert graph.locator('path[data-edge="first>second"]').count() == 1
    # second sits below first, and the graph fits the sidebar: no node is cut off on the right
    first = graph.locator('[data-shipyard-step="first"]').bounding_box()
    second = graph.locator('[data-shipyard-step="second"]').bounding_box()
    assert second["y"] > first["y"] + first["height"] - 1, (first, second)
    assert abs(second["x"] - first["x"]) < 1, (first, second)
    box = graph.locator(".shipyard-pipeline-graph").bounding_box()
    for node in (first, second):
        right = node["x"] + node["width"]
        assert node["x"] >= box["x"] - 1 and right <= box["x"] + box["width"] + 1, (node, box)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)  # what a user saw, for the reviewer
    # the sidebar scrolls: bring the graph's last step into view, so the shot shows both
    graph.locator('[data-shipyard-step="second"]').scroll_into_view_if_needed()
    page.locator("#shipyard-panel").screenshot(path=str(ARTIFACTS / "pipeline-graph.png"))
    # the run the panel started, with the value typed
    runs = scheduler_call(hub, token, "GET", f"api/pipelines/{pipeline['id']}/runs").json()["runs"]
    assert len(runs) == 1 and runs[0]["status"] == "succeeded", runs
    assert runs[0]["parameters"] == {"value": 5}, runs[0]
    assert runs[0]["steps"][0]["outputs"] == {"doubled": 10}, runs[0]["steps"]

    # -- a run that fails (value 0): its step failed, the next skipped; Repair starts a new run
    item.locator('[data-action="run-pipeline"]').click()
    page.locator('.jp-Dialog [name="shipyard-param-value"]').fill("0")
    page.locator(".jp-Dialog button", has_text="Run").click()
    failed = graph.locator('[data-shipyard-step="first"][data-status="failed"]')
    failed.wait_for(timeout=240_000)
    graph.locator('[data-shipyard-step="second"][data-status="skipped"]').wait_for(timeout=60_000)
    wait_for(lambda: graph.get_attribute("data-status") == "failed", 30, 0.5, "the run failed")
    graph.locator('[data-shipyard-step="second"]').scroll_into_view_if_needed()
    page.locator("#shipyard-panel").screenshot(path=str(ARTIFACTS / "pipeline-failed.png"))
    assert "value must not be 0" in (failed.get_attribute("title") or ""), failed.inner_html()
    failed_run = graph.get_attribute("data-shipyard-pipeline-run")
    graph.locator('[data-action="repair-pipeline-run"]').click()
    wait_for(
        lambda: graph.get_attribute("data-shipyard-pipeline-run") not in ("", failed_run),
        30,
        0.3,
        "the repair shown",
    )
    repair = graph.get_attribute("data-shipyard-pipeline-run")
    answer = scheduler_call(hub, token, "GET", f"api/pipeline-runs/{repair}").json()
    assert answer["repair_of"] == failed_run, answer
    wait_for(lambda: graph.get_attribute("data-status") == "failed", 240, 0.5, "the repair ran")

    # -- Add pipeline with a bad file, then a path that is not there: the dialog shows the
    # service's own messages (every file:line error of the 400), and adds nothing
    put_file(alice, "bad/pipeline.yaml", BAD_PIPELINE)
    put_file(alice, "bad/first.ipynb", FIRST)
    section.locator('[data-action="add-pipeline"]').click()
    for path in ("bad/pipeline.yaml", "nowhere/pipeline.yaml"):
        answer = scheduler_call(hub, token, "POST", "api/pipelines", json={"path": path})
        assert answer.status_code in (400, 404), answer.text
        expected = [line.strip() for line in answer.json()["message"].splitlines() if line.strip()]
        page.locator('.jp-Dialog [name="shipyard-pipeline-path"]').fill(path)
        page.locator(".jp-Dialog button", has_text="Add").click()
        error = page.locator(".jp-Dialog .shipyard-dialog-error")

        def shown(expected=expected, error=error) -> bool:
            return error.count() == 1 and all(line in error.inner_text() for line in expected)

        wait_for(shown, 30, 0.3, f"the service's message for {path}")
        if path == "bad/pipeline.yaml":
            assert len(expected) >= 2 and "pipeline.yaml:4:" in error.inner_text(), expected
    page.locator(".jp-Dialog button", has_text="Cancel").click()
    names = [
        p["name"] for p in scheduler_call(hub, token, "GET", "api/pipelines").json()["pipelines"]
    ]
    assert names == ["panel-pair"], names

    # -- a pipeline with a cron trigger shows it; Pause shows the badge and the service has
    # it paused, Resume clears both
    # (made from the file browser: Schedule pipeline on its pipeline.yaml)
    put_file(alice, "nightly/pipeline.yaml", CRON_PIPELINE)
    put_file(alice, "nightly/first.ipynb", FIRST)
    page.click('.jp-SideBar [data-id="filebrowser"]')
    listing = '.jp-DirListing-item[title^="Name: {}"]'
    folder = page.locator(listing.format("nightly"))
    # the folder was made behind the listing's back: it shows once refreshed
    page.locator('.jp-FileBrowser [data-command="filebrowser:refresh"]').first.click()
    folder.wait_for(timeout=30_000)
    folder.dblclick()
    page.click(listing.format("pipeline.yaml"), button="right")
    page.locator('.lm-Menu-item:has(.lm-Menu-itemLabel:text-is("Schedule pipeline"))').click()
    scheduled = page.locator(".jp-Dialog .shipyard-schedule-pipeline")
    scheduled.wait_for(timeout=60_000)
    said = page.locator(".jp-Dialog").inner_text()
    assert "panel-nightly" in said and "From nightly/pipeline.yaml" in said, said
    assert "0 6 * * * (Europe/Paris)" in scheduled.inner_text(), said
    page.locator(".jp-Dialog button", has_text="Close").click()
    listed = scheduler_call(hub, token, "GET", "api/pipelines").json()["pipelines"]
    nightly_id = next(p["id"] for p in listed if p["name"] == "panel-nightly")
    page.click('.jp-SideBar [data-id="shipyard-panel"]')
    page.locator('#shipyard-panel [data-action="refresh"]').click()
    nightly = section.locator('[data-shipyard-pipeline="panel-nightly"]')
    nightly.wait_for(timeout=30_000)
    nightly.locator('[data-action="select-pipeline"]').click()
    trigger = nightly.locator('[data-shipyard-trigger="cron"]')
    trigger.wait_for(timeout=30_000)
    assert trigger.inner_text() == "0 6 * * * (Europe/Paris)", trigger.inner_text()
    badge = nightly.locator('[data-shipyard-badge="paused"]')
    assert badge.count() == 0
    pause = nightly.locator('[data-action="pause-pipeline"]')
    assert pause.inner_text() == "Pause"
    pause.click()
    badge.wait_for(timeout=30_000)
    assert badge.inner_text() == "Paused"
    assert nightly.get_attribute("data-paused") == "true"
    answer = scheduler_call(hub, token, "GET", f"api/pipelines/{nightly_id}").json()
    assert answer["paused"] is True, answer
    assert pause.inner_text() == "Resume"
    pause.click()
    badge.wait_for(state="detached", timeout=30_000)
    assert nightly.get_attribute("data-paused") == "false"
    answer = scheduler_call(hub, token, "GET", f"api/pipelines/{nightly_id}").json()
    assert answer["paused"] is False, answer

    # -- the notebook's Schedule… dialog schedules the pipeline the notebook is a step of:
    # the job's fields give way to the cron and time zone, the trigger is written into the
    # file, the scheduler reads it, and the dialog shows the pipeline it made
    put_file(alice, "daily/pipeline.yaml", DAILY_PIPELINE)
    put_file(alice, "daily/first.ipynb", FIRST)
    page.goto(f"{hub.url}/user/alice/lab/tree/daily/first.ipynb")
    button = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .shipyard-schedule-button")
    button.wait_for(timeout=90_000)
    button.click()
    dialog = page.locator(".jp-Dialog")
    what = dialog.locator('select[name="shipyard-schedule-what"]')
    what.wait_for(timeout=60_000)
    assert "Schedule this notebook or a pipeline" in dialog.inner_text()
    options = what.locator("option").all_inner_texts()
    assert options == [
        "This notebook, as a job",
        "The pipeline panel-daily (its step first)",
    ], options
    assert dialog.locator('[name="shipyard-job-name"]').count() == 1  # a job, until chosen
    what.select_option("daily/pipeline.yaml")
    note = dialog.locator(".shipyard-schedule-pipeline-note")
    note.wait_for(timeout=10_000)
    assert "Schedule the pipeline panel-daily" in note.inner_text()
    for field in ("shipyard-job-name", "shipyard-profile", "shipyard-param-value"):
        assert dialog.locator(f'[name="{field}"]').count() == 0, field
    dialog.locator('[name="shipyard-cron"]').fill("30 7 * * 1-5")
    dialog.locator('[name="shipyard-tz"]').fill("Europe/Paris")
    dialog.locator('.shipyard-cron-preview[data-valid="true"]').wait_for(timeout=30_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    dialog.locator(".jp-Dialog-content").screenshot(
        path=str(ARTIFACTS / "schedule-dialog-pipeline.png")
    )
    dialog.locator("button", has_text="Schedule").click()
    made = page.locator(
        '.jp-Dialog .shipyard-schedule-pipeline[data-shipyard-pipeline="panel-daily"]'
    )
    made.wait_for(timeout=60_000)
    said = page.locator(".jp-Dialog").inner_text()
    assert "Pipeline panel-daily scheduled" in said, said
    assert "30 7 * * 1-5 (Europe/Paris)" in made.inner_text(), said
    page.locator(".jp-Dialog button", has_text="Close").click()
    listed = scheduler_call(hub, token, "GET", "api/pipelines").json()["pipelines"]
    daily = next(p for p in listed if p["name"] == "panel-daily")
    assert daily["source_path"] == "daily/pipeline.yaml", daily
    assert [(t["kind"], t["expression"], t["timezone"]) for t in daily["triggers"]] == [
        ("cron", "30 7 * * 1-5", "Europe/Paris")
    ], daily["triggers"]
    written = (alice[1] / "daily" / "pipeline.yaml").read_text()
    assert written == DAILY_PIPELINE + (
        'triggers:\n  - {kind: cron, expression: "30 7 * * 1-5", timezone: "Europe/Paris"}\n'
    ), written
    # no job was made of the notebook
    jobs = scheduler_call(hub, token, "GET", "api/jobs").json()["jobs"]
    assert not [j for j in jobs if j["name"].startswith("first")], jobs

    # a file the scheduler refuses: the dialog opens again with its file:line errors, and
    # the file is as it was (the trigger written for the scheduler to read is taken out)
    put_file(alice, "daily/broken.pipeline.yaml", BROKEN_DAILY)
    expected = scheduler_call(
        hub, token, "POST", "api/pipelines", json={"path": "daily/broken.pipeline.yaml"}
    ).json()["message"]
    button.click()
    what.wait_for(timeout=60_000)
    assert (
        what.locator("option").all_inner_texts()[1] == "The pipeline panel-broken (its step first)"
    )
    what.select_option("daily/broken.pipeline.yaml")
    dialog.locator('[name="shipyard-cron"]').fill("0 8 * * *")
    dialog.locator('[name="shipyard-tz"]').fill("UTC")
    dialog.locator('.shipyard-cron-preview[data-valid="true"]').wait_for(timeout=30_000)
    dialog.locator("button", has_text="Schedule").click()
    error = dialog.locator(".shipyard-dialog-error")
    error.wait_for(timeout=60_000)
    for line in (line.strip() for line in expected.splitlines() if line.strip()):
        assert line in error.inner_text(), (line, error.inner_text())
    assert "daily/broken.pipeline.yaml:4:" in error.inner_text(), error.inner_text()
    assert what.input_value() == "daily/broken.pipeline.yaml"  # as chosen, to fix and retry
    dialog.locator("button", has_text="Cancel").click()
    assert (alice[1] / "daily" / "broken.pipeline.yaml").read_text() == BROKEN_DAILY
    names = [
        p["name"] for p in scheduler_call(hub, token, "GET", "api/pipelines").json()["pipelines"]
    ]
    assert "panel-broken" not in names, names


# ------------------------------------------------------------------ a version's lineage


@pytest.fixture(scope="module")
def lineage_platform(hub_factory):
    """A hub with tracking, the scheduler and the deployer (its test backend: no model is
    loaded, the lineage is what is looked at), and alice with a password."""
    with service_hub(
        hub_factory,
        "browser-ln",
        tagged("sybrl-"),
        tagged("shipyard-test-brl"),
        ["tracking", "scheduler", "deployer"],
        probe="alice",
    ) as hub:
        password = hub.add_user_with_password("alice")
        token = hub.api("POST", "/users/alice/tokens", json={"note": "test", "expires_in": 3600})
        yield hub, token.json()["token"], password


def test_a_versions_lineage_shows_its_chain_from_the_panel(lineage_platform, page):
    """The chain of a version deployed from a pipeline run's tracked model, read through the
    real deployer, tracking and scheduler, as the panel's Lineage dialog shows it."""
    from .test_lineage import PIPELINE as LINEAGE_PIPELINE
    from .test_lineage import TRAIN as LINEAGE_TRAIN
    from .test_lineage import _log_and_register

    hub, token, password = lineage_platform
    open_panel(page, hub, "alice", password, "tiny")
    entry = pwd.getpwnam(account_name("alice", hub.account_prefix))
    alice = (token, Path(entry.pw_dir), entry)
    # a pipeline run whose step writes an input file and records where it ran (as %deploy
    # records it), a model tracked and registered as alice, deployed with that lineage
    put_file(alice, "pipelines/pipeline.yaml", LINEAGE_PIPELINE)
    put_file(alice, "pipelines/train.ipynb", LINEAGE_TRAIN)
    r = scheduler_call(
        hub, token, "POST", "api/pipelines", json={"path": "pipelines/pipeline.yaml"}
    )
    assert r.status_code == 201, r.text
    r = scheduler_call(
        hub, token, "POST", f"api/pipelines/{r.json()['id']}/runs", json={"parameters": {"rows": 5}}
    )
    assert r.status_code == 201, r.text
    prun_id = r.json()["id"]

    def ended():
        run = scheduler_call(hub, token, "GET", f"api/pipeline-runs/{prun_id}").json()
        return run if run["status"] != "running" else None

    prun = wait_for(ended, 240, 0.3, "the pipeline run")
    assert prun["status"] == "succeeded", prun
    [step] = prun["steps"]
    mlflow_run = _log_and_register(hub, token)
    body = {
        "name": "lin",
        "model_uri": "models:/alice-lin/1",
        "lineage": {
            "run_id": mlflow_run,
            "registered_model": "alice-lin",
            "model_version": "1",
            "notebook": "pipelines/train.ipynb",
            **step["outputs"]["lineage"],
        },
    }
    r = requests.post(
        f"{hub.url}/services/deployer/api/deployments",
        headers={"Authorization": f"token {token}"},
        json=body,
        timeout=60,
    )
    assert r.status_code == 201, r.text

    # -- the panel's Lineage action on v1: the whole chain, nothing unresolved, no error
    page.locator('#shipyard-panel [data-action="refresh"]').click()
    version = page.locator('[data-shipyard-deployment="lin"] [data-shipyard-version="1"]')
    version.wait_for(timeout=60_000)
    version.locator('[data-action="lineage"]').click()
    dialog = page.locator(".jp-Dialog")
    chain = dialog.locator(".shipyard-lineage")
    chain.wait_for(timeout=60_000)
    assert "Lineage of lin v1" in dialog.inner_text()
    links = [s.get_attribute("data-link") for s in chain.locator(".shipyard-lineage-link").all()]
    assert links == [
        "version",
        "model_version",
        "mlflow_run",
        "pipeline_run",
        "notebook",
        "inputs",
    ], links
    assert chain.locator('[data-missing="true"]').count() == 0, chain.inner_text()
    assert chain.locator('[data-link="missing"]').count() == 0, chain.inner_text()
    assert dialog.locator(".shipyard-error").count() == 0, dialog.inner_text()

    def section(link: str):
        return chain.locator(f'.shipyard-lineage-link[data-link="{link}"]')

    assert "Version v1 of lin" in section("version").inner_text()
    assert "models:/alice-lin/1" in section("version").inner_text()
    assert "Registered model alice-lin version 1" in section("model_version").inner_text()
    made_by = section("model_version").locator("td").first
    assert made_by.get_attribute("title") == mlflow_run
    run_text = section("mlflow_run").inner_text()
    assert mlflow_run[:8] in run_text and "0.4" in run_text, run_text
    assert "output('score', rows / 10)" in run_text, run_text  # the cell that trained it
    pipeline_text = section("pipeline_run").inner_text()
    assert "lineage" in pipeline_text and prun_id[:8] in pipeline_text, pipeline_text
    assert "train" in pipeline_text and "succeeded" in pipeline_text.lower(), pipeline_text
    sched = scheduler_call(hub, token, "GET", f"api/runs/{step['run_id']}").json()
    digest = section("notebook").locator("td[title]").first
    assert digest.get_attribute("title") == sched["notebook_digest"]
    assert "pipelines/train.ipynb" in section("notebook").inner_text()
    table = step["files"]["table"]
    file_row = section("inputs").locator("tr").first
    assert table["path"] in file_row.inner_text(), file_row.inner_text()
    assert file_row.locator("td").get_attribute("title") == (
        f"{table['sha256']} (left by step train)"
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)  # what a user saw, for the reviewer
    content = dialog.locator(".jp-Dialog-content")
    content.screenshot(path=str(ARTIFACTS / "lineage-dialog.png"))
    section("inputs").scroll_into_view_if_needed()  # the dialog scrolls: its other end too
    content.screenshot(path=str(ARTIFACTS / "lineage-dialog-end.png"))
    dialog.locator("button", has_text="Close").click()
