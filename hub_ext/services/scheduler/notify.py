"""Telling owners how their runs ended: in the panel, by e-mail, or to a webhook URL.

A job's ``notify`` policy says when (``on_failure``: failed, timed out or
orphaned; ``on_success``) and where (``emails``, ``webhook_url``); the panel
always gets the notification when the policy says to notify at all. Each
channel fails alone: an SMTP server that is down does not stop the webhook,
and no notification failure changes the run's record. What is sent is the
job's name, the run's id, status and reason, and a link to the run: never a
token, the notebook, or its outputs (SECURITY rule 8).

E-mail and webhooks leave through the services' shared sending
(:mod:`hub_ext.services.common.notify`, apprise underneath), as the alerts
service's do: the ``smtp_*`` settings become an apprise ``mailto(s)://`` URL
(:func:`~hub_ext.services.common.notify.mailto_url`; one mail per recipient),
and the webhook is posted by the shared, pinned :func:`post_json`. Rejected:
keeping a second SMTP client and webhook poster here, beside the alerts
service's, with the same rules written twice.

A webhook URL is the user's, called by the service: addresses on loopback,
private and link-local networks are refused unless the admin allows them
(``allow_private_webhooks``), so a job cannot make the service poke the hub's
own API or a cloud metadata endpoint. The check runs when the job is saved
(:meth:`Notifier.check_webhook_url`: a 400 saying why) and again at each call,
where the name is resolved once and the request goes to exactly the addresses
that were checked (:class:`PinnedResolver`), so a DNS answer that changes
between the check and the connection (DNS rebinding) cannot slip a private
address in. TLS still verifies the certificate against the URL's host name.
"""

from __future__ import annotations

import asyncio
import os

from traitlets import Any, Bool, Float, Integer, Unicode, default
from traitlets.config import LoggingConfigurable

from ..common.notify import (
    DeliveryError,
    each_alone,
    instantiate,
    mailto_url,
    notify_apprise,
    pin,
    post_json,
)

# the SSRF guard is shared with the alerts service's webhooks (re-exported here)
from ..common.webhooks import PinnedResolver, resolve_public
from .metrics import NOTIFICATIONS
from .models import DescribeJob, DescribeRun

__all__ = ["FAILURES", "Notifier", "PinnedResolver", "chat_fields", "resolve_public"]

FAILURES = ("failed", "timed_out", "orphaned")


