"""Trigger rows: built from the API models, checked, and replaced on update.

Requirements and how they are met:

- **A webhook secret is shown once.** :func:`new_triggers` makes it and
  returns it to the caller; the database keeps only its SHA-256
  (:func:`hash_secret`), compared in constant time when the webhook is called.
- **An after_job chain is visible and finite.** :func:`check_upstreams`
  refuses an upstream job the owner may not see (SECURITY rule 3) and one
  that would close a cycle (:func:`depends_on`), which would run forever.
- **An update keeps what it does not change.** :func:`replace_triggers`
  matches the requested triggers to the stored ones by their public spec, so
  an unchanged trigger keeps its id, schedule and webhook secret.
- **Only webhook and file triggers fire from outside.** :class:`FiringMixin`
  (mixed into :class:`~.store.JobStore`) fires them; cron triggers fire
  through :meth:`~.claims.WorkerMixin.claim_due` and after_job triggers
  through :meth:`~.claims.WorkerMixin.finish_run`. A wrong webhook secret, a
  missing job and a job without a webhook look the same to the caller.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .convert import describe_run, describe_trigger, public_spec
from .cron import cron_next
from .errors import Conflict, Invalid, NotFound
from .models import AfterJobTrigger, CronTrigger, DescribeRun, FileTrigger, WebhookTrigger
from .orm import Job, Run, Trigger
from .queueing import ID_RE, QueueMixin, new_id


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_triggers(
    specs: Iterable[CronTrigger | FileTrigger | WebhookTrigger | AfterJobTrigger],
    now: datetime,
) -> tuple[list[Trigger], str | None]:
    """Build trigger rows; return them and the new webhook secret, if one was made."""
    rows, secret = [], None
    for model in specs:
        row = Trigger(id=new_id(), kind=model.kind, created_at=now)
        if isinstance(model, CronTrigger):
            row.spec = {"expression": model.expression, "timezone": model.timezone}
            row.next_fire_at = cron_next(model.expression, model.timezone, now)
        elif isinstance(model, FileTrigger):
            row.spec = {"glob": model.glob}
        elif isinstance(model, WebhookTrigger):
            secret = secrets.token_urlsafe(32)
            row.spec = {"secret_sha256": hash_secret(secret)}
        else:
            row.spec = {"upstream_job_id": model.upstream_job_id}
        rows.append(row)
    return rows, secret


def check_upstreams(
    session: Session,
    job_id: str | None,
    owner: str,
    specs: Iterable[Any],
    groups: Collection[str],
    admin: bool,
) -> None:
    """An after_job upstream must be visible to the owner, and not make a cycle."""
    for model in specs:
        if not isinstance(model, AfterJobTrigger):
            continue
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


def depends_on(session: Session, job_id: str, ancestor_id: str) -> bool:
    """Return whether ``job_id`` runs after ``ancestor_id``, through after_job triggers."""
    edges: dict[str, set[str]] = {}
    for downstream, spec in session.execute(
        select(Trigger.job_id, Trigger.spec).where(Trigger.kind == "after_job")
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


def replace_triggers(
    session: Session,
    job: Job,
    specs: list[Any],
    groups: Collection[str],
    admin: bool,
    now: datetime,
) -> str | None | bool:
    """Make ``job``'s triggers equal ``specs``; False if nothing changed, else the new secret."""
    check_upstreams(session, job.id, job.owner, specs, groups, admin)
    existing = {public_spec(describe_trigger(t).trigger): t for t in job.triggers}
    wanted = {public_spec(s): s for s in specs}
    if set(existing) == set(wanted):
        return False
    keep = [t for key, t in existing.items() if key in wanted]
    new, secret = new_triggers([s for key, s in wanted.items() if key not in existing], now)
    job.triggers = keep + new
    return secret


class FiringMixin(QueueMixin):
    """Fire webhook and file triggers on :class:`~.store.JobStore`; see the module docstring."""

    _write: sessionmaker

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
        now = self._now(now)
        with self._write.begin() as session:
            job = self._lock_job(session, job_id) if ID_RE.match(job_id or "") else None
            trigger = next((t for t in job.triggers if t.kind == "webhook"), None) if job else None
            expected = trigger.spec["secret_sha256"] if trigger else hash_secret("")
            if not hmac.compare_digest(expected, hash_secret(secret)) or trigger is None:
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
            Not a file trigger.
        Conflict
            The job is paused.
        """
        now = self._now(now)
        with self._write.begin() as session:
            found = session.get(Trigger, trigger_id)
            job = self._lock_job(session, found.job_id) if found else None
            trigger = session.get(Trigger, trigger_id) if job else None
            if trigger is None:
                raise NotFound(f"no trigger {trigger_id!r}")
            if trigger.kind != "file":
                # Cron fires through claim_due, webhooks through fire_webhook (with
                # the secret), after_job through finish_run: never from outside.
                raise Invalid(
                    f"trigger {trigger_id} is a {trigger.kind} trigger, not a file trigger"
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
        run = self._queue(
            session, job, now, reason, trigger=trigger, tick=tick, parameters=parameters
        )
        if run is None:
            raise Conflict(f"trigger {trigger.id} already fired for this event")
        trigger.last_fired_at = now
        return run
