"""Shipyard's audit trail: one function, :func:`emit`, for every component.

Every state-changing or privileged action in the hub and the services is
recorded by one call::

    from hub_ext.audit import emit
    emit("job.create", actor="alice", target="job/3f2a", owner="alice",
         outcome="allowed", client="127.0.0.1")

The event goes through a ``jupyter_events.EventLogger`` (the Jupyter
ecosystem's event system: the versioned JSON schema in
``schemas/record.v1.yaml`` validates it) to one logging handler,
:class:`TrailHandler`, which seals it into the hash chain and writes it to
``audit.jsonl`` and the ``audit_records`` table (:mod:`.writer`).

``emit`` never raises into its caller: an audit failure must not turn a
user's successful action into an error page. It logs the failure at ERROR
level instead (with the action, so an operator can tell what was lost). The
trail is configured by the environment (:class:`.settings.AuditSettings`):
``SHIPYARD_AUDIT=0`` turns it off, ``SHIPYARD_AUDIT_DIR`` and
``SHIPYARD_AUDIT_DB_URL`` say where it goes.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jupyter_events import EventLogger

from .settings import AuditSettings
from .writer import TrailWriter

__all__ = ["SCHEMA_ID", "SCHEMA_PATH", "TrailHandler", "emit", "get_writer", "reset"]

log = logging.getLogger(__name__)

SCHEMA_PATH = Path(__file__).with_name("schemas") / "record.v1.yaml"
SCHEMA_ID = "https://events.shipyard.io/audit/record"

#: Keys of ``details`` whose values are never written (a caller's slip must
#: not put a credential into a record that is kept for a year).
REDACTED_KEYS = frozenset(
    {"password", "token", "api_token", "secret", "secret_value", "value", "authorization"}
)

#: The largest ``details`` kept, as JSON characters; bigger ones are replaced.
MAX_DETAILS = 4096


class TrailHandler(logging.Handler):
    """The jupyter_events handler that writes each event into the chained trail.

    jupyter_events passes the event capsule (a dict) as the log record's
    message; the handler ignores the formatter jupyter_events sets and hands
    the dict to :class:`.writer.TrailWriter`. Errors propagate to
    :func:`emit`, which logs them (``logging``'s ``handleError`` would print
    them to stderr and swallow them).
    """

    def __init__(self, writer: TrailWriter):
        super().__init__(level=logging.INFO)
        self.writer = writer
        # the record each thread wrote last (logging calls emit in the caller's thread)
        self._local = threading.local()

    @property
    def last(self) -> dict[str, Any] | None:
        return getattr(self._local, "last", None)

    @last.setter
    def last(self, value: dict[str, Any] | None) -> None:
        self._local.last = value

    def emit(self, record: logging.LogRecord) -> None:
        event = record.msg
        if not isinstance(event, dict):
            raise TypeError(f"not an audit event: {event!r}")
        self.last = self.writer.append(dict(event))


class _Trail:
    """The process's settings, writer and event logger, made on first use."""

    def __init__(self) -> None:
        self.settings = AuditSettings()
        self.writer = TrailWriter(self.settings)
        self.handler = TrailHandler(self.writer)
        self.logger = EventLogger(handlers=[self.handler])
        self.logger.register_event_schema(SCHEMA_PATH)


_trail: _Trail | None = None
_trail_lock = threading.Lock()
_source: str | None = None


def _get_trail() -> _Trail:
    global _trail
    if _trail is None:
        with _trail_lock:
            if _trail is None:
                _trail = _Trail()
    return _trail


def get_writer() -> TrailWriter:
    """This process's writer (for retention and the CLI, which write under its lock)."""
    return _get_trail().writer


def reset() -> None:
    """Forget the settings and writer; the next :func:`emit` reads the environment again."""
    global _trail
    with _trail_lock:
        if _trail is not None:
            _trail.writer.close()
        _trail = None


def set_source(name: str) -> None:
    """Name the component that writes this process's records (``hub``, ``cli``, ...)."""
    global _source
    _source = name


def _default_source() -> str:
    return (
        _source or os.environ.get("JUPYTERHUB_SERVICE_NAME") or Path(sys.argv[0]).name or "python"
    )


def _clean_details(details: dict[str, Any] | None) -> dict[str, Any] | None:
    if not details:
        return None
    cleaned = {
        str(k): ("[redacted]" if str(k).lower() in REDACTED_KEYS else v) for k, v in details.items()
    }
    text = json.dumps(cleaned, default=str)
    if len(text) > MAX_DETAILS:
        return {"truncated": True, "size": len(text)}
    return json.loads(text)


def emit(
    action: str,
    *,
    actor: str | None = None,
    actor_kind: str | None = None,
    on_behalf_of: str | None = None,
    target: str | None = None,
    owner: str | None = None,
    outcome: str = "allowed",
    reason: str | None = None,
    client: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Record one audited action; never raises.

    Parameters
    ----------
    action : str
        ``"<object type>.<verb>"`` from :data:`.actions.ACTIONS`.
    actor : str, optional
        The hub user or service that acted; None when unknown.
    actor_kind : str, optional
        ``user``, ``service``, ``job``, ``system`` or ``anonymous``; by default
        ``user`` when there is an actor, else ``anonymous``.
    on_behalf_of : str, optional
        The user a job or service acted for.
    target : str, optional
        ``"<type>/<id or name>"`` (never a secret value).
    owner : str, optional
        The user who owns the target.
    outcome : str
        ``allowed``, ``denied`` or ``failed``.
    reason : str, optional
        Why it was denied or failed.
    client : str, optional
        The client address.
    details : dict, optional
        Small non-secret facts; keys like ``password`` or ``token`` are redacted.

    Returns
    -------
    dict or None
        The record as written (with ``seq`` and ``hash``), or None when the
        trail is off or the record could not be written.
    """
    try:
        trail = _get_trail()
        if not trail.settings.enabled:
            return None
        data: dict[str, Any] = {
            "action": action,
            "actor": actor,
            "actor_kind": actor_kind or ("user" if actor else "anonymous"),
            "on_behalf_of": on_behalf_of,
            "target": target,
            "owner": owner,
            "outcome": outcome,
            "reason": reason[:1024] if reason else reason,
            "client": client,
            "source": _default_source(),
            "details": _clean_details(details),
        }
        # A naive UTC time: jupyter_events appends "Z" to isoformat().
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        trail.handler.last = None
        trail.logger.emit(schema_id=SCHEMA_ID, data=data, timestamp_override=now)
        return trail.handler.last
    except Exception:
        log.exception(
            "could not write audit record %s (actor %s, target %s)", action, actor, target
        )
        return None
