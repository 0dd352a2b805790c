"""Firing triggers: the part of :class:`~..store.JobStore` that turns trigger events into runs.

Each kind says how it fires (:mod:`.base`); this part gives the kinds what
they need (the :class:`~..queueing.RunQueue`, the store's ``late_tolerance``)
and takes the calls that come from outside the store:

- :meth:`Firing.fire_due`, in every claim transaction: time-driven kinds
  (cron) queue their due ticks;
- :meth:`Firing.after_run`, in the transaction that records a run's end:
  kinds that follow runs (after_job) queue theirs;
- :meth:`Firing.fire_webhook`: a webhook called with a secret. A wrong
  secret, a missing job and a job without a webhook look the same to the
  caller;
- :meth:`Firing.fire_trigger`: a trigger the service watches itself (file),
  once per event ``tick``. Other kinds are refused: cron fires through the
  claims, webhooks with their secret, after_job when its upstream succeeds.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..convert import describe_run
from ..errors import Conflict, Invalid, NotFound
from ..models import DescribeRun
from ..orm import Job, Run, Trigger
from ..queueing import ID_RE, RunQueue
from . import KINDS
from .webhook import WebhookKind


class Firing:
    """Fire triggers; see the module docstring.

    Parameters
    ----------
    write : sessionmaker
        The store's writing sessions.
    queue : RunQueue
        Queues the runs, under the jobs' policies.
    late_tolerance : datetime.timedelta
        How late a time-driven tick may fire and still count as on time.
    """

    def __init__(self, write: sessionmaker, queue: RunQueue, late_tolerance: timedelta):
        self._write = write
        self.queue = queue
        self.late_tolerance = late_tolerance

    def fire_due(self, session: Session, now: datetime) -> None:
        """Queue the runs of every trigger due at ``now``, in the caller's transaction."""
        for kind in KINDS.values():
            kind.fire_due(self, session, now)

    def after_run(self, session: Session, job: Job, run: Run, now: datetime) -> None:
        """Queue what follows ``run`` of ``job`` (locked), in the caller's transaction."""
        for kind in KINDS.values():
            kind.after_run(self, session, job, run, now)

    def fire_webhook(self, job_id: str, secret: str, *, now: datetime | None = None) -> DescribeRun:
        """Queue a run of a job whose webhook was called with ``secret``.

        Raises
        ------
        NotFound
            No such job, no webhook trigger, or the wrong secret: all look the
            same, so the webhook reveals nothing to a guesser.
        Conflict
            The job is paused. (A run the concurrency policy ``forbid``
            refuses is returned, ``skipped``.)
        """
        now = self.queue.now(now)
        with self._write.begin() as session:
            job = self.queue.lock_job(session, job_id) if ID_RE.match(job_id or "") else None
            trigger = (
                next((t for t in job.triggers if t.kind == WebhookKind.name), None) if job else None
            )
            if not WebhookKind.accepts(trigger, secret):
                raise NotFound(f"no job {job_id!r} with that webhook secret")
            return describe_run(self._fire(session, job, trigger, now, "webhook called"))

    def fire_trigger(
        self,
        trigger_id: str,
        reason: str,
        *,
        tick: datetime | None = None,
        parameters: dict[str, Any] | None = None,
        now: datetime | None = None,
    ) -> DescribeRun:
        """Queue a run for a trigger the service watches itself (``file``).

        Parameters
        ----------
        trigger_id : str
            The trigger that fired.
        reason : str
            Shown on the run (e.g. which file changed).
        tick : datetime, optional
            A key for the event (e.g. the file's modification time): firing the
            same trigger twice for the same tick queues one run, so a watcher
            restarted over an unchanged file does not run the job again.

        Returns
        -------
        DescribeRun
            The run queued, or ``skipped`` when the concurrency policy
            ``forbid`` refused it, or the earlier run of the same ``tick``.

        Raises
        ------
        NotFound
            No such trigger.
        Invalid
            Not a trigger the service fires (a file trigger).
        Conflict
            The job is paused.
        """
        now = self.queue.now(now)
        with self._write.begin() as session:
            found = session.get(Trigger, trigger_id)
            job = self.queue.lock_job(session, found.job_id) if found else None
            trigger = session.get(Trigger, trigger_id) if job else None
            if trigger is None:
                raise NotFound(f"no trigger {trigger_id!r}")
            if not KINDS[trigger.kind].fired_by_service:
                watched = " or ".join(k.name for k in KINDS.values() if k.fired_by_service)
                raise Invalid(
                    f"trigger {trigger_id} is a {trigger.kind} trigger, not a {watched} trigger"
                )
            if tick is not None:
                earlier = session.scalars(
                    select(Run).where(
                        Run.trigger_id == trigger.id, Run.tick == tick, Run.attempt == 1
                    )
                ).first()
                if earlier is not None:
                    return describe_run(earlier)
            return describe_run(
                self._fire(session, job, trigger, now, reason, tick=tick, parameters=parameters)
            )

    def _fire(
        self,
        session: Session,
        job: Job,
        trigger: Trigger,
        now: datetime,
        reason: str,
        tick: datetime | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> Run:
        if job.paused:
            raise Conflict(f"job {job.name!r} is paused")
        run = self.queue.queue(
            session, job, now, reason, trigger=trigger, tick=tick, parameters=parameters
        )
        if run is None:
            raise Conflict(f"trigger {trigger.id} already fired for this event")
        trigger.last_fired_at = now
        return run
