"""Pipelines behind a real hub: a DAG of notebook steps run by the scheduler's workers.

One hub with the scheduler for the module; alice and bob have real accounts and homes,
and every step is a real papermill run as the owner's account. The notebooks record
values with ``hub_ext.runtime.outputs.output`` and write files into the run's workspace;
later steps get them as papermill parameters. Each test waits on states (a run's status,
a step's), never on sleeps.

- the five-step pipeline (ingest -> two feature steps in parallel -> train -> report)
  end to end, with values and a file passed between steps, fan-in, and the feature
  steps overlapping in time;
- a failed step fails what needs it, leaves the other branch running, runs an
  ``any_failed`` step, and "repair" reruns only the failed step and what follows it
  (the others reused, their runs not repeated);
- kill -9 of the scheduler mid-pipeline: the step that was running is run again, the
  pipeline ends well, and no step that had succeeded runs twice;
- bad files are a 400 naming file:line (a cycle, an unknown step, a missing notebook, an
  output nobody declares, an undeclared run parameter), and nothing is created;
- another user sees none of it (404), and a step's job is changed or run only through
  its pipeline.
"""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time

import pytest
import requests

from .conftest import needs_root
from .hubtools import tagged, wait_for
from .services import notebook, put_file, scheduler_hub, users_with_accounts

pytestmark = [needs_root]

RECORD = "from hub_ext.runtime.outputs import output, workspace\n"

#: ingest -> features-a, features-b (in parallel) -> train (fan-in) -> report
FIVE_STEPS = textwrap.dedent(
    """\
    name: churn
    description: Five steps, two in parallel.
    profile: tiny
    parameters:
      rows: 4
    steps:
      ingest:
        notebook: ingest.ipynb
        outputs: {rows: integer}
        files: {table: data/table.csv}
      features-a:
        notebook: features.ipynb
        needs: [ingest]
        parameters: {column: 0}
        inputs: {table: steps.ingest.files.table}
        outputs: {total: number}
      features-b:
        notebook: features.ipynb
        needs: [ingest]
        parameters: {column: 1}
        inputs: {table: steps.ingest.files.table}
        outputs: {total: number}
      train:
        notebook: train.ipynb
        needs: [features-a, features-b]
        inputs:
          a: steps.features-a.outputs.total
          b: steps.features-b.outputs.total
          rows: steps.ingest.outputs.rows
        outputs: {score: number}
      report:
        notebook: report.ipynb
        needs: [train]
        inputs: {score: steps.train.outputs.score}
    """
)

INGEST = notebook(
    RECORD
    + "import os, time\n"
    + "path = workspace() / 'data' / 'table.csv'\n"
    + "path.parent.mkdir(exist_ok=True)\n"
    + "path.write_text('\\n'.join(f'{i},{2 * i}' for i in range(rows)))\n"
    + "output('rows', rows)",
    parameters="rows = 1",
)
FEATURES = notebook(
    RECORD
    + "import time\n"
    + "started = time.time()\n"
    + "values = [float(line.split(',')[column]) for line in open(table)]\n"
    + "time.sleep(3)\n"  # long enough to overlap, a kernel start included
    + "output('total', sum(values))\n"
    + "open(f'/tmp/{__import__(\"os\").getuid()}-features-{column}.json', 'w').write("
    + "__import__('json').dumps([started, time.time()]))",
    parameters="table = ''\ncolumn = 0",
)
TRAIN = notebook(
    RECORD + "output('score', (a + b) / rows)",
    parameters="a = 0.0\nb = 0.0\nrows = 1",
)
REPORT = notebook("print('score', score)", parameters="score = 0.0")


@pytest.fixture(scope="module")
def sched(hub_factory):
    with scheduler_hub(
        hub_factory, "pipelines", tagged("sypl-"), tagged("shipyard-test-pl")
    ) as client:
        yield client


@pytest.fixture(scope="module")
def users(sched, home_root):
    return users_with_accounts(sched.hub, home_root, {"alice": [], "bob": []})


