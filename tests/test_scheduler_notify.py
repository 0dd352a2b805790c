"""The scheduler's notifications as they leave the service: a real webhook receiver, a real SMTP server.

:class:`~hub_ext.services.scheduler.notify.Notifier` is driven with jobs and runs
from a real store (SQLite), and what it sends is read where it arrives: a
Tornado HTTP server on loopback for webhooks, an ``aiosmtpd`` server for
e-mail. Nothing is mocked, so the tests see the bytes a chat tool or a mail
server would see.
"""

from __future__ import annotations

import asyncio
import json
import socket
from email import message_from_bytes

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from tornado.httpserver import HTTPServer
from tornado.web import Application, RequestHandler

from hub_ext.services.scheduler.db import make_engine, upgrade
from hub_ext.services.scheduler.metrics import NOTIFICATIONS
from hub_ext.services.scheduler.models import NotifyPolicy
from hub_ext.services.scheduler.notify import Notifier
from hub_ext.services.scheduler.store import JobStore, SnapshotStore

from .jobstore import make_job

HUB = "https://hub.example.org"


@pytest.fixture
def store(tmp_path):
    url = f"sqlite:///{tmp_path}/notify.sqlite"
    upgrade(url)
    engine = make_engine(url)
    yield JobStore(engine, SnapshotStore(tmp_path / "snapshots"))
    engine.dispose()


def failed_run(store: JobStore, **notify):
    """A job whose policy is ``notify`` and one of its runs that failed, as the Notifier gets them."""
    job = make_job(store, name="nightly-report")
    run = store.queue_manual_run(job.id, "alice")
    store.claim_due(None, "w1")
    store.start_run(run.id, "w1")
    ended = store.finish_run(run.id, "failed", "cell 3: ZeroDivisionError", worker_id="w1")
    # set here rather than at creation: whether a loopback URL may be stored is
    # the creation check's business, not what these tests are about
    job = job.model_copy(update={"notify": NotifyPolicy(**notify)})
    return job, ended


class Receiver:
    """A webhook endpoint on loopback that keeps every request it gets."""

    def __init__(self):
        self.requests: list[tuple[dict, bytes]] = []
        self.arrived = asyncio.Event()
        receiver = self

        class Hook(RequestHandler):
            def post(self):
                receiver.requests.append((dict(self.request.headers), self.request.body))
                receiver.arrived.set()
                self.write({"ok": True})

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self.server = HTTPServer(Application([("/hook", Hook)]))
        self.server.add_sockets([sock])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
async def receiver():
    r = Receiver()
    yield r
    r.server.stop()


