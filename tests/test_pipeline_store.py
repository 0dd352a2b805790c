"""Pipeline runs in the scheduler's database, on SQLite and PostgreSQL, without kernels.

The store part (hub_ext/services/scheduler/pipelines/store.py) moves a pipeline run in
the transaction that ends each step's run, through the same calls the workers make
(``claim_due``, ``start_run``, ``finish_run``, ``recover_orphans``). Time is a fake
clock; nothing sleeps. What the real kernels add is in tests/test_pipelines.py.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub_ext.services.scheduler.errors import Conflict, Invalid, NotFound
from hub_ext.services.scheduler.orm import Job, Run
from hub_ext.services.scheduler.pipelines import load_pipeline

from . import jobstore
from .jobstore import NOTEBOOK, T0

database = jobstore.database
clock = jobstore.clock
store = jobstore.store

FIVE = """\
name: churn
profile: tiny
parameters: {rows: 3}
steps:
  ingest:
    notebook: ingest.ipynb
    outputs: {rows: integer}
    files: {table: data/table.csv}
  fa:
    notebook: f.ipynb
    needs: [ingest]
    inputs: {table: steps.ingest.files.table}
    outputs: {total: number}
  fb:
    notebook: f.ipynb
    needs: [ingest]
    retries: 1
    inputs: {table: steps.ingest.files.table}
    outputs: {total: number}
  train:
    notebook: t.ipynb
    needs: [fa, fb]
    inputs: {a: steps.fa.outputs.total, b: steps.fb.outputs.total, rows: steps.ingest.outputs.rows}
  alert:
    notebook: t.ipynb
    needs: [train]
    run_if: any_failed