def _files(user, folder: str, pipeline: str, notebooks: dict) -> None:
    put_file(user, f"{folder}/pipeline.yaml", pipeline)
    for name, nb in notebooks.items():
        put_file(user, f"{folder}/{name}", nb)


def _create(sched, user, folder: str) -> dict:
    r = sched.call("POST", "api/pipelines", user[0], json={"path": f"{folder}/pipeline.yaml"})
    assert r.status_code == 201, r.text
    return r.json()


def _run(sched, user, pipeline_id: str, **parameters) -> dict:
    r = sched.call(
        "POST", f"api/pipelines/{pipeline_id}/runs", user[0], json={"parameters": parameters}
    )
    assert r.status_code == 201, r.text
    return r.json()


def _wait(sched, user, run_id: str, timeout: float = 240) -> dict:
    def ended():
        r = requests.get(
            sched.base + f"api/pipeline-runs/{run_id}",
            headers={"Authorization": f"token {user[0]}"},
            timeout=30,
        )
        if r.status_code in (502, 503):  # the service is restarting
            return None
        assert r.status_code == 200, r.text
        run = r.json()
        return run if run["status"] != "running" else None

    return wait_for(ended, timeout, 0.3, f"pipeline run {run_id}")


def _steps(run: dict) -> dict:
    return {s["step"]: s for s in run["steps"]}


def test_five_steps_with_values_and_a_file_between_them_and_a_parallel_fan_in(sched, users):
    alice = users["alice"]
    _files(
        alice,
        "churn",
        FIVE_STEPS,
        {
            "ingest.ipynb": INGEST,
            "features.ipynb": FEATURES,
            "train.ipynb": TRAIN,
            "report.ipynb": REPORT,
        },
    )
    pipeline = _create(sched, alice, "churn")
    assert [s["id"] for s in pipeline["steps"]] == [
        "ingest",
        "features-a",
        "features-b",
        "train",
        "report",
    ]
    # the steps' jobs are the pipeline's: not in the job list, not run or changed alone
    assert sched.call("GET", "api/jobs", alice[0]).json()["jobs"] == []
    step_job = pipeline["steps"][0]["job_id"]
    r = sched.call("POST", f"api/jobs/{step_job}/runs", alice[0], json={})
    assert r.status_code == 409 and "through the pipeline" in r.json()["message"], r.text

    run = _wait(sched, alice, _run(sched, alice, pipeline["id"], rows=5)["id"])
    steps = _steps(run)
    assert run["status"] == "succeeded", run
    assert {s: steps[s]["status"] for s in steps} == dict.fromkeys(steps, "succeeded")
    # values: rows 0..4, column 0 sums to 10, column 1 to 20; score (10 + 20) / 5
    assert steps["ingest"]["outputs"] == {"rows": 5}
    assert steps["features-a"]["outputs"] == {"total": 10.0}
    assert steps["features-b"]["outputs"] == {"total": 20.0}
    assert steps["train"]["outputs"] == {"score": 6.0}
    table = steps["ingest"]["files"]["table"]
    assert table["path"] == "data/table.csv" and len(table["sha256"]) == 64
    # the file is in the run's own workspace, the owner's
    path = os.path.join(run["workspace"], "data", "table.csv")
    assert os.stat(path).st_uid == alice[2].pw_uid
    assert oct(os.stat(run["workspace"]).st_mode & 0o777) == "0o700"
    # the two feature steps ran at the same time (fan-out): each started before the other
    # ended. Their runs' times, not their cells': one step's kernel may be the one started
    # beforehand and the other's cold, seconds apart on a loaded machine
    a, b = steps["features-a"], steps["features-b"]
    assert a["started_at"] < b["ended_at"] and b["started_at"] < a["ended_at"], (a, b)
    # and their cells ran (each wrote when its cell started and ended)
    uid = alice[2].pw_uid
    for column in (0, 1):
        started, ended = json.loads(open(f"/tmp/{uid}-features-{column}.json").read())
        assert ended - started >= 3, (column, started, ended)
    # train after both (fan-in)
    assert steps["train"]["started_at"] >= max(
        steps["features-a"]["ended_at"], steps["features-b"]["ended_at"]
    )
    # once a step's kernel is up, the next step's is started: the chain's last steps do not
    # start cold (their run's log says they got a kernel started beforehand)
    for step in ("train", "report"):
        log = sched.call("GET", f"api/runs/{steps[step]['run_id']}/log", alice[0]).json()
        assert "started beforehand" in log["text"], (step, log["text"][:500])
    # each step's run is a run of the step's job, with the parameters it was given
    train_run = sched.call("GET", f"api/runs/{steps['train']['run_id']}", alice[0]).json()
    assert train_run["parameters"] == {"a": 10.0, "b": 20.0, "rows": 5}
    assert train_run["pipeline_run_id"] == run["id"] and train_run["step"] == "train"
    listed = sched.call("GET", f"api/pipelines/{pipeline['id']}/runs", alice[0]).json()
    assert [r["id"] for r in listed["runs"]] == [run["id"]]

    # bob sees none of it, and cannot run, repair or cancel it
    bob = users["bob"]
    for method, path in (
        ("GET", f"api/pipelines/{pipeline['id']}"),
        ("GET", f"api/pipelines/{pipeline['id']}/runs"),
        ("POST", f"api/pipelines/{pipeline['id']}/runs"),
        ("DELETE", f"api/pipelines/{pipeline['id']}"),
        ("GET", f"api/pipeline-runs/{run['id']}"),
        ("POST", f"api/pipeline-runs/{run['id']}/repair"),
        ("PATCH", f"api/pipeline-runs/{run['id']}"),
    ):
        body = {"status": "cancelled"} if method == "PATCH" else {}
        r = sched.call(method, path, bob[0], json=body)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
    assert sched.call("GET", "api/pipelines", bob[0]).json()["pipelines"] == []
    # a run that succeeded has nothing to repair
    r = sched.call("POST", f"api/pipeline-runs/{run['id']}/repair", alice[0])
    assert r.status_code == 409, r.text