def free_port() -> int:
    """A loopback port nobody listens on (aiosmtpd's Controller cannot take 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def count(channel: str, outcome: str) -> float:
    return NOTIFICATIONS.labels(channel, outcome)._value.get()


# ----------------------------------------------------------------------------- webhooks


async def test_the_webhook_body_carries_the_structured_fields_and_what_chat_tools_show(
    store, receiver
):
    """Slack and Teams show only their own fields; programs read the structured ones."""
    job, run = failed_run(store, webhook_url=receiver.url)
    notifier = Notifier(store=store, hub_url=HUB, allow_private_webhooks=True)
    await notifier.notify(job, run)

    assert len(receiver.requests) == 1
    headers, raw = receiver.requests[0]
    assert headers["Content-Type"] == "application/json"
    body = json.loads(raw)
    subject, message = notifier.message(job, run)
    link = f"{HUB}/services/scheduler/api/runs/{run.id}/output"

    # the structured fields, unchanged
    assert {k: body[k] for k in ("job_id", "job_name", "owner", "run_id", "status")} == {
        "job_id": job.id,
        "job_name": "nightly-report",
        "owner": "alice",
        "run_id": run.id,
        "status": "failed",
    }
    assert body["reason"] == run.reason and "ZeroDivisionError" in run.reason
    assert body["attempt"] == 1
    assert body["message"] == message and link in message
    # Slack, Mattermost and Teams' Office 365 connectors show `text`
    assert body["text"] == f"{subject}\n{message}"
    assert "nightly-report" in body["text"] and "failed" in body["text"]
    # Teams' incoming webhooks and Workflows post attachments[].content, an Adaptive Card
    assert body["type"] == "message"
    [attachment] = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["fallback"] == subject  # Slack reads attachments as its own
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert [b["text"] for b in card["body"]] == [subject, message]
    assert all(b["type"] == "TextBlock" and b["wrap"] for b in card["body"])
    assert card["actions"] == [{"type": "Action.OpenUrl", "title": "Open the output", "url": link}]


async def test_without_a_hub_url_the_card_has_no_link(store, receiver):
    job, run = failed_run(store, webhook_url=receiver.url)
    await Notifier(store=store, hub_url="", allow_private_webhooks=True).notify(job, run)
    body = json.loads(receiver.requests[0][1])
    assert "actions" not in body["attachments"][0]["content"]
    assert "Output:" not in body["text"] and "http" not in body["text"]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
async def test_the_address_guard_refuses_loopback_webhooks(store, receiver, host):
    """With the guard on (the default), a webhook on loopback is never called.

    The service's test config turns the guard off (its receivers are on
    loopback); this is the default's own test. The panel still gets the
    notification: one channel failing does not stop another.
    """
    url = receiver.url.replace("127.0.0.1", host)
    job, run = failed_run(store, webhook_url=url)
    notifier = Notifier(store=store, hub_url=HUB)
    assert notifier.allow_private_webhooks is False
    refused = count("webhook", "refused")
    await notifier.notify(job, run)
    await asyncio.sleep(0.2)  # a request, were one sent, arrives within this
    assert receiver.requests == []
    assert count("webhook", "refused") == refused + 1
    assert [n.run_id for n in store.list_notifications("alice").notifications] == [run.id]


# ----------------------------------------------------------------------------- e-mail


class Mailbox:
    """An aiosmtpd handler that keeps the messages it is given, and the login used."""

    def __init__(self):
        self.messages = []
        self.logins = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(envelope.content))
        )
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        self.logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=auth_data.password == b"s3cret")


@pytest.fixture
def smtp():
    mailbox = Mailbox()
    mailbox.port = free_port()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=mailbox.port,
        authenticator=mailbox.authenticate,
        auth_require_tls=False,  # no certificate in the test; STARTTLS is smtplib's part
    )
    controller.start()
    yield mailbox
    controller.stop()


async def test_failures_are_mailed_through_a_real_smtp_server(store, smtp):
    job, run = failed_run(store, emails=["alice@example.org", "ops@example.org"])
    notifier = Notifier(
        store=store,
        hub_url=HUB,
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_username="shipyard",
        smtp_password="s3cret",
        mail_from="Shipyard <noreply@example.org>",
    )
    sent = count("email", "sent")
    await notifier.notify(job, run)

    assert smtp.logins == [("shipyard", "s3cret")]
    [(mail_from, to, mail)] = smtp.messages
    assert mail_from == "noreply@example.org"
    assert to == ["alice@example.org", "ops@example.org"]
    subject, message = notifier.message(job, run)
    assert mail["Subject"] == subject == "[Shipyard] job nightly-report: run failed"
    assert mail["From"] == "Shipyard <noreply@example.org>"
    assert mail["To"] == "alice@example.org, ops@example.org"
    assert mail.get_payload(decode=True).decode().replace("\r\n", "\n").strip() == message
    assert f"{HUB}/services/scheduler/api/runs/{run.id}/output" in message
    assert count("email", "sent") == sent + 1


async def test_a_refused_login_or_a_dead_smtp_server_does_not_stop_the_webhook(
    store, smtp, receiver
):
    job, run = failed_run(store, emails=["alice@example.org"], webhook_url=receiver.url)
    failed = count("email", "failed")
    wrong = Notifier(
        store=store,
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_username="shipyard",
        smtp_password="wrong",
        allow_private_webhooks=True,
    )
    await wrong.notify(job, run)
    assert smtp.messages == [] and len(receiver.requests) == 1
    assert count("email", "failed") == failed + 1

    dead = Notifier(
        store=store, smtp_host="127.0.0.1", smtp_port=free_port(), allow_private_webhooks=True
    )
    await dead.notify(job, run)
    assert len(receiver.requests) == 2
    assert count("email", "failed") == failed + 2


async def test_without_an_smtp_server_mail_is_skipped_and_counted(store, smtp):
    job, run = failed_run(store, emails=["alice@example.org"])
    unconfigured = count("email", "unconfigured")
    await Notifier(store=store).notify(job, run)
    assert smtp.messages == [] and count("email", "unconfigured") == unconfigured + 1
