"""after_job triggers: a job runs after a run of another job succeeds.

Requirements and how they are met:

- **A chain is visible and finite.** :meth:`AfterJobKind.check` refuses an
  upstream job the owner may not see (SECURITY rule 3: it looks missing)
  and one that would close a cycle (:func:`depends_on`), which would run
  forever.
- **It fires when the upstream's run ends**, in the transaction that records
  the end (:meth:`~..claims.Workers.finish_run` calls
  :meth:`AfterJobKind.after_run`): every unpaused job waiting on it gets a
  run, its job locked in id order like every other lock of jobs.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import Invalid
from ..models import AfterJobTrigger
from ..orm import Job, Run, Trigger
from .base import TriggerKind

if TYPE_CHECKING:
    from .firing import Firing

NAME = "after_job"


def depends_on(session: Session, job_id: str, ancestor_id: str) -> bool:
    """Return whether ``job_id`` runs after ``ancestor_id``, through after_job triggers."""
    edges: dict[str, set[str]] = {}
    for downstream, spec in session.execute(
        select(Trigger.job_id, Trigger.spec).where(Trigger.kind == NAME)
    ):
        edges.setdefault(downstream, set()).add(spec["upstream_job_id"])
    seen, todo = set(), [job_id]
    while todo:
        current = todo.pop()
        if current == ancestor_id:
            return True
        if current not in seen:
            seen.add(current)
            todo.extend(edges.get(current, ()))
    return False


class AfterJobKind(TriggerKind):
    """``after_job``: see the module docstring."""

    name = NAME
    model = AfterJobTrigger

    def spec(self, model: AfterJobTrigger) -> tuple[dict[str, Any], None]:
        return {"upstream_job_id": model.upstream_job_id}, None

    def describe(self, spec: dict[str, Any]) -> AfterJobTrigger:
        return AfterJobTrigger.model_construct(upstream_job_id=spec["upstream_job_id"])

    def check(
        self,
        session: Session,
        job_id: str | None,
        owner: str,
        model: AfterJobTrigger,
        groups: Collection[str],
        admin: bool,
    ) -> None:
        upstream_id = model.upstream_job_id
        if upstream_id == job_id:
            raise Invalid("an after_job trigger cannot name the job itself")
        upstream = session.get(Job, upstream_id)
        visible = upstream is not None and (
            admin or upstream.owner == owner or set(groups) & set(upstream.shared_with_groups)
        )
        if not visible:
            raise Invalid(f"after_job trigger: no job {upstream_id!r}")
        if job_id is not None and depends_on(session, upstream_id, job_id):
            raise Invalid(
                f"after_job trigger: job {upstream.name!r} already runs after this one, "
                "directly or through other jobs; a cycle would run forever"
            )

    def after_run(
        self, firing: Firing, session: Session, job: Job, run: Run, now: datetime
    ) -> None:
        if run.status != "succeeded":
            return
        triggers = [
            t
            for t in session.scalars(select(Trigger).where(Trigger.kind == self.name))
            if t.spec.get("upstream_job_id") == job.id
        ]
        for trigger in sorted(triggers, key=lambda t: t.job_id):  # lock order: job ids
            downstream = firing.queue.lock_job(session, trigger.job_id)
            if downstream is None or downstream.paused:
                continue
            reason = f"after run {run.id} of job {job.name!r} ({job.owner}) succeeded"
            firing.queue.queue(session, downstream, now, reason, trigger=trigger)
            trigger.last_fired_at = now
