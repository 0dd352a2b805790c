"""The alerts service: rules, episodes, notifications once per transition, the REST API.

The receivers are real: an SMTP server from aiosmtpd for the admins' apprise
``mailto://`` URL, and an HTTP server for an owner's ``json://`` webhook. The
unit tests drive the disk rule (a real ``shutil.disk_usage`` against a
threshold the test moves) through the real store, core and notifier; the hub
test injects a failing job into a real scheduler and watches the alert reach
both receivers once, then its resolution once.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from hub_ext.services.alerts.core import AlertsCore, Caller
from hub_ext.services.alerts.models import ListAlertsQuery
from hub_ext.services.alerts.notify import AlertNotifier, redact
from hub_ext.services.alerts.rules import AlertRules
from hub_ext.services.alerts.sources import SourceError, Sources
from hub_ext.services.alerts.store import AlertStore, KeyFileError
from hub_ext.services.common.errors import Invalid, NotFound

from .conftest import needs_root, postgres_database

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)

# ------------------------------------------------------------------ receivers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Webhook:
    """An HTTP endpoint on loopback, in a thread, that keeps every JSON body posted to it."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.headers.append(dict(self.headers))
                hook.bodies.append(json.loads(raw))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hook"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            (list(envelope.rcpt_tos), message_from_bytes(envelope.content, policy=policy.default))
        )
        return "250 OK"


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.stop()


@pytest.fixture
def smtp():
    mailbox = Mailbox()
    mailbox.port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=mailbox.port)
    controller.start()
    mailbox.url = f"mailto://127.0.0.1:{mailbox.port}?from=shipyard@localhost&to=ops@example.org"
    yield mailbox
    controller.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/alerts.sqlite"
    else:
        with postgres_database() as url:
            yield url


def make_core(db_url: str, tmp_path: Path, **rules) -> AlertsCore:
    store = AlertStore(db_url, tmp_path / "alerts.key")
    notifier = AlertNotifier(allow_private_targets=True, hub_url="https://hub.example.org")
    return AlertsCore(
        store,
        AlertRules(**rules),
        notifier,
        Sources("http://127.0.0.1:1/hub/api", ""),
        str(tmp_path),
    )


# ------------------------------------------------------------------ rules


def metrics(requests: int, errors: int, p99: float | None = 10.0, drift=None) -> dict:
    return {
        "versions": {
            "2": {
                "window_requests": requests,
                "window_errors": errors,
                "error_rate": errors / requests if requests else 0.0,
                "latency_ms": {"p50": 1.0, "p99": p99},
                "drift": drift or {},
            }
        }
    }


def test_model_rules_need_the_threshold_and_enough_requests():
    rules = AlertRules(model_error_rate=0.05, model_min_requests=20, model_p99_ms=500)
    assert rules.model_findings("alice", "iris", metrics(100, 5)) == []  # 5 % is not above
    assert rules.model_findings("alice", "iris", metrics(10, 9)) == []  # too few requests
    [f] = rules.model_findings("alice", "iris", metrics(100, 6))
    assert (f.rule, f.owner, f.key) == (
        "model_error_rate",
        "alice",
        "model_error_rate{deployment=iris,version=2}",
    )
    assert f.severity == "critical" and f.for_seconds == 300 and f.value == pytest.approx(0.06)
    slow = rules.model_findings("alice", "iris", metrics(50, 0, p99=900.0))
    assert [(f.rule, f.value) for f in slow] == [("model_latency", 900.0)]
    drift = rules.model_findings("alice", "iris", metrics(0, 0, drift={"x": 0.3, "y": 0.1}))
    assert [f.key for f in drift] == ["model_drift{deployment=iris,feature=x,version=2}"]
    assert AlertRules(model_error_rate=0).model_findings("a", "b", metrics(100, 100)) == []


def job(**fields) -> dict:
    return {
        "id": "j1",
        "owner": "alice",
        "name": "nightly",
        "paused": False,
        "triggers": [],
    } | fields


def run(status: str, reason: str = "") -> dict:
    return {"id": f"r-{status}", "status": status, "reason": reason}


def test_the_job_rule_reads_the_latest_finished_run():
    rules = AlertRules()
    [f] = rules.job_findings(job(), [run("failed", "cell 2: ValueError")], T0)
    assert f.key == "job_failed{job=nightly,job_id=j1}" and f.owner == "alice"
    assert "cell 2: ValueError" in f.summary and f.for_seconds == 0
    # a run still going does not hide the failure before it; a later success resolves it
    assert len(rules.job_findings(job(), [run("running"), run("timed_out")], T0)) == 1
    assert rules.job_findings(job(), [run("succeeded"), run("failed")], T0) == []
    assert rules.job_findings(job(), [], T0) == []
    assert AlertRules(job_failed=False).job_findings(job(), [run("failed")], T0) == []


