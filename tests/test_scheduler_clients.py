"""The scheduler's user-facing clients against the real service behind a real hub.

``%schedule``, ``%jobs`` and ``%run_now`` run in a real IPython shell in this process, with the
environment a Shipyard kernel has (the user's token, ``SHIPYARD_SCHEDULER_URL``, the home);
``shipyard jobs`` runs as a subprocess; the server extension's forwarding handlers run in a
real jupyter-server. The service, its hub and the runs are set up as in
``tests/test_scheduler_service.py``, with tests/services.py's helpers (one hub for this module). What the service
recorded is read back through its REST API; every user error is checked for its message.
The pure helpers (parameters, names, URLs, notebook paths) are tested without a hub.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import ipywidgets
import pytest
import requests
from IPython.core.error import UsageError

from server_ext.clients.scheduler.client import SchedulerError, normalise_url, scheduler_url
from server_ext.clients.scheduler.jobs import current_notebook, default_job_name, split_parameters

from .conftest import needs_root
from .hubtools import REPO, free_port, ipython_shell, start_jupyter_server, tagged, wait_for
from .services import TEAM, create_job, notebook, put_file, scheduler_hub, users_with_accounts


@pytest.fixture(scope="module")
def sched(hub_factory):
    """A hub with the scheduler, as the service tests' ``sched``, with accounts of its own.

    Its own account prefix and cgroup parent: the service's tests may run at the same time
    (another pytest), and end by deleting their accounts and killing their cgroups.
    """
    with scheduler_hub(
        hub_factory, "sched-clients", tagged("sycli-"), tagged("shipyard-test-cli")
    ) as client:
        yield client


@pytest.fixture(scope="module")
def users(sched, home_root):
    """alice and bob in group team, carol in none, with accounts of this module's hub."""
    return users_with_accounts(sched.hub, home_root, TEAM)


def usage_error(call, *args) -> str:
    with pytest.raises(UsageError) as info:
        call(*args)
    return str(info.value)


def service_message(sched, token: str, method: str, path: str, **kwargs) -> str:
    """What the service itself answers a request with: the message the clients must show."""
    r = sched.call(method, path, token, **kwargs)
    assert r.status_code >= 400, r.text
    return r.json()["message"]


def service_preview_error(sched, token: str, notebook: dict, name: str, text: str) -> str:
    """The scheduler's message for ``name=text`` typed for ``notebook``'s parameters."""
    r = sched.call(
        "POST",
        "api/previews/parameters",
        token,
        json={"notebook": notebook, "values": {name: text}},
    )
    assert r.status_code == 200, r.text
    (value,) = r.json()["values"]
    assert value["error"], value
    return value["error"]


def jobs_of(sched, user) -> dict[str, dict]:
    return {j["name"]: j for j in sched.call("GET", "api/jobs", user[0]).json()["jobs"]}


# ------------------------------------------------------------------ pure helpers


@pytest.mark.parametrize(
    "items, expected",
    [
        (["n=3"], {"n": "3"}),
        (["name=abc"], {"name": "abc"}),
        (['x="3"'], {"x": '"3"'}),
        (["xs=[1, 2]", 'd={"a": 1}'], {"xs": "[1, 2]", "d": '{"a": 1}'}),
        (["words=two words", "empty="], {"words": "two words", "empty": ""}),
        (["eq=a=b"], {"eq": "a=b"}),
        (["a=1", "a=1"], {"a": "1"}),
    ],
)
def test_parameters_are_split_as_text(items, expected):
    # what the text stands for is the scheduler's to say (tests/test_scheduler_preview.py)
    assert split_parameters(items) == expected


@pytest.mark.parametrize(
    "items, message",
    [
        (["n"], "-p 'n' has no '=': write NAME=VALUE, e.g. -p n=3 or -p city=Berlin."),
        (["a=1", "a=2"], "-p a is given twice with different values: give it once."),
    ],
)
def test_malformed_parameters(items, message):
    with pytest.raises(SchedulerError) as info:
        split_parameters(items)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    "path, name",
    [
        ("daily-report.ipynb", "daily-report"),
        ("reports/Sales.ipynb", "sales"),
        ("Daily Report.ipynb", "daily-report-48e2ac04"),
        ("a/daily_report.ipynb", "daily-report-e9cc3fe1"),
        ("2024 sales.ipynb", "x-2024-sales-0fef9dab"),
        ("x" * 80 + ".ipynb", "x" * 54 + "-d929cdee"),
        ("a--b.ipynb", "a-b-90827a2e"),
    ],
)
def test_default_job_names_are_slugs(path, name):
    assert default_job_name(path) == name
    assert len(name) <= 63


