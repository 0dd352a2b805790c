"""The services' one way to send a notification: apprise, with the SSRF guard on users' URLs.

The scheduler (a run has ended) and the alerts service (an alert starts or
ends) both send through this module, so e-mail, chat and webhooks behave the
same in both and are configuration, not code (https://github.com/caronc/apprise):

- :func:`instantiate` checks an apprise URL (a ValueError saying why not);
  :func:`redact` is all of one that may be logged or shown (scheme and host:
  a URL may hold a password or a webhook token).
- A user's URL passes :func:`check_target`: its scheme must be one the admin
  allows, and a server the user names (a ``json``/``jsons`` webhook, a
  ``mailto``/``mailtos`` SMTP server) must resolve to public addresses
  (:mod:`.webhooks`). Chat schemes (``slack``, ``msteams``, ``discord``) go to
  their vendors' fixed hosts.
- A webhook (a ``json(s)://`` target, or the scheduler's plain ``http(s)://``
  ``webhook_url``) is posted by the service itself, :func:`post_json`, to
  exactly the addresses that were checked (DNS pinned). Apprise's own
  ``json`` plugin would resolve the name again when it connects, which is the
  DNS-rebinding gap the pin closes. A ``mailto`` server is checked the same
  way, but apprise's SMTP client resolves the name again itself: that is the
  one gap, which is why ``mailto`` can be left out of the allowed schemes.
- Everything else goes to apprise (:func:`notify_apprise`), in a thread:
  apprise's plugins block.
- :func:`each_alone` runs a notification's sends side by side, so one
  recipient that fails (or a bug in one channel) never stops another.

:func:`mailto_url` turns an SMTP server's settings (the scheduler's
``Notifier.smtp_*``) into the ``mailto(s)://`` URL apprise sends through.

Rejected alternatives: a hand-written SMTP client and webhook poster per
service (the scheduler had one; two copies of the same rules drift apart);
apprise's ``json`` plugin for users' webhooks (no pin, see above).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import threading
from collections.abc import Awaitable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import apprise
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from .webhooks import PinnedResolver, resolve_public

__all__ = [
    "MAIL_SCHEMES",
    "WEBHOOK_SCHEMES",
    "Delivery",
    "DeliveryError",
    "Target",
    "check_target",
    "each_alone",
    "instantiate",
    "mailto_url",
    "notify_apprise",
    "pin",
    "post_json",
    "redact",
    "scheme_of",
    "send_target",
]

#: Generic webhook schemes the service posts itself (pinned to the checked addresses).
WEBHOOK_SCHEMES = ("json", "jsons")
#: Schemes whose server a user names: checked for a public address.
MAIL_SCHEMES = ("mailto", "mailtos")
#: Longest apprise URL accepted.
MAX_URL = 2048

#: What apprise calls the sender (the ``X-Application`` header of mails, a default From name).
ASSET = apprise.AppriseAsset(app_id="Shipyard", app_desc="Shipyard notifications")


class DeliveryError(Exception):
    """A webhook did not take a notification; the message says why (never the URL)."""


@dataclass(frozen=True)
class Delivery:
    """How one send went: ``ok``, or ``why`` not (never a URL nor a password)."""

    ok: bool
    why: str = ""


@dataclass(frozen=True)
class Target:
    """A user's apprise URL that passed :func:`check_target`, ready to send to."""

    url: str
    plugin: Any
    #: The checked addresses of its server; None where there is nothing to pin.
    addresses: list[tuple[int, tuple]] | None


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower()


def instantiate(url: str):
    """Apprise's plugin for ``url``, or raise ValueError saying why it is not one."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL or "\n" in url:
        raise ValueError(f"a target is an apprise URL of at most {MAX_URL} characters on one line")
    plugin = apprise.Apprise.instantiate(url, asset=ASSET, suppress_exceptions=True)
    if plugin is None:
        scheme = url.split("://", 1)[0] if "://" in url else ""
        raise ValueError(
            f"not an apprise URL apprise can use (scheme {scheme!r}); see "
            "https://github.com/caronc/apprise/wiki for the forms"
        )
    return plugin


def redact(url: str) -> str:
    """``scheme://host/…``: what may be shown or logged of an apprise URL."""
    try:
        plugin = instantiate(url)
    except ValueError:
        return f"{scheme_of(url)}://…"
    host = getattr(plugin, "smtp_host", None) or getattr(plugin, "host", None) or ""
    if scheme_of(url) not in (*WEBHOOK_SCHEMES, *MAIL_SCHEMES):
        host = ""  # a chat scheme's "host" is a token
    return f"{scheme_of(url)}://{host}/…" if host else f"{scheme_of(url)}://…"