def test_a_cron_fire_time_passed_beyond_the_grace_alerts_unless_paused():
    rules = AlertRules(schedule_grace=600)
    due = (T0 - timedelta(seconds=601)).isoformat()
    cron = {"trigger": {"kind": "cron"}, "next_fire_at": due}
    [f] = rules.job_findings(job(triggers=[cron]), [], T0)
    assert f.rule == "job_schedule_missed" and f.value == pytest.approx(601)
    on_time = {**cron, "next_fire_at": (T0 - timedelta(seconds=599)).isoformat()}
    assert rules.job_findings(job(triggers=[on_time]), [], T0) == []
    assert rules.job_findings(job(triggers=[cron], paused=True), [], T0) == []
    file_trigger = {**cron, "trigger": {"kind": "file"}}
    assert rules.job_findings(job(triggers=[file_trigger]), [], T0) == []


def test_the_pipeline_rule_reads_the_latest_finished_run():
    rules = AlertRules()
    pipeline = {"id": "p1", "owner": "alice", "name": "train"}
    failed = {
        "id": "pr1",
        "status": "failed",
        "reason": "step fit failed",
        "steps": [{"step": "prep", "status": "succeeded"}, {"step": "fit", "status": "failed"}],
    }
    [f] = rules.pipeline_findings(pipeline, [{"id": "pr2", "status": "running"}, failed], T0)
    assert f.key == "pipeline_failed{pipeline=train,pipeline_id=p1}" and f.owner == "alice"
    assert "(failed: fit)" in f.summary
    succeeded = [{"id": "pr3", "status": "succeeded"}, failed]
    assert rules.pipeline_findings(pipeline, succeeded, T0) == []
    assert rules.pipeline_findings(pipeline, [{"id": "pr4", "status": "cancelled"}], T0) == []
    assert AlertRules(pipeline_failed=False).pipeline_findings(pipeline, [failed], T0) == []


def test_a_pipelines_fire_time_passed_beyond_the_grace_alerts_unless_paused():
    rules = AlertRules(schedule_grace=600)
    due = (T0 - timedelta(seconds=601)).isoformat()
    pipeline = {"id": "p1", "owner": "alice", "name": "train", "paused": False}
    [f] = rules.pipeline_findings({**pipeline, "next_fire_at": due}, [], T0)
    assert f.key == "pipeline_schedule_missed{pipeline=train,pipeline_id=p1}"
    assert f.owner == "alice" and f.value == pytest.approx(601) and f.for_seconds == 0
    assert f"due at {due}" in f.summary
    on_time = (T0 - timedelta(seconds=599)).isoformat()
    assert rules.pipeline_findings({**pipeline, "next_fire_at": on_time}, [], T0) == []
    paused = {**pipeline, "next_fire_at": due, "paused": True}
    assert rules.pipeline_findings(paused, [], T0) == []
    assert rules.pipeline_findings({**pipeline, "next_fire_at": None}, [], T0) == []
    assert rules.pipeline_findings(pipeline, [], T0) == []  # no cron trigger
    off = AlertRules(schedule_grace=0)
    assert off.pipeline_findings({**pipeline, "next_fire_at": due}, [], T0) == []
    # a late tick and a failed run: both alert, apart
    failed = {"id": "pr1", "status": "failed", "reason": "", "steps": []}
    both = rules.pipeline_findings({**pipeline, "next_fire_at": due}, [failed], T0)
    assert [f.rule for f in both] == ["pipeline_failed", "pipeline_schedule_missed"]


def quota_use(used: float, limit: float | None, **who) -> dict:
    return {"resource": "runs", "used": used, "limit": limit} | (who or {"group": "research"})


def test_a_quota_used_to_its_share_alerts():
    rules = AlertRules()
    assert rules.quota_use_ratio == 0.9
    [f] = rules.quota_findings([quota_use(2, 2)])
    assert f.key == "quota_nearly_exhausted{group=research,resource=runs}"
    assert f.owner is None and f.value == 1.0 and f.for_seconds == 0  # a group's: the admins'
    assert f.summary.startswith("group research runs 2 of 2 runs allowed at once")
    assert len(rules.quota_findings([quota_use(9, 10)])) == 1  # at the share: alerts
    assert rules.quota_findings([quota_use(8, 10)]) == []  # below it
    assert rules.quota_findings([quota_use(5, None)]) == []  # unlimited: never
    assert rules.quota_findings([quota_use(0, 0)]) == []  # nothing allowed: a rule, not a use
    assert AlertRules(quota_use_ratio=0).quota_findings([quota_use(2, 2)]) == []
    mine = {
        "user": "alice",
        "resource": "memory",
        "used": 22 << 30,
        "limit": 24 << 30,
        "source": "group gpu-users",
        "shown": ["22 GiB", "24 GiB"],
    }
    [f] = rules.quota_findings([mine])
    assert f.key == "quota_nearly_exhausted{resource=memory,user=alice}" and f.owner == "alice"
    assert f.summary.startswith(
        "alice uses 22 GiB of 24 GiB memory allowed at once (group gpu-users)"
    )
    assert AlertRules(quota_use_ratio=0.95).quota_findings([mine]) == []


