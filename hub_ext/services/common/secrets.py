"""What the scheduler and the deployer share to give runs and replicas their owners' secrets.

- :class:`SecretsResolver` asks the secrets service (``POST api/resolve``) for
  the values a job or deployment names, with the calling service's own hub
  token (which the hub lets through to the secrets service; the service
  refuses any caller but the scheduler and the deployer). Values come back
  for one run or replica at a time and are never stored by the caller.
- :class:`~.scrub.Scrubber` (in :mod:`.scrub`) then removes the values from
  what the run or replica wrote (notebooks, HTML, logs) before anyone reads it.

Shared here because both services do exactly this; neither imports the
secrets service's package (services talk over HTTP only).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

log = logging.getLogger("shipyard.secrets.client")


class SecretsUnavailable(Exception):
    """The values could not be had: a missing secret, or the service did not answer.

    ``str()`` says which secret or what to do; it never holds a value.
    """


class SecretsResolver:
    """Resolves owners' secrets through the secrets service.

    Parameters
    ----------
    url : str
        The secrets service's base URL, ending in ``/services/secrets/``
        (``$SHIPYARD_SECRETS_API_URL``, set by the hub's config). Empty: the
        hub runs no secrets service, and a job naming secrets cannot run.
    token : str
        The calling service's hub API token.
    """

    def __init__(self, url: str, token: str):
        self.url = url.rstrip("/") + "/" if url else ""
        self.token = token

    @classmethod
    def from_environment(cls) -> SecretsResolver:
        """The resolver of a hub-managed service (its URL and token from its environment)."""
        return cls(
            os.environ.get("SHIPYARD_SECRETS_API_URL", ""),
            os.environ.get("JUPYTERHUB_API_TOKEN", ""),
        )

    async def __call__(
        self,
        owner: str,
        names: Sequence[str],
        purpose: str,
        details: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """The values of ``owner``'s secrets ``names``, for ``purpose`` (recorded in the trail).

        Raises
        ------
        SecretsUnavailable
            A name the owner has no secret of (the message names it), or no service.
        """
        if not names:
            return {}
        if not self.url:
            raise SecretsUnavailable(
                f"it needs the secrets {', '.join(names)}, but this hub runs no secrets "
                "service (SHIPYARD_SECRETS=0); ask your admin"
            )
        body = {
            "owner": owner,
            "names": list(names),
            "purpose": purpose,
            "details": {k: str(v) for k, v in (details or {}).items()},
        }
        request = HTTPRequest(
            self.url + "api/resolve",
            method="POST",
            body=json.dumps(body),
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
            request_timeout=15,
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as e:
            message = _message(e)
            log.warning("Secrets of %s for %s refused (%s): %s", owner, purpose, e.code, message)
            raise SecretsUnavailable(message) from None
        except OSError as e:
            raise SecretsUnavailable(
                f"the secrets service did not answer ({e.strerror or e}); try again, or ask "
                "your admin whether it runs"
            ) from None
        values = json.loads(response.body)["values"]
        return {name: values[name] for name in names}


def _message(error: HTTPClientError) -> str:
    try:
        body = json.loads(error.response.body) if error.response is not None else {}
        message = body.get("message")
    except (ValueError, AttributeError):
        message = None
    return message or f"the secrets service answered {error.code}"
