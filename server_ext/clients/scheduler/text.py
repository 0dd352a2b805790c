"""What users read about their jobs: times, triggers, the table of jobs, a notebook's diff.

``%jobs`` and ``%schedule`` (:mod:`server_ext.magics.jobs`, with the widgets of
:mod:`server_ext.magics.widgets`) and ``shipyard jobs`` (:mod:`hub_ext.cli.jobs`) show the
same text, from here, apart from the wire calls of :mod:`server_ext.clients.scheduler.client`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .client import SchedulerClient

#: Lines of a notebook's diff ``%schedule`` shows when it updates a job.
MAX_DIFF_LINES = 20


def parse_time(value: str | None) -> datetime | None:
    """An ISO 8601 time of the service (UTC, maybe with ``Z``) as an aware datetime."""
    if not value:
        return None
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def format_time(value: str | None, tz: str | None = None) -> str:
    """``2026-01-02 06:00 CET``: a service time in ``tz`` (default: this machine's zone)."""
    when = parse_time(value)
    if when is None:
        return ""
    try:
        zone = ZoneInfo(tz) if tz else None
    except (ZoneInfoNotFoundError, ValueError):
        zone = None
    return when.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z").strip()


def describe_triggers(job: dict) -> str:
    """``cron 0 6 * * * (Europe/Berlin); file data/*.csv; webhook`` for a job's triggers."""
    parts = []
    for described in job.get("triggers", []):
        trigger = described["trigger"]
        kind = trigger["kind"]
        if kind == "cron":
            parts.append(f"cron {trigger['expression']} ({trigger.get('timezone', 'UTC')})")
        elif kind == "file":
            parts.append(f"file {trigger['glob']}")
        elif kind == "after_job":
            parts.append(f"after job {trigger['upstream_job_id'][:8]}")
        else:
            parts.append(kind)
    return "; ".join(parts) or "manual only"


def cron_timezone(job: dict) -> str | None:
    """The time zone of the job's first cron trigger, to show its times in."""
    for described in job.get("triggers", []):
        if described["trigger"]["kind"] == "cron":
            return described["trigger"].get("timezone")
    return None


def next_run(job: dict) -> str | None:
    """The soonest ``next_fire_at`` of the job's triggers; None when paused or none is due."""
    if job.get("paused"):
        return None
    times = [t["next_fire_at"] for t in job.get("triggers", []) if t.get("next_fire_at")]
    return min(times, key=parse_time) if times else None


@dataclass(frozen=True)
class JobSummary:
    """What ``%jobs`` and ``shipyard jobs list`` show of a job."""

    job: dict
    last_run: dict | None

    @property
    def next_run(self) -> str | None:
        return next_run(self.job)


def job_summaries(client: SchedulerClient) -> list[JobSummary]:
    """Every job the user sees, each with its newest run."""
    return [JobSummary(job, client.last_run(job["id"])) for job in client.all_jobs()]


def jobs_text(summaries: list[JobSummary], user: str | None = None) -> str:
    """A plain-text table of jobs: name, triggers, next run, last run (its state, time and
    id: what ``shipyard jobs logs`` takes), the job's id.

    Others' jobs are named ``OWNER/NAME``, as ``find_job`` takes them.
    """
    if not summaries:
        return "No jobs yet: schedule a notebook with %schedule in it."
    rows = [("NAME", "TRIGGERS", "NEXT RUN", "LAST RUN", "LAST RUN ID", "JOB ID")]
    for item in summaries:
        job, run = item.job, item.last_run
        name = job["name"] if job["owner"] == user else f"{job['owner']}/{job['name']}"
        tz = cron_timezone(job)
        when = "paused" if job.get("paused") else format_time(item.next_run, tz)
        last, run_id = "", ""
        if run:
            last = f"{run['status']} {format_time(run['ended_at'] or run['queued_at'], tz)}"
            run_id = run["id"]
        rows.append((name, describe_triggers(job), when, last, run_id, job["id"]))
    # the ids are never cut: they are what other commands take
    widths = [min(max(len(row[i]) for row in rows), 48) for i in range(4)]
    widths.append(max(len(row[4]) for row in rows))
    return "\n".join(
        "  ".join(cell[:width].ljust(width) for cell, width in zip(row[:5], widths, strict=True))
        + "  "
        + row[5]
        for row in rows
    )


def diff_summary(changed: bool, diff: str) -> str:
    """What replacing a job's notebook changed: counts, and the start of the diff."""
    if not changed:
        return "The notebook is the same as the job's."
    if not diff.strip():
        return "The notebook changed in outputs or metadata only."
    lines = diff.splitlines()
    added = sum(1 for x in lines if x.startswith("+") and not x.startswith("+++"))
    removed = sum(1 for x in lines if x.startswith("-") and not x.startswith("---"))
    shown = "\n".join(f"  {x}" for x in lines[:MAX_DIFF_LINES])
    more = (
        f"\n  ... ({len(lines) - MAX_DIFF_LINES} more lines)" if len(lines) > MAX_DIFF_LINES else ""
    )
    return f"The notebook changed: {added} line(s) added, {removed} removed in its cells:\n{shown}{more}"
