"""Conversion from ORM rows to the API models, and page tokens, in one place (STYLE rule 11).

The ORM (:mod:`.orm`) never imports the API models (:mod:`.models`); this
module is the only bridge between them, so a field added to one shows up
here or nowhere. A trigger's API model comes from its kind
(:meth:`~.triggers.base.TriggerKind.describe`), which leaves out what must
stay in the database (a webhook trigger's secret hash).

A job's ``notify`` column holds :class:`~.models.NotifyPolicy` as JSON;
:func:`notify_policy` reads it back with the policy's defaults for missing
keys (``{}`` is what jobs from before notifications have) and without
validating again: a rule tightened later must not make an existing job
unreadable.

Page tokens are opaque to clients (base64 JSON of the last row's sort key);
anything that does not decode to the expected shape is refused as
:class:`~.errors.Invalid` rather than guessed at.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from .errors import Invalid
from .models import (
    DescribeJob,
    DescribeNotification,
    DescribeRun,
    DescribeTrigger,
    NotifyPolicy,
)
from .orm import Job, Notification, Run, Trigger
from .triggers import KINDS


def notify_policy(stored: dict[str, Any] | None) -> NotifyPolicy:
    """Return the policy a job's ``notify`` column holds, with defaults for missing keys."""
    known = {k: v for k, v in (stored or {}).items() if k in NotifyPolicy.model_fields}
    # Defaults made by a factory are made here: model_construct would ask
    # inspect.signature() of the factory on every call (about 1.5 ms for ``list``,
    # per job of a listing, pydantic 2.11+).
    for name, field in NotifyPolicy.model_fields.items():
        if name not in known and field.default_factory is not None:
            known[name] = field.default_factory()  # type: ignore[call-arg]
    return NotifyPolicy.model_construct(**known)


def notify_dict(policy: NotifyPolicy) -> dict[str, Any]:
    """Return what the ``notify`` column stores for ``policy``: every field, as JSON."""
    return policy.model_dump(mode="json")


def describe_trigger(trigger: Trigger) -> DescribeTrigger:
    model = KINDS[trigger.kind].describe(trigger.spec)
    # Not validated again (nor is the kind's model): validation would rerun
    # CronTrigger's check that the expression fires, a croniter walk per trigger.
    return DescribeTrigger.model_construct(
        id=trigger.id,
        trigger=model,
        next_fire_at=trigger.next_fire_at,
        last_fired_at=trigger.last_fired_at,
    )


def describe_job(
    job: Job, read_only: bool = False, webhook_secret: str | None = None
) -> DescribeJob:
    return DescribeJob(
        id=job.id,
        owner=job.owner,
        name=job.name,
        notebook_digest=job.notebook_digest,
        source_path=job.source_path,
        parameters=job.parameters,
        profile=job.profile,
        timeout_seconds=job.timeout_seconds,
        retry_attempts=job.retry_attempts,
        retry_backoff_seconds=job.retry_backoff_seconds,
        concurrency_policy=job.concurrency_policy,
        missed_run_policy=job.missed_run_policy,
        output_formats=job.output_formats,
        shared_with_groups=job.shared_with_groups,
        paused=job.paused,
        created_at=job.created_at,
        updated_at=job.updated_at,
        version=job.version,
        triggers=[describe_trigger(t) for t in job.triggers],
        notify=notify_policy(job.notify),
        keep_runs=job.keep_runs,
        keep_days=job.keep_days,
        secrets=job.secrets or [],
        read_only=read_only,
        webhook_secret=webhook_secret,
    )


def describe_run(run: Run) -> DescribeRun:
    return DescribeRun(
        id=run.id,
        job_id=run.job_id,
        job_version=run.job_version,
        trigger_id=run.trigger_id,
        tick=run.tick,
        status=run.status,
        attempt=run.attempt,
        retry_of=run.retry_of,
        reason=run.reason,
        parameters=run.parameters,
        notebook_digest=run.notebook_digest,
        profile=run.profile,
        timeout_seconds=run.timeout_seconds,
        queued_at=run.queued_at,
        not_before=run.not_before,
        started_at=run.started_at,
        ended_at=run.ended_at,
        claimed_by=run.claimed_by,
        heartbeat_at=run.heartbeat_at,
        cancel_requested_at=run.cancel_requested_at,
        output_path=run.output_path,
        log_path=run.log_path,
        env_digest=run.env_digest,
        mlflow_run_id=run.mlflow_run_id,
        cells_done=run.cells_done,
        cells_total=run.cells_total,
        outputs_deleted_at=run.outputs_deleted_at,
        pipeline_run_id=run.pipeline_run_id,
        step=run.step,
    )


def describe_notification(notification: Notification) -> DescribeNotification:
    return DescribeNotification(
        id=notification.id,
        job_id=notification.job_id,
        run_id=notification.run_id,
        event=notification.event,
        message=notification.message,
        created_at=notification.created_at,
        read_at=notification.read_at,
    )


def encode_token(values: list[str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_token(token: str, size: int) -> list[str]:
    try:
        values = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        values = None
    if (
        not isinstance(values, list)
        or len(values) != size
        or not all(isinstance(v, str) for v in values)
    ):
        raise Invalid("next_token is not one this service issued: start again without it")
    return values
