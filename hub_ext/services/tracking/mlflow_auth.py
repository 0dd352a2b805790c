"""MLflow's authorization function for Shipyard: identity comes from the hub, via the gateway.

MLflow's basic-auth app keeps the permission model (experiments and registered
models have owners with MANAGE, others need a grant; ``default_permission`` is
NO_PERMISSIONS). What it does not get from Shipyard is passwords: this module
replaces MLflow's username/password check (``authorization_function`` in the
auth config) with a check that the request came through Shipyard's gateway,
which has already authenticated the hub user.

The gateway proves itself with a secret generated at each start and passed to
this process only (never to users); MLflow listens on loopback, where user
processes could reach it too, so the secret is what keeps them out. The user
named by the gateway is created in MLflow's user store on first sight, with a
random password nobody knows, and their admin flag follows the hub's.

This module runs inside the MLflow server process, not in the hub.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
import time

from flask import Response, request
from werkzeug.datastructures import Authorization

SECRET_ENV = "SHIPYARD_TRACKING_GATEWAY_SECRET"
SECRET_HEADER = "X-Shipyard-Gateway"
USER_HEADER = "X-Shipyard-User"
ADMIN_HEADER = "X-Shipyard-Admin"

_known: dict[str, tuple[bool, float]] = {}  # username -> (is_admin, when checked)
_lock = threading.Lock()
_TTL = 60.0


def _refused() -> Response:
    return Response(
        '{"error_code": "UNAUTHENTICATED", "message": "MLflow is reached through the hub: '
        'use /services/tracking/ with a hub token."}',
        status=401,
        mimetype="application/json",
    )


def _ensure_user(username: str, is_admin: bool) -> None:
    """Create the MLflow user for a hub user on first sight; keep their admin flag in step."""
    now = time.monotonic()
    with _lock:
        seen = _known.get(username)
        if seen and seen[0] == is_admin and now - seen[1] < _TTL:
            return
    from mlflow.server.auth import store

    if not store.has_user(username):
        try:
            store.create_user(username, secrets.token_urlsafe(32), is_admin=is_admin)
        except Exception:  # another worker created it first
            if not store.has_user(username):
                raise
    if store.get_user(username).is_admin != is_admin:
        store.update_user(username, is_admin=is_admin)
    with _lock:
        _known[username] = (is_admin, now)


def authenticate_from_gateway() -> Authorization | Response:
    """MLflow ``authorization_function``: trust the gateway's headers, and nothing else."""
    expected = os.environ.get(SECRET_ENV, "")
    given = request.headers.get(SECRET_HEADER, "")
    username = request.headers.get(USER_HEADER, "")
    if not expected or not given or not hmac.compare_digest(given, expected) or not username:
        return _refused()
    _ensure_user(username, request.headers.get(ADMIN_HEADER) == "1")
    return Authorization("basic", {"username": username, "password": ""})