BRANCHES = textwrap.dedent(
    """\
    name: branches
    profile: tiny
    steps:
      start:
        notebook: ok.ipynb
        outputs: {value: integer}
      fragile:
        notebook: fragile.ipynb
        needs: [start]
        inputs: {value: steps.start.outputs.value}
      sturdy:
        notebook: plain.ipynb
        needs: [start]
      after-fragile:
        notebook: plain.ipynb
        needs: [fragile]
      alert:
        notebook: plain.ipynb
        needs: [fragile]
        run_if: any_failed
    """
)
OK = notebook(RECORD + "output('value', 7)")
PLAIN = notebook("print('ok')")


def test_a_failed_step_fails_what_needs_it_and_repair_reruns_only_that(sched, users):
    alice = users["alice"]
    fragile = notebook("raise ValueError(f'broken on {value}')", parameters="value = 0")
    _files(
        alice,
        "branches",
        BRANCHES,
        {"ok.ipynb": OK, "plain.ipynb": PLAIN, "fragile.ipynb": fragile},
    )
    pipeline = _create(sched, alice, "branches")
    run = _wait(sched, alice, _run(sched, alice, pipeline["id"])["id"])
    steps = _steps(run)
    assert run["status"] == "failed", run
    assert {s: steps[s]["status"] for s in steps} == {
        "start": "succeeded",
        "fragile": "failed",
        "sturdy": "succeeded",
        "after-fragile": "skipped",
        "alert": "succeeded",
    }
    assert "broken on 7" in steps["fragile"]["reason"], steps["fragile"]
    assert "fragile" in steps["after-fragile"]["reason"]

    # fixed in the home; the pipeline reads its notebooks again; repair the run
    put_file(alice, "branches/fragile.ipynb", notebook("print(value)", parameters="value = 0"))
    r = sched.call("PUT", f"api/pipelines/{pipeline['id']}", alice[0], json={})
    assert r.status_code == 200, r.text
    r = sched.call("POST", f"api/pipeline-runs/{run['id']}/repair", alice[0])
    assert r.status_code == 201, r.text
    repaired = _wait(sched, alice, r.json()["id"])
    again = _steps(repaired)
    assert repaired["status"] == "succeeded" and repaired["repair_of"] == run["id"], repaired
    assert {s: again[s]["status"] for s in again} == {
        "start": "reused",
        "fragile": "succeeded",
        "sturdy": "reused",
        "after-fragile": "succeeded",
        "alert": "skipped",
    }
    # the reused steps were not run again: the same runs, one run of their jobs each
    for step in ("start", "sturdy"):
        assert again[step]["run_id"] == steps[step]["run_id"]
    job = next(s["job_id"] for s in pipeline["steps"] if s["id"] == "start")
    assert len(sched.call("GET", f"api/jobs/{job}/runs", alice[0]).json()["runs"]) == 1
    assert repaired["workspace"] == run["workspace"]