PROFILES = {
    "profiles": [
        {
            "slug": "small",
            "display_name": "S",
            "default": True,
            "cpu_limit": "1",
            "mem_limit": "2Gi",
        },
        {"slug": "gpu", "display_name": "G", "cpu_limit": "4", "mem_limit": "16Gi", "gpu": 1},
    ],
    "quotas": {
        "default": {"max_servers": 2, "gpu": 0},
        "groups": {"research": {"max_servers": 3, "cpu": "8", "memory": "24Gi", "gpu": 1}},
    },
}


def hub_user(name: str, groups: list[str], *profiles: str | None) -> dict:
    """A user model of the hub's ``GET /users?state=active`` (with ``read:servers``)."""
    servers = {
        f"s{i}": {"name": f"s{i}", "user_options": {"profile": p} if p else {}}
        for i, p in enumerate(profiles)
    }
    return {"name": name, "groups": groups, "servers": servers}


def test_profile_quota_use_is_counted_as_the_hub_counts_it():
    from hub_ext.profiles.model import ProfilesConfig
    from hub_ext.services.alerts.rules import profile_quota_uses

    config = ProfilesConfig.model_validate(PROFILES)
    users = [
        hub_user("alice", ["research"], "gpu", "small"),  # no options: the default profile
        hub_user("bob", [], None, None),
        hub_user("carol", ["research"]),  # no server running: nothing to count
    ]
    uses = {(u["user"], u["resource"]): u for u in profile_quota_uses(users, config)}
    assert sorted(uses) == [
        ("alice", "cpu"),
        ("alice", "gpu"),
        ("alice", "memory"),
        ("alice", "servers"),
        ("bob", "gpu"),
        ("bob", "servers"),
    ]
    assert (uses["alice", "cpu"]["used"], uses["alice", "cpu"]["limit"]) == (5.0, 8.0)
    assert uses["alice", "memory"]["shown"] == ["18 GiB", "24 GiB"]
    assert uses["alice", "gpu"]["source"] == "group research"
    assert (uses["bob", "servers"]["used"], uses["bob", "servers"]["source"]) == (
        2,
        "the default quota",
    )
    found = AlertRules().quota_findings(list(uses.values()))
    # alice's GPU (1 of 1) and bob's servers (2 of 2); alice's 2 of 3 servers is below 90 %;
    # bob's GPU quota of 0 is no use to alert about
    assert sorted(f.key for f in found) == [
        "quota_nearly_exhausted{resource=gpu,user=alice}",
        "quota_nearly_exhausted{resource=servers,user=bob}",
    ]
    assert [f.summary for f in found if f.owner == "bob"] == [
        "bob runs 2 of 2 servers allowed at once (the default quota); alerting at 90% of a quota."
    ]


def test_the_disk_rule():
    rules = AlertRules(disk_percent=90)
    assert rules.disk_findings("/data", 100, 90) == []
    [f] = rules.disk_findings("/data", 100, 95)
    assert f.key == "disk_full{path=/data}" and f.owner is None and f.value == 95.0


def idle_server(owner: str, name: str, gpus: int, hours: float) -> dict:
    """An item of the usage service's ``GET api/usage/waste`` ``idle`` list."""
    return {
        "owner": owner,
        "object": name,
        "profile": "gpu" if gpus else "cpu",
        "gpus": gpus,
        "mem_bytes": 1 << 30,
        "idle_hours": hours,
        "message": f"{name} has been idle",
    }


def test_the_gpu_idle_rule_needs_a_gpu_and_the_threshold():
    rules = AlertRules()
    assert rules.gpu_idle_after == 3600
    idle = [
        idle_server("alice", "server/alice/", 2, 1.5),
        idle_server("bob", "server/bob/", 0, 9.0),  # no GPU: the usage report's, not an alert
        idle_server("carol", "server/carol/big", 1, 0.9),  # idle, not for long enough
        idle_server("dave", "server/dave/", 1, 1.0),  # exactly the threshold: not above it
    ]
    [f] = rules.gpu_idle_findings(idle)
    assert f.key == "gpu_idle{server=server/alice/}" and f.owner == "alice"
    assert f.value == pytest.approx(5400) and f.for_seconds == 0.0
    assert "holding 2 GPUs" in f.summary and "1.5 h" in f.summary
    shorter = AlertRules(gpu_idle_after=1800)
    found = {f.owner for f in shorter.gpu_idle_findings(idle)}
    assert found == {"alice", "carol", "dave"}
    assert AlertRules(gpu_idle_after=0).gpu_idle_findings(idle) == []
    assert rules.gpu_idle_findings([]) == []


