"""Trigger kinds, one module per kind behind one interface, and the rows they make.

Each kind (:mod:`.cron`, :mod:`.webhook`, :mod:`.file`, :mod:`.after_job`)
is a :class:`~.base.TriggerKind`; :data:`KINDS` maps its name to it, and the
rest of the scheduler asks that map instead of testing kind names. Adding a
kind means a module here, its API model in :mod:`..models` (in the ``Trigger``
union) and a migration that adds it to the ``triggers.kind`` CHECK constraint
(:data:`..orm.TRIGGER_KINDS`); docs/scheduler.md says how.

What every kind shares is here:

- **Rows from API models.** :func:`new_triggers` builds them and returns the
  webhook secret if one was made (shown once; only its hash is stored).
- **Validation that needs the database** (:func:`check_triggers`), per kind.
- **An update keeps what it does not change.** :func:`replace_triggers`
  matches the requested triggers to the stored ones by their public spec
  (:func:`public_spec`), so an unchanged trigger keeps its id, schedule and
  webhook secret.

How triggers fire is the store's :class:`~.firing.Firing` part.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy.orm import Session

from ..orm import Job, Trigger
from ..queueing import new_id
from .after_job import AfterJobKind
from .base import TriggerKind
from .cron import CronKind
from .file import FileKind
from .webhook import WebhookKind

#: Every trigger kind by name: what the scheduler asks instead of testing ``kind``.
KINDS: dict[str, TriggerKind] = {
    kind.name: kind for kind in (CronKind(), FileKind(), WebhookKind(), AfterJobKind())
}

__all__ = [
    "KINDS",
    "TriggerKind",
    "check_triggers",
    "new_triggers",
    "public_spec",
    "replace_triggers",
]


def public_spec(model: BaseModel) -> str:
    """A trigger's identity for matching an update's triggers to the stored ones."""
    return model.model_dump_json()


def new_triggers(specs: Iterable[Any], now: datetime) -> tuple[list[Trigger], str | None]:
    """Build trigger rows from API models; return them and the new secret, if one was made."""
    rows, secret = [], None
    for model in specs:
        kind = KINDS[model.kind]
        spec, shown_once = kind.spec(model)
        row = Trigger(id=new_id(), kind=kind.name, spec=spec, created_at=now)
        kind.schedule(row, now)
        rows.append(row)
        secret = shown_once or secret
    return rows, secret


def check_triggers(
    session: Session,
    job_id: str | None,
    owner: str,
    specs: Iterable[Any],
    groups: Collection[str],
    admin: bool,
) -> None:
    """Refuse triggers the database says are wrong (e.g. an after_job upstream, a cycle)."""
    for model in specs:
        KINDS[model.kind].check(session, job_id, owner, model, groups, admin)


def replace_triggers(
    session: Session,
    job: Job,
    specs: list[Any],
    groups: Collection[str],
    admin: bool,
    now: datetime,
) -> str | None | bool:
    """Make ``job``'s triggers equal ``specs``; False if nothing changed, else the new secret."""
    check_triggers(session, job.id, job.owner, specs, groups, admin)
    existing = {public_spec(KINDS[t.kind].describe(t.spec)): t for t in job.triggers}
    wanted = {public_spec(s): s for s in specs}
    if set(existing) == set(wanted):
        return False
    keep = [t for key, t in existing.items() if key in wanted]
    new, secret = new_triggers([s for key, s in wanted.items() if key not in existing], now)
    job.triggers = keep + new
    return secret
