"""The tracking gateway: hub identity in, MLflow's permission model behind.

Every request under ``/services/tracking/`` is authenticated by the hub
(an API token, as ``Authorization: token …`` or ``Bearer …``, which is what
MLflow's client sends with ``MLFLOW_TRACKING_TOKEN``; or the hub's OAuth login
for browsers), then checked against :mod:`.policies`, then forwarded to MLflow
with the gateway's secret and the hub user's name. Cookies and credentials of
the caller never reach MLflow.

A browser's login is the hub's cookie, which JupyterHub accepts on a fetch only with
its XSRF token in a header; MLflow's page gets a script that sends it (:mod:`.ui`).

Errors are answered in MLflow's own JSON shape (``error_code`` and
``message``) so MLflow's clients show them as they show MLflow's.
"""

from __future__ import annotations

import json
import re
import time

from jupyterhub.services.auth import HubOAuthenticated
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from tornado import httpclient, web

from ..common.web import METRICS_SCOPE, may_read_metrics, metrics_only
from . import audit as audit_trail
from .mlflow_auth import ADMIN_HEADER, SECRET_HEADER, USER_HEADER
from .mlflow_process import BOOTSTRAP_ADMIN
from .policies import Access, decide
from .ui import NotInjectable, is_ui_page, with_script

#: Not forwarded either way: per-connection headers, and the caller's credentials.
_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}
_CALLER_ONLY = {"authorization", "cookie"}
#: Not forwarded for MLflow's page, which the gateway rewrites: it asks for the whole
#: page, unencoded (a 304 or a compressed body could not carry the script).
_PAGE_REQUEST_ONLY = {"accept-encoding", "if-none-match", "if-modified-since", "range"}
#: Not passed back with the rewritten page: they describe MLflow's bytes, not the gateway's.
_PAGE_RESPONSE_ONLY = {"content-encoding", "etag", "last-modified", "content-md5"}
_CREATE_EXPERIMENT = re.compile(r"/(?:ajax-)?api/2\.0/mlflow/experiments/create")
_RENAME_EXPERIMENT = re.compile(r"/(?:ajax-)?api/2\.0/mlflow/experiments/update")
_CREATE_RUN = re.compile(r"/(?:ajax-)?api/2\.0/mlflow/runs/create")
_TAG_WRITE = re.compile(
    r"/(?:ajax-)?api/2\.0/mlflow/(?:experiments/(?:set-experiment-tag|delete-tag)"
    r"|registered-models/(?:set-tag|delete-tag))"
)


REQUESTS = Counter(
    "shipyard_tracking_requests",
    "Requests through the tracking gateway, by route policy and answer.",
    ["access", "code"],
)
LATENCY = Histogram(
    "shipyard_tracking_request_duration_seconds",
    "Time from the gateway receiving a request to its answer, by route policy.",
    ["access"],
)