"""


def _pipeline(store, owner="alice", text=FIVE):
    store.pipelines.workspaces = store.pipelines.workspaces or "/w"  # the service sets it
    pipeline = load_pipeline(text)
    digest = store.snapshots.put(NOTEBOOK)
    snapshots = dict.fromkeys(pipeline.steps, digest)
    profiles = dict.fromkeys(pipeline.steps, "tiny")
    return store.pipelines.create(
        owner, "churn/pipeline.yaml", pipeline, "0" * 64, snapshots, profiles
    )


def _queued(store) -> dict[str, Run]:
    with Session(store.engine) as session:
        runs = session.scalars(select(Run).where(Run.status == "queued")).all()
        return {r.step: r for r in runs}


def _finish(store, step_run: Run, status="succeeded", **recorded):
    store.claim_due(T0, "w1")
    store.start_run(step_run.id, "w1")
    return store.finish_run(step_run.id, status, "", worker_id="w1", recorded=recorded or None)


def _states(store, run_id):
    run = store.pipelines.get_run(run_id, "alice")
    return run, {s.step: s.status.value for s in run.steps}


def test_a_run_moves_as_its_steps_end_with_values_between_them(store):
    pipeline = _pipeline(store)
    run = store.pipelines.start(pipeline.id, "alice", False, {"rows": 4}, "/w", "by hand")
    assert run.workspace == f"/w/{run.id}"
    assert {s.step: s.status.value for s in run.steps}["ingest"] == "running"
    assert set(_queued(store)) == {"ingest"}
    _finish(
        store,
        _queued(store)["ingest"],
        outputs={"rows": 4},
        files={"table": {"path": "data/table.csv", "sha256": "a" * 64}},
    )
    queued = _queued(store)
    assert set(queued) == {"fa", "fb"}, "both feature steps at once"
    assert queued["fa"].parameters == {"rows": 4, "table": f"/w/{run.id}/data/table.csv"}
    _finish(store, queued["fa"], outputs={"total": 10.0})
    assert set(_queued(store)) == {"fb"}, "train waits for both"
    _finish(store, queued["fb"], outputs={"total": 20.0})
    train = _queued(store)["train"]
    assert train.parameters == {"rows": 4, "a": 10.0, "b": 20.0}
    _finish(store, train)
    described, states = _states(store, run.id)
    assert described.status.value == "succeeded", described
    assert states == {
        "ingest": "succeeded",
        "fa": "succeeded",
        "fb": "succeeded",
        "train": "succeeded",
        "alert": "skipped",
    }
    assert not _queued(store)


def test_retries_then_failure_skips_and_repair_reruns_only_that(store, clock):
    pipeline = _pipeline(store)
    run = store.pipelines.start(pipeline.id, "alice", False, {}, "/w", "by hand")
    _finish(store, _queued(store)["ingest"], outputs={"rows": 3}, files={"table": {"path": "t"}})
    queued = _queued(store)
    _finish(store, queued["fa"], outputs={"total": 1.0})
    _finish(store, queued["fb"], "failed")  # fb has a retry: still running
    assert _states(store, run.id)[1]["fb"] == "running"
    with Session(store.engine) as session:
        retry = session.scalars(select(Run).where(Run.status == "queued")).one()
    clock.now = retry.not_before
    _finish(store, retry, "failed")
    described, states = _states(store, run.id)
    assert described.status.value == "failed" and "fb" in described.reason
    assert states["train"] == "skipped" and states["alert"] == "skipped"
    assert states["fa"] == "succeeded"

    repaired = store.pipelines.repair(run.id, "alice")
    assert repaired.repair_of == run.id and repaired.workspace == run.workspace
    states = {s.step: s.status.value for s in repaired.steps}
    assert states == {
        "ingest": "reused",
        "fa": "reused",
        "fb": "running",
        "train": "pending",
        "alert": "pending",
    }
    fb = _queued(store)["fb"]
    assert fb.parameters == {"rows": 3, "table": f"{run.workspace}/t"}
    _finish(store, fb, outputs={"total": 2.0})
    train = _queued(store)["train"]
    assert train.parameters["a"] == 1.0 and train.parameters["b"] == 2.0  # the reused value
    _finish(store, train)
    assert store.pipelines.get_run(repaired.id, "alice").status.value == "succeeded"
    with pytest.raises(Conflict):
        store.pipelines.repair(repaired.id, "alice")


def test_an_orphaned_step_runs_again_and_nothing_that_succeeded_repeats(store):
    pipeline = _pipeline(store)
    run = store.pipelines.start(pipeline.id, "alice", False, {}, "/w", "by hand")
    ingest = _queued(store)["ingest"]
    hour = timedelta(hours=1)
    store.take_over("sched", "w1", stale_after=hour, now=T0)
    store.claim_due(T0, "w1")
    store.start_run(ingest.id, "w1")
    # the worker dies (kill -9): the next process of its identity recovers its runs
    store.take_over("sched", "w2", stale_after=hour, alive=lambda worker: False, now=T0)
    again = _queued(store)["ingest"]
    assert again.retry_of == ingest.id and again.attempt == 2
    _finish(store, again, outputs={"rows": 3}, files={"table": {"path": "t"}})
    assert set(_queued(store)) == {"fa", "fb"}
    described, states = _states(store, run.id)
    assert states["ingest"] == "succeeded"
    with Session(store.engine) as session:
        count = session.scalar(select(func.count()).select_from(Run).where(Run.step == "ingest"))
    assert count == 2


def test_two_steps_ending_at_once_start_the_next_one_once(store):
    """On PostgreSQL the pipeline run's row lock orders the two; SQLite serialises writers."""
    pipeline = _pipeline(store)
    store.pipelines.start(pipeline.id, "alice", False, {}, "/w", "by hand")
    _finish(store, _queued(store)["ingest"], outputs={"rows": 3}, files={"table": {"path": "t"}})
    queued = _queued(store)
    for step in ("fa", "fb"):
        store.claim_due(T0, "w1")
        store.start_run(queued[step].id, "w1")
    barrier = threading.Barrier(2)

    def end(step):
        barrier.wait()
        store.finish_run(
            queued[step].id, "succeeded", worker_id="w1", recorded={"outputs": {"total": 1.0}}
        )

    threads = [threading.Thread(target=end, args=(s,)) for s in ("fa", "fb")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with Session(store.engine) as session:
        trains = session.scalars(select(Run).where(Run.step == "train")).all()
    assert len(trains) == 1


def test_cancel_and_what_others_see(store):
    pipeline = _pipeline(store)
    run = store.pipelines.start(pipeline.id, "alice", False, {}, "/w", "by hand")
    for call in (
        lambda: store.pipelines.get(pipeline.id, "bob"),
        lambda: store.pipelines.get_run(run.id, "bob"),
        lambda: store.pipelines.start(pipeline.id, "bob", False, {}, "/w", "x"),
        lambda: store.pipelines.cancel(run.id, "bob"),
        lambda: store.pipelines.repair(run.id, "bob"),
        lambda: store.pipelines.delete(pipeline.id, "bob"),
        lambda: store.pipelines.list_runs(pipeline.id, "bob"),
    ):
        with pytest.raises(NotFound):
            call()
    assert store.pipelines.list_pipelines("bob") == []
    assert [p.id for p in store.pipelines.list_pipelines("root", admin=True)] == [pipeline.id]
    with pytest.raises(Invalid, match="nope"):
        store.pipelines.start(pipeline.id, "alice", False, {"nope": 1}, "/w", "x")
    with pytest.raises(Conflict, match="cancel it first"):
        store.pipelines.delete(pipeline.id, "alice")
    cancelled = store.pipelines.cancel(run.id, "alice")
    assert cancelled.status.value == "cancelled"
    states = {s.step: s.status.value for s in cancelled.steps}
    assert states["ingest"] == "cancelled" and states["train"] == "cancelled"
    assert not _queued(store)
    with pytest.raises(Conflict):
        store.pipelines.cancel(run.id, "alice")
    store.pipelines.delete(pipeline.id, "alice")
    with Session(store.engine) as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0


def test_step_jobs_are_hidden_and_changed_only_through_the_pipeline(store):
    from hub_ext.services.scheduler.models import ListJobsQuery

    pipeline = _pipeline(store)
    assert store.list_jobs("alice", (), False, ListJobsQuery()).jobs == []
    job = pipeline.steps[0].job_id
    for call in (
        lambda: store.queue_manual_run(job, "alice"),
        lambda: store.delete_job(job, "alice"),
    ):
        with pytest.raises(Conflict, match="through the pipeline"):
            call()
    again = load_pipeline(FIVE.replace("name: churn", "name: other"))
    with pytest.raises(Invalid, match="keeps its name"):
        store.pipelines.update(
            pipeline.id, "alice", False, "x/pipeline.yaml", again, "1" * 64, {}, {}
        )
    with pytest.raises(Conflict, match="named 'churn'"):
        _pipeline(store)


# ------------------------------------------------------------------ triggers

TRIGGERED = """\
name: nightly
profile: tiny
parameters: {trigger_paths: [], trigger_sha256s: []}
triggers:
  - {kind: cron, expression: "0 * * * *", timezone: Europe/Paris}
  - {kind: webhook}
  - {kind: file, glob: "inbox/*.csv", debounce_seconds: 0.5}
steps:
  only: {notebook: a.ipynb}
"""


def _pipeline_runs(store, pipeline_id):
    return store.pipelines.list_runs(pipeline_id, "alice")


def test_cron_and_webhook_start_pipeline_runs_once_per_event(store):
    from .jobstore import at

    created = _pipeline(store, text=TRIGGERED)
    assert created.webhook_secret and created.webhook_url.startswith("api/webhooks/")
    assert [t["kind"] for t in created.triggers] == ["cron", "webhook", "file"]
    assert created.next_fire_at == at(11)  # the alerts service's schedule rule reads it
    # the step jobs and the trigger job are the pipeline's: none is listed as a job
    from hub_ext.services.scheduler.models import ListJobsQuery

    assert store.list_jobs("alice", (), False, ListJobsQuery()).jobs == []
    # the hourly tick: one pipeline run, however many claims look at it
    store.claim_due(at(11, 0, 1), "w1")
    store.claim_due(at(11, 0, 2), "w2")
    runs = _pipeline_runs(store, created.id)
    assert len(runs) == 1 and "cron" in runs[0].reason, runs
    assert {s.step: s.status.value for s in runs[0].steps} == {"only": "running"}
    assert store.pipelines.get(created.id, "alice").next_fire_at == at(12)
    # the webhook, with its secret; a wrong secret starts nothing and reveals nothing
    trigger_job = created.webhook_url.rsplit("/", 1)[1]
    with pytest.raises(NotFound):
        store.fire_webhook(trigger_job, "wrong")
    fired = store.fire_webhook(trigger_job, created.webhook_secret)
    assert "started pipeline run" in fired.reason
    assert len(_pipeline_runs(store, created.id)) == 2
    # paused: triggers start nothing (a run by hand still does)
    store.pipelines.set_paused(created.id, "alice", False, True)
    with pytest.raises(Conflict, match="paused"):
        store.fire_webhook(trigger_job, created.webhook_secret)
    store.claim_due(at(12, 0, 1), "w1")
    assert len(_pipeline_runs(store, created.id)) == 2
    store.pipelines.start(created.id, "alice", False, {}, "/w", "by hand")
    assert len(_pipeline_runs(store, created.id)) == 3


def test_new_files_start_one_run_per_batch_and_a_restart_fires_nothing_twice(
    store, clock, tmp_path
):
    import os
    import time
    from datetime import datetime, timezone

    from hub_ext.services.scheduler.triggers.file import FileWatcher

    # files have the real time: the trigger is made an hour before it
    clock.now = datetime.now(timezone.utc) - timedelta(hours=1)
    store.pipelines.workspaces = str(tmp_path / "workspaces")
    created = _pipeline(store, text=TRIGGERED)
    home = tmp_path / "home"
    (home / "inbox").mkdir(parents=True)
    watcher = FileWatcher(store, lambda owner: str(home), 0.1)
    assert watcher.scan() == 0
    # two files, one after the other: quiet for less than the debounce, no run yet
    for name in ("a.csv", "b.csv"):
        (home / "inbox" / name).write_text(name)
    assert watcher.scan() == 0, "the batch is still arriving"
    past = time.time() - 2
    for name in ("a.csv", "b.csv"):
        os.utime(home / "inbox" / name, (past, past))
    assert watcher.scan() == 1
    assert watcher.scan() == 0
    # a new watcher (a restarted service) fires nothing for the same files
    assert FileWatcher(store, lambda owner: str(home), 0.1).scan() == 0
    [run] = _pipeline_runs(store, created.id)
    assert run.parameters["trigger_paths"] == [
        str(home / "inbox" / "a.csv"),
        str(home / "inbox" / "b.csv"),
    ]
    assert len(run.parameters["trigger_sha256s"]) == 2
    with Session(store.engine) as session:
        only = session.scalars(select(Run).where(Run.step == "only")).one()
    assert only.parameters["trigger_paths"] == run.parameters["trigger_paths"]
    # a third file later: its own batch, with only it
    clock.now += timedelta(minutes=1)
    (home / "inbox" / "c.csv").write_text("c")
    later = time.time() + 1
    os.utime(home / "inbox" / "c.csv", (later, later))
    watcher.scan()  # too new yet (in the future)
    past = time.time() - 1
    os.utime(home / "inbox" / "c.csv", (past, past))
    assert FileWatcher(store, lambda owner: str(home), 0.1).scan() == 1
    runs = _pipeline_runs(store, created.id)
    assert len(runs) == 2
    assert runs[0].parameters["trigger_paths"] == [str(home / "inbox" / "c.csv")]


def test_after_job_and_after_pipeline_start_runs(store):
    from .jobstore import make_job

    upstream = make_job(store, name="extract")
    first = _pipeline(store)
    follower = load_pipeline(
        f"""\
name: follower
profile: tiny
triggers:
  - {{kind: after_job, upstream_job_id: {upstream.id}}}
  - {{kind: after_pipeline, pipeline: churn}}
steps:
  only: {{notebook: a.ipynb}}
"""
    )
    digest = store.snapshots.put(NOTEBOOK)
    follows = store.pipelines.create(
        "alice", "f/pipeline.yaml", follower, "1" * 64, {"only": digest}, {"only": "tiny"}
    )
    # a run of the upstream job succeeds: the follower runs
    run = store.queue_manual_run(upstream.id, "alice")
    _finish(store, run)
    runs = _pipeline_runs(store, follows.id)
    assert len(runs) == 1 and "after_job" in runs[0].reason, runs
    _finish(store, _queued(store)["only"])
    # a run of churn succeeds end to end: the follower runs again
    churn = store.pipelines.start(first.id, "alice", False, {}, "/w", "by hand")
    _finish(store, _queued(store)["ingest"], outputs={"rows": 3}, files={"table": {"path": "t"}})
    queued = _queued(store)
    _finish(store, queued["fa"], outputs={"total": 1.0})
    _finish(store, queued["fb"], outputs={"total": 1.0})
    _finish(store, _queued(store)["train"])
    assert store.pipelines.get_run(churn.id, "alice").status.value == "succeeded"
    reasons = sorted(r.reason for r in _pipeline_runs(store, follows.id))
    assert len(reasons) == 2 and reasons[0].startswith("after pipeline churn"), reasons


GATED = """\
name: gated
profile: tiny
steps:
  train:
    notebook: t.ipynb
    outputs: {model_uri: string}
    files: {holdout: data/holdout.csv}
  deploy:
    type: deploy
    needs: [train]
    model: steps.train.outputs.model_uri
    name: churn
    gate: {metric: rmse, direction: minimize, data: steps.train.files.holdout}
  report:
    notebook: t.ipynb
    needs: [deploy]
    inputs: {decision: steps.deploy.outputs.decision}
"""

DEPLOYED = {
    "decision": "refused",
    "reason": "refused: candidate rmse 9.6, production 1.1 (smaller is better, min_delta 0)",
    "metric": "rmse",
    "candidate": 9.6,
    "production": 1.1,
    "version": None,
    "canary_state": None,
    "canary_reason": None,
}


def test_a_deploy_step_is_a_job_run_with_its_settings_and_its_decision_is_told(store):
    pipeline = _pipeline(store, text=GATED)
    deploy = next(s for s in pipeline.steps if s.id == "deploy")
    assert deploy.job_id and deploy.outputs["decision"] == "string"
    with Session(store.engine) as session:
        job = session.get(Job, deploy.job_id)
        assert (job.source_path, job.retry_attempts) == ("hub_ext/runtime/deploy_step.ipynb", 0)
        assert job.timeout_seconds == 1800
    run = store.pipelines.start(pipeline.id, "alice", False, {}, "/w", "by hand")
    _finish(
        store,
        _queued(store)["train"],
        outputs={"model_uri": "models:/m-1"},
        files={"holdout": {"path": "data/holdout.csv", "sha256": "a" * 64}},
    )
    step_run = _queued(store)["deploy"]
    assert step_run.parameters == {
        "model_uri": "models:/m-1",
        "name": "churn",
        "gate": {"metric": "rmse", "direction": "minimize", "min_delta": 0.0, "target": "target"},
        "canary": None,
        "data_path": f"/w/{run.id}/data/holdout.csv",
        "profile": "tiny",
    }
    _finish(store, step_run, outputs=DEPLOYED)
    # a refusal is a decision: the step succeeded and the next one reads it
    assert _queued(store)["report"].parameters == {"decision": "refused"}
    described, states = _states(store, run.id)
    assert states["deploy"] == "succeeded"
    assert next(s for s in described.steps if s.step == "deploy").outputs == DEPLOYED
    notes = store.list_notifications("alice").notifications
    assert [n.message for n in notes] == [
        f"deploy step deploy of pipeline gated (run {run.id}): {DEPLOYED['reason']}"
    ]
    assert notes[0].run_id == step_run.id and notes[0].event.value == "succeeded"


def test_a_failed_deploy_step_adds_no_second_notification(store):
    pipeline = _pipeline(store, text=GATED)
    store.pipelines.start(pipeline.id, "alice", False, {}, "/w", "by hand")
    _finish(
        store,
        _queued(store)["train"],
        outputs={"model_uri": "models:/m-1"},
        files={"holdout": {"path": "data/holdout.csv", "sha256": "a" * 64}},
    )
    _finish(store, _queued(store)["deploy"], status="failed")
    assert store.list_notifications("alice").notifications == []
