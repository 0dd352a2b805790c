"""The alert rules: thresholds as traits, and pure functions from observed state to findings.

A rule looks at one thing the service read (a deployment's metrics, a job
or a pipeline and its latest runs, the data directory's disk, the usage
service's idle servers, the quotas' use) and answers the :class:`Finding` objects that hold now. Whether a finding becomes a firing
alert (it must hold for the rule's ``for`` duration) and whom it notifies is
:mod:`.core`'s; these functions do no I/O, so the tests check them on plain
dicts.

The thresholds follow the Prometheus rules in config/prometheus/ where both
exist, so an admin who moves to Alertmanager keeps the same meaning.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from traitlets import Bool, Float, Integer
from traitlets.config import Configurable

from hub_ext.profiles.model import ProfileChoiceError, ProfilesConfig
from hub_ext.profiles.quantities import format_cpu, format_memory, parse_cpu, parse_memory
from hub_ext.spawners.mixin import Usage

#: Run statuses that count as a failed run.
FAILED = ("failed", "timed_out", "orphaned")
#: Run statuses of a run that has not ended.
UNFINISHED = ("queued", "running")
#: What a quota's resource counts, as its alert's summary says it.
QUOTA_NOUNS = {
    "servers": "servers",
    "cpu": "CPU",
    "memory": "memory",
    "gpu": "GPUs",
    "runs": "runs",
}


def profile_quota_uses(users: list[dict], config: ProfilesConfig) -> list[dict]:
    """Each user's use of each limited field of their profiles quota, for :meth:`quota_findings`.

    ``users`` are the hub's user models (``GET /users?state=active`` with
    ``read:servers``: name, groups, servers with their ``user_options``). A
    server counts with the profile its options name, as the profiles file
    defines it now (the hub counts the one recorded at spawn: the same unless
    the file changed since), else the user's default profile; what a server
    counts is the spawner's :class:`~hub_ext.spawners.mixin.Usage`, as in the
    hub's own check.
    """
    uses: list[dict] = []
    for user in users:
        groups = user.get("groups") or []
        quota = config.quota_for(groups)
        servers = list((user.get("servers") or {}).values())
        if quota is None or not servers:
            continue
        names = [g for g in sorted(set(groups)) if g in config.quotas.groups]
        source = ("group " if len(names) == 1 else "groups ") + ", ".join(names)
        total = Usage()
        for server in servers:
            slug = (server.get("user_options") or {}).get("profile")
            try:
                profile = config.resolve(slug if isinstance(slug, str) else None, groups)
            except ProfileChoiceError:
                continue  # a profile gone from the file: its resources are unknown here
            usage = Usage.of(profile)
            total = Usage(total.cpu + usage.cpu, total.memory + usage.memory, total.gpu + usage.gpu)
        fields: list[tuple[str, float, float | None, Callable[[Any], str]]] = [
            ("servers", len(servers), quota.max_servers, str),
            ("cpu", total.cpu, None if quota.cpu is None else parse_cpu(quota.cpu), format_cpu),
            (
                "memory",
                total.memory,
                None if quota.memory is None else parse_memory(quota.memory),
                format_memory,
            ),
            ("gpu", total.gpu, quota.gpu, str),
        ]
        for resource, used, limit, fmt in fields:
            if limit is None:
                continue
            uses.append(
                {
                    "user": user["name"],
                    "resource": resource,
                    "used": used,
                    "limit": limit,
                    "source": source if names else "the default quota",
                    "shown": [fmt(used), fmt(limit)],
                }
            )
    return uses


@dataclass(frozen=True)
class Finding:
    """A rule that holds now, for one thing (its labels)."""

    rule: str
    labels: dict[str, str]
    owner: str | None
    summary: str
    value: float | None = None
    severity: str = "warning"
    #: Seconds the finding must hold before the alert fires.
    for_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        """The alert's stable key: ``rule{label=value,...}`` with sorted labels."""
        inner = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        return f"{self.rule}{{{inner}}}"

    def labels_json(self) -> str:
        return json.dumps(self.labels, sort_keys=True)


