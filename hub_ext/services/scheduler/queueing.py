"""Queueing runs under a job's concurrency and retry policies; the locks that makes safe.

Every way a run comes to be (a cron tick, a manual run, a webhook, a file, an
upstream job, a retry) goes through :class:`RunQueue`, so the policies are
applied in one place:

- **Concurrency.** ``forbid`` with a run in progress records the new run as
  ``skipped`` (a manual run raises :class:`~.errors.Conflict`: the user is
  there to be told); ``replace`` cancels what is queued and asks what is
  running to stop; ``allow`` just queues.
- **Retries.** A run that ended failed, timed out or orphaned queues attempt
  + 1 after the job's backoff while retries remain.
- **Exactly once per tick.** ``UNIQUE (trigger_id, tick, attempt)`` rejects
  a second run of a tick whatever the code above does; :meth:`RunQueue.insert`
  takes that in a savepoint, so one bad path cannot abort a whole claim.

Lock order, to keep PostgreSQL free of deadlocks: a transaction locks job
rows (in id order) before run rows. Inserting a run takes a key-share lock on
its job, so runs are only inserted under that job's lock.

It is an object rather than functions because the clock is per store:
:class:`~.store.JobStore` makes one and hands it to each of its parts
(jobs, workers, firing, quotas, retention, notifications), which hold no
other shared state.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .errors import Conflict
from .orm import Job, Run, Trigger

log = logging.getLogger(__name__)

#: What :func:`new_id` makes: ids from outside are checked against it before any query.
#: ``\Z``, not ``$``: ``$`` also matches before a trailing newline.
ID_RE = re.compile(r"^[0-9a-f]{32}\Z")
#: Statuses in which a run still occupies its job (the concurrency policy's "in progress").
ACTIVE = ("queued", "running")
#: Final statuses after which the job's retry policy queues another attempt.
RETRY_STATUSES = ("failed", "timed_out", "orphaned")


def new_id() -> str:
    """Return a new random id: 32 lowercase hex digits."""
    return uuid.uuid4().hex


def is_id(value: object) -> bool:
    """Return whether ``value`` is an id as :func:`new_id` makes them (check before querying)."""
    return isinstance(value, str) and ID_RE.match(value) is not None


class RunQueue:
    """Queue runs of locked jobs; the clock and locks every part of the store shares.

    Parameters
    ----------
    clock : callable
        Returns the current timezone-aware time; :meth:`now` asks it when
        given None.
    """

    #: ``hook(session, job, run, retry, now, recorded)`` for every run that ends
    ended_hooks: list[Callable[..., None]]

    def __init__(self, clock: Callable[[], datetime]):
        self.clock = clock
        self.ended_hooks = []
        #: ``start(session, job, now, reason, trigger, tick, parameters) -> Run | None``: what a
        #: trigger of a pipeline's trigger job does instead of queueing a run (pipelines/store.py)
        self.pipeline_start: Callable[..., Run | None] | None = None

    def now(self, now: datetime | None) -> datetime:
        """Return ``now`` (or the clock's time) in UTC; refuse a naive datetime."""
        now = self.clock() if now is None else now
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError(f"naive datetime {now!r}: pass a timezone-aware time")
        return now.astimezone(timezone.utc)

    @staticmethod
    def lock_job(session: Session, job_id: str, skip_locked: bool = False) -> Job | None:
        """Load a job row under ``FOR UPDATE`` (a no-op on SQLite, already serialised)."""
        stmt = select(Job).where(Job.id == job_id).with_for_update(skip_locked=skip_locked)
        return session.scalars(stmt.execution_options(populate_existing=True)).one_or_none()

    @staticmethod
    def lock_run(session: Session, run_id: str) -> Run | None:
        stmt = select(Run).where(Run.id == run_id).with_for_update()
        return session.scalars(stmt.execution_options(populate_existing=True)).one_or_none()

    def insert(self, session: Session, run: Run) -> Run | None:
        """Insert ``run`` in a savepoint; return None if its (trigger, tick, attempt) exists.

        The locks taken by the callers make a duplicate impossible; this is
        the backstop that keeps one bad path from aborting a whole claim.
        """
        try:
            with session.begin_nested():
                session.add(run)
        except IntegrityError:
            log.warning(
                "Run of trigger %s for tick %s attempt %s already exists; not queued twice",
                run.trigger_id,
                run.tick,
                run.attempt,
            )
            return None
        return run

    def new_run(
        self,
        job: Job,
        now: datetime,
        reason: str,
        *,
        trigger: Trigger | None = None,
        tick: datetime | None = None,
        parameters: dict[str, Any] | None = None,
        status: str = "queued",
    ) -> Run:
        final = status != "queued"
        return Run(
            id=new_id(),
            job_id=job.id,
            job_version=job.version,
            trigger_id=trigger.id if trigger else None,
            tick=tick,
            status=status,
            attempt=1,
            reason=reason,
            parameters={**job.parameters, **(parameters or {})},
            notebook_digest=job.notebook_digest,
            profile=job.profile,
            timeout_seconds=job.timeout_seconds,
            queued_at=now,
            not_before=now,
            ended_at=now if final else None,
        )

    def queue(
        self,
        session: Session,
        job: Job,
        now: datetime,
        reason: str,
        *,
        trigger: Trigger | None = None,
        tick: datetime | None = None,
        parameters: dict[str, Any] | None = None,
        manual: bool = False,
    ) -> Run | None:
        """Queue a run of ``job`` (locked by the caller) under its concurrency policy.

        ``forbid`` with a run in progress records the run as ``skipped`` (a
        manual run raises :class:`Conflict` instead: the user is there to be
        told); ``replace`` cancels what is queued and asks what is running to
        stop.

        A pipeline's trigger job (``pipeline_id`` set, no ``step``) starts a run of its
        pipeline instead; the run returned is the firing's record.
        """
        if job.pipeline_id is not None and job.step is None:
            if self.pipeline_start is None:
                raise Conflict(f"job {job.name!r} starts a pipeline, and no pipelines run here")
            return self.pipeline_start(session, job, now, reason, trigger, tick, parameters)
        active = session.scalars(
            select(Run)
            .where(Run.job_id == job.id, Run.status.in_(ACTIVE))
            .order_by(Run.queued_at)
            .with_for_update()
        ).all()
        if active and job.concurrency_policy == "forbid":
            busy = active[0]
            if manual:
                raise Conflict(
                    f"job {job.name!r} has run {busy.id} {busy.status} and its concurrency "
                    "policy is 'forbid': wait for it, cancel it, or change the policy"
                )
            why = f"skipped: run {busy.id} is {busy.status} and the concurrency policy is forbid"
            return self.insert(
                session,
                self.new_run(job, now, why, trigger=trigger, tick=tick, status="skipped"),
            )
        run = self.new_run(job, now, reason, trigger=trigger, tick=tick, parameters=parameters)
        if active and job.concurrency_policy == "replace":
            for old in active:
                note = f"replaced by run {run.id} (concurrency policy replace)"
                if old.status == "queued" and old.claimed_by is None:
                    old.status, old.ended_at = "cancelled", now
                    old.reason = f"{old.reason}; {note}" if old.reason else note
                elif old.cancel_requested_at is None:
                    old.cancel_requested_at = now
                    old.reason = f"{old.reason}; {note}" if old.reason else note
        return self.insert(session, run)

    def retry(self, session: Session, job: Job, run: Run, now: datetime) -> Run | None:
        """Queue the next attempt of a run that ended in ``run.status``, if retries remain."""
        if run.status not in RETRY_STATUSES:
            return None
        if run.attempt > job.retry_attempts:
            if job.retry_attempts:
                run.reason += f"; no retries left ({job.retry_attempts} allowed)"
            return None
        reason = f"retry {run.attempt} of {job.retry_attempts}: run {run.id} {run.status}"
        backoff = timedelta(seconds=job.retry_backoff_seconds)
        return self.insert(session, self.next_attempt(run, now, reason, now + backoff))

    @staticmethod
    def next_attempt(run: Run, now: datetime, reason: str, not_before: datetime) -> Run:
        """The attempt after ``run``: what it ran (snapshot, parameters, limits), queued."""
        return Run(
            id=new_id(),
            job_id=run.job_id,
            job_version=run.job_version,
            trigger_id=run.trigger_id,
            tick=run.tick,
            status="queued",
            attempt=run.attempt + 1,
            retry_of=run.id,
            reason=reason,
            parameters=run.parameters,
            notebook_digest=run.notebook_digest,
            profile=run.profile,
            timeout_seconds=run.timeout_seconds,
            queued_at=now,
            not_before=not_before,
            pipeline_run_id=run.pipeline_run_id,
            step=run.step,
        )

    def ended(
        self,
        session: Session,
        job: Job,
        run: Run,
        retry: Run | None,
        now: datetime,
        recorded: Mapping[str, Any] | None = None,
    ) -> None:
        """Tell what follows runs (pipelines) that ``run`` ended, in the caller's transaction.

        ``retry`` is the attempt queued after it (None when none was); ``recorded`` what a
        pipeline step's run recorded (its outputs and files), read by the worker.
        """
        for hook in self.ended_hooks:
            hook(session, job, run, retry, now, recorded)
