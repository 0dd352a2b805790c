"""The worker loop: claim due runs, execute them through the executor, record how they ended.

The service fixes the life of a run as a template method (STYLE rule 14,
jupyter-scheduler's ``ExecutionManager.process``); the executor only runs
the notebook and reports:

1. ``claim`` (:meth:`~.claims.Workers.claim_due`): due cron ticks become
   runs and queued runs are claimed, in one transaction;
2. ``admit``: the owner's groups' quotas on concurrent runs, and the run's
   profile (which must still be open to the owner, and one this machine can
   run: no GPU profile without a GPU); a run over quota is
   released with a "waiting: ..." reason and tried again shortly;
3. ``start`` (:meth:`~.claims.Workers.start_run`), then ``execute``
   while a heartbeat task records liveness and cell progress, and stops the
   run when a user cancels it (or ``replace`` supersedes it);
4. ``finish`` (:meth:`~.claims.Workers.finish_run`) with the report:
   status, reason, outputs, environment digest and MLflow run id; an
   executor that could not start the run is a failed run with its message,
   never a run left "running";
5. ``after``: notifications, output retention, and a warm kernel for the
   job's next run.

The worker wakes at once when the API queues a run (``wake``) and otherwise
polls every ``poll_interval``; it recovers orphans at start and every
``stale_after / 2``. Several workers (processes, machines) may share one
database: the claims make that safe.

A worker with an ``identity`` (``SchedulerService.instance_id``) first takes
over that identity's lease (:meth:`~.claims.Workers.take_over`): the
process that held it before is dead, so its runs are recovered at start
rather than after ``stale_after`` without heartbeats, which is what makes a
restart after ``kill -9`` retry them within seconds. The lease is renewed
every ``heartbeat_interval``; a worker that finds its lease taken (two
processes were given one identity) stops claiming and stops its runs, which
the new holder has already recovered. Rejected alternative: recognising the
predecessor by its host and pid alone: in a container every scheduler is
pid 1 on a new host name, and the pid of a process on another machine says
nothing; the identity is what an admin can keep stable (a StatefulSet pod's
name, the hub-managed service's URL).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from hub_ext.audit import emit
from hub_ext.host.process import read_stat
from hub_ext.profiles.store import ProfileStore

from ..common.orm import utcnow
from ..common.scrub import Scrubber
from ..common.secrets import SecretsUnavailable
from .errors import Conflict, NotFound
from .executors.base import Executor, ExecutorError, RunReport, RunSpec
from .metrics import ORPHANS, RUN_DURATION, RUNS_FINISHED, RUNS_RUNNING, START_LATENCY
from .models import DescribeJob, DescribeRun
from .pipelines.outputs import OutputError, check_files, file_digest, read_outputs
from .store import JobStore

log = logging.getLogger("shipyard.scheduler.worker")

#: Minimum seconds between two progress writes of one run (a cell a millisecond
#: would otherwise be a transaction a millisecond).
PROGRESS_EVERY = 0.5


def new_worker_id() -> str:
    """``host:pid:random``: unique per process, readable in run records."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def worker_alive(worker_id: str) -> bool:
    """Whether ``worker_id`` (from :func:`new_worker_id`) is certainly a live process here.

    Only a process on this machine can be checked: another machine's (or a
    reused host name's) is not known to be alive. This process's own pid is
    not its predecessor's (a container's scheduler is always pid 1), and a
    zombie (killed, not yet reaped) is dead.
    """
    host, _, rest = worker_id.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        state, _ = read_stat(pid)
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state not in ("Z", "X")