@pytest.mark.parametrize(
    "environ, url",
    [
        ({"SHIPYARD_SCHEDULER_URL": "https://hub.example.org/services/scheduler/"},
         "https://hub.example.org/services/scheduler"),
        # the hub-side setting names where the service listens: its prefix is added
        ({"SHIPYARD_SCHEDULER_URL": "http://127.0.0.1:8003"},
         "http://127.0.0.1:8003/services/scheduler"),
        ({"JUPYTERHUB_PUBLIC_HUB_URL": "https://hub.example.org/prefix/hub/"},
         "https://hub.example.org/prefix/services/scheduler"),
    ],
)  # fmt: skip
def test_the_scheduler_url_from_the_environment(environ, url):
    assert scheduler_url(environ) == url


def test_urls_never_carry_tokens_and_a_missing_url_says_what_to_do():
    for url in ("https://alice:secret@hub.example.org/services/scheduler",
                "https://hub.example.org/services/scheduler?token=abc"):  # fmt: skip
        with pytest.raises(SchedulerError, match="never in a URL"):
            normalise_url(url)
    with pytest.raises(SchedulerError, match="not the scheduler's URL"):
        normalise_url("ftp://hub.example.org")
    with pytest.raises(SchedulerError, match="SHIPYARD_SCHEDULER_URL is not set. Restart"):
        scheduler_url({})


def test_the_current_notebook_relative_to_the_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "reports").mkdir(parents=True)
    (home / "reports" / "daily.ipynb").write_text("{}")
    (tmp_path / "elsewhere.ipynb").write_text("{}")
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.delenv("JUPYTERHUB_ROOT_DIR", raising=False)
    monkeypatch.chdir(home / "reports")

    absolute = str(home / "reports" / "daily.ipynb")
    assert current_notebook(namespace={"__session__": absolute}, home=home) == "reports/daily.ipynb"
    monkeypatch.setenv("JPY_SESSION_NAME", "reports/daily.ipynb")  # relative to the server root
    assert current_notebook(home=home) == "reports/daily.ipynb"
    assert current_notebook("reports/daily.ipynb", home=home) == "reports/daily.ipynb"
    assert current_notebook("daily.ipynb", home=home) == "reports/daily.ipynb"  # from the cwd
    with pytest.raises(SchedulerError, match="is outside your home"):
        current_notebook(str(tmp_path / "elsewhere.ipynb"), home=home)
    (home / "out.ipynb").symlink_to(tmp_path / "elsewhere.ipynb")
    with pytest.raises(SchedulerError, match="is outside your home"):
        current_notebook("out.ipynb", home=home)
    with pytest.raises(SchedulerError, match="No notebook at 'nope.ipynb'"):
        current_notebook("nope.ipynb", home=home)
    monkeypatch.delenv("JPY_SESSION_NAME")
    with pytest.raises(SchedulerError, match="pass --notebook PATH"):
        current_notebook(home=home)


# ------------------------------------------------------------ the magics, for real


@pytest.fixture(scope="module")
def ip(tmp_path_factory):
    """One real IPython shell with the extension loaded, its history and spool kept apart."""
    with ipython_shell(tmp_path_factory.mktemp("shell"), poll_interval=0.2) as shell:
        yield shell