async def test_a_usage_service_that_does_not_answer_leaves_the_gpu_rule_unevaluated(tmp_path):
    core = make_core(f"sqlite:///{tmp_path}/alerts.sqlite", tmp_path, disk_percent=0)
    core.sources = Sources(
        "http://127.0.0.1:1/hub/api", "", usage_url=f"http://127.0.0.1:{free_port()}"
    )
    findings, evaluated = await core.gather(T0)
    assert findings == [] and "gpu_idle" not in evaluated and "disk_full" in evaluated
    core.sources = Sources("http://127.0.0.1:1/hub/api", "")
    _, evaluated = await core.gather(T0)
    assert "gpu_idle" not in evaluated  # no usage service configured: no GPU rule
    core.store.close()


# ------------------------------------------------------------------ episodes and notifications


async def test_one_notification_when_an_alert_fires_and_one_when_it_resolves(
    db_url, tmp_path, webhook, smtp
):
    """The disk rule, against the real disk: fires after its `for`, once; resolves once;
    a restarted service keeps the open alert and notifies nobody again."""
    core = make_core(db_url, tmp_path, disk_percent=1e-9, disk_for=60)
    core.notifier.admin_urls = [smtp.url]
    # a platform alert has no owner: the owner's targets are not involved
    assert await core.evaluate(T0) == []  # pending: it must hold for 60 s
    [pending] = (await core.list_alerts(Caller("root", True), ListAlertsQuery())).alerts
    assert pending.state == "pending" and pending.started_at is None
    assert await core.evaluate(T0 + timedelta(seconds=30)) == []
    [(alert_id, transition)] = await core.evaluate(T0 + timedelta(seconds=60))
    assert transition == "firing"
    for second in (90, 120):
        assert await core.evaluate(T0 + timedelta(seconds=second)) == []
    assert len(smtp.messages) == 1
    to, mail = smtp.messages[0]
    assert to == ["ops@example.org"]
    assert mail["Subject"].startswith("[Shipyard] FIRING: disk_full path=")
    assert f"disk_full{{path={tmp_path}}}" in mail.get_body(("plain",)).get_content()
    core.store.close()

    # a restart: the alert is still firing, nobody is told again
    core = make_core(db_url, tmp_path, disk_percent=1e-9, disk_for=60)
    core.notifier.admin_urls = [smtp.url]
    assert await core.evaluate(T0 + timedelta(seconds=150)) == []
    assert len(smtp.messages) == 1
    [firing] = (await core.list_alerts(Caller("root", True), ListAlertsQuery())).alerts
    assert (firing.id, firing.state) == (alert_id, "firing")

    core.rules.disk_percent = 100.0  # the disk is "emptied"
    assert await core.evaluate(T0 + timedelta(seconds=180)) == [(alert_id, "resolved")]
    assert await core.evaluate(T0 + timedelta(seconds=210)) == []
    assert len(smtp.messages) == 2
    assert smtp.messages[1][1]["Subject"].startswith("[Shipyard] RESOLVED: disk_full")
    assert (await core.list_alerts(Caller("root", True), ListAlertsQuery())).alerts == []
    [resolved] = (
        await core.list_alerts(Caller("root", True), ListAlertsQuery(include_resolved=True))
    ).alerts
    assert resolved.state == "resolved" and resolved.resolved_at is not None
    assert webhook.bodies == []
    core.store.close()


class ScriptedSources(Sources):
    """The hub's and the scheduler's answers as plain data the test changes between
    evaluations: the evaluation pass, the store and the notifier are the real ones."""

    def __init__(self):
        super().__init__("http://127.0.0.1:1/hub/api", "", scheduler_url="http://127.0.0.1:1")
        self.active: list[dict] = []
        self.quotas: list[dict] = []
        self.pipeline_list: list[dict] = []
        self.hub_down = False

    async def users(self) -> list[str]:
        return ["alice", "bob"]

    async def active_users(self) -> list[dict]:
        if self.hub_down:
            raise SourceError("GET /hub/api/users: 503")
        return self.active

    async def group_quotas(self) -> list[dict]:
        return self.quotas

    async def jobs(self, owner: str) -> list[dict]:
        return []

    async def pipelines(self) -> list[dict]:
        return self.pipeline_list

    async def pipeline_runs(self, pipeline_id: str) -> list[dict]:
        return []