@dataclass
class Worker:
    """Runs the scheduler's runs in this process; see the module docstring.

    Parameters
    ----------
    store : JobStore
    executor : Executor
    profiles : ProfileStore
    groups_of : async callable
        ``await groups_of(user)``: the user's hub groups.
    runs_dir : Path
        Where each run gets ``<run id>/`` with its log and ``output/``.
    extra_env : callable
        ``await extra_env(job, run)``: variables for the run (tracking, ...).
    release_env : callable
        ``await release_env(run_id)`` once the run ended: revokes what ``extra_env``
        handed out for it (the run's token).
    secrets : callable
        ``await secrets(job, run)``: the owner's secrets the job names, by name
        (:class:`~.runenv.RunSecrets`); a missing one fails the run, named in its reason.
        The run's log and outputs are scrubbed of the values before they are recorded.
    notify : callable
        ``await notify(job, run)`` after a run ended.
    identity : str
        This process's stable identity (``SchedulerService.instance_id``), whose
        lease it takes over at start; empty: no lease, runs of a dead
        predecessor wait for ``stale_after``.
    account_of : callable, optional
        ``account_of(owner) -> (uid, gid) | None``: the owner's account on this machine,
        which owns a pipeline run's workspace (:meth:`_workspace`).
    """

    store: JobStore
    executor: Executor
    profiles: ProfileStore
    groups_of: Callable[[str], Awaitable[tuple[str, ...]]]
    runs_dir: Path
    max_concurrent_runs: int = 4
    poll_interval: float = 1.0
    heartbeat_interval: float = 10.0
    stale_after: float = 60.0
    quota_retry: float = 5.0
    group_quotas: dict[str, int] = field(default_factory=dict)
    extra_env: Callable[[DescribeJob, DescribeRun], Awaitable[dict[str, str]]] | None = None
    release_env: Callable[[str], Awaitable[None]] | None = None
    secrets: Callable[[DescribeJob, DescribeRun], Awaitable[dict[str, str]]] | None = None
    notify: Callable[[DescribeJob, DescribeRun], Awaitable[None]] | None = None
    worker_id: str = field(default_factory=new_worker_id)
    identity: str = ""
    account_of: Callable[[str], tuple[int, int] | None] | None = None

    def __post_init__(self):
        self._wake = asyncio.Event()
        self._tasks: dict[str, asyncio.Task] = {}
        self._stopping = False
        self._last_recovery = 0.0
        self._last_renewal = 0.0

    # ------------------------------------------------------------ loop

    def wake(self) -> None:
        """A run was queued or cancelled: look now rather than at the next poll."""
        self._wake.set()

    async def take_over(self) -> None:
        """Take this process's identity over and recover its dead predecessor's runs now.

        Raises
        ------
        Conflict
            A live process on this machine holds the identity.
        """
        if not self.identity:
            return
        orphans = await asyncio.to_thread(
            self.store.take_over,
            self.identity,
            self.worker_id,
            stale_after=timedelta(seconds=self.stale_after),
            alive=worker_alive,
        )
        self._last_renewal = time.monotonic()
        await self._after_orphaned(orphans)

    async def run(self) -> None:
        """Claim and execute runs until :meth:`stop` (or until another process takes over)."""
        await self.take_over()
        await self._recover()
        while not self._stopping:
            self._wake.clear()
            try:
                if not await self._renew():
                    break
                await self._claim()
                if time.monotonic() - self._last_recovery > self.stale_after / 2:
                    await self._recover()
            except Exception:
                log.exception("Scheduling round failed; trying again in %ss", self.poll_interval)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming; cancel what runs here (their runs are then retried elsewhere)."""
        self._stopping = True
        self._wake.set()
        tasks = list(self._tasks.values())
        for run_id in list(self._tasks):
            with contextlib.suppress(Exception):
                await self.executor.cancel(run_id)
        if tasks:
            await asyncio.wait(tasks, timeout=grace)

    async def _claim(self) -> None:
        free = self.max_concurrent_runs - len(self._tasks)
        claimed = await asyncio.to_thread(self.store.claim_due, None, self.worker_id, max(0, free))
        for run in claimed:
            task = asyncio.create_task(self._process(run), name=f"run-{run.id}")
            self._tasks[run.id] = task
            task.add_done_callback(lambda _t, rid=run.id: self._done(rid))

    def _done(self, run_id: str) -> None:
        self._tasks.pop(run_id, None)
        self._wake.set()  # a slot is free

    async def _renew(self) -> bool:
        """Renew the lease every heartbeat interval; False (and stop) when it was taken over."""
        if not self.identity or time.monotonic() - self._last_renewal < self.heartbeat_interval:
            return True
        if await asyncio.to_thread(self.store.renew_lease, self.identity, self.worker_id):
            self._last_renewal = time.monotonic()
            return True
        log.error(
            "Another scheduler process took over identity %r: this one (%s) stops. Give each "
            "scheduler process its own SchedulerService.instance_id.",
            self.identity,
            self.worker_id,
        )
        self._stopping = True
        for run_id in list(self._tasks):  # already recovered (and retried) by the new holder
            with contextlib.suppress(Exception):
                await self.executor.cancel(run_id)
        return False

    async def _recover(self) -> None:
        self._last_recovery = time.monotonic()
        orphans = await asyncio.to_thread(
            self.store.recover_orphans, timedelta(seconds=self.stale_after)
        )
        await self._after_orphaned(orphans)

    async def _after_orphaned(self, orphans: list[DescribeRun]) -> None:
        for run in orphans:
            ORPHANS.inc()
            log.warning("Run %s of job %s was orphaned: %s", run.id, run.job_id, run.reason)
            cleanup = getattr(self.executor, "cleanup_orphan", None)
            if cleanup is not None:
                with contextlib.suppress(Exception):
                    await cleanup(run.id)
            if self.notify is not None:
                with contextlib.suppress(Exception):
                    job = await asyncio.to_thread(self.store.get_job_for_worker, run.job_id)
                    await self.notify(job, run)

    async def cancel_local(self, run_id: str) -> None:
        """Stop run ``run_id`` now if it runs in this process (a user cancelled it)."""
        if run_id in self._tasks:
            await self.executor.cancel(run_id)

    # ------------------------------------------------------------ one run

    async def _process(self, run: DescribeRun) -> None:
        try:
            await self._process_run(run)
        except Exception:
            log.exception("Run %s failed in the scheduler itself", run.id)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(
                    self.store.finish_run,
                    run.id,
                    "failed",
                    "the scheduler failed while running it; the admin finds details in its log",
                    worker_id=self.worker_id,
                )

    async def _admit(self, job: DescribeJob, run: DescribeRun) -> str | None:
        """None when the run may start now, else why it waits."""
        if not self.group_quotas:
            return None
        groups = [g for g in await self.groups_of(job.owner) if g in self.group_quotas]
        if not groups:
            return None
        counts = await asyncio.to_thread(self.store.running_counts_by_owner)
        for group in sorted(groups):
            running = 0
            for owner, count in counts.items():
                if group in await self.groups_of(owner):
                    running += count
            if running >= self.group_quotas[group]:
                return (
                    f"waiting: group {group!r} may run {self.group_quotas[group]} job(s) at once "
                    f"and {running} are running; this run starts when one ends"
                )
        return None

    async def _process_run(self, run: DescribeRun) -> None:
        job = await asyncio.to_thread(self.store.get_job_for_worker, run.job_id)
        waiting = await self._admit(job, run)
        if waiting is not None:
            not_before = utcnow() + timedelta(seconds=self.quota_retry)
            with contextlib.suppress(Conflict, NotFound):
                await asyncio.to_thread(
                    self.store.defer_run, run.id, self.worker_id, waiting, not_before
                )
            return

        config = self.profiles.get()
        profile = config.get(run.profile)
        refused = None
        if profile is None:
            refused = f"the profile {run.profile!r} no longer exists; change the job's profile"
        elif not profile.allows(await self.groups_of(job.owner)):
            refused = (
                f"{job.owner} is no longer in a group allowed to use profile {run.profile!r}; "
                "change the job's profile"
            )
        elif reason := profile.unavailable_reason(self.executor.gpu_count):
            # a job made before the machine lost its GPU (or the profile gained one):
            # say so, rather than fail on the environment shipyard up skipped
            refused = f"profile {run.profile!r} cannot run here: {reason}; change the job's profile"

        try:
            started = await asyncio.to_thread(self.store.start_run, run.id, self.worker_id)
        except (Conflict, NotFound) as e:
            log.info("Not starting run %s: %s", run.id, e)
            return
        START_LATENCY.observe(max(0.0, (utcnow() - started.not_before).total_seconds()))
        if started.trigger_id is not None or started.retry_of is not None:
            # a run the scheduler starts by itself (a trigger fired, a retry) is the job
            # acting for its owner; a run asked for through the API is its request's record
            emit(
                "job.run",
                actor=job.id,
                actor_kind="job",
                on_behalf_of=job.owner,
                target=f"job/{job.id}",
                owner=job.owner,
                outcome="failed" if refused else "allowed",
                reason=refused,
                details={"run": run.id, "trigger": started.reason, "attempt": started.attempt},
            )
        if refused is not None:
            await self._finish(job, started, None, refused)
            return

        folder = self.runs_dir / run.id
        await asyncio.to_thread(_prepare_folder, folder)
        try:  # before the run's token is made: a refused run has nothing to revoke
            secrets = await self.secrets(job, started) if self.secrets is not None else {}
        except SecretsUnavailable as e:
            await self._finish(job, started, None, f"The run cannot get its secrets: {e}")
            return
        env = await self.extra_env(job, started) if self.extra_env is not None else {}
        step: PipelineStep | None = None
        if started.pipeline_run_id is not None and started.step is not None:
            try:
                step = await asyncio.to_thread(self._workspace, job, started)
            except (OSError, NotFound) as e:
                await self._finish(job, started, None, f"the pipeline's workspace: {e}")
                return
            env = {**env, **step.environment()}
        spec = RunSpec(
            run_id=run.id,
            job_id=job.id,
            owner=job.owner,
            notebook=self.store.snapshots.path(started.notebook_digest),
            profile=profile,
            timeout=started.timeout_seconds,
            output_dir=folder / "output",
            log_path=folder / "run.log",
            parameters=started.parameters,
            output_formats=tuple(f for f in job.output_formats if f in ("ipynb", "html")),
            extra_env=env,
            secrets=secrets,
            usage_kind="step" if step is not None else "run",
            usage_object=(
                f"pipeline-run/{started.pipeline_run_id}/{started.step}"
                if step is not None
                else f"job/{job.id}/run/{run.id}"
            ),
        )
        RUNS_RUNNING.inc()
        progress = _Progress(self.store, run.id, self.worker_id)
        if step is not None:  # the next step's kernel starts while this one runs
            progress.on_first = functools.partial(self._prewarm, job.owner, profile)
        beat = asyncio.create_task(self._heartbeat(run.id))
        report: RunReport | None = None
        failure = None
        began = time.monotonic()
        try:
            report = await self.executor.execute(spec, progress)
        except ExecutorError as e:
            failure = str(e)
        finally:
            beat.cancel()
            RUNS_RUNNING.dec()
            await progress.flush()
            if self.release_env is not None:
                await self.release_env(run.id)
            if secrets:
                await asyncio.to_thread(_scrub_outputs, spec, secrets)
        recorded = None
        if step is not None and report is not None and report.status.value == "succeeded":
            try:
                recorded = await asyncio.to_thread(step.recorded)
            except OutputError as e:  # the notebook ran, but not as its step promised
                report = replace(report, status=type(report.status)("failed"), reason=str(e))
        status = report.status.value if report else "failed"
        RUN_DURATION.labels(job.profile, status).observe(time.monotonic() - began)
        await self._finish(job, started, report, failure, spec, recorded)

    async def _finish(
        self,
        job: DescribeJob,
        run: DescribeRun,
        report: RunReport | None,
        failure: str | None,
        spec: RunSpec | None = None,
        recorded: dict | None = None,
    ) -> None:
        if report is None:
            status, reason, fields = "failed", failure or "the run did not start", {}
        else:
            status, reason = report.status.value, report.reason
            ipynb = report.outputs.get("ipynb")
            fields = {
                "output_path": str(ipynb) if ipynb else None,
                "log_path": str(report.log_path) if report.log_path else None,
                "env_digest": report.env_digest,
                "mlflow_run_id": report.mlflow_run_id,
            }
        if spec is not None and "log_path" not in fields:
            fields["log_path"] = str(spec.log_path) if spec.log_path.exists() else None
        try:
            if status == "succeeded":
                with contextlib.suppress(Conflict, NotFound):
                    total = await asyncio.to_thread(_cells_total, self.store, run.id)
                    if total:
                        await asyncio.to_thread(
                            self.store.record_progress, run.id, self.worker_id, total, total
                        )
            ended = await asyncio.to_thread(
                self.store.finish_run,
                run.id,
                status,
                reason,
                worker_id=self.worker_id,
                recorded=recorded,
                **fields,
            )
        except (Conflict, NotFound) as e:
            # declared orphaned meanwhile (a long stall), or the job was deleted
            log.warning("Could not record the end of run %s (%s): %s", run.id, status, e)
            return
        RUNS_FINISHED.labels(job.owner, job.name, job.profile, status).inc()
        log.info("Run %s of job %s (%s): %s %s", run.id, job.name, job.owner, status, reason)
        if recorded and "decision" in (recorded.get("outputs") or {}):
            _audit_gate(job, ended, recorded["outputs"])
        if self.notify is not None:
            try:
                await self.notify(job, ended)
            except Exception:
                log.exception("Notifying about run %s failed", run.id)
        await self._retain(job)
        prewarm = getattr(self.executor, "prewarm", None)
        if prewarm is not None and spec is not None and job.triggers:
            with contextlib.suppress(Exception):
                await prewarm(job.owner, spec.profile)

    async def _retain(self, job: DescribeJob) -> None:
        """Delete the outputs the job's retention policy no longer keeps (records stay)."""
        if getattr(job, "keep_runs", None) is None and getattr(job, "keep_days", None) is None:
            return
        try:
            expired = await asyncio.to_thread(self.store.expired_outputs, job.id)
            for old in expired:
                await asyncio.to_thread(shutil.rmtree, self.runs_dir / old.id, True)
            if expired:
                await asyncio.to_thread(self.store.mark_outputs_deleted, [r.id for r in expired])
                log.info("Deleted the outputs of %d old runs of job %s", len(expired), job.name)
        except Exception:
            log.exception("Retention of job %s failed", job.id)

    async def _prewarm(self, owner: str, profile) -> None:
        """Start a warm kernel for ``owner``'s ``profile`` (where the executor keeps any).

        A pipeline's steps follow one another: once a step's own kernel has started (its
        first cell), the next step's is started, so it does not wait for a cold start.
        """
        prewarm = getattr(self.executor, "prewarm", None)
        if prewarm is not None:
            with contextlib.suppress(Exception):
                await prewarm(owner, profile)

    def _workspace(self, job: DescribeJob, run: DescribeRun) -> PipelineStep:
        """The pipeline step ``run`` runs: its workspace made (as the owner's), what it declares."""
        assert run.pipeline_run_id is not None and run.step is not None
        workspace, outputs, files = self.store.pipelines.step_for_worker(
            run.pipeline_run_id, run.step
        )
        path = Path(workspace)
        if not path.is_relative_to(self.runs_dir):
            raise NotFound(f"the workspace {workspace} is not under {self.runs_dir}")
        account = self.account_of(job.owner) if self.account_of is not None else None
        _workspace_folder(path, account)
        return PipelineStep(run.id, run.step, path, outputs, files, run.pipeline_run_id)

    async def _heartbeat(self, run_id: str) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                state = await asyncio.to_thread(self.store.heartbeat, run_id, self.worker_id)
            except (Conflict, NotFound) as e:
                log.warning("Stopping run %s: %s", run_id, e)
                await self.executor.cancel(run_id)
                return
            except Exception:
                log.exception("Heartbeat of run %s failed; trying again", run_id)
                continue
            if state.cancel_requested_at is not None:
                await self.executor.cancel(run_id)
                return