SLOW = textwrap.dedent(
    """\
    name: crash
    profile: tiny
    steps:
      first:
        notebook: ok.ipynb
        outputs: {value: integer}
      slow:
        notebook: slow.ipynb
        needs: [first]
        outputs: {value: integer}
      last:
        notebook: plain.ipynb
        needs: [slow]
    """
)


def test_kill_9_of_the_scheduler_mid_pipeline_loses_no_step_and_repeats_none(sched, users):
    alice = users["alice"]
    slow = notebook(
        RECORD
        + "import os, time\n"
        + "mark = os.path.expanduser('~/pipeline-killed.txt')\n"
        + "if not os.path.exists(mark):\n"
        + "    open(mark, 'w').write('first attempt')\n"
        + "    time.sleep(120)\n"
        + "output('value', 3)"
    )
    _files(alice, "crash", SLOW, {"ok.ipynb": OK, "plain.ipynb": PLAIN, "slow.ipynb": slow})
    pipeline = _create(sched, alice, "crash")
    started = _run(sched, alice, pipeline["id"])
    mark = alice[1] / "pipeline-killed.txt"
    wait_for(mark.exists, 120, 0.1, "the slow step's first attempt")
    os.kill(sched.pid(), signal.SIGKILL)
    run = _wait(sched, alice, started["id"])
    steps = _steps(run)
    assert run["status"] == "succeeded", run
    assert steps["slow"]["outputs"] == {"value": 3} and steps["slow"]["attempt"] == 2
    jobs = {s["id"]: s["job_id"] for s in pipeline["steps"]}
    runs = {
        step: sched.call("GET", f"api/jobs/{job}/runs", alice[0]).json()["runs"]
        for step, job in jobs.items()
    }
    assert len(runs["first"]) == 1 and len(runs["last"]) == 1, runs
    assert sorted(r["status"] for r in runs["slow"]) == ["orphaned", "succeeded"]