async def test_quotas_and_a_missed_pipeline_schedule_fire_once_and_resolve_once(
    tmp_path, webhook, smtp
):
    from hub_ext.profiles.model import ProfilesConfig

    core = make_core(f"sqlite:///{tmp_path}/a.sqlite", tmp_path, disk_percent=0)
    core.notifier.admin_urls = [smtp.url]
    await core.set_targets(Caller("alice", False), [webhook.url])
    config = ProfilesConfig.model_validate(PROFILES)
    core.profiles = lambda: config
    sources = core.sources = ScriptedSources()
    sources.active = [hub_user("alice", ["research"], "gpu"), hub_user("bob", [], "small")]
    sources.quotas = [{"group": "research", "limit": 2, "running": 2}]
    late = (T0 - timedelta(hours=1)).isoformat()
    pipeline = {"id": "p1", "owner": "alice", "name": "train", "paused": False}
    sources.pipeline_list = [{**pipeline, "next_fire_at": late}]

    fired = await core.evaluate(T0)
    assert [t for _, t in fired] == ["firing"] * 3
    keys = {
        a.key: a for a in (await core.list_alerts(Caller("root", True), ListAlertsQuery())).alerts
    }
    assert set(keys) == {
        "quota_nearly_exhausted{resource=gpu,user=alice}",
        "quota_nearly_exhausted{group=research,resource=runs}",
        "pipeline_schedule_missed{pipeline=train,pipeline_id=p1}",
    }
    assert keys["quota_nearly_exhausted{group=research,resource=runs}"].owner is None
    assert await core.evaluate(T0 + timedelta(seconds=30)) == []  # still holding: no news
    # alice is told of her own two, the admins of all three, once each
    assert sorted(b["alert"]["rule"] for b in webhook.bodies) == [
        "pipeline_schedule_missed",
        "quota_nearly_exhausted",
    ]
    assert len(smtp.messages) == 3
    # the hub does not answer: the quota alerts stay as they are
    sources.hub_down = True
    assert await core.evaluate(T0 + timedelta(seconds=60)) == []
    sources.hub_down = False
    # alice stops her GPU server, a research run ends, the pipeline's tick fires
    sources.active = [hub_user("bob", [], "small")]
    sources.quotas = [{"group": "research", "limit": 2, "running": 1}]
    sources.pipeline_list = [{**pipeline, "next_fire_at": (T0 + timedelta(hours=1)).isoformat()}]
    resolved = await core.evaluate(T0 + timedelta(seconds=90))
    assert [t for _, t in resolved] == ["resolved"] * 3
    assert await core.evaluate(T0 + timedelta(seconds=120)) == []
    assert [b["state"] for b in webhook.bodies] == ["firing", "firing", "resolved", "resolved"]
    assert len(smtp.messages) == 6
    # the rule turned off reads nothing and resolves whatever it had open
    sources.quotas = [{"group": "research", "limit": 2, "running": 2}]
    assert [t for _, t in await core.evaluate(T0 + timedelta(seconds=150))] == ["firing"]
    core.rules.quota_use_ratio = 0
    sources.hub_down = True
    assert [t for _, t in await core.evaluate(T0 + timedelta(seconds=180))] == ["resolved"]
    core.store.close()


async def test_a_pending_alert_that_clears_before_its_for_notifies_nobody(tmp_path, smtp):
    core = make_core(f"sqlite:///{tmp_path}/a.sqlite", tmp_path, disk_percent=1e-9, disk_for=60)
    core.notifier.admin_urls = [smtp.url]
    await core.evaluate(T0)
    core.rules.disk_percent = 100.0
    assert await core.evaluate(T0 + timedelta(seconds=30)) == []
    query = ListAlertsQuery(include_resolved=True)
    assert (await core.list_alerts(Caller("root", True), query)).alerts == []
    assert smtp.messages == []
    core.store.close()


