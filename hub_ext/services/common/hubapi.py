"""What the services ask of the hub's REST API: who calls, their groups, users' tokens.

The scheduler and the deployer identify their callers the same way
(:class:`Caller`, the hub's groups through :class:`HubDirectory`) and both mint
short-lived tokens of a user's for the code they run as that user, revoking
each as soon as it is no longer needed (:class:`HubTokens`: the scheduler's
run tokens, the deployer's model-server tokens). These lived in the
scheduler and were imported by the deployer, or were written twice; they are
here so no service imports another.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse

log = logging.getLogger("shipyard.services")

#: How long a user's hub groups are cached (group changes apply within this).
GROUPS_TTL = 30.0


@dataclass(frozen=True)
class Caller:
    """Who makes a request: a hub user, their groups, and whether they are an admin."""

    name: str
    groups: tuple[str, ...]
    admin: bool

    @property
    def access(self) -> tuple[str, tuple[str, ...], bool]:
        return self.name, self.groups, self.admin


class HubDirectory:
    """Hub users' groups, asked of the hub's REST API with the service's token and cached."""

    def __init__(self, api_url: str, token: str, ttl: float = GROUPS_TTL):
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.ttl = ttl
        self._cache: dict[str, tuple[float, tuple[str, ...]]] = {}

    async def groups_of(self, name: str) -> tuple[str, ...]:
        cached = self._cache.get(name)
        if cached and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        request = HTTPRequest(
            f"{self.api_url}/users/{name}",
            headers={"Authorization": f"token {self.token}"},
            request_timeout=10,
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
            groups = tuple(sorted(json.loads(response.body).get("groups") or []))
        except HTTPClientError as e:
            if e.code != 404:
                raise
            groups = ()
        self._cache[name] = (time.monotonic(), groups)
        return groups


class HubTokens:
    """Mints and revokes tokens of hub users with the service's own token.

    Parameters
    ----------
    api_url : str
        The hub's API URL (``JUPYTERHUB_API_URL``).
    token : str
        The service's own hub token; it needs the ``tokens`` scope and every scope it
        hands out.
    """

    def __init__(self, api_url: str, token: str):
        self.api_url = api_url.rstrip("/")
        self.token = token

    async def issue(
        self, owner: str, note: str, expires_in: int, scopes: list[str]
    ) -> dict[str, Any]:
        """A new token of ``owner``'s (``POST /users/{owner}/tokens``): the hub's answer.

        Raises the hub's ``HTTPClientError`` or an ``OSError``; the caller decides
        whether its work goes on without a token.
        """
        body = {"note": note, "expires_in": expires_in, "scopes": scopes}
        response = await self.request("POST", f"/users/{owner}/tokens", body)
        return json.loads(response.body)

    async def revoke(self, owner: str, token_id: str, what: str) -> None:
        """Revoke a token of ``owner``'s; a failure is logged, not raised.

        The token still expires on its own. ``what`` names it in the log line.
        """
        try:
            await self.request("DELETE", f"/users/{owner}/tokens/{token_id}")
        except HTTPClientError as e:
            if e.code != 404:  # 404: the owner (or an admin) revoked it already
                log.warning("Could not revoke the token of %s: %s", what, e)
        except OSError as e:
            log.warning("Could not revoke the token of %s: %s", what, e)

    async def request(self, method: str, path: str, body: dict | None = None) -> HTTPResponse:
        """``method`` on the hub's API ``path`` with the service's token."""
        request = HTTPRequest(
            f"{self.api_url}{path}",
            method=method,
            body=None if body is None else json.dumps(body),
            headers={"Authorization": f"token {self.token}"},
            request_timeout=10,
        )
        return await AsyncHTTPClient().fetch(request)