async def pin(url: str, allow_private: bool) -> list[tuple[int, tuple]] | None:
    """The checked public addresses of ``url``'s host, None with ``allow_private``.

    Raises ValueError saying why the host is refused (:func:`.webhooks.resolve_public`).
    """
    return None if allow_private else await resolve_public(url)


async def check_target(url: str, schemes: Iterable[str], allow_private: bool) -> Target:
    """Check a user's apprise URL; raise ValueError saying why it cannot be used.

    Parameters
    ----------
    url : str
        The apprise URL.
    schemes : iterable of str
        The schemes users may use (the admin's setting).
    allow_private : bool
        Skip the public-address check of the server the URL names.
    """
    plugin = instantiate(url)
    scheme = scheme_of(url)
    schemes = list(schemes)
    if scheme not in schemes:
        raise ValueError(
            f"the scheme {scheme!r} is not one users may use here (allowed: {', '.join(schemes)})"
        )
    if scheme in WEBHOOK_SCHEMES:
        host = plugin.host
    elif scheme in MAIL_SCHEMES:
        host = getattr(plugin, "smtp_host", None) or plugin.host
    else:
        return Target(url, plugin, None)
    return Target(url, plugin, await pin(f"http://{host}/", allow_private))


async def post_json(
    url: str,
    payload: dict[str, Any],
    *,
    addresses: list[tuple[int, tuple]] | None,
    timeout: float,
    user_agent: str,
    headers: dict[str, str] | None = None,
    username: str | None = None,
    password: str | None = None,
) -> None:
    """POST ``payload`` as JSON to ``url``, connecting to ``addresses`` only (unless None).

    Redirects are not followed (a redirect could lead anywhere). Raises
    :class:`DeliveryError` when the webhook does not answer with a 2xx.
    """
    request = HTTPRequest(
        url,
        method="POST",
        body=json.dumps(payload, default=str),
        headers={
            "Content-Type": "application/json",
            "User-Agent": user_agent,
            **(headers or {}),
        },
        auth_username=username or None,
        auth_password=password or None,
        request_timeout=timeout,
        follow_redirects=False,
    )
    if addresses is None:
        client = AsyncHTTPClient()
    else:  # connect to the addresses just checked, never to a second answer of the DNS
        client = AsyncHTTPClient(force_instance=True, resolver=PinnedResolver(addresses))
    try:
        await client.fetch(request)
    except HTTPClientError as e:
        if e.code == 599:  # tornado's code for no answer (a timeout, a closed connection)
            raise DeliveryError(f"the webhook did not answer: {e.message}") from None
        raise DeliveryError(f"the webhook answered {e.code} {e.message or ''}".strip()) from None
    except OSError as e:
        raise DeliveryError(f"the webhook could not be reached: {e.strerror or e}") from None
    finally:
        if addresses is not None:
            client.close()


async def notify_apprise(urls: Iterable[Any], title: str, body: str) -> Delivery:
    """Send a plain-text notification through apprise to ``urls`` (URLs or plugins).

    ``ok`` when every one of them took it; otherwise ``why`` holds what apprise
    said about it (:class:`_Reasons`).
    """
    notifier = apprise.Apprise(asset=ASSET)
    for url in urls:
        notifier.add(url)
    if not len(notifier):
        return Delivery(False, "no URL apprise can use")

    def send() -> Delivery:
        with _REASONS.capture() as said:
            ok = notifier.notify(title=title, body=body, body_format=apprise.NotifyFormat.TEXT)
        return Delivery(bool(ok), "" if ok else "; ".join(said) or "apprise gave no reason")

    return await asyncio.to_thread(send)


