"""The scheduler's storage and scheduling logic, on SQLite and PostgreSQL.

Every store test runs against both databases (module-scoped, emptied before
each test), because the guarantees differ in mechanism: ``BEGIN IMMEDIATE`` on
SQLite, ``FOR UPDATE SKIP LOCKED`` on PostgreSQL. Time is a fake clock, so
ticks, backoffs and heartbeats are exact and nothing sleeps. Counts are read
from the database itself, not from what the store returned.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
from collections import Counter
from datetime import datetime, timedelta

import jupyterhub.orm  # noqa: F401 - its listener on every session is active in hub services
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pydantic import ValidationError
from sqlalchemy import Column, Integer, event, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hub_ext.services.scheduler.db import alembic_config, make_engine, upgrade
from hub_ext.services.scheduler.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    SchedulerError,
)
from hub_ext.services.scheduler.models import (
    CreateJob,
    CreateRun,
    CronTrigger,
    ListJobsQuery,
    ListRunsQuery,
    RunStatus,
    UpdateJob,
)
from hub_ext.services.scheduler.orm import Base, Job, Run, Trigger
from hub_ext.services.scheduler.store import JobStore, SnapshotStore

from . import jobstore
from .hubtools import REPO
from .jobstore import (
    HOURLY,
    NOTEBOOK,
    T0,
    UTC,
    at,
    db_runs,
    db_trigger,
    fresh_database,
    make_job,
    notebook,
)

# The shared fixtures, by assignment rather than import so that test arguments
# of the same name do not read as redefinitions.
database = jobstore.database
clock = jobstore.clock
store = jobstore.store


# ----------------------------------------------------------------------------- schema


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_migrations_match_metadata(kind, tmp_path):
    """The Alembic revisions build exactly the ORM's schema; upgrading twice is a no-op."""
    with fresh_database(kind, tmp_path) as url:
        upgrade(url)
        upgrade(url)
        engine = make_engine(url)
        try:
            with engine.connect() as connection:
                context = MigrationContext.configure(connection, opts={"compare_type": True})
                assert context.get_current_revision() == "0006"
                assert compare_metadata(context, Base.metadata) == []
                # ...and the comparison is not vacuous: a column the revisions lack shows.
                Job.__table__.append_column(Column("extra", Integer))
                try:
                    diff = compare_metadata(context, Base.metadata)
                finally:
                    Job.__table__._columns.remove(Job.__table__.c.extra)
                assert [d[0] for d in diff] == ["add_column"]
        finally:
            engine.dispose()
        # Revisions are reversible: down to nothing, and up again.
        command.downgrade(alembic_config(url), "base")
        engine = make_engine(url)
        with engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) == {"alembic_version"}
        engine.dispose()
        upgrade(url)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_concurrent_upgrades_migrate_once(kind, tmp_path):
    """Replicas starting together: every upgrade succeeds, on one schema.

    Processes, not threads: Alembic's ``context`` is process-global. Four, not
    two: a lock released between revisions (Alembic commits after each one on
    SQLite unless the upgrade runs in a transaction of its own) showed in about
    one run in twenty with two.
    """
    with fresh_database(kind, tmp_path) as url:
        script = (
            "import sys; from hub_ext.services.scheduler.db import upgrade; upgrade(sys.argv[1])"
        )
        replicas = [
            subprocess.Popen([sys.executable, "-c", script, url], cwd=REPO, stderr=subprocess.PIPE)
            for _ in range(4)
        ]
        for replica in replicas:
            _, err = replica.communicate(timeout=60)
            assert replica.returncode == 0, err.decode()
        engine = make_engine(url)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).all() == [
                ("0006",)
            ]
        engine.dispose()


