"""The worker side of the store: claiming due ticks and queued runs, and their life.

Workers call :meth:`Workers.claim_due`, then :meth:`~Workers.start_run`,
:meth:`~Workers.heartbeat` (or :meth:`~Workers.record_progress`, which
counts as one) while executing, and :meth:`~Workers.finish_run`; the
service calls :meth:`~Workers.recover_orphans` at start and periodically,
and reads a run's job with :meth:`~Workers.get_job_for_worker`.

Requirements and how they are met:

- **A cron tick runs at most once** (SECURITY rule 7). ``claim_due`` has
  the cron kind (:mod:`.triggers.cron`, through
  :meth:`~.triggers.firing.Firing.fire_due`) read the due triggers *and
  lock them* in the same transaction that inserts their runs and advances
  ``next_fire_at``: ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL (a
  second worker skips what the first holds, and re-reads a committed row as
  no longer due), ``BEGIN IMMEDIATE`` on SQLite (one writer at a time).
  Underneath, ``UNIQUE (trigger_id, tick, attempt)`` rejects a second
  first attempt whatever the code above does.
- **A crash leaves nothing in progress forever.** Workers heartbeat their
  runs; ``recover_orphans`` turns runs without a recent heartbeat into
  ``orphaned`` and queues the next attempt after the job's backoff while
  retries remain.
- **A restarted process recovers its own runs at once.** Each process holds
  the lease of its *identity* (``SchedulerService.instance_id``: one live
  process per identity, stable across restarts) in ``scheduler_workers``.
  :meth:`Workers.take_over` hands the lease to the new process and, in
  the same transaction, orphans and retries the runs the previous holder's
  worker id had claimed: that process is dead, so there is no heartbeat to
  wait for. Runs of other identities (other live replicas) are not touched;
  theirs are recovered by ``recover_orphans`` when their heartbeats stop.
- **A forbid job never runs twice at once**, however many workers claim:
  claims lock the jobs too, and ``start_run`` checks again under the lock.

Rejected alternatives: an in-memory scheduler (APScheduler and friends) loses
ticks on restart and double-fires with two replicas; advisory locks per job
would serialise claims but leave the tick itself unprotected.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased, sessionmaker

from .convert import describe_job, describe_run
from .errors import Conflict, Invalid, NotFound
from .models import DescribeJob, DescribeRun, RunStatus
from .orm import Job, Run, SchedulerWorker
from .queueing import ACTIVE, RunQueue, is_id
from .triggers.firing import Firing

log = logging.getLogger(__name__)

#: What :meth:`Workers.finish_run` accepts.
FINISH_STATUSES = ("succeeded", "failed", "cancelled", "timed_out")


class Workers:
    """What workers call, a part of :class:`~.store.JobStore`; see the module docstring.

    Parameters
    ----------
    read, write : sessionmaker
        The store's reading and writing sessions.
    queue : RunQueue
        Queues runs (retries) under the jobs' policies.
    firing : Firing
        Fires the triggers due in each claim, and those that follow a run's end.
    """

    def __init__(self, read: sessionmaker, write: sessionmaker, queue: RunQueue, firing: Firing):
        self._read, self._write, self.queue, self.firing = read, write, queue, firing

    def claim_due(self, now: datetime | None, worker_id: str, limit: int = 10) -> list[DescribeRun]:
        """Turn due cron ticks into runs, then claim up to ``limit`` queued runs for a worker.

        Everything happens in one transaction: each due trigger is locked,
        its run inserted and its ``next_fire_at`` advanced together, so a tick
        makes exactly one run however many workers call this at once, and a
        crash in the middle makes none (the next call makes it). Missed ticks
        follow the job's missed-run policy:

        - ``skip``: a tick later than ``late_tolerance`` is recorded as
          ``skipped``; the job next runs at its next future tick.
        - ``run_once``: one run, for the latest missed tick.

        Claimed runs are those whose ``not_before`` has come, oldest first,
        never two of a ``forbid`` job at once. The worker must then call
        :meth:`start_run`; a claim without a start is released by
        :meth:`recover_orphans`.

        Parameters
        ----------
        now : datetime or None
            The time to schedule at (None: the store's clock).
        worker_id : str
            Who claims: recorded on the runs, checked by :meth:`start_run`.
        limit : int
            The most runs to claim (0 only fires due ticks).

        Returns
        -------
        list of DescribeRun
            The runs claimed, ``queued`` and ``claimed_by`` the worker.
        """
        now = self.queue.now(now)
        with self._write.begin() as session:
            self.firing.fire_due(session, now)
            if limit <= 0:
                return []
            return [describe_run(r) for r in self._claim_queued(session, now, worker_id, limit)]

    def _claim_queued(
        self, session: Session, now: datetime, worker_id: str, limit: int
    ) -> list[Run]:
        other = aliased(Run)
        # "status IN (...)" beside the job's id matches the partial index of the
        # active runs (``ix_runs_active_job_id``), so the database reads a job's few
        # active runs; with the statuses in one OR and no such index, PostgreSQL
        # scanned every queued run for each candidate, seconds once thousands were
        # queued (bench/scale.py)
        busy = (
            exists()
            .where(
                other.job_id == Run.job_id,
                other.status.in_(("running", "queued")),
                other.id != Run.id,
            )
            .where(or_(other.status == "running", other.claimed_by.is_not(None)))
        )
        candidates = session.scalars(
            select(Run)
            .join(Job, Run.job_id == Job.id)
            .where(
                Run.status == "queued",
                Run.claimed_by.is_(None),
                Run.not_before <= now,
                or_(Job.concurrency_policy != "forbid", ~busy),
            )
            .order_by(Run.not_before, Run.queued_at, Run.id)
            .limit(limit)
            # Locking the jobs too keeps two workers from claiming two runs of one
            # forbid job (each would skip the other's locked run and see no claim).
            .with_for_update(skip_locked=True, of=(Run.__table__, Job.__table__))
            .execution_options(populate_existing=True)
        ).all()
        policies = dict(
            session.execute(
                select(Job.id, Job.concurrency_policy).where(
                    Job.id.in_({r.job_id for r in candidates})
                )
            ).all()
        )
        # The query above judged "busy" on a snapshot taken before its locks were
        # granted; now that this transaction holds the jobs' locks, look again.
        forbid = {job_id for job_id, policy in policies.items() if policy == "forbid"}
        busy_now = set(
            session.scalars(
                select(Run.job_id).where(
                    Run.job_id.in_(forbid),
                    Run.status.in_(("running", "queued")),
                    Run.id.not_in([r.id for r in candidates]),
                    or_(Run.status == "running", Run.claimed_by.is_not(None)),
                )
            )
        )
        claimed, taken = [], set()
        for run in candidates:
            if run.job_id in forbid:
                if run.job_id in busy_now or run.job_id in taken:
                    continue
                taken.add(run.job_id)
            run.claimed_by, run.heartbeat_at = worker_id, now
            claimed.append(run)
        return claimed

    def start_run(self, run_id: str, worker_id: str, *, now: datetime | None = None) -> DescribeRun:
        """Mark a queued run ``running`` for ``worker_id``, who is about to execute it.

        Raises
        ------
        NotFound
            No such run.
        Conflict
            The run is not queued, is claimed by another worker, was cancelled
            before it started, or its job is ``forbid`` and another run of it
            is running (the claim is then released, for a later start). The
            worker must then not execute it.
        """
        now = self.queue.now(now)
        refused = None
        with self._write.begin() as session:
            found = session.get(Run, run_id)
            if found is None or self.queue.lock_job(session, found.job_id) is None:
                raise NotFound(f"no run {run_id!r}")
            run = self.queue.lock_run(session, run_id)
            job = session.get(Job, run.job_id)
            if run.status != "queued":
                raise Conflict(f"run {run.id} is {run.status}, not queued")
            if run.claimed_by not in (None, worker_id):
                raise Conflict(f"run {run.id} is claimed by worker {run.claimed_by!r}")
            other = None
            if job.concurrency_policy == "forbid":
                other = session.scalars(
                    select(Run.id).where(
                        Run.job_id == job.id, Run.status == "running", Run.id != run.id
                    )
                ).first()
            if run.cancel_requested_at is not None:
                run.status, run.ended_at = "cancelled", now
                refused = Conflict(f"run {run.id} was cancelled before it started")
            elif other is not None:
                # Released (committed below) so that any worker may start it later.
                run.claimed_by = run.heartbeat_at = None
                refused = Conflict(
                    f"run {other} of job {job.name!r} is running and its concurrency "
                    "policy is forbid"
                )
            else:
                run.status, run.claimed_by = "running", worker_id
                run.started_at = run.heartbeat_at = now
            described = describe_run(run)
        if refused is not None:
            raise refused
        return described

    def heartbeat(self, run_id: str, worker_id: str, *, now: datetime | None = None) -> DescribeRun:
        """Record that ``worker_id`` is still executing a run.

        Returns
        -------
        DescribeRun
            When ``cancel_requested_at`` is set, the worker must stop the run
            and report it with :meth:`finish_run` as ``cancelled``.

        Raises
        ------
        NotFound
            No such run.
        Conflict
            The run is no longer this worker's to run (orphaned, finished, or
            claimed by another): the worker must stop it.
        """
        now = self.queue.now(now)
        with self._write.begin() as session:
            run = self.queue.lock_run(session, run_id)
            if run is None:
                raise NotFound(f"no run {run_id!r}")
            if run.status != "running" or run.claimed_by != worker_id:
                raise Conflict(
                    f"run {run.id} is {run.status} (worker {run.claimed_by!r}): stop executing it"
                )
            run.heartbeat_at = now
            return describe_run(run)

    def record_progress(
        self,
        run_id: str,
        worker_id: str,
        cells_done: int,
        cells_total: int,
        *,
        now: datetime | None = None,
    ) -> None:
        """Record how far ``worker_id`` has got executing a run; it counts as a heartbeat.

        Parameters
        ----------
        run_id, worker_id : str
            The run, and the worker executing it.
        cells_done, cells_total : int
            Code cells executed so far, and in all (``0 <= cells_done <= cells_total``).

        Raises
        ------
        Invalid
            The counts are negative, or more cells done than there are.
        NotFound
            No such run.
        Conflict
            The run is not running, or not for this worker: the worker must
            stop it (as for :meth:`heartbeat`).
        """
        now = self.queue.now(now)
        counts = (cells_done, cells_total)
        if any(isinstance(n, bool) or not isinstance(n, int) for n in counts) or not (
            0 <= cells_done <= cells_total
        ):
            raise Invalid(
                f"progress must be whole numbers with 0 <= cells_done <= cells_total, not "
                f"{cells_done!r} of {cells_total!r}"
            )
        with self._write.begin() as session:
            run = self.queue.lock_run(session, run_id) if is_id(run_id) else None
            if run is None:
                raise NotFound(f"no run {run_id!r}")
            if run.status != "running" or run.claimed_by != worker_id:
                raise Conflict(
                    f"run {run.id} is {run.status} (worker {run.claimed_by!r}): stop executing it"
                )
            run.cells_done, run.cells_total = cells_done, cells_total
            run.heartbeat_at = now

    def get_job_for_worker(self, job_id: str) -> DescribeJob:
        """Return a job without an access check, for the service's own use.

        The service reads a run's job with it to apply what the job says
        about the run's end (``notify``, ``keep_runs``/``keep_days``,
        ``output_formats``). Never call it on a user's behalf: the user-facing
        :meth:`~.store.JobStore.get_job` hides other users' jobs.

        Raises
        ------
        NotFound
            No such job (it may have been deleted since the run was queued).
        """
        with self._read.begin() as session:
            job = session.get(Job, job_id) if is_id(job_id) else None
            if job is None:
                raise NotFound(f"no job {job_id!r}")
            return describe_job(job)

    def finish_run(
        self,
        run_id: str,
        status: RunStatus | Enum | str,
        reason: str = "",
        *,
        worker_id: str | None = None,
        output_path: str | None = None,
        log_path: str | None = None,
        env_digest: str | None = None,
        mlflow_run_id: str | None = None,
        recorded: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> DescribeRun:
        """Record how a run ended; queue its retry or the jobs that run after it.

        A ``failed`` or ``timed_out`` run with retries left queues attempt + 1
        after the job's backoff. A ``succeeded`` run queues a run of every
        unpaused job with an ``after_job`` trigger on this job.

        Parameters
        ----------
        run_id : str
            The run.
        status : RunStatus, enum or str
            ``succeeded``, ``failed``, ``cancelled`` or ``timed_out`` (an
            executor's ``RunReport.status`` is accepted as is). A queued
            run may only be finished as ``cancelled``.
        reason : str
            Why (for a failure: the cell and error papermill reported).
        worker_id : str, optional
            When given, the run must be this worker's.
        output_path, log_path, env_digest, mlflow_run_id : str, optional
            Where the outputs are and what produced them.
        recorded : mapping, optional
            What a pipeline step's run recorded (``outputs``, ``files``), read by the
            worker: the pipeline run takes it in the same transaction.

        Raises
        ------
        Invalid
            ``status`` is not a final status a worker reports.
        NotFound
            No such run.
        Conflict
            The run already ended (e.g. declared orphaned), or belongs to
            another worker.
        """
        now = self.queue.now(now)
        # Any str enum (the executors' RunStatus too) counts by value: str() of a
        # (str, Enum) member is "RunStatus.FAILED" before Python 3.12.
        status = status.value if isinstance(status, Enum) else str(status)
        if status not in FINISH_STATUSES:
            raise Invalid(
                f"a run is finished as one of {', '.join(FINISH_STATUSES)}, not {status!r}"
            )
        with self._write.begin() as session:
            found = session.get(Run, run_id)
            job = self.queue.lock_job(session, found.job_id) if found else None
            if job is None:
                raise NotFound(f"no run {run_id!r}")
            run = self.queue.lock_run(session, run_id)
            if run.status != "running" and not (run.status == "queued" and status == "cancelled"):
                raise Conflict(f"run {run.id} is {run.status}; it cannot become {status}")
            if worker_id is not None and run.claimed_by not in (None, worker_id):
                raise Conflict(f"run {run.id} belongs to worker {run.claimed_by!r}")
            run.status, run.ended_at = status, now
            if reason:
                run.reason = f"{run.reason}; {reason}" if run.reason else reason
            for name, value in (
                ("output_path", output_path),
                ("log_path", log_path),
                ("env_digest", env_digest),
                ("mlflow_run_id", mlflow_run_id),
            ):
                if value is not None:
                    setattr(run, name, value)
            assert run is not None  # locked above, in this transaction
            retry = self.queue.retry(session, job, run, now)
            self.queue.ended(session, job, run, retry, now, recorded)
            described = describe_run(run)
            self.firing.after_run(session, job, run, now)
        return described

    def recover_orphans(
        self, stale_after: timedelta, *, now: datetime | None = None
    ) -> list[DescribeRun]:
        """Declare runs whose worker went silent ``orphaned``, and retry them if allowed.

        Call it when a scheduler starts and then periodically. A ``running``
        run without a heartbeat for ``stale_after`` becomes ``orphaned``; while
        its attempt is within the job's ``retry_attempts``, attempt + 1 is
        queued, claimable after the job's backoff. A ``queued`` run claimed by
        a worker that never started it is released for another worker.

        Parameters
        ----------
        stale_after : datetime.timedelta
            How long without a heartbeat means the worker is gone; several
            heartbeat intervals.

        Returns
        -------
        list of DescribeRun
            The runs now ``orphaned``.
        """
        now = self.queue.now(now)
        cutoff = now - stale_after
        stale = or_(Run.heartbeat_at.is_(None), Run.heartbeat_at < cutoff)

        def note(run: Run) -> str:
            last = run.heartbeat_at.isoformat() if run.heartbeat_at else "never"
            return (
                f"orphaned: no heartbeat from worker {run.claimed_by!r} since {last} "
                f"(stale after {int(stale_after.total_seconds())} s)"
            )

        with self._write.begin() as session:
            return self._orphan(session, stale, now, note, skip_locked=True)

    def _orphan(
        self,
        session: Session,
        which: ColumnElement[bool],
        now: datetime,
        note: Callable[[Run], str],
        *,
        skip_locked: bool,
    ) -> list[DescribeRun]:
        """Orphan (and retry) the running runs ``which`` selects; release its queued claims."""
        orphaned: list[DescribeRun] = []
        job_ids = sorted(
            set(
                session.scalars(
                    select(Run.job_id).where(
                        which,
                        or_(
                            Run.status == "running",
                            and_(Run.status == "queued", Run.claimed_by.is_not(None)),
                        ),
                    )
                )
            )
        )
        for job_id in job_ids:  # lock order: job ids
            job = self.queue.lock_job(session, job_id, skip_locked=skip_locked)
            if job is None:  # being changed right now (or deleted): next time
                continue
            runs = session.scalars(
                select(Run)
                .where(Run.job_id == job_id, Run.status.in_(ACTIVE), which)
                .order_by(Run.id)
                .with_for_update()
                .execution_options(populate_existing=True)
            ).all()
            for run in runs:
                if run.status == "queued":
                    if run.claimed_by is not None:
                        log.warning("Releasing run %s claimed by %s", run.id, run.claimed_by)
                        run.claimed_by = run.heartbeat_at = None
                    continue
                why = note(run)
                run.status, run.ended_at = "orphaned", now
                run.reason = f"{run.reason}; {why}" if run.reason else why
                retry = self.queue.retry(session, job, run, now)
                self.queue.ended(session, job, run, retry, now)
                orphaned.append(describe_run(run))
        return orphaned

    # ------------------------------------------------------------ leases

    def take_over(
        self,
        identity: str,
        worker_id: str,
        *,
        stale_after: timedelta,
        alive: Callable[[str], bool] | None = None,
        now: datetime | None = None,
    ) -> list[DescribeRun]:
        """Hold ``identity``'s lease for ``worker_id``; recover its previous holder's runs now.

        A process calls it when it starts, before it claims anything. The
        process that held the identity before is dead (one live process per
        identity is the contract of ``instance_id``), so its running runs
        become ``orphaned`` and are retried under the jobs' policies, and
        its queued claims are released, in the same transaction that moves
        the lease: two processes starting at once cannot both recover them.

        Parameters
        ----------
        identity : str
            The process's stable identity (``SchedulerService.instance_id``).
        worker_id : str
            This process's worker id (what its runs' ``claimed_by`` will say).
        stale_after : datetime.timedelta
            A lease not renewed for this long is dead, whatever ``alive`` says.
        alive : callable, optional
            ``alive(previous_worker_id)``: whether the previous holder is
            certainly still running (a live process on this machine). A fresh
            lease held by a live process is refused rather than taken.

        Returns
        -------
        list of DescribeRun
            The runs now ``orphaned``.

        Raises
        ------
        Conflict
            Another live process holds ``identity``: two processes were given one.
        """
        now = self.queue.now(now)
        if not identity or len(identity) > 255:
            raise Invalid("a scheduler identity is 1 to 255 characters")
        with self._write.begin() as session:
            # insert-if-missing, then lock: a second process starting at the same
            # moment waits here for the first's commit, then sees its worker id
            insert = (
                postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert
            )
            session.execute(
                insert(SchedulerWorker)
                .values(identity=identity, worker_id=worker_id, started_at=now, renewed_at=now)
                .on_conflict_do_nothing(index_elements=["identity"])
            )
            lease = session.scalars(
                select(SchedulerWorker)
                .where(SchedulerWorker.identity == identity)
                .with_for_update()
                .execution_options(populate_existing=True)
            ).one()
            previous = lease.worker_id
            if previous == worker_id:
                return []
            if lease.renewed_at > now - stale_after and alive is not None and alive(previous):
                raise Conflict(
                    f"scheduler identity {identity!r} is held by {previous!r}, which is still "
                    "running: give each scheduler process its own SchedulerService.instance_id"
                )
            lease.worker_id, lease.started_at, lease.renewed_at = worker_id, now, now
            died = f"orphaned: its scheduler process {previous!r} died; {worker_id!r} took over"
            orphaned = self._orphan(
                session, Run.claimed_by == previous, now, lambda _run: died, skip_locked=False
            )
        if orphaned:
            log.warning(
                "Took over %s from %s: recovered %d run(s)", identity, previous, len(orphaned)
            )
        return orphaned

    def renew_lease(self, identity: str, worker_id: str, *, now: datetime | None = None) -> bool:
        """Renew ``worker_id``'s lease of ``identity``; False when another process took it over.

        A process that loses its lease must stop: its runs have been
        recovered by the process that took over (whose retries are running).
        """
        now = self.queue.now(now)
        with self._write.begin() as session:
            done = session.execute(
                update(SchedulerWorker)
                .where(SchedulerWorker.identity == identity, SchedulerWorker.worker_id == worker_id)
                .values(renewed_at=now)
            )
            return done.rowcount == 1
