"""The secrets service's client: a user's own secrets, by name, from a kernel or a terminal.

Built on :class:`server_ext.clients.base.ServiceClient` (the one way a server reaches a
service: ``$SHIPYARD_SECRETS_URL``, the server's own token in the header only, the
service's message as the error). A user sets, lists and deletes their secrets; no call
here can read a value back (the service has no such route for users): values go to runs
and replicas only, through the scheduler and the deployer.
"""

from __future__ import annotations

from typing import Any

from .base import ServiceClient, ServiceError

SERVICE_PATH = "/services/secrets"


class SecretsError(ServiceError):
    """A refusal or failure of the secrets service; ``str()`` says what to do."""


class SecretsClient(ServiceClient):
    """The secrets service's REST API for its users.

    Examples
    --------
    >>> client = SecretsClient.from_environment()  # doctest: +SKIP
    >>> [s["name"] for s in client.list()]  # doctest: +SKIP
    ['DB_PASSWORD']
    """

    service = "secrets service"
    service_path = SERVICE_PATH
    url_variable = "SHIPYARD_SECRETS_URL"
    error = SecretsError
    token_advice = "in JUPYTERHUB_API_TOKEN (or --token)"
    refused_token_advice = (
        "Restart your server from the hub to get a fresh one, or give another token."
    )
    segment_noun = "a secret name"

    def list(self) -> list[dict[str, Any]]:
        """``GET api/secrets``: ``[{name, created_at, updated_at}]``, never values."""
        return self._call("GET", "api/secrets")["secrets"]

    def set(self, name: str, value: str) -> dict[str, Any]:
        """``PUT api/secrets/{name}``: ``{"secret": {...}, "created": bool}``."""
        return self._call("PUT", f"api/secrets/{self.path_segment(name)}", json={"value": value})

    def delete(self, name: str) -> None:
        """``DELETE api/secrets/{name}``."""
        self._call("DELETE", f"api/secrets/{self.path_segment(name)}")