def test_sqlite_engine_uses_wal_busy_timeout_and_foreign_keys(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/x.sqlite")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_unique_constraint_rejects_a_second_first_attempt(store):
    """The database itself refuses two runs of one (trigger, tick, attempt)."""
    job = make_job(store, triggers=[HOURLY])
    trigger_id = job.triggers[0].id

    def run(run_id: str, attempt: int = 1) -> Run:
        return Run(
            id=run_id,
            job_id=job.id,
            job_version=1,
            trigger_id=trigger_id,
            tick=at(11),
            status="queued",
            attempt=attempt,
            reason="",
            parameters={},
            notebook_digest=job.notebook_digest,
            profile="tiny",
            timeout_seconds=60,
            queued_at=T0,
            not_before=T0,
        )

    with Session(store.engine) as session, session.begin():
        session.add_all([run("a" * 32), run("b" * 32, attempt=2)])
    with pytest.raises(IntegrityError), Session(store.engine) as session, session.begin():
        session.add(run("c" * 32))
    assert len(db_runs(store)) == 2


# ----------------------------------------------------------------------------- jobs


def test_create_and_get_job(store):
    job = make_job(
        store,
        parameters={"alpha": 0.5, "tags": ["a"], "cfg": {"k": None}},
        source_path="work/report.ipynb",
        output_formats=["html"],
        triggers=[{"kind": "cron", "expression": "30 6 * * 1-5", "timezone": "Europe/Paris"}],
    )
    assert len(job.id) == 32 and job.version == 1 and job.owner == "alice"
    assert job.notebook_digest == hashlib.sha256(NOTEBOOK).hexdigest()
    assert job.output_formats == ["ipynb", "html"]
    assert job.created_at == job.updated_at == T0
    # 06:30 in Paris in January is 05:30 UTC; Monday 10:30 -> Tuesday.
    assert job.triggers[0].next_fire_at == datetime(2030, 1, 8, 5, 30, tzinfo=UTC)
    got = store.get_job(job.id, "alice")
    assert got == job and not got.read_only
    assert got.parameters == {"alpha": 0.5, "tags": ["a"], "cfg": {"k": None}}


def test_names_are_unique_per_owner(store):
    make_job(store)
    make_job(store, owner="bob")
    with pytest.raises(Conflict, match="already have a job named 'report'"):
        make_job(store)


def test_others_jobs_look_missing(store):
    job = make_job(store)
    missing = "0" * 32
    with pytest.raises(NotFound) as hidden:
        store.get_job(job.id, "mallory", groups=["staff"])
    with pytest.raises(NotFound) as absent:
        store.get_job(missing, "mallory")
    assert hidden.value.status == absent.value.status == 404
    assert hidden.value.message.replace(job.id, missing) == absent.value.message
    for call in (
        lambda: store.update_job(job.id, "mallory", update=UpdateJob(paused=True)),
        lambda: store.delete_job(job.id, "mallory"),
        lambda: store.queue_manual_run(job.id, "mallory"),
        lambda: store.get_job("../../etc/passwd", "mallory"),
    ):
        with pytest.raises(NotFound):
            call()
    run = store.queue_manual_run(job.id, "alice")
    with pytest.raises(NotFound):
        store.get_run(run.id, "mallory")
    with pytest.raises(NotFound):
        store.list_runs("mallory", query=ListRunsQuery(job_id=job.id))
    assert store.list_jobs("mallory").jobs == []
    assert store.list_runs("mallory").runs == []


def test_group_share_is_read_only_and_admin_reads(store):
    job = make_job(store, shared_with_groups=["team", "team"])
    assert job.shared_with_groups == ["team"]
    shared = store.get_job(job.id, "bob", groups=["other", "team"])
    assert shared.read_only and shared.id == job.id
    for call in (
        lambda: store.update_job(job.id, "bob", ["team"], update=UpdateJob(paused=True)),
        lambda: store.delete_job(job.id, "bob", ["team"]),
        lambda: store.queue_manual_run(job.id, "bob", ["team"]),
    ):
        with pytest.raises(Forbidden, match="shared with you read-only") as e:
            call()
        assert e.value.status == 403
    run = store.queue_manual_run(job.id, "alice")
    assert store.get_run(run.id, "bob", ["team"]).id == run.id
    with pytest.raises(Forbidden):
        store.cancel_run(run.id, "bob", ["team"])
    assert [j.id for j in store.list_jobs("bob", ["team"]).jobs] == [job.id]
    only_own = ListJobsQuery(include_shared=False)
    assert store.list_jobs("bob", ["team"], query=only_own).jobs == []

    admin_view = store.get_job(job.id, "root", admin=True)
    assert not admin_view.read_only
    assert [j.id for j in store.list_jobs("root", admin=True).jobs] == [job.id]
    store.update_job(job.id, "root", admin=True, update=UpdateJob(paused=True))
    assert store.get_job(job.id, "alice").paused


def test_list_jobs_filters_and_pages(store):
    for name in ["a-one", "a-two", "b-three", "b-four", "c-five"]:
        make_job(store, name=name, paused=name.startswith("b"))
    make_job(store, owner="bob", name="a-bob", shared_with_groups=["team"])
    make_job(store, owner="carol", name="a-carol")

    names, token = [], None
    while True:
        page = store.list_jobs("alice", ["team"], query=ListJobsQuery(limit=2, next_token=token))
        names += [j.name for j in page.jobs]
        token = page.next_token
        if token is None:
            break
    assert names == ["a-one", "a-two", "b-four", "b-three", "c-five", "a-bob"]
    query = ListJobsQuery(name_prefix="a-", paused=False)
    assert [j.name for j in store.list_jobs("alice", ["team"], query=query).jobs] == [
        "a-one",
        "a-two",
        "a-bob",
    ]
    query = ListJobsQuery(paused=True)
    assert [j.name for j in store.list_jobs("alice", query=query).jobs] == ["b-four", "b-three"]
    assert [
        j.name for j in store.list_jobs("root", admin=True, query=ListJobsQuery(owner="carol")).jobs
    ] == ["a-carol"]
    with pytest.raises(Invalid, match="next_token"):
        store.list_jobs("alice", query=ListJobsQuery(next_token="garbage"))


def test_update_job_reports_what_changed(store, clock):
    job = make_job(store, triggers=[HOURLY, {"kind": "file", "glob": "data/*.csv"}])
    cron_id = job.triggers[0].id
    clock.now = T0 + timedelta(minutes=5)

    same = store.update_job(job.id, "alice", update=UpdateJob(profile="tiny", paused=False))
    assert same.changed == [] and not same.notebook_changed and same.job.version == 1

    result = store.update_job(
        job.id,
        "alice",
        update=UpdateJob(
            parameters={"alpha": 1},
            concurrency_policy="allow",
            source_path=None,
            triggers=[HOURLY, {"kind": "cron", "expression": "@daily"}],
            expected_version=1,
        ),
        notebook_bytes=notebook("x = 2"),
    )
    assert result.changed == [
        "concurrency_policy",
        "notebook_digest",
        "parameters",
        "triggers",
    ]
    assert result.notebook_changed
    assert result.job.version == 2 and result.job.updated_at == clock.now
    assert result.job.concurrency_policy == "allow"
    # The unchanged cron trigger keeps its id and schedule; the file trigger is gone.
    assert [t.id for t in result.job.triggers][0] == cron_id
    assert [t.trigger.kind for t in result.job.triggers] == ["cron", "cron"]
    assert store.get_job(job.id, "alice") == result.job

    with pytest.raises(Conflict, match="at version 2, not 1"):
        store.update_job(job.id, "alice", update=UpdateJob(paused=True, expected_version=1))
    make_job(store, name="other")
    with pytest.raises(Conflict, match="already have a job named 'other'"):
        store.update_job(job.id, "alice", update=UpdateJob(name="other"))
    assert store.get_job(job.id, "alice").version == 2


def test_delete_job(store):
    job = make_job(store, triggers=[HOURLY])
    run = store.queue_manual_run(job.id, "alice")
    store.claim_due(T0, "w1")
    store.start_run(run.id, "w1")
    with pytest.raises(Conflict, match="cancel it before deleting"):
        store.delete_job(job.id, "alice")
    store.finish_run(run.id, "succeeded", worker_id="w1")
    store.delete_job(job.id, "alice")
    with pytest.raises(NotFound):
        store.get_job(job.id, "alice")
    assert db_runs(store) == []
    with Session(store.engine) as session:
        assert session.scalars(select(Trigger)).all() == []


# ----------------------------------------------------------------------------- snapshots


def test_snapshots_are_content_addressed(tmp_path):
    snapshots = SnapshotStore(tmp_path / "snap")
    digest = snapshots.put(b"abc")
    assert digest == hashlib.sha256(b"abc").hexdigest()
    assert snapshots.put(b"abc") == digest
    assert snapshots.get(digest) == b"abc"
    assert snapshots.path(digest).read_bytes() == b"abc"
    assert [p.name for p in (tmp_path / "snap").rglob("*") if p.is_file()] == [f"{digest}.ipynb"]
    for bad in ["../../etc/passwd", "A" * 64, digest[:-1], digest + "/x"]:
        with pytest.raises(Invalid, match="not a snapshot digest"):
            snapshots.get(bad)
    with pytest.raises(NotFound):
        snapshots.get("0" * 64)
    snapshots.path(digest).write_bytes(b"tampered")
    with pytest.raises(RuntimeError, match="does not match"):
        snapshots.get(digest)


def test_editing_the_source_changes_nothing_until_update(store, tmp_path):
    source = tmp_path / "report.ipynb"
    source.write_bytes(notebook("x = 1"))
    job = make_job(
        store, notebook=source.read_bytes(), source_path="report.ipynb", concurrency_policy="allow"
    )
    source.write_bytes(notebook("x = 'edited'"))
    before = store.queue_manual_run(job.id, "alice", request=CreateRun(parameters={"y": 2}))
    assert before.notebook_digest == job.notebook_digest
    assert before.parameters == {"y": 2}
    assert store.snapshots.get(before.notebook_digest) == notebook("x = 1")

    store.update_job(job.id, "alice", update=UpdateJob(), notebook_bytes=source.read_bytes())
    after = store.queue_manual_run(job.id, "alice")
    assert store.snapshots.get(after.notebook_digest) == notebook("x = 'edited'")
    assert (after.job_version, before.job_version) == (2, 1)
    # The run queued before the update still runs what was scheduled.
    assert store.get_run(before.id, "alice").notebook_digest == job.notebook_digest


# ----------------------------------------------------------------------------- cron ticks


def test_one_run_per_tick_however_often_claimed(store):
    job = make_job(store, concurrency_policy="allow", triggers=[HOURLY])
    assert store.claim_due(at(10, 59, 59), "w1") == []
    claimed = []
    for second in range(20):
        claimed += store.claim_due(at(11, 0, second), "w1")
    runs = db_runs(store)
    assert len(runs) == 1 and [r.id for r in claimed] == [runs[0].id]
    run = runs[0]
    assert (run.tick, run.not_before, run.attempt, run.status) == (at(11), at(11), 1, "queued")
    assert run.claimed_by == "w1" and run.trigger_id == job.triggers[0].id
    assert run.reason == "cron 0 * * * * (UTC)"
    trigger = db_trigger(store, job.triggers[0].id)
    assert trigger.next_fire_at == at(12) and trigger.last_fired_at == at(11)
    store.claim_due(at(12, 0, 1), "w1")
    assert [r.tick for r in db_runs(store)] == [at(11), at(12)]


def test_two_workers_never_make_or_claim_a_tick_twice(database, store, clock):
    jobs = [
        make_job(store, name=f"job-{i}", concurrency_policy="allow", triggers=[HOURLY])
        for i in range(4)
    ]
    workers = [JobStore(make_engine(database), store.snapshots, clock=clock) for _ in range(2)]
    barrier = threading.Barrier(len(workers))
    claimed: list[list[str]] = [[] for _ in workers]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            barrier.wait()
            for hour in (11, 12, 13):
                for second in range(8):
                    runs = workers[i].claim_due(at(hour, 0, second), f"w{i}", limit=1)
                    claimed[i] += [r.id for r in runs]
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for worker in workers:
        worker.engine.dispose()
    assert not errors, errors
    runs = db_runs(store)
    per_tick = Counter((r.trigger_id, r.tick) for r in runs)
    assert len(per_tick) == len(jobs) * 3 and set(per_tick.values()) == {1}
    everything = claimed[0] + claimed[1]
    assert len(everything) == len(set(everything)) == len(runs)


def test_restart_around_a_tick_fires_it_once(database, store, clock):
    job = make_job(store, triggers=[HOURLY])
    assert store.claim_due(at(10, 59), "w1") == []
    store.engine.dispose()

    # A scheduler that crashes mid-claim (the transaction never commits) leaves nothing.
    crashed = JobStore(make_engine(database), store.snapshots, clock=clock)
    session = crashed._write()
    session.begin()
    crashed.firing.fire_due(session, at(11, 0, 1))
    session.flush()
    session.rollback()
    session.close()
    crashed.engine.dispose()
    assert db_runs(store) == []

    for second in (2, 3):  # two restarts after the tick
        restarted = JobStore(make_engine(database), store.snapshots, clock=clock)
        restarted.claim_due(at(11, 0, second), "w2")
        restarted.engine.dispose()
    runs = db_runs(store)
    assert [(r.tick, r.trigger_id) for r in runs] == [(at(11), job.triggers[0].id)]


def test_claims_lock_the_way_each_database_needs(store):
    """PostgreSQL: FOR UPDATE SKIP LOCKED on the due triggers; SQLite: BEGIN IMMEDIATE."""
    make_job(store, triggers=[HOURLY])
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        store.claim_due(at(11), "w1")
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    if store.engine.dialect.name == "postgresql":
        assert any("FROM triggers" in s and "SKIP LOCKED" in s for s in statements)
    else:
        assert statements[0] == "BEGIN IMMEDIATE"


def test_a_broken_stored_schedule_does_not_stop_the_others(store):
    broken = make_job(store, name="broken", triggers=[HOURLY])
    fine = make_job(store, name="fine", triggers=[HOURLY])
    with Session(store.engine) as session, session.begin():
        trigger = session.get(Trigger, broken.triggers[0].id)
        trigger.spec = {"expression": "not cron", "timezone": "UTC"}
    store.claim_due(at(11), "w1")
    assert [r.job_id for r in db_runs(store)] == [fine.id]
    assert db_trigger(store, broken.triggers[0].id).next_fire_at is None


def test_missed_ticks_skip(store):
    job = make_job(store, missed_run_policy="skip", triggers=[HOURLY])
    assert store.claim_due(at(14, 20), "w1") == []  # down from 10:30 to 14:20
    (run,) = db_runs(store)
    assert run.status == "skipped" and run.tick == at(14) and run.ended_at == at(14, 20)
    assert "4 tick(s)" in run.reason and "missed-run policy is skip" in run.reason
    assert db_trigger(store, job.triggers[0].id).next_fire_at == at(15)
    # Back within the tolerance of a tick: that tick is on time, earlier ones are dropped.
    claimed = store.claim_due(at(17, 2), "w1")
    assert [r.tick for r in claimed] == [at(17)]
    assert claimed[0].reason == "cron 0 * * * * (UTC); 2 earlier missed tick(s) skipped"


def test_missed_ticks_run_once(store):
    job = make_job(store, missed_run_policy="run_once", triggers=[HOURLY])
    claimed = store.claim_due(at(14, 20), "w1")
    (run,) = db_runs(store)
    assert [r.id for r in claimed] == [run.id]
    assert run.status == "queued" and run.tick == at(14)
    assert run.reason == "cron 0 * * * * (UTC); run_once for the latest of 4 missed tick(s)"
    assert db_trigger(store, job.triggers[0].id).next_fire_at == at(15)
    assert store.claim_due(at(14, 30), "w1") == []
    assert len(db_runs(store)) == 1


def test_paused_jobs_do_not_tick_and_resume_from_now(store, clock):
    job = make_job(store, triggers=[HOURLY], paused=True)
    assert store.claim_due(at(13, 30), "w1") == []
    assert db_runs(store) == []
    clock.now = at(13, 30)
    store.update_job(job.id, "alice", update=UpdateJob(paused=False))
    assert store.get_job(job.id, "alice").triggers[0].next_fire_at == at(14)
    store.claim_due(at(14), "w1")
    assert [r.tick for r in db_runs(store)] == [at(14)]


def test_forbid_skips_ticks_while_a_run_is_in_progress(store):
    job = make_job(store, concurrency_policy="forbid", triggers=[HOURLY])
    manual = store.queue_manual_run(job.id, "alice")
    assert [r.id for r in store.claim_due(at(10, 31), "w1")] == [manual.id]
    store.start_run(manual.id, "w1", now=at(10, 31))
    with pytest.raises(Conflict, match="concurrency policy is 'forbid'") as e:
        store.queue_manual_run(job.id, "alice")
    assert e.value.status == 409

    assert store.claim_due(at(11), "w2") == []
    skipped = [r for r in db_runs(store) if r.tick == at(11)]
    assert [r.status for r in skipped] == ["skipped"]
    assert skipped[0].reason == (
        f"skipped: run {manual.id} is running and the concurrency policy is forbid"
    )

    store.finish_run(manual.id, "succeeded", worker_id="w1", now=at(11, 30))
    claimed = store.claim_due(at(12), "w2")
    assert [(r.tick, r.status) for r in claimed] == [(at(12), "queued")]


def test_forbid_never_claims_or_starts_two_runs(store):
    job = make_job(store, concurrency_policy="allow")
    first = store.queue_manual_run(job.id, "alice")
    second = store.queue_manual_run(job.id, "alice", now=at(10, 31))
    store.update_job(job.id, "alice", update=UpdateJob(concurrency_policy="forbid"))
    assert [r.id for r in store.claim_due(at(10, 31), "w1", limit=5)] == [first.id]
    assert store.claim_due(at(10, 31), "w2", limit=5) == []
    with pytest.raises(Conflict, match="claimed by worker 'w1'"):
        store.start_run(first.id, "w2")
    store.start_run(first.id, "w1")
    with pytest.raises(Conflict, match="is running and its concurrency policy is forbid"):
        store.start_run(second.id, "w2")
    assert store.get_run(second.id, "alice").claimed_by is None  # released, still queued
    store.finish_run(first.id, "failed", worker_id="w1")
    assert [r.id for r in store.claim_due(at(10, 32), "w2")] == [second.id]


def test_replace_cancels_the_run_in_progress(store):
    job = make_job(store, concurrency_policy="replace", triggers=[HOURLY])
    old = store.queue_manual_run(job.id, "alice")
    store.claim_due(T0, "w1")
    store.start_run(old.id, "w1")
    waiting = store.queue_manual_run(job.id, "alice")  # queued, unclaimed; replaces `old` too
    beat = store.heartbeat(old.id, "w1", now=at(10, 40))
    assert beat.cancel_requested_at == T0 and beat.status == "running"
    assert f"replaced by run {waiting.id}" in beat.reason

    claimed = store.claim_due(at(11), "w2")
    assert [r.tick for r in claimed] == [at(11)]
    assert store.get_run(waiting.id, "alice").status == "cancelled"
    store.finish_run(old.id, "cancelled", "stopped on request", worker_id="w1")
    assert store.get_run(old.id, "alice").status == "cancelled"


# ----------------------------------------------------------------------------- run life


def test_run_lifecycle_and_worker_checks(store):
    job = make_job(store)
    run = store.queue_manual_run(job.id, "alice", request=CreateRun(parameters={"n": 3}))
    assert run.reason == "manual run by alice" and run.tick is None and run.trigger_id is None
    (claimed,) = store.claim_due(at(10, 31), "w1")
    assert claimed.claimed_by == "w1" and claimed.heartbeat_at == at(10, 31)
    started = store.start_run(run.id, "w1", now=at(10, 32))
    assert started.status == "running" and started.started_at == at(10, 32)
    with pytest.raises(Conflict):
        store.heartbeat(run.id, "w2")
    with pytest.raises(Invalid, match="not 'orphaned'"):
        store.finish_run(run.id, "orphaned")
    done = store.finish_run(
        run.id,
        "succeeded",
        worker_id="w1",
        output_path="runs/out.ipynb",
        log_path="runs/log.txt",
        env_digest="sha256:" + "e" * 64,
        mlflow_run_id="abc123",
        now=at(10, 40),
    )
    assert (done.status, done.ended_at, done.output_path, done.mlflow_run_id) == (
        "succeeded",
        at(10, 40),
        "runs/out.ipynb",
        "abc123",
    )
    with pytest.raises(Conflict, match="is succeeded"):
        store.finish_run(run.id, "failed")
    with pytest.raises(NotFound):
        store.start_run("f" * 32, "w1")
    page = store.list_runs("alice", query=ListRunsQuery(job_id=job.id))
    assert [r.id for r in page.runs] == [run.id]


def test_list_runs_pages_newest_first(store):
    job = make_job(store, concurrency_policy="allow")
    ids = [store.queue_manual_run(job.id, "alice", now=at(10, 31 + i)).id for i in range(5)]
    seen, token = [], None
    while True:
        page = store.list_runs("alice", query=ListRunsQuery(limit=2, next_token=token))
        seen += [r.id for r in page.runs]
        if (token := page.next_token) is None:
            break
    assert seen == ids[::-1]
    only = store.list_runs("root", admin=True, query=ListRunsQuery(status="queued", limit=500))
    assert len(only.runs) == 5


def test_cancel_a_queued_run(store):
    job = make_job(store)
    run = store.queue_manual_run(job.id, "alice")
    cancelled = store.cancel_run(run.id, "alice")
    assert cancelled.status == "cancelled" and "cancelled by alice" in cancelled.reason
    assert store.claim_due(T0, "w1") == []
    with pytest.raises(Conflict, match="already ended"):
        store.cancel_run(run.id, "alice")


def test_orphans_are_retried_after_backoff(store):
    job = make_job(store, retry_attempts=1, retry_backoff_seconds=120, triggers=[HOURLY])
    (run,) = store.claim_due(at(11), "w1")
    store.start_run(run.id, "w1", now=at(11))
    store.heartbeat(run.id, "w1", now=at(11, 1))
    stale = timedelta(minutes=2)
    assert store.recover_orphans(stale, now=at(11, 2, 59)) == []

    (orphan,) = store.recover_orphans(stale, now=at(11, 4))
    assert orphan.id == run.id and orphan.status == "orphaned" and orphan.ended_at == at(11, 4)
    assert "no heartbeat from worker 'w1'" in orphan.reason
    with pytest.raises(Conflict):
        store.heartbeat(run.id, "w1")  # the old worker learns it must stop
    with pytest.raises(Conflict):
        store.finish_run(run.id, "succeeded", worker_id="w1")
    retry = [r for r in db_runs(store, job.id) if r.retry_of == run.id]
    assert len(retry) == 1
    retry = retry[0]
    assert (retry.attempt, retry.status, retry.tick, retry.trigger_id) == (
        2,
        "queued",
        at(11),
        run.trigger_id,
    )
    assert retry.not_before == at(11, 6)
    assert store.claim_due(at(11, 5), "w2") == []  # backoff not over
    assert [r.id for r in store.claim_due(at(11, 6), "w2")] == [retry.id]
    assert store.recover_orphans(stale, now=at(11, 7)) == []  # a fresh claim is not stale

    store.start_run(retry.id, "w2", now=at(11, 6))
    (again,) = store.recover_orphans(stale, now=at(11, 30))
    assert again.id == retry.id and "no retries left (1 allowed)" in again.reason
    assert len(db_runs(store, job.id)) == 2
    assert store.recover_orphans(stale, now=at(11, 40)) == []


def test_claimed_but_never_started_runs_are_released(store):
    job = make_job(store)
    run = store.queue_manual_run(job.id, "alice")
    store.claim_due(T0, "w1")
    assert store.claim_due(T0, "w2") == []
    assert store.recover_orphans(timedelta(minutes=1), now=at(10, 45)) == []
    assert [r.id for r in store.claim_due(at(10, 45), "w2")] == [run.id]


def test_failures_retry_and_success_triggers_downstream(store):
    upstream = make_job(store, name="extract", retry_attempts=2, retry_backoff_seconds=60)
    downstream = make_job(
        store, name="train", triggers=[{"kind": "after_job", "upstream_job_id": upstream.id}]
    )
    run = store.queue_manual_run(upstream.id, "alice")
    store.claim_due(T0, "w1")
    store.start_run(run.id, "w1")
    store.finish_run(run.id, RunStatus.FAILED, "cell 3: ValueError: boom", worker_id="w1")
    (second,) = [r for r in db_runs(store, upstream.id) if r.attempt == 2]
    assert second.not_before == T0 + timedelta(seconds=60)
    assert second.reason == f"retry 1 of 2: run {run.id} failed"
    (claimed,) = store.claim_due(at(10, 31), "w1")
    store.start_run(claimed.id, "w1", now=at(10, 31))
    store.finish_run(claimed.id, "succeeded", worker_id="w1", now=at(10, 40))
    (after,) = db_runs(store, downstream.id)
    assert after.status == "queued" and after.trigger_id == downstream.triggers[0].id
    assert after.reason == f"after run {claimed.id} of job 'extract' (alice) succeeded"

    with pytest.raises(Invalid, match="cycle"):
        store.update_job(
            upstream.id,
            "alice",
            update=UpdateJob(triggers=[{"kind": "after_job", "upstream_job_id": downstream.id}]),
        )
    with pytest.raises(Invalid, match="itself"):
        store.update_job(
            upstream.id,
            "alice",
            update=UpdateJob(triggers=[{"kind": "after_job", "upstream_job_id": upstream.id}]),
        )
    other = make_job(store, owner="bob", name="private")
    with pytest.raises(Invalid, match="no job"):
        make_job(store, name="spy", triggers=[{"kind": "after_job", "upstream_job_id": other.id}])


def test_webhook_secret_is_shown_once_and_stored_hashed(store):
    job = make_job(store, triggers=[{"kind": "webhook"}])
    secret = job.webhook_secret
    assert secret and len(secret) >= 40
    assert store.get_job(job.id, "alice").webhook_secret is None
    with Session(store.engine) as session:
        (spec,) = session.scalars(select(Trigger.spec)).all()
    assert spec == {"secret_sha256": hashlib.sha256(secret.encode()).hexdigest()}
    run = store.fire_webhook(job.id, secret)
    assert run.trigger_id == job.triggers[0].id and run.reason == "webhook called"
    for job_id, guess in [(job.id, "wrong"), (job.id, ""), ("0" * 32, secret), ("x", secret)]:
        with pytest.raises(NotFound):
            store.fire_webhook(job_id, guess)
    # Re-sending the same triggers keeps the webhook and its secret.
    kept = store.update_job(job.id, "alice", update=UpdateJob(triggers=[{"kind": "webhook"}]))
    assert kept.changed == [] and kept.job.webhook_secret is None
    store.update_job(job.id, "alice", update=UpdateJob(concurrency_policy="allow"))
    assert store.fire_webhook(job.id, secret).status == "queued"


def test_file_trigger_fires_once_per_event(store):
    job = make_job(store, triggers=[{"kind": "file", "glob": "data/*.csv"}])
    trigger_id = job.triggers[0].id
    mtime = at(10, 29)
    first = store.fire_trigger(trigger_id, "data/a.csv changed", tick=mtime)
    again = store.fire_trigger(trigger_id, "data/a.csv changed", tick=mtime)
    assert first.id == again.id and len(db_runs(store)) == 1
    with pytest.raises(NotFound):
        store.fire_trigger("0" * 32, "x")
    webhook = make_job(store, name="hooked", triggers=[{"kind": "webhook"}])
    with pytest.raises(Invalid, match="not a file trigger"):
        store.fire_trigger(webhook.triggers[0].id, "no secret needed?")
    store.update_job(job.id, "alice", update=UpdateJob(paused=True))
    with pytest.raises(Conflict, match="paused"):
        store.fire_trigger(trigger_id, "data/b.csv changed")


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"name": "Daily Report"}, "job name 'Daily Report' is not a valid name"),
        ({"name": "-x"}, "job name '-x' is not a valid name"),
        ({"name": "x" * 64}, "use 1 to 63 lowercase letters"),
        ({"profile": "../gpu"}, "profile '../gpu' is not a valid name"),
        (
            {"parameters": {"os.system('x')": 1}},
            "parameter name \"os.system('x')\" is not a Python identifier",
        ),
        ({"parameters": {"class": 1}}, "parameter name 'class' is not a Python identifier"),
        ({"parameters": {"1x": 1}}, "parameter name '1x' is not a Python identifier"),
        ({"parameters": {"x": float("nan")}}, "parameter x is nan: JSON has no NaN"),
        ({"parameters": {"x": {1, 2}}}, "parameter x is a set: values must be JSON"),
        ({"parameters": {"x": {"a": [object()]}}}, "parameter x['a'][0] is a object"),
        ({"parameters": {"x": "y" * 70_000}}, "larger than 65536 bytes"),
        ({"timeout_seconds": 0}, "timeout_seconds must be between 1 and 86400, not 0"),
        ({"timeout_seconds": 86_401}, "every run needs a finite timeout"),
        ({"retry_attempts": 11}, "retry_attempts must be between 0 and 10, not 11"),
        ({"retry_backoff_seconds": -1}, "retry_backoff_seconds must be between 0 and 86400"),
        ({"concurrency_policy": "sometimes"}, "Input should be 'allow', 'forbid' or 'replace'"),
        ({"missed_run_policy": "all"}, "Input should be 'skip' or 'run_once'"),
        ({"output_formats": ["docx"]}, "unknown output format 'docx'"),
        ({"shared_with_groups": ["a b"]}, "'a b' is not a hub group name"),
        ({"source_path": "/etc/passwd"}, "source path '/etc/passwd' must be relative"),
        ({"timout_seconds": 5}, "Extra inputs are not permitted"),
        (
            {"triggers": [{"kind": "cron", "expression": "61 * * * *"}]},
            "cron expression '61 * * * *' is not valid",
        ),
        (
            {"triggers": [{"kind": "cron", "expression": "* * * *"}]},
            "cron expression '* * * *' has 4 fields, not 5",
        ),
        (
            {"triggers": [{"kind": "cron", "expression": "0 0 * * * *"}]},
            "has 6 fields, not 5",
        ),
        (
            {"triggers": [{"kind": "cron", "expression": "@reboot"}]},
            "cron expression '@reboot' is not valid: the @ forms are @yearly",
        ),
        (
            {"triggers": [{"kind": "cron", "expression": "0 0 30 2 *"}]},
            "cron expression '0 0 30 2 *' never fires",
        ),
        (
            {"triggers": [{"kind": "cron", "expression": "@daily", "timezone": "Mars/Base"}]},
            "unknown time zone 'Mars/Base': use an IANA name",
        ),
        (
            {"triggers": [{"kind": "cron", "expression": "@daily", "timezone": "../../etc"}]},
            "unknown time zone '../../etc'",
        ),
        ({"triggers": [{"kind": "sms"}]}, "Input tag 'sms' found using 'kind' does not match"),
        (
            {"triggers": [{"kind": "file", "glob": "../other/*.csv"}]},
            "file glob '../other/*.csv' must be relative to your home directory",
        ),
        (
            {"triggers": [{"kind": "after_job", "upstream_job_id": "nope"}]},
            "'nope' is not a job id",
        ),
        ({"triggers": [{"kind": "webhook"}, {"kind": "webhook"}]}, "at most one webhook"),
        ({"triggers": [HOURLY, HOURLY]}, "the same trigger is listed twice"),
    ],
)
def test_invalid_input_is_explained(fields, message):
    with pytest.raises(ValidationError) as e:
        CreateJob(**{"name": "report", "profile": "tiny", **fields})
    assert message in str(e.value)


def test_invalid_updates_and_bytes_are_explained(store):
    with pytest.raises(ValidationError, match="profile cannot be null"):
        UpdateJob(profile=None)
    assert UpdateJob(source_path=None).changes() == {"source_path": None}
    assert CronTrigger(expression="  0   6 * * *").expression == "0 6 * * *"
    for data, message in [
        (b"not json", "not a .ipynb file"),
        (b'{"cells": []}', "not an nbformat 4"),
        (b"[]", "not an nbformat 4"),
    ]:
        with pytest.raises(Invalid, match=message) as e:
            make_job(store, notebook=data)
        assert isinstance(e.value, SchedulerError) and e.value.status == 400
    job = make_job(store)
    with pytest.raises(Invalid, match="next_token"):
        store.list_runs("alice", query=ListRunsQuery(job_id=job.id, next_token="bm90IGEgbGlzdA"))
    with pytest.raises(ValueError, match="naive"):
        store.claim_due(datetime(2030, 1, 1), "w1")
