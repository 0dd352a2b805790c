"""Retention of run outputs: which finished runs' files a job's policy lets go.

A job's ``keep_runs`` and ``keep_days`` bound how many run outputs it keeps
and for how long. The service asks :meth:`Retention.expired_outputs`
which runs are past them, deletes their files itself (through the one path
resolver, SECURITY rule 1: this module never touches files), then records it
with :meth:`Retention.mark_outputs_deleted`.

Requirements and how they are met:

- **History stays.** Only outputs go: the run's row, with its status,
  reason, parameters and digests, is kept, and ``outputs_deleted_at`` says
  when its files were deleted.
- **``keep_runs`` counts outputs, not rows.** The newest ``keep_runs``
  finished runs *that still have outputs* are kept; a skipped tick or a run
  cancelled before it started (no files) does not push a real output out.
- **Nothing in progress is touched.** Only runs in a final status qualify,
  and :meth:`~Retention.mark_outputs_deleted` re-checks that in SQL, so
  a wrong id cannot clear the paths of a running run.
- **Deleting files twice is harmless; recording it twice is not done.** A
  crash between deleting files and marking them leaves the runs listed
  again next time; marking an already marked run keeps its first time.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import sessionmaker

from .convert import describe_run
from .errors import NotFound
from .models import DescribeRun
from .orm import FINAL_STATUSES, Job, Run
from .queueing import RunQueue, is_id

#: Runs marked per UPDATE statement (bound parameters stay well under every limit).
MARK_BATCH = 500


class Retention:
    """Expired outputs, a part of :class:`~.store.JobStore`; see the module docstring."""

    def __init__(self, read: sessionmaker, write: sessionmaker, queue: RunQueue):
        self._read, self._write, self.queue = read, write, queue

    def expired_outputs(self, job_id: str, *, now: datetime | None = None) -> list[DescribeRun]:
        """Return the finished runs of a job whose outputs its retention lets go.

        A finished run with outputs (``output_path`` or ``log_path`` set, not
        yet deleted) has expired when it is not among the job's newest
        ``keep_runs`` such runs, or when it ended more than ``keep_days``
        days before ``now``. A job with neither setting keeps everything.

        Parameters
        ----------
        job_id : str
            The job (no access check: this is for the service).
        now : datetime, optional
            The time ages are measured at (None: the store's clock).

        Returns
        -------
        list of DescribeRun
            Oldest first, with the paths to delete.

        Raises
        ------
        NotFound
            No such job.
        """
        now = self.queue.now(now)
        with self._read.begin() as session:
            job = session.get(Job, job_id) if is_id(job_id) else None
            if job is None:
                raise NotFound(f"no job {job_id!r}")
            if job.keep_runs is None and job.keep_days is None:
                return []
            runs = session.scalars(
                select(Run)
                .where(
                    Run.job_id == job.id,
                    Run.status.in_(FINAL_STATUSES),
                    Run.outputs_deleted_at.is_(None),
                    or_(Run.output_path.is_not(None), Run.log_path.is_not(None)),
                )
                .order_by(Run.ended_at.desc(), Run.id.desc())
            ).all()
            cutoff = now - timedelta(days=job.keep_days) if job.keep_days is not None else None
            expired = [
                run
                for rank, run in enumerate(runs)
                if (job.keep_runs is not None and rank >= job.keep_runs)
                or (cutoff is not None and (run.ended_at or run.queued_at) < cutoff)
            ]
            return [describe_run(run) for run in reversed(expired)]

    def mark_outputs_deleted(self, run_ids: Iterable[str], *, now: datetime | None = None) -> None:
        """Record that the outputs of finished runs were deleted; their records stay.

        Sets ``outputs_deleted_at`` and clears ``output_path`` and
        ``log_path``. Runs that are not finished, already marked, or do not
        exist are left as they are.

        Parameters
        ----------
        run_ids : iterable of str
            The runs whose files the service deleted.
        now : datetime, optional
            When (None: the store's clock).
        """
        now = self.queue.now(now)
        ids = sorted({run_id for run_id in run_ids if is_id(run_id)})
        if not ids:
            return
        with self._write.begin() as session:
            for start in range(0, len(ids), MARK_BATCH):
                statement = (
                    update(Run)
                    .where(
                        Run.id.in_(ids[start : start + MARK_BATCH]),
                        Run.status.in_(FINAL_STATUSES),
                        Run.outputs_deleted_at.is_(None),
                    )
                    .values(outputs_deleted_at=now, output_path=None, log_path=None)
                )
                session.execute(statement.execution_options(synchronize_session=False))
