"""The scheduler's core: jobs with their notebook snapshots, triggers, and the life of runs.

:class:`JobStore` is what the scheduler service calls (from a thread pool: it
is synchronous, and DB work must not block the event loop, STYLE rule 13) and
what its workers call to claim, start, heartbeat and finish runs. It holds no
state of its own beyond the database and the :class:`SnapshotStore`, so any
number of service processes can share one database.

Requirements and how they are met:

- **A cron tick runs at most once** (SECURITY rule 7). :meth:`JobStore.claim_due`
  reads the due triggers *and locks them* in the same transaction that
  inserts their runs and advances ``next_fire_at``: ``SELECT ... FOR UPDATE
  SKIP LOCKED`` on PostgreSQL (a second worker skips what the first holds,
  and re-reads a committed row as no longer due), ``BEGIN IMMEDIATE`` on
  SQLite (one writer at a time). Underneath, ``UNIQUE (trigger_id, tick,
  attempt)`` rejects a second first attempt whatever the code above does.
- **A crash leaves nothing in progress forever.** Workers heartbeat their
  runs; :meth:`JobStore.recover_orphans` turns runs without a recent
  heartbeat into ``orphaned`` and queues the next attempt after the job's
  backoff while retries remain.
- **Others' jobs look missing** (SECURITY rule 3): every user-facing method
  takes ``user, groups, admin`` and raises the same :class:`~.errors.NotFound`
  for a hidden job as for a missing one. A job shared with one of the user's
  groups is readable; changing it is :class:`~.errors.Forbidden`.
- **What runs is what was scheduled.** Notebooks are stored by content
  (:class:`SnapshotStore`); a job points at a digest, and a run copies the
  digest, parameters, profile and timeout it was queued with. Editing the
  notebook in the user's home changes nothing until :meth:`JobStore.update_job`
  is given the new bytes.

Lock order, to keep PostgreSQL free of deadlocks: a transaction locks job
rows (in id order) before run rows. Inserting a run takes a key-share lock on
its job, so runs are only inserted under that job's lock.

Rejected alternatives: an in-memory scheduler (APScheduler and friends) loses
ticks on restart and double-fires with two replicas; advisory locks per job
would serialise claims but leave the tick itself unprotected; a separate
``job_shares`` table would let PostgreSQL filter shared jobs, but the share
list is small, read with the job, and filtered here the same way on both
databases.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import uuid
from collections.abc import Callable, Collection, Iterable
from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter
from sqlalchemy import Engine, and_, exists, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, selectinload, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from .errors import Conflict, Forbidden, Invalid, NotFound
from .models import (
    AfterJobTrigger,
    CreateJob,
    CreateRun,
    CronTrigger,
    DescribeJob,
    DescribeRun,
    DescribeTrigger,
    FileTrigger,
    ListJobsQuery,
    ListJobsResponse,
    ListRunsQuery,
    ListRunsResponse,
    RunStatus,
    UpdateJob,
    UpdateJobResponse,
    WebhookTrigger,
)
from .orm import Job, Run, Trigger

log = logging.getLogger(__name__)

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_ID = re.compile(r"^[0-9a-f]{32}$")

#: Largest notebook a job may snapshot. Outputs (images) make notebooks big;
#: anything larger belongs in a data file the notebook reads.
MAX_NOTEBOOK_BYTES = 64 * 1024 * 1024
#: Due cron triggers handled per claim transaction; the rest wait for the next poll.
CRON_BATCH = 500
#: How many missed ticks are counted for a run's reason before saying "more than".
MISSED_COUNT_CAP = 1000
#: Statuses in which a run still occupies its job (the concurrency policy's "in progress").
ACTIVE = ("queued", "running")
#: What :meth:`JobStore.finish_run` accepts.
FINISH_STATUSES = ("succeeded", "failed", "cancelled", "timed_out")
#: Final statuses after which the job's retry policy queues another attempt.
RETRY_STATUSES = ("failed", "timed_out", "orphaned")


def utcnow() -> datetime:
    """Return the current time, timezone-aware UTC: the store's default clock."""
    return datetime.now(timezone.utc)


def new_id() -> str:
    """Return a new random id: 32 lowercase hex digits."""
    return uuid.uuid4().hex


# ----------------------------------------------------------------------------- snapshots


