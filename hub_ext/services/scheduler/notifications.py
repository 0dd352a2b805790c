"""Notifications: what the scheduler tells a user about runs that ended.

The service adds one with :meth:`Notifications.add_notification` when a
run ends in a way the job's ``notify`` policy asks about (and mails or calls
the webhook itself); users list theirs and mark them read.

Requirements and how they are met:

- **Others' notifications look missing** (SECURITY rule 3): every read and
  change is filtered by the caller's user name, and another user's id raises
  the same :class:`~.errors.NotFound` as an unknown one.
- **A deleted job takes its notifications along**: ``notifications.job_id``
  cascades, and :meth:`~.store.JobStore.delete_job` deletes them with SQL
  (see its comment on why not through the session). A notification for a
  job deleted meanwhile is refused rather than stored without its job.
- **Bounded.** A message is cut at :data:`MAX_MESSAGE` characters (a run's
  reason can quote a long traceback); a listing returns at most 500.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from .convert import describe_notification
from .errors import Invalid, NotFound
from .models import DescribeNotification, ListNotificationsResponse
from .orm import NOTIFICATION_EVENTS, Job, Notification
from .queueing import RunQueue, is_id, new_id

#: The longest message stored, in characters; longer ones are cut with "…".
MAX_MESSAGE = 4000
#: The most notifications one listing returns.
MAX_LIST = 500


def new_notification(
    user: str,
    job_id: str | None,
    run_id: str | None,
    event: str | Enum,
    message: str,
    now: datetime,
) -> Notification:
    """A checked notification row (the caller adds it to its own transaction).

    Raises
    ------
    Invalid
        ``user`` is empty or ``event`` is not one of :data:`~.orm.NOTIFICATION_EVENTS`.
    """
    event = event.value if isinstance(event, Enum) else str(event)
    if event not in NOTIFICATION_EVENTS:
        raise Invalid(
            f"a notification is about one of {', '.join(NOTIFICATION_EVENTS)}, not {event!r}"
        )
    if not user or len(user) > 255:
        raise Invalid("a notification needs a user name of 1 to 255 characters")
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    return Notification(
        id=new_id(),
        user=user,
        job_id=job_id,
        run_id=run_id,
        event=event,
        message=message,
        created_at=now,
    )


class Notifications:
    """Notifications, a part of :class:`~.store.JobStore`; see the module docstring."""

    def __init__(self, read: sessionmaker, write: sessionmaker, queue: RunQueue):
        self._read, self._write, self.queue = read, write, queue

    def add_notification(
        self,
        user: str,
        job_id: str | None,
        run_id: str | None,
        event: str | Enum,
        message: str,
        *,
        now: datetime | None = None,
    ) -> DescribeNotification:
        """Tell ``user`` that a run ended.

        Parameters
        ----------
        user : str
            Who is told (usually the job's owner).
        job_id, run_id : str or None
            What it is about; ``run_id`` is recorded as is (no check).
        event : str or enum
            How the run ended: ``succeeded``, ``failed``, ``timed_out``,
            ``orphaned`` or ``cancelled``.
        message : str
            What to show; cut at :data:`MAX_MESSAGE` characters.

        Raises
        ------
        Invalid
            ``user`` is empty or ``event`` is not one of the above.
        NotFound
            No job ``job_id`` (it may have been deleted since the run ended).
        """
        row = new_notification(user, job_id, run_id, event, message, self.queue.now(now))
        try:
            with self._write.begin() as session:
                if job_id is not None and (not is_id(job_id) or session.get(Job, job_id) is None):
                    raise NotFound(f"no job {job_id!r}")
                session.add(row)
                session.flush()
                return describe_notification(row)
        except IntegrityError:  # the job was deleted between the check and the insert
            raise NotFound(f"no job {job_id!r}") from None

    def list_notifications(
        self, user: str, *, unread_only: bool = False, limit: int = 50
    ) -> ListNotificationsResponse:
        """Return ``user``'s notifications, newest first.

        Parameters
        ----------
        user : str
            Whose; nobody sees another user's notifications.
        unread_only : bool
            Leave out those marked read.
        limit : int
            The most to return, 1 to 500.

        Raises
        ------
        Invalid
            ``limit`` is out of range.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST:
            raise Invalid(f"limit must be between 1 and {MAX_LIST}, not {limit!r}")
        stmt = (
            select(Notification)
            .where(Notification.user == user)
            .order_by(Notification.created_at.desc(), Notification.id.desc())
            .limit(limit)
        )
        if unread_only:
            stmt = stmt.where(Notification.read_at.is_(None))
        with self._read.begin() as session:
            found = [describe_notification(n) for n in session.scalars(stmt)]
        return ListNotificationsResponse(notifications=found)

    def mark_notification_read(
        self, notification_id: str, user: str, *, now: datetime | None = None
    ) -> DescribeNotification:
        """Mark one of ``user``'s notifications read; marking it again keeps the first time.

        Raises
        ------
        NotFound
            No such notification, or another user's: the two look the same.
        """
        now = self.queue.now(now)
        with self._write.begin() as session:
            row = session.get(Notification, notification_id) if is_id(notification_id) else None
            if row is None or row.user != user:
                raise NotFound(f"no notification {notification_id!r}")
            if row.read_at is None:
                row.read_at = now
            return describe_notification(row)
