"""What a trigger kind is: the one interface every kind implements.

A trigger is a row of ``triggers`` (``kind`` and a JSON ``spec``) made from
one of the API models of :mod:`..models` (``CronTrigger``, ...). What differs
between kinds is gathered in a :class:`TriggerKind`, one module per kind in
this package, and the rest of the scheduler asks the registry
(:data:`~.KINDS`) instead of testing kind names:

- **the row and back**: :meth:`TriggerKind.spec` turns the API model into
  the stored ``spec`` (and a secret to show once, for webhooks);
  :meth:`TriggerKind.describe` turns a stored spec back into the API model,
  without what must stay in the database;
- **validation that needs the database** (:meth:`TriggerKind.check`), such
  as an after_job upstream the owner may see and that closes no cycle;
  validation of the request itself stays in the API model;
- **what a saved job needs** (:meth:`TriggerKind.schedule`): the next cron
  time, when a trigger is made and when its job is resumed;
- **how it fires**: on time (:meth:`TriggerKind.fire_due`, called by every
  claim), after another run (:meth:`TriggerKind.after_run`, called when a
  run ends), or from outside: :meth:`~.firing.Firing.fire_trigger` accepts
  only kinds that say :attr:`TriggerKind.fired_by_service` (the file
  watcher), and webhooks have their own call with the secret.

Every hook but the first two has a default that does nothing, so a kind
overrides what it uses. The abstract methods make a kind that forgets one
fail when it is instantiated, at import of the registry (STYLE rule 6).

Rejected alternative: entry points, as for executors. Kinds are not
pluggable from outside: each needs its API model in the discriminated
union of :mod:`..models` and a value in the ``triggers.kind`` CHECK
constraint (a migration), so a kind lives in this package or nowhere.
"""

from __future__ import annotations

import abc
from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel
from sqlalchemy.orm import Session

from ..orm import Job, Run, Trigger

if TYPE_CHECKING:
    from .firing import Firing


class TriggerKind(abc.ABC):
    """One kind of trigger; see the module docstring for what each hook is for."""

    #: The kind's name: the API models' ``kind`` and the ``triggers.kind`` column.
    name: ClassVar[str]
    #: The API model (in :mod:`..models`) of a trigger of this kind.
    model: ClassVar[type[BaseModel]]
    #: Whether :meth:`~.firing.Firing.fire_trigger` may fire it (the service watches it).
    fired_by_service: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not getattr(cls, "__abstractmethods__", None):
            missing = [a for a in ("name", "model") if not hasattr(cls, a)]
            if missing:
                raise TypeError(f"trigger kind {cls.__name__} does not set {', '.join(missing)}")

    @abc.abstractmethod
    def spec(self, model: Any) -> tuple[dict[str, Any], str | None]:
        """Return the stored ``spec`` for the API ``model``, and a secret to show once or None."""

    @abc.abstractmethod
    def describe(self, spec: dict[str, Any]) -> BaseModel:
        """Return the API model of a stored ``spec`` (not validated again: it was on the way in).

        What must not leave the database (a webhook's secret hash) is left out.
        """

    def check(
        self,
        session: Session,
        job_id: str | None,
        owner: str,
        model: Any,
        groups: Collection[str],
        admin: bool,
    ) -> None:
        """Refuse (:class:`~..errors.Invalid`) a trigger the database says is wrong.

        ``job_id`` is None for a job being created.
        """
        return  # optional: nothing, for the kinds that do not override it

    def schedule(self, trigger: Trigger, now: datetime) -> None:
        """Prepare a trigger of a job saved or resumed at ``now`` (e.g. its next fire time)."""
        return  # optional: nothing, for the kinds that do not override it

    def fire_due(self, firing: Firing, session: Session, now: datetime) -> None:
        """Queue the runs of the triggers due at ``now``; called in every claim transaction."""
        return  # optional: nothing, for the kinds that do not override it

    def after_run(
        self, firing: Firing, session: Session, job: Job, run: Run, now: datetime
    ) -> None:
        """Queue what follows ``run`` of ``job`` (locked), which just ended."""
        return  # optional: nothing, for the kinds that do not override it

    def upcoming(self, spec: Any, next_fire_at: datetime | None, count: int) -> list[datetime]:
        """Return up to ``count`` next fire times of a trigger (the API model ``spec``)."""
        return []