class SnapshotStore:
    """Notebook snapshots in files, addressed by the SHA-256 of their bytes.

    Content addressing makes :meth:`put` idempotent (the same notebook is
    stored once, however many jobs and versions use it) and makes a snapshot
    immutable: a digest always names the same bytes, which :meth:`get` checks.
    Files are written to a temporary name and renamed, so a crash never leaves
    a half-written snapshot under a valid digest. Digests are validated as 64
    hex digits before they touch the file system: a path is never taken from a
    user.

    Parameters
    ----------
    directory : str or pathlib.Path
        Where snapshots live (created, mode 0700: notebooks are users' code).
    """

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    @staticmethod
    def digest_of(data: bytes) -> str:
        """Return the digest :meth:`put` gives ``data``."""
        return hashlib.sha256(data).hexdigest()

    def path(self, digest: str) -> Path:
        """Return the file of ``digest`` (which may not exist), after validating it.

        Raises
        ------
        Invalid
            ``digest`` is not 64 lowercase hex digits.
        """
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            raise Invalid(f"{digest!r} is not a snapshot digest (64 lowercase hex digits)")
        # The suffix is what executors and papermill expect of a notebook path.
        return self.directory / digest[:2] / f"{digest}.ipynb"

    def put(self, data: bytes) -> str:
        """Store ``data`` (if not already stored) and return its digest."""
        digest = self.digest_of(data)
        target = self.path(digest)
        if target.exists():
            return digest
        target.parent.mkdir(exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def get(self, digest: str) -> bytes:
        """Return the bytes of ``digest``.

        Raises
        ------
        Invalid
            ``digest`` is malformed.
        NotFound
            No such snapshot.
        RuntimeError
            The file no longer matches its digest (disk corruption, tampering).
        """
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no notebook snapshot {digest}") from None
        if self.digest_of(data) != digest:
            raise RuntimeError(f"notebook snapshot {path} does not match its digest")
        return data

    def exists(self, digest: str) -> bool:
        """Return whether ``digest`` is stored."""
        return self.path(digest).exists()


def check_notebook(data: bytes) -> None:
    """Refuse what papermill could not run, before it is snapshotted.

    Raises
    ------
    Invalid
        Too large, not JSON, or not an nbformat 4 notebook.
    """
    if len(data) > MAX_NOTEBOOK_BYTES:
        raise Invalid(
            f"the notebook is {len(data)} bytes; the limit is {MAX_NOTEBOOK_BYTES}: clear large "
            "outputs or move data to files"
        )
    try:
        notebook = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise Invalid("the notebook is not a .ipynb file (not JSON)") from None
    if (
        not isinstance(notebook, dict)
        or not isinstance(notebook.get("cells"), list)
        or not isinstance(notebook.get("nbformat"), int)
        or notebook["nbformat"] < 4
    ):
        raise Invalid("the notebook is not an nbformat 4 .ipynb file (no 'cells' or 'nbformat')")


# ----------------------------------------------------------------------------- cron arithmetic


def _local(expression: str, tz: str, when: datetime) -> croniter:
    return croniter(expression, when.astimezone(ZoneInfo(tz)))


def cron_next(expression: str, tz: str, after: datetime) -> datetime:
    """Return the first tick strictly after ``after``, in UTC.

    Parameters
    ----------
    expression : str
        A five-field cron expression (validated by :class:`~.models.CronTrigger`).
    tz : str
        IANA time zone the expression is read in (DST-aware).
    after : datetime
        Timezone-aware.
    """
    return _local(expression, tz, after).get_next(datetime).astimezone(timezone.utc)


def cron_latest(expression: str, tz: str, at: datetime) -> datetime:
    """Return the last tick at or before ``at``, in UTC.

    croniter's ``get_prev`` is strictly before its start, and ticks fall on
    whole minutes, so it starts from the minute after ``at``'s.
    """
    start = at.astimezone(timezone.utc).replace(second=0, microsecond=0) + timedelta(minutes=1)
    return _local(expression, tz, start).get_prev(datetime).astimezone(timezone.utc)


def cron_count(expression: str, tz: str, first: datetime, last: datetime, cap: int) -> int:
    """Count the ticks from ``first`` to ``last`` inclusive, stopping at ``cap``."""
    ticks = _local(expression, tz, first - timedelta(seconds=1))
    count = 0
    while count < cap and ticks.get_next(datetime) <= last:
        count += 1
    return count


# ----------------------------------------------------------------------------- conversion


def _describe_trigger(trigger: Trigger) -> DescribeTrigger:
    spec = trigger.spec
    model: CronTrigger | FileTrigger | WebhookTrigger | AfterJobTrigger
    if trigger.kind == "cron":
        model = CronTrigger.model_construct(
            expression=spec["expression"], timezone=spec["timezone"]
        )
    elif trigger.kind == "file":
        model = FileTrigger.model_construct(glob=spec["glob"])
    elif trigger.kind == "webhook":
        model = WebhookTrigger.model_construct()  # the secret's hash stays in the database
    else:
        model = AfterJobTrigger.model_construct(upstream_job_id=spec["upstream_job_id"])
    return DescribeTrigger(
        id=trigger.id,
        trigger=model,
        next_fire_at=trigger.next_fire_at,
        last_fired_at=trigger.last_fired_at,
    )


def _describe_job(
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
        triggers=[_describe_trigger(t) for t in job.triggers],
        read_only=read_only,
        webhook_secret=webhook_secret,
    )


def _describe_run(run: Run) -> DescribeRun:
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
    )


def _public_spec(model: CronTrigger | FileTrigger | WebhookTrigger | AfterJobTrigger) -> str:
    """A trigger's identity for matching an update's triggers to the stored ones."""
    return model.model_dump_json()


