"""The scheduler service's core: what each API call does, between the handlers and the store.

:class:`SchedulerCore` holds the checks that need more than the request body,
and calls the synchronous :class:`~.store.JobStore` in a thread pool so the
event loop never waits on the database (STYLE rule 13):

- the notebook is read from the owner's home through :mod:`.paths` (or taken
  inline), limited in size (413), checked to be a notebook that can run
  (:func:`.notebooks.check_notebook`: a cell without ``source`` is a 400 now,
  not a failed run later), and snapshotted;
- a notification webhook must reach a public address (unless the admin
  allows private ones): checked when the job is saved, by the notifier's own
  rule (:meth:`.notify.Notifier.check_webhook_url`);
- the profile must exist, be open to the owner's groups (the hub's groups,
  looked up with the service's token and cached briefly), and be one this
  machine can run: a GPU profile where the executor has no GPU is listed as
  unavailable and refused (409) when the job is made, not failed at its run;
- parameters must be declared by the notebook's ``parameters`` cell, with the
  right types (:mod:`.notebooks`), for the job and for each manual run;
- the previews answer what those checks would, before anything is saved: a cron
  trigger's next runs (the trigger kind's own arithmetic) and a notebook's parameters
  with the values typed for them read and checked (:func:`_preview_parameters`);
- a run's log and outputs are read only for callers who may see the run, and
  only from the service's own run folders.

Every refusal is a :class:`~.errors.SchedulerError` whose message says what
to fix; another user's objects answer exactly like missing ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from hub_ext.host import slugs
from hub_ext.profiles.model import ProfileChoiceError
from hub_ext.profiles.store import ProfileStore

from ..common.hubapi import Caller, HubDirectory
from .api import (
    CreateJobRequest,
    DescribeGroupQuota,
    ListQuotasResponse,
    LogChunk,
    ParameterInfo,
    ParametersResponse,
    ParameterValue,
    PreviewCronRequest,
    PreviewCronResponse,
    PreviewParametersRequest,
    PreviewParametersResponse,
    ProfileInfo,
    ProfilesResponse,
    ReplaceNotebookRequest,
    ReplaceNotebookResponse,
    UpcomingResponse,
    WebhookResponse,
)
from .cron import every_hour
from .errors import Conflict, Forbidden, Invalid, NotFound, SchedulerError
from .models import (
    CreateJob,
    CreateRun,
    DescribeJob,
    DescribeRun,
    ListJobsQuery,
    ListRunsQuery,
    UpdateJob,
)
from .notebooks import (
    check_against_notebook,
    check_notebook,
    declared_parameters,
    notebook_diff,
    parameter_problem,
    read_parameter_text,
)
from .paths import TooLarge, read_in_home
from .store import JobStore
from .triggers import KINDS
from .triggers.cron import CronKind
from .validation import check_parameter_name, check_parameter_value, check_parameters

#: Longest a thread keeps the GIL while another waits for it (seconds; Python's default
#: is 0.005). Store calls run in threads, but turning rows into models is Python work
#: that holds the GIL, and the event loop takes it back at each socket read and write
#: of a request: at 5 ms per hand-over, a /health beside a job listing waited tens of
#: milliseconds (#15, point 7).
GIL_SWITCH_INTERVAL = 0.0005
#: The largest piece of a log one request returns.
LOG_CHUNK = 256 * 1024
OUTPUT_TYPES = {"ipynb": "application/x-ipynb+json", "html": "text/html; charset=utf-8"}


@dataclass
class SchedulerCore:
    """What the handlers call; see the module docstring.

    Parameters
    ----------
    store : JobStore
        The jobs, triggers and runs.
    profiles : ProfileStore
        The profiles file (re-read when it changes).
    directory : HubDirectory, optional
        Groups of users; None trusts only the groups in the caller's identity.
    home_of : callable
        ``home_of(owner) -> str | None``: the owner's home on this machine.
    wake : callable
        Tells the worker that a run was queued (so it starts now, not at its next poll).
    max_notebook_bytes, max_request_bytes : int
        Size limits (413 above them).
    gpu_count : int, optional
        The executor's GPUs (:attr:`.executors.base.Executor.gpu_count`); None where it
        does not know (Kubernetes), which checks nothing.
    check_webhook : callable, optional
        ``await check_webhook(url)`` raises ValueError saying why the scheduler would
        not call a notification webhook (:meth:`.notify.Notifier.check_webhook_url`);
        None checks nothing.
    """

    store: JobStore
    profiles: ProfileStore
    directory: HubDirectory | None
    home_of: Callable[[str], str | None]
    wake: Callable[[], None]
    max_notebook_bytes: int
    max_request_bytes: int
    worker_id: str = ""
    started_at: float = 0.0
    #: ``await cancel_local(run_id)``: stop a run this process executes, now.
    cancel_local: Callable[[str], Any] | None = None
    gpu_count: int | None = None
    check_webhook: Callable[[str], Awaitable[None]] | None = None
    #: The pipelines' calls (:class:`~.pipelines.service.PipelineService`), set by the app.
    pipelines: Any = None
    #: ``c.SchedulerService.group_quotas``: most runs at once per hub group.
    group_quotas: dict[str, int] = field(default_factory=dict)

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def groups_of(self, name: str, known: Sequence[str] | None = None) -> tuple[str, ...]:
        """The user's hub groups: from the directory when there is one, else from the identity."""
        if self.directory is None:
            return tuple(sorted(known or ()))
        return await self.directory.groups_of(name)

    # -- checks

    def _check_profile(self, slug: str, caller: Caller) -> None:
        try:
            self.profiles.get().resolve(slug, caller.groups, self.gpu_count)
        except ProfileChoiceError as e:
            error = {403: Forbidden, 409: Conflict}.get(e.status, Invalid)
            raise error(str(e)) from None

    async def quotas(self, caller: Caller) -> ListQuotasResponse:
        """Each group quota on runs and how many runs its members have running (admins only).

        Counted as the worker counts before it starts a run (``Worker._admit``):
        running runs per owner, each owner in every group they belong to.
        """
        if not caller.admin:
            raise Forbidden("the group quotas' use is for hub admins")
        counts = await self._call(self.store.running_counts_by_owner) if self.group_quotas else {}
        running = dict.fromkeys(self.group_quotas, 0)
        for owner, count in counts.items():
            for group in await self.groups_of(owner):
                if group in running:
                    running[group] += count
        return ListQuotasResponse(
            quotas=[
                DescribeGroupQuota(group=g, limit=self.group_quotas[g], running=running[g])
                for g in sorted(self.group_quotas)
            ]
        )

    def profiles_for(self, caller: Caller) -> ProfilesResponse:
        """The caller's profiles; one this machine cannot run says why and is never the default.

        Listed rather than left out, so the dialogs can show it disabled with the reason,
        as the spawn form shows its card, instead of a profile that silently went missing.
        """
        config = self.profiles.get()
        default = config.default_for(caller.groups, self.gpu_count)
        infos = []
        for p in config.allowed_for(caller.groups):
            reason = p.unavailable_reason(self.gpu_count)
            infos.append(
                ProfileInfo(
                    slug=p.slug,
                    display_name=p.display_name,
                    description=p.description or "",
                    environment=p.environment,
                    # default_for falls back to an unusable one when nothing else is open
                    default=reason is None and default is not None and p.slug == default.slug,
                    available=reason is None,
                    unavailable_reason=reason,
                )
            )
        return ProfilesResponse(profiles=infos)

    def _read_notebook(self, owner: str, source_path: str | None, inline: dict | None) -> bytes:
        if inline is not None:
            data = json.dumps(inline, ensure_ascii=False).encode()
            if len(data) > self.max_notebook_bytes:
                raise TooLarge(
                    f"the notebook is {len(data)} bytes, over the limit of "
                    f"{self.max_notebook_bytes}: clear large outputs first"
                )
            return data  # the request model checked it (api.Notebook)
        home = self.home_of(owner)
        if home is None:
            raise NotFound(
                f"no notebook at {source_path!r}: you have no home directory on this machine "
                "yet (start your server once), or send the notebook itself"
            )
        data = read_in_home(home, source_path, self.max_notebook_bytes)
        check_notebook(data, f"the notebook at {source_path!r}")
        return data

    async def _check_webhook(self, notify: Any) -> None:
        url = getattr(notify, "webhook_url", None)
        if url is None or self.check_webhook is None:
            return
        try:
            await self.check_webhook(url)
        except ValueError as e:
            raise Invalid(f"notify.webhook_url will not be called: {e}") from None

    @staticmethod
    def _check_parameters(notebook: bytes, parameters: dict[str, Any]) -> None:
        try:
            declared = declared_parameters(notebook)
        except (ValueError, KeyError) as e:
            raise Invalid(f"the notebook's parameters cell cannot be read: {e}") from None
        check_against_notebook(declared, parameters)

    # -- jobs

    async def create_job(self, caller: Caller, request: CreateJobRequest) -> DescribeJob:
        self._check_profile(request.profile, caller)
        await self._check_webhook(request.notify)
        data = await self._call(
            self._read_notebook, caller.name, request.source_path, request.notebook
        )
        await self._call(self._check_parameters, data, request.parameters)
        job = CreateJob.model_validate(request.model_dump(exclude={"notebook"}))
        created = await self._call(
            self.store.create_job, caller.name, job, data, groups=caller.groups, admin=caller.admin
        )
        self.wake()
        return created

    async def list_jobs(self, caller: Caller, query: ListJobsQuery):
        return await self._call(self.store.list_jobs, *caller.access, query)

    async def get_job(self, caller: Caller, job_id: str) -> DescribeJob:
        return await self._call(self.store.get_job, job_id, *caller.access)

    async def update_job(self, caller: Caller, job_id: str, update: UpdateJob):
        job = await self.get_job(caller, job_id)
        if job.read_only:
            # the store says so too; checking here first keeps the message the store's
            return await self._call(self.store.update_job, job_id, *caller.access, update)
        if update.secrets is not None and caller.name != job.owner:
            # the list decides whose values a run gets: the owner's choice alone, not an admin's
            raise Forbidden(
                f"only {job.owner!r} can choose which of their secrets job {job.name!r} gets"
            )
        if update.profile is not None:
            owner_groups = await self.groups_of(job.owner) if caller.admin else caller.groups
            self._check_profile(update.profile, Caller(job.owner, owner_groups, caller.admin))
        if update.parameters is not None:
            data = await self._call(self.store.snapshots.get, job.notebook_digest)
            await self._call(self._check_parameters, data, update.parameters)
        await self._check_webhook(update.notify)
        result = await self._call(self.store.update_job, job_id, *caller.access, update)
        self.wake()
        return result

    async def delete_job(self, caller: Caller, job_id: str) -> None:
        await self._call(self.store.delete_job, job_id, *caller.access)

    async def job_notebook(self, caller: Caller, job_id: str) -> tuple[str, bytes]:
        job = await self.get_job(caller, job_id)
        data = await self._call(self.store.snapshots.get, job.notebook_digest)
        return f"{job.name}.ipynb", data

    async def job_parameters(self, caller: Caller, job_id: str) -> ParametersResponse:
        job = await self.get_job(caller, job_id)
        data = await self._call(self.store.snapshots.get, job.notebook_digest)
        declared = await self._call(declared_parameters, data)
        return ParametersResponse(
            has_parameters_cell=declared is not None,
            parameters=[ParameterInfo(name=k, **v) for k, v in (declared or {}).items()],
        )

    async def replace_notebook(
        self, caller: Caller, job_id: str, request: ReplaceNotebookRequest
    ) -> ReplaceNotebookResponse:
        """Update the job to the notebook as it is now, and say what changed."""
        job = await self.get_job(caller, job_id)
        if job.read_only:
            raise Forbidden(
                f"job {job.name!r} is shared with you read-only; only {job.owner!r} can change it"
            )
        source = request.source_path or job.source_path
        if request.notebook is None and source is None:
            raise Invalid(
                "the job has no source_path to read again: send 'source_path' or 'notebook'"
            )
        new = await self._call(self._read_notebook, job.owner, source, request.notebook)
        await self._call(self._check_parameters, new, job.parameters)
        old = await self._call(self.store.snapshots.get, job.notebook_digest)
        update = UpdateJob(expected_version=request.expected_version)
        if request.source_path and request.source_path != job.source_path:
            update = UpdateJob(
                source_path=request.source_path, expected_version=request.expected_version
            )
        result = await self._call(self.store.update_job, job_id, *caller.access, update, new)
        diff = await self._call(notebook_diff, old, new)
        return ReplaceNotebookResponse(
            job=result.job.model_dump(mode="json"),
            changed=result.changed,
            notebook_changed=result.notebook_changed,
            diff=diff,
        )

    async def upcoming(self, caller: Caller, job_id: str, count: int) -> UpcomingResponse:
        job = await self.get_job(caller, job_id)
        times: list[datetime] = []
        if not job.paused:
            for trigger in job.triggers:
                kind = KINDS[trigger.trigger.kind]
                times += kind.upcoming(trigger.trigger, trigger.next_fire_at, count)
        return UpcomingResponse(times=sorted(times)[:count])

    # -- previews: what the service would say, before anything is saved

    async def preview_cron(self, request: PreviewCronRequest) -> PreviewCronResponse:
        """The next runs of a cron trigger (already checked, as a job's, by the request model)."""
        kind = cast(CronKind, KINDS["cron"])
        # the scheduler's own clock: a job made now gets its first tick after this instant
        after = self.store.queue.now(request.after)
        try:
            times = await self._call(kind.preview, request, after, request.count)
        except (ValueError, OverflowError) as e:  # croniter's errors are ValueErrors
            raise Invalid(
                f"cron expression {request.expression!r} has no {request.count} runs after "
                f"{after.isoformat()}: {e}"
            ) from None
        return PreviewCronResponse(
            expression=request.expression,
            timezone=request.timezone,
            every_hour=every_hour(request.expression),
            times=times,
        )

    async def preview_parameters(
        self, caller: Caller, request: PreviewParametersRequest
    ) -> PreviewParametersResponse:
        """The notebook's parameters, and each typed text read as a job would take it."""
        data = await self._call(self._read_notebook, caller.name, None, request.notebook)
        return await self._call(_preview_parameters, data, request.values)

    # -- runs

    async def run_now(self, caller: Caller, job_id: str, request: CreateRun) -> DescribeRun:
        if request.parameters:
            job = await self.get_job(caller, job_id)
            data = await self._call(self.store.snapshots.get, job.notebook_digest)
            await self._call(self._check_parameters, data, request.parameters)
        run = await self._call(self.store.queue_manual_run, job_id, *caller.access, request)
        self.wake()
        return run

    async def list_runs(self, caller: Caller, query: ListRunsQuery):
        return await self._call(self.store.list_runs, *caller.access, query)

    async def get_run(self, caller: Caller, run_id: str) -> DescribeRun:
        return await self._call(self.store.get_run, run_id, *caller.access)

    async def cancel_run(self, caller: Caller, run_id: str) -> DescribeRun:
        run = await self._call(self.store.cancel_run, run_id, *caller.access)
        if self.cancel_local is not None and run.status.value == "running":
            await self.cancel_local(run_id)
        self.wake()
        return run

    async def run_log(self, caller: Caller, run_id: str, offset: int) -> LogChunk:
        run = await self.get_run(caller, run_id)
        ended = run.status.value not in ("queued", "running")
        text, next_offset, at_end = "", offset, True
        if run.log_path:
            text, next_offset, at_end = await self._call(_read_chunk, Path(run.log_path), offset)
        return LogChunk(
            text=text,
            offset=offset,
            next_offset=next_offset,
            complete=ended and at_end,
            status=run.status.value,
            cells_done=getattr(run, "cells_done", None),
            cells_total=getattr(run, "cells_total", None),
        )

    async def run_output(self, caller: Caller, run_id: str, fmt: str) -> tuple[str, str, bytes]:
        if fmt not in OUTPUT_TYPES:
            raise Invalid(f"format must be one of {', '.join(OUTPUT_TYPES)}, not {fmt!r}")
        run = await self.get_run(caller, run_id)
        if not run.output_path:
            if getattr(run, "outputs_deleted_at", None):
                raise NotFound(f"run {run_id}'s outputs were deleted by the job's retention policy")
            raise NotFound(f"run {run_id} has no output yet (it is {run.status.value})")
        path = Path(run.output_path)
        if fmt != "ipynb":
            path = path.with_suffix(f".{fmt}")
        try:
            data = await self._call(path.read_bytes)
        except FileNotFoundError:
            raise NotFound(
                f"run {run_id} has no {fmt} output"
                + (" (ask for 'html' in the job's output_formats)" if fmt == "html" else "")
            ) from None
        job = await self.get_job(caller, run.job_id)
        return f"{job.name}-{run.id[:8]}.{fmt}", OUTPUT_TYPES[fmt], data

    # -- notifications

    async def list_notifications(self, caller: Caller, unread_only: bool):
        return await self._call(self.store.list_notifications, caller.name, unread_only=unread_only)

    async def mark_notification_read(self, caller: Caller, notification_id: str):
        return await self._call(self.store.mark_notification_read, notification_id, caller.name)

    # -- webhooks

    async def fire_webhook(self, job_id: str, secret: str) -> WebhookResponse:
        if not secret:
            raise NotFound(f"no job {job_id!r} with that webhook secret")
        run = await self._call(self.store.fire_webhook, job_id, secret)
        self.wake()
        return WebhookResponse(run_id=run.id, status=run.status.value)

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "worker": self.worker_id,
            "uptime_seconds": round(time.monotonic() - self.started_at, 1),
        }


