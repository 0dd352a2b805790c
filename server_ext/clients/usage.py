"""The usage service's client: usage and cost, idle servers and right-sizing.

Built on :class:`server_ext.clients.base.ServiceClient` (the one way a server reaches a
service: ``$SHIPYARD_USAGE_URL``, else ``$JUPYTERHUB_PUBLIC_HUB_URL`` with
``/services/usage``; the token in the header only; the service's message as the error).
The service (:mod:`hub_ext.services.usage`) decides what a caller sees: an admin everyone's
usage, a user their own.
"""

from __future__ import annotations

from typing import Any

from .base import ServiceClient, ServiceError

SERVICE_PATH = "/services/usage"


class UsageError(ServiceError):
    """A refusal or failure of the usage service; ``str()`` says what to do."""


class UsageClient(ServiceClient):
    """The usage service's REST API: ``api/usage`` and ``api/usage/waste``.

    Examples
    --------
    >>> client = UsageClient.from_environment()  # doctest: +SKIP
    >>> [r["key"] for r in client.usage(by="profile")["rows"]]  # doctest: +SKIP
    ['gpu', 'small']
    """

    service = "usage service"
    service_path = SERVICE_PATH
    url_variable = "SHIPYARD_USAGE_URL"
    error = UsageError
    token_advice = "in JUPYTERHUB_API_TOKEN (or --token)"
    refused_token_advice = (
        "Restart your server from the hub to get a fresh token, or give another token."
    )
    segment_noun = "a user"

    def usage(self, **query: Any) -> dict[str, Any]:
        """``GET api/usage``: ``{"by", "since", "until", "currency", "rows": [...]}``.

        Parameters
        ----------
        **query
            ``by`` (user, group, profile, object, kind, day), ``since``, ``until``, ``user``; None
            values are left out. The service checks them and answers 400 with what to fix.
        """
        return self._call(
            "GET", "api/usage", params={k: v for k, v in query.items() if v is not None}
        )

    def waste(self, **query: Any) -> dict[str, Any]:
        """``GET api/usage/waste``: ``{"days", "idle": [...], "rightsizing": [...]}``."""
        return self._call(
            "GET", "api/usage/waste", params={k: v for k, v in query.items() if v is not None}
        )