class _Reasons(logging.Filter):
    """Keeps what apprise says about a failed send, for the send that failed.

    Apprise reports a failure only in its log: a warning ("Connection error
    while submitting email …") and, at DEBUG, the cause in its plugins' common
    form "Socket Exception: (535, b'Authentication failed')". This filter on
    the ``apprise`` logger lowers the logger to DEBUG once, keeps those records
    for a send inside :meth:`capture` (a context variable: apprise runs a
    plugin in a worker thread with a copy of the caller's context), and passes
    on to the logger's handlers only what the logger let through before, so
    nothing else changes for whoever reads apprise's log. Rejected:
    ``apprise.LogCapture``, which changes the logger for every thread while one
    send runs; the ``log_level`` of apprise's own per-call capture, which
    cannot see the DEBUG records the logger's level drops.
    """

    def __init__(self):
        super().__init__()
        self.threshold = logging.WARNING
        self.installed = False
        self.lock = threading.Lock()
        self.current: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
            "shipyard_apprise_reasons", default=None
        )

    def install(self) -> None:
        with self.lock:
            if self.installed:
                return
            logger = logging.getLogger("apprise")
            self.threshold = logger.getEffectiveLevel()
            if self.threshold > logging.DEBUG:
                logger.setLevel(logging.DEBUG)
            logger.addFilter(self)
            self.installed = True

    @contextmanager
    def capture(self):
        self.install()
        said: list[str] = []
        token = self.current.set(said)
        try:
            yield said
        finally:
            self.current.reset(token)

    def filter(self, record: logging.LogRecord) -> bool:
        said = self.current.get()
        if said is not None and (
            record.levelno >= logging.WARNING or "Exception:" in str(record.msg)
        ):
            said.append(record.getMessage()[:300])
        return record.levelno >= self.threshold


_REASONS = _Reasons()


def json_webhook_url(plugin) -> str:
    """The http(s) URL a ``json(s)://`` target's plugin posts to."""
    scheme = "https" if plugin.secure else "http"
    port = f":{plugin.port}" if plugin.port else ""
    return f"{scheme}://{plugin.host}{port}{plugin.fullpath or '/'}"


async def send_target(
    target: Target,
    title: str,
    body: str,
    payload: dict[str, Any],
    *,
    timeout: float,
    user_agent: str,
) -> Delivery:
    """Send to one checked user target: a webhook gets ``payload`` (pinned), others apprise's.

    Never raises for a recipient that fails: the :class:`Delivery` says how it went.
    """
    if scheme_of(target.url) in WEBHOOK_SCHEMES:
        plugin = target.plugin
        try:
            await post_json(
                json_webhook_url(plugin),
                payload,
                addresses=target.addresses,
                timeout=timeout,
                user_agent=user_agent,
                headers=getattr(plugin, "headers", None) or {},
                username=plugin.user,
                password=plugin.password,
            )
        except DeliveryError as e:
            return Delivery(False, str(e))
        return Delivery(True)
    return await notify_apprise([target.plugin], title, body)


def mailto_url(
    *,
    host: str,
    port: int,
    to: Iterable[str],
    mail_from: str,
    username: str = "",
    password: str = "",
    starttls: bool = False,
    ssl: bool = False,
    timeout: float = 10.0,
) -> str:
    """The apprise ``mailto(s)://`` URL that sends through one SMTP server.

    ``ssl`` connects over TLS from the start (``mailtos``, ``mode=ssl``),
    ``starttls`` upgrades a plain connection (``mailtos``, ``mode=starttls``),
    neither sends in the clear (``mailto``). Apprise verifies the server's
    certificate in both TLS modes and logs in when both ``username`` and
    ``password`` are given. It sends one mail per recipient, so recipients do
    not see one another's addresses. Every part is percent-encoded, so a
    password with ``@``, ``/`` or ``?`` in it stays a password.
    """
    secure = ssl or starttls
    login = ""
    if username:
        login = quote(username, safe="")
        if password:
            login += ":" + quote(password, safe="")
        login += "@"
    server = f"[{host}]" if ":" in host else host
    query = {
        "smtp": host,
        "from": mail_from,
        "to": ",".join(to),
        "format": "text",
        "cto": f"{timeout:g}",
    }
    if secure:
        query["mode"] = "ssl" if ssl else "starttls"
    scheme = "mailtos" if secure else "mailto"
    return f"{scheme}://{login}{server}:{port}/?{urlencode(query, quote_via=quote, safe='')}"


async def each_alone(log: logging.Logger, sends: Iterable[Awaitable[Any]]) -> None:
    """Await ``sends`` side by side; one that raises is logged and stops no other."""
    for outcome in await asyncio.gather(*sends, return_exceptions=True):
        if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
            log.error("A notification channel failed", exc_info=outcome)