@pytest.fixture
def alice(sched, users, monkeypatch):
    """What the spawner gives alice's kernels: her token, the scheduler's URL, her home."""
    token, home, _ = users["alice"]
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", token)
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    monkeypatch.setenv("SHIPYARD_SCHEDULER_URL", f"{sched.hub.url}/services/scheduler")
    monkeypatch.setenv("HOME", str(home))
    for name in ("JPY_SESSION_NAME", "SHIPYARD_PROFILE", "JUPYTERHUB_ROOT_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(home)
    return users["alice"]


def open_notebook(monkeypatch, user, relative: str, nb: dict) -> None:
    """Save ``nb`` in the user's home and make it this kernel's notebook, as Jupyter would."""
    put_file(user, relative, nb)
    monkeypatch.setenv("JPY_SESSION_NAME", str(user[1] / relative))


@needs_root
def test_schedule_creates_the_job_then_updates_it(ip, sched, alice, monkeypatch, capsys):
    relative = "reports/Daily Report.ipynb"
    open_notebook(
        monkeypatch, alice, relative,
        notebook("print(n, name)", parameters="n = 1\nname = 'x'\nlabel = 'l'"),
    )  # fmt: skip
    name = default_job_name(relative)
    ip.run_line_magic(
        "schedule", '"0 6 * * *" --tz Europe/Berlin -p n=3 -p name=abc -p label=\'"3"\' --html'
    )
    out = capsys.readouterr().out
    job = jobs_of(sched, alice)[name]
    assert f"Scheduled {relative} as job {name!r} (id {job['id']}, profile tiny)." in out
    assert job["source_path"] == relative and job["profile"] == "tiny"
    assert job["parameters"] == {"n": 3, "name": "abc", "label": "3"}
    assert job["output_formats"] == ["ipynb", "html"]
    assert [t["trigger"] for t in job["triggers"]] == [
        {"kind": "cron", "expression": "0 6 * * *", "timezone": "Europe/Berlin"}
    ]
    assert "Triggers: cron 0 6 * * * (Europe/Berlin)" in out
    (nxt,) = [line for line in out.splitlines() if line.startswith("Next runs: ")]
    times = nxt.removeprefix("Next runs: ").split(", ")
    assert len(times) == 3 and all(" 06:00 CE" in t for t in times), nxt
    assert "Webhook" not in out

    # again, with the notebook changed: the same job, updated, and what changed is shown
    put_file(
        alice, relative, notebook("print(n * 2, name)", parameters="n = 1\nname = 'x'\nlabel = 'l'")
    )
    ip.run_line_magic("schedule", '"30 7 * * 1-5" --tz Europe/Berlin --retries 2')
    out = capsys.readouterr().out
    assert f"Updated job {name!r} (id {job['id']}): " in out
    assert "notebook_digest" in out and "triggers" in out and "retry_attempts" in out
    assert "The notebook changed: 1 line(s) added, 1 removed in its cells:" in out
    assert "-print(n, name)" in out and "+print(n * 2, name)" in out
    updated = jobs_of(sched, alice)[name]
    assert updated["id"] == job["id"] and updated["retry_attempts"] == 2
    assert updated["triggers"][0]["trigger"]["expression"] == "30 7 * * 1-5"
    assert updated["parameters"] == job["parameters"]  # left out: kept
    assert updated["notebook_digest"] != job["notebook_digest"]

    ip.run_line_magic("schedule", '"30 7 * * 1-5" --tz Europe/Berlin -p n=4')
    out = capsys.readouterr().out
    assert ": parameters changed." in out and "The notebook is the same as the job's." in out
    assert jobs_of(sched, alice)[name]["parameters"] == {"n": 4}


@needs_root
def test_a_webhook_secret_goes_to_a_private_file_never_to_the_output(
    ip, sched, alice, monkeypatch, capsys
):
    put_file(alice, "pipelines/ingest.ipynb", notebook("print('ingest')"))
    ip.run_line_magic(
        "schedule",
        "--webhook --on-file 'inbox/*.csv' --name ingest --notebook pipelines/ingest.ipynb",
    )
    out = capsys.readouterr().out
    job = jobs_of(sched, alice)["ingest"]
    secret_file = alice[1] / ".shipyard" / "webhooks" / "ingest.secret"
    secret = secret_file.read_text().strip()
    assert len(secret) >= 32 and secret not in out and secret not in json.dumps(job)
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret_file.parent.stat().st_mode) == 0o700
    url = f"{sched.hub.url}/services/scheduler/api/webhooks/{job['id']}"
    assert f'  curl -X POST -H "X-Shipyard-Webhook-Secret: $(cat {secret_file})" {url}' in out
    assert "Triggers: file inbox/*.csv; webhook" in out and "Next runs" not in out
    # the command as printed calls the webhook
    command = out.split("\n  curl ", 1)[1].splitlines()[0]
    result = subprocess.run(
        ["bash", "-c", f"curl -s -w '%{{http_code}}' {command}"], capture_output=True, text=True
    )
    assert result.stdout.endswith("202"), result
    sched.wait_run(json.loads(result.stdout[:-3])["run_id"], alice[0])

    ip.run_line_magic(
        "schedule",
        "--webhook --on-file 'inbox/*.csv' --name ingest --notebook pipelines/ingest.ipynb",
    )
    assert secret_file.read_text().strip() == secret  # an unchanged webhook keeps its secret
    ip.run_line_magic(
        "schedule", "--on-file 'inbox/*.csv' --name ingest --notebook pipelines/ingest.ipynb"
    )
    assert not secret_file.exists()  # the webhook is gone, and so is its secret
    capsys.readouterr()


