"""Pipelines in the scheduler's database: definitions, runs, and each step's state.

A part of :class:`~..store.JobStore` (``store.pipelines``), given the
sessionmakers and the :class:`~..queueing.RunQueue` like every other part.

**Steps are jobs.** Each notebook step of a pipeline is a job of its own
(``jobs.pipeline_id``, ``jobs.step``; named ``<pipeline>/<step>`` and hidden
from the job list), holding the step's notebook snapshot, profile, timeout
and retries. A step of a pipeline run is then a run of that job, with
``runs.pipeline_run_id`` and ``runs.step``: the scheduler's workers claim,
start, retry, time out, cancel and recover it like any run, and its log and
outputs are a run's.

**The pipeline moves in the transaction that ends a step's run.** The queue
calls :meth:`PipelineStore.after_run` for every run that ends (a worker's
``finish_run``, an orphan's recovery, a cancel), in the same transaction. It
locks the pipeline run's row (so two steps that end at once decide in turn),
records the step's state and what it recorded, and asks :mod:`.engine` what
follows: the runs of the steps whose turn it is are queued, the steps whose
condition failed are skipped, and the pipeline run ends when every step has.
So a scheduler killed at any instant loses no step and repeats none: a step's
end and what it starts are committed together or not at all, and a run that
was executing when its worker died is recovered (and retried) as any run is.

**A deploy step is a job too**, whose notebook is Shipyard's built-in deploy
notebook (``hub_ext/runtime/deploy_step.ipynb``, snapshotted when the pipeline is
saved, like a notebook step's), with the step's settings as its parameters
(:func:`.engine.deploy_parameters`): it scores, gates and deploys as the owner,
with the run token every scheduled run gets. It is never retried (a second try
would deploy a second version). When its run succeeds, the owner is told in the
same transaction (a notification with the decision and both figures, read from
what it recorded), whatever the step's job's ``notify`` policy: a deployment that
changed, or a model that was refused, is news the owner did not ask for run by
run; a deploy step that failed is told as any failed step's run is. The deployer
audits the versions it creates, promotes and rolls back.

**A repair** is a new pipeline run (``repair_of``) of the pipeline as it is
now (its notebooks may have been fixed since), in the same workspace: the
steps that succeeded are ``reused`` with what they recorded, the failed ones
and everything after them run again.

Access: a pipeline, its runs and its steps' runs are its owner's (and
admins'); anyone else gets the 404 of a missing one (SECURITY rule 3).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from ..errors import Conflict, Invalid, NotFound
from ..models import RunStatus
from ..notifications import new_notification
from ..orm import Job, PipelineRecord, PipelineRunRecord, PipelineStepRecord, Run, Trigger
from ..queueing import RunQueue, is_id, new_id
from ..triggers import KINDS, check_triggers, new_triggers
from . import engine
from .api import (
    DescribePipeline,
    DescribePipelineRun,
    DescribeStep,
    DescribeStepDefinition,
)
from .graph import topological_order
from .spec import DeployStep, NotebookStep, Pipeline

#: The path a deploy step's job shows as its source: Shipyard's built-in notebook.
DEPLOY_NOTEBOOK = "hub_ext/runtime/deploy_step.ipynb"

#: How a step's run ending becomes the step's state (a retry keeps it running).
STEP_OF_RUN = {
    "succeeded": "succeeded",
    "failed": "failed",
    "timed_out": "failed",
    "orphaned": "failed",
    "skipped": "failed",
    "cancelled": "cancelled",
}
#: Seconds between a failed step's run and its retry.
RETRY_BACKOFF_SECONDS = 10
#: Times a step whose run lost its scheduler (kill -9) is run again, beyond its retries.
MAX_ORPHANED = 3
#: Most runs of one pipeline listed at once.
MAX_LISTED_RUNS = 100


def step_job_name(pipeline: str, step: str) -> str:
    """The name of a step's job: ``<pipeline>/<step>`` (a job's own name has no ``/``)."""
    return f"{pipeline}/{step}"


class PipelineStore:
    """Pipelines, their runs and their steps (see the module docstring)."""

    def __init__(self, read: sessionmaker, write: sessionmaker, queue: RunQueue):
        self._read = read
        self._write = write
        self.queue = queue
        #: Where the runs that triggers start get their workspace (the service sets it).
        self.workspaces: str | None = None
        queue.ended_hooks.append(self.after_run)
        queue.pipeline_start = self.fire

    # ------------------------------------------------------------ access

    @staticmethod
    def _visible(record: Any, what: str, ident: str, user: str, admin: bool) -> Any:
        if record is None or not (admin or record.owner == user):
            raise NotFound(f"no {what} {ident!r}")
        return record

    def _pipeline(
        self, session: Session, pipeline_id: str, user: str, admin: bool, lock: bool = False
    ) -> PipelineRecord:
        if not is_id(pipeline_id):
            raise NotFound(f"no pipeline {pipeline_id!r}")
        query = select(PipelineRecord).where(PipelineRecord.id == pipeline_id)
        record = session.scalars(query.with_for_update() if lock else query).first()
        return self._visible(record, "pipeline", pipeline_id, user, admin)

    def _run(
        self, session: Session, run_id: str, user: str, admin: bool, lock: bool = False
    ) -> tuple[PipelineRecord, PipelineRunRecord]:
        if not is_id(run_id):
            raise NotFound(f"no pipeline run {run_id!r}")
        query = select(PipelineRunRecord).where(PipelineRunRecord.id == run_id)
        prun = session.scalars(query.with_for_update() if lock else query).first()
        pipeline = session.get(PipelineRecord, prun.pipeline_id) if prun else None
        if prun is None or pipeline is None or not (admin or pipeline.owner == user):
            raise NotFound(f"no pipeline run {run_id!r}")
        return pipeline, prun

    # ------------------------------------------------------- definitions

    def create(
        self,
        owner: str,
        source_path: str,
        pipeline: Pipeline,
        digest: str,
        snapshots: Mapping[str, str],
        profiles: Mapping[str, str],
        *,
        now: datetime | None = None,
    ) -> DescribePipeline:
        """Save a validated pipeline and a job for each of its steps.

        ``snapshots`` and ``profiles`` give each notebook step's notebook digest (in the
        snapshot store) and the profile it runs in (the step's, else the pipeline's).

        Raises
        ------
        Conflict
            The owner has a pipeline of that name.
        """
        now = self.queue.now(now)
        with self._write.begin() as session:
            taken = session.scalars(
                select(PipelineRecord.id).where(
                    PipelineRecord.owner == owner, PipelineRecord.name == pipeline.name
                )
            ).first()
            if taken is not None:
                raise Conflict(
                    f"you have a pipeline named {pipeline.name!r} ({taken}): update it "
                    "(PUT api/pipelines/<id>) or give this one another name"
                )
            record = PipelineRecord(
                id=new_id(),
                owner=owner,
                name=pipeline.name,
                source_path=source_path,
                spec=pipeline.model_dump(mode="json"),
                digest=digest,
                created_at=now,
                updated_at=now,
            )
            session.add(record)
            session.flush()
            secret = self._sync_jobs(
                session, record, pipeline, source_path, snapshots, profiles, now, changed=True
            )
            return self._describe(session, record, webhook_secret=secret)

    def update(
        self,
        pipeline_id: str,
        user: str,
        admin: bool,
        source_path: str,
        pipeline: Pipeline,
        digest: str,
        snapshots: Mapping[str, str],
        profiles: Mapping[str, str],
        *,
        now: datetime | None = None,
    ) -> DescribePipeline:
        """Replace a pipeline's definition; runs already started keep running the old one."""
        now = self.queue.now(now)
        with self._write.begin() as session:
            record = self._pipeline(session, pipeline_id, user, admin, lock=True)
            if pipeline.name != record.name:
                raise Invalid(
                    f"the file names the pipeline {pipeline.name!r}, not {record.name!r}: a "
                    "pipeline keeps its name (create another for a new name)"
                )
            old_triggers = record.spec.get("triggers")
            record.source_path = source_path
            record.spec = pipeline.model_dump(mode="json")
            record.digest = digest
            record.updated_at = now
            secret = self._sync_jobs(
                session,
                record,
                pipeline,
                source_path,
                snapshots,
                profiles,
                now,
                changed=record.spec.get("triggers") != old_triggers,
            )
            session.flush()
            return self._describe(session, record, webhook_secret=secret)

    def set_paused(
        self, pipeline_id: str, user: str, admin: bool, paused: bool, *, now: datetime | None = None
    ) -> DescribePipeline:
        """Pause (triggers start no run; runs by hand still do) or resume a pipeline."""
        now = self.queue.now(now)
        with self._write.begin() as session:
            record = self._pipeline(session, pipeline_id, user, admin, lock=True)
            record.spec = {**record.spec, "paused": paused}
            record.updated_at = now
            trigger_job = self._trigger_job(session, record.id)
            if trigger_job is not None and trigger_job.paused != paused:
                trigger_job.paused = paused
                if not paused:  # from now on, as a job's resume: no burst of missed ticks
                    for trigger in trigger_job.triggers:
                        KINDS[trigger.kind].schedule(trigger, now)
            session.flush()
            return self._describe(session, record)

    @staticmethod
    def _trigger_job(session: Session, pipeline_id: str) -> Job | None:
        return session.scalars(
            select(Job).where(Job.pipeline_id == pipeline_id, Job.step.is_(None))
        ).first()

    def _sync_jobs(
        self,
        session: Session,
        record: PipelineRecord,
        pipeline: Pipeline,
        source_path: str,
        snapshots: Mapping[str, str],
        profiles: Mapping[str, str],
        now: datetime,
        *,
        changed: bool,
    ) -> str | None:
        """Make each step's job say what the file says; drop removed steps' jobs.

        A notebook step's job runs its notebook; a deploy step's the built-in deploy
        notebook (``snapshots`` holds its digest for the step too).

        The pipeline's triggers (but ``after_pipeline``, which :meth:`_followers` reads
        from the file) are a trigger job's (``<pipeline>/``, no step): the scheduler's
        triggers fire it, and the queue starts a pipeline run instead of running it. When
        ``changed``, its triggers are made again; the new webhook secret, if one was made,
        is returned (the only time it is shown).
        """
        folder = PurePosixPath(source_path).parent
        existing = {
            job.step: job
            for job in session.scalars(select(Job).where(Job.pipeline_id == record.id)).all()
        }
        trigger_job = existing.pop(None, None)
        for step_id, step in pipeline.steps.items():
            job = existing.pop(step_id, None)
            if job is None:
                job = self._new_job(record, step_id, now)
                session.add(job)
            job.notebook_digest = snapshots[step_id]
            if isinstance(step, NotebookStep):
                job.source_path = str(folder / step.notebook)
                job.retry_attempts = step.retries
            else:  # a deploy is not retried: a second try would deploy a second version
                job.source_path = DEPLOY_NOTEBOOK
                job.retry_attempts = 0
            job.profile = profiles[step_id]
            job.timeout_seconds = int(step.timeout)
            job.retry_backoff_seconds = RETRY_BACKOFF_SECONDS
            job.updated_at = now
        for job in existing.values():
            busy = session.scalars(
                select(Run.id).where(Run.job_id == job.id, Run.status.in_(("queued", "running")))
            ).first()
            if busy is None:
                session.delete(job)
        triggers = [t for t in pipeline.triggers if t.kind != "after_pipeline"]
        if trigger_job is None:
            if not triggers:
                return None
            trigger_job = self._new_job(record, None, now)
            session.add(trigger_job)
            changed = True
        first = next(iter(snapshots))
        trigger_job.notebook_digest = snapshots[first]  # never run: a firing starts the pipeline
        trigger_job.source_path = source_path
        trigger_job.profile = profiles[first]
        trigger_job.timeout_seconds = 60
        trigger_job.retry_attempts = 0
        trigger_job.retry_backoff_seconds = RETRY_BACKOFF_SECONDS
        trigger_job.paused = pipeline.paused
        trigger_job.updated_at = now
        if not changed:
            return None
        session.flush()
        check_triggers(session, trigger_job.id, record.owner, triggers, (), False)
        rows, secret = new_triggers(triggers, now)
        trigger_job.triggers = rows
        return secret

    @staticmethod
    def _new_job(record: PipelineRecord, step: str | None, now: datetime) -> Job:
        return Job(
            id=new_id(),
            owner=record.owner,
            name=step_job_name(record.name, step or ""),
            pipeline_id=record.id,
            step=step,
            parameters={},
            concurrency_policy="allow",
            missed_run_policy="skip",
            output_formats=["ipynb"],
            shared_with_groups=[],
            paused=False,
            notify={},
            keep_runs=None,
            keep_days=None,
            secrets=[],
            created_at=now,
        )

    def get(self, pipeline_id: str, user: str, admin: bool = False) -> DescribePipeline:
        with self._read.begin() as session:
            return self._describe(session, self._pipeline(session, pipeline_id, user, admin))

    def list_pipelines(
        self, user: str, admin: bool = False, owner: str | None = None
    ) -> list[DescribePipeline]:
        """The caller's pipelines (an admin's: ``owner``'s, or everyone's), by name."""
        with self._read.begin() as session:
            query = select(PipelineRecord).order_by(PipelineRecord.owner, PipelineRecord.name)
            if not admin:
                query = query.where(PipelineRecord.owner == user)
            elif owner:
                query = query.where(PipelineRecord.owner == owner)
            return [self._describe(session, p) for p in session.scalars(query).all()]

    def delete(self, pipeline_id: str, user: str, admin: bool = False) -> None:
        """Delete a pipeline, its step jobs and its runs' records (not while a run runs)."""
        with self._write.begin() as session:
            record = self._pipeline(session, pipeline_id, user, admin, lock=True)
            running = session.scalars(
                select(PipelineRunRecord.id).where(
                    PipelineRunRecord.pipeline_id == record.id,
                    PipelineRunRecord.status == "running",
                )
            ).first()
            if running is not None:
                raise Conflict(
                    f"pipeline {record.name!r} has run {running} running: cancel it first"
                )
            session.execute(delete(Job).where(Job.pipeline_id == record.id))
            session.delete(record)

    def _describe(
        self, session: Session, record: PipelineRecord, webhook_secret: str | None = None
    ) -> DescribePipeline:
        pipeline = Pipeline.model_validate(record.spec)
        jobs = {
            job.step: job
            for job in session.scalars(select(Job).where(Job.pipeline_id == record.id)).all()
        }
        trigger_job = jobs.get(None)
        webhook = trigger_job is not None and any(t.kind == "webhook" for t in trigger_job.triggers)
        fire_times = [
            t.next_fire_at
            for t in (trigger_job.triggers if trigger_job is not None else [])
            if t.kind == "cron" and t.next_fire_at is not None
        ]
        steps = []
        for step_id in topological_order(pipeline):
            step = pipeline.steps[step_id]
            described = DescribeStepDefinition(
                id=step_id,
                type=step.type,
                job_id=jobs[step_id].id if step_id in jobs else None,
                needs=list(step.needs),
                run_if=step.run_if.value,
                profile=step.profile or pipeline.profile,
            )
            if isinstance(step, NotebookStep):
                described.notebook = step.notebook
            described.outputs = {k: v.value for k, v in step.outputs.items()}
            described.files = dict(step.files)
            steps.append(described)
        return DescribePipeline(
            id=record.id,
            owner=record.owner,
            name=record.name,
            description=pipeline.description,
            source_path=record.source_path,
            digest=record.digest,
            parameters=pipeline.parameters,
            steps=steps,
            triggers=record.spec.get("triggers") or [],
            paused=pipeline.paused,
            next_fire_at=min(fire_times, default=None),
            webhook_url=f"api/webhooks/{trigger_job.id}" if webhook and trigger_job else None,
            webhook_secret=webhook_secret,
            version=record.version,
            created_at=record.created_at,
            updated_at=record.updated_at,
        )

    # -------------------------------------------------------------- runs

    def start(
        self,
        pipeline_id: str,
        user: str,
        admin: bool,
        parameters: Mapping[str, Any],
        workspaces: str,
        reason: str,
        *,
        now: datetime | None = None,
    ) -> DescribePipelineRun:
        """Start a run: its steps ``pending``, and the runs of those that can start, queued.

        ``workspaces`` is the folder under which the run's own workspace is named (the
        worker makes it, as the owner's, before the first step runs).

        Raises
        ------
        Invalid
            ``parameters`` names a parameter the pipeline does not declare.
        """
        now = self.queue.now(now)
        with self._write.begin() as session:
            record = self._pipeline(session, pipeline_id, user, admin, lock=True)
            pipeline = Pipeline.model_validate(record.spec)
            unknown = sorted(set(parameters) - set(pipeline.parameters))
            if unknown:
                declared = ", ".join(sorted(pipeline.parameters)) or "none"
                raise Invalid(
                    f"pipeline {record.name!r} has no parameter {', '.join(unknown)} "
                    f"(it declares: {declared}): add it to the file's parameters or leave it out"
                )
            prun = self._start_in(session, record, parameters, reason, now, workspaces)
            return self._describe_run(session, record, prun)

    def _start_in(
        self,
        session: Session,
        record: PipelineRecord,
        parameters: Mapping[str, Any],
        reason: str,
        now: datetime,
        workspaces: str | None = None,
    ) -> PipelineRunRecord:
        """A new run of ``record`` (locked) in the caller's transaction, its first steps queued."""
        workspaces = workspaces or self.workspaces
        if workspaces is None:
            raise Conflict("this scheduler has no folder for pipeline workspaces")
        pipeline = Pipeline.model_validate(record.spec)
        run_id = new_id()
        prun = PipelineRunRecord(
            id=run_id,
            pipeline_id=record.id,
            pipeline_version=record.version,
            spec=record.spec,
            status="running",
            reason=reason,
            parameters=dict(parameters),
            repair_of=None,
            workspace=str(PurePosixPath(workspaces) / run_id),
            created_at=now,
        )
        session.add(prun)
        for step_id in pipeline.steps:
            session.add(_step_row(run_id, step_id, "pending"))
        session.flush()
        self._advance(session, prun, now)
        return prun

    def fire(
        self,
        session: Session,
        job: Job,
        now: datetime,
        reason: str,
        trigger: Trigger | None,
        tick: datetime | None,
        parameters: Mapping[str, Any] | None,
    ) -> Run | None:
        """A trigger of a pipeline's trigger job fired (the queue's ``pipeline_start``).

        The run returned is the firing's record (``succeeded`` at once; never executed):
        ``UNIQUE (trigger_id, tick, attempt)`` makes a cron tick or a batch of files start
        one pipeline run, whatever restarts or races. The trigger's parameters that the
        pipeline declares (``trigger_paths``, ``trigger_sha256s``) are the run's.
        """
        record = session.scalars(
            select(PipelineRecord).where(PipelineRecord.id == job.pipeline_id).with_for_update()
        ).first()
        if record is None:
            return None
        given = dict(parameters or {})
        firing = self.queue.new_run(
            job, now, reason, trigger=trigger, tick=tick, status="succeeded"
        )
        firing.parameters, firing.started_at = given, now
        if self.queue.insert(session, firing) is None:
            return None
        declared = Pipeline.model_validate(record.spec).parameters
        prun = self._start_in(
            session,
            record,
            {k: v for k, v in given.items() if k in declared},
            f"{reason} ({trigger.kind} trigger)" if trigger else reason,
            now,
        )
        firing.reason = f"{reason}: started pipeline run {prun.id}"
        return firing

    def repair(
        self, run_id: str, user: str, admin: bool = False, *, now: datetime | None = None
    ) -> DescribePipelineRun:
        """A new run that reruns only the failed steps and what follows them (module docstring).

        Raises
        ------
        Conflict
            The run is still running, or succeeded (nothing to repair).
        """
        now = self.queue.now(now)
        with self._write.begin() as session:
            record, old = self._run(session, run_id, user, admin, lock=True)
            record = self._pipeline(session, record.id, user, admin, lock=True)
            pipeline = Pipeline.model_validate(record.spec)
            old_steps = _steps_of(session, old.id)
            states = {
                step: engine.StepState(old_steps[step].status)
                if step in old_steps
                else engine.StepState.failed
                for step in pipeline.steps
            }
            try:
                plan = engine.repair_plan(pipeline, states)
            except ValueError as e:
                raise Conflict(f"pipeline run {old.id} cannot be repaired: {e}") from None
            prun = PipelineRunRecord(
                id=new_id(),
                pipeline_id=record.id,
                pipeline_version=record.version,
                spec=record.spec,
                status="running",
                reason=f"repair of run {old.id} by {user}",
                parameters=old.parameters,
                repair_of=old.id,
                workspace=old.workspace,
                created_at=now,
            )
            session.add(prun)
            for step_id, state in plan.items():
                row = _step_row(prun.id, step_id, state.value)
                if state == engine.StepState.reused:
                    before = old_steps[step_id]
                    row.run_id, row.outputs, row.files = before.run_id, before.outputs, before.files
                    row.reason = f"reused from run {old.id}"
                    row.started_at, row.ended_at = before.started_at, before.ended_at
                session.add(row)
            session.flush()
            self._advance(session, prun, now)
            return self._describe_run(session, record, prun)

    def cancel(
        self, run_id: str, user: str, admin: bool = False, *, now: datetime | None = None
    ) -> DescribePipelineRun:
        """Cancel a running pipeline run: pending steps are cancelled, running ones asked to stop."""
        now = self.queue.now(now)
        with self._write.begin() as session:
            record, prun = self._run(session, run_id, user, admin, lock=True)
            if prun.status != "running":
                raise Conflict(f"pipeline run {prun.id} has already ended ({prun.status})")
            note = f"cancelled by {user}"
            prun.status, prun.ended_at, prun.reason = "cancelled", now, note
            for row in _steps_of(session, prun.id).values():
                if row.status == "pending":
                    row.status, row.reason, row.ended_at = "cancelled", note, now
                elif row.status == "running" and row.run_id:
                    run = self.queue.lock_run(session, row.run_id)
                    if run is None or run.status not in ("queued", "running"):
                        continue
                    if run.status == "queued" and run.claimed_by is None:
                        run.status, run.ended_at = "cancelled", now
                        row.status, row.ended_at = "cancelled", now
                    elif run.cancel_requested_at is None:
                        run.cancel_requested_at = now
                    run.reason = f"{run.reason}; {note}" if run.reason else note
            return self._describe_run(session, record, prun)

    def get_run(self, run_id: str, user: str, admin: bool = False) -> DescribePipelineRun:
        with self._read.begin() as session:
            record, prun = self._run(session, run_id, user, admin)
            return self._describe_run(session, record, prun)

    def list_runs(
        self, pipeline_id: str, user: str, admin: bool = False, limit: int = 20
    ) -> list[DescribePipelineRun]:
        """A pipeline's newest runs first."""
        with self._read.begin() as session:
            record = self._pipeline(session, pipeline_id, user, admin)
            runs = session.scalars(
                select(PipelineRunRecord)
                .where(PipelineRunRecord.pipeline_id == record.id)
                .order_by(PipelineRunRecord.created_at.desc(), PipelineRunRecord.id)
                .limit(max(1, min(limit, MAX_LISTED_RUNS)))
            ).all()
            return [self._describe_run(session, record, prun) for prun in runs]

    def step_for_worker(self, pipeline_run_id: str, step: str) -> tuple[str, dict, dict]:
        """A step run's workspace, and the outputs (name: type) and files it declares."""
        with self._read.begin() as session:
            prun = session.get(PipelineRunRecord, pipeline_run_id)
            if prun is None:
                raise NotFound(f"no pipeline run {pipeline_run_id!r}")
            spec = Pipeline.model_validate(prun.spec).steps.get(step)
            if spec is None:
                return prun.workspace, {}, {}
            return prun.workspace, dict(spec.outputs), dict(spec.files)

    # ------------------------------------------------- moving a run along

    def after_run(
        self,
        session: Session,
        job: Job,
        run: Run,
        retry: Run | None,
        now: datetime,
        recorded: Mapping[str, Any] | None = None,
    ) -> None:
        """A step's run ended (the queue's hook, in its transaction): move the pipeline run."""
        if run.pipeline_run_id is None or run.step is None:
            return
        prun = session.scalars(
            select(PipelineRunRecord)
            .where(PipelineRunRecord.id == run.pipeline_run_id)
            .with_for_update()
        ).first()
        row = session.get(PipelineStepRecord, (run.pipeline_run_id, run.step))
        if prun is None or row is None or row.run_id != run.id:
            return  # an earlier attempt, or a run whose pipeline run is gone
        if retry is None and run.status == "orphaned" and prun.status == "running":
            retry = self._again(session, job, run, now)
        if retry is not None:
            row.run_id = retry.id
            row.reason = retry.reason
            return
        row.status = STEP_OF_RUN.get(run.status, "failed")
        row.reason = run.reason
        row.ended_at = now
        if row.status == "succeeded" and recorded:
            row.outputs = dict(recorded.get("outputs") or {})
            row.files = dict(recorded.get("files") or {})
        if row.status == "succeeded" and isinstance(
            Pipeline.model_validate(prun.spec).steps.get(run.step), DeployStep
        ):
            self._tell_deploy(session, prun, job, run, row, now)
        if prun.status == "running":
            self._advance(session, prun, now)

    def _tell_deploy(
        self,
        session: Session,
        prun: PipelineRunRecord,
        job: Job,
        run: Run,
        row: PipelineStepRecord,
        now: datetime,
    ) -> None:
        """Tell the owner what a deploy step that ran decided: the decision and its figures.

        A deploy step that failed is told as any step's failed run is (the step job's
        default ``notify`` policy, by the worker): a second message would say it twice.
        """
        record = session.get(PipelineRecord, prun.pipeline_id)
        if record is None:
            return
        head = f"deploy step {run.step} of pipeline {record.name} (run {prun.id})"
        message = f"{head}: {deploy_summary(row.outputs)}"
        session.add(new_notification(record.owner, job.id, run.id, "succeeded", message, now))

    def _again(self, session: Session, job: Job, run: Run, now: datetime) -> Run | None:
        """Run a step again whose run lost its scheduler (``orphaned``): not the notebook's
        failure, so not one of its retries; up to :data:`MAX_ORPHANED` times."""
        orphaned = session.scalars(
            select(Run.id).where(
                Run.pipeline_run_id == run.pipeline_run_id,
                Run.step == run.step,
                Run.status == "orphaned",
            )
        ).all()
        if len(orphaned) > MAX_ORPHANED:
            return None
        reason = (
            f"run {run.id} lost its scheduler process: run again ({len(orphaned)} of "
            f"{MAX_ORPHANED})"
        )
        return self.queue.insert(session, self.queue.next_attempt(run, now, reason, now))

    def _advance(self, session: Session, prun: PipelineRunRecord, now: datetime) -> None:
        """Queue the steps whose turn it is, skip those that will not run, end the run if done."""
        pipeline = Pipeline.model_validate(prun.spec)
        rows = _steps_of(session, prun.id)
        while True:
            states = {step: engine.StepState(row.status) for step, row in rows.items()}
            decision = engine.advance(pipeline, states)
            for step, why in decision.skip.items():
                rows[step].status, rows[step].reason, rows[step].ended_at = "skipped", why, now
            for step in decision.start:
                self._start_step(session, prun, pipeline, rows, step, now)
            if not decision.start and not decision.skip:
                break
        if decision.outcome is not None:
            prun.status = decision.outcome.value
            prun.ended_at = now
            if decision.outcome == engine.RunState.succeeded:
                self._followers(session, prun, now)
            failed = [s for s, r in rows.items() if r.status in ("failed", "cancelled")]
            prun.reason = (
                f"{prun.reason}; failed: {', '.join(failed)}" if failed else prun.reason
            ).lstrip("; ")

    def _followers(self, session: Session, prun: PipelineRunRecord, now: datetime) -> None:
        """Start the owner's unpaused pipelines with an ``after_pipeline`` trigger on this one."""
        record = session.get(PipelineRecord, prun.pipeline_id)
        if record is None:
            return
        others = session.scalars(
            select(PipelineRecord)
            .where(PipelineRecord.owner == record.owner, PipelineRecord.id != record.id)
            .order_by(PipelineRecord.name)
        ).all()
        for other in others:
            spec = other.spec
            follows = any(
                t.get("kind") == "after_pipeline" and t.get("pipeline") == record.name
                for t in spec.get("triggers") or []
            )
            if follows and not spec.get("paused"):
                self._start_in(
                    session, other, {}, f"after pipeline {record.name} (run {prun.id})", now
                )

    def _start_step(
        self,
        session: Session,
        prun: PipelineRunRecord,
        pipeline: Pipeline,
        rows: dict[str, PipelineStepRecord],
        step: str,
        now: datetime,
    ) -> None:
        row = rows[step]
        row.started_at = now
        job = session.scalars(
            select(Job).where(Job.pipeline_id == prun.pipeline_id, Job.step == step)
        ).first()
        if job is None:
            row.status, row.ended_at = "failed", now
            row.reason = f"the pipeline no longer has step {step!r}: repair from its new version"
            return
        workspace = PurePosixPath(prun.workspace)
        try:
            parameters = engine.step_parameters(
                pipeline,
                step,
                prun.parameters,
                {s: r.outputs for s, r in rows.items()},
                {
                    s: {name: str(workspace / f["path"]) for name, f in r.files.items()}
                    for s, r in rows.items()
                },
            )
        except ValueError as e:
            row.status, row.ended_at, row.reason = "failed", now, str(e)
            return
        run = self.queue.new_run(
            job, now, f"pipeline run {prun.id}, step {step}", parameters=parameters
        )
        run.pipeline_run_id, run.step = prun.id, step
        session.add(run)
        row.status, row.run_id, row.reason = "running", run.id, ""

    def _describe_run(
        self, session: Session, record: PipelineRecord, prun: PipelineRunRecord
    ) -> DescribePipelineRun:
        rows = _steps_of(session, prun.id)
        ids = [r.run_id for r in rows.values() if r.run_id]
        runs = (
            {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(ids))).all()}
            if ids
            else {}
        )
        order = topological_order(Pipeline.model_validate(prun.spec))
        steps = []
        for step in order:
            row = rows.get(step)
            if row is None:
                continue
            run = runs.get(row.run_id or "")
            started = run.started_at if run is not None and run.started_at else row.started_at
            ended = row.ended_at
            steps.append(
                DescribeStep(
                    step=step,
                    status=engine.StepState(row.status),
                    run_id=row.run_id,
                    run_status=RunStatus(run.status) if run is not None else None,
                    attempt=run.attempt if run is not None else None,
                    reason=row.reason,
                    outputs=row.outputs,
                    files=row.files,
                    started_at=started,
                    ended_at=ended,
                    duration_seconds=(ended - started).total_seconds()
                    if started and ended
                    else None,
                )
            )
        return DescribePipelineRun(
            id=prun.id,
            pipeline_id=record.id,
            pipeline_name=record.name,
            owner=record.owner,
            status=engine.RunState(prun.status),
            reason=prun.reason,
            parameters=prun.parameters,
            repair_of=prun.repair_of,
            workspace=prun.workspace,
            created_at=prun.created_at,
            ended_at=prun.ended_at,
            steps=steps,
        )


def deploy_summary(outputs: Mapping[str, Any]) -> str:
    """A deploy step's recorded outputs in a sentence: the decision, figures, version, canary."""
    said = str(outputs.get("reason") or outputs.get("decision") or "no decision recorded")
    if outputs.get("version") is not None:
        said += f"; version {outputs['version']} deployed"
    if outputs.get("canary_state"):
        said += f"; canary {outputs['canary_state']}"
        if outputs.get("canary_reason"):
            said += f" ({outputs['canary_reason']})"
    elif outputs.get("canary_reason"):
        said += f"; {outputs['canary_reason']}"
    return said


def _step_row(run_id: str, step: str, status: str) -> PipelineStepRecord:
    return PipelineStepRecord(
        pipeline_run_id=run_id, step=step, status=status, outputs={}, files={}, reason=""
    )


def _steps_of(session: Session, run_id: str) -> dict[str, PipelineStepRecord]:
    rows = session.scalars(
        select(PipelineStepRecord).where(PipelineStepRecord.pipeline_run_id == run_id)
    ).all()
    return {row.step: row for row in rows}
