"""Pipelines from a notebook and a terminal: ``%pipeline`` and ``shipyard pipeline``, for real.

One hub with the scheduler for the module (tests/services.py's ``scheduler_hub``); alice and
bob have real accounts and homes, and every step is a real papermill run as its owner.
``%pipeline`` runs in a real IPython shell in this process with the environment a Shipyard
kernel has (the user's token, ``SHIPYARD_SCHEDULER_URL``, the home, the notebook's path);
``shipyard pipeline`` runs as a subprocess. What the service recorded is read back through
its REST API, and every refusal is checked for its words.

- a two-step pipeline created from the file beside the kernel's notebook (and created again
  after an edit: updated), run with a parameter and ``--wait`` while a live table of its
  steps updates, then ``status`` as text and ``list``;
- a run that fails, the notebook fixed, ``create`` again and ``repair --wait``: the step that
  succeeded is reused; ``cancel`` stops a running one;
- a file with errors is refused with each ``file:line``; a parameter it does not declare,
  an unknown verb, no file, and bob asking for alice's pipeline and run (not found);
- ``shipyard pipeline create``, ``run --wait``, ``status`` and its errors;
- the pure helpers (parameters, the file's default path, the text) without a hub.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import ipywidgets
import pytest
from IPython.core.error import UsageError

from server_ext.clients.scheduler.client import SchedulerError
from server_ext.clients.scheduler.pipelines import (
    duration_text,
    pipeline_file,
    run_parameters,
    run_text,
)

from .conftest import needs_root
from .hubtools import REPO, ipython_shell, tagged, wait_for
from .services import notebook, put_file, scheduler_hub, users_with_accounts

RECORD = "from hub_ext.runtime.outputs import output\n"

FLOW = textwrap.dedent(
    """\
    name: flow
    description: Two steps, a value between them.
    profile: tiny
    parameters:
      rows: 2
      label: small
    steps:
      make:
        notebook: make.ipynb
        outputs: {total: integer}
      check:
        notebook: check.ipynb
        needs: [make]
        inputs: {total: steps.make.outputs.total}
    """
)
MAKE = notebook(RECORD + "output('total', rows * 10)", parameters="rows = 1\nlabel = ''")
CHECK_FAILS = notebook(
    "if rows > 2:\n    raise ValueError(f'too many rows for {label}: {total}')",
    parameters="total = 0\nrows = 1\nlabel = ''",
)
CHECK = notebook("print('checked', total)", parameters="total = 0\nrows = 1\nlabel = ''")
SLOW = textwrap.dedent(
    """\
    name: slow
    profile: tiny
    steps:
      wait:
        notebook: wait.ipynb
      after:
        notebook: wait.ipynb
        needs: [wait]
    """
)


# ------------------------------------------------------------------ pure helpers

PIPELINE = {
    "name": "flow",
    "source_path": "flow/pipeline.yaml",
    "parameters": {"rows": 2, "label": "small", "ratio": 0.5, "on": False},
}


@pytest.mark.parametrize(
    "items, values",
    [
        (["rows=5"], {"rows": 5}),
        (["label=5"], {"label": "5"}),  # a text parameter keeps the text
        (["label=two words", "ratio=1e-3"], {"label": "two words", "ratio": 0.001}),
        (["on=true", "rows=[1, 2]"], {"on": True, "rows": [1, 2]}),
        (["on=True"], {"on": True}),
        (["label="], {"label": ""}),
    ],
)
def test_run_parameters_are_read_by_their_defaults(items, values):
    assert run_parameters(PIPELINE, items) == values


@pytest.mark.parametrize(
    "items, message",
    [
        (["rows"], "--param 'rows' is not NAME=VALUE"),
        (["rows=1", "rows=2"], "--param rows is given twice"),
        (["nope=1"], "Pipeline 'flow' has no parameter 'nope' (it declares: label, on, ratio, rows)"),
        (["rows=five"], "--param rows=five: rows's default is 2, so give a JSON value"),
    ],
)  # fmt: skip
def test_bad_run_parameters_say_what_to_fix(items, message):
    with pytest.raises(SchedulerError) as info:
        run_parameters(PIPELINE, items)
    assert str(info.value).startswith(message), str(info.value)


def test_the_pipeline_file_relative_to_the_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "flow").mkdir(parents=True)
    (home / "flow" / "explore.ipynb").write_text("{}")
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.delenv("JUPYTERHUB_ROOT_DIR", raising=False)
    assert pipeline_file("flow/pipeline.yaml", home=home) == "flow/pipeline.yaml"
    assert pipeline_file(str(home / "flow" / "p.yaml"), home=home) == "flow/p.yaml"
    with pytest.raises(SchedulerError, match="is outside your home"):
        pipeline_file(str(tmp_path / "p.yaml"), home=home)
    with pytest.raises(SchedulerError, match="give the pipeline file, relative to your home"):
        pipeline_file(None, home=home)
    session = {"__session__": str(home / "flow" / "explore.ipynb")}
    assert pipeline_file(None, session, home=home) == "flow/pipeline.yaml"


def test_the_run_as_text():
    run = {
        "id": "r1",
        "pipeline_name": "flow",
        "status": "failed",
        "reason": "step check failed",
        "repair_of": None,
        "steps": [
            {"step": "make", "status": "succeeded", "attempt": 1, "duration_seconds": 4.25,
             "reason": "", "outputs": {"total": 20}},
            {"step": "check", "status": "failed", "attempt": 2, "duration_seconds": 65,
             "reason": "ValueError:\n  too many", "outputs": {}},
            {"step": "report", "status": "skipped", "attempt": None, "duration_seconds": None,
             "reason": "needs check, which failed", "outputs": {}},
        ],
    }  # fmt: skip
    assert run_text(run).splitlines() == [
        "Pipeline 'flow' run r1: failed (step check failed)",
        "STEP    STATE      ATTEMPT  DURATION  DETAIL",
        "make    succeeded  1        4.2s      total=20",
        "check   failed     2        1m 05s    ValueError: too many",
        "report  skipped                       needs check, which failed",
    ]
    assert [duration_text(s) for s in (None, 0.04, 59.96, 3600, 7322)] == [
        "", "0.0s", "60.0s", "1h 00m", "2h 02m",
    ]  # fmt: skip


# ------------------------------------------------------------------ against a real hub


@pytest.fixture(scope="module")
def sched(hub_factory):
    with scheduler_hub(
        hub_factory, "pipeline-clients", tagged("sypc-"), tagged("shipyard-test-pc")
    ) as client:
        yield client


@pytest.fixture(scope="module")
def users(sched, home_root):
    return users_with_accounts(sched.hub, home_root, {"alice": [], "bob": []})


@pytest.fixture(scope="module")
def ip(tmp_path_factory):
    with ipython_shell(tmp_path_factory.mktemp("shell"), poll_interval=0.2) as shell:
        yield shell


def as_user(monkeypatch, sched, user, name: str) -> None:
    """What the spawner gives the user's kernels: the token, the scheduler's URL, the home."""
    token, home, _ = user
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", token)
    monkeypatch.setenv("JUPYTERHUB_USER", name)
    monkeypatch.setenv("SHIPYARD_SCHEDULER_URL", f"{sched.hub.url}/services/scheduler")
    monkeypatch.setenv("HOME", str(home))
    for variable in ("JPY_SESSION_NAME", "JUPYTERHUB_ROOT_DIR"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(home)


def usage_error(ip, line: str) -> str:
    with pytest.raises(UsageError) as info:
        ip.run_line_magic("pipeline", line)
    return str(info.value)


def pipelines_of(sched, user) -> dict[str, dict]:
    return {p["name"]: p for p in sched.call("GET", "api/pipelines", user[0]).json()["pipelines"]}


def steps_of(run: dict) -> dict[str, dict]:
    return {s["step"]: s for s in run["steps"]}


@needs_root
def test_create_run_wait_status_and_list_from_a_notebook(ip, sched, users, monkeypatch, capsys):
    alice = users["alice"]
    as_user(monkeypatch, sched, alice, "alice")
    for name, content in (
        ("flow/pipeline.yaml", FLOW),
        ("flow/make.ipynb", MAKE),
        ("flow/check.ipynb", CHECK),
        ("flow/explore.ipynb", notebook("1")),
    ):
        put_file(alice, name, content)
    # the kernel of flow/explore.ipynb: its folder's pipeline.yaml by default
    monkeypatch.setenv("JPY_SESSION_NAME", str(alice[1] / "flow" / "explore.ipynb"))
    ip.run_line_magic("pipeline", "create")
    out = capsys.readouterr().out
    pipeline = pipelines_of(sched, alice)["flow"]
    assert (
        f"Created pipeline 'flow' (id {pipeline['id']}, version 1) from flow/pipeline.yaml." in out
    )
    assert "Steps, in run order: make -> check" in out
    assert "Run it with %pipeline run flow --wait" in out
    ip.run_line_magic("pipeline", "create flow/pipeline.yaml")  # again: the same one, re-read
    assert f"Updated pipeline 'flow' (id {pipeline['id']}, " in capsys.readouterr().out
    assert list(pipelines_of(sched, alice)) == ["flow"]

    # run --wait in a notebook: a table of the steps, updated in place until the run ends
    shown: list = []
    states: list[str] = []  # every value the table had, as the frontend would get them

    def display(widget):
        shown.append(widget)
        states.append(widget.value)
        widget.observe(lambda change: states.append(change["new"]), "value")

    monkeypatch.setattr("server_ext.magics.pipelines.display", display)
    monkeypatch.setattr(ip, "kernel", object(), raising=False)
    ip.run_line_magic("pipeline", "run flow --param rows=3 --param 'label=big one' --wait")
    out = capsys.readouterr().out
    (view,) = shown
    assert isinstance(view, ipywidgets.HTML)
    runs = sched.call("GET", f"api/pipelines/{pipeline['id']}/runs", alice[0]).json()["runs"]
    run = runs[0]
    assert run["status"] == "succeeded" and run["parameters"] == {"rows": 3, "label": "big one"}
    assert steps_of(run)["make"]["outputs"] == {"total": 30}
    assert out.startswith(f"Started run {run['id']} of pipeline 'flow'.\n")
    assert out.endswith(f"Pipeline 'flow' run {run['id']}: succeeded\n")
    html = view.value
    assert html.count(">succeeded</span>") == 2 and "total=30" in html
    assert "<b>make</b>" in html and "<b>check</b>" in html
    # shown from the start, then updated in place: make ran while check waited
    assert ">pending</span>" in states[0], states[0]
    assert any(s.count(">running</span>") == 1 and ">pending</span>" in s for s in states)
    assert states[-1] == html

    # status, once: the same view; as text in a terminal IPython
    shown.clear()
    ip.run_line_magic("pipeline", f"status {run['id']}")
    (again,) = shown
    assert again.value.count(">succeeded</span>") == 2
    monkeypatch.delattr(ip, "kernel")
    ip.run_line_magic("pipeline", f"status {run['id']}")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"Pipeline 'flow' run {run['id']}: succeeded"
    assert lines[1].split() == ["STEP", "STATE", "ATTEMPT", "DURATION", "DETAIL"]
    assert lines[2].split()[:3] == ["make", "succeeded", "1"] and lines[2].endswith("total=30")
    assert lines[3].split()[:3] == ["check", "succeeded", "1"]

    # without --wait: the id and how to follow it; --wait in a terminal: a line per change
    ip.run_line_magic("pipeline", "run flow")
    out = capsys.readouterr().out
    second = out.split("Started run ", 1)[1].split()[0]
    assert f"Follow it with %pipeline status {second} (add --wait" in out
    ip.run_line_magic("pipeline", f"status {second} --wait")
    out = capsys.readouterr().out
    assert "  check: succeeded\n" in out and "  make: succeeded\n" in out
    assert f"Pipeline 'flow' run {second}: succeeded\n" in out

    ip.run_line_magic("pipeline", "list")
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split() == ["NAME", "STEPS", "FILE", "LAST", "RUN", "LAST", "RUN", "ID", "ID"]
    assert listing[1].startswith("flow ") and listing[1].endswith(f"{second}  {pipeline['id']}")


@needs_root
def test_a_failed_run_repaired_after_a_fix_and_a_run_cancelled(
    ip, sched, users, monkeypatch, capsys
):
    alice = users["alice"]
    as_user(monkeypatch, sched, alice, "alice")
    for name, content in (
        ("fix/pipeline.yaml", FLOW.replace("name: flow", "name: fix")),
        ("fix/make.ipynb", MAKE),
        ("fix/check.ipynb", CHECK_FAILS),
    ):
        put_file(alice, name, content)
    ip.run_line_magic("pipeline", "create fix/pipeline.yaml")
    ip.run_line_magic("pipeline", "run fix -p rows=5 --wait")
    out = capsys.readouterr().out
    failed = out.split("Started run ", 1)[1].split()[0]
    assert "  check: failed\n" in out
    assert f"Pipeline 'fix' run {failed}: failed" in out
    assert "too many rows for small: 50" in out  # the step's reason, in its row

    put_file(alice, "fix/check.ipynb", CHECK)
    ip.run_line_magic("pipeline", "create fix/pipeline.yaml")
    assert "Updated pipeline 'fix'" in capsys.readouterr().out
    ip.run_line_magic("pipeline", f"repair {failed} --wait")
    out = capsys.readouterr().out
    repaired = out.split("Started run ", 1)[1].split()[0]
    assert f"Started run {repaired} to repair {failed}: " in out
    run = sched.call("GET", f"api/pipeline-runs/{repaired}", alice[0]).json()
    assert run["status"] == "succeeded" and run["repair_of"] == failed
    assert {s: v["status"] for s, v in steps_of(run).items()} == {
        "make": "reused",
        "check": "succeeded",
    }
    assert f"Pipeline 'fix' run {repaired}, a repair of {failed}: succeeded" in out
    # nothing left to repair: the service's 409, in its words
    message = usage_error(ip, f"repair {repaired}")
    assert (
        message
        == sched.call("POST", f"api/pipeline-runs/{repaired}/repair", alice[0]).json()["message"]
    )

    put_file(alice, "slow/pipeline.yaml", SLOW)
    put_file(alice, "slow/wait.ipynb", notebook("import time\ntime.sleep(60)"))
    ip.run_line_magic("pipeline", "create slow/pipeline.yaml")
    ip.run_line_magic("pipeline", "run slow")
    running = capsys.readouterr().out.split("Started run ", 1)[1].split()[0]

    def step_runs() -> bool:
        run = sched.call("GET", f"api/pipeline-runs/{running}", alice[0]).json()
        return steps_of(run)["wait"]["status"] == "running"

    wait_for(step_runs, 60, 0.2, "the slow step to start")
    ip.run_line_magic("pipeline", f"cancel {running}")
    out = capsys.readouterr().out
    assert out.startswith("Cancelled; its running steps are being stopped.\n")
    assert f"Pipeline 'slow' run {running}: cancelled" in out
    run = sched.call("GET", f"api/pipeline-runs/{running}", alice[0]).json()
    assert run["status"] == "cancelled"
    assert steps_of(run)["after"]["status"] in ("cancelled", "skipped")
    assert usage_error(ip, f"cancel {running}").endswith("has already ended (cancelled)")


@needs_root
def test_errors_are_messages_that_say_what_to_fix(ip, sched, users, monkeypatch):
    alice, bob = users["alice"], users["bob"]
    as_user(monkeypatch, sched, alice, "alice")
    put_file(alice, "bad/ok.ipynb", MAKE)
    put_file(
        alice,
        "bad/pipeline.yaml",
        "name: bad\nprofile: tiny\nsteps:\n"
        "  a: {notebook: ok.ipynb, needs: [nope]}\n"
        "  b: {notebook: gone.ipynb}\n",
    )
    message = usage_error(ip, "create bad/pipeline.yaml")
    expected = sched.call("POST", "api/pipelines", alice[0], json={"path": "bad/pipeline.yaml"})
    assert expected.status_code == 400 and message == expected.json()["message"]
    assert "bad/pipeline.yaml:4:" in message and "nope" in message, message
    assert "bad" not in pipelines_of(sched, alice)
    assert "no pipeline file at 'bad/none.yaml'" in usage_error(ip, "create bad/none.yaml").lower()
    assert usage_error(ip, "create").startswith("Cannot tell which folder this kernel's notebook")
    assert usage_error(ip, "start flow").startswith("Unknown %pipeline verb 'start': ")
    assert usage_error(ip, "run") == (
        "Say which: %pipeline run NAME_OR_ID [--param NAME=VALUE ...] [--wait]"
    )
    assert usage_error(ip, "list --wait") == "%pipeline list takes no --wait."
    assert usage_error(ip, "run nothing-here").startswith("No pipeline named 'nothing-here'")

    put_file(alice, "mine/pipeline.yaml", FLOW.replace("name: flow", "name: mine"))
    put_file(alice, "mine/make.ipynb", MAKE)
    put_file(alice, "mine/check.ipynb", CHECK)
    ip.run_line_magic("pipeline", "create mine/pipeline.yaml")
    assert usage_error(ip, "run mine --param nope=1").startswith(
        "Pipeline 'mine' has no parameter 'nope' (it declares: label, rows)"
    )
    mine = pipelines_of(sched, alice)["mine"]
    run = sched.call("POST", f"api/pipelines/{mine['id']}/runs", alice[0], json={}).json()

    # bob: alice's pipeline and run are missing ones, in the service's words
    as_user(monkeypatch, sched, bob, "bob")
    assert usage_error(ip, "run mine").startswith("No pipeline named 'mine' that you can see")
    for line, method, path in (
        (f"run {mine['id']}", "GET", f"api/pipelines/{mine['id']}"),
        (f"status {run['id']}", "GET", f"api/pipeline-runs/{run['id']}"),
        (f"repair {run['id']}", "POST", f"api/pipeline-runs/{run['id']}/repair"),
        (f"delete {mine['id']}", "GET", f"api/pipelines/{mine['id']}"),
    ):
        answer = sched.call(method, path, bob[0], json={} if method == "POST" else None)
        assert answer.status_code == 404
        assert usage_error(ip, line) == answer.json()["message"], line
    cancel = sched.call(
        "PATCH", f"api/pipeline-runs/{run['id']}", bob[0], json={"status": "cancelled"}
    )
    assert cancel.status_code == 404
    assert usage_error(ip, f"cancel {run['id']}") == cancel.json()["message"]


# -------------------------------------------------------------------- the CLI


def shipyard(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hub_ext.cli", "pipeline", *args],
        env=env, capture_output=True, text=True, timeout=180, cwd=REPO,
    )  # fmt: skip


@needs_root
def test_the_cli_creates_runs_and_shows_a_pipeline(sched, users):
    alice = users["alice"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "SHIPYARD_"))}
    env.update(
        JUPYTERHUB_API_TOKEN=alice[0],
        JUPYTERHUB_USER="alice",
        SHIPYARD_SCHEDULER_URL=f"{sched.hub.url}/services/scheduler",
        HOME=str(alice[1]),
    )
    for name, content in (
        ("cli/pipeline.yaml", FLOW.replace("name: flow", "name: from-cli")),
        ("cli/make.ipynb", MAKE),
        ("cli/check.ipynb", CHECK),
    ):
        put_file(alice, name, content)
    created = shipyard(env, "create", "cli/pipeline.yaml")
    assert created.returncode == 0, created.stderr
    assert "Created pipeline 'from-cli'" in created.stdout
    assert "Steps, in run order: make -> check" in created.stdout

    ran = shipyard(env, "run", "from-cli", "-p", "rows=4", "--wait")
    assert ran.returncode == 0, ran.stderr
    run_id = ran.stdout.split("Started run ", 1)[1].split()[0]
    assert "  make: succeeded\n" in ran.stderr and ran.stderr.endswith("  check: succeeded\n")
    assert f"Pipeline 'from-cli' run {run_id}: succeeded\n" in ran.stdout
    assert "total=40" in ran.stdout

    status = shipyard(env, "status", run_id)
    assert status.returncode == 0 and status.stdout == ran.stdout.split("\n", 1)[1]
    listed = shipyard(env, "list")
    assert listed.returncode == 0
    (row,) = [r for r in listed.stdout.splitlines() if r.startswith("from-cli ")]
    assert run_id in row

    # errors: the service's message, no traceback, status 1
    put_file(alice, "cli/bad.yaml", "name: bad\nprofile: tiny\nsteps:\n  a: {notebook: x.ipynb}\n")
    for args, words in (
        (["create", "cli/bad.yaml"], "cli/bad.yaml:4:"),
        (["run", "from-cli", "-p", "nope=1"], "has no parameter 'nope'"),
        (["status", "0" * 32], "no pipeline run"),
    ):
        result = shipyard(env, *args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert result.stderr.startswith("shipyard: ") and words in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
