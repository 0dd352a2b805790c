"""Audit records of the spawners: servers started and stopped, the profiles file changing.

Both profile spawners (local and Kubernetes) share
:class:`hub_ext.spawners.mixin.ProfileSpawnerMixin`, whose ``start``/``stop`` wrap
the concrete spawner's and call :func:`server_event`, so every started or
stopped server is recorded once, with its profile, whichever backend ran it.
The actor of a start is whoever asked (JupyterHub sets ``spawner.handler``
for the spawn's request: the user, an admin, or a service); JupyterHub keeps
no such handler for a stop, so a stop's actor is the owner. Refused requests
never reach a spawner; the hub's log function records those
(:mod:`.hub`).

The profiles file is re-read where the spawners read it
(:class:`hub_ext.profiles.store.ProfileStore`, one per file per process); when the
store hands out a new version, :func:`profiles_seen` records
``profiles.change`` with the old and new SHA-256 of the file. It is called
by the hub's spawners only, so the services, which read the same file,
do not record the same change again. An invalid edit, which the store
refuses (the previous version stays in force), is recorded as ``failed``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Any

from . import emit

log = logging.getLogger(__name__)

_seen: dict[str, tuple[int, str | None, int | None]] = {}
_seen_lock = threading.Lock()


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def profiles_seen(store: Any, config: Any) -> None:
    """Record ``profiles.change`` when ``store`` hands out a new version (or refuses one)."""
    key = str(store.path)
    error = getattr(store, "last_error", None)
    with _seen_lock:
        previous = _seen.get(key)
        if previous is not None and previous[0] == id(config) and previous[2] == id(error):
            return
        digest = _digest(store.path)
        _seen[key] = (
            id(config),
            digest if error is None else (previous or (0, None))[1],
            id(error),
        )
    if previous is None:
        return  # first read in this process: nothing changed
    if previous[0] != id(config):
        emit(
            "profiles.change",
            actor=None,
            actor_kind="system",
            target=f"profiles/{store.path.name}",
            outcome="allowed",
            details={
                "path": key,
                "old_digest": previous[1],
                "new_digest": digest,
                "profiles": len(getattr(config, "profiles", []) or []),
            },
        )
    elif error is not None:
        emit(
            "profiles.change",
            actor=None,
            actor_kind="system",
            target=f"profiles/{store.path.name}",
            outcome="failed",
            reason="the new version is invalid; the previous one stays in force",
            details={"path": key, "old_digest": previous[1], "new_digest": digest},
        )


def server_event(
    spawner: Any, action: str, outcome: str = "allowed", reason: str | None = None
) -> None:
    """Record ``server.start`` or ``server.stop`` of ``spawner`` (never raises)."""
    try:
        owner = spawner.user.name
        actor, actor_kind, client = owner, "user", None
        handler = getattr(spawner, "handler", None) if action == "server.start" else None
        if handler is not None:
            try:
                current = handler.current_user
            except Exception:
                current = None
            if current is not None:
                actor = current.name
                actor_kind = "service" if getattr(current, "kind", "user") == "service" else "user"
            client = handler.request.remote_ip
        profile = getattr(spawner, "profile", None)
        name = spawner.name or ""
        emit(
            action,
            actor=actor,
            actor_kind=actor_kind,
            target=f"server/{owner}/{name}" if name else f"server/{owner}",
            owner=owner,
            outcome=outcome,
            reason=reason[:300] if reason else None,
            client=client,
            details={"profile": getattr(profile, "slug", None), "server": name},
        )
    except Exception:  # emit never raises; this guards reading the spawner
        log.exception("could not audit %s", action)
