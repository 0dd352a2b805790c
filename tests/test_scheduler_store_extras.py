"""The scheduler store's notifications, output retention, run progress and quota helpers.

Like ``test_scheduler_store.py`` (whose fixtures and helpers, tests/jobstore.py, these tests share),
every store test runs on SQLite and PostgreSQL with a fake clock.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from alembic import command
from pydantic import ValidationError
from sqlalchemy import event, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hub_ext.services.scheduler.db import alembic_config, make_engine, upgrade
from hub_ext.services.scheduler.errors import Conflict, Invalid, NotFound
from hub_ext.services.scheduler.models import (
    CreateJob,
    ListJobsQuery,
    NotifyPolicy,
    UpdateJob,
)
from hub_ext.services.scheduler.notifications import MAX_MESSAGE
from hub_ext.services.scheduler.orm import Job, Notification, Run
from hub_ext.services.scheduler.store import JobStore

from . import jobstore
from .jobstore import HOURLY, T0, at, db_runs, fresh_database, make_job

# The shared fixtures, by assignment rather than import so that test arguments
# of the same name do not read as redefinitions.
database = jobstore.database
clock = jobstore.clock
store = jobstore.store

DAY = timedelta(days=1)


def running_run(store: JobStore, job_id: str, worker: str = "w1", when=T0):
    """Queue a manual run of ``job_id`` and start it on ``worker``."""
    run = store.queue_manual_run(job_id, store.get_job_for_worker(job_id).owner, now=when)
    assert [r.id for r in store.claim_due(when, worker)] == [run.id]
    return store.start_run(run.id, worker, now=when)


def finished_run(store: JobStore, job_id: str, ended, status="succeeded", outputs=True):
    """A run of ``job_id`` that ended at ``ended``, with output files unless ``outputs`` is False."""
    run = running_run(store, job_id, when=ended - timedelta(minutes=1))
    return store.finish_run(
        run.id,
        status,
        worker_id="w1",
        output_path=f"runs/{run.id}/out.ipynb" if outputs else None,
        log_path=f"runs/{run.id}/log.txt" if outputs else None,
        now=ended,
    )


# ----------------------------------------------------------------------------- schema


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_upgrade_from_0001_keeps_rows_and_constraints(kind, tmp_path):
    """Jobs from before 0002 read back with the default notify policy and no retention."""
    with fresh_database(kind, tmp_path) as url:
        upgrade(url, "0001")
        # What each driver stores for a UTCDateTime: naive UTC text on SQLite.
        t = T0 if kind == "postgresql" else T0.replace(tzinfo=None).isoformat(" ")
        engine = make_engine(url)
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO jobs VALUES ('" + "a" * 32 + "', 'alice', 'report', 'd', NULL, "
                    "'{}', 'tiny', 60, 0, 0, 'forbid', 'skip', '[\"ipynb\"]', '[]', false, "
                    ":t, :t, 1)"
                ),
                {"t": t},
            )
            connection.execute(
                text(
                    "INSERT INTO triggers VALUES ('" + "b" * 32 + "', '" + "a" * 32 + "', "
                    "'file', '{\"glob\": \"x\"}', NULL, NULL, :t)"
                ),
                {"t": t},
            )
        engine.dispose()
        upgrade(url)

        engine = make_engine(url)
        try:
            job = JobStore(engine, snapshots=None).get_job_for_worker("a" * 32)
            assert job.notify == NotifyPolicy() and job.notify.on_failure
            assert (job.keep_runs, job.keep_days, len(job.triggers)) == (None, None, 1)
            # The SQLite rebuild of ``jobs`` kept its CHECK and UNIQUE constraints.
            with Session(engine) as session:
                row = session.get(Job, "a" * 32)
                for change in (
                    {"id": "c" * 32, "name": "other", "concurrency_policy": "sometimes"},
                    {"id": "c" * 32},  # the same owner and name
                ):
                    with pytest.raises(IntegrityError), session.begin_nested():
                        copy = {c.key: getattr(row, c.key) for c in Job.__table__.columns}
                        session.execute(Job.__table__.insert().values({**copy, **change}))
            with engine.connect() as connection:
                assert connection.execute(text("SELECT notify FROM jobs")).scalar() in ("{}", {})
        finally:
            engine.dispose()

        command.downgrade(alembic_config(url), "0001")
        engine = make_engine(url)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM triggers")).scalar() == 1
            assert connection.execute(text("SELECT name FROM jobs")).scalar() == "report"
        engine.dispose()


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "notify, message",
    [
        ({"emails": ["alice"]}, "'alice' is not an e-mail address: use one address of the form"),
        ({"emails": ["alice@localhost"]}, "'alice@localhost' is not an e-mail address"),
        ({"emails": ["a b@example.org"]}, "'a b@example.org' is not an e-mail address"),
        ({"emails": ["a@x.org, b@y.org"]}, "without spaces, commas or a display name"),
        ({"emails": ["Alice <a@x.org>"]}, "is not an e-mail address"),
        ({"emails": ["a@x.org\nBcc: eve@y.org"]}, "is not an e-mail address"),
        ({"emails": ["a@x.org\n"]}, "is not an e-mail address"),
        ({"emails": ["a@-x.org"]}, "is not an e-mail address"),
        ({"emails": [f"u{i}@x.org" for i in range(11)]}, "lists 11 addresses; at most 10"),
        ({"webhook_url": "ftp://hooks.example.org/x"}, "is not an http or https URL with a host"),
        ({"webhook_url": "https:///path"}, "is not an http or https URL with a host"),
        ({"webhook_url": "hooks.example.org/x"}, "is not an http or https URL"),
        ({"webhook_url": "https://hooks.example.org:port/x"}, "is not an http or https URL"),
        ({"webhook_url": "https://hooks.example.org/a b"}, "must not contain spaces"),
        ({"webhook_url": "https://x.org/" + "a" * 2048}, "longer than 2048 characters"),
        ({"on_failure": "sometimes"}, "Input should be a valid boolean"),
        ({"sms": ["+33"]}, "Extra inputs are not permitted"),
    ],
)
def test_bad_notify_policies_are_explained(notify, message):
    with pytest.raises(ValidationError) as e:
        CreateJob(name="report", profile="tiny", notify=notify)
    assert message in str(e.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://bot:s3cret@hooks.example.org/x",
        "https://token@hooks.example.org/x",
        "http://:s3cret@hooks.example.org/x",
        "ftp://bot:s3cret@hooks.example.org/x",
    ],
)
def test_webhook_urls_with_credentials_are_refused_without_echoing_them(url):
    with pytest.raises(ValidationError) as e:
        NotifyPolicy(webhook_url=url)
    (error,) = e.value.errors()
    if url.startswith("http"):
        assert "must not contain a user name or password (user:password@host)" in error["msg"]
        assert "secrets stay out of URLs" in error["msg"]
    # The message never repeats the credential (pydantic's ``input`` does: the
    # service's error translator must not echo it).
    assert "s3cret" not in error["msg"] and "token@" not in error["msg"]


def test_good_notify_policies_and_retention_bounds():
    policy = NotifyPolicy(
        on_success=True,
        emails=["alice@example.org", "ops+jobs@mail.example.co.uk", "alice@example.org"],
        webhook_url="https://hooks.example.org:8443/shipyard?channel=ml",
    )
    assert policy.emails == ["alice@example.org", "ops+jobs@mail.example.co.uk"]
    assert NotifyPolicy().model_dump() == {
        "on_failure": True,
        "on_success": False,
        "emails": [],
        "webhook_url": None,
    }
    for fields, message in [
        ({"keep_runs": 0}, "keep_runs must be between 1 and 10000, not 0"),
        ({"keep_runs": 10_001}, "keep_runs must be between 1 and 10000"),
        ({"keep_days": 3651}, "keep_days must be between 1 and 3650, not 3651"),
    ]:
        with pytest.raises(ValidationError, match=message):
            CreateJob(name="report", profile="tiny", **fields)
    assert UpdateJob(keep_runs=None, keep_days=None).changes() == {
        "keep_days": None,
        "keep_runs": None,
    }
    with pytest.raises(ValidationError, match="notify cannot be null"):
        UpdateJob(notify=None)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"name": "report\n"}, "is not a valid name"),
        ({"profile": "tiny\n"}, "is not a valid name"),
        ({"shared_with_groups": ["team\n"]}, "is not a hub group name"),
        ({"triggers": [{"kind": "after_job", "upstream_job_id": "a" * 32 + "\n"}]}, "not a job id"),
    ],
)
def test_a_trailing_newline_is_not_a_valid_name(fields, message):
    """``re.match`` with ``$`` accepts a trailing newline; the checks match the whole value."""
    with pytest.raises(ValidationError, match=message):
        CreateJob(**{"name": "report", "profile": "tiny", **fields})


# ----------------------------------------------------------------------------- jobs


def test_notify_and_retention_are_stored_and_updated(store, clock):
    job = make_job(
        store,
        notify={"on_success": True, "emails": ["alice@example.org"]},
        keep_runs=5,
    )
    assert job.notify == NotifyPolicy(on_success=True, emails=["alice@example.org"])
    assert (job.keep_runs, job.keep_days) == (5, None)
    assert store.get_job(job.id, "alice") == job
    assert make_job(store, name="plain").notify == NotifyPolicy()

    same = store.update_job(
        job.id, "alice", update=UpdateJob(notify={"on_success": True, "emails": job.notify.emails})
    )
    assert same.changed == [] and same.job.version == 1
    clock.now = at(11)
    result = store.update_job(
        job.id,
        "alice",
        update=UpdateJob(
            notify={"webhook_url": "https://hooks.example.org/x"}, keep_runs=None, keep_days=30
        ),
    )
    assert result.changed == ["keep_days", "keep_runs", "notify"] and result.job.version == 2
    assert result.job.notify == NotifyPolicy(webhook_url="https://hooks.example.org/x")
    assert (result.job.keep_runs, result.job.keep_days) == (None, 30)
    assert store.get_job(job.id, "alice") == result.job
    assert store.get_job_for_worker(job.id) == result.job


def test_a_job_from_before_notifications_reads_and_updates_as_the_default(store):
    job = make_job(store)
    with Session(store.engine) as session, session.begin():
        session.get(Job, job.id).notify = {}  # what 0002 gives existing jobs
    assert store.get_job(job.id, "alice").notify == NotifyPolicy()
    unchanged = store.update_job(job.id, "alice", update=UpdateJob(notify={}))
    assert unchanged.changed == []


def test_get_job_for_worker_needs_no_user_but_an_existing_job(store):
    job = make_job(store, owner="bob", output_formats=["html"])
    described = store.get_job_for_worker(job.id)
    assert described.owner == "bob" and described.output_formats == ["ipynb", "html"]
    for missing in ("0" * 32, "../x", None):
        with pytest.raises(NotFound, match="no job"):
            store.get_job_for_worker(missing)


def test_a_page_of_jobs_loads_one_page_of_rows_whatever_the_others(store):
    """Visibility, order and the page size are the database's work: it returns a page, no more.

    #15, point 7: the listing used to read every job after the page token, in chunks
    of 200, and keep the caller's in Python; with thousands of other users' jobs
    each page cost the service thousands of rows of work.
    """
    for i in range(60):  # "alice" < "bob": all of these come first in the order
        make_job(store, owner="alice", name=f"hidden-{i:02d}")
    make_job(store, owner="carol", name="shared-1", shared_with_groups=["team"])
    make_job(store, owner="carol", name="shared-2", shared_with_groups=["other", "team"])
    make_job(store, owner="carol", name="not-shared", shared_with_groups=["other"])
    for name in ("one", "two", "three"):
        make_job(store, owner="bob", name=name)

    loaded: list[str] = []

    def count(job, _context):
        loaded.append(job.name)

    event.listen(Job, "load", count)
    try:
        names, token, pages = [], None, 0
        while True:
            loaded.clear()
            query = ListJobsQuery(limit=2, next_token=token)
            page = store.list_jobs("bob", ["team", "nobody"], query=query)
            assert len(loaded) <= 3, loaded  # the page and one more, to know another follows
            names += [j.name for j in page.jobs]
            pages += 1
            token = page.next_token
            if token is None:
                break
        assert names == ["one", "three", "two", "shared-1", "shared-2"]
        assert pages == 3
        loaded.clear()
        own = store.list_jobs("bob", ["team"], query=ListJobsQuery(include_shared=False))
        assert [j.name for j in own.jobs] == ["one", "three", "two"] and len(loaded) == 3
        loaded.clear()
        first = store.list_jobs("root", admin=True, query=ListJobsQuery(limit=5))
        assert [j.name for j in first.jobs] == [f"hidden-{i:02d}" for i in range(5)]
        assert len(loaded) == 6
    finally:
        event.remove(Job, "load", count)


def test_a_stored_cron_expression_is_listed_without_being_checked_again(store, clock):
    """Listing describes stored triggers as they are: no croniter walk per trigger.

    A rule tightened later must not make an existing job unreadable either (as
    :func:`~hub_ext.services.scheduler.convert.notify_policy` reads notify).
    """
    job = make_job(store, triggers=[HOURLY])
    never = {"expression": "0 0 30 2 *", "timezone": "UTC"}  # refused when a job is saved
    with Session(store.engine) as session, session.begin():
        session.get(Job, job.id).triggers[0].spec = never
    listed = store.list_jobs("alice").jobs
    assert [t.trigger.expression for t in listed[0].triggers] == ["0 0 30 2 *"]
    assert store.get_job(job.id, "alice").triggers[0].trigger.expression == "0 0 30 2 *"


# ----------------------------------------------------------------------------- progress


def test_progress_is_recorded_for_the_running_worker_and_counts_as_heartbeat(store):
    job = make_job(store)
    run = running_run(store, job.id)
    store.record_progress(run.id, "w1", 3, 10, now=at(10, 45))
    got = store.get_run(run.id, "alice")
    assert (got.cells_done, got.cells_total, got.heartbeat_at) == (3, 10, at(10, 45))
    # A heartbeat by progress keeps the run from being declared orphaned.
    assert store.recover_orphans(timedelta(minutes=10), now=at(10, 50)) == []

    with pytest.raises(Conflict, match="stop executing it"):
        store.record_progress(run.id, "w2", 4, 10)
    for done, total in [(-1, 10), (11, 10), (1.5, 3), (True, 3)]:
        with pytest.raises(Invalid, match="0 <= cells_done <= cells_total"):
            store.record_progress(run.id, "w1", done, total)
    with pytest.raises(NotFound):
        store.record_progress("0" * 32, "w1", 1, 1)
    assert store.get_run(run.id, "alice").cells_done == 3

    store.finish_run(run.id, "succeeded", worker_id="w1", now=at(11))
    with pytest.raises(Conflict, match="is succeeded"):
        store.record_progress(run.id, "w1", 10, 10)
    queued = store.queue_manual_run(job.id, "alice")
    with pytest.raises(Conflict, match="is queued"):
        store.record_progress(queued.id, "w1", 0, 10)


# ----------------------------------------------------------------------------- quotas


def test_running_counts_by_owner(store):
    assert store.running_counts_by_owner() == {}
    for owner, name in [("alice", "a1"), ("alice", "a2"), ("bob", "b1")]:
        job = make_job(store, owner=owner, name=name)
        running_run(store, job.id)
    claimed_only = make_job(store, owner="carol", name="c1")
    store.queue_manual_run(claimed_only.id, "carol")
    store.claim_due(T0, "w1")
    finished = make_job(store, owner="dave", name="d1")
    finished_run(store, finished.id, at(10, 40))
    assert store.running_counts_by_owner() == {"alice": 2, "bob": 1}


async def test_the_quotas_route_counts_each_groups_running_runs_for_admins(store):
    """``GET api/quotas`` (the alerts service's quota rule reads it): running runs per group."""
    from hub_ext.services.common.hubapi import Caller
    from hub_ext.services.scheduler.core import SchedulerCore
    from hub_ext.services.scheduler.errors import Forbidden

    class Directory:
        async def groups_of(self, name: str) -> tuple[str, ...]:
            return {"alice": ("research", "students"), "bob": ("research",)}.get(name, ())

    core = SchedulerCore(
        store, None, Directory(), lambda owner: None, lambda: None, 1 << 20, 1 << 21
    )
    core.group_quotas = {"research": 3, "students": 2, "empty": 1}
    for owner, name in [("alice", "a1"), ("alice", "a2"), ("bob", "b1"), ("carol", "c1")]:
        running_run(store, make_job(store, owner=owner, name=name).id)
    finished_run(store, make_job(store, owner="bob", name="b2").id, at(10, 40))
    answer = await core.quotas(Caller("root", (), True))
    assert [q.model_dump() for q in answer.quotas] == [
        {"group": "empty", "limit": 1, "running": 0},
        {"group": "research", "limit": 3, "running": 3},
        {"group": "students", "limit": 2, "running": 2},
    ]
    with pytest.raises(Forbidden, match="admins"):
        await core.quotas(Caller("alice", ("research",), False))
    core.group_quotas = {}
    assert (await core.quotas(Caller("root", (), True))).quotas == []


def test_defer_run_releases_the_claim_and_replaces_its_waiting_note(store):
    job = make_job(store)
    run = store.queue_manual_run(job.id, "alice")
    store.claim_due(T0, "w1")
    deferred = store.defer_run(run.id, "w1", "group 'students' has 2 of 2 runs running", at(10, 35))
    assert (deferred.status, deferred.claimed_by, deferred.heartbeat_at) == ("queued", None, None)
    assert deferred.not_before == at(10, 35)
    assert deferred.reason == (
        "manual run by alice; waiting: group 'students' has 2 of 2 runs running"
    )
    assert store.claim_due(at(10, 34), "w2") == []
    assert [r.id for r in store.claim_due(at(10, 35), "w2")] == [run.id]

    again = store.defer_run(run.id, "w2", "waiting: user quota; 1 of 1 running", at(10, 40))
    assert again.reason == "manual run by alice; waiting: user quota, 1 of 1 running"
    assert store.get_run(run.id, "alice").reason == again.reason

    with pytest.raises(Conflict, match="only a claimed run can be deferred"):
        store.defer_run(run.id, "w2", "again", at(10, 45))  # no longer claimed
    store.claim_due(at(10, 40), "w1")
    with pytest.raises(Conflict, match="claimed by 'w1'"):
        store.defer_run(run.id, "w2", "not mine", at(10, 45))
    with pytest.raises(Invalid, match="reason is empty"):
        store.defer_run(run.id, "w1", "  ", at(10, 45))
    with pytest.raises(ValueError, match="naive"):
        store.defer_run(run.id, "w1", "x", at(10, 45).replace(tzinfo=None))
    with pytest.raises(NotFound):
        store.defer_run("0" * 32, "w1", "x", at(10, 45))
    started = store.start_run(run.id, "w1", now=at(10, 41))
    assert started.reason == again.reason
    with pytest.raises(Conflict, match="is running"):
        store.defer_run(run.id, "w1", "too late", at(10, 45))


def test_deferring_a_run_cancelled_while_claimed_cancels_it(store):
    job = make_job(store)
    run = store.queue_manual_run(job.id, "alice")
    store.claim_due(T0, "w1")
    store.defer_run(run.id, "w1", "quota", at(10, 35))
    store.claim_due(at(10, 35), "w1")
    store.cancel_run(run.id, "alice", now=at(10, 36))  # claimed: only requested
    cancelled = store.defer_run(run.id, "w1", "quota", at(10, 40), now=at(10, 37))
    assert (cancelled.status, cancelled.ended_at, cancelled.claimed_by) == (
        "cancelled",
        at(10, 37),
        None,
    )
    assert cancelled.reason == "manual run by alice; cancelled by alice"


# ----------------------------------------------------------------------------- retention


def test_retention_by_count_keeps_the_newest_runs_with_outputs(store):
    job = make_job(store, concurrency_policy="allow", keep_runs=2)
    runs = [finished_run(store, job.id, at(11 + i)) for i in range(4)]
    # A failed run with outputs counts; a run without outputs takes no place.
    failed = finished_run(store, job.id, at(16), status="failed")
    finished_run(store, job.id, at(17), status="cancelled", outputs=False)
    running_run(store, job.id, when=at(18))

    expired = store.expired_outputs(job.id, now=at(19))
    assert [r.id for r in expired] == [r.id for r in runs[:3]]  # oldest first
    assert expired[0].output_path == f"runs/{runs[0].id}/out.ipynb"
    assert not {r.id for r in expired} & {runs[3].id, failed.id}

    store.mark_outputs_deleted([r.id for r in expired], now=at(19, 5))
    for run in expired:
        got = store.get_run(run.id, "alice")  # the record stays
        assert (got.status, got.output_path, got.log_path, got.outputs_deleted_at) == (
            "succeeded",
            None,
            None,
            at(19, 5),
        )
    assert store.expired_outputs(job.id, now=at(19)) == []
    # Marking again keeps the first time.
    store.mark_outputs_deleted([expired[0].id, "not an id"], now=at(20))
    assert store.get_run(expired[0].id, "alice").outputs_deleted_at == at(19, 5)
    assert store.get_run(runs[3].id, "alice").output_path is not None
    assert len(db_runs(store, job.id)) == 7


def test_retention_by_age_and_by_both(store):
    job = make_job(store, concurrency_policy="allow", keep_days=7)
    old = finished_run(store, job.id, T0)
    edge = finished_run(store, job.id, T0 + DAY)
    new = finished_run(store, job.id, T0 + 5 * DAY)
    now = T0 + 8 * DAY
    # "More than keep_days ago": a run that ended exactly 7 days ago stays.
    assert [r.id for r in store.expired_outputs(job.id, now=now)] == [old.id]
    assert store.expired_outputs(job.id, now=now + timedelta(seconds=1)) == [
        store.get_run(old.id, "alice"),
        store.get_run(edge.id, "alice"),
    ]
    store.update_job(job.id, "alice", update=UpdateJob(keep_runs=1))
    assert [r.id for r in store.expired_outputs(job.id, now=now)] == [old.id, edge.id]
    store.update_job(job.id, "alice", update=UpdateJob(keep_runs=None, keep_days=None))
    assert store.expired_outputs(job.id, now=now + 1000 * DAY) == []
    assert new.output_path is not None
    with pytest.raises(NotFound):
        store.expired_outputs("0" * 32)


def test_mark_outputs_deleted_never_touches_a_run_in_progress(store):
    job = make_job(store)
    run = running_run(store, job.id)
    with Session(store.engine) as session, session.begin():
        session.get(Run, run.id).output_path = "runs/partial.ipynb"
    store.mark_outputs_deleted([run.id])
    store.mark_outputs_deleted([])
    got = store.get_run(run.id, "alice")
    assert (got.output_path, got.outputs_deleted_at) == ("runs/partial.ipynb", None)


# ----------------------------------------------------------------------------- notifications


def test_notifications_are_listed_newest_first_and_only_to_their_user(store, clock):
    job = make_job(store)
    run = finished_run(store, job.id, at(11), status="failed")
    first = store.add_notification(
        "alice", job.id, run.id, "failed", "report failed: cell 3", now=at(11)
    )
    assert (first.job_id, first.run_id, first.event, first.read_at) == (
        job.id,
        run.id,
        "failed",
        None,
    )
    second = store.add_notification("alice", None, None, "succeeded", "all good", now=at(12))
    store.add_notification("bob", None, None, "timed_out", "not yours", now=at(13))

    listed = store.list_notifications("alice").notifications
    assert [n.id for n in listed] == [second.id, first.id]
    assert [n.id for n in store.list_notifications("alice", limit=1).notifications] == [second.id]
    assert store.list_notifications("mallory").notifications == []

    read = store.mark_notification_read(first.id, "alice", now=at(14))
    assert read.read_at == at(14)
    assert store.mark_notification_read(first.id, "alice", now=at(15)).read_at == at(14)
    unread = store.list_notifications("alice", unread_only=True).notifications
    assert [n.id for n in unread] == [second.id]
    for limit in (0, 501, True):
        with pytest.raises(Invalid, match="limit must be between 1 and 500"):
            store.list_notifications("alice", limit=limit)


def test_others_notifications_look_missing(store):
    mine = store.add_notification("alice", None, None, "failed", "x")
    missing = "0" * 32
    with pytest.raises(NotFound) as hidden:
        store.mark_notification_read(mine.id, "mallory")
    with pytest.raises(NotFound) as absent:
        store.mark_notification_read(missing, "mallory")
    assert hidden.value.status == absent.value.status == 404
    assert hidden.value.message.replace(mine.id, missing) == absent.value.message
    with pytest.raises(NotFound):
        store.mark_notification_read("../" + mine.id, "alice")
    assert store.list_notifications("alice").notifications[0].read_at is None


def test_notification_input_is_checked(store):
    with pytest.raises(Invalid, match="not 'skipped'"):
        store.add_notification("alice", None, None, "skipped", "x")
    with pytest.raises(Invalid, match="user name"):
        store.add_notification("", None, None, "failed", "x")
    with pytest.raises(NotFound, match="no job"):
        store.add_notification("alice", "0" * 32, None, "failed", "x")
    long = store.add_notification("alice", None, None, "orphaned", "y" * (MAX_MESSAGE + 10))
    assert len(long.message) == MAX_MESSAGE and long.message.endswith("…")


def test_deleting_a_job_deletes_its_notifications(store):
    job = make_job(store)
    other = make_job(store, name="other")
    store.add_notification("alice", job.id, None, "failed", "gone with the job")
    kept = store.add_notification("alice", other.id, None, "failed", "stays")
    store.delete_job(job.id, "alice")
    with Session(store.engine) as session:
        assert session.scalars(select(Notification.id)).all() == [kept.id]
