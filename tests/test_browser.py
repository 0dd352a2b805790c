"""The whole journey in a real browser: Debian's chromium driven by Playwright.

One scientist, one hub with every service of the embedded platform (tracking, scheduler,
deployer): log in on the hub's page, pick a profile card, open JupyterLab, write a notebook
that trains and tracks a model, schedule it with the toolbar's dialog, run it now from the
Shipyard panel and watch it succeed there, deploy the model twice with the Deploy dialog
(which writes and runs a %deploy cell), call the endpoint, and roll back from the panel;
then open MLflow's UI from the panel's link to the tracked run and find there her run, its
metric and artifacts, her experiment and her registered model, and nothing of another user's.

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
from .browser import CHROMIUM, panel_section
from .conftest import TEST_PROFILES, built_environment, needs_root
from .hubtools import free_port, tagged, wait_for
from .services import notebook, service_hub

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
    wait_for(lambda: deployment.get_attribute("data-live-version") == "1", 60, 0.5, "the rollback")
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
    wait_for(lambda: preview.get_attribute("data-valid") == "false", 15, 0.2, "the refusal")
    assert "'61 * * * *' is not valid" in preview.inner_text()
    dialog.locator('[name="shipyard-cron"]').fill("0 7 * * *")
    runs = dialog.locator(".shipyard-next-runs li")
    wait_for(lambda: runs.count() == 3, 15, 0.2, "the next runs")
    assert all(" 07:00 CE" in text for text in runs.all_inner_texts()), runs.all_inner_texts()
    # a bad value: the scheduler's message beside its input
    dialog.locator('[name="shipyard-param-n"]').fill("three")
    error = dialog.locator('.shipyard-param-error[data-param="n"]')
    error.wait_for(timeout=15_000)
    assert "n must be a whole number" in error.inner_text()
    dialog.locator('[name="shipyard-param-n"]').fill("4")
    dialog.locator('[name="shipyard-param-city"]').fill("Paris")
    wait_for(lambda: error.count() == 0, 15, 0.2, "the value accepted")
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
