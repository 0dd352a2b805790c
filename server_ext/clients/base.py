"""The one way a server talks to a Shipyard hub service: what the service clients share.

The scheduler (:mod:`server_ext.clients.scheduler.client`) and the deployer
(:mod:`server_ext.clients.deployer.client`) are both hub services behind the hub's proxy at
``<hub>/services/<name>/``, and both are reached the same way from a kernel or the server
extension: the URL from ``$SHIPYARD_<NAME>_URL`` (else ``$JUPYTERHUB_PUBLIC_HUB_URL`` with
``/services/<name>``), the server's own ``$JUPYTERHUB_API_TOKEN`` only ever in the
``Authorization`` header, no redirects followed (a redirect here is a login page), and every
answer that is not a success translated into the client's error, whose ``str()`` is the
service's own ``message`` from its ``{"status", "message", "errors"}`` body. The server
extension's handlers pass requests on with :meth:`ServiceClient.forward`.

That is shared here, in :class:`ServiceClient`, so that the two clients cannot drift apart:
a fix to the URL rules (SECURITY rule 8: no credential in a URL), to the translation of a
proxy's page or the hub's redirect, or to forwarding reaches both. Each client is a subclass
that names its service, its URL variable, its error class (a :class:`ServiceError`) and the
few words that differ (the scheduler's CLI takes ``--token``, the deployer's callers do not);
the module-level helpers each module keeps (``normalise_url``, ``scheduler_url`` /
``deployer_url``, ``path_segment``) call the class methods here. Rejected alternative: one
client class for both services, which would mix the scheduler's and the deployer's API
methods in one namespace.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import requests

#: Seconds any one request may take.
DEFAULT_TIMEOUT = 30.0
#: Response headers the server extension passes on with a forwarded body.
FORWARDED_HEADERS = ("Content-Type", "Content-Disposition")

_Client = TypeVar("_Client", bound="ServiceClient")


class ServiceError(Exception):
    """A refusal or failure the user can act on; ``str()`` is the message to show.

    Parameters
    ----------
    message : str
        The service's ``message`` (what to fix), or what to do when it did not answer.
    status : int, optional
        The HTTP status the service answered with; None when it was not reached.
    errors : list of dict, optional
        The service's per-field errors of a 400 (``{"field", "message"}``).
    """

    def __init__(self, message: str, status: int | None = None, errors: list | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.errors = errors or []


@dataclass(frozen=True)
class Forwarded:
    """A response of the service as it came, for the server extension to pass on."""

    status: int
    headers: dict[str, str]
    body: bytes


class _TokenAuth(requests.auth.AuthBase):
    """``Authorization: token ...``, the header the hub and its services read."""

    def __init__(self, token: str):
        self.token = token

    def __call__(self, request):
        request.headers["Authorization"] = f"token {self.token}"
        return request


class ServiceClient:
    """The transport of a hub service's client; subclasses add one method per API call.

    Parameters
    ----------
    url : str
        The service's base URL, e.g. ``https://hub.example.org/services/scheduler``.
    token : str
        A hub API token of the user (in a server, ``$JUPYTERHUB_API_TOKEN``).
    timeout : float
        Seconds any one request may take.

    Raises
    ------
    ServiceError
        (the subclass's :attr:`error`) For a URL :meth:`normalise_url` refuses, or no token.

    Notes
    -----
    A subclass sets the class attributes below; every message names the service with them.
    """

    #: The service's name in the hub and in messages, e.g. ``"scheduler"``.
    service: ClassVar[str]
    #: The prefix the service serves under, e.g. ``"/services/scheduler"``.
    service_path: ClassVar[str]
    #: The environment variable with the service's URL, e.g. ``"SHIPYARD_SCHEDULER_URL"``.
    url_variable: ClassVar[str]
    #: The client's error class, raised for every refusal and failure.
    error: ClassVar[type[ServiceError]]
    #: Where the token goes instead of a URL, e.g. ``"in JUPYTERHUB_API_TOKEN"``.
    token_advice: ClassVar[str]
    #: What to do for a token the hub refused, e.g. ``"Restart your server ... fresh one."``.
    refused_token_advice: ClassVar[str]
    #: What a path segment names, e.g. ``"an id"``.
    segment_noun: ClassVar[str]

    def __init__(self, url: str, token: str, timeout: float = DEFAULT_TIMEOUT):
        self.url = self.normalise_url(url)
        if not token:
            raise self.error(
                f"No token for the {self.service}: JUPYTERHUB_API_TOKEN is not set. In a "
                "Shipyard server it always is; elsewhere give a hub API token of yours."
            )
        self.timeout = timeout
        self._session = requests.Session()
        # as the session's auth, so a ~/.netrc entry for the hub never replaces the token
        self._session.auth = _TokenAuth(token)

    @classmethod
    def from_environment(
        cls: type[_Client],
        url: str | None = None,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> _Client:
        """The service of this server (or ``url``), as the user of ``$JUPYTERHUB_API_TOKEN``.

        Parameters
        ----------
        url : str, optional
            The service's URL; default :meth:`service_url`.
        token : str, optional
            A hub API token; default ``$JUPYTERHUB_API_TOKEN``.
        timeout : float
            Seconds any one request may take.
        """
        return cls(
            url or cls.service_url(), token or os.environ.get("JUPYTERHUB_API_TOKEN", ""), timeout
        )

    # ------------------------------------------------------------- URLs

    @classmethod
    def normalise_url(cls, url: str) -> str:
        """``url`` without a trailing slash, with the service prefix when it has no path.

        Parameters
        ----------
        url : str
            An http(s) URL of the service, or of the host it serves on.

        Returns
        -------
        str
            The URL the client calls below.

        Raises
        ------
        ServiceError
            (:attr:`error`) For a URL that is not http(s), or that carries a credential (a
            user, a password or a ``token=`` query): tokens go in a header, never in a URL.
        """
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise cls.error(
                f"{url!r} is not the {cls.service}'s URL: give an http(s) URL such as "
                f"https://hub.example.org{cls.service_path}"
            )
        if parts.username is not None or parts.password is not None or "token" in parts.query:
            raise cls.error(
                f"The {cls.service} URL carries a credential: give the token "
                f"{cls.token_advice} instead, never in a URL (URLs end up in logs and shell "
                "history)."
            )
        path = parts.path.rstrip("/") or cls.service_path
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))

    @classmethod
    def service_url(cls, environ: Mapping[str, str] | None = None) -> str:
        """Where this server reaches the service: ``$<url_variable>``, else the hub's.

        Parameters
        ----------
        environ : mapping, optional
            The environment to read; default ``os.environ``.

        Raises
        ------
        ServiceError
            (:attr:`error`) When neither variable is set, or the URL is refused.
        """
        environ = os.environ if environ is None else environ
        explicit = environ.get(cls.url_variable)
        if explicit:
            return cls.normalise_url(explicit)
        public_hub = environ.get("JUPYTERHUB_PUBLIC_HUB_URL")
        if public_hub:
            base = public_hub.rstrip("/")
            base = base[: -len("/hub")] if base.endswith("/hub") else base
            return cls.normalise_url(base + cls.service_path)
        raise cls.error(
            f"The {cls.service}'s address is unknown here: {cls.url_variable} is not set. "
            "Restart your server from the hub to get it, or set it to your hub's URL followed "
            f"by {cls.service_path}."
        )

    @classmethod
    def path_segment(cls, value: str) -> str:
        """``value`` as one quoted path segment: never a way into another route.

        Raises
        ------
        ServiceError
            (:attr:`error`) For ``.`` and ``..``; a ``/`` is quoted.
        """
        if value in (".", ".."):
            raise cls.error(f"{value!r} is not {cls.segment_noun}.")
        return quote(value, safe="")

    # ------------------------------------------------------------- transport

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """``method`` on ``path`` below the service's URL; raises only when it is not reached."""
        try:
            return self._session.request(
                method,
                f"{self.url}/{path}",
                timeout=self.timeout,
                allow_redirects=False,
                **kwargs,
            )
        except requests.RequestException as exc:
            raise self.error(
                f"Cannot reach the {self.service} at {self.url} ({type(exc).__name__}); ask "
                "your admin whether it runs."
            ) from None

    def _check(self, response: requests.Response) -> requests.Response:
        """The one translator: any answer that is not a success becomes :attr:`error`."""
        if response.status_code < 300:
            return response
        raise self._refusal(response)

    def _refusal(self, response: requests.Response) -> ServiceError:
        """The error an answer that is not a success means: the service's words if it sent any."""
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"]:
            return self.error(body["message"], status, body.get("errors"))
        service, path = self.service, self.service_path
        if status < 400:  # the hub's redirect of a path no service has: a wrong URL
            return self.error(
                f"{self.url} answered with a redirect to "
                f"{response.headers.get('Location', 'elsewhere')}, not the {service}'s API: "
                f"is it the {service}'s URL (it ends in {path}), and does your hub run "
                f"the {service}? Ask your admin.",
                status,
            )
        if status in (401, 403):
            return self.error(
                f"The hub did not let the token through to the {service} at {self.url} "
                f"(HTTP {status}): it is missing, expired or lacks "
                f"access:services!service={service}. {self.refused_token_advice}",
                status,
            )
        if status == 404:
            return self.error(
                f"Nothing answers at {response.url} (HTTP 404): is {self.url} the {service}'s "
                f"URL (it ends in {path})?",
                status,
            )
        return self.error(
            f"Cannot reach the {service} at {self.url} (HTTP {status}); ask your admin "
            "whether it runs.",
            status,
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """A JSON call; the decoded body (None for 204)."""
        response = self._check(self._send(method, path, **kwargs))
        if response.status_code == 204:
            return None
        try:
            return response.json()
        except ValueError:
            raise self.error(
                f"{self.url}/{path} answered with a web page, not the {self.service}'s API: is "
                f"{self.url} the {self.service}'s URL, and the token valid?",
                response.status_code,
            ) from None

    def forward(
        self, method: str, path: str, query: str = "", body: bytes | None = None
    ) -> Forwarded:
        """Send a request as it came and return the answer as it came, errors included.

        For the server extension's handlers, which pass the service's status and JSON error
        body on unchanged. An answer that is not a success and not the service's JSON (the
        proxy's page when the service is down, the hub's redirect for a wrong URL) is not the
        service's: it becomes a 502 in the service's error schema, with the message
        :meth:`_check` would give.

        Parameters
        ----------
        method : str
            The HTTP method.
        path : str
            The path below the service's URL, e.g. ``api/jobs``.
        query : str
            The query string as it came, without ``?``.
        body : bytes, optional
            A JSON body.

        Returns
        -------
        Forwarded
            The status, the :data:`FORWARDED_HEADERS` the service sent, and the body.

        Raises
        ------
        ServiceError
            (:attr:`error`) Only for a service that cannot be reached at all.
        """
        headers = {"Content-Type": "application/json"} if body else {}
        response = self._send(
            method, f"{path}?{query}" if query else path, data=body or None, headers=headers
        )
        status = response.status_code
        if status >= 300 and "json" not in response.headers.get("Content-Type", ""):
            error = self._refusal(response)
            data = {"status": 502, "message": error.message, "errors": error.errors}
            return Forwarded(502, {"Content-Type": "application/json"}, json.dumps(data).encode())
        kept = {k: response.headers[k] for k in FORWARDED_HEADERS if k in response.headers}
        return Forwarded(status, kept, response.content)
