"""The scheduler's core: jobs with their notebook snapshots, triggers, and the life of runs.

:class:`JobStore` is what the scheduler service calls (from a thread pool: it
is synchronous, and DB work must not block the event loop, STYLE rule 13) and
what its workers call to claim, start, heartbeat and finish runs. It holds no
state of its own beyond the database and the :class:`~.snapshots.SnapshotStore`,
so any number of service processes can share one database.

This module holds the user-facing side: jobs, and runs as users see, start
and cancel them. The rest is split by concern into parts, each a small
object that :class:`JobStore` makes and holds, given the sessionmakers and
whatever else it needs in its constructor (no state shared behind their
backs), each module saying why it is as it is:

- :mod:`.queueing` (``store.queue``): queueing a run under the concurrency
  and retry policies, the lock order and the clock; every other part is
  given it;
- :mod:`.triggers.firing` (``store.firing``): firing triggers, through
  the kinds of :mod:`.triggers` (one module per kind);
- :mod:`.claims` (``store.workers``): the worker side (claiming due ticks
  and queued runs, start, heartbeat and progress, finish, orphan recovery,
  leases);
- :mod:`.quotas` (``store.quotas``): holding claimed runs back (per-owner
  running counts, deferral);
- :mod:`.retention` (``store.retention``): which runs' outputs the job's
  retention lets go;
- :mod:`.notifications` (``store.notifications``): messages to users about
  runs that ended;
- :mod:`.convert`: rows to API models, and page tokens;
- :mod:`.snapshots` and :mod:`.cron`: notebook bytes and cron arithmetic.

The parts' public methods are also the store's (``store.claim_due`` is
``store.workers.claim_due``, see :class:`_Part`), so the service, its
workers and handlers call one object.

Requirements met here:

- **Others' jobs look missing** (SECURITY rule 3): every user-facing method
  takes ``user, groups, admin`` and raises the same :class:`~.errors.NotFound`
  for a hidden job as for a missing one. A job shared with one of the user's
  groups is readable; changing it is :class:`~.errors.Forbidden`.
- **What runs is what was scheduled.** Notebooks are stored by content
  (:class:`~.snapshots.SnapshotStore`); a job points at a digest, and a run
  copies the digest, parameters, profile and timeout it was queued with.
  Editing the notebook in the user's home changes nothing until
  :meth:`JobStore.update_job` is given the new bytes.

- **A page of jobs costs a page of rows** (#15, point 7): the database
  filters (ownership, sharing), orders by the ``(owner, name)`` unique index
  from the page token (a keyset cursor) and stops at the page size plus one,
  so listing is as cheap with 5,000 jobs as with 50. Reading every row and
  keeping the caller's in Python cost hundreds of milliseconds of GIL per page,
  which stalled the service's event loop for everyone.

Rejected alternative: a separate ``job_shares`` table, indexed by group. The
share list is small and read with the job; the database unnests it
(:meth:`JobStore._shared_with`) while it walks the ordered index.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, delete, func, or_, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from ..common.orm import utcnow
from .claims import Workers
from .convert import (
    decode_token,
    describe_job,
    describe_run,
    encode_token,
    notify_dict,
    notify_policy,
)
from .errors import Conflict, Forbidden, Invalid, NotFound
from .models import (
    CreateJob,
    CreateRun,
    DescribeJob,
    DescribeRun,
    ListJobsQuery,
    ListJobsResponse,
    ListRunsQuery,
    ListRunsResponse,
    NotifyPolicy,
    UpdateJob,
    UpdateJobResponse,
)
from .notifications import Notifications
from .orm import Job, Notification, Run, Trigger
from .pipelines.store import PipelineStore
from .queueing import ACTIVE, ID_RE, RunQueue, new_id
from .quotas import Quotas
from .retention import Retention
from .snapshots import SnapshotStore, check_notebook
from .triggers import KINDS, check_triggers, new_triggers, replace_triggers
from .triggers.firing import Firing

# Imported from here by the tests and older callers.
__all__ = ["JobStore", "SnapshotStore", "check_notebook"]


class _Part:
    """A store method that is a part's: ``claim_due = _Part("workers")``.

    ``store.claim_due`` then reads ``store.workers.claim_due``: the bound method of the part is returned as it is, with its signature
    and docstring, so help() and the docs show the real thing.
    """

    def __init__(self, part: str):
        self.part = part

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, store: Any, owner: type | None = None) -> Any:
        if store is None:
            return self
        return getattr(getattr(store, self.part), self.name)


class JobStore:
    """Jobs, triggers and runs in a database, with snapshots in a :class:`SnapshotStore`.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        From :func:`~.db.make_engine`, on a database :func:`~.db.upgrade` has migrated.
    snapshots : SnapshotStore
        Where notebook bytes are kept.
    clock : callable, optional
        Returns the current timezone-aware time; every method that takes
        ``now=None`` asks it.
    late_tolerance : datetime.timedelta
        How late a cron tick may be claimed and still count as on time. A
        tick later than this was *missed* and follows the job's missed-run
        policy (like Kubernetes CronJob's ``startingDeadlineSeconds``).
    """

    def __init__(
        self,
        engine: Engine,
        snapshots: SnapshotStore,
        *,
        clock: Callable[[], datetime] = utcnow,
        late_tolerance: timedelta = timedelta(minutes=5),
    ):
        self.engine = engine
        self.snapshots = snapshots
        self._read = sessionmaker(engine, expire_on_commit=False)
        # Writers take SQLite's write lock when they begin (see db.make_engine).
        self._write = sessionmaker(
            engine.execution_options(sqlite_begin="IMMEDIATE"), expire_on_commit=False
        )
        self.queue = RunQueue(clock)
        self.firing = Firing(self._write, self.queue, late_tolerance)
        self.workers = Workers(self._read, self._write, self.queue, self.firing)
        self.quotas = Quotas(self._read, self._write, self.queue)
        self.retention = Retention(self._read, self._write, self.queue)
        self.notifications = Notifications(self._read, self._write, self.queue)
        self.pipelines = PipelineStore(self._read, self._write, self.queue)

    # -- the parts' methods, called on the store by the service, its workers and handlers

    fire_webhook = _Part("firing")
    fire_trigger = _Part("firing")

    claim_due = _Part("workers")
    start_run = _Part("workers")
    heartbeat = _Part("workers")
    record_progress = _Part("workers")
    get_job_for_worker = _Part("workers")
    finish_run = _Part("workers")
    recover_orphans = _Part("workers")
    take_over = _Part("workers")
    renew_lease = _Part("workers")

    running_counts_by_owner = _Part("quotas")
    next_fires = _Part("quotas")
    defer_run = _Part("quotas")

    expired_outputs = _Part("retention")
    mark_outputs_deleted = _Part("retention")

    add_notification = _Part("notifications")
    list_notifications = _Part("notifications")
    mark_notification_read = _Part("notifications")

    # -- access

    @staticmethod
    def _visible(
        job: Job | None,
        job_id: str,
        user: str,
        groups: Collection[str],
        admin: bool,
        write: bool,
    ) -> Job:
        """Return ``job`` if the caller may see it (and change it, when ``write``)."""
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        if admin or job.owner == user:
            return job
        if set(groups) & set(job.shared_with_groups):
            if write:
                raise Forbidden(
                    f"job {job.name!r} is shared with you read-only; only {job.owner!r} can "
                    "change or run it"
                )
            return job
        raise NotFound(f"no job {job_id!r}")

    def _job_for(
        self,
        session: Session,
        job_id: str,
        user: str,
        groups: Collection[str],
        admin: bool,
        write: bool,
    ) -> Job:
        if not isinstance(job_id, str) or not ID_RE.match(job_id):
            raise NotFound(f"no job {job_id!r}")
        job = self.queue.lock_job(session, job_id) if write else session.get(Job, job_id)
        return self._visible(job, job_id, user, groups, admin, write)

    @staticmethod
    def _not_a_step(job: Job) -> Job:
        """A pipeline step's job changes and runs only through its pipeline."""
        if job.pipeline_id is not None:
            raise Conflict(
                f"job {job.name!r} is step {job.step!r} of a pipeline: change or run it "
                f"through the pipeline (api/pipelines/{job.pipeline_id})"
            )
        return job

    def _run_for(
        self,
        session: Session,
        run_id: str,
        user: str,
        groups: Collection[str],
        admin: bool,
        write: bool,
    ) -> tuple[Job, Run]:
        run = session.get(Run, run_id) if isinstance(run_id, str) and ID_RE.match(run_id) else None
        if run is None:
            raise NotFound(f"no run {run_id!r}")
        try:
            job = self._job_for(session, run.job_id, user, groups, admin, write)
        except NotFound:
            raise NotFound(f"no run {run_id!r}") from None
        if write:
            run = self.queue.lock_run(session, run_id)
        return job, run

    # -- jobs

    def create_job(
        self,
        owner: str,
        job: CreateJob,
        notebook_bytes: bytes,
        *,
        groups: Collection[str] = (),
        admin: bool = False,
        now: datetime | None = None,
    ) -> DescribeJob:
        """Create a job from a snapshot of ``notebook_bytes``.

        Parameters
        ----------
        owner : str
            The hub user who owns the job (and whose account runs it).
        job : CreateJob
            The validated request.
        notebook_bytes : bytes
            The .ipynb file as it is now; later edits of the source do not
            change the job until :meth:`update_job` is given new bytes.
        groups : collection of str
            The owner's hub groups: an ``after_job`` trigger may name a job
            shared with one of them.
        admin : bool
            Whether the caller is an admin (may chain after anyone's job).

        Returns
        -------
        DescribeJob
            With ``webhook_secret`` set if a webhook trigger was made: the only
            time the secret is shown.

        Raises
        ------
        Invalid
            The notebook is not a notebook, or an after_job upstream is unknown.
        Conflict
            The owner already has a job of that name.
        """
        now = self.queue.now(now)
        check_notebook(notebook_bytes)
        digest = self.snapshots.put(notebook_bytes)
        try:
            with self._write.begin() as session:
                check_triggers(session, None, owner, job.triggers, groups, admin)
                triggers, secret = new_triggers(job.triggers, now)
                row = Job(
                    id=new_id(),
                    owner=owner,
                    name=job.name,
                    notebook_digest=digest,
                    source_path=job.source_path,
                    parameters=job.parameters,
                    profile=job.profile,
                    timeout_seconds=job.timeout_seconds,
                    retry_attempts=job.retry_attempts,
                    retry_backoff_seconds=job.retry_backoff_seconds,
                    concurrency_policy=job.concurrency_policy.value,
                    missed_run_policy=job.missed_run_policy.value,
                    output_formats=job.output_formats,
                    shared_with_groups=job.shared_with_groups,
                    paused=job.paused,
                    notify=notify_dict(job.notify),
                    keep_runs=job.keep_runs,
                    keep_days=job.keep_days,
                    secrets=job.secrets,
                    created_at=now,
                    updated_at=now,
                    triggers=triggers,
                )
                session.add(row)
                session.flush()
                return describe_job(row, webhook_secret=secret)
        except IntegrityError:
            raise Conflict(f"you already have a job named {job.name!r}") from None

    def get_job(
        self, job_id: str, user: str, groups: Collection[str] = (), admin: bool = False
    ) -> DescribeJob:
        """Return a job the caller may see.

        Raises
        ------
        NotFound
            No such job, or another user's job not shared with ``groups``.
        """
        with self._read.begin() as session:
            job = self._job_for(session, job_id, user, groups, admin, write=False)
            return describe_job(job, read_only=not admin and job.owner != user)

    def list_jobs(
        self,
        user: str,
        groups: Collection[str] = (),
        admin: bool = False,
        query: ListJobsQuery | None = None,
    ) -> ListJobsResponse:
        """Return a page of the jobs the caller may see, ordered by owner and name."""
        query = query or ListJobsQuery()
        # One page, and one more row to know whether another page follows: the
        # database walks the (owner, name) unique index from the page token and
        # stops there, whatever the number of jobs (never load, filter and sort here).
        stmt = (
            select(Job)
            .options(selectinload(Job.triggers))
            .where(Job.pipeline_id.is_(None))  # a pipeline's steps are listed with it
            .order_by(Job.owner, Job.name)
            .limit(query.limit + 1)
        )
        if query.owner is not None:
            stmt = stmt.where(Job.owner == query.owner)
        if query.name_prefix:
            stmt = stmt.where(Job.name.startswith(query.name_prefix, autoescape=True))
        if query.paused is not None:
            stmt = stmt.where(Job.paused.is_(True) if query.paused else Job.paused.is_(False))
        if query.next_token:
            owner, name = decode_token(query.next_token, 2)
            stmt = stmt.where(tuple_(Job.owner, Job.name) > tuple_(owner, name))
        if not admin:
            if query.include_shared and groups:
                stmt = stmt.where(or_(Job.owner == user, self._shared_with(groups)))
            else:
                stmt = stmt.where(Job.owner == user)
        with self._read.begin() as session:
            jobs = session.scalars(stmt).all()
            more = len(jobs) > query.limit
            page = [
                describe_job(job, read_only=not admin and job.owner != user)
                for job in jobs[: query.limit]
            ]
        token = encode_token([page[-1].owner, page[-1].name]) if more else None
        return ListJobsResponse(jobs=page, next_token=token)

    def _shared_with(self, groups: Collection[str]) -> ColumnElement[bool]:
        """Whether a job's ``shared_with_groups`` names one of ``groups``, tested in SQL.

        The JSON list is unnested by the database's own function (SQLite's
        ``json_each``, PostgreSQL's ``json_array_elements_text``), so a page of
        shared jobs costs the database a filter, not this process a row per job.
        """
        unnest = (
            func.json_array_elements_text
            if self.engine.dialect.name == "postgresql"
            else func.json_each
        )
        names = unnest(Job.shared_with_groups).table_valued("value")
        return select(names.c.value).where(names.c.value.in_(sorted(set(groups)))).exists()

    def update_job(
        self,
        job_id: str,
        user: str,
        groups: Collection[str] = (),
        admin: bool = False,
        update: UpdateJob | None = None,
        notebook_bytes: bytes | None = None,
        *,
        now: datetime | None = None,
    ) -> UpdateJobResponse:
        """Change a job; only what ``update`` sends changes, and the version moves only then.

        Parameters
        ----------
        job_id, user, groups, admin
            The job and the caller; only its owner (or an admin) may change it.
        update : UpdateJob
            The fields to change; ``triggers`` replaces the list (triggers
            equal to a stored one keep their id, schedule and webhook secret).
        notebook_bytes : bytes, optional
            A new notebook snapshot.

        Returns
        -------
        UpdateJobResponse
            The job, the names of the fields that changed (``notebook_digest``
            for a new notebook) and whether the notebook changed.

        Raises
        ------
        NotFound, Forbidden
            The caller may not see, or may not change, the job.
        Conflict
            ``expected_version`` is stale, the new name is taken, or the job
            changed concurrently.
        """
        now = self.queue.now(now)
        update = update or UpdateJob()
        digest = None
        if notebook_bytes is not None:
            check_notebook(notebook_bytes)
            digest = self.snapshots.put(notebook_bytes)
        try:
            with self._write.begin() as session:
                job = self._not_a_step(
                    self._job_for(session, job_id, user, groups, admin, write=True)
                )
                if update.expected_version is not None and update.expected_version != job.version:
                    raise Conflict(
                        f"job {job.name!r} is at version {job.version}, not "
                        f"{update.expected_version}: someone changed it; reload and retry"
                    )
                changed: list[str] = []
                secret = None
                was_paused = job.paused
                # One UPDATE (one version step) per call: no flush half-way.
                with session.no_autoflush:
                    for field, value in update.changes().items():
                        if field == "triggers":
                            secret = replace_triggers(session, job, value, groups, admin, now)
                            if secret is not False:
                                changed.append(field)
                            continue
                        current = getattr(job, field)
                        if isinstance(value, NotifyPolicy):  # stored as a dict, every field
                            value = notify_dict(value)
                            # Compared with defaults filled in: ``{}`` (a job from before
                            # notifications) equals an explicit default policy.
                            current = notify_dict(notify_policy(current))
                        elif hasattr(value, "value"):  # enums are stored as their string
                            value = value.value
                        if current != value:
                            setattr(job, field, value)
                            changed.append(field)
                    notebook_changed = digest is not None and digest != job.notebook_digest
                    if notebook_changed:
                        job.notebook_digest = digest
                        changed.append("notebook_digest")
                    if was_paused and not job.paused:
                        # Ticks that passed while paused were not wanted: start from now.
                        for trigger in job.triggers:
                            KINDS[trigger.kind].schedule(trigger, now)
                if changed:
                    job.updated_at = now  # also bumps ``version`` (version_id_col)
                    session.flush()
                result = UpdateJobResponse(
                    job=describe_job(
                        job,
                        read_only=False,
                        webhook_secret=secret if isinstance(secret, str) else None,
                    ),
                    changed=sorted(changed),
                    notebook_changed=notebook_changed,
                )
        except StaleDataError:
            raise Conflict("the job changed while it was being updated: reload and retry") from None
        except IntegrityError:
            raise Conflict(f"you already have a job named {update.name!r}") from None
        return result

    def delete_job(
        self, job_id: str, user: str, groups: Collection[str] = (), admin: bool = False
    ) -> None:
        """Delete a job with its triggers, run records and notifications.

        Not its snapshot (other jobs may share it); its runs' output files
        are not touched here.

        Raises
        ------
        NotFound, Forbidden
            The caller may not see, or may not change, the job.
        Conflict
            A run is running: cancel it first, so no process outlives its record.
        """
        with self._write.begin() as session:
            job = self._not_a_step(self._job_for(session, job_id, user, groups, admin, write=True))
            running = session.scalars(
                select(Run.id).where(Run.job_id == job.id, Run.status == "running").limit(1)
            ).first()
            if running:
                raise Conflict(
                    f"job {job.name!r} has run {running} running: cancel it before deleting the job"
                )
            # SQL deletes, not session.delete(job): JupyterHub's orm module, imported by
            # every hub service, listens to *all* sessions for deleted objects and reads
            # their relationships, which Job.runs (lazy="raise") refuses
            for table, column in (
                (Notification, Notification.job_id),
                (Run, Run.job_id),
                (Trigger, Trigger.job_id),
                (Job, Job.id),
            ):
                statement = delete(table).where(column == job.id)
                session.execute(statement.execution_options(synchronize_session=False))

    # -- runs, for users

    def get_run(
        self, run_id: str, user: str, groups: Collection[str] = (), admin: bool = False
    ) -> DescribeRun:
        """Return a run of a job the caller may see.

        Raises
        ------
        NotFound
            No such run, or a run of a job the caller may not see.
        """
        with self._read.begin() as session:
            _, run = self._run_for(session, run_id, user, groups, admin, write=False)
            return describe_run(run)

    def list_runs(
        self,
        user: str,
        groups: Collection[str] = (),
        admin: bool = False,
        query: ListRunsQuery | None = None,
    ) -> ListRunsResponse:
        """Return a page of runs, newest first.

        With ``query.job_id``, the runs of that job (own, shared or, for
        admins, anyone's); without, the caller's own runs (admins: all runs).
        """
        query = query or ListRunsQuery()
        stmt = select(Run).order_by(Run.queued_at.desc(), Run.id.desc()).limit(query.limit + 1)
        if query.status is not None:
            stmt = stmt.where(Run.status == query.status.value)
        if query.next_token:
            queued_at, run_id = decode_token(query.next_token, 2)
            try:
                when = datetime.fromisoformat(queued_at)
            except ValueError:
                raise Invalid("next_token is not one this service issued") from None
            stmt = stmt.where(
                or_(Run.queued_at < when, and_(Run.queued_at == when, Run.id < run_id))
            )
        with self._read.begin() as session:
            if query.job_id is not None:
                self._job_for(session, query.job_id, user, groups, admin, write=False)
                stmt = stmt.where(Run.job_id == query.job_id)
            elif not admin:
                stmt = stmt.join(Job).where(Job.owner == user)
            runs = [describe_run(r) for r in session.scalars(stmt)]
        more = len(runs) > query.limit
        runs = runs[: query.limit]
        token = encode_token([runs[-1].queued_at.isoformat(), runs[-1].id]) if more else None
        return ListRunsResponse(runs=runs, next_token=token)

    def queue_manual_run(
        self,
        job_id: str,
        user: str,
        groups: Collection[str] = (),
        admin: bool = False,
        request: CreateRun | None = None,
        *,
        now: datetime | None = None,
    ) -> DescribeRun:
        """Queue a run now, with ``request.parameters`` over the job's.

        Raises
        ------
        NotFound, Forbidden
            The caller may not see, or may not run, the job.
        Conflict
            The job's concurrency policy is ``forbid`` and a run is in progress.
        """
        now = self.queue.now(now)
        request = request or CreateRun()
        with self._write.begin() as session:
            job = self._not_a_step(self._job_for(session, job_id, user, groups, admin, write=True))
            run = self.queue.queue(
                session,
                job,
                now,
                f"manual run by {user}",
                parameters=request.parameters,
                manual=True,
            )
            return describe_run(run)

    def cancel_run(
        self,
        run_id: str,
        user: str,
        groups: Collection[str] = (),
        admin: bool = False,
        *,
        now: datetime | None = None,
    ) -> DescribeRun:
        """Cancel a queued run, or ask its worker to stop a running one.

        Raises
        ------
        NotFound, Forbidden
            The caller may not see, or may not change, the run's job.
        Conflict
            The run has already ended.
        """
        now = self.queue.now(now)
        with self._write.begin() as session:
            _, run = self._run_for(session, run_id, user, groups, admin, write=True)
            if run.status not in ACTIVE:
                raise Conflict(f"run {run.id} has already ended ({run.status})")
            note = f"cancelled by {user}"
            if run.status == "queued" and run.claimed_by is None:
                run.status, run.ended_at = "cancelled", now
                job = session.get(Job, run.job_id)
                assert job is not None
                self.queue.ended(session, job, run, None, now)
            elif run.cancel_requested_at is None:
                run.cancel_requested_at = now
            run.reason = f"{run.reason}; {note}" if run.reason else note
            return describe_run(run)
