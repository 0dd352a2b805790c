"""The alerts service's rules loop: read, evaluate, move the episodes, notify once.

Every ``evaluation_interval`` :meth:`AlertsCore.evaluate` reads the sources
(:mod:`.sources`), asks the rules (:mod:`.rules`) what holds, lets the store
move each alert pending → firing → resolved (:mod:`.store`), and sends each
committed transition exactly once (:mod:`.notify`). A source that does not
answer leaves its rules' alerts as they were: a scheduler restart resolves
nothing and fires nothing.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from hub_ext.profiles.loader import ProfilesInvalid
from hub_ext.profiles.model import ProfilesConfig

from ..common.errors import Invalid, NotFound
from .metrics import EVALUATION_SECONDS, EVALUATIONS, FIRING, TRANSITIONS
from .models import DescribeAlert, DescribeTargets, ListAlertsQuery, ListAlertsResponse
from .notify import AlertNotifier, redact
from .rules import AlertRules, Finding, profile_quota_uses
from .sources import SourceError, Sources
from .store import AlertStore

log = logging.getLogger("shipyard.alerts")

MODEL_RULES = ("model_error_rate", "model_latency", "model_drift")
JOB_RULES = ("job_failed", "job_schedule_missed", "pipeline_failed", "pipeline_schedule_missed")
DISK_RULES = ("disk_full",)
GPU_RULES = ("gpu_idle",)
QUOTA_RULES = ("quota_nearly_exhausted",)


@dataclass(frozen=True)
class Caller:
    name: str
    admin: bool


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class AlertsCore:
    """The rules loop and what the REST API asks of it."""

    def __init__(
        self,
        store: AlertStore,
        rules: AlertRules,
        notifier: AlertNotifier,
        sources: Sources,
        data_dir: str,
        profiles: Callable[[], ProfilesConfig] | None = None,
    ):
        self.store = store
        self.rules = rules
        self.notifier = notifier
        self.sources = sources
        self.data_dir = data_dir
        #: The profiles file's quotas (:meth:`ProfileStore.get`); None: only the scheduler's.
        self.profiles = profiles
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------ evaluation

    async def gather(self, now: datetime) -> tuple[list[Finding], set[str]]:
        """What holds now, and the rules that could be evaluated."""
        findings: list[Finding] = []
        evaluated: set[str] = set()
        usage = await asyncio.to_thread(shutil.disk_usage, self.data_dir)
        findings += self.rules.disk_findings(self.data_dir, usage.total, usage.used)
        evaluated.update(DISK_RULES)
        if self.sources.usage_url:
            try:
                findings += self.rules.gpu_idle_findings(await self.sources.idle_servers())
                evaluated.update(GPU_RULES)
            except SourceError as e:
                EVALUATIONS.labels("usage_failed").inc()
                log.warning("GPU rules not evaluated: %s", e)
        try:
            findings += self.rules.quota_findings(await self.quota_uses())
            evaluated.update(QUOTA_RULES)
        except SourceError as e:
            EVALUATIONS.labels("quotas_failed").inc()
            log.warning("Quota rules not evaluated: %s", e)
        if not (self.sources.scheduler_url or self.sources.deployer_url):
            return findings, evaluated
        try:
            users = await self.sources.users()
        except SourceError as e:
            EVALUATIONS.labels("hub_failed").inc()
            log.warning("Cannot list the hub's users: %s", e)
            return findings, evaluated
        if self.sources.deployer_url:
            try:
                for owner in users:
                    for d in await self.sources.deployments(owner):
                        metrics = await self.sources.deployment_metrics(owner, d["name"])
                        findings += self.rules.model_findings(owner, d["name"], metrics)
                evaluated.update(MODEL_RULES)
            except SourceError as e:
                EVALUATIONS.labels("deployer_failed").inc()
                log.warning("Model rules not evaluated: %s", e)
        if self.sources.scheduler_url:
            try:
                for owner in users:
                    for job in await self.sources.jobs(owner):
                        runs = await self.sources.runs(job["id"])
                        findings += self.rules.job_findings(job, runs, now)
                for pipeline in await self.sources.pipelines():
                    runs = await self.sources.pipeline_runs(pipeline["id"])
                    findings += self.rules.pipeline_findings(pipeline, runs, now)
                evaluated.update(JOB_RULES)
            except SourceError as e:
                EVALUATIONS.labels("scheduler_failed").inc()
                log.warning("Job rules not evaluated: %s", e)
        return findings, evaluated

    async def quota_uses(self) -> list[dict]:
        """Every quota's use: each user's profiles quota, each group's quota on runs.

        Raises :class:`SourceError` when the hub, the scheduler or the profiles
        file cannot be read: the quota alerts then stay as they are.
        """
        if self.rules.quota_use_ratio <= 0:
            return []  # the rule is off: its open alerts resolve, nothing is read
        uses: list[dict] = []
        if self.profiles is not None:
            try:
                config = await asyncio.to_thread(self.profiles)
            except (OSError, ProfilesInvalid) as e:
                raise SourceError(f"the profiles file: {e}") from None
            if config.quotas.default is not None or config.quotas.groups:
                uses += profile_quota_uses(await self.sources.active_users(), config)
        if self.sources.scheduler_url:
            uses += [
                {"group": q["group"], "resource": "runs", "used": q["running"], "limit": q["limit"]}
                for q in await self.sources.group_quotas()
            ]
        return uses

    async def evaluate(self, now: datetime | None = None) -> list[tuple[str, str]]:
        """One evaluation of every rule; returns the transitions it made."""
        async with self._lock:
            started = time.monotonic()
            now = now or utcnow()
            findings, evaluated = await self.gather(now)
            transitions = await asyncio.to_thread(self.store.apply, findings, evaluated, now)
            await self.flush()
            firing = await asyncio.to_thread(self.store.firing_by_rule)
            for rule in (*MODEL_RULES, *JOB_RULES, *DISK_RULES, *GPU_RULES, *QUOTA_RULES):
                FIRING.labels(rule).set(firing.get(rule, 0))
            EVALUATIONS.labels("ok").inc()
            EVALUATION_SECONDS.observe(time.monotonic() - started)
            return transitions

    async def flush(self) -> None:
        """Send every committed, unsent transition once (a failed send is not retried)."""
        for alert_id, transition in await asyncio.to_thread(self.store.unsent):
            alert = await asyncio.to_thread(self.store.get, alert_id)
            if alert is None:
                continue
            urls: list[str] = []
            if alert.owner:
                try:
                    urls, _ = await asyncio.to_thread(self.store.targets, alert.owner)
                except Exception:
                    log.exception("The targets of %s cannot be read", alert.owner)
            message = self.notifier.message(alert.model_dump(mode="json"), transition)
            await self.notifier.send(message, urls)
            await asyncio.to_thread(self.store.mark_sent, alert_id, transition)
            TRANSITIONS.labels(alert.rule, transition).inc()
            log.info("Alert %s %s", alert.key, transition)

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        """Evaluate every ``interval`` seconds until ``stop``; an error never ends the loop."""
        while not stop.is_set():
            try:
                await self.evaluate()
            except Exception:
                EVALUATIONS.labels("error").inc()
                log.exception("Alert evaluation failed")
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except asyncio.TimeoutError:
                pass

    # ------------------------------------------------------------ the REST API

    async def list_alerts(self, caller: Caller, query: ListAlertsQuery) -> ListAlertsResponse:
        owner = None if caller.admin else caller.name
        return ListAlertsResponse(alerts=await asyncio.to_thread(self.store.alerts, owner, query))

    async def get_alert(self, caller: Caller, alert_id: str) -> DescribeAlert:
        alert = await asyncio.to_thread(self.store.get, alert_id)
        if alert is None or not (caller.admin or alert.owner == caller.name):
            raise NotFound(f"no alert {alert_id!r}")
        return alert

    async def get_targets(self, caller: Caller) -> DescribeTargets:
        urls, updated = await asyncio.to_thread(self.store.targets, caller.name)
        return DescribeTargets(
            targets=[redact(u) for u in urls],
            updated_at=updated,
            schemes=list(self.notifier.user_schemes),
        )

    async def set_targets(self, caller: Caller, urls: Collection[str]) -> DescribeTargets:
        errors: list[dict[str, Any]] = []
        for i, url in enumerate(urls):
            try:
                await self.notifier.check_target(url)
            except ValueError as e:
                errors.append({"loc": f"urls.{i}", "msg": str(e)})
        if errors:
            raise Invalid("; ".join(f"{e['loc']}: {e['msg']}" for e in errors))
        unique = list(dict.fromkeys(urls))
        await asyncio.to_thread(self.store.set_targets, caller.name, unique, utcnow())
        return await self.get_targets(caller)

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "database": self.store.engine.dialect.name}
