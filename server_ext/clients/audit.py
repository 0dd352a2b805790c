"""The audit service's client: the trail's records and its verification, for hub admins.

Built on :class:`server_ext.clients.base.ServiceClient` (the one way a server reaches a
service: ``$SHIPYARD_AUDIT_URL``, else ``$JUPYTERHUB_PUBLIC_HUB_URL`` with
``/services/audit``; the server's own token in the header only; the service's message as
the error). The service (:mod:`hub_ext.services.audit`) is the only judge of who may read
the trail: it answers 403 to anyone who is not a hub admin, and that 403 reaches the caller
unchanged. Nothing here decides on its own whether a caller is an admin.

Used by the server extension's forwarding routes (:mod:`server_ext.handlers.audit`), which
the JupyterLab panel's Audit section calls. Admins at a terminal use ``shipyard audit``,
which reads the trail where the hub keeps it.
"""

from __future__ import annotations

from typing import Any

from .base import ServiceClient, ServiceError

SERVICE_PATH = "/services/audit"


class AuditError(ServiceError):
    """A refusal or failure of the audit service; ``str()`` says what to do."""


class AuditClient(ServiceClient):
    """The audit service's REST API: ``api/records`` and ``api/verify``.

    Examples
    --------
    >>> client = AuditClient.from_environment()  # doctest: +SKIP
    >>> [r["action"] for r in client.records(action="server", limit=2)["records"]]  # doctest: +SKIP
    ['server.stop', 'server.start']
    """

    service = "audit service"
    service_path = SERVICE_PATH
    url_variable = "SHIPYARD_AUDIT_URL"
    error = AuditError
    token_advice = "in JUPYTERHUB_API_TOKEN"
    refused_token_advice = (
        "The audit trail is for hub admins; an admin whose server started before the audit "
        "service was turned on restarts it from the hub."
    )
    segment_noun = "a record"

    def records(self, **filters: Any) -> dict[str, Any]:
        """``GET api/records``: ``{"records": [...], "next_before": seq or None}``, newest first.

        Parameters
        ----------
        **filters
            ``user``, ``action``, ``since``, ``limit``, ``before``; the service checks them
            and answers 400 with what to fix. None values are left out.
        """
        params = {k: v for k, v in filters.items() if v is not None}
        return self._call("GET", "api/records", params=params)

    def verify(self) -> dict[str, Any]:
        """``GET api/verify``: ``{"ok", "problems": [{where, seq, kind, message}], ...}``."""
        return self._call("GET", "api/verify")