async def test_an_owners_alert_reaches_their_webhook_and_the_admins(tmp_path, webhook, smtp):
    """A job's failure, as the scheduler's answer shows it, through the store and notifier."""
    core = make_core(f"sqlite:///{tmp_path}/a.sqlite", tmp_path, disk_percent=0)
    core.notifier.admin_urls = [smtp.url]
    alice, bob = Caller("alice", False), Caller("bob", False)
    shown = await core.set_targets(alice, [webhook.url, webhook.url])
    assert shown.targets == ["json://127.0.0.1/…"]  # deduplicated and redacted
    failing = core.rules.job_findings(job(), [run("failed", "boom")], T0)
    await asyncio.to_thread(core.store.apply, failing, {"job_failed"}, T0)
    await core.flush()
    [body] = webhook.bodies
    assert body["state"] == "firing" and body["type"] == "failure"
    assert body["alert"]["key"] == "job_failed{job=nightly,job_id=j1}"
    assert body["alert"]["owner"] == "alice" and "boom" in body["message"]
    assert body["title"] == body["text"].splitlines()[0]
    assert len(smtp.messages) == 1
    [mine] = (await core.list_alerts(alice, ListAlertsQuery())).alerts
    # another user's alert answers as a missing one; an admin sees it
    assert (await core.list_alerts(bob, ListAlertsQuery())).alerts == []
    with pytest.raises(NotFound):
        await core.get_alert(bob, mine.id)
    assert (await core.get_alert(Caller("root", True), mine.id)).id == mine.id
    # a source that did not answer resolves nothing
    await asyncio.to_thread(core.store.apply, [], set(), T0 + timedelta(seconds=30))
    await core.flush()
    assert len(webhook.bodies) == 1
    await asyncio.to_thread(core.store.apply, [], {"job_failed"}, T0 + timedelta(seconds=60))
    await core.flush()
    assert [b["state"] for b in webhook.bodies] == ["firing", "resolved"]
    assert len(smtp.messages) == 2
    core.store.close()


async def test_targets_are_checked_encrypted_and_never_shown(tmp_path):
    core = make_core(f"sqlite:///{tmp_path}/a.sqlite", tmp_path)
    core.notifier.allow_private_targets = False
    alice = Caller("alice", False)
    for url, why in [
        ("json://127.0.0.1:9/hook", "not a public address"),
        ("jsons://169.254.169.254/latest", "not a public address"),
        ("mailto://user:pw@example.org?smtp=10.0.0.5&to=a@b.org", "not a public address"),
        ("gotify://example.org/token", "not one users may use"),
        ("nonsense", "not an apprise URL"),
    ]:
        with pytest.raises(Invalid, match=why):
            await core.set_targets(alice, [url])
    slack = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"
    assert (await core.set_targets(alice, [slack])).targets == ["slack://…"]
    assert "TIiajkdnlazkcOXrIdevi7FQ" not in redact(slack)
    with core.store.engine.connect() as connection:
        raw = connection.exec_driver_sql("select ciphertext from alert_targets").scalar()
    assert b"slack" not in bytes(raw)
    assert (await core.get_targets(Caller("bob", False))).targets == []
    assert (await core.set_targets(alice, [])).targets == []
    # the schemes allowed come with every answer, for the panel's hint
    core.notifier.user_schemes = ["jsons", "slack"]
    shown = await core.get_targets(alice)
    assert shown.schemes == ["jsons", "slack"]
    with pytest.raises(Invalid, match=r"urls\.0: the scheme 'json' .*\(allowed: jsons, slack\)"):
        await core.set_targets(alice, ["json://hooks.example.org/a"])
    core.store.close()


def test_a_key_file_others_may_read_is_refused(tmp_path):
    key = tmp_path / "alerts.key"
    AlertStore(f"sqlite:///{tmp_path}/a.sqlite", key).close()
    assert key.stat().st_mode & 0o777 == 0o600
    key.chmod(0o644)
    with pytest.raises(KeyFileError, match="0600"):
        AlertStore(f"sqlite:///{tmp_path}/a.sqlite", key)


def test_migrations_match_the_orm(db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from hub_ext.services.alerts.db import make_engine, upgrade
    from hub_ext.services.alerts.orm import Base

    upgrade(db_url)
    upgrade(db_url)  # a no-op the second time
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={"compare_type": True, "version_table": "alerts_alembic_version"},
            )
            assert context.get_current_revision() == "0001"
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


# ------------------------------------------------------------------ the service in a real hub


@pytest.fixture(scope="module")
def receivers():
    """The admins' SMTP server and alice's webhook, up before the hub that calls them.

    The hub has the scheduler, the deployer (with the test double of its backend: real
    loopback model servers) and the alerts service, evaluating every half second.
    """
    mailbox = Mailbox()
    mailbox.port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=mailbox.port)
    controller.start()
    mailbox.url = f"mailto://127.0.0.1:{mailbox.port}?from=shipyard@localhost&to=ops@example.org"
    hook = Webhook()
    yield mailbox, hook
    hook.stop()
    controller.stop()