#: The folder of a workspace where each step's run writes what it records.
OUTPUTS_FOLDER = ".outputs"


@dataclass
class PipelineStep:
    """A run that is a pipeline step: its workspace, and what it declares it leaves there."""

    run_id: str
    step: str
    workspace: Path
    outputs: dict
    files: dict
    #: The pipeline run the step belongs to (what a model deployed from it records).
    pipeline_run_id: str | None = None

    @property
    def outputs_file(self) -> Path:
        return self.workspace / OUTPUTS_FOLDER / f"{self.step}-{self.run_id}.jsonl"

    def environment(self) -> dict[str, str]:
        """What ``output()`` and ``workspace()`` read (hub_ext/runtime/outputs.py), and a deploy
        step's lineage (hub_ext/runtime/deploy_step.py)."""
        return {
            "SHIPYARD_WORKSPACE": str(self.workspace),
            "SHIPYARD_OUTPUTS": str(self.outputs_file),
            "SHIPYARD_PIPELINE_STEP": self.step,
            # what a model deployed from the step records as its lineage (%deploy, deploy steps)
            **({"SHIPYARD_PIPELINE_RUN_ID": self.pipeline_run_id} if self.pipeline_run_id else {}),
        }

    def recorded(self) -> dict:
        """The values and files the run left, checked against what the step declares.

        Raises
        ------
        OutputError
            A declared value or file is missing, or a value is not of its type.
        """
        values = read_outputs(self.outputs_file, self.outputs)
        found = check_files(self.workspace, self.files)
        files = {
            name: {
                "path": str(Path(path).relative_to(self.workspace)),
                "sha256": file_digest(Path(path)),
            }
            for name, path in found.items()
        }
        return {"outputs": values, "files": files}