@needs_root
def test_schedule_bad_input_says_what_to_fix_and_changes_nothing(ip, sched, alice, monkeypatch):
    open_notebook(monkeypatch, alice, "reports/bad.ipynb", notebook("x = 1", parameters="n = 1"))
    before = jobs_of(sched, alice)
    # the service's own words, for the same request
    expected = service_message(
        sched, alice[0], "POST", "api/jobs",
        json={"name": "bad", "profile": "tiny", "source_path": "reports/bad.ipynb",
              "triggers": [{"kind": "cron", "expression": "61 * * * *", "timezone": "UTC"}]},
    )  # fmt: skip
    assert "61 * * * *" in expected
    assert usage_error(ip.run_line_magic, "schedule", '"61 * * * *"') == expected
    message = usage_error(ip.run_line_magic, "schedule", '"0 6 * * *" --tz Mars/Olympus')
    assert "unknown time zone 'Mars/Olympus'" in message
    message = usage_error(ip.run_line_magic, "schedule", '"0 6 * * *" -p beta=1')
    assert "beta" in message
    message = usage_error(ip.run_line_magic, "schedule", '"0 6 * * *" --profile roomy')
    assert "research" in message  # a profile of another group: the service's 403, in words
    assert usage_error(ip.run_line_magic, "schedule", '"0 6 * * *" -p n').startswith(
        "-p 'n' has no '=': write NAME=VALUE"
    )
    assert usage_error(ip.run_line_magic, "schedule", "").startswith("Say when to run:")
    assert "argument --retries: invalid int value" in usage_error(
        ip.run_line_magic, "schedule", '"0 6 * * *" --retries x'
    )
    message = usage_error(ip.run_line_magic, "schedule", '"0 6 * * *" --retries 11')
    assert "retry_attempts must be between 0 and 10, not 11" in message
    message = usage_error(ip.run_line_magic, "schedule", '"0 6 * * *" --name Bad_Name')
    assert "'Bad_Name' is not a valid name" in message
    message = usage_error(ip.run_line_magic, "schedule", '"0 6 * * *" --notebook nope.ipynb')
    assert message.startswith("No notebook at 'nope.ipynb'")
    monkeypatch.delenv("JPY_SESSION_NAME")
    assert "pass --notebook PATH" in usage_error(ip.run_line_magic, "schedule", '"0 6 * * *"')
    assert jobs_of(sched, alice) == before

    # a default name that another notebook's job has: refused, not taken over
    create_job(sched, alice, "weekly", notebook("print(1)"))
    open_notebook(monkeypatch, alice, "other/weekly.ipynb", notebook("print(2)"))
    message = usage_error(ip.run_line_magic, "schedule", '"0 6 * * 1"')
    assert message.startswith(
        "A job named 'weekly' already runs notebooks/weekly.ipynb: give this one another name "
        "with --name, or pass --name weekly to make that job run other/weekly.ipynb instead."
    )
    assert jobs_of(sched, alice)["weekly"]["source_path"] == "notebooks/weekly.ipynb"


