"""MLflow's UI through the gateway: its page loads a script that sends the hub's XSRF token.

A browser reaches the gateway with the hub's login cookie. JupyterHub accepts that
cookie on a fetch or XMLHttpRequest only when the request also carries the ``_xsrf``
cookie's value in an ``X-XSRFToken`` header (``jupyterhub/_xsrf_utils.py``): a page of
another origin can make the browser send the cookie but cannot read ``_xsrf``. MLflow's
frontend does not send that header, so every ``ajax-api`` and ``graphql`` call of an
ordinary hub login was refused and the UI showed no data.

The gateway therefore puts ``<script src=".../shipyard/xsrf.js">`` into MLflow's page,
ahead of MLflow's own scripts; the script (``xsrf.js`` beside this module) adds the
header to MLflow's own requests under the service's prefix, as JupyterLab does for its
requests. A request without the token is still refused; only MLflow's public bundle is
read with the cookie alone, from the same origin (``GatewayHandler.check_xsrf_cookie``).

Rejected alternatives: turning the XSRF check off for the service (any page the user
visits could then act with their login); accepting the cookie on data requests whose
``Sec-Fetch-Site`` is ``same-origin`` (every user's server shares the hub's origin, so a
page of another user's server would pass); an inline script (refused by any
``script-src`` policy without ``'unsafe-inline'``; a script from the page's own origin
runs wherever MLflow's bundle, from the same origin, runs, and takes the nonce of
MLflow's scripts when they have one).
"""

from __future__ import annotations

import gzip
import html
import re
import zlib
from pathlib import Path

from jupyterhub.services.auth import HubOAuthenticated
from tornado import web

#: The script's path under the service prefix.
SCRIPT_PATH = "shipyard/xsrf.js"
_SCRIPT = (Path(__file__).parent / "xsrf.js").read_bytes()
_HEAD = re.compile(rb"<head(?:\s[^>]*)?>", re.IGNORECASE)
_NONCE = re.compile(rb"<script\b[^>]*?\snonce=[\"']?([^\"'\s>]+)", re.IGNORECASE)
_DECODERS = {
    "gzip": gzip.decompress,
    "x-gzip": gzip.decompress,
    "deflate": zlib.decompress,
}


class NotInjectable(ValueError):
    """The page cannot carry the script (an encoding the gateway cannot read, no ``<head>``)."""


def is_ui_page(method: str, path: str) -> bool:
    """Whether the request is for MLflow's single page (its routes live after ``#``)."""
    return method == "GET" and path == "/"


def with_script(body: bytes, content_encoding: str | None, prefix: str) -> bytes:
    """MLflow's HTML ``body`` with the XSRF script first in its ``<head>``, unencoded.

    Parameters
    ----------
    body
        The page as MLflow sent it.
    content_encoding
        Its ``Content-Encoding`` header, if any: ``gzip`` and ``deflate`` are decoded
        (the answer goes out unencoded, so no compressed length or encoding is left
        stale); another raises :class:`NotInjectable`.
    prefix
        The service prefix, ``/services/tracking/``.
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding != "identity":
        decode = _DECODERS.get(encoding)
        if decode is None:
            raise NotInjectable(f"cannot decode Content-Encoding {content_encoding!r}")
        try:
            body = decode(body)
        except (OSError, zlib.error, EOFError) as e:
            raise NotInjectable(f"the {encoding} page does not decode: {e}") from None
    head = _HEAD.search(body)
    if head is None:
        raise NotInjectable("the page has no <head>")
    nonce = _NONCE.search(body)
    attributes = (
        f' nonce="{html.escape(nonce.group(1).decode("ascii", "replace"))}"' if nonce else ""
    )
    src = html.escape(prefix.rstrip("/") + "/" + SCRIPT_PATH)
    tag = f'<script src="{src}"{attributes}></script>'.encode()
    return body[: head.end()] + tag + body[head.end() :]


class XsrfScriptHandler(HubOAuthenticated, web.RequestHandler):
    """GET /services/tracking/shipyard/xsrf.js: the script, for logged-in hub users.

    A ``<script src>`` of the page's own origin is a no-cors request, which JupyterHub
    authenticates by cookie without the token. Anonymous callers get 401, not the hub's
    login: a script cannot log in, and a login through the OAuth callback would replace
    the cookies under the page's other requests.
    """

    def get(self) -> None:
        if self.current_user is None:
            raise web.HTTPError(401, "Log in on the hub first.")
        self.set_header("Content-Type", "text/javascript; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")  # revalidated by ETag on each page load
        self.finish(_SCRIPT)
