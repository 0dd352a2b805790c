"""Holding claimed runs back: running counts per owner, and deferring a claimed run.

The service enforces per-group limits on how many runs execute at once
(the profiles' quotas) between :meth:`~.claims.Workers.claim_due` and
:meth:`~.claims.Workers.start_run`: it reads
:meth:`Quotas.running_counts_by_owner`, and a run over its owner's limit
goes back to the queue with :meth:`Quotas.defer_run` instead of starting.

Requirements and how they are met:

- **A deferred run says why it waits, once.** Its ``reason`` gets one
  ``waiting: ...`` note; deferring again replaces that note instead of
  appending another, so a run that waits for an hour does not carry sixty
  copies. The other notes (why it was queued, replacements, cancellation)
  stay.
- **A deferred run is anyone's again.** Its claim is released and
  ``not_before`` moved, so any worker may claim it once that time comes;
  nothing is held in memory.
- **A cancel is not lost.** A user's cancel of a claimed run only sets
  ``cancel_requested_at`` (the worker holds it); deferring such a run
  cancels it there and then, rather than letting it wait in the queue.

Known limit: the counts are read, then acted on. Two workers deciding at the
same moment for the same owner may both see room for one more run; the
quota is then exceeded by the runs decided in that moment, not more. Making
it exact needs the check inside ``start_run``'s transaction under a
per-owner lock.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from .convert import describe_run
from .errors import Conflict, Invalid, NotFound
from .models import DescribeRun
from .orm import Job, Run, Trigger
from .queueing import RunQueue, is_id

#: How a deferral note starts; notes in ``run.reason`` are joined by "; ".
WAITING = "waiting:"
#: The longest deferral note kept, in characters.
MAX_WAITING_NOTE = 1000


def _without_waiting(reason: str) -> list[str]:
    return [part for part in reason.split("; ") if part and not part.startswith(WAITING)]


def waiting_note(reason: str, note: str) -> str:
    """Return ``reason`` with its ``waiting:`` notes replaced by ``note``.

    Parameters
    ----------
    reason : str
        A run's reason: notes joined by ``"; "``.
    note : str
        Why the run waits; ``"waiting: "`` is prefixed unless it starts with it.
    """
    note = " ".join(note.split()).replace(";", ",")  # one line, one note
    if not note.startswith(WAITING):
        note = f"{WAITING} {note}"
    if len(note) > MAX_WAITING_NOTE:
        note = note[: MAX_WAITING_NOTE - 1] + "…"
    return "; ".join([*_without_waiting(reason), note])


class Quotas:
    """Running counts and deferral, a part of :class:`~.store.JobStore`; see the module doc."""

    def __init__(self, read: sessionmaker, write: sessionmaker, queue: RunQueue):
        self._read, self._write, self.queue = read, write, queue

    def running_counts_by_owner(self) -> dict[str, int]:
        """Return how many runs are ``running``, per owner of their job.

        Owners without a running run are left out. Runs claimed but not yet
        started are not counted.
        """
        stmt = (
            select(Job.owner, func.count(Run.id))
            .join(Run, Run.job_id == Job.id)
            .where(Run.status == "running")
            .group_by(Job.owner)
        )
        with self._read.begin() as session:
            return {owner: count for owner, count in session.execute(stmt)}

    def next_fires(self) -> list[tuple[str, str, str, datetime]]:
        """(owner, job name, profile, earliest pending cron tick) of each job not paused."""
        stmt = (
            select(Job.owner, Job.name, Job.profile, func.min(Trigger.next_fire_at))
            .join(Trigger, Trigger.job_id == Job.id)
            .where(Trigger.kind == "cron", Trigger.next_fire_at.is_not(None), Job.paused.is_(False))
            .group_by(Job.id, Job.owner, Job.name, Job.profile)
        )
        with self._read.begin() as session:
            rows = session.execute(stmt).all()
        return [(o, n, p, w if w.tzinfo else w.replace(tzinfo=timezone.utc)) for o, n, p, w in rows]

    def defer_run(
        self,
        run_id: str,
        worker_id: str,
        reason: str,
        not_before: datetime,
        *,
        now: datetime | None = None,
    ) -> DescribeRun:
        """Put a run ``worker_id`` claimed back in the queue until ``not_before``.

        The claim is released (``claimed_by`` and ``heartbeat_at`` become
        None), ``not_before`` is set, and ``reason`` replaces any earlier
        ``waiting:`` note of the run (other notes are kept).

        Parameters
        ----------
        run_id : str
            A queued run claimed by ``worker_id`` and not started.
        worker_id : str
            The worker that claimed it.
        reason : str
            Why it waits (e.g. ``"group 'students' has 2 of 2 runs running"``);
            stored as ``waiting: <reason>``.
        not_before : datetime
            When a worker may claim it again (timezone-aware).
        now : datetime, optional
            The time a cancelled run ends at (None: the store's clock).

        Returns
        -------
        DescribeRun
            The run, ``queued`` and unclaimed; or ``cancelled`` when its
            owner asked to cancel it while it was claimed.

        Raises
        ------
        Invalid
            ``reason`` is empty.
        NotFound
            No such run.
        Conflict
            The run is not queued, or not claimed by ``worker_id``.
        """
        now = self.queue.now(now)
        not_before = self.queue.now(not_before)  # checks it is timezone-aware
        if not reason or not reason.strip():
            raise Invalid("say why the run is deferred: reason is empty")
        with self._write.begin() as session:
            run = self.queue.lock_run(session, run_id) if is_id(run_id) else None
            if run is None:
                raise NotFound(f"no run {run_id!r}")
            if run.status != "queued" or run.claimed_by != worker_id:
                raise Conflict(
                    f"run {run.id} is {run.status} and claimed by {run.claimed_by!r}, not a "
                    f"queued run claimed by {worker_id!r}: only a claimed run can be deferred"
                )
            run.claimed_by = run.heartbeat_at = None
            if run.cancel_requested_at is not None:
                run.status, run.ended_at = "cancelled", now
                # Its reason already says who cancelled it; it no longer waits.
                run.reason = "; ".join(_without_waiting(run.reason))
            else:
                run.not_before = not_before
                run.reason = waiting_note(run.reason, reason)
            return describe_run(run)