@needs_root
def test_a_scheduler_that_does_not_answer_or_refuses_the_token(ip, sched, alice, monkeypatch):
    port = free_port()
    monkeypatch.setenv("SHIPYARD_SCHEDULER_URL", f"http://127.0.0.1:{port}/services/scheduler")
    assert usage_error(ip.run_line_magic, "jobs", "") == (
        f"Cannot reach the scheduler at http://127.0.0.1:{port}/services/scheduler "
        "(ConnectionError); ask your admin whether it runs."
    )
    # a URL where no service is: the hub redirects to its own pages
    monkeypatch.setenv("SHIPYARD_SCHEDULER_URL", f"{sched.hub.url}/services/schedule")
    message = usage_error(ip.run_line_magic, "jobs", "")
    assert message.startswith(
        f"{sched.hub.url}/services/schedule answered with a redirect to "
        "/hub/services/schedule/api/jobs?"
    )
    assert "not the scheduler's API: is it the scheduler's URL" in message
    monkeypatch.setenv("SHIPYARD_SCHEDULER_URL", f"{sched.hub.url}/services/scheduler")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "not-a-token")
    expected = service_message(sched, "not-a-token", "GET", "api/jobs")
    assert usage_error(ip.run_line_magic, "jobs", "") == expected
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN")
    assert usage_error(ip.run_line_magic, "run_now", "x").startswith(
        "No token for the scheduler: JUPYTERHUB_API_TOKEN is not set."
    )


@needs_root
def test_jobs_table_and_run_now_with_its_progress(ip, sched, alice, users, capsys, monkeypatch):
    shown = []  # what the magic displays: the progress widget, kept to read its last state
    monkeypatch.setattr("server_ext.magics.jobs.display", shown.append)
    nb = notebook("import time", "print('cell', n)", "print('done')", parameters="n = 1")
    job = create_job(sched, alice, "table-me", nb, output_formats=["ipynb", "html"])
    failing = create_job(sched, alice, "fails-loudly", notebook("raise ValueError('<b>bad</b>')"))
    # bob shares a job with alice's group: listed as his
    create_job(sched, users["bob"], "bobs", notebook("print(1)"), shared_with_groups=["team"])

    ip.run_line_magic("run_now", "table-me -p n=5 --wait")
    out = capsys.readouterr().out
    run = sched.call("GET", f"api/jobs/{job['id']}/runs", alice[0]).json()["runs"][0]
    assert f"Queued run {run['id']} of job 'table-me'." in out
    assert "Executing Cell" in out and "cell 5" in out  # the log, streamed
    assert f"\nRun {run['id']} succeeded\n" in out
    (progress,) = shown
    bar, label, link = progress.children
    assert (bar.value, bar.max, bar.bar_style) == (5, 5, "success")
    assert label.value == "5/5 cells, succeeded"
    assert f"href='/services/scheduler/api/runs/{run['id']}/output'" in link.value
    base = f"{sched.hub.url}/services/scheduler"
    assert f"Output: {base}/api/runs/{run['id']}/output\n" in out
    assert f"HTML: {base}/api/runs/{run['id']}/output?format=html" in out
    assert (
        run["parameters"] == {"n": 5} and run["cells_done"] == run["cells_total"] == 5
    )  # papermill's cell too

    ip.run_line_magic("run_now", f"{failing['id']} --wait")  # by id
    out = capsys.readouterr().out
    assert "failed: " in out and "ValueError" in out

    table = ip.run_line_magic("jobs", "")
    assert isinstance(table, ipywidgets.HTML)
    html = table.value
    assert "table-me" in html and "bob/bobs" in html
    path = f"/services/scheduler/api/runs/{run['id']}/output"
    assert f"href='{path}'" in html and f"href='{path}?format=html'" in html
    assert "<b>succeeded</b>" in html and "<b>failed</b>" in html
    assert "&lt;b&gt;bad&lt;/b&gt;" in html and "<b>bad</b>" not in html  # reasons are escaped

    # bad input
    assert usage_error(ip.run_line_magic, "run_now", "no-such-job").startswith(
        "No job named 'no-such-job' that you can see"
    )
    assert usage_error(ip.run_line_magic, "run_now", "table-me -p n").startswith(
        "-p 'n' has no '='"
    )
    # the scheduler reads the text, for the job's notebook: its message, as it words it
    snapshot = sched.call("GET", f"api/jobs/{job['id']}/notebook", alice[0]).json()
    expected = service_preview_error(sched, alice[0], snapshot, "n", "five")
    assert "n must be a whole number" in expected
    assert usage_error(ip.run_line_magic, "run_now", "table-me -p n=five") == expected
    # a job shared read-only: the service refuses, in its words
    message = usage_error(ip.run_line_magic, "run_now", "bobs")
    assert "bob" in message