@pytest.fixture(scope="module")
def alerts_hub(hub_factory, home_root, receivers):
    from .hubtools import tagged
    from .services import FAKE_DEPLOYER_CONFIG, TEAM, scheduler_hub, users_with_accounts

    mailbox, _ = receivers
    config = (
        "c.AlertsService.evaluation_interval = 0.5\n"
        "c.AlertNotifier.allow_private_targets = True\n"
        f"c.AlertNotifier.admin_urls = [{mailbox.url!r}]\n"
        "c.AlertRules.disk_percent = 0\n"
        # the `for` duration is the unit tests'; here the alert fires at the first evaluation
        "c.AlertRules.model_min_requests = 5\n"
        "c.AlertRules.model_error_for = 0\n"
    )
    # the failures leave the deployer's window in 15 s, not a minute: the resolution comes sooner
    deployer = FAKE_DEPLOYER_CONFIG + "c.DeployerService.metrics_window = 15\n"
    with scheduler_hub(
        hub_factory,
        "alerts",
        tagged("syal-"),
        tagged("shipyard-test-al"),
        ["alerts", "deployer"],
        configs={"alerts": config, "deployer": deployer},
    ) as sched:
        yield sched, users_with_accounts(sched.hub, home_root, TEAM)


def alerts_api(sched, method: str, path: str, token: str, **kwargs):
    import requests

    r = requests.request(
        method,
        f"{sched.hub.url}/services/alerts/{path}",
        headers={"Authorization": f"token {token}"},
        timeout=30,
        **kwargs,
    )
    assert r.status_code < 500, r.text
    assert r.headers["Content-Type"].startswith("application/json"), r.text
    return r


@needs_root
def test_a_failing_job_gives_one_alert_and_one_resolution_at_real_receivers(alerts_hub, receivers):
    import time

    from .hubtools import wait_for
    from .services import create_job, notebook

    sched, users = alerts_hub
    mailbox, hook = receivers
    alice, bob = users["alice"], users["bob"]
    r = alerts_api(sched, "PUT", "api/targets", alice[0], json={"urls": [hook.url]})
    assert r.status_code == 200 and r.json()["targets"] == ["json://127.0.0.1/…"]
    bad = alerts_api(sched, "PUT", "api/targets", alice[0], json={"urls": ["nope://x"]})
    assert bad.status_code == 400 and "apprise" in bad.json()["message"]
    assert alerts_api(sched, "GET", "api/alerts?limit=0", alice[0]).status_code == 400

    job = create_job(
        sched,
        alice,
        "flaky",
        notebook("if fail:\n    raise ValueError('injected failure')", parameters="fail = True"),
    )
    key = f"job_failed{{job=flaky,job_id={job['id']}}}"
    run = sched.call("POST", f"api/jobs/{job['id']}/runs", alice[0], json={}).json()
    assert sched.wait_run(run["id"], alice[0])["status"] == "failed"

    def mine(state):
        return [b for b in hook.bodies if b["alert"]["key"] == key and b["state"] == state]

    def mails(word):
        return [m for _, m in mailbox.messages if m["Subject"].startswith(f"[Shipyard] {word}")]

    wait_for(lambda: mine("firing") and mails("FIRING"), 60, 0.2, "the alert")
    time.sleep(3)  # six more evaluations: none may notify again
    assert len(mine("firing")) == 1 and len(mails("FIRING")) == 1
    assert "injected failure" in mine("firing")[0]["message"]
    [alert] = alerts_api(sched, "GET", "api/alerts", alice[0]).json()["alerts"]
    assert (alert["key"], alert["state"], alert["owner"]) == (key, "firing", "alice")
    # another user's alert answers as a missing one
    assert alerts_api(sched, "GET", "api/alerts", bob[0]).json()["alerts"] == []
    missing = alerts_api(sched, "GET", f"api/alerts/{alert['id']}", bob[0])
    assert missing.status_code == 404
    assert alerts_api(sched, "GET", f"api/alerts/{alert['id']}", alice[0]).status_code == 200

    # the job is fixed: a run that succeeds resolves the alert, once
    run = sched.call(
        "POST", f"api/jobs/{job['id']}/runs", alice[0], json={"parameters": {"fail": False}}
    ).json()
    assert sched.wait_run(run["id"], alice[0])["status"] == "succeeded"
    wait_for(lambda: mine("resolved") and mails("RESOLVED"), 60, 0.2, "the resolution")
    time.sleep(3)
    assert len(mine("firing")) == len(mine("resolved")) == 1
    assert len(mails("FIRING")) == len(mails("RESOLVED")) == 1
    assert alerts_api(sched, "GET", "api/alerts", alice[0]).json()["alerts"] == []
    # nothing of a token reaches a receiver
    assert "token" not in json.dumps(hook.bodies).lower()