class Notifier(LoggingConfigurable):
    """Sends the notifications a job's policy asks for when one of its runs ends."""

    store = Any(help="The JobStore notifications are recorded in (for the panel).")

    hub_url = Unicode(
        help="""
        The hub's public URL, for links in notifications (``https://hub.example.org``).

        Defaults to ``$SHIPYARD_PUBLIC_URL``; without it messages carry no link.

        Example::

            c.Notifier.hub_url = "https://hub.example.org"

        .. versionadded:: 0.3
        """
    ).tag(config=True)

    @default("hub_url")
    def _default_hub_url(self):
        return os.environ.get("SHIPYARD_PUBLIC_URL", "")

    smtp_host = Unicode(
        "",
        help="""
        SMTP server for e-mail notifications; empty turns e-mail off.

        Mail is sent through apprise: the ``smtp_*`` settings and ``mail_from``
        make one ``mailto(s)://`` URL, and each recipient gets a mail of their
        own (recipients do not see one another's addresses).

        Example::

            c.Notifier.smtp_host = "smtp.example.org"

        .. versionadded:: 0.3
        .. versionchanged:: 0.18
           Sent through apprise, one mail per recipient; with ``smtp_starttls``
           or ``smtp_ssl`` the certificate is verified.
        """,
    ).tag(config=True)

    smtp_port = Integer(
        25,
        help="""
        Port of the SMTP server (587 with ``smtp_starttls``, 465 with ``smtp_ssl``).

        Example::

            c.Notifier.smtp_port = 587

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    smtp_starttls = Bool(
        False,
        help="""
        Upgrade the SMTP connection with STARTTLS before logging in.

        The server's certificate is verified against ``smtp_host``.

        Example::

            c.Notifier.smtp_starttls = True

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    smtp_ssl = Bool(
        False,
        help="""
        Connect to the SMTP server over TLS from the start (port 465).

        The server's certificate is verified against ``smtp_host``. Takes
        precedence over ``smtp_starttls``.

        Example::

            c.Notifier.smtp_ssl = True

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    smtp_username = Unicode(
        "",
        help="""
        SMTP login; empty sends without logging in.

        The service logs in when both this and ``smtp_password`` are set.

        Example::

            c.Notifier.smtp_username = "shipyard"

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    smtp_password = Unicode(
        help="""
        SMTP password. Defaults to ``$SHIPYARD_SMTP_PASSWORD``; keep it out of config files.

        .. versionadded:: 0.3
        """
    ).tag(config=True)

    @default("smtp_password")
    def _default_smtp_password(self):
        return os.environ.get("SHIPYARD_SMTP_PASSWORD", "")

    mail_from = Unicode(
        "shipyard@localhost",
        help="""
        The From address of notification e-mails.

        Example::

            c.Notifier.mail_from = "Shipyard <noreply@example.org>"

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    timeout = Float(
        10.0,
        help="""
        Seconds to wait for the SMTP server to accept a connection, or a webhook to answer.

        Example::

            c.Notifier.timeout = 30

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    allow_private_webhooks = Bool(
        False,
        help="""
        Let notification webhooks reach loopback, private and link-local addresses.

        Off by default: the service would otherwise post wherever a user
        points it inside the hub's network.

        Example::

            c.Notifier.allow_private_webhooks = True

        .. versionadded:: 0.3
        """,
    ).tag(config=True)

    # ------------------------------------------------------------ what

    @staticmethod
    def wanted(job: DescribeJob, run: DescribeRun) -> bool:
        """Whether the job's policy asks to be told about this run's end."""
        status = run.status.value
        policy = job.notify
        return (status in FAILURES and policy.on_failure) or (
            status == "succeeded" and policy.on_success
        )

    def message(self, job: DescribeJob, run: DescribeRun) -> tuple[str, str]:
        """(subject, body) of the notification."""
        status = run.status.value.replace("_", " ")
        subject = f"[Shipyard] job {job.name}: run {status}"
        lines = [
            f"Run {run.id} of job {job.name!r} ({job.owner}) {status}.",
            f"Reason: {run.reason}" if run.reason else "",
            f"Attempt {run.attempt}; started {run.started_at}, ended {run.ended_at}.",
        ]
        if link := self._run_link(run):
            lines.append(f"Output: {link}")
        return subject, "\n".join(line for line in lines if line)

    def _run_link(self, run: DescribeRun) -> str:
        """The run's output on the hub, or "" without ``hub_url``."""
        if not self.hub_url:
            return ""
        return f"{self.hub_url.rstrip('/')}/services/scheduler/api/runs/{run.id}/output"

    # ------------------------------------------------------------ how

    async def notify(self, job: DescribeJob, run: DescribeRun) -> None:
        """Send what ``job.notify`` asks for about ``run``; never raises."""
        if not self.wanted(job, run):
            return
        subject, body = self.message(job, run)
        try:
            await asyncio.to_thread(
                self.store.add_notification, job.owner, job.id, run.id, run.status.value, body
            )
            NOTIFICATIONS.labels("panel", "sent").inc()
        except Exception:
            NOTIFICATIONS.labels("panel", "failed").inc()
            self.log.exception("Could not record the notification of run %s", run.id)
        sends = []
        if job.notify.emails:
            sends.append(self._email(job.notify.emails, subject, body, run.id))
        if job.notify.webhook_url:
            sends.append(self._webhook(job, run, job.notify.webhook_url, subject, body))
        await each_alone(self.log, sends)

    def mailto_url(self, to: list[str]) -> str:
        """The apprise URL that mails ``to`` through the configured SMTP server."""
        return mailto_url(
            host=self.smtp_host,
            port=self.smtp_port,
            to=to,
            mail_from=self.mail_from,
            username=self.smtp_username,
            password=self.smtp_password,
            starttls=self.smtp_starttls,
            ssl=self.smtp_ssl,
            timeout=self.timeout,
        )

    async def _email(self, to: list[str], subject: str, body: str, run_id: str) -> None:
        if not self.smtp_host:
            self.log.warning(
                "Run %s asks for e-mail, but no SMTP server is configured (Notifier.smtp_host)",
                run_id,
            )
            NOTIFICATIONS.labels("email", "unconfigured").inc()
            return
        try:
            mailer = instantiate(self.mailto_url(to))
        except ValueError:  # apprise's warning says which part; the URL holds the password
            NOTIFICATIONS.labels("email", "failed").inc()
            self.log.warning(
                "E-mail about run %s not sent: the Notifier.smtp_* settings and mail_from "
                "do not make a mail URL apprise accepts (is mail_from an address?)",
                run_id,
            )
            return
        sent = await notify_apprise([mailer], subject, body)
        NOTIFICATIONS.labels("email", "sent" if sent.ok else "failed").inc()
        if not sent.ok:
            self.log.warning(
                "E-mail about run %s not sent to every recipient through %s:%s: %s",
                run_id,
                self.smtp_host,
                self.smtp_port,
                sent.why,
            )

    async def _webhook(
        self, job: DescribeJob, run: DescribeRun, url: str, subject: str, body: str
    ) -> None:
        try:
            addresses = await pin(url, self.allow_private_webhooks)
        except ValueError as e:
            NOTIFICATIONS.labels("webhook", "refused").inc()
            self.log.warning("Webhook of job %s not called: %s", job.id, e)
            return
        payload = {
            "job_id": job.id,
            "job_name": job.name,
            "owner": job.owner,
            "run_id": run.id,
            "status": run.status.value,
            "reason": run.reason,
            "attempt": run.attempt,
            "started_at": run.started_at.isoformat() if run.started_at else None,
            "ended_at": run.ended_at.isoformat() if run.ended_at else None,
            "mlflow_run_id": run.mlflow_run_id,
            "message": body,
            **chat_fields(subject, body, self._run_link(run)),
        }
        try:
            await post_json(
                url,
                payload,
                addresses=addresses,
                timeout=self.timeout,
                user_agent="shipyard-scheduler",
            )
            NOTIFICATIONS.labels("webhook", "sent").inc()
        except DeliveryError as e:
            NOTIFICATIONS.labels("webhook", "failed").inc()
            self.log.warning("Webhook of job %s not taken: %s", job.id, e)

    async def check_webhook_url(self, url: str) -> None:
        """Raise ValueError saying why the scheduler would not call ``url``; for the API.

        The same rule as at each call (:func:`resolve_public`), so a job whose webhook
        could never be called is refused when it is saved rather than silently later.
        """
        await pin(url, self.allow_private_webhooks)


def chat_fields(subject: str, body: str, link: str = "") -> dict:
    """The fields chat tools' incoming webhooks display, to sit beside the structured ones.

    A webhook body is read by programs (the structured fields) and, just as
    often, pasted into a chat tool's incoming webhook, which shows a message
    only from its own fields and ignores the rest:

    - ``text``: Slack (https://api.slack.com/messaging/webhooks), Mattermost,
      and Microsoft Teams' Office 365 connectors, which answer "Summary or Text
      is required" to a body without it (the legacy ``MessageCard`` format).
    - ``type: "message"`` with an Adaptive Card in ``attachments``: Teams'
      incoming webhooks and the Workflows ("When a Teams webhook request is
      received") that replace the connectors; the flow posts
      ``attachments[].content``. See
      https://learn.microsoft.com/en-us/microsoftteams/platform/webhooks-and-connectors/how-to/connectors-using#send-adaptive-cards-using-an-incoming-webhook
      The attachment also carries Slack's ``fallback``, so Slack, which reads
      ``attachments`` as its own legacy attachments, shows no empty one.

    Rejected alternative: a per-job "format" setting (Slack, Teams, JSON):
    one more thing to get wrong, for a body all three read.
    """
    blocks = [
        {"type": "TextBlock", "text": subject, "weight": "Bolder", "wrap": True},
        {"type": "TextBlock", "text": body, "wrap": True},
    ]
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": blocks,
    }
    if link:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open the output", "url": link}]
    return {
        "text": f"{subject}\n{body}",
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
                "fallback": subject,
            }
        ],
    }
