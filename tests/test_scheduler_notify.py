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
import logging
import socket
from email import message_from_bytes

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from tornado.httpserver import HTTPServer
from tornado.web import Application, RequestHandler

from hub_ext.services.common.notify import each_alone, instantiate, redact
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


async def test_a_webhook_that_answers_an_error_is_counted_and_the_panel_still_told(store, caplog):
    """A receiver that answers 500: the webhook counts as failed, the panel has the run."""

    class Broken(RequestHandler):
        def post(self):
            self.set_status(500)

    server = Application([("/hook", Broken)]).listen(0, "127.0.0.1")
    port = next(iter(server._sockets.values())).getsockname()[1]
    try:
        job, run = failed_run(store, webhook_url=f"http://127.0.0.1:{port}/hook")
        failed = count("webhook", "failed")
        notifier = Notifier(store=store, allow_private_webhooks=True)
        with caplog.at_level(logging.WARNING, logger=notifier.log.name):
            await notifier.notify(job, run)
        assert count("webhook", "failed") == failed + 1
        [why] = [r.getMessage() for r in caplog.records if r.name == notifier.log.name]
        assert f"Webhook of job {job.id} not taken: the webhook answered 500" in why
        assert str(port) not in why  # the URL (it may hold a token) is never logged
        assert [n.run_id for n in store.list_notifications("alice").notifications] == [run.id]
    finally:
        server.stop()


async def test_a_channel_that_raises_stops_no_other(caplog):
    """The shared sending awaits channels side by side; a bug in one is logged, not raised."""
    arrived = []

    async def broken():
        raise RuntimeError("a bug in one channel")

    async def working():
        await asyncio.sleep(0)
        arrived.append("sent")

    log = logging.getLogger("test-notify")
    with caplog.at_level(logging.ERROR, logger="test-notify"):
        await each_alone(log, [broken(), working()])
    assert arrived == ["sent"]
    assert "a bug in one channel" in caplog.text


# ----------------------------------------------------------------------------- e-mail


class Mailbox:
    """An aiosmtpd handler that keeps the messages it is given, and the login used."""

    def __init__(self):
        self.messages = []
        self.logins = []
        self.password = "s3cret"
        self.unknown: set[str] = set()  # addresses the server refuses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.unknown:
            return "550 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(envelope.content))
        )
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        self.logins.append((auth_data.login.decode(), auth_data.password.decode()))
        # handled=False: aiosmtpd answers 535 itself; with its default (True) it sends
        # nothing and the client waits out its timeout before it sees the refusal
        return AuthResult(success=auth_data.password == self.password.encode(), handled=False)


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
    # one mail per recipient (apprise's way): neither sees the other's address
    assert [(mail_from, to) for mail_from, to, _ in smtp.messages] == [
        ("noreply@example.org", ["alice@example.org"]),
        ("noreply@example.org", ["ops@example.org"]),
    ]
    subject, message = notifier.message(job, run)
    for _, [to], mail in smtp.messages:
        assert mail["Subject"] == subject == "[Shipyard] job nightly-report: run failed"
        assert mail["From"] == "Shipyard <noreply@example.org>"
        assert mail["To"] == to
        assert mail.get_content_type() == "text/plain"
        assert mail.get_payload(decode=True).decode().replace("\r\n", "\n").strip() == message
    assert f"{HUB}/services/scheduler/api/runs/{run.id}/output" in message
    assert count("email", "sent") == sent + 1


async def test_a_password_with_url_characters_logs_in_as_written(store, smtp):
    """The settings become an apprise URL; a password with ``@``, ``/``, ``?`` survives it."""
    smtp.password = "p@ss/w?rd:#%20 x"
    job, run = failed_run(store, emails=["alice@example.org"])
    notifier = Notifier(
        store=store,
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_username="ship yard@example.org",
        smtp_password=smtp.password,
    )
    await notifier.notify(job, run)
    assert smtp.logins == [("ship yard@example.org", smtp.password)]
    [(mail_from, to, mail)] = smtp.messages
    assert (mail_from, to) == ("shipyard@localhost", ["alice@example.org"])
    # the URL is the admin's configuration and holds the password: never logged as is
    assert smtp.password not in redact(notifier.mailto_url(["alice@example.org"]))