def test_bad_files_are_400_at_their_line_and_create_nothing(sched, users):
    alice = users["alice"]
    put_file(alice, "bad/ok.ipynb", OK)
    cases = {
        "cycle": (
            "name: bad\nprofile: tiny\nsteps:\n"
            "  a: {notebook: ok.ipynb, needs: [b]}\n"
            "  b: {notebook: ok.ipynb, needs: [a]}\n",
            ["pipeline.yaml:", "a -> b -> a"],
        ),
        "unknown": (
            "name: bad\nprofile: tiny\nsteps:\n  a: {notebook: ok.ipynb, needs: [nope]}\n",
            ["pipeline.yaml:4:", "nope"],
        ),
        "missing": (
            "name: bad\nprofile: tiny\nsteps:\n  a: {notebook: gone.ipynb}\n",
            ["pipeline.yaml:4:", "gone.ipynb"],
        ),
        "undeclared": (
            "name: bad\nprofile: tiny\nsteps:\n"
            "  a: {notebook: ok.ipynb}\n"
            "  b: {notebook: ok.ipynb, needs: [a], inputs: {x: steps.a.outputs.value}}\n",
            ["pipeline.yaml:5:", "value"],
        ),
    }
    for case, (text, words) in cases.items():
        put_file(alice, f"bad/{case}/pipeline.yaml", text)
        put_file(alice, f"bad/{case}/ok.ipynb", OK)
        r = sched.call(
            "POST", "api/pipelines", alice[0], json={"path": f"bad/{case}/pipeline.yaml"}
        )
        assert r.status_code == 400, (case, r.text)
        for word in words:
            assert word in r.json()["message"], (case, word, r.json()["message"])
    r = sched.call("POST", "api/pipelines", alice[0], json={"path": "bad/none/pipeline.yaml"})
    assert r.status_code == 404, r.text
    r = sched.call("POST", "api/pipelines", alice[0], json={"path": "../etc/pipeline.yaml"})
    assert r.status_code == 400, r.text
    names = [p["name"] for p in sched.call("GET", "api/pipelines", alice[0]).json()["pipelines"]]
    assert "bad" not in names
    # a run parameter the pipeline does not declare
    _files(
        alice,
        "params",
        "name: params\nprofile: tiny\nparameters: {rows: 1}\nsteps:\n  a: {notebook: plain.ipynb}\n",
        {"plain.ipynb": PLAIN},
    )
    pipeline = _create(sched, alice, "params")
    r = sched.call(
        "POST", f"api/pipelines/{pipeline['id']}/runs", alice[0], json={"parameters": {"nope": 1}}
    )
    assert r.status_code == 400 and "nope" in r.json()["message"], r.text
    assert sched.call("GET", f"api/pipelines/{pipeline['id']}/runs", alice[0]).json() == {
        "runs": []
    }


WATCHED = textwrap.dedent(
    """\
    name: retrain
    profile: tiny
    parameters: {trigger_paths: [], trigger_sha256s: []}
    triggers:
      - {kind: file, glob: "retrain/inbox/*.csv", debounce_seconds: 0.5}
    steps:
      count:
        notebook: count.ipynb
        outputs: {files: integer, rows: integer}
    """
)
COUNT = notebook(
    RECORD
    + "output('files', len(trigger_paths))\n"
    + "output('rows', sum(len(open(p).read().splitlines()) for p in trigger_paths))",
    parameters="trigger_paths = []\ntrigger_sha256s = []",
)


def test_new_files_start_exactly_one_run_with_their_paths_and_digests(sched, users):
    alice = users["alice"]
    _files(alice, "retrain", WATCHED, {"count.ipynb": COUNT})
    pipeline = _create(sched, alice, "retrain")
    assert pipeline["triggers"][0]["debounce_seconds"] == 0.5
    for name in ("a.csv", "b.csv"):
        put_file(alice, f"retrain/inbox/{name}", "1\n2\n3\n")

    def one_run():
        runs = sched.call("GET", f"api/pipelines/{pipeline['id']}/runs", alice[0]).json()["runs"]
        return runs if runs and runs[0]["status"] != "running" else None

    runs = wait_for(one_run, 120, 0.2, "a run started by the new files")
    assert len(runs) == 1, runs
    run = runs[0]
    assert run["status"] == "succeeded", run
    assert len(run["parameters"]["trigger_paths"]) == 2
    assert len(run["parameters"]["trigger_sha256s"]) == 2
    assert _steps(run)["count"]["outputs"] == {"files": 2, "rows": 6}
    # lets scans pass on purpose (the watcher looks every 0.3 s): the same files start
    # nothing again; what is checked is that nothing happens
    time.sleep(1)
    again = sched.call("GET", f"api/pipelines/{pipeline['id']}/runs", alice[0]).json()["runs"]
    assert len(again) == 1, again
