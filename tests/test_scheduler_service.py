"""The scheduler service behind a real hub: REST API, real papermill runs, triggers, recovery.

One hub with the scheduler per module (``sched``); users get real system
accounts and homes, runs are real papermill processes in cgroups. The hub and
the service's config come from tests/services.py (``scheduler_hub``,
``SCHEDULER_CONFIG``): short heartbeats (so kill -9 recovery takes seconds) and a
clock the tests move forward (so cron ticks come without waiting for them).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import requests

from .conftest import needs_root
from .hubtools import free_port, tagged, wait_for
from .openapi_checks import assert_references_resolve
from .services import (
    TEAM,
    create_job,
    notebook,
    put_file,
    scheduler_hub,
    users_with_accounts,
)

pytestmark = [needs_root]


@pytest.fixture(scope="module")
def sched(hub_factory):
    with scheduler_hub(
        hub_factory, "sched", tagged("sysch-"), tagged("shipyard-test-sch")
    ) as client:
        yield client


@pytest.fixture(scope="module")
def users(sched, home_root):
    """alice (group team), bob (group team) and carol (no group), with accounts and homes."""
    return users_with_accounts(sched.hub, home_root, TEAM)


# ------------------------------------------------------------------ the API itself


def test_openapi_describes_every_route_and_method(sched):
    from hub_ext.services.scheduler.handlers import routes

    spec = requests.get(sched.base + "openapi.json", timeout=10).json()
    assert spec["openapi"].startswith("3.")
    for pattern, handler in routes("/"):
        path = "/" + pattern.lstrip("/")
        for name in ("job_id", "run_id", "notification_id"):
            path = path.replace("([^/]+)", "{" + name + "}", 1)
        methods = {m.lower() for m in ("get", "post", "patch", "put", "delete")} & {
            m for m in vars(handler) if m in ("get", "post", "patch", "put", "delete")
        }
        candidates = [p for p in spec["paths"] if p.count("{") == path.count("{")]
        match = [
            p
            for p in candidates
            if p.split("{")[0] == path.split("{")[0] and p.split("}")[-1] == path.split("}")[-1]
        ]
        assert match, f"{path} is not in the OpenAPI document"
        assert methods <= set(spec["paths"][match[0]]), (path, methods)
    # every reference resolves to a schema in the document, and each schema is used
    assert "#/components/schemas/CreateJobRequest" in assert_references_resolve(spec)


def test_without_a_login_the_api_answers_401_in_json(sched):
    r = sched.call("GET", "api/jobs", None)
    assert r.status_code == 401
    assert "token" in r.json()["message"]
    r = sched.call("GET", "api/nothing-here", None)
    assert r.status_code == 404


def test_a_job_runs_through_papermill_with_its_parameters_as_data(sched, users):
    alice = users["alice"]
    nb = notebook(
        "import os, json\n"
        "open('facts.json', 'w').write(json.dumps({'note': note, 'n': n, 'user': os.environ['USER'],"
        " 'run': os.environ['SHIPYARD_RUN_ID']}))",
        "print('done', n * 2)",
        parameters="note = 'x'\nn: int = 1",
    )
    job = create_job(sched, alice, "first", nb, parameters={"n": 21})
    assert job["owner"] == "alice" and job["notebook_digest"]
    evil = "'); import os; os.system('touch /tmp/pwned'); ('"
    r = sched.call(
        "POST", f"api/jobs/{job['id']}/runs", alice[0], json={"parameters": {"note": evil}}
    )
    assert r.status_code == 201, r.text
    run = sched.wait_run(r.json()["id"], alice[0])
    assert run["status"] == "succeeded", run
    assert run["started_at"] and run["ended_at"] and run["attempt"] == 1
    assert run["env_digest"]
    assert run["cells_total"] and run["cells_done"] == run["cells_total"]
    out = sched.call("GET", f"api/runs/{run['id']}/output", alice[0])
    assert out.status_code == 200
    assert "attachment" in out.headers["Content-Disposition"]
    executed = out.json()
    text = json.dumps(executed)
    assert "done 42" in text
    assert not Path("/tmp/pwned").exists()
    # the string arrived in the kernel exactly as sent, and the run ran as alice's account
    injected = next(
        c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", [])
    )
    assert evil in "".join(injected["source"]) or repr(evil) in "".join(injected["source"])
    log = sched.call("GET", f"api/runs/{run['id']}/log", alice[0]).json()
    assert "Executing Cell" in log["text"] and log["complete"] is True
    assert log["next_offset"] > 0


def test_bad_input_gets_a_clear_4xx_and_changes_nothing(sched, users):
    alice, carol = users["alice"], users["carol"]
    nb = notebook("x = 1", parameters="alpha = 0.5\nname = 'a'")
    put_file(alice, "notebooks/bad.ipynb", nb)
    base = {"name": "bad", "profile": "tiny", "source_path": "notebooks/bad.ipynb"}
    cases = [
        ({"triggers": [{"kind": "cron", "expression": "61 * * * *"}]}, 400, "61"),
        ({"triggers": [{"kind": "cron", "expression": "0 0 * * * *"}]}, 400, "6 fields"),
        ({"triggers": [{"kind": "cron", "expression": ""}]}, 400, "cron"),
        (
            {"triggers": [{"kind": "cron", "expression": "0 6 * * *", "timezone": "Mars/Olympus"}]},
            400,
            "time zone",
        ),
        ({"profile": "nope"}, 400, "Unknown profile"),
        ({"profile": "roomy"}, 403, "research"),
        ({"source_path": "../../etc/passwd"}, 400, ".."),
        ({"source_path": "/etc/passwd"}, 400, "relative"),
        ({"parameters": {"beta": 1}}, 400, "beta"),
        ({"parameters": {"alpha": "high"}}, 400, "alpha"),
        ({"parameters": {"os.system('x')": 1}}, 400, "identifier"),
        ({"timout_seconds": 5}, 400, "timout_seconds"),
        ({"timeout_seconds": 0}, 400, "timeout"),
    ]
    for change, status, words in cases:
        r = sched.call("POST", "api/jobs", alice[0], json={**base, **change})
        assert r.status_code == status, (change, r.text)
        assert words.lower() in r.json()["message"].lower(), (change, r.json()["message"])
    # a symlink out of the home is refused like a missing file
    link = alice[1] / "notebooks" / "out.ipynb"
    link.symlink_to("/etc/passwd")
    r = sched.call(
        "POST", "api/jobs", alice[0], json={**base, "source_path": "notebooks/out.ipynb"}
    )
    assert r.status_code == 404
    # too big: 413
    put_file(alice, "notebooks/big.ipynb", notebook("x = '" + "a" * 300000 + "'"))
    r = sched.call(
        "POST", "api/jobs", alice[0], json={**base, "source_path": "notebooks/big.ipynb"}
    )
    assert r.status_code == 413
    r = sched.call("POST", "api/jobs", alice[0], data=b"{not json")
    assert r.status_code == 400 and "JSON" in r.json()["message"]
    # nothing was created
    jobs = sched.call("GET", "api/jobs", alice[0]).json()["jobs"]
    assert "bad" not in [j["name"] for j in jobs]
    # carol, in no group, cannot use the research profile either, and her error says why
    put_file(carol, "notebooks/c.ipynb", nb)
    r = sched.call(
        "POST",
        "api/jobs",
        carol[0],
        json={**base, "source_path": "notebooks/c.ipynb", "profile": "roomy"},
    )
    assert r.status_code == 403


def test_a_gpu_profile_without_a_gpu_is_listed_unavailable_and_refused_with_the_reason(sched):
    """The Schedule and Deploy dialogs list what api/profiles answers: on a machine without
    GPU the GPU profile says why it cannot run and is never the default; a job asking for it
    is refused (409) when it is made, not failed at its run on an environment that
    ``shipyard up`` skipped; a job whose profile gained a GPU since is refused at its run."""
    token = sched.hub.create_user("rhea", ["research"])
    listed = {p["slug"]: p for p in sched.call("GET", "api/profiles", token).json()["profiles"]}
    assert set(listed) == {"tiny", "roomy", "gpu"}
    assert listed["gpu"]["available"] is False and listed["gpu"]["default"] is False
    assert listed["gpu"]["unavailable_reason"] == "no GPU on this machine"
    assert listed["tiny"]["available"] is True and listed["tiny"]["default"] is True
    assert listed["tiny"]["unavailable_reason"] is None

    body = {"name": "train", "profile": "gpu", "notebook": notebook("print(1)")}
    r = sched.call("POST", "api/jobs", token, json=body)
    assert r.status_code == 409, r.text
    message = r.json()["message"]
    assert "no GPU on this machine" in message and "tiny" in message, message
    assert "gpu" not in message.split("Choose one of:")[1]
    assert "train" not in [j["name"] for j in sched.call("GET", "api/jobs", token).json()["jobs"]]
    job = sched.call("POST", "api/jobs", token, json={**body, "profile": "roomy"}).json()
    r = sched.call("PATCH", f"api/jobs/{job['id']}", token, json={"profile": "gpu"})
    assert r.status_code == 409 and "no GPU on this machine" in r.json()["message"], r.text

    # the admin gives roomy a GPU (the file is re-read): roomy's job is refused at its run
    original = sched.hub.profiles_file.read_text()
    changed = original.replace(
        "    groups: [research]\n  - slug: gpu", "    gpu: 1\n    groups: [research]\n  - slug: gpu"
    )
    assert changed != original
    sched.hub.profiles_file.write_text(changed)
    try:
        listed = sched.call("GET", "api/profiles", token).json()["profiles"]
        assert [p["slug"] for p in listed if not p["available"]] == ["roomy", "gpu"]
        run = sched.call("POST", f"api/jobs/{job['id']}/runs", token, json={}).json()
        run = sched.wait_run(run["id"], token, timeout=30)
        assert run["status"] == "failed", run
        assert "cannot run here: no GPU on this machine" in run["reason"], run["reason"]
    finally:
        sched.hub.profiles_file.write_text(original)
    r = sched.call("DELETE", f"api/jobs/{job['id']}", token)
    assert r.status_code == 204, r.text


def test_the_executors_count_the_gpus_as_the_spawners_do():
    """LocalExecutor counts its ``gpu_devices``, as LocalProfileSpawner does; Kubernetes does
    not know the node (None: nothing is refused, the cluster schedules or says why not)."""
    from hub_ext.services.scheduler.executors.kubernetes import KubernetesExecutor
    from hub_ext.services.scheduler.executors.local import LocalExecutor

    assert LocalExecutor(gpu_devices=["0", "1"]).gpu_count == 2
    assert LocalExecutor(gpu_devices=[]).gpu_count == 0
    assert KubernetesExecutor().gpu_count is None


def test_other_users_jobs_and_runs_look_missing(sched, users):
    alice, carol = users["alice"], users["carol"]
    job = create_job(sched, alice, "private", notebook("print(1)"))
    run = sched.call("POST", f"api/jobs/{job['id']}/runs", alice[0], json={}).json()
    missing_job = sched.call("GET", "api/jobs/" + "0" * 32, carol[0])
    hidden_job = sched.call("GET", f"api/jobs/{job['id']}", carol[0])
    assert hidden_job.status_code == missing_job.status_code == 404
    assert hidden_job.json()["message"].replace(job["id"], "X") == missing_job.json()[
        "message"
    ].replace("0" * 32, "X")
    for method, path, body in (
        ("GET", f"api/runs/{run['id']}", None),
        ("GET", f"api/runs/{run['id']}/log", None),
        ("GET", f"api/runs/{run['id']}/output", None),
        ("PATCH", f"api/runs/{run['id']}", {"status": "cancelled"}),
        ("POST", f"api/jobs/{job['id']}/runs", {}),
        ("PATCH", f"api/jobs/{job['id']}", {"paused": True}),
        ("DELETE", f"api/jobs/{job['id']}", None),
        ("GET", f"api/jobs/{job['id']}/notebook", None),
    ):
        r = sched.call(method, path, carol[0], json=body)
        assert r.status_code == 404, (method, path, r.text)
    assert job["name"] not in [
        j["name"] for j in sched.call("GET", "api/jobs", carol[0]).json()["jobs"]
    ]
    assert sched.call("GET", "api/runs", carol[0]).json()["runs"] == []
    sched.wait_run(run["id"], alice[0])


def test_a_job_shared_with_a_group_is_read_only_for_its_members(sched, users):
    alice, bob = users["alice"], users["bob"]
    job = create_job(sched, alice, "shared", notebook("print(1)"), shared_with_groups=["team"])
    seen = sched.call("GET", f"api/jobs/{job['id']}", bob[0]).json()
    assert seen["read_only"] is True
    assert (
        sched.call("PATCH", f"api/jobs/{job['id']}", bob[0], json={"paused": True}).status_code
        == 403
    )
    assert sched.call("POST", f"api/jobs/{job['id']}/runs", bob[0], json={}).status_code == 403
    assert sched.call("DELETE", f"api/jobs/{job['id']}", bob[0]).status_code == 403


def test_webhook_runs_the_job_only_with_its_secret(sched, users):
    alice = users["alice"]
    job = create_job(sched, alice, "hooked", notebook("print(1)"), triggers=[{"kind": "webhook"}])
    secret = job["webhook_secret"]
    assert secret and secret not in json.dumps(
        sched.call("GET", f"api/jobs/{job['id']}", alice[0]).json()
    )
    url = f"api/webhooks/{job['id']}"
    assert sched.call("POST", url, None).status_code == 404
    assert (
        sched.call("POST", url, None, headers={"X-Shipyard-Webhook-Secret": "wrong"}).status_code
        == 404
    )
    r = sched.call("POST", url, None, headers={"X-Shipyard-Webhook-Secret": secret})
    assert r.status_code == 202, r.text
    run = sched.wait_run(r.json()["run_id"], alice[0])
    assert run["status"] == "succeeded"
    assert run["reason"] == "webhook called"


def test_a_file_arriving_runs_the_job_with_its_path_and_digest(sched, users):
    alice = users["alice"]
    nb = notebook(
        "import hashlib\nassert hashlib.sha256(open(trigger_path,'rb').read()).hexdigest() == trigger_sha256",
        parameters="trigger_path = ''\ntrigger_sha256 = ''",
    )
    job = create_job(
        sched, alice, "on-file", nb, triggers=[{"kind": "file", "glob": "inbox/*.csv"}]
    )
    arrived = put_file(alice, "inbox/data.csv", "a,b\n1,2\n")
    # a file older than its trigger never fires: the file arrives now by the scheduler's
    # clock (which the cron test moves), after the trigger was made by that clock
    now = time.time() + float(sched.clock_file.read_text() or 0)
    os.utime(arrived, (now, now))
    put_file(alice, "inbox/ignored.txt", "nope")

    def runs():
        found = sched.call("GET", f"api/jobs/{job['id']}/runs", alice[0]).json()["runs"]
        return found or None

    found = wait_for(runs, 30, 0.2, "a run of the file trigger")
    run = sched.wait_run(found[0]["id"], alice[0])
    assert run["status"] == "succeeded", run
    assert run["parameters"]["trigger_path"].endswith("inbox/data.csv")
    # lets time pass on purpose: a few more scans (every 0.3 s), in which the same file
    # must not fire again (nothing to wait for: what is checked is that nothing happens)
    time.sleep(1.5)
    assert len(runs()) == 1


def test_cron_fires_once_per_tick_with_the_clock_moved(sched, users):
    alice = users["alice"]
    job = create_job(
        sched,
        alice,
        "hourly",
        notebook("print(1)"),
        triggers=[{"kind": "cron", "expression": "0 * * * *", "timezone": "Europe/Berlin"}],
    )
    upcoming = sched.call("GET", f"api/jobs/{job['id']}/upcoming", alice[0]).json()["times"]
    assert len(upcoming) == 3
    first = datetime.fromisoformat(upcoming[0])
    now = datetime.now(timezone.utc) + timedelta(seconds=float(sched.clock_file.read_text()))
    sched.advance((first - now).total_seconds() + 1)

    def runs():
        return sched.call("GET", f"api/jobs/{job['id']}/runs", alice[0]).json()["runs"] or None

    found = wait_for(runs, 30, 0.2, "the cron tick's run")
    run = sched.wait_run(found[0]["id"], alice[0])
    assert run["status"] == "succeeded"
    assert datetime.fromisoformat(run["tick"]) == first
    # lets time pass on purpose: a few more polls (every 0.3 s), in which the same tick must
    # not fire again (nothing to wait for: what is checked is that nothing happens)
    time.sleep(1)
    assert len(runs()) == 1


def test_kill_9_mid_run_is_recovered_and_retried(sched, users):
    """kill -9 of the hub-managed service mid-run, in a warm kernel: one retry, nothing left.

    The hub restarts the service with the same URL, hence the same identity: the
    restarted process recovers the run as its dead predecessor's (the reason says
    so), not by a stale heartbeat. The job's runs are counted (a duplicate retry
    fails this), and the killed attempt's processes are found by the pids it
    wrote itself: a warm kernel's command line never names the run.
    """
    alice = users["alice"]
    uid = alice[2].pw_uid
    # a run of a job with a trigger leaves a warm kernel for alice's next run
    warmer = create_job(
        sched, alice, "warmer", notebook("print(1)"), triggers=[{"kind": "webhook"}]
    )
    run = sched.call("POST", f"api/jobs/{warmer['id']}/runs", alice[0], json={}).json()
    assert sched.wait_run(run["id"], alice[0])["status"] == "succeeded"
    warm = "hub_ext[.]runtime[.]warm"
    wait_for(
        lambda: subprocess.run(["pgrep", "-u", str(uid), "-f", warm], capture_output=True).stdout,
        60,
        0.2,
        "a warm kernel for alice",
    )
    nb = notebook(
        "import json, os, time\n"
        "mark = os.path.expanduser('~/killed-attempt.json')\n"
        "if not os.path.exists(mark):\n"
        "    cgroup = open('/proc/self/cgroup').read()\n"
        "    json.dump({'pids': [os.getpid(), os.getppid()], 'cgroup': cgroup}, open(mark, 'w'))\n"
        "    time.sleep(120)"
    )
    job = create_job(sched, alice, "crashy", nb, retry_attempts=1, retry_backoff_seconds=0)
    run = sched.call("POST", f"api/jobs/{job['id']}/runs", alice[0], json={}).json()
    mark = alice[1] / "killed-attempt.json"
    wait_for(lambda: mark.exists() and mark.read_text(), 90, 0.1, "the first attempt's cell")
    killed = json.loads(mark.read_text())
    assert "warm-" in killed["cgroup"], killed["cgroup"]  # it ran in the warm kernel
    os.kill(sched.pid(), signal.SIGKILL)
    orphaned = sched.wait_run(run["id"], alice[0], timeout=90)
    assert orphaned["status"] == "orphaned", orphaned
    assert "its scheduler process" in orphaned["reason"] and "died" in orphaned["reason"]

    def retry():
        runs = sched.call("GET", f"api/jobs/{job['id']}/runs", alice[0]).json()["runs"]
        return next((r for r in runs if r["retry_of"] == run["id"]), None)

    second = wait_for(retry, 60, 0.3, "the retry")
    second = sched.wait_run(second["id"], alice[0])
    assert second["status"] == "succeeded" and second["attempt"] == 2
    # lets time pass on purpose: polls after the retry ended must make no third run
    # (nothing to wait for: what is checked is that nothing happens)
    time.sleep(1)
    runs = sched.call("GET", f"api/jobs/{job['id']}/runs", alice[0]).json()["runs"]
    assert sorted((r["attempt"], r["status"]) for r in runs) == [
        (1, "orphaned"),
        (2, "succeeded"),
    ], runs
    # the killed attempt's kernel and the warm process that ran it are gone
    for pid in killed["pids"]:
        try:
            cgroup = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            continue  # gone
        assert "warm-" not in cgroup and "job-" not in cgroup, (pid, cgroup)  # a reused pid
    mark.unlink()


def test_forbid_refuses_a_second_run_while_one_runs(sched, users):
    alice = users["alice"]
    job = create_job(sched, alice, "slow", notebook("import time; time.sleep(5)"))
    first = sched.call("POST", f"api/jobs/{job['id']}/runs", alice[0], json={})
    assert first.status_code == 201
    second = sched.call("POST", f"api/jobs/{job['id']}/runs", alice[0], json={})
    assert second.status_code == 409
    assert "forbid" in second.json()["message"]
    cancelled = sched.call(
        "PATCH", f"api/runs/{first.json()['id']}", alice[0], json={"status": "cancelled"}
    )
    assert cancelled.status_code == 200
    run = sched.wait_run(first.json()["id"], alice[0], timeout=30)
    assert run["status"] == "cancelled"


class _Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        length = int(self.headers["Content-Length"])
        _Receiver.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_failures_notify_the_panel_and_the_webhook_and_retention_deletes_old_outputs(sched, users):
    alice = users["alice"]
    port = free_port()
    server = HTTPServer(("127.0.0.1", port), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        job = create_job(
            sched,
            alice,
            "fails",
            notebook("raise ValueError('bad data')"),
            notify={"on_failure": True, "webhook_url": f"http://127.0.0.1:{port}/hook"},
            keep_runs=1,
            concurrency_policy="allow",
        )
        ids = []
        for _ in range(2):
            run = sched.call("POST", f"api/jobs/{job['id']}/runs", alice[0], json={}).json()
            ids.append(sched.wait_run(run["id"], alice[0])["id"])
        first = sched.call("GET", f"api/runs/{ids[0]}", alice[0]).json()
        assert first["status"] == "failed" and "ValueError" in first["reason"]
        notes = sched.call("GET", "api/notifications?unread=true", alice[0]).json()["notifications"]
        mine = [n for n in notes if n["job_id"] == job["id"]]
        assert len(mine) == 2 and "bad data" in mine[0]["message"]
        read = sched.call(
            "PATCH", f"api/notifications/{mine[0]['id']}", alice[0], json={"read": True}
        )
        assert read.status_code == 200
        assert (
            sched.call(
                "PATCH", f"api/notifications/{mine[1]['id']}", users["bob"][0], json={"read": True}
            ).status_code
            == 404
        )
        wait_for(lambda: len([p for p in _Receiver.received if p["job_id"] == job["id"]]) == 2, 20)
        assert _Receiver.received[0]["status"] == "failed"
        assert "token" not in json.dumps(_Receiver.received).lower()

        # keep_runs=1: the older run's outputs are gone, its record stays
        def expired():
            old = sched.call("GET", f"api/runs/{ids[0]}", alice[0]).json()
            return old if old["outputs_deleted_at"] else None

        wait_for(expired, 20, 0.2, "retention")
        r = sched.call("GET", f"api/runs/{ids[0]}/output", alice[0])
        assert r.status_code == 404 and "retention" in r.json()["message"]
        assert sched.call("GET", f"api/runs/{ids[1]}/output", alice[0]).status_code == 200
    finally:
        server.shutdown()


def test_update_to_the_notebook_as_it_is_now_shows_what_changed(sched, users):
    alice = users["alice"]
    job = create_job(sched, alice, "evolving", notebook("print('v1')"))
    put_file(alice, "notebooks/evolving.ipynb", notebook("print('v2')"))
    before = sched.call("GET", f"api/jobs/{job['id']}/notebook", alice[0]).json()
    assert "v1" in json.dumps(before)
    r = sched.call("PUT", f"api/jobs/{job['id']}/notebook", alice[0], json={})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["notebook_changed"] is True
    assert "-print('v1')" in body["diff"] and "+print('v2')" in body["diff"]
    assert body["job"]["notebook_digest"] != job["notebook_digest"]


def test_group_quota_holds_a_second_run_with_the_reason(sched, users):
    alice = users["alice"]
    sched.hub.api("POST", "/groups/limited")
    sched.hub.api("POST", "/groups/limited/users", json={"users": ["alice"]})
    # lets time pass on purpose: the service caches a user's groups for 0.5 s here, and
    # its API shows no state that says when alice's new group is seen
    time.sleep(1)
    a = create_job(sched, alice, "quota-a", notebook("import time; time.sleep(4)"))
    b = create_job(sched, alice, "quota-b", notebook("print(1)"))
    run_a = sched.call("POST", f"api/jobs/{a['id']}/runs", alice[0], json={}).json()
    sched.wait_run(run_a["id"], alice[0], until=lambda r: r["status"] == "running")
    run_b = sched.call("POST", f"api/jobs/{b['id']}/runs", alice[0], json={}).json()
    waiting = sched.wait_run(
        run_b["id"], alice[0], until=lambda r: "waiting" in r["reason"], timeout=20
    )
    assert "limited" in waiting["reason"] and waiting["status"] == "queued"
    # what the alerts service's quota rule reads (tests/test_alerts.py, as a monitor) is
    # for admins only
    refused = sched.call("GET", "api/quotas", alice[0])
    assert refused.status_code == 403 and "admins" in refused.json()["message"]
    assert sched.wait_run(run_b["id"], alice[0])["status"] == "succeeded"
    sched.hub.api("DELETE", "/groups/limited/users", json={"users": ["alice"]})
