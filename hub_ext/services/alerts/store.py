"""The alerts database: episodes and their transitions, users' targets (encrypted).

A transition is committed before its notification is sent, with a flag the
send then sets (``notified_firing``, ``notified_resolved``): a service that
restarts finds every open alert (nothing is lost, nothing fires again) and
sends only the notifications that were committed and not yet marked sent.
The one window left is a crash between a send and its mark: that
notification goes out again (at least once, never per evaluation).

Targets are one Fernet token per user, under a key file beside (never in)
the database, made 0600 on first start like the secrets service's; a file
others may read is refused. Queries run in a thread (STYLE rule 13).
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from datetime import datetime, timezone
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from .db import make_engine, upgrade
from .models import DescribeAlert, ListAlertsQuery
from .orm import Alert, Targets
from .rules import Finding

OPEN = ("pending", "firing")


class KeyFileError(Exception):
    """The targets' key file cannot be used; the message says what to fix."""


def load_or_create_key(path: Path) -> Fernet:
    """The Fernet key in ``path``, made (0600, exclusively) if missing; refuse a shared file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(Fernet.generate_key().decode() + "\n")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd) as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077:
            raise KeyFileError(
                f"the alerts key file {path} must be a plain file only its owner reads (0600)"
            )
        try:
            return Fernet(f.read().strip().encode())
        except ValueError:
            raise KeyFileError(f"the alerts key file {path} holds no Fernet key") from None


def describe(row: Alert) -> DescribeAlert:
    return DescribeAlert(
        id=row.id,
        key=row.key,
        rule=row.rule,
        owner=row.owner,
        labels=json.loads(row.labels),
        severity=row.severity,
        summary=row.summary,
        value=row.value,
        state=row.state,  # type: ignore[arg-type]
        pending_since=row.pending_since,
        started_at=row.started_at,
        resolved_at=row.resolved_at,
    )


class AlertStore:
    """The service's database (SQLite or PostgreSQL), upgraded by Alembic at start."""

    def __init__(self, db_url: str, key_file: Path):
        if db_url.startswith("sqlite:///"):
            Path(db_url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        upgrade(db_url)
        self.engine = make_engine(db_url)
        self.sessions: sessionmaker[Session] = sessionmaker(self.engine, expire_on_commit=False)
        self.fernet = load_or_create_key(Path(key_file))

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------ episodes

    def open_alerts(self) -> dict[str, Alert]:
        """Every open (pending or firing) episode, by key."""
        with self.sessions() as session:
            rows = session.scalars(select(Alert).where(Alert.state.in_(OPEN)))
            return {row.key: row for row in rows}

    def apply(
        self, findings: list[Finding], evaluated: set[str], now: datetime
    ) -> list[tuple[str, str]]:
        """Move the episodes to what ``findings`` say; return the (id, transition) to notify.

        ``evaluated`` holds the rules whose sources were read this time: an open
        episode of a rule that could not be evaluated (its service did not
        answer) stays as it is rather than resolving.
        """
        transitions: list[tuple[str, str]] = []
        found = {f.key: f for f in findings}
        with self.sessions.begin() as session:
            rows = {r.key: r for r in session.scalars(select(Alert).where(Alert.state.in_(OPEN)))}
            for key, finding in found.items():
                row = rows.get(key)
                if row is None:
                    row = Alert(
                        id=uuid.uuid4().hex,
                        key=key,
                        rule=finding.rule,
                        owner=finding.owner,
                        labels=finding.labels_json(),
                        severity=finding.severity,
                        summary=finding.summary,
                        value=finding.value,
                        state="pending",
                        pending_since=now,
                        notified_firing=False,
                        notified_resolved=False,
                        updated_at=now,
                    )
                    session.add(row)
                row.summary, row.value, row.updated_at = finding.summary, finding.value, now
                held = (now - _aware(row.pending_since)).total_seconds()
                if row.state == "pending" and held >= finding.for_seconds:
                    row.state, row.started_at = "firing", now
                    transitions.append((row.id, "firing"))
            for key, row in rows.items():
                if key in found or row.rule not in evaluated:
                    continue
                if row.state == "pending":  # never fired: nobody was told, nothing to resolve
                    session.delete(row)
                else:
                    row.state, row.resolved_at, row.updated_at = "resolved", now, now
                    transitions.append((row.id, "resolved"))
        return transitions

    def unsent(self) -> list[tuple[str, str]]:
        """Transitions committed but not yet marked sent (after a restart, or a failed send)."""
        with self.sessions() as session:
            rows = session.scalars(
                select(Alert).where(
                    or_(
                        Alert.state.in_(("firing", "resolved")) & ~Alert.notified_firing,
                        (Alert.state == "resolved") & ~Alert.notified_resolved,
                    )
                )
            ).all()
        out = []
        for row in rows:
            if not row.notified_firing:
                out.append((row.id, "firing"))
            if row.state == "resolved" and not row.notified_resolved:
                out.append((row.id, "resolved"))
        return out

    def mark_sent(self, alert_id: str, transition: str) -> None:
        with self.sessions.begin() as session:
            row = session.get(Alert, alert_id)
            if row is not None:
                if transition == "firing":
                    row.notified_firing = True
                else:
                    row.notified_resolved = True

    def get(self, alert_id: str) -> DescribeAlert | None:
        with self.sessions() as session:
            row = session.get(Alert, alert_id)
            return describe(row) if row is not None else None

    def alerts(self, owner: str | None, query: ListAlertsQuery) -> list[DescribeAlert]:
        """Alerts newest first: ``owner``'s own, or everyone's for ``owner=None``."""
        stmt = select(Alert).order_by(Alert.pending_since.desc(), Alert.id).limit(query.limit)
        if owner is not None:
            stmt = stmt.where(Alert.owner == owner)
        if query.state is not None:
            stmt = stmt.where(Alert.state == query.state)
        elif not query.include_resolved:
            stmt = stmt.where(Alert.state.in_(OPEN))
        with self.sessions() as session:
            return [describe(r) for r in session.scalars(stmt)]

    def firing_by_rule(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self.sessions() as session:
            for rule in session.scalars(select(Alert.rule).where(Alert.state == "firing")):
                counts[rule] = counts.get(rule, 0) + 1
        return counts

    # ------------------------------------------------------------ targets

    def targets(self, owner: str) -> tuple[list[str], datetime | None]:
        with self.sessions() as session:
            row = session.get(Targets, owner)
            if row is None:
                return [], None
            try:
                plain = self.fernet.decrypt(bytes(row.ciphertext)).decode()
            except InvalidToken:
                raise KeyFileError(
                    f"{owner}'s alert targets cannot be decrypted with the key file "
                    "(was it replaced?)"
                ) from None
            owner_, _, urls = plain.partition("\0")
            if owner_ != owner:  # bound to the owner: a row copied elsewhere is refused
                raise KeyFileError(f"the stored targets of {owner} belong to another user")
            return json.loads(urls), row.updated_at

    def set_targets(self, owner: str, urls: list[str], now: datetime) -> None:
        token = self.fernet.encrypt(f"{owner}\0{json.dumps(urls)}".encode())
        with self.sessions.begin() as session:
            row = session.get(Targets, owner)
            if not urls:
                if row is not None:
                    session.delete(row)
                return
            if row is None:
                session.add(Targets(owner=owner, ciphertext=token, updated_at=now))
            else:
                row.ciphertext, row.updated_at = token, now


def _aware(when: datetime) -> datetime:
    """SQLite hands back naive datetimes for aware columns: they are UTC."""
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