class AlertRules(Configurable):
    """The thresholds of the rules the alerts service evaluates."""

    model_error_rate = Float(
        0.05,
        help="""
        A model version alerts when this share of its requests fail (0..1; 0 turns the rule off).

        Measured over the deployer's window (``DeployerService.metrics_window``,
        a minute unless configured), and
        only once the window holds ``model_min_requests``: three failures in
        four requests at night are not an incident.

        Example::

            c.AlertRules.model_error_rate = 0.01

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    model_min_requests = Integer(
        20,
        help="""
        Fewest requests in the window for the error-rate and latency rules to judge a version.

        Example::

            c.AlertRules.model_min_requests = 100

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    model_error_for = Float(
        300,
        help="""
        Seconds a version's error rate must stay above ``model_error_rate`` before it alerts.

        Example::

            c.AlertRules.model_error_for = 60

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    model_p99_ms = Float(
        2000,
        help="""
        A model version alerts when its p99 latency (ms) stays above this (0 turns it off).

        Example::

            c.AlertRules.model_p99_ms = 500

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    model_latency_for = Float(
        300,
        help="""
        Seconds a version's p99 latency must stay above ``model_p99_ms`` before it alerts.

        Example::

            c.AlertRules.model_latency_for = 600

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    model_drift_psi = Float(
        0.2,
        help="""
        A model version alerts when a feature's drift (PSI) stays above this (0 turns it off).

        0.1-0.2 is usually read as a moderate shift, above 0.2 as a significant one.

        Example::

            c.AlertRules.model_drift_psi = 0.25

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    model_drift_for = Float(
        900,
        help="""
        Seconds a feature's drift must stay above ``model_drift_psi`` before it alerts.

        Example::

            c.AlertRules.model_drift_for = 3600

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    job_failed = Bool(
        True,
        help="""
        Alert when a job's latest finished run failed, timed out or was orphaned.

        The alert resolves when a later run of the job succeeds (or the job is deleted).

        Example::

            c.AlertRules.job_failed = False

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    pipeline_failed = Bool(
        True,
        help="""
        Alert when a pipeline's latest finished run failed.

        The alert resolves when a later run of the pipeline succeeds (a repair
        that succeeds is one). A failed step's own job does not alert apart:
        the scheduler lists steps with their pipeline, not as jobs.

        Example::

            c.AlertRules.pipeline_failed = False

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    schedule_grace = Float(
        600,
        help="""
        Seconds a cron trigger's fire time may pass without firing before it alerts (0: off).

        A scheduler that is down, or a trigger stuck behind a concurrency
        policy, shows as a fire time in the past that does not move. Jobs
        (``job_schedule_missed``) and pipelines (``pipeline_schedule_missed``)
        alike; paused ones never alert.

        Example::

            c.AlertRules.schedule_grace = 1800

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    quota_use_ratio = Float(
        0.9,
        help="""
        Alert when a quota is used to at least this share of its limit (0..1; 0 turns it off).

        Watches the profiles' ``quotas`` (each user's running servers, CPU,
        memory and GPUs, read from the hub's servers and the profiles file) and
        the scheduler's ``c.SchedulerService.group_quotas`` (each group's runs
        running at once, read from the scheduler's ``api/quotas``). A user's
        quota tells the user and the admins; a group's, the admins only. An
        unlimited field, or a limit of 0 (nothing allowed), never alerts. The
        alert resolves when the use drops below the share.

        Example::

            c.AlertRules.quota_use_ratio = 1.0  # only a quota used up

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    disk_percent = Float(
        90,
        help="""
        Alert when the data directory's file system is fuller than this percent (0: off).

        The admins are told; the data directory holds the databases, runs' outputs and logs.

        Example::

            c.AlertRules.disk_percent = 80

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    disk_for = Float(
        300,
        help="""
        Seconds the disk must stay above ``disk_percent`` before it alerts.

        Example::

            c.AlertRules.disk_for = 0

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    gpu_idle_after = Float(
        3600,
        help="""
        Alert when a server holding at least one GPU has been idle longer than this, in seconds (0: off).

        Read from the usage service's idle servers (``api/usage/waste``), which
        lists a server only once it has been idle for ``c.UsageService.idle_after``
        (default 3600): a shorter value here alerts at that time. The owner and
        the admins are told; the alert resolves when the server is busy again or
        stops.

        Example::

            c.AlertRules.gpu_idle_after = 7200

        .. versionadded:: 0.18
        """,
    ).tag(config=True)

    # ------------------------------------------------------------ the rules

    def model_findings(self, owner: str, deployment: str, metrics: dict) -> list[Finding]:
        """Findings of one deployment from ``GET api/deployments/{name}/metrics``."""
        found = []
        for version, m in sorted((metrics.get("versions") or {}).items()):
            labels = {"deployment": deployment, "version": str(version)}
            requests = int(m.get("window_requests") or 0)
            window = float(m.get("window_seconds") or 60)
            rate = float(m.get("error_rate") or 0.0)
            if (
                self.model_error_rate > 0
                and requests >= self.model_min_requests
                and rate > self.model_error_rate
            ):
                found.append(
                    Finding(
                        "model_error_rate",
                        labels,
                        owner,
                        f"Model {owner}/{deployment} version {version}: {rate:.0%} of "
                        f"{requests} requests failed in the last {window:g} s "
                        f"(threshold {self.model_error_rate:.0%}).",
                        rate,
                        "critical",
                        self.model_error_for,
                    )
                )
            p99 = (m.get("latency_ms") or {}).get("p99")
            if (
                self.model_p99_ms > 0
                and p99 is not None
                and requests >= self.model_min_requests
                and p99 > self.model_p99_ms
            ):
                found.append(
                    Finding(
                        "model_latency",
                        labels,
                        owner,
                        f"Model {owner}/{deployment} version {version}: p99 latency "
                        f"{p99:.0f} ms (threshold {self.model_p99_ms:.0f} ms).",
                        float(p99),
                        "warning",
                        self.model_latency_for,
                    )
                )
            if self.model_drift_psi > 0:
                for feature, psi in sorted((m.get("drift") or {}).items()):
                    if isinstance(psi, (int, float)) and psi > self.model_drift_psi:
                        found.append(
                            Finding(
                                "model_drift",
                                {**labels, "feature": str(feature)},
                                owner,
                                f"Model {owner}/{deployment} version {version}: feature "
                                f"{feature!r} drifted (PSI {psi:.2f}, threshold "
                                f"{self.model_drift_psi:.2f}).",
                                float(psi),
                                "warning",
                                self.model_drift_for,
                            )
                        )
        return found

    def job_findings(self, job: dict, runs: list[dict], now: datetime) -> list[Finding]:
        """Findings of one job (``DescribeJob``) from its latest runs (newest first)."""
        found = []
        owner, name = job["owner"], job["name"]
        labels = {"job": name, "job_id": job["id"]}
        if self.job_failed:
            finished = [r for r in runs if r.get("status") not in UNFINISHED]
            if finished and finished[0]["status"] in FAILED:
                run = finished[0]
                status = run["status"].replace("_", " ")
                reason = f": {run['reason']}" if run.get("reason") else ""
                found.append(
                    Finding(
                        "job_failed",
                        labels,
                        owner,
                        f"Job {owner}/{name}: its latest run {run['id']} {status}{reason}.",
                        None,
                        "warning",
                        0.0,
                    )
                )
        if not job.get("paused"):
            cron = [
                t.get("next_fire_at")
                for t in job.get("triggers") or []
                if (t.get("trigger") or {}).get("kind") == "cron"
            ]
            due_at = self._late(cron, now)
            if due_at is not None:
                found.append(
                    Finding(
                        "job_schedule_missed",
                        labels,
                        owner,
                        f"Job {owner}/{name}: its run due at {due_at.isoformat()} has not "
                        f"started {self.schedule_grace:.0f} s later.",
                        (now - due_at).total_seconds(),
                        "warning",
                        0.0,
                    )
                )
        return found

    def _late(self, fire_times: list[str | None], now: datetime) -> datetime | None:
        """The earliest of ``fire_times`` (ISO 8601) passed more than ``schedule_grace`` ago."""
        if self.schedule_grace <= 0:
            return None
        grace = timedelta(seconds=self.schedule_grace)
        late = [
            due_at
            for due_at in (datetime.fromisoformat(t) for t in fire_times if t)
            if now - due_at > grace
        ]
        return min(late, default=None)

    def pipeline_findings(self, pipeline: dict, runs: list[dict], now: datetime) -> list[Finding]:
        """Findings of one pipeline (``DescribePipeline``) from its runs (newest first)."""
        found = []
        owner, name = pipeline["owner"], pipeline["name"]
        labels = {"pipeline": name, "pipeline_id": pipeline["id"]}
        finished = [r for r in runs if r.get("status") != "running"]
        if self.pipeline_failed and finished and finished[0]["status"] == "failed":
            run = finished[0]
            failed = [s["step"] for s in run.get("steps") or [] if s.get("status") == "failed"]
            steps = f" (failed: {', '.join(failed)})" if failed else ""
            reason = f": {run['reason']}" if run.get("reason") else ""
            found.append(
                Finding(
                    "pipeline_failed",
                    labels,
                    owner,
                    f"Pipeline {owner}/{name}: its latest run {run['id']} failed{steps}{reason}.",
                    None,
                    "warning",
                    0.0,
                )
            )
        due_at = None if pipeline.get("paused") else self._late([pipeline.get("next_fire_at")], now)
        if due_at is not None:
            found.append(
                Finding(
                    "pipeline_schedule_missed",
                    labels,
                    owner,
                    f"Pipeline {owner}/{name}: its run due at {due_at.isoformat()} has not "
                    f"started {self.schedule_grace:.0f} s later.",
                    (now - due_at).total_seconds(),
                    "warning",
                    0.0,
                )
            )
        return found

    def disk_findings(self, path: str, total: int, used: int) -> list[Finding]:
        """Findings of the data directory's file system (``shutil.disk_usage``)."""
        if self.disk_percent <= 0 or total <= 0:
            return []
        percent = 100.0 * used / total
        if percent <= self.disk_percent:
            return []
        return [
            Finding(
                "disk_full",
                {"path": path},
                None,
                f"The data directory's disk ({path}) is {percent:.1f}% full "
                f"(threshold {self.disk_percent:.0f}%).",
                percent,
                "critical",
                self.disk_for,
            )
        ]

    def gpu_idle_findings(self, idle: list[dict]) -> list[Finding]:
        """Findings of the usage service's idle servers (``GET api/usage/waste``'s ``idle``)."""
        if self.gpu_idle_after <= 0:
            return []
        found = []
        for server in idle:
            gpus = int(server.get("gpus") or 0)
            seconds = float(server.get("idle_hours") or 0.0) * 3600
            if gpus < 1 or seconds <= self.gpu_idle_after:
                continue
            owner, name = server["owner"], server["object"]
            plural = "s" if gpus != 1 else ""
            found.append(
                Finding(
                    "gpu_idle",
                    {"server": name},
                    owner,
                    f"Server {name} ({server.get('profile', '')}) of {owner} has been idle for "
                    f"{seconds / 3600:.1f} h holding {gpus} GPU{plural} (threshold "
                    f"{self.gpu_idle_after / 3600:.1f} h): stop it to free them.",
                    seconds,
                    "warning",
                    0.0,
                )
            )
        return found

    def quota_findings(self, uses: list[dict]) -> list[Finding]:
        """Findings of quota uses: each a user's or a group's use of one limited resource.

        Each item has ``user`` (the owner) or ``group`` (for the admins), ``resource``
        (``servers``, ``cpu``, ``memory``, ``gpu`` or ``runs``), ``used``, ``limit``
        (None: unlimited), and optionally ``source`` (whose quota it is, e.g.
        ``group research``) and ``shown``: ``used`` and ``limit`` as people read
        them (``["20 GiB", "24 GiB"]``).
        """
        if self.quota_use_ratio <= 0:
            return []
        found = []
        for use in uses:
            limit, used = use.get("limit"), float(use.get("used") or 0)
            if limit is None or limit <= 0 or used < self.quota_use_ratio * limit:
                continue
            resource = use["resource"]
            shown_used, shown_limit = use.get("shown") or (f"{used:g}", f"{limit:g}")
            if use.get("user"):
                owner = use["user"]
                labels = {"user": owner, "resource": resource}
                who = owner
            else:
                owner = None
                labels = {"group": use["group"], "resource": resource}
                who = f"group {use['group']}"
            verb = "runs" if resource in ("servers", "runs") else "uses"
            source = f" ({use['source']})" if use.get("source") else ""
            found.append(
                Finding(
                    "quota_nearly_exhausted",
                    labels,
                    owner,
                    f"{who} {verb} {shown_used} of {shown_limit} {QUOTA_NOUNS[resource]} "
                    f"allowed at once{source}; alerting at {self.quota_use_ratio:.0%} of a quota.",
                    used / limit,
                    "warning",
                    0.0,
                )
            )
        return found
