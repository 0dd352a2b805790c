"""Cron triggers: a job runs at the ticks of a cron expression, read in a time zone.

The row keeps ``expression`` and ``timezone``, and ``next_fire_at`` (UTC):
:meth:`CronKind.schedule` sets it when the trigger is made and when its job
is resumed (ticks that passed while paused were not wanted), and every
claim (:meth:`~..claims.Workers.claim_due`) calls :meth:`CronKind.fire_due`
in its transaction, which turns the due ticks into runs. The arithmetic,
time zones included, is in :mod:`..cron`.

Requirements and how they are met:

- **A tick runs at most once** (SECURITY rule 7): the due triggers are read
  *and locked* (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, ``BEGIN
  IMMEDIATE`` on SQLite) in the transaction that inserts their runs and
  advances ``next_fire_at``; ``UNIQUE (trigger_id, tick, attempt)`` is the
  backstop.
- **Missed ticks follow the job's missed-run policy.** A tick claimed later
  than the store's ``late_tolerance`` was missed: ``skip`` records it as a
  ``skipped`` run and waits for the next tick; ``run_once`` runs once, for
  the latest missed tick.
- **One bad schedule stops nothing else.** A stored expression croniter
  cannot read disables its trigger (``next_fire_at`` None) with an error in
  the log; the other jobs' ticks go on.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..cron import cron_count, cron_latest, cron_next
from ..models import CronTrigger
from ..orm import Job, Trigger
from .base import TriggerKind

if TYPE_CHECKING:
    from .firing import Firing

log = logging.getLogger(__name__)

#: Due cron triggers handled per claim transaction; the rest wait for the next poll.
CRON_BATCH = 500
#: How many missed ticks are counted for a run's reason before saying "more than".
MISSED_COUNT_CAP = 1000


class CronKind(TriggerKind):
    """``cron``: see the module docstring."""

    name = "cron"
    model = CronTrigger

    def spec(self, model: CronTrigger) -> tuple[dict[str, Any], None]:
        return {"expression": model.expression, "timezone": model.timezone}, None

    def describe(self, spec: dict[str, Any]) -> CronTrigger:
        return CronTrigger.model_construct(expression=spec["expression"], timezone=spec["timezone"])

    def schedule(self, trigger: Trigger, now: datetime) -> None:
        spec = trigger.spec
        trigger.next_fire_at = cron_next(spec["expression"], spec["timezone"], now)

    def upcoming(
        self, spec: CronTrigger, next_fire_at: datetime | None, count: int
    ) -> list[datetime]:
        times: list[datetime] = []
        when = next_fire_at
        while when is not None and len(times) < count:
            times.append(when)
            when = cron_next(spec.expression, spec.timezone, when)
        return times

    def preview(self, model: CronTrigger, after: datetime, count: int) -> list[datetime]:
        """The first ``count`` ticks after ``after``, in UTC: what the scheduler would fire.

        A trigger made at ``after`` gets its first tick from :meth:`schedule` and the
        following ones from :meth:`upcoming`; the preview is those two calls, so it cannot
        differ from what the scheduler fires (the daylight-saving rule of :mod:`..cron`
        included).
        """
        return self.upcoming(model, cron_next(model.expression, model.timezone, after), count)

    def fire_due(self, firing: Firing, session: Session, now: datetime) -> None:
        due = session.execute(
            select(Trigger, Job)
            .join(Job, Trigger.job_id == Job.id)
            .where(Trigger.kind == self.name, Trigger.next_fire_at <= now, Job.paused.is_(False))
            .order_by(Trigger.next_fire_at, Trigger.id)
            .limit(CRON_BATCH)
            .with_for_update(skip_locked=True, of=(Trigger.__table__, Job.__table__))
            .execution_options(populate_existing=True)
        ).all()
        for trigger, job in due:
            try:
                self._fire(firing, session, trigger, job, now)
            except (ValueError, KeyError) as e:  # croniter's errors are ValueErrors
                # One unreadable stored schedule must not stop every other job's
                # ticks: disable it, say so, and go on.
                log.error("Disabling cron trigger %s of job %s: %s", trigger.id, job.id, e)
                trigger.next_fire_at = None

    def _fire(
        self, firing: Firing, session: Session, trigger: Trigger, job: Job, now: datetime
    ) -> None:
        queue = firing.queue
        expression, tz = trigger.spec["expression"], trigger.spec["timezone"]
        first = trigger.next_fire_at
        latest = cron_latest(expression, tz, now)
        trigger.next_fire_at = cron_next(expression, tz, now)
        if latest < first:  # cannot happen unless the clock went back; just reschedule
            return
        trigger.last_fired_at = now
        missed = cron_count(expression, tz, first, latest, MISSED_COUNT_CAP) - 1
        late = now - latest > firing.late_tolerance
        count = f"{MISSED_COUNT_CAP}+" if missed + 1 >= MISSED_COUNT_CAP else str(missed + 1)
        reason = f"cron {expression} ({tz})"
        if job.missed_run_policy == "skip":
            if late:
                why = (
                    f"skipped: {count} tick(s) from {first.isoformat()} to {latest.isoformat()} "
                    "were missed while no scheduler ran, and the missed-run policy is skip"
                )
                queue.insert(
                    session,
                    queue.new_run(job, now, why, trigger=trigger, tick=latest, status="skipped"),
                )
                return
            if missed:
                reason += f"; {missed} earlier missed tick(s) skipped"
        elif missed or late:
            reason += f"; run_once for the latest of {count} missed tick(s)"
        run = queue.queue(session, job, now, reason, trigger=trigger, tick=latest)
        if run is not None and run.status == "queued":
            run.not_before = latest