class _Progress:
    """The executor's progress callback: cell progress into the run's record, throttled."""

    def __init__(self, store: JobStore, run_id: str, worker_id: str):
        self.store, self.run_id, self.worker_id = store, run_id, worker_id
        self._last = 0.0
        self._pending: tuple[int, int] | None = None
        #: called once, when the first cell starts (the run's kernel is up)
        self.on_first: Callable[[], Coroutine[Any, Any, None]] | None = None
        self._started: asyncio.Task | None = None

    async def __call__(self, cell_index: int, cell_count: int) -> None:
        if self.on_first is not None:
            first, self.on_first = self.on_first, None
            self._started = asyncio.create_task(first())  # kept: a task needs a reference
        self._pending = (cell_index, cell_count)
        if time.monotonic() - self._last >= PROGRESS_EVERY:
            await self.flush()

    async def flush(self) -> None:
        if self._pending is None:
            return
        done, total = self._pending
        self._pending = None
        self._last = time.monotonic()
        with contextlib.suppress(Conflict, NotFound):
            await asyncio.to_thread(
                self.store.record_progress, self.run_id, self.worker_id, done, total
            )


def _cells_total(store: JobStore, run_id: str) -> int | None:
    return getattr(store.get_run(run_id, "", (), True), "cells_total", None)