@needs_root
def test_run_now_shows_its_bar_by_default_and_the_cell_returns(
    ip, sched, alice, capsys, monkeypatch
):
    """Without --wait the bar is shown at once and a thread keeps it up to date to the end."""
    shown = []
    monkeypatch.setattr("server_ext.magics.jobs.display", shown.append)
    nb = notebook("import time", "time.sleep(2)", "print('done')")
    job = create_job(sched, alice, "bar-me", nb)
    ip.run_line_magic("run_now", "bar-me")
    run = sched.call("GET", f"api/jobs/{job['id']}/runs", alice[0]).json()["runs"][0]
    assert run["status"] in ("queued", "running"), "the cell returned before the run ended"
    assert capsys.readouterr().out == f"Queued run {run['id']} of job 'bar-me'.\n"
    (progress,) = shown
    bar, label, link = progress.children
    wait_for(lambda: link.value, timeout=120, what="the bar to follow the run to its end")
    assert (bar.value, bar.max, bar.bar_style) == (3, 3, "success")
    assert label.value == "3/3 cells, succeeded"
    assert f"href='/services/scheduler/api/runs/{run['id']}/output'" in link.value
    assert capsys.readouterr().out == ""  # the thread prints nothing into later cells

    create_job(sched, alice, "bar-fails", notebook("raise ValueError('no')"))
    ip.run_line_magic("run_now", "bar-fails")
    bar, label, _ = shown[1].children
    # the reason comes last, with the run's end (the status "failed" is shown before it)
    wait_for(lambda: "failed: " in label.value, timeout=120, what="the failed run's bar")
    assert bar.bar_style == "danger"
    assert "cells, failed: " in label.value and "ValueError" in label.value, label.value


# -------------------------------------------------------------------- the CLI


def shipyard(env: dict, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hub_ext.cli", *args],
        env=env, capture_output=True, text=True, timeout=180, cwd=cwd,
    )  # fmt: skip


@pytest.fixture
def cli_env(sched, users) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "SHIPYARD_"))}
    env.update(
        JUPYTERHUB_API_TOKEN=users["alice"][0],
        JUPYTERHUB_USER="alice",
        SHIPYARD_SCHEDULER_URL=f"{sched.hub.url}/services/scheduler",
    )
    return env