async def test_a_refused_login_or_a_dead_smtp_server_does_not_stop_the_webhook(
    store, smtp, receiver, caplog
):
    """Each channel fails alone, and the service's log says why the mail did not go."""
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
    with caplog.at_level(logging.WARNING, logger=wrong.log.name):
        await wrong.notify(job, run)
    assert smtp.messages == [] and len(receiver.requests) == 1
    assert count("email", "failed") == failed + 1
    [why] = [r.getMessage() for r in caplog.records if r.name == wrong.log.name]
    assert f"E-mail about run {run.id} not sent" in why and "535" in why
    assert "wrong" not in why  # the password never reaches the log

    caplog.clear()
    dead = Notifier(
        store=store, smtp_host="127.0.0.1", smtp_port=free_port(), allow_private_webhooks=True
    )
    with caplog.at_level(logging.WARNING, logger=dead.log.name):
        await dead.notify(job, run)
    assert len(receiver.requests) == 2
    assert count("email", "failed") == failed + 2
    [why] = [r.getMessage() for r in caplog.records if r.name == dead.log.name]
    assert "Connection refused" in why


async def test_without_an_smtp_server_mail_is_skipped_and_counted(store, smtp):
    job, run = failed_run(store, emails=["alice@example.org"])
    unconfigured = count("email", "unconfigured")
    await Notifier(store=store).notify(job, run)
    assert smtp.messages == [] and count("email", "unconfigured") == unconfigured + 1


async def test_a_from_address_apprise_refuses_counts_as_failed(store, smtp):
    job, run = failed_run(store, emails=["alice@example.org"])
    failed = count("email", "failed")
    notifier = Notifier(
        store=store, smtp_host="127.0.0.1", smtp_port=smtp.port, mail_from="not an address"
    )
    await notifier.notify(job, run)
    assert smtp.messages == [] and count("email", "failed") == failed + 1


async def test_a_recipient_the_server_refuses_does_not_stop_the_others(store, smtp):
    """Each recipient gets their own mail, so one refused address costs only its own."""
    smtp.unknown = {"gone@example.org"}
    job, run = failed_run(store, emails=["gone@example.org", "alice@example.org"])
    failed = count("email", "failed")
    await Notifier(store=store, smtp_host="127.0.0.1", smtp_port=smtp.port).notify(job, run)
    assert [to for _, to, _ in smtp.messages] == [["alice@example.org"]]
    assert count("email", "failed") == failed + 1  # not every recipient's was accepted


@pytest.mark.parametrize(
    ("settings", "scheme", "mode", "port"),
    [
        ({}, "mailto", "insecure", 25),
        ({"smtp_starttls": True, "smtp_port": 587}, "mailtos", "starttls", 587),
        ({"smtp_ssl": True, "smtp_port": 465}, "mailtos", "ssl", 465),
        ({"smtp_ssl": True, "smtp_starttls": True, "smtp_port": 465}, "mailtos", "ssl", 465),
    ],
)
def test_the_smtp_settings_become_the_apprise_url_they_mean(settings, scheme, mode, port):
    """TLS cannot be shown with the test's server (no certificate): the URL apprise gets is."""
    notifier = Notifier(smtp_host="smtp.example.org", timeout=7.5, **settings)
    url = notifier.mailto_url(["alice@example.org", "ops@example.org"])
    assert url.startswith(f"{scheme}://")
    plugin = instantiate(url)
    assert (plugin.smtp_host, plugin.port, plugin.secure_mode) == ("smtp.example.org", port, mode)
    assert [address for _, address in plugin.targets] == ["alice@example.org", "ops@example.org"]
    assert plugin.from_addr[1] == "shipyard@localhost"
    assert plugin.socket_connect_timeout == 7.5
    assert plugin.user is None  # no login without smtp_username
