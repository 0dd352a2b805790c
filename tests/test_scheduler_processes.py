"""Scheduler processes against PostgreSQL: two racing on one database, and one behind a hub.

- Two real service processes (``python -m hub_ext.services.scheduler``, no
  hub: their workers need none) share one PostgreSQL database and one clock
  file; each cron tick the clock passes becomes exactly one run, executed by
  one of them.
- A hub with the tracking service and the scheduler on PostgreSQL: a
  scheduled notebook logs to MLflow as its owner, and the run records the
  MLflow run id.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from sqlalchemy import select
from sqlalchemy.orm import Session

from hub_ext.services.scheduler.db import make_engine, upgrade
from hub_ext.services.scheduler.models import CreateJob
from hub_ext.services.scheduler.orm import Run
from hub_ext.services.scheduler.store import JobStore, SnapshotStore

from .conftest import TEST_PROFILES, needs_root, postgres_database
from .hubtools import REPO, free_port, remove_cgroups, remove_test_accounts, wait_for
from .test_scheduler_service import (
    CLOCK_CONFIG,
    create_job,
    notebook,
    put_file,
    scheduler_hub,
)

pytestmark = [needs_root]

RACE_CONFIG = (
    CLOCK_CONFIG
    + """
c.SchedulerService.poll_interval = 0.05
c.LocalExecutor.warm_pool_size = 0
"""
)


def test_two_processes_on_one_postgres_database_run_each_tick_once(
    tmp_path, home_root, hub_factory
):
    prefix, parents = "syrace-", ["shipyard-test-race0", "shipyard-test-race1"]
    state = home_root / "race-state"
    clock = tmp_path / "clock"
    clock.write_text("0")
    config = tmp_path / "config.py"
    config.write_text(RACE_CONFIG.format(clock=str(clock)))
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(TEST_PROFILES)
    # two scheduler replicas, each an external service of one hub with its own token
    replicas = [
        {
            "name": f"scheduler-{i}",
            "api_token": secrets.token_hex(32),
            "scopes": ["list:users", "read:users:groups", "read:users:name"],
        }
        for i in range(2)
    ]
    hub = hub_factory(
        name="race",
        account_prefix=prefix,
        cgroup_parent="shipyard-test-race",
        extra_env={"SHIPYARD_TEST_EXTRA_SERVICES": json.dumps(replicas)},
    )
    hub.create_user("racer")
    procs: list[subprocess.Popen] = []
    with postgres_database() as url:
        upgrade(url)
        store = JobStore(make_engine(url), SnapshotStore(state / "snapshots"))
        nb = json.dumps(notebook("print('tick')")).encode()
        job = store.create_job(
            "racer",
            CreateJob(
                name="race",
                profile="tiny",
                concurrency_policy="allow",
                triggers=[{"kind": "cron", "expression": "*/5 * * * *"}],
            ),
            nb,
        )
        first_tick = job.triggers[0].next_fire_at

        def logs() -> str:
            return "\n".join(
                (tmp_path / f"scheduler{i}.log").read_text(errors="replace")[-3000:]
                for i in range(len(procs))
            )

        try:
            for i, (parent, replica) in enumerate(zip(parents, replicas, strict=True)):
                env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
                env.update(
                    {
                        "JUPYTERHUB_API_TOKEN": replica["api_token"],
                        "JUPYTERHUB_API_URL": f"http://127.0.0.1:{hub.hub_port}/hub/api",
                        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{free_port()}",
                        "SHIPYARD_PROFILES": str(profiles),
                        "SHIPYARD_RUNS_DIR": str(home_root / "race-runs"),
                    }
                )
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "hub_ext.services.scheduler",
                            f"--SchedulerService.config_file={config}",
                            f"--SchedulerService.db_url={url}",
                            f"--SchedulerService.state_dir={state}",
                            f"--SchedulerService.account_prefix={prefix}",
                            f"--LocalExecutor.system_user_prefix={prefix}",
                            f"--LocalExecutor.cgroup_parent={parent}",
                            f"--LocalExecutor.home_dir_template={home_root}/{{account}}",
                        ],
                        cwd=REPO,
                        env=env,
                        stdout=open(tmp_path / f"scheduler{i}.log", "wb"),  # noqa: SIM115
                        stderr=subprocess.STDOUT,
                    )
                )
            # both claim loops poll every 50 ms; move the clock over three ticks
            now = datetime.now(timezone.utc)
            offset = (first_tick - now).total_seconds()
            for n in range(3):
                clock.write_text(str(offset + n * 300 + 1))

                def made(n=n):
                    with Session(store.engine) as s:
                        runs = s.scalars(select(Run).where(Run.job_id == job.id)).all()
                    done = [r for r in runs if r.status not in ("queued", "running")]
                    dead = [p.args for p in procs if p.poll() is not None]
                    assert not dead, "a scheduler process died:\n" + logs()
                    return runs if len(done) >= n + 1 else None

                try:
                    wait_for(made, 120, 0.2, f"tick {n + 1} to run")
                except TimeoutError:
                    raise AssertionError(f"tick {n + 1} did not run:\n" + logs()) from None
            time.sleep(1)  # both processes poll again past the last tick
            with Session(store.engine) as s:
                runs = s.scalars(select(Run).where(Run.job_id == job.id)).all()
            ticks = sorted(r.tick for r in runs)
            assert ticks == [first_tick + timedelta(minutes=5 * n) for n in range(3)], [
                (r.tick, r.status, r.claimed_by) for r in runs
            ]
            assert all(r.status == "succeeded" for r in runs), [(r.status, r.reason) for r in runs]
            assert all(p.poll() is None for p in procs), "a scheduler process died"
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
            store.engine.dispose()
            remove_test_accounts(prefix)
            for parent in parents:
                remove_cgroups(parent)


@pytest.fixture(scope="module")
def tracked(hub_factory, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tracked-config")
    with (
        postgres_database() as url,
        scheduler_hub(
            hub_factory,
            folder,
            "tracked",
            "sytrk-",
            "shipyard-test-trk",
            SHIPYARD_TRACKING="1",
            SHIPYARD_SCHEDULER_DB_URL=url,
        ) as client,
    ):
        yield client, url


def test_a_scheduled_notebook_logs_to_mlflow_as_its_owner_on_postgres(tracked, home_root):
    from hub_ext.accounts import _create
    from hub_ext.slugs import account_name

    sched, url = tracked
    token = sched.hub.create_user("dora")
    account = account_name("dora", sched.hub.account_prefix)
    entry = _create(account, str(home_root / account), "test user dora")
    dora = (token, Path(entry.pw_dir), entry)
    nb = notebook(
        "import json, os, mlflow\n"
        "assert 'JUPYTERHUB_API_TOKEN' not in os.environ\n"
        "with mlflow.start_run() as run:\n"
        "    mlflow.log_metric('score', score)\n"
        "open(os.environ['SHIPYARD_JOB_RESULT_FILE'], 'w').write("
        "json.dumps({'mlflow_run_id': run.info.run_id}))",
        parameters="score = 0.0",
    )
    put_file(dora, "notebooks/tracked.ipynb", nb)
    job = create_job(sched, dora, "tracked", nb, parameters={"score": 0.75})
    run = sched.call("POST", f"api/jobs/{job['id']}/runs", token, json={}).json()
    run = sched.wait_run(run["id"], token, timeout=180)
    assert run["status"] == "succeeded", run
    assert run["mlflow_run_id"]
    # the run is dora's in MLflow, with the metric the notebook logged
    r = requests.get(
        f"{sched.hub.url}/services/tracking/api/2.0/mlflow/runs/get",
        params={"run_id": run["mlflow_run_id"]},
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    data = r.json()["run"]
    assert data["info"]["user_id"] == "dora"
    assert data["data"]["metrics"][0]["value"] == 0.75
    # and the state is in PostgreSQL
    engine = make_engine(url)
    with Session(engine) as s:
        assert s.get(Run, run["id"]).mlflow_run_id == run["mlflow_run_id"]
    engine.dispose()