@needs_root
def test_cli_lists_runs_follows_and_saves(sched, users, cli_env, tmp_path):
    alice = users["alice"]
    cells = ("print('hello', n)", "import time; time.sleep(3)", "x = 2")
    job = create_job(sched, alice, "from-cli", notebook(*cells, parameters="n = 1"))

    listed = shipyard(cli_env, "jobs", "list")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == [
        "NAME", "TRIGGERS", "NEXT", "RUN", "LAST", "RUN", "LAST", "RUN", "ID", "JOB", "ID",
    ]  # fmt: skip
    (row,) = [r for r in rows if r.startswith("from-cli ")]
    assert "manual only" in row and row.endswith(job["id"])

    ran = shipyard(cli_env, "jobs", "run", "from-cli", "-p", "n=7", "--wait")
    assert ran.returncode == 0, ran.stderr
    run_id = ran.stdout.split("Queued run ", 1)[1].split()[0]
    # the progress, one line per change (papermill's parameters cell counts too)
    assert re.search(r"^  running: cells [0-4]/5$", ran.stderr, re.M), ran.stderr
    assert ran.stderr.endswith("  succeeded: cells 5/5\n"), ran.stderr
    assert f"Run {run_id} succeeded" in ran.stdout
    assert f"Output: {sched.hub.url}/services/scheduler/api/runs/{run_id}/output" in ran.stdout

    logs = shipyard(cli_env, "jobs", "logs", run_id)
    assert logs.returncode == 0 and "Executing Cell" in logs.stdout
    followed = shipyard(cli_env, "jobs", "logs", run_id, "--follow")
    assert followed.returncode == 0 and followed.stdout == logs.stdout

    saved = shipyard(cli_env, "jobs", "output", run_id, cwd=tmp_path)
    assert saved.returncode == 0, saved.stderr
    (name,) = [p.name for p in tmp_path.iterdir() if p.suffix == ".ipynb"]
    assert name == f"from-cli-{run_id[:8]}.ipynb"
    assert "hello 7" in (tmp_path / name).read_text()
    target = tmp_path / "out.ipynb"
    assert shipyard(cli_env, "jobs", "output", run_id, "-o", str(target)).returncode == 0
    assert json.loads(target.read_text())["cells"]

    # errors: the service's message on one line, status 1 (2 for a wrong command line)
    for args, words in (
        (["jobs", "output", run_id, "--format", "html"], f"run {run_id} has no html output"),
        (["jobs", "run", "nope"], "No job named 'nope' that you can see"),
        (["jobs", "run", "from-cli", "-p", "n"], "-p 'n' has no '='"),
        (["jobs", "logs", "0" * 32], f"No job or run named {'0' * 32!r} that you can see"),
        (["jobs", "list", "--token", "wrong"], service_message(sched, "wrong", "GET", "api/jobs")),
        (["jobs", "list", "--url", "https://alice:tok@hub.example.org/services/scheduler"],
         "never in a URL"),
    ):  # fmt: skip
        result = shipyard(cli_env, *args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert result.stderr.startswith(f"shipyard: {words}") or words in result.stderr, (
            result.stderr
        )
        assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert shipyard(cli_env, "jobs", "run").returncode == 2

    failing = create_job(sched, alice, "cli-fails", notebook("1 / 0"))
    result = shipyard(cli_env, "jobs", "run", failing["id"], "--wait")
    assert (
        result.returncode == 1
        and "failed: " in result.stdout
        and "ZeroDivisionError" in result.stdout
    )


# ---------------------------------------------------- the server extension's routes


@pytest.fixture
def lab(sched, users, tmp_path):
    """A real jupyter-server of alice's, with her server's token and the scheduler's URL."""
    env = {
        "JUPYTERHUB_API_TOKEN": users["alice"][0],
        "SHIPYARD_SCHEDULER_URL": f"{sched.hub.url}/services/scheduler",
    }
    proc, url, token = start_jupyter_server(tmp_path, env)
    session = requests.Session()
    session.headers["Authorization"] = f"token {token}"
    yield f"{url}/shipyard/api/scheduler", session
    proc.terminate()
    proc.wait(30)


@needs_root
def test_the_panel_routes_forward_as_the_user_and_pass_errors_on(sched, users, lab):
    base, session = lab
    alice = users["alice"]
    job = create_job(sched, alice, "via-lab", notebook("print('lab')"))

    r = session.get(f"{base}/jobs", timeout=60)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    assert "via-lab" in [j["name"] for j in r.json()["jobs"]]
    assert session.get(f"{base}/jobs/{job['id']}", timeout=60).json()["owner"] == "alice"
    assert session.get(f"{base}/profiles", timeout=60).json()["profiles"][0]["slug"] == "tiny"

    # errors: the service's status and body, unchanged
    for method, path, body, service_path in (
        ("GET", f"/jobs/{'0' * 32}", None, f"api/jobs/{'0' * 32}"),
        ("POST", "/jobs", {"name": "Bad Name", "profile": "tiny"}, "api/jobs"),
        ("POST", f"/jobs/{job['id']}/runs", {"parameters": {"nope": 1}}, f"api/jobs/{job['id']}/runs"),
        ("POST", "/previews/cron", {"expression": "61 * * * *"}, "api/previews/cron"),
        ("POST", "/previews/parameters", {"values": {}}, "api/previews/parameters"),
    ):  # fmt: skip
        direct = sched.call(method, service_path, alice[0], json=body)
        forwarded = session.request(method, base + path, json=body, timeout=60)
        assert forwarded.status_code == direct.status_code >= 400
        assert forwarded.json() == direct.json()

    # the previews the Schedule dialog asks while the user types
    r = session.post(f"{base}/previews/cron", json={"expression": "@daily"}, timeout=60)
    assert r.status_code == 200 and len(r.json()["times"]) == 3, r.text
    body = {"notebook": notebook("1", parameters="n = 1"), "values": {"n": "x"}}
    r = session.post(f"{base}/previews/parameters", json=body, timeout=60)
    assert r.status_code == 200 and r.json()["values"][0]["error"].startswith("n must be")

    r = session.post(f"{base}/jobs/{job['id']}/runs", json={}, timeout=60)
    assert r.status_code == 201
    run = sched.wait_run(r.json()["id"], alice[0])
    r = session.get(f"{base}/runs/{run['id']}/log", params={"offset": 0}, timeout=60)
    assert r.json()["complete"] is True and r.json()["status"] == "succeeded"
    r = session.get(f"{base}/runs", params={"job_id": job["id"]}, timeout=60)
    assert [x["id"] for x in r.json()["runs"]] == [run["id"]]
    out = session.get(f"{base}/runs/{run['id']}/output", timeout=60)
    assert out.status_code == 200
    assert out.headers["Content-Type"] == "application/x-ipynb+json"
    assert (
        out.headers["Content-Disposition"]
        == f'attachment; filename="via-lab-{run["id"][:8]}.ipynb"'
    )
    assert "sandbox" in out.headers["Content-Security-Policy"]
    assert "lab" in json.dumps(out.json())

    r = session.patch(f"{base}/runs/{run['id']}", json={"status": "cancelled"}, timeout=60)
    assert r.status_code == 409 or r.status_code == 200, r.text  # the service decides
    assert session.get(f"{base}/notifications", timeout=60).status_code == 200

    r = session.put(f"{base}/jobs/{job['id']}", json={}, timeout=60)  # not a route's method
    assert (
        r.status_code == 405
        and r.json()["status"] == 405
        and "GET, PATCH, DELETE" in r.json()["message"]
    )
    r = session.delete(f"{base}/jobs/{job['id']}", timeout=60)
    assert r.status_code == 204 and r.content == b""
    assert "via-lab" not in jobs_of(sched, alice)


@pytest.mark.parametrize("configured", [False, True])
def test_the_panel_routes_without_a_scheduler(tmp_path, monkeypatch, configured):
    monkeypatch.delenv("SHIPYARD_SCHEDULER_URL", raising=False)
    monkeypatch.delenv("JUPYTERHUB_PUBLIC_HUB_URL", raising=False)
    env = {"JUPYTERHUB_API_TOKEN": "t"}
    if configured:
        env["SHIPYARD_SCHEDULER_URL"] = f"http://127.0.0.1:{free_port()}/services/scheduler"
    proc, url, token = start_jupyter_server(tmp_path, env)
    try:
        r = requests.get(
            f"{url}/shipyard/api/scheduler/jobs",
            headers={"Authorization": f"token {token}"},
            timeout=30,
        )
    finally:
        proc.terminate()
        proc.wait(30)
    assert r.status_code == 502
    body = r.json()
    assert body["status"] == 502 and body["errors"] == []
    expected = "Cannot reach the scheduler" if configured else "SHIPYARD_SCHEDULER_URL is not set"
    assert expected in body["message"]


@needs_root
def test_the_panel_routes_answer_json_where_the_hub_answers_a_page(sched, tmp_path):
    env = {"JUPYTERHUB_API_TOKEN": "t", "SHIPYARD_SCHEDULER_URL": f"{sched.hub.url}/services/x"}
    proc, url, token = start_jupyter_server(tmp_path, env)
    try:
        r = requests.get(
            f"{url}/shipyard/api/scheduler/jobs",
            headers={"Authorization": f"token {token}"},
            timeout=30,
        )
    finally:
        proc.terminate()
        proc.wait(30)
    assert r.status_code == 502  # the hub's redirect: not the scheduler's answer
    body = r.json()
    assert body["status"] == 502 and body["errors"] == []
    assert body["message"].startswith(f"{sched.hub.url}/services/x answered with a redirect")