class GatewayError(web.HTTPError):
    """An answer in MLflow's error shape."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(status, reason=None)
        self.code, self.message = code, message


class GatewayHandler(HubOAuthenticated, web.RequestHandler):
    """Forwards one request to MLflow after the hub login and the route policy."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")

    _access = "none"  # the policy that applied, for the metrics

    def prepare(self) -> None:
        self._started = time.perf_counter()

    def on_finish(self) -> None:
        REQUESTS.labels(self._access, str(self.get_status())).inc()
        LATENCY.labels(self._access).observe(time.perf_counter() - self._started)
        if self.path_args:
            audit_trail.record(self, self.path_args[0])

    @property
    def mlflow_url(self) -> str:
        return self.settings["mlflow_url"]

    @property
    def prefix(self) -> str:
        return self.settings["service_prefix"].rstrip("/")

    def write_error(self, status_code: int, **kwargs) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, GatewayError):
            code, message = error.code, error.message
        elif status_code == 403:
            code, message = "PERMISSION_DENIED", "Your hub token does not grant access to tracking."
        else:
            code, message = "INTERNAL_ERROR", self._reason
        self.audit_reason = message
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error_code": code, "message": message}))

    def _is_api_call(self, path: str) -> bool:
        """A client's call (answered 401 without a login), not a browser's page view.

        Only a page view goes to the hub's login. A fetch, a script or MLflow's manifest
        sent there would, while the hub session lasts, come back through the OAuth
        callback with a new login cookie and a new ``_xsrf`` cookie, and the page's
        requests in flight would then carry a stale XSRF token and be refused.
        """
        if self.request.headers.get("Authorization"):
            return True
        if self.request.headers.get("Sec-Fetch-Mode", "navigate") != "navigate":
            return True
        return path.lstrip("/").startswith(("api/", "ajax-api/", "graphql", "shipyard/"))

    def check_xsrf_cookie(self) -> None:
        """JupyterHub's XSRF rule, except for same-origin reads of MLflow's bundle.

        Browsers load fonts and web workers in ``cors`` and ``same-origin`` modes, which
        cannot carry the token; JupyterHub accepts the login cookie without it only for
        page views and ``no-cors`` reads. MLflow's ``static-files/`` are the same public
        files for everyone, so a read of them from this origin (``Sec-Fetch-Site``, which
        a page cannot set) needs no token; everything else does.
        """
        if (
            self.request.method in ("GET", "HEAD")
            and self.request.headers.get("Sec-Fetch-Site") == "same-origin"
            and self.request.path.startswith(self.prefix + "/static-files/")
        ):
            return
        super().check_xsrf_cookie()

    def _refused_for_xsrf(self) -> bool:
        """Whether the request has the hub login cookie but not the XSRF token it needs."""
        if not self.get_cookie(self.hub_auth.cookie_name):
            return False
        try:
            self.check_xsrf_cookie()
        except web.HTTPError:
            return True
        return False  # the cookie's login expired: a token is needed as for anyone

    # every method is the same forward
    async def get(self, path: str) -> None:
        if self.current_user is None and self._is_api_call(path):
            if self._refused_for_xsrf():
                # a page of another origin, or an MLflow page from before the script
                raise GatewayError(
                    401,
                    "UNAUTHENTICATED",
                    "A request with the hub's login cookie needs the X-XSRFToken header "
                    "holding the _xsrf cookie's value, which MLflow's pages here send: reload "
                    "the page; other clients send a hub API token.",
                )
            raise GatewayError(
                401,
                "UNAUTHENTICATED",
                "A valid hub API token is needed (in a Shipyard kernel MLFLOW_TRACKING_TOKEN "
                "holds one; elsewhere create one on the hub's token page).",
            )
        forwarding = self._forward_logged_in(path)
        if forwarding is not None:  # None: redirected to the login page
            await forwarding

    head = post = put = patch = delete = get

    @web.authenticated  # browsers without a login go to the hub's login page first
    def _forward_logged_in(self, path: str):
        return self.forward(path)

    def _check(self, path: str, user: dict) -> None:
        segments = path.split("/")
        if ".." in segments or "." in segments or "\\" in path:
            raise GatewayError(400, "MALFORMED_REQUEST", "Paths with '.' or '..' are refused.")
        if user["name"] == BOOTSTRAP_ADMIN:
            raise GatewayError(403, "PERMISSION_DENIED", "This account name is reserved.")
        if metrics_only(user):
            raise GatewayError(
                403, "PERMISSION_DENIED", "This token may read shipyard/metrics and nothing else."
            )
        decision = decide(self.request.method, path)
        self._access = decision.access.value
        if decision.access is Access.DENY:
            raise GatewayError(
                403, "PERMISSION_DENIED", f"Not offered by Shipyard: {decision.why}."
            )
        if decision.access is Access.ADMIN and not user.get("admin"):
            raise GatewayError(
                403, "PERMISSION_DENIED", f"Only hub admins may use this: {decision.why}."
            )

    def _checked_body(self, path: str, user: dict) -> bytes:
        """The body to forward; experiment and run creation are checked here, MLflow checks the rest.

        A new run's ``user_id`` is always the hub user who creates it: the MLflow
        client fills it from the local account name (``sytrk-dora`` in a scheduled
        job, anything at all in a hand-made request), and MLflow stores what it is sent.
        """
        body = self.request.body
        creating = _CREATE_EXPERIMENT.fullmatch(path)
        renaming = _RENAME_EXPERIMENT.fullmatch(path)
        new_run = _CREATE_RUN.fullmatch(path)
        if not (creating or renaming or new_run) or self.request.method != "POST":
            return body
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            raise GatewayError(400, "MALFORMED_REQUEST", "The request body is not JSON.") from None
        if not isinstance(data, dict):
            raise GatewayError(400, "MALFORMED_REQUEST", "The request body must be a JSON object.")
        if new_run:
            data["user_id"] = user["name"]
            tags = data.get("tags")
            if isinstance(tags, list):
                data["tags"] = [
                    t for t in tags if not (isinstance(t, dict) and t.get("key") == "mlflow.user")
                ] + [{"key": "mlflow.user", "value": user["name"]}]
            return json.dumps(data).encode()
        if creating and data.get("artifact_location"):
            raise GatewayError(
                400,
                "INVALID_PARAMETER_VALUE",
                "Shipyard sets where artifacts are stored (one folder per experiment in the "
                "tracking server's store); create the experiment without artifact_location.",
            )
        name = data.get("name") if creating else data.get("new_name")
        if isinstance(name, str) and "/" in name and not name.startswith(f"{user['name']}/"):
            raise GatewayError(
                400,
                "INVALID_PARAMETER_VALUE",
                f"Experiment names with '/' start with your user name: '{user['name']}/…'.",
            )
        return body

    async def forward(self, path: str) -> None:
        user = self.current_user
        path = "/" + path.lstrip("/")
        self._check(path, user)
        if not self.settings["mlflow_ready"]:
            self.set_header("Retry-After", "5")
            raise GatewayError(
                503,
                "TEMPORARILY_UNAVAILABLE",
                "The tracking server is starting; retry in a moment.",
            )
        try:
            await self.settings["shares"].sync(user)
        except (OSError, httpclient.HTTPClientError, ValueError) as e:
            # the request itself still goes through, with the grants the user has
            self.log.warning("Could not apply group shares for %s: %s", user["name"], e)
        body = self._checked_body(path, user)
        page = is_ui_page(self.request.method, path)
        dropped = _HOP | _CALLER_ONLY | (_PAGE_REQUEST_ONLY if page else set())
        headers = {
            k: v
            for k, v in self.request.headers.get_all()
            if k.lower() not in dropped and not k.lower().startswith("x-shipyard-")
        }
        if page:
            # a page view (navigation) sets the _xsrf cookie anew when the login changed
            # since it was set, so the page's script always finds the current token
            self.xsrf_token  # noqa: B018 - read for its effect
        headers[SECRET_HEADER] = self.settings["gateway_secret"]
        headers[USER_HEADER] = user["name"]
        headers[ADMIN_HEADER] = "1" if user.get("admin") else "0"
        query = f"?{self.request.query}" if self.request.query else ""
        request = httpclient.HTTPRequest(
            f"{self.mlflow_url}{self.prefix}{path}{query}",
            method=self.request.method,
            headers=headers,
            body=body if self.request.method in ("POST", "PUT", "PATCH", "DELETE") else None,
            allow_nonstandard_methods=True,
            follow_redirects=False,
            request_timeout=self.settings["request_timeout"],
            decompress_response=False,
        )
        try:
            response = await httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
        except (OSError, httpclient.HTTPClientError) as e:
            raise GatewayError(
                503, "TEMPORARILY_UNAVAILABLE", f"The MLflow server is not answering: {e}"
            ) from None
        if response.code == 599:
            raise GatewayError(
                503,
                "TEMPORARILY_UNAVAILABLE",
                f"The MLflow server is not answering: {response.error}",
            )
        if response.code in (401, 403) and not response.headers.get("Content-Type", "").startswith(
            "application/json"
        ):
            # MLflow's permission checks answer in plain text; MLflow's clients and
            # Shipyard's read JSON
            raise GatewayError(
                403,
                "PERMISSION_DENIED",
                "Permission denied: it belongs to another user, who can share it with you.",
            )
        if response.code == 200 and _TAG_WRITE.fullmatch(path):
            self.settings["shares"].invalidate()  # a share may have changed
        response_body, skipped = response.body, _HOP | {"set-cookie"}
        if page and response.code == 200:
            try:
                response_body = with_script(
                    response.body, response.headers.get("Content-Encoding"), self.prefix
                )
                skipped |= _PAGE_RESPONSE_ONLY
            except NotInjectable as e:
                # the page still opens; its data calls will be refused, which says why
                self.log.error("MLflow's page cannot carry the XSRF script: %s", e)
        self.set_status(response.code, response.reason)
        self.clear_header("Content-Type")
        for key, value in response.headers.get_all():
            if key.lower() not in skipped:
                self.add_header(key, value)
        if response_body and self.request.method != "HEAD":
            self.write(response_body)
        self.finish()


class MetricsHandler(HubOAuthenticated, web.RequestHandler):
    """GET /services/tracking/shipyard/metrics: Prometheus metrics.

    For hub admins and tokens with the ``read:metrics`` scope, as every service's.
    """

    @web.authenticated
    def get(self) -> None:
        if not self.current_user.get("admin") and not may_read_metrics(self.current_user):
            raise web.HTTPError(
                403, f"Metrics are for hub admins and tokens with the {METRICS_SCOPE} scope."
            )
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest())
