"""``shipyard jobs`` and ``shipyard models`` against the real scheduler and deployer.

One hub per module runs both services (the scheduler as in ``tests/test_scheduler_service.py``,
the deployer with that module's model-server double, a backend that runs real HTTP
processes), with alice and bob (group team) as users with system accounts. The command runs
in this process (``main([...])``), once as ``python -m hub_ext.cli``, with the environment of
each caller:

- a user's terminal: ``JUPYTERHUB_API_TOKEN`` and ``JUPYTERHUB_USER``;
- root on the hub's machine: nothing but ``SHIPYARD_DATA_DIR`` and ``SHIPYARD_BIND_URL``, so
  the command must use the hub's own credentials in the data dir.

What the commands did is read back through the services' REST APIs; every refusal is one
line on stderr with exit status 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hub_ext.cli.main import main

from .auditrecords import all_records
from .conftest import needs_root
from .hubtools import REPO, free_port, tagged
from .services import (
    TEAM,
    DeployerClient,
    create_job,
    notebook,
    scheduler_hub,
    users_with_accounts,
)

pytestmark = [needs_root]


@pytest.fixture(scope="module")
def sched(hub_factory):
    """A hub with the scheduler and the deployer (its model servers are the double's)."""
    with scheduler_hub(
        hub_factory,
        "cli-services",
        tagged("syadm-"),
        tagged("shipyard-test-adm"),
        ["deployer"],
    ) as client:
        yield client


@pytest.fixture(scope="module")
def users(sched, home_root):
    """alice and bob in group team, carol in none, with accounts made for this module's hub."""
    return users_with_accounts(sched.hub, home_root, TEAM)


@pytest.fixture
def hub(sched):
    return sched.hub


@pytest.fixture
def shell(monkeypatch, hub, capsys):
    """``shell(who, *args)``: the command as ``who`` (a user's name, or "root"), its
    (status, stdout, stderr). A user has their terminal's variables; root on the hub's
    machine has only the data dir and the hub's URL.
    """

    def run(who: str, *args: str, tokens: dict) -> tuple[int, str, str]:
        for name in (
            "JUPYTERHUB_API_TOKEN",
            "JUPYTERHUB_USER",
            "JUPYTERHUB_API_URL",
            "SHIPYARD_SCHEDULER_URL",
            "SHIPYARD_DEPLOYER_URL",
            "SHIPYARD_DATA_DIR",
        ):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("SHIPYARD_BIND_URL", hub.url)
        if who == "root":
            monkeypatch.setenv("SHIPYARD_DATA_DIR", str(hub.data_dir))
        else:
            monkeypatch.setenv("JUPYTERHUB_API_TOKEN", tokens[who])
            monkeypatch.setenv("JUPYTERHUB_USER", who)
        capsys.readouterr()
        status = main(list(args))
        out, err = capsys.readouterr()
        return status, out, err

    return run


def one_line(status: int, out: str, err: str) -> str:
    """The message of a refusal: status 1, nothing on stdout, one line without a traceback."""
    assert status == 1, (out, err)
    assert err.startswith("shipyard: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err[len("shipyard: ") : -1]


def cli_tokens(hub) -> list[dict]:
    """The admin's tokens the CLI made (its note says so) that still exist."""
    r = hub.api("GET", "/users/admin/tokens")
    assert r.status_code == 200, r.text
    return [t for t in r.json()["api_tokens"] if (t.get("note") or "").startswith("shipyard ")]


# --------------------------------------------------------------------------- jobs


@pytest.fixture(scope="module")
def report(sched, users):
    """alice's job ``report`` with one run that succeeded: (job, run)."""
    alice = users["alice"]
    job = create_job(sched, alice, "report", notebook("print('report', n)", parameters="n = 1"))
    r = sched.call("POST", f"api/jobs/{job['id']}/runs", alice[0], json={"parameters": {"n": 3}})
    assert r.status_code == 201, r.text
    run = sched.wait_run(r.json()["id"], alice[0])
    assert run["status"] == "succeeded", run
    return job, run


def test_root_on_the_hubs_machine_sees_every_job_with_its_last_run(
    shell, hub, users, report, tmp_path
):
    job, run = report
    tokens = {name: user[0] for name, user in users.items()}
    status, out, err = shell("root", "jobs", "list", tokens=tokens)
    assert status == 0, err
    header, *rows = out.splitlines()
    assert header.split() == [
        "NAME", "TRIGGERS", "NEXT", "RUN", "LAST", "RUN", "LAST", "RUN", "ID", "JOB", "ID",
    ]  # fmt: skip
    (row,) = [r for r in rows if r.startswith("alice/report ")]  # the admin sees alice's job
    assert " succeeded " in row and row.endswith(f"{run['id']}  {job['id']}")

    # logs and output by the job's name mean its newest run; by the run's id, that run
    status, by_name, err = shell("root", "jobs", "logs", "report", tokens=tokens)
    assert status == 0, err
    assert "Executing Cell" in by_name
    assert err == f"Run {run['id']} of job 'report' (succeeded), its newest.\n"
    assert shell("root", "jobs", "logs", "alice/report", tokens=tokens)[1] == by_name
    status, by_id, err = shell("root", "jobs", "logs", run["id"], tokens=tokens)
    assert (status, by_id, err) == (0, by_name, "")
    target = tmp_path / "report.ipynb"
    status, out, err = shell("root", "jobs", "output", "report", "-o", str(target), tokens=tokens)
    assert status == 0, err
    assert out.startswith(f"Saved run {run['id']}'s ipynb output to {target}")
    assert "report 3" in json.dumps(json.loads(target.read_text()))

    # the admin's tokens lasted as long as each command, and the trail says who made them
    assert cli_tokens(hub) == []
    records = [r for r in all_records(hub.data_dir) if r["actor"] == "shipyard-cli"]
    made = [r for r in records if r["action"] == "token.create"]
    assert len(made) == 5 and {r["owner"] for r in made} == {"admin"}
    assert len([r for r in records if r["action"] == "token.delete"]) == 5


def test_jobs_refusals_say_what_to_do(shell, sched, users, report, tmp_path):
    job, run = report
    tokens = {name: user[0] for name, user in users.items()}
    assert one_line(*shell("root", "jobs", "logs", "nope", tokens=tokens)) == (
        "No job or run named 'nope' that you can see: `shipyard jobs list` shows each job's "
        "name and the id of its last run (LAST RUN ID); give either."
    )
    create_job(sched, users["alice"], "never-ran", notebook("1"))
    assert one_line(*shell("alice", "jobs", "output", "never-ran", tokens=tokens)) == (
        "Job 'never-ran' has not run yet: `shipyard jobs run never-ran` starts a run."
    )
    # alice's own: by name, without her name; bob sees none of it, by name or by id
    status, out, err = shell("alice", "jobs", "logs", "report", tokens=tokens)
    assert status == 0 and "Executing Cell" in out, err
    for ref in ("alice/report", "report", run["id"], job["id"]):
        message = one_line(*shell("bob", "jobs", "logs", ref, tokens=tokens))
        assert message.startswith(f"No job or run named {ref!r} that you can see"), message
    # the hub's credentials act only as an admin
    assert one_line(*shell("root", "jobs", "list", "--as", "alice", tokens=tokens)) == (
        "'alice' is not a hub admin: pass --as with the name of a hub admin (the CLI acts on "
        "the hub's machine only as an admin)."
    )
    assert one_line(*shell("root", "jobs", "list", "--as", "nobody", tokens=tokens)) == (
        "The hub has no user 'nobody' to act as: pass --as with the name of a hub admin."
    )
    # a data dir without the hub's credentials, and no token of a user's
    empty = tmp_path / "elsewhere"
    message = one_line(*shell("root", "jobs", "list", "--data-dir", str(empty), tokens=tokens))
    assert message.startswith("No token for the scheduler. On the hub's machine:")
    assert f"(there is no cli-token in {empty})" in message
    assert "JUPYTERHUB_API_TOKEN" in message and "--token" in message


# ------------------------------------------------------------------------- models


def deployer(hub, token: str) -> DeployerClient:
    return DeployerClient(hub, token)


def test_models_list_status_rollback_and_who_may(shell, hub, users):
    tokens = {name: user[0] for name, user in users.items()}
    alice = deployer(hub, tokens["alice"])
    r = alice("POST", "api/deployments", json={"name": "churn", "model_uri": "models:/fake/one"})
    assert r.status_code == 201, r.text
    alice.wait_state("churn", 1, "ready")
    # nothing served before v1: rollback needs --to
    assert one_line(*shell("alice", "models", "rollback", "churn", tokens=tokens)) == (
        "No earlier version has served 'churn': give the version to go back to with --to N "
        "(`shipyard models status churn` lists them)."
    )
    r = alice("POST", "api/deployments/churn/versions", json={"model_uri": "models:/fake/two"})
    assert r.status_code == 201, r.text
    alice.wait_state("churn", 2, "ready")
    alice.wait_state("churn", 1, "stopped")

    status, out, err = shell("alice", "models", "list", tokens=tokens)
    assert status == 0, err
    header, row = out.splitlines()
    assert header.split() == [
        "NAME", "TRAFFIC", "NEWEST", "STATE", "REPLICAS", "PROFILE", "UPDATED",
    ]  # fmt: skip
    assert row.split()[:7] == ["churn", "v2", "100%", "v2", "ready", "1", "tiny"]

    status, out, err = shell("alice", "models", "status", "churn", tokens=tokens)
    assert status == 0, err
    assert out.startswith("Deployment churn (owner alice): profile tiny, 1 replica(s)")
    assert "Traffic: v2 100%\n" in out
    assert f"Endpoint: {hub.url}/services/deployer/models/alice/churn/invocations\n" in out
    assert "Previous version: v1 (`shipyard models rollback churn` sends" in out
    assert "v2: models:/fake/two, created " in out and "v1: models:/fake/one, created " in out
    versions = [line.split()[:4] for line in out.splitlines() if line.startswith("churn ")]
    assert versions[0] == ["churn", "2", "100%", "ready"]
    assert versions[1][:3] == ["churn", "1", "0%"] and versions[1][3].startswith("stopped")

    # bob: alice's deployment is as missing as one that does not exist, and stays as it was
    missing = one_line(*shell("bob", "models", "status", "nothing", tokens=tokens))
    assert missing == (
        "No deployment 'nothing' that you can see: `shipyard models list` lists them."
    )
    for args in (("status", "alice/churn"), ("rollback", "alice/churn"),
                 ("rollback", "alice/churn", "--to", "1")):  # fmt: skip
        message = one_line(*shell("bob", "models", *args, tokens=tokens))
        assert message == missing.replace("'nothing'", "'alice/churn'"), args
    assert one_line(*shell("bob", "models", "list", "--owner", "alice", tokens=tokens)) == (
        "only hub admins may list other users' deployments"
    )
    assert shell("bob", "models", "list", tokens=tokens)[1] == (
        "You have no deployments: deploy a model with %deploy MODEL --name NAME.\n"
    )
    assert alice("GET", "api/deployments/churn").json()["traffic"] == {"2": 100}

    # root on the hub's machine: everyone's, and rolls alice's back, waiting for v1
    status, out, err = shell("root", "models", "list", tokens=tokens)
    assert status == 0, err
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["alice/churn"]
    status, out, err = shell("root", "models", "rollback", "alice/churn", tokens=tokens)
    assert status == 0, err
    assert out == "Rolled back 'alice/churn': v1 takes 100% of the traffic.\n"
    assert err.startswith(
        "Rolling back 'alice/churn' to v1: it is starting; it takes the traffic once it is "
        "ready.\n  v1 "
    ), err
    assert err.endswith("  v1 ready\n"), err
    assert alice("GET", "api/deployments/churn").json()["traffic"] == {"1": 100}
    assert alice.invoke("alice", "churn").json() == {"predictions": ["one"]}
    assert cli_tokens(hub) == []

    # what the deployer refuses, in its words; a wrong command line is status 2
    assert one_line(*shell("alice", "models", "rollback", "churn", "--to", "9", tokens=tokens)) == (
        "deployment 'churn' has no version 9"
    )
    assert one_line(*shell("alice", "models", "status", "Bad_Name", tokens=tokens)).startswith(
        "'Bad_Name' is not a deployment: give NAME or OWNER/NAME"
    )
    closed = f"http://127.0.0.1:{free_port()}"
    assert one_line(*shell("alice", "models", "list", "--url", closed, tokens=tokens)).startswith(
        f"Cannot reach the deployer at {closed}/services/deployer"
    )
    with pytest.raises(SystemExit) as exit_info:
        shell("alice", "models", "rollback", tokens=tokens)
    assert exit_info.value.code == 2


def test_as_a_module_a_refusal_is_one_line_too(hub, users):
    """``python -m hub_ext.cli`` (the tests' and a checkout's way) catches the commands' errors."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "SHIPYARD_"))}
    env.update(JUPYTERHUB_API_TOKEN=users["bob"][0], SHIPYARD_BIND_URL=hub.url)
    result = subprocess.run(
        [sys.executable, "-m", "hub_ext.cli", "models", "status", "alice/churn"],
        env=env, capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr == (
        "shipyard: No deployment 'alice/churn' that you can see: `shipyard models list` "
        "lists them.\n"
    )