def _read_chunk(path: Path, offset: int) -> tuple[str, int, bool]:
    """(text, next offset, whether that is the end of the file) from ``offset``."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(offset)
            data = f.read(LOG_CHUNK)
    except FileNotFoundError:
        return "", offset, True
    # never split a UTF-8 character: stop before an incomplete one at the end
    cut = len(data)
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:
            continue
        if byte & 0x80:
            need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4
            if need > back:
                cut = len(data) - back
        break
    return data[:cut].decode("utf-8", "replace"), offset + cut, offset + cut >= size


def home_resolver(prefix: str) -> Callable[[str], str | None]:
    """``home_of(owner)``: the home of the owner's system account, as the spawner names it.

    Without root, every user's server runs as the service's own user, so that
    user's home is everyone's.
    """

    def home_of(owner: str) -> str | None:
        if os.geteuid() != 0:
            return os.path.expanduser("~")
        try:
            return pwd.getpwnam(slugs.account_name(owner, prefix)).pw_dir
        except KeyError:
            return None

    return home_of


def account_resolver(prefix: str) -> Callable[[str], tuple[int, int] | None]:
    """``account_of(owner)``: the uid and gid of the owner's system account (None: none yet).

    Without root, runs run as the service's own user, which then owns what they write.
    """

    def account_of(owner: str) -> tuple[int, int] | None:
        if os.geteuid() != 0:
            return None
        try:
            entry = pwd.getpwnam(slugs.account_name(owner, prefix))
        except KeyError:
            return None
        return entry.pw_uid, entry.pw_gid

    return account_of


def _preview_parameters(data: bytes, values: dict[str, str]) -> PreviewParametersResponse:
    """What :meth:`SchedulerCore.preview_parameters` answers; blocking (papermill reads the file).

    Each text is read as its parameter's type (:func:`.notebooks.read_parameter_text`),
    then held to the rules a job's parameters are: the one parameter check
    (:func:`.validation.check_parameters`, by name and by value) and the check against
    the notebook (:func:`.notebooks.parameter_problem`). The first problem of each
    parameter is its error; one parameter's error never hides another's.
    """
    try:
        declared = declared_parameters(data)
    except (ValueError, KeyError) as e:
        raise Invalid(f"the notebook's parameters cell cannot be read: {e}") from None
    answers = []
    for name, text in values.items():
        answer = ParameterValue(name=name, text=text)
        try:
            check_parameter_name(name)
            value = read_parameter_text((declared or {}).get(name), name, text)
            check_parameter_value(name, value)
        except ValueError as e:  # pydantic's PydanticCustomError is one too
            answer.error = str(e)
        else:
            answer.error = parameter_problem(declared, name, value)
            if answer.error is None:
                answer.value = value
        answers.append(answer)
    valid = all(a.error is None for a in answers)
    if valid:
        try:  # each value is within the bounds; all of them together must be too
            check_parameters({a.name: a.value for a in answers})
        except ValueError as e:
            raise Invalid(str(e)) from None
    return PreviewParametersResponse(
        has_parameters_cell=declared is not None,
        parameters=[ParameterInfo(name=k, **v) for k, v in (declared or {}).items()],
        values=answers,
        valid=valid,
    )


__all__ = ["Caller", "HubDirectory", "SchedulerCore", "SchedulerError", "home_resolver"]