def _audit_gate(job: DescribeJob, run: DescribeRun, outputs: dict) -> None:
    """A deploy step's decision in the audit trail: passed or refused, with both figures."""
    passed = outputs.get("decision") == "passed"
    emit(
        "pipeline.deploy_gate",
        actor=job.id,
        actor_kind="job",
        on_behalf_of=job.owner,
        target=f"pipeline-run/{run.pipeline_run_id}",
        owner=job.owner,
        outcome="allowed" if passed else "denied",
        reason=str(outputs.get("reason") or outputs.get("decision")),
        details={
            "step": run.step,
            "run": run.id,
            **{
                key: outputs.get(key)
                for key in ("metric", "candidate", "production", "version", "canary_state")
            },
        },
    )


def _workspace_folder(path: Path, account: tuple[int, int] | None) -> None:
    """A pipeline run's workspace (and its ``.outputs``): the owner's, private to them."""
    for folder in (path, path / OUTPUTS_FOLDER):
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if account is not None:
            os.chown(folder, *account, follow_symlinks=False)
        os.chmod(folder, 0o700, follow_symlinks=False)


def _prepare_folder(folder: Path) -> None:
    """``<runs_dir>/<run id>``: root's, traversable (the owner writes ``output/`` inside)."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o711)


__all__ = ["Worker", "new_worker_id", "worker_alive", "datetime"]


def _scrub_outputs(spec: RunSpec, secrets: dict[str, str]) -> None:
    """Replace the run's secret values in its log and outputs, before the run is recorded.

    The log was scrubbed as it was written (:class:`~.executors.base.RunLog`); this
    catches a value split across lines. A file that cannot be scrubbed (replaced by a
    symlink, hard-linked) is deleted rather than served with a value in it.
    """
    scrubber = Scrubber(secrets)
    paths = spec.output_paths()
    for path, notebook in [
        (spec.log_path, False),
        *((p, fmt == "ipynb") for fmt, p in paths.items()),
    ]:
        try:
            if notebook:
                scrubber.notebook_file(path)
            else:
                scrubber.text_file(path)
        except OSError as e:
            log.warning("Could not scrub %s of run %s (%s); deleting it", path, spec.run_id, e)
            with contextlib.suppress(OSError):
                path.unlink()
