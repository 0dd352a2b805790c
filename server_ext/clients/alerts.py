"""The alerts service's client: the caller's alerts (an admin's: everyone's) and own targets.

Built on :class:`server_ext.clients.base.ServiceClient` (the one way a server reaches a
service: ``$SHIPYARD_ALERTS_URL``, else ``$JUPYTERHUB_PUBLIC_HUB_URL`` with
``/services/alerts``; the token in the header only; the service's message as the error).
The service (:mod:`hub_ext.services.alerts`) decides what a caller sees: an admin every
alert, a user the alerts about their own models and jobs.
"""

from __future__ import annotations

from typing import Any

from .base import ServiceClient, ServiceError

SERVICE_PATH = "/services/alerts"


class AlertsError(ServiceError):
    """A refusal or failure of the alerts service; ``str()`` says what to do."""


class AlertsClient(ServiceClient):
    """The alerts service's REST API: ``api/alerts``, ``api/alerts/{id}`` and ``api/targets``.

    Examples
    --------
    >>> client = AlertsClient.from_environment()  # doctest: +SKIP
    >>> [a["rule"] for a in client.alerts()["alerts"]]  # doctest: +SKIP
    ['job_failed']
    """

    service = "alerts service"
    service_path = SERVICE_PATH
    url_variable = "SHIPYARD_ALERTS_URL"
    error = AlertsError
    token_advice = "in JUPYTERHUB_API_TOKEN (or --token)"
    refused_token_advice = (
        "Restart your server from the hub to get a fresh token, or give another token."
    )
    segment_noun = "an alert id"

    def alerts(self, **query: Any) -> dict[str, Any]:
        """``GET api/alerts``: ``{"alerts": [...]}``, newest first.

        Parameters
        ----------
        **query
            ``state`` (pending, firing, resolved), ``include_resolved``, ``limit``; None values
            are left out. The service checks them and answers 400 with what to fix.
        """
        params = {k: v for k, v in query.items() if v is not None}
        if isinstance(params.get("include_resolved"), bool):
            params["include_resolved"] = "true" if params["include_resolved"] else "false"
        return self._call("GET", "api/alerts", params=params)

    def alert(self, alert_id: str) -> dict[str, Any]:
        """``GET api/alerts/{id}``: one alert; another user's answers 404 like a missing one."""
        return self._call("GET", f"api/alerts/{self.path_segment(alert_id)}")

    def targets(self) -> dict[str, Any]:
        """``GET api/targets``: ``{"targets": [...], "updated_at": ..., "schemes": [...]}``.

        The caller's own notification targets, each redacted to its scheme and host, and the
        schemes a target may use on this hub.
        """
        return self._call("GET", "api/targets")

    def set_targets(self, urls: list[str]) -> dict[str, Any]:
        """``PUT api/targets``: replace the caller's targets with ``urls`` (apprise URLs).

        The service checks each one (scheme, public address) and answers 400 naming the
        refused one (``urls.0: ...``); the answer is :meth:`targets`' after the change.
        """
        return self._call("PUT", "api/targets", json={"urls": list(urls)})