@needs_root
def test_a_model_that_starts_failing_gives_one_alert_and_one_resolution(alerts_hub, receivers):
    """A version whose predictions start failing (the double's ``fake-fail-after``) fires
    its error-rate alert once at both receivers; once its failures leave the deployer's
    15-second window (``metrics_window``), the alert resolves, once."""
    import time

    from .hubtools import wait_for
    from .services import DeployerClient

    sched, users = alerts_hub
    mailbox, hook = receivers
    alice = users["alice"]
    r = alerts_api(sched, "PUT", "api/targets", alice[0], json={"urls": [hook.url]})
    assert r.status_code == 200
    dep = DeployerClient(sched.hub, alice[0])
    r = dep(
        "POST", "api/deployments", json={"name": "wobbly", "model_uri": "models:/fake-fail-after/3"}
    )
    assert r.status_code == 201, r.text
    dep.wait_state("wobbly", 1, "ready")
    key = "model_error_rate{deployment=wobbly,version=1}"
    codes = [dep.invoke("alice", "wobbly").status_code for _ in range(12)]
    assert codes[:3] == [200, 200, 200] and all(c >= 500 for c in codes[3:]), codes

    def mine(state):
        return [b for b in hook.bodies if b["alert"]["key"] == key and b["state"] == state]

    def mails(word):
        return [
            m
            for _, m in mailbox.messages
            if m["Subject"].startswith(f"[Shipyard] {word}: model_error_rate")
            and "deployment=wobbly" in m["Subject"]
        ]

    wait_for(lambda: mine("firing") and mails("FIRING"), 60, 0.2, "the model's alert")
    time.sleep(3)
    assert len(mine("firing")) == 1 and len(mails("FIRING")) == 1
    firing = mine("firing")[0]
    assert firing["alert"]["owner"] == "alice" and firing["alert"]["severity"] == "critical"
    assert "wobbly" in firing["message"] and "in the last 15 s" in firing["message"]
    # the failures leave the deployer's 15 s window: the alert resolves, once
    # (within 45 s: with the default minute it could not resolve so soon)
    wait_for(lambda: mine("resolved") and mails("RESOLVED"), 45, 0.5, "the model's resolution")
    time.sleep(3)
    assert len(mine("firing")) == len(mine("resolved")) == 1
    assert len(mails("FIRING")) == len(mails("RESOLVED")) == 1
    assert dep("DELETE", "api/deployments/wobbly").status_code == 204


@needs_root
def test_the_alerts_service_reads_the_scheduler_and_deployer_and_changes_nothing(alerts_hub):
    """The services' ``monitors`` trait: the alerts service's own token may GET every user's
    jobs and deployments as an admin would; any write from it is still a 403."""
    import requests

    sched, users = alerts_hub
    hub = sched.hub
    token = (hub.data_dir / "services" / "alerts.token").read_text().strip()
    headers = {"Authorization": f"token {token}"}
    alice = users["alice"]
    mine = sched.call(
        "POST",
        "api/jobs",
        alice[0],
        json={"name": "watched", "profile": "tiny", "notebook": _notebook()},
    ).json()

    def call(method, service, path, **kwargs):
        return requests.request(
            method,
            f"{hub.url}/services/{service}/{path}",
            headers=headers,
            timeout=30,
            **kwargs,
        )

    listed = call("GET", "scheduler", "api/jobs?owner=alice&include_shared=false")
    assert listed.status_code == 200, listed.text
    assert mine["id"] in [j["id"] for j in listed.json()["jobs"]]
    assert call("GET", "scheduler", f"api/jobs/{mine['id']}").status_code == 200
    assert call("GET", "deployer", "api/deployments?owner=alice").status_code == 200
    assert call("GET", "scheduler", "api/pipelines").status_code == 200
    quotas = call("GET", "scheduler", "api/quotas")  # the quota rule's group quotas
    assert quotas.status_code == 200, quotas.text
    assert quotas.json() == {"quotas": [{"group": "limited", "limit": 1, "running": 0}]}
    # and the users' running servers with their profiles (read:servers)
    active = requests.get(f"{hub.url}/hub/api/users?state=active", headers=headers, timeout=30)
    assert active.status_code == 200, active.text
    for method, service, path, body in (
        ("POST", "scheduler", f"api/jobs/{mine['id']}/runs", {}),
        ("PATCH", "scheduler", f"api/jobs/{mine['id']}", {"paused": True}),
        ("DELETE", "scheduler", f"api/jobs/{mine['id']}", None),
        (
            "POST",
            "deployer",
            "api/deployments?owner=alice",
            {"name": "x", "model_uri": "models:/fake/x"},
        ),
    ):
        r = (
            call(method, service, path, json=body)
            if body is not None
            else call(method, service, path)
        )
        assert r.status_code == 403, (method, path, r.text)
    assert sched.call("GET", f"api/jobs/{mine['id']}", alice[0]).json()["paused"] is False


def _notebook() -> dict:
    from .services import notebook

    return notebook("print('watched')")
