"""Work-arounds for the JupyterHub in use, each with the reason and when it can go.

JupyterHub 6.1's ``BaseHandler.refresh_auth`` decides what a failed refresh means by
reading ``handler._token_authenticated``, which only token-authenticated requests set.
When ``refresh_user`` returns False for a browser (cookie) request, which is how the
directory authenticators end the session of a user who left every allowed group, the
hub raises ``AttributeError`` there, logs "Failed to get current user" with a traceback,
and only then treats the request as anonymous. The outcome (a redirect to the login
page) is the intended one; the traceback in the admin's log is not. Setting the
attribute to False for a request that is not token-authenticated gives JupyterHub the
answer it was about to compute. Harmless once JupyterHub initialises the attribute
itself (the check leaves an existing value alone).
"""

from __future__ import annotations


def mark_cookie_request(handler) -> None:
    """Tell JupyterHub's refresh_auth that ``handler``'s request was not token-authenticated."""
    if handler is not None and not hasattr(handler, "_token_authenticated"):
        handler._token_authenticated = False
