"""Telling people about an alert: the admins' apprise URLs, and the owner's own targets.

Every notification goes through apprise (https://github.com/caronc/apprise),
so e-mail, Slack, Teams, Matrix, Discord and webhooks are configuration, not
code; the sending and its checks are the services' shared ones
(:mod:`hub_ext.services.common.notify`), the scheduler's too. Two kinds of
recipients:

- **Admins** (:attr:`AlertNotifier.admin_urls`): the admin's configuration,
  trusted, handed to apprise as written; every alert goes there.
- **The owner** (their targets, ``PUT api/targets``): a user's URLs, so they
  may only use the schemes in :attr:`AlertNotifier.user_schemes`, and a
  server they name must have a public address
  (:func:`~hub_ext.services.common.notify.check_target`): a generic webhook
  (``json://``, ``jsons://``) is posted by the service itself to exactly the
  public addresses it checked (DNS pinned); a ``mailto://`` target's SMTP
  server is checked the same way before apprise connects (apprise resolves
  the name again itself: a DNS answer that changes in between is the one gap,
  which is why ``mailto`` can be left out of ``user_schemes``). Chat schemes
  (``slack``, ``msteams``, ``discord``) go to their vendors' fixed hosts.

A target is never logged nor answered back in full: it may hold a password
or a webhook token; :func:`redact` shows the scheme and host. Each recipient
fails alone and a failure never stops the evaluation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from traitlets import Bool, Float, List, Unicode, default
from traitlets.config import LoggingConfigurable

from ..common.notify import (
    MAIL_SCHEMES,
    WEBHOOK_SCHEMES,
    check_target,
    each_alone,
    instantiate,
    notify_apprise,
    redact,
    scheme_of,
    send_target,
)
from .metrics import NOTIFICATIONS

__all__ = [
    "MAIL_SCHEMES",
    "WEBHOOK_SCHEMES",
    "AlertNotifier",
    "Message",
    "instantiate",
    "redact",
    "scheme_of",
]


@dataclass(frozen=True)
class Message:
    """What a notification says."""

    title: str
    body: str
    payload: dict[str, Any]


class AlertNotifier(LoggingConfigurable):
    """Sends an alert's start and end to the admins and to its owner's targets."""

    admin_urls = List(
        Unicode(),
        help="""
        Apprise URLs every alert is sent to (the admins'): e-mail, Slack, Teams, Matrix, webhooks.

        Trusted as configuration: no scheme or address check. Keep passwords
        and tokens out of shared config files (use ``$SHIPYARD_ALERTS_CONFIG``
        with a private file). Defaults to ``$SHIPYARD_ALERTS_ADMIN_URLS``
        (space-separated) when set. Forms: https://github.com/caronc/apprise/wiki

        Example::

            c.AlertNotifier.admin_urls = [
                "mailtos://alerts:PASSWORD@smtp.example.org?to=ops@example.org",
                "slack://T1/B2/C3",
            ]

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    @default("admin_urls")
    def _default_admin_urls(self):
        return os.environ.get("SHIPYARD_ALERTS_ADMIN_URLS", "").split()

    user_schemes = List(
        Unicode(),
        ["mailto", "mailtos", "json", "jsons", "slack", "msteams", "discord"],
        help="""
        Apprise schemes users may use for their own targets (``PUT api/targets``).

        ``json``/``jsons`` (a webhook) are posted by the service to public
        addresses only, pinned; ``mailto``/``mailtos`` must name a public SMTP
        server; the chat schemes go to their vendors. Any other scheme a user
        could point at a server inside the hub's network: add one only if its
        host is fixed.

        Example::

            c.AlertNotifier.user_schemes = ["jsons", "slack", "msteams"]

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    allow_private_targets = Bool(
        False,
        help="""
        Let users' targets reach loopback, private and link-local addresses.

        Off by default: the service would otherwise connect wherever a user
        points it inside the hub's network. The admins' URLs are never checked.

        Example::

            c.AlertNotifier.allow_private_targets = True

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    timeout = Float(
        10.0,
        help="""
        Seconds to wait for a user's webhook to answer.

        Example::

            c.AlertNotifier.timeout = 30

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    hub_url = Unicode(
        help="""
        The hub's public URL, for the link in notifications. Defaults to ``$SHIPYARD_PUBLIC_URL``.

        Example::

            c.AlertNotifier.hub_url = "https://hub.example.org"

        .. versionadded:: 0.18
        """
    ).tag(config=True)

    @default("hub_url")
    def _default_hub_url(self):
        return os.environ.get("SHIPYARD_PUBLIC_URL", "")

    # ------------------------------------------------------------ checks

    async def check_target(self, url: str) -> None:
        """Raise ValueError saying why ``url`` cannot be a user's target; for the API."""
        await check_target(url, self.user_schemes, self.allow_private_targets)

    # ------------------------------------------------------------ sending

    def message(self, alert: dict[str, Any], transition: str) -> Message:
        """The notification of ``alert`` (a ``DescribeAlert`` dict) entering ``transition``."""
        word = "FIRING" if transition == "firing" else "RESOLVED"
        title = f"[Shipyard] {word}: {alert['rule']} {labels_text(alert['labels'])}".strip()
        lines = [alert["summary"], f"Alert: {alert['key']}"]
        if alert.get("started_at"):
            lines.append(f"Started: {alert['started_at']}")
        if transition == "resolved" and alert.get("resolved_at"):
            lines.append(f"Resolved: {alert['resolved_at']}")
        if self.hub_url:
            lines.append(f"Alerts: {self.hub_url.rstrip('/')}/services/alerts/api/alerts")
        body = "\n".join(lines)
        payload = {
            "version": "1.0",
            "title": title,
            "message": body,
            "type": "failure" if transition == "firing" else "success",
            "state": transition,
            "alert": alert,
        }
        return Message(title, body, payload)

    async def send(self, message: Message, owner_urls: list[str]) -> None:
        """Send ``message`` to the admins and to ``owner_urls``; never raises."""
        sends = [self._admins(message)] if self.admin_urls else []
        sends += [self._owner(url, message) for url in owner_urls]
        await each_alone(self.log, sends)

    async def _admins(self, message: Message) -> None:
        usable = []
        for url in self.admin_urls:
            try:
                usable.append(instantiate(url))
            except ValueError:
                NOTIFICATIONS.labels("admin", "refused").inc()
                self.log.warning("An admin URL is not one apprise can use: %s", redact(url))
        if not usable:
            return
        sent = await notify_apprise(usable, message.title, message.body)
        NOTIFICATIONS.labels("admin", "sent" if sent.ok else "failed").inc()
        if not sent.ok:
            self.log.warning("Alert %r not sent to every admin URL: %s", message.title, sent.why)

    async def _owner(self, url: str, message: Message) -> None:
        try:  # checked again at each send: the admin may have narrowed the rules since
            target = await check_target(url, self.user_schemes, self.allow_private_targets)
        except ValueError as e:
            NOTIFICATIONS.labels("owner", "refused").inc()
            self.log.warning("Target %s not used: %s", redact(url), e)
            return
        sent = await send_target(
            target,
            message.title,
            message.body,
            {**message.payload, **chat_text(message)},
            timeout=self.timeout,
            user_agent="shipyard-alerts",
        )
        NOTIFICATIONS.labels("owner", "sent" if sent.ok else "failed").inc()
        if not sent.ok:
            self.log.warning(
                "Alert %r not delivered to %s: %s", message.title, redact(url), sent.why
            )


def chat_text(message: Message) -> dict[str, str]:
    """``text``: what Slack, Mattermost and Teams' connectors show of a webhook's body."""
    return {"text": f"{message.title}\n{message.body}"}


def labels_text(labels: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(labels.items()))
