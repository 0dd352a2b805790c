"""Scheduler identities and their leases: a restarted process recovers its own runs at once.

Like ``test_scheduler_store.py`` (whose fixtures, tests/jobstore.py, these tests share), every test
runs on SQLite and PostgreSQL with a fake clock. ``stale_after`` is an hour
here, so any run recovered within it was recovered by the lease, not by a
heartbeat gone stale.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from hub_ext.services.scheduler.errors import Conflict, Invalid
from hub_ext.services.scheduler.orm import SchedulerWorker
from hub_ext.services.scheduler.worker import new_worker_id, worker_alive

from . import jobstore
from .jobstore import T0, at, db_runs, make_job

database = jobstore.database
clock = jobstore.clock
store = jobstore.store

HOUR = timedelta(hours=1)


def running(store, job_id, worker, when=T0):
    run = store.queue_manual_run(job_id, "alice", now=when)
    assert [r.id for r in store.claim_due(when, worker, limit=1)] == [run.id]
    return store.start_run(run.id, worker, now=when)


def lease(store, identity):
    with Session(store.engine) as session:
        row = session.get(SchedulerWorker, identity)
        return (row.worker_id, row.started_at, row.renewed_at) if row else None


def test_a_new_process_of_an_identity_recovers_its_predecessors_runs_at_once(store):
    """The runs of the dead holder are orphaned and retried; another replica's are not touched."""
    assert store.take_over("sched-0", "host:1:a", stale_after=HOUR, now=at(10, 30)) == []
    assert store.take_over("sched-1", "host:2:b", stale_after=HOUR, now=at(10, 30)) == []
    mine = make_job(store, name="mine", retry_attempts=1, retry_backoff_seconds=0)
    other = make_job(store, name="other", retry_attempts=1)
    waiting = make_job(store, name="waiting")
    dead_run = running(store, mine.id, "host:1:a")
    live_run = running(store, other.id, "host:2:b")
    claimed = store.queue_manual_run(waiting.id, "alice", now=T0)
    assert [r.id for r in store.claim_due(T0, "host:1:a")] == [claimed.id]  # claimed, not started

    # "host:1:a" was killed; its successor starts a minute later, heartbeats all fresh
    recovered = store.take_over("sched-0", "host:3:c", stale_after=HOUR, now=at(10, 31))
    assert [r.id for r in recovered] == [dead_run.id]
    assert recovered[0].status == "orphaned" and recovered[0].ended_at == at(10, 31)
    assert "its scheduler process 'host:1:a' died; 'host:3:c' took over" in recovered[0].reason
    runs = {r.id: r for r in db_runs(store)}
    assert runs[live_run.id].status == "running" and runs[live_run.id].claimed_by == "host:2:b"
    assert runs[claimed.id].status == "queued" and runs[claimed.id].claimed_by is None
    [retry] = [r for r in runs.values() if r.retry_of == dead_run.id]
    assert (retry.attempt, retry.status, retry.claimed_by) == (2, "queued", None)
    assert len(db_runs(store, mine.id)) == 2  # one retry, no more
    assert lease(store, "sched-0") == ("host:3:c", at(10, 31), at(10, 31))
    assert lease(store, "sched-1")[0] == "host:2:b"

    # the old holder, were it alive after all, learns that it must stop
    with pytest.raises(Conflict):
        store.heartbeat(dead_run.id, "host:1:a", now=at(10, 32))
    assert store.renew_lease("sched-0", "host:1:a", now=at(10, 32)) is False
    assert store.renew_lease("sched-0", "host:3:c", now=at(10, 32)) is True
    assert lease(store, "sched-0")[2] == at(10, 32)
    # the stale-heartbeat path has nothing left to do, and a second take-over is a no-op
    assert store.recover_orphans(HOUR, now=at(10, 33)) == []
    assert store.take_over("sched-0", "host:3:c", stale_after=HOUR, now=at(10, 34)) == []
    assert {r.id for r in store.claim_due(at(10, 34), "host:3:c")} == {retry.id, claimed.id}


def test_a_live_holder_on_this_machine_keeps_its_identity(store):
    """Two live processes given one identity: the second is refused, nothing is recovered."""
    store.take_over("sched-0", "host:1:a", stale_after=HOUR, now=T0)
    job = make_job(store)
    run = running(store, job.id, "host:1:a")
    asked = []

    def alive(worker_id):
        asked.append(worker_id)
        return True

    with pytest.raises(Conflict, match="give each scheduler process its own"):
        store.take_over("sched-0", "host:2:b", stale_after=HOUR, alive=alive, now=at(11))
    assert asked == ["host:1:a"]
    assert lease(store, "sched-0")[0] == "host:1:a"
    assert db_runs(store, job.id)[0].status == "running"
    # ...but a lease not renewed for stale_after is dead, whatever the pid says (pid reuse)
    store.renew_lease("sched-0", "host:1:a", now=at(11))
    [orphan] = store.take_over("sched-0", "host:2:b", stale_after=HOUR, alive=alive, now=at(12, 1))
    assert orphan.id == run.id and lease(store, "sched-0")[0] == "host:2:b"


def test_identities_are_checked(store):
    for identity in ("", "x" * 256):
        with pytest.raises(Invalid):
            store.take_over(identity, "host:1:a", stale_after=HOUR)


def test_two_processes_taking_over_at_once_recover_the_runs_once(store):
    """The lease row is locked: one successor recovers, the other sees it already moved."""
    store.take_over("sched-0", "host:1:a", stale_after=HOUR, now=T0)
    job = make_job(store, retry_attempts=3, retry_backoff_seconds=0)
    running(store, job.id, "host:1:a")
    results, errors = [], []
    start = threading.Barrier(2)

    def successor(worker_id):
        start.wait()
        try:
            results.append(store.take_over("sched-0", worker_id, stale_after=HOUR, now=at(11)))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=successor, args=(w,)) for w in ("h:2:b", "h:3:c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert sorted(len(r) for r in results) == [0, 1]
    runs = db_runs(store, job.id)
    assert sorted((r.attempt, r.status) for r in runs) == [(1, "orphaned"), (2, "queued")]


def test_the_lease_table_has_one_row_per_identity(store):
    for n in range(3):
        store.take_over("sched-0", f"host:{n}:x", stale_after=HOUR, now=at(11, n))
    with Session(store.engine) as session:
        rows = session.scalars(select(SchedulerWorker)).all()
    assert [(r.identity, r.worker_id) for r in rows] == [("sched-0", "host:2:x")]


# ----------------------------------------------------------------------------- liveness


def test_worker_alive_knows_only_live_processes_on_this_machine():
    host = socket.gethostname()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert worker_alive(f"{host}:{child.pid}:abc")
        assert not worker_alive(f"elsewhere-{host}:{child.pid}:abc")  # another machine's
        assert not worker_alive(f"{host}:{os.getpid()}:abc")  # this process is no predecessor
        assert not worker_alive(new_worker_id())
        assert not worker_alive("nonsense")
        child.kill()
        # killed but not reaped yet: a zombie is dead
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        assert not worker_alive(f"{host}:{child.pid}:abc")
    finally:
        child.kill()
        child.wait()
    assert not worker_alive(f"{host}:{child.pid}:abc")