def _encode_token(values: list[str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def _decode_token(token: str, size: int) -> list[str]:
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


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# ----------------------------------------------------------------------------- the store


class JobStore:
    """Jobs, triggers and runs in a database, with snapshots in a :class:`SnapshotStore`.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        From :func:`~.db.make_engine`, on a database :func:`~.db.upgrade` has migrated.
    snapshots : SnapshotStore
        Where notebook bytes are kept.
    clock : callable, optional
        Returns the current timezone-aware time; every method that takes
        ``now=None`` asks it.
    late_tolerance : datetime.timedelta
        How late a cron tick may be claimed and still count as on time. A
        tick later than this was *missed* and follows the job's missed-run
        policy (like Kubernetes CronJob's ``startingDeadlineSeconds``).
    """

    def __init__(
        self,
        engine: Engine,
        snapshots: SnapshotStore,
        *,
        clock: Callable[[], datetime] = utcnow,
        late_tolerance: timedelta = timedelta(minutes=5),
    ):
        self.engine = engine
        self.snapshots = snapshots
        self.clock = clock
        self.late_tolerance = late_tolerance
        self._read = sessionmaker(engine, expire_on_commit=False)
        # Writers take SQLite's write lock when they begin (see db.make_engine).
        self._write = sessionmaker(
            engine.execution_options(sqlite_begin="IMMEDIATE"), expire_on_commit=False
        )

    # -- helpers

    def _now(self, now: datetime | None) -> datetime:
        now = self.clock() if now is None else now
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError(f"naive datetime {now!r}: pass a timezone-aware time")
        return now.astimezone(timezone.utc)

    @staticmethod
    def _lock_job(session: Session, job_id: str, skip_locked: bool = False) -> Job | None:
        """Load a job row under ``FOR UPDATE`` (a no-op on SQLite, already serialised)."""
        stmt = select(Job).where(Job.id == job_id).with_for_update(skip_locked=skip_locked)
        return session.scalars(stmt.execution_options(populate_existing=True)).one_or_none()

    @staticmethod
    def _lock_run(session: Session, run_id: str) -> Run | None:
        stmt = select(Run).where(Run.id == run_id).with_for_update()
        return session.scalars(stmt.execution_options(populate_existing=True)).one_or_none()

    @staticmethod
    def _visible(
        job: Job | None,
        job_id: str,
        user: str,
        groups: Collection[str],
        admin: bool,
        write: bool,
    ) -> Job:
        """Return ``job`` if the caller may see it (and change it, when ``write``)."""
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        if admin or job.owner == user:
            return job
        if set(groups) & set(job.shared_with_groups):
            if write:
                raise Forbidden(
                    f"job {job.name!r} is shared with you read-only; only {job.owner!r} can "
                    "change or run it"
                )
            return job
        raise NotFound(f"no job {job_id!r}")

    def _job_for(
        self,
        session: Session,
        job_id: str,
        user: str,
        groups: Collection[str],
        admin: bool,
        write: bool,
    ) -> Job:
        if not isinstance(job_id, str) or not _ID.match(job_id):
            raise NotFound(f"no job {job_id!r}")
        job = self._lock_job(session, job_id) if write else session.get(Job, job_id)
        return self._visible(job, job_id, user, groups, admin, write)

    def _run_for(
        self,
        session: Session,
        run_id: str,
        user: str,
        groups: Collection[str],
        admin: bool,
        write: bool,
    ) -> tuple[Job, Run]:
        run = session.get(Run, run_id) if isinstance(run_id, str) and _ID.match(run_id) else None
        if run is None:
            raise NotFound(f"no run {run_id!r}")
        try:
            job = self._job_for(session, run.job_id, user, groups, admin, write)
        except NotFound:
            raise NotFound(f"no run {run_id!r}") from None
        if write:
            run = self._lock_run(session, run_id)
        return job, run

    def _new_triggers(
        self,
        specs: Iterable[CronTrigger | FileTrigger | WebhookTrigger | AfterJobTrigger],
        now: datetime,
    ) -> tuple[list[Trigger], str | None]:
        """Build trigger rows; return them and the new webhook secret, if one was made."""
        rows, secret = [], None
        for model in specs:
            row = Trigger(id=new_id(), kind=model.kind, created_at=now)
            if isinstance(model, CronTrigger):
                row.spec = {"expression": model.expression, "timezone": model.timezone}
                row.next_fire_at = cron_next(model.expression, model.timezone, now)
            elif isinstance(model, FileTrigger):
                row.spec = {"glob": model.glob}
            elif isinstance(model, WebhookTrigger):
                secret = secrets.token_urlsafe(32)
                row.spec = {"secret_sha256": _hash_secret(secret)}
            else:
                row.spec = {"upstream_job_id": model.upstream_job_id}
            rows.append(row)
        return rows, secret

    def _check_upstreams(
        self,
        session: Session,
        job_id: str | None,
        owner: str,
        specs: Iterable[Any],
        groups: Collection[str],
        admin: bool,
    ) -> None:
        """An after_job upstream must be visible to the owner, and not make a cycle."""
        for model in specs:
            if not isinstance(model, AfterJobTrigger):
                continue
            upstream_id = model.upstream_job_id
            if upstream_id == job_id:
                raise Invalid("an after_job trigger cannot name the job itself")
            upstream = session.get(Job, upstream_id)
            visible = upstream is not None and (
                admin or upstream.owner == owner or set(groups) & set(upstream.shared_with_groups)
            )
            if not visible:
                raise Invalid(f"after_job trigger: no job {upstream_id!r}")
            if job_id is not None and self._depends_on(session, upstream_id, job_id):
                raise Invalid(
                    f"after_job trigger: job {upstream.name!r} already runs after this one, "
                    "directly or through other jobs; a cycle would run forever"
                )

    @staticmethod
    def _depends_on(session: Session, job_id: str, ancestor_id: str) -> bool:
        """Return whether ``job_id`` runs after ``ancestor_id``, through after_job triggers."""
        edges: dict[str, set[str]] = {}
        for downstream, spec in session.execute(
            select(Trigger.job_id, Trigger.spec).where(Trigger.kind == "after_job")
        ):
            edges.setdefault(downstream, set()).add(spec["upstream_job_id"])
        seen, todo = set(), [job_id]
        while todo:
            current = todo.pop()
            if current == ancestor_id:
                return True
            if current not in seen:
                seen.add(current)
                todo.extend(edges.get(current, ()))
        return False

    def _insert_run(self, session: Session, run: Run) -> Run | None:
        """Insert ``run`` in a savepoint; return None if its (trigger, tick, attempt) exists.

        The locks taken by the callers make a duplicate impossible; this is
        the backstop that keeps one bad path from aborting a whole claim.
        """
        try:
            with session.begin_nested():
                session.add(run)
        except IntegrityError:
            log.warning(
                "Run of trigger %s for tick %s attempt %s already exists; not queued twice",
                run.trigger_id,
                run.tick,
                run.attempt,
            )
            return None
        return run

    def _new_run(
        self,
        job: Job,
        now: datetime,
        reason: str,
        *,
        trigger: Trigger | None = None,
        tick: datetime | None = None,
        parameters: dict[str, Any] | None = None,
        status: str = "queued",
    ) -> Run:
        final = status != "queued"
        return Run(
            id=new_id(),
            job_id=job.id,
            job_version=job.version,
            trigger_id=trigger.id if trigger else None,
            tick=tick,
            status=status,
            attempt=1,
            reason=reason,
            parameters={**job.parameters, **(parameters or {})},
            notebook_digest=job.notebook_digest,
            profile=job.profile,
            timeout_seconds=job.timeout_seconds,
            queued_at=now,
            not_before=now,
            ended_at=now if final else None,
        )

    def _queue(
        self,
        session: Session,
        job: Job,
        now: datetime,
        reason: str,
        *,
        trigger: Trigger | None = None,
        tick: datetime | None = None,
        parameters: dict[str, Any] | None = None,
        manual: bool = False,
    ) -> Run | None:
        """Queue a run of ``job`` (locked by the caller) under its concurrency policy.

        ``forbid`` with a run in progress records the run as ``skipped`` (a
        manual run raises :class:`Conflict` instead: the user is there to be
        told); ``replace`` cancels what is queued and asks what is running to
        stop.
        """
        active = session.scalars(
            select(Run)
            .where(Run.job_id == job.id, Run.status.in_(ACTIVE))
            .order_by(Run.queued_at)
            .with_for_update()
        ).all()
        if active and job.concurrency_policy == "forbid":
            busy = active[0]
            if manual:
                raise Conflict(
                    f"job {job.name!r} has run {busy.id} {busy.status} and its concurrency "
                    "policy is 'forbid': wait for it, cancel it, or change the policy"
                )
            why = f"skipped: run {busy.id} is {busy.status} and the concurrency policy is forbid"
            return self._insert_run(
                session,
                self._new_run(job, now, why, trigger=trigger, tick=tick, status="skipped"),
            )
        run = self._new_run(job, now, reason, trigger=trigger, tick=tick, parameters=parameters)
        if active and job.concurrency_policy == "replace":
            for old in active:
                note = f"replaced by run {run.id} (concurrency policy replace)"
                if old.status == "queued" and old.claimed_by is None:
                    old.status, old.ended_at = "cancelled", now
                    old.reason = f"{old.reason}; {note}" if old.reason else note
                elif old.cancel_requested_at is None:
                    old.cancel_requested_at = now
                    old.reason = f"{old.reason}; {note}" if old.reason else note
        return self._insert_run(session, run)

    def _retry(self, session: Session, job: Job, run: Run, now: datetime) -> Run | None:
        """Queue the next attempt of a run that ended in ``run.status``, if retries remain."""
        if run.status not in RETRY_STATUSES:
            return None
        if run.attempt > job.retry_attempts:
            if job.retry_attempts:
                run.reason += f"; no retries left ({job.retry_attempts} allowed)"
            return None
        backoff = timedelta(seconds=job.retry_backoff_seconds)
        attempt = Run(
            id=new_id(),
            job_id=run.job_id,
            job_version=run.job_version,
            trigger_id=run.trigger_id,
            tick=run.tick,
            status="queued",
            attempt=run.attempt + 1,
            retry_of=run.id,
            reason=f"retry {run.attempt} of {job.retry_attempts}: run {run.id} {run.status}",
            parameters=run.parameters,
            notebook_digest=run.notebook_digest,
            profile=run.profile,
            timeout_seconds=run.timeout_seconds,
            queued_at=now,
            not_before=now + backoff,
        )
        return self._insert_run(session, attempt)

    # -- jobs

    def create_job(
        self,
        owner: str,
        job: CreateJob,
        notebook_bytes: bytes,
        *,
        groups: Collection[str] = (),
        admin: bool = False,
        now: datetime | None = None,
    ) -> DescribeJob:
        """Create a job from a snapshot of ``notebook_bytes``.

        Parameters
        ----------
        owner : str
            The hub user who owns the job (and whose account runs it).
        job : CreateJob
            The validated request.
        notebook_bytes : bytes
            The .ipynb file as it is now; later edits of the source do not
            change the job until :meth:`update_job` is given new bytes.
        groups : collection of str
            The owner's hub groups: an ``after_job`` trigger may name a job
            shared with one of them.
        admin : bool
            Whether the caller is an admin (may chain after anyone's job).

        Returns
        -------
        DescribeJob
            With ``webhook_secret`` set if a webhook trigger was made: the only
            time the secret is shown.

        Raises
        ------
        Invalid
            The notebook is not a notebook, or an after_job upstream is unknown.
        Conflict
            The owner already has a job of that name.
        """
        now = self._now(now)
        check_notebook(notebook_bytes)
        digest = self.snapshots.put(notebook_bytes)
        try:
            with self._write.begin() as session:
                self._check_upstreams(session, None, owner, job.triggers, groups, admin)
                triggers, secret = self._new_triggers(job.triggers, now)
                row = Job(
                    id=new_id(),
                    owner=owner,
                    name=job.name,
                    notebook_digest=digest,
                    source_path=job.source_path,
                    parameters=job.parameters,
                    profile=job.profile,
                    timeout_seconds=job.timeout_seconds,
                    retry_attempts=job.retry_attempts,
                    retry_backoff_seconds=job.retry_backoff_seconds,
                    concurrency_policy=job.concurrency_policy.value,
                    missed_run_policy=job.missed_run_policy.value,
                    output_formats=job.output_formats,
                    shared_with_groups=job.shared_with_groups,
                    paused=job.paused,
                    created_at=now,
                    updated_at=now,
                    triggers=triggers,
                )
                session.add(row)
                session.flush()
                return _describe_job(row, webhook_secret=secret)
        except IntegrityError:
            raise Conflict(f"you already have a job named {job.name!r}") from None

    def get_job(
        self, job_id: str, user: str, groups: Collection[str] = (), admin: bool = False
    ) -> DescribeJob:
        """Return a job the caller may see.

        Raises
        ------
        NotFound
            No such job, or another user's job not shared with ``groups``.
        """
        with self._read.begin() as session:
            job = self._job_for(session, job_id, user, groups, admin, write=False)
            return _describe_job(job, read_only=not admin and job.owner != user)

    def list_jobs(
        self,
        user: str,
        groups: Collection[str] = (),
        admin: bool = False,
        query: ListJobsQuery | None = None,
    ) -> ListJobsResponse:
        """Return a page of the jobs the caller may see, ordered by owner and name."""
        query = query or ListJobsQuery()
        stmt = select(Job).options(selectinload(Job.triggers)).order_by(Job.owner, Job.name)
        if query.owner is not None:
            stmt = stmt.where(Job.owner == query.owner)
        if query.name_prefix:
            stmt = stmt.where(Job.name.startswith(query.name_prefix, autoescape=True))
        if query.paused is not None:
            stmt = stmt.where(Job.paused.is_(True) if query.paused else Job.paused.is_(False))
        if query.next_token:
            owner, name = _decode_token(query.next_token, 2)
            stmt = stmt.where(or_(Job.owner > owner, and_(Job.owner == owner, Job.name > name)))
        shared = query.include_shared and bool(groups) and not admin
        if not admin and not shared:
            stmt = stmt.where(Job.owner == user)
        groups = set(groups)
        page: list[DescribeJob] = []
        more = False
        with self._read.begin() as session:
            for job in session.scalars(stmt.execution_options(yield_per=200)):
                if not (admin or job.owner == user or groups & set(job.shared_with_groups)):
                    continue
                if len(page) == query.limit:
                    more = True
                    break
                page.append(_describe_job(job, read_only=not admin and job.owner != user))
        token = _encode_token([page[-1].owner, page[-1].name]) if more else None
        return ListJobsResponse(jobs=page, next_token=token)

    def update_job(
        self,
        job_id: str,
        user: str,
        groups: Collection[str] = (),
        admin: bool = False,
        update: UpdateJob | None = None,
        notebook_bytes: bytes | None = None,
        *,
        now: datetime | None = None,
    ) -> UpdateJobResponse:
        """Change a job; only what ``update`` sends changes, and the version moves only then.

        Parameters
        ----------
        job_id, user, groups, admin
            The job and the caller; only its owner (or an admin) may change it.
        update : UpdateJob
            The fields to change; ``triggers`` replaces the list (triggers
            equal to a stored one keep their id, schedule and webhook secret).
        notebook_bytes : bytes, optional
            A new notebook snapshot.

        Returns
        -------
        UpdateJobResponse
            The job, the names of the fields that changed (``notebook_digest``
            for a new notebook) and whether the notebook changed.

        Raises
        ------
        NotFound, Forbidden
            The caller may not see, or may not change, the job.
        Conflict
            ``expected_version`` is stale, the new name is taken, or the job
            changed concurrently.
        """
        now = self._now(now)
        update = update or UpdateJob()
        digest = None
        if notebook_bytes is not None:
            check_notebook(notebook_bytes)
            digest = self.snapshots.put(notebook_bytes)
        try:
            with self._write.begin() as session:
                job = self._job_for(session, job_id, user, groups, admin, write=True)
                if update.expected_version is not None and update.expected_version != job.version:
                    raise Conflict(
                        f"job {job.name!r} is at version {job.version}, not "
                        f"{update.expected_version}: someone changed it; reload and retry"
                    )
                changed: list[str] = []
                secret = None
                was_paused = job.paused
                # One UPDATE (one version step) per call: no flush half-way.
                with session.no_autoflush:
                    for field, value in update.changes().items():
                        if field == "triggers":
                            secret = self._replace_triggers(session, job, value, groups, admin, now)
                            if secret is not False:
                                changed.append(field)
                            continue
                        if hasattr(value, "value"):  # enums are stored as their string
                            value = value.value
                        if getattr(job, field) != value:
                            setattr(job, field, value)
                            changed.append(field)
                    notebook_changed = digest is not None and digest != job.notebook_digest
                    if notebook_changed:
                        job.notebook_digest = digest
                        changed.append("notebook_digest")
                    if was_paused and not job.paused:
                        # Ticks that passed while paused were not wanted: start from now.
                        for trigger in job.triggers:
                            if trigger.kind == "cron":
                                spec = trigger.spec
                                trigger.next_fire_at = cron_next(
                                    spec["expression"], spec["timezone"], now
                                )
                if changed:
                    job.updated_at = now  # also bumps ``version`` (version_id_col)
                    session.flush()
                result = UpdateJobResponse(
                    job=_describe_job(
                        job,
                        read_only=False,
                        webhook_secret=secret if isinstance(secret, str) else None,
                    ),
                    changed=sorted(changed),
                    notebook_changed=notebook_changed,
                )
        except StaleDataError:
            raise Conflict("the job changed while it was being updated: reload and retry") from None
        except IntegrityError:
            raise Conflict(f"you already have a job named {update.name!r}") from None
        return result

    def _replace_triggers(
        self,
        session: Session,
        job: Job,
        specs: list[Any],
        groups: Collection[str],
        admin: bool,
        now: datetime,
    ) -> str | None | bool:
        """Make ``job``'s triggers equal ``specs``; False if nothing changed, else the new secret."""
        self._check_upstreams(session, job.id, job.owner, specs, groups, admin)
        existing = {_public_spec(_describe_trigger(t).trigger): t for t in job.triggers}
        wanted = {_public_spec(s): s for s in specs}
        if set(existing) == set(wanted):
            return False
        keep = [t for key, t in existing.items() if key in wanted]
        new, secret = self._new_triggers(
            [s for key, s in wanted.items() if key not in existing], now
        )
        job.triggers = keep + new
        return secret

    def delete_job(
        self, job_id: str, user: str, groups: Collection[str] = (), admin: bool = False
    ) -> None:
        """Delete a job with its triggers and run records (not its snapshot: others may share it).

        Raises
        ------
        NotFound, Forbidden
            The caller may not see, or may not change, the job.
        Conflict
            A run is running: cancel it first, so no process outlives its record.
        """
        with self._write.begin() as session:
            job = self._job_for(session, job_id, user, groups, admin, write=True)
            running = session.scalars(
                select(Run.id).where(Run.job_id == job.id, Run.status == "running").limit(1)
            ).first()
            if running:
                raise Conflict(
                    f"job {job.name!r} has run {running} running: cancel it before deleting the job"
                )
            session.delete(job)

    # -- runs, for users

    def get_run(
        self, run_id: str, user: str, groups: Collection[str] = (), admin: bool = False
    ) -> DescribeRun:
        """Return a run of a job the caller may see.

        Raises
        ------
        NotFound
            No such run, or a run of a job the caller may not see.
        """
        with self._read.begin() as session:
            _, run = self._run_for(session, run_id, user, groups, admin, write=False)
            return _describe_run(run)

    def list_runs(
        self,
        user: str,
        groups: Collection[str] = (),
        admin: bool = False,
        query: ListRunsQuery | None = None,
    ) -> ListRunsResponse:
        """Return a page of runs, newest first.

        With ``query.job_id``, the runs of that job (own, shared or, for
        admins, anyone's); without, the caller's own runs (admins: all runs).
        """
        query = query or ListRunsQuery()
        stmt = select(Run).order_by(Run.queued_at.desc(), Run.id.desc()).limit(query.limit + 1)
        if query.status is not None:
            stmt = stmt.where(Run.status == query.status.value)
        if query.next_token:
            queued_at, run_id = _decode_token(query.next_token, 2)
            try:
                when = datetime.fromisoformat(queued_at)
            except ValueError:
                raise Invalid("next_token is not one this service issued") from None
            stmt = stmt.where(
                or_(Run.queued_at < when, and_(Run.queued_at == when, Run.id < run_id))
            )
        with self._read.begin() as session:
            if query.job_id is not None:
                self._job_for(session, query.job_id, user, groups, admin, write=False)
                stmt = stmt.where(Run.job_id == query.job_id)
            elif not admin:
                stmt = stmt.join(Job).where(Job.owner == user)
            runs = [_describe_run(r) for r in session.scalars(stmt)]
        more = len(runs) > query.limit
        runs = runs[: query.limit]
        token = _encode_token([runs[-1].queued_at.isoformat(), runs[-1].id]) if more else None
        return ListRunsResponse(runs=runs, next_token=token)

    def queue_manual_run(
        self,
        job_id: str,
        user: str,
        groups: Collection[str] = (),
        admin: bool = False,
        request: CreateRun | None = None,
        *,
        now: datetime | None = None,
    ) -> DescribeRun:
        """Queue a run now, with ``request.parameters`` over the job's.

        Raises
        ------
        NotFound, Forbidden
            The caller may not see, or may not run, the job.
        Conflict
            The job's concurrency policy is ``forbid`` and a run is in progress.
        """
        now = self._now(now)
        request = request or CreateRun()
        with self._write.begin() as session:
            job = self._job_for(session, job_id, user, groups, admin, write=True)
            run = self._queue(
                session,
                job,
                now,
                f"manual run by {user}",
                parameters=request.parameters,
                manual=True,
            )
            return _describe_run(run)

    def cancel_run(
        self,
        run_id: str,
        user: str,
        groups: Collection[str] = (),
        admin: bool = False,
        *,
        now: datetime | None = None,
    ) -> DescribeRun:
        """Cancel a queued run, or ask its worker to stop a running one.

        Raises
        ------
        NotFound, Forbidden
            The caller may not see, or may not change, the run's job.
        Conflict
            The run has already ended.
        """
        now = self._now(now)
        with self._write.begin() as session:
            _, run = self._run_for(session, run_id, user, groups, admin, write=True)
            if run.status not in ACTIVE:
                raise Conflict(f"run {run.id} has already ended ({run.status})")
            note = f"cancelled by {user}"
            if run.status == "queued" and run.claimed_by is None:
                run.status, run.ended_at = "cancelled", now
            elif run.cancel_requested_at is None:
                run.cancel_requested_at = now
            run.reason = f"{run.reason}; {note}" if run.reason else note
            return _describe_run(run)

    def fire_webhook(self, job_id: str, secret: str, *, now: datetime | None = None) -> DescribeRun:
        """Queue a run of a job whose webhook was called with ``secret``.

        Raises
        ------
        NotFound
            No such job, no webhook trigger, or the wrong secret: all look the
            same, so the webhook reveals nothing to a guesser.
        Conflict
            The job is paused. (A run the concurrency policy ``forbid``
            refuses is returned, ``skipped``.)
        """
        now = self._now(now)
        with self._write.begin() as session:
            job = self._lock_job(session, job_id) if _ID.match(job_id or "") else None
            trigger = next((t for t in job.triggers if t.kind == "webhook"), None) if job else None
            expected = trigger.spec["secret_sha256"] if trigger else _hash_secret("")
            if not hmac.compare_digest(expected, _hash_secret(secret)) or trigger is None:
                raise NotFound(f"no job {job_id!r} with that webhook secret")
            return _describe_run(self._fire(session, job, trigger, now, "webhook called"))

    def fire_trigger(
        self,
        trigger_id: str,
        reason: str,
        *,
        tick: datetime | None = None,
        now: datetime | None = None,
    ) -> DescribeRun:
        """Queue a run for a trigger the service watches itself (``file``).

        Parameters
        ----------
        trigger_id : str
            The trigger that fired.
        reason : str
            Shown on the run (e.g. which file changed).
        tick : datetime, optional
            A key for the event (e.g. the file's modification time): firing the
            same trigger twice for the same tick queues one run, so a watcher
            restarted over an unchanged file does not run the job again.

        Returns
        -------
        DescribeRun
            The run queued, or ``skipped`` when the concurrency policy
            ``forbid`` refused it, or the earlier run of the same ``tick``.

        Raises
        ------
        NotFound
            No such trigger.
        Invalid
            Not a file trigger.
        Conflict
            The job is paused.
        """
        now = self._now(now)
        with self._write.begin() as session:
            found = session.get(Trigger, trigger_id)
            job = self._lock_job(session, found.job_id) if found else None
            trigger = session.get(Trigger, trigger_id) if job else None
            if trigger is None:
                raise NotFound(f"no trigger {trigger_id!r}")
            if trigger.kind != "file":
                # Cron fires through claim_due, webhooks through fire_webhook (with
                # the secret), after_job through finish_run: never from outside.
                raise Invalid(
                    f"trigger {trigger_id} is a {trigger.kind} trigger, not a file trigger"
                )
            if tick is not None:
                earlier = session.scalars(
                    select(Run).where(
                        Run.trigger_id == trigger.id, Run.tick == tick, Run.attempt == 1
                    )
                ).first()
                if earlier is not None:
                    return _describe_run(earlier)
            return _describe_run(self._fire(session, job, trigger, now, reason, tick=tick))

    def _fire(
        self,
        session: Session,
        job: Job,
        trigger: Trigger,
        now: datetime,
        reason: str,
        tick: datetime | None = None,
    ) -> Run:
        if job.paused:
            raise Conflict(f"job {job.name!r} is paused")
        run = self._queue(session, job, now, reason, trigger=trigger, tick=tick)
        if run is None:
            raise Conflict(f"trigger {trigger.id} already fired for this event")
        trigger.last_fired_at = now
        return run

    # -- runs, for workers

    def claim_due(self, now: datetime | None, worker_id: str, limit: int = 10) -> list[DescribeRun]:
        """Turn due cron ticks into runs, then claim up to ``limit`` queued runs for a worker.

        Everything happens in one transaction: each due trigger is locked,
        its run inserted and its ``next_fire_at`` advanced together, so a tick
        makes exactly one run however many workers call this at once, and a
        crash in the middle makes none (the next call makes it). Missed ticks
        follow the job's missed-run policy:

        - ``skip``: a tick later than ``late_tolerance`` is recorded as
          ``skipped``; the job next runs at its next future tick.
        - ``run_once``: one run, for the latest missed tick.

        Claimed runs are those whose ``not_before`` has come, oldest first,
        never two of a ``forbid`` job at once. The worker must then call
        :meth:`start_run`; a claim without a start is released by
        :meth:`recover_orphans`.

        Parameters
        ----------
        now : datetime or None
            The time to schedule at (None: the store's clock).
        worker_id : str
            Who claims: recorded on the runs, checked by :meth:`start_run`.
        limit : int
            The most runs to claim (0 only fires due ticks).

        Returns
        -------
        list of DescribeRun
            The runs claimed, ``queued`` and ``claimed_by`` the worker.
        """
        now = self._now(now)
        with self._write.begin() as session:
            self._fire_due_cron(session, now)
            if limit <= 0:
                return []
            return [_describe_run(r) for r in self._claim_queued(session, now, worker_id, limit)]

    def _fire_due_cron(self, session: Session, now: datetime) -> None:
        due = session.execute(
            select(Trigger, Job)
            .join(Job, Trigger.job_id == Job.id)
            .where(Trigger.kind == "cron", Trigger.next_fire_at <= now, Job.paused.is_(False))
            .order_by(Trigger.next_fire_at, Trigger.id)
            .limit(CRON_BATCH)
            .with_for_update(skip_locked=True, of=(Trigger.__table__, Job.__table__))
            .execution_options(populate_existing=True)
        ).all()
        for trigger, job in due:
            try:
                self._fire_cron(session, trigger, job, now)
            except (ValueError, KeyError) as e:  # croniter's errors are ValueErrors
                # One unreadable stored schedule must not stop every other job's
                # ticks: disable it, say so, and go on.
                log.error("Disabling cron trigger %s of job %s: %s", trigger.id, job.id, e)
                trigger.next_fire_at = None

    def _fire_cron(self, session: Session, trigger: Trigger, job: Job, now: datetime) -> None:
        expression, tz = trigger.spec["expression"], trigger.spec["timezone"]
        first = trigger.next_fire_at
        latest = cron_latest(expression, tz, now)
        trigger.next_fire_at = cron_next(expression, tz, now)
        if latest < first:  # cannot happen unless the clock went back; just reschedule
            return
        trigger.last_fired_at = now
        missed = cron_count(expression, tz, first, latest, MISSED_COUNT_CAP) - 1
        late = now - latest > self.late_tolerance
        count = f"{MISSED_COUNT_CAP}+" if missed + 1 >= MISSED_COUNT_CAP else str(missed + 1)
        reason = f"cron {expression} ({tz})"
        if job.missed_run_policy == "skip":
            if late:
                why = (
                    f"skipped: {count} tick(s) from {first.isoformat()} to {latest.isoformat()} "
                    "were missed while no scheduler ran, and the missed-run policy is skip"
                )
                self._insert_run(
                    session,
                    self._new_run(job, now, why, trigger=trigger, tick=latest, status="skipped"),
                )
                return
            if missed:
                reason += f"; {missed} earlier missed tick(s) skipped"
        elif missed or late:
            reason += f"; run_once for the latest of {count} missed tick(s)"
        run = self._queue(session, job, now, reason, trigger=trigger, tick=latest)
        if run is not None and run.status == "queued":
            run.not_before = latest

    def _claim_queued(
        self, session: Session, now: datetime, worker_id: str, limit: int
    ) -> list[Run]:
        other = aliased(Run)
        busy = (
            exists()
            .where(other.job_id == Run.job_id, other.id != Run.id)
            .where(
                or_(
                    other.status == "running",
                    and_(other.status == "queued", other.claimed_by.is_not(None)),
                )
            )
        )
        candidates = session.scalars(
            select(Run)
            .join(Job, Run.job_id == Job.id)
            .where(
                Run.status == "queued",
                Run.claimed_by.is_(None),
                Run.not_before <= now,
                or_(Job.concurrency_policy != "forbid", ~busy),
            )
            .order_by(Run.not_before, Run.queued_at, Run.id)
            .limit(limit)
            # Locking the jobs too keeps two workers from claiming two runs of one
            # forbid job (each would skip the other's locked run and see no claim).
            .with_for_update(skip_locked=True, of=(Run.__table__, Job.__table__))
            .execution_options(populate_existing=True)
        ).all()
        policies = dict(
            session.execute(
                select(Job.id, Job.concurrency_policy).where(
                    Job.id.in_({r.job_id for r in candidates})
                )
            ).all()
        )
        # The query above judged "busy" on a snapshot taken before its locks were
        # granted; now that this transaction holds the jobs' locks, look again.
        forbid = {job_id for job_id, policy in policies.items() if policy == "forbid"}
        busy_now = set(
            session.scalars(
                select(Run.job_id).where(
                    Run.job_id.in_(forbid),
                    Run.id.not_in([r.id for r in candidates]),
                    or_(
                        Run.status == "running",
                        and_(Run.status == "queued", Run.claimed_by.is_not(None)),
                    ),
                )
            )
        )
        claimed, taken = [], set()
        for run in candidates:
            if run.job_id in forbid:
                if run.job_id in busy_now or run.job_id in taken:
                    continue
                taken.add(run.job_id)
            run.claimed_by, run.heartbeat_at = worker_id, now
            claimed.append(run)
        return claimed

    def start_run(self, run_id: str, worker_id: str, *, now: datetime | None = None) -> DescribeRun:
        """Mark a queued run ``running`` for ``worker_id``, who is about to execute it.

        Raises
        ------
        NotFound
            No such run.
        Conflict
            The run is not queued, is claimed by another worker, was cancelled
            before it started, or its job is ``forbid`` and another run of it
            is running (the claim is then released, for a later start). The
            worker must then not execute it.
        """
        now = self._now(now)
        refused = None
        with self._write.begin() as session:
            found = session.get(Run, run_id)
            if found is None or self._lock_job(session, found.job_id) is None:
                raise NotFound(f"no run {run_id!r}")
            run = self._lock_run(session, run_id)
            job = session.get(Job, run.job_id)
            if run.status != "queued":
                raise Conflict(f"run {run.id} is {run.status}, not queued")
            if run.claimed_by not in (None, worker_id):
                raise Conflict(f"run {run.id} is claimed by worker {run.claimed_by!r}")
            other = None
            if job.concurrency_policy == "forbid":
                other = session.scalars(
                    select(Run.id).where(
                        Run.job_id == job.id, Run.status == "running", Run.id != run.id
                    )
                ).first()
            if run.cancel_requested_at is not None:
                run.status, run.ended_at = "cancelled", now
                refused = Conflict(f"run {run.id} was cancelled before it started")
            elif other is not None:
                # Released (committed below) so that any worker may start it later.
                run.claimed_by = run.heartbeat_at = None
                refused = Conflict(
                    f"run {other} of job {job.name!r} is running and its concurrency "
                    "policy is forbid"
                )
            else:
                run.status, run.claimed_by = "running", worker_id
                run.started_at = run.heartbeat_at = now
            described = _describe_run(run)
        if refused is not None:
            raise refused
        return described

    def heartbeat(self, run_id: str, worker_id: str, *, now: datetime | None = None) -> DescribeRun:
        """Record that ``worker_id`` is still executing a run.

        Returns
        -------
        DescribeRun
            When ``cancel_requested_at`` is set, the worker must stop the run
            and report it with :meth:`finish_run` as ``cancelled``.

        Raises
        ------
        NotFound
            No such run.
        Conflict
            The run is no longer this worker's to run (orphaned, finished, or
            claimed by another): the worker must stop it.
        """
        now = self._now(now)
        with self._write.begin() as session:
            run = self._lock_run(session, run_id)
            if run is None:
                raise NotFound(f"no run {run_id!r}")
            if run.status != "running" or run.claimed_by != worker_id:
                raise Conflict(
                    f"run {run.id} is {run.status} (worker {run.claimed_by!r}): stop executing it"
                )
            run.heartbeat_at = now
            return _describe_run(run)

    def finish_run(
        self,
        run_id: str,
        status: RunStatus | Enum | str,
        reason: str = "",
        *,
        worker_id: str | None = None,
        output_path: str | None = None,
        log_path: str | None = None,
        env_digest: str | None = None,
        mlflow_run_id: str | None = None,
        now: datetime | None = None,
    ) -> DescribeRun:
        """Record how a run ended; queue its retry or the jobs that run after it.

        A ``failed`` or ``timed_out`` run with retries left queues attempt + 1
        after the job's backoff. A ``succeeded`` run queues a run of every
        unpaused job with an ``after_job`` trigger on this job.

        Parameters
        ----------
        run_id : str
            The run.
        status : RunStatus, enum or str
            ``succeeded``, ``failed``, ``cancelled`` or ``timed_out`` (an
            executor's ``RunReport.status`` is accepted as is). A queued
            run may only be finished as ``cancelled``.
        reason : str
            Why (for a failure: the cell and error papermill reported).
        worker_id : str, optional
            When given, the run must be this worker's.
        output_path, log_path, env_digest, mlflow_run_id : str, optional
            Where the outputs are and what produced them.

        Raises
        ------
        Invalid
            ``status`` is not a final status a worker reports.
        NotFound
            No such run.
        Conflict
            The run already ended (e.g. declared orphaned), or belongs to
            another worker.
        """
        now = self._now(now)
        # Any str enum (the executors' RunStatus too) counts by value: str() of a
        # (str, Enum) member is "RunStatus.FAILED" before Python 3.12.
        status = status.value if isinstance(status, Enum) else str(status)
        if status not in FINISH_STATUSES:
            raise Invalid(
                f"a run is finished as one of {', '.join(FINISH_STATUSES)}, not {status!r}"
            )
        with self._write.begin() as session:
            found = session.get(Run, run_id)
            job = self._lock_job(session, found.job_id) if found else None
            if job is None:
                raise NotFound(f"no run {run_id!r}")
            run = self._lock_run(session, run_id)
            if run.status != "running" and not (run.status == "queued" and status == "cancelled"):
                raise Conflict(f"run {run.id} is {run.status}; it cannot become {status}")
            if worker_id is not None and run.claimed_by not in (None, worker_id):
                raise Conflict(f"run {run.id} belongs to worker {run.claimed_by!r}")
            run.status, run.ended_at = status, now
            if reason:
                run.reason = f"{run.reason}; {reason}" if run.reason else reason
            for name, value in (
                ("output_path", output_path),
                ("log_path", log_path),
                ("env_digest", env_digest),
                ("mlflow_run_id", mlflow_run_id),
            ):
                if value is not None:
                    setattr(run, name, value)
            self._retry(session, job, run, now)
            described = _describe_run(run)
            if status == "succeeded":
                self._queue_downstream(session, job, run, now)
        return described

    def _queue_downstream(self, session: Session, upstream: Job, run: Run, now: datetime) -> None:
        triggers = [
            t
            for t in session.scalars(select(Trigger).where(Trigger.kind == "after_job"))
            if t.spec.get("upstream_job_id") == upstream.id
        ]
        for trigger in sorted(triggers, key=lambda t: t.job_id):  # lock order: job ids
            job = self._lock_job(session, trigger.job_id)
            if job is None or job.paused:
                continue
            reason = f"after run {run.id} of job {upstream.name!r} ({upstream.owner}) succeeded"
            self._queue(session, job, now, reason, trigger=trigger)
            trigger.last_fired_at = now

    def recover_orphans(
        self, stale_after: timedelta, *, now: datetime | None = None
    ) -> list[DescribeRun]:
        """Declare runs whose worker went silent ``orphaned``, and retry them if allowed.

        Call it when a scheduler starts and then periodically. A ``running``
        run without a heartbeat for ``stale_after`` becomes ``orphaned``; while
        its attempt is within the job's ``retry_attempts``, attempt + 1 is
        queued, claimable after the job's backoff. A ``queued`` run claimed by
        a worker that never started it is released for another worker.

        Parameters
        ----------
        stale_after : datetime.timedelta
            How long without a heartbeat means the worker is gone; several
            heartbeat intervals.

        Returns
        -------
        list of DescribeRun
            The runs now ``orphaned``.
        """
        now = self._now(now)
        cutoff = now - stale_after
        stale = or_(Run.heartbeat_at.is_(None), Run.heartbeat_at < cutoff)
        orphaned: list[DescribeRun] = []
        with self._write.begin() as session:
            job_ids = sorted(
                set(
                    session.scalars(
                        select(Run.job_id).where(
                            stale,
                            or_(
                                Run.status == "running",
                                and_(Run.status == "queued", Run.claimed_by.is_not(None)),
                            ),
                        )
                    )
                )
            )
            for job_id in job_ids:
                job = self._lock_job(session, job_id, skip_locked=True)
                if job is None:  # being changed right now: next time
                    continue
                runs = session.scalars(
                    select(Run)
                    .where(Run.job_id == job_id, Run.status.in_(ACTIVE), stale)
                    .order_by(Run.id)
                    .with_for_update()
                    .execution_options(populate_existing=True)
                ).all()
                for run in runs:
                    if run.status == "queued":
                        if run.claimed_by is not None:
                            log.warning("Releasing run %s claimed by %s", run.id, run.claimed_by)
                            run.claimed_by = run.heartbeat_at = None
                        continue
                    last = run.heartbeat_at.isoformat() if run.heartbeat_at else "never"
                    note = (
                        f"orphaned: no heartbeat from worker {run.claimed_by!r} since {last} "
                        f"(stale after {int(stale_after.total_seconds())} s)"
                    )
                    run.status, run.ended_at = "orphaned", now
                    run.reason = f"{run.reason}; {note}" if run.reason else note
                    self._retry(session, job, run, now)
                    orphaned.append(_describe_run(run))
        return orphaned
