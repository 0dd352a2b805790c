"""What each pipeline API call does, between the handlers and the store.

:class:`PipelineService` reads a ``pipeline.yaml`` from the owner's home (with
the scheduler's one rule for reading there: no symlink out, a size limit),
validates it (:func:`.load.load_pipeline`: every error at its
``file:line:column``), and checks what only the running service can: each
step's profile is open to the owner, each notebook can run and declares the
parameters and inputs the step gives it. The notebooks are snapshotted as a
job's are, so a run runs what was saved, not what the file says later; a deploy
step's notebook is Shipyard's own (``hub_ext/runtime/deploy_step.ipynb``),
snapshotted the same way. Store calls run in a thread pool (STYLE rule 13).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ...common.hubapi import Caller
from ..errors import Invalid, NotFound
from ..notebooks import declared_parameters
from ..paths import read_in_home
from .api import (
    CreatePipeline,
    CreatePipelineRun,
    DescribePipeline,
    DescribePipelineRun,
    ListPipelineRunsResponse,
    ListPipelinesResponse,
    PausePipeline,
    UpdatePipeline,
)
from .load import load_pipeline
from .spec import DeployStep, Pipeline

if TYPE_CHECKING:
    from ..core import SchedulerCore

#: Largest pipeline file read.
MAX_PIPELINE_BYTES = 1024**2


def deploy_notebook() -> bytes:
    """Shipyard's built-in deploy notebook: what every deploy step's run runs."""
    return (resources.files("hub_ext.runtime") / "deploy_step.ipynb").read_bytes()


@dataclass
class PipelineService:
    """The pipelines' API calls (see the module docstring)."""

    core: SchedulerCore
    #: Where each pipeline run's workspace folder is made (``<runs_dir>/pipelines``).
    workspaces: Path

    async def _call(self, fn, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    def _read(self, caller: Caller, path: str) -> tuple[Pipeline, str, dict, dict]:
        """The validated pipeline at ``path``, its digest, and its steps' snapshots and profiles."""
        core = self.core
        home = core.home_of(caller.name)
        if home is None:
            raise NotFound(
                f"no pipeline file at {path!r}: you have no home directory on this machine yet "
                "(start your server once)"
            )
        data = read_in_home(home, path, MAX_PIPELINE_BYTES, "pipeline file")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise Invalid(f"{path}: the pipeline file is not UTF-8 text") from None
        folder = PurePosixPath(path).parent
        pipeline = load_pipeline(text, path, base_dir=Path(home) / folder)
        snapshots: dict[str, str] = {}
        profiles: dict[str, str] = {}
        for step_id, step in pipeline.steps.items():
            profile = step.profile or pipeline.profile
            if profile is None:  # load_pipeline refuses this; kept for the type checker
                raise Invalid(f"{path}: step {step_id!r} has no profile")
            core._check_profile(profile, caller)
            profiles[step_id] = profile
            if isinstance(step, DeployStep):
                snapshots[step_id] = core.store.snapshots.put(deploy_notebook())
                continue
            notebook = str(folder / step.notebook)
            notebook_bytes = core._read_notebook(caller.name, notebook, None)
            # the step's own parameters and its inputs are its notebook's; the pipeline's
            # parameters go to every step, as papermill injects any name it is given
            try:
                core._check_parameters(notebook_bytes, step.parameters)
                declared = declared_parameters(notebook_bytes) or {}
            except (Invalid, ValueError, KeyError) as e:
                raise Invalid(f"{path}: step {step_id!r} ({notebook}): {e}") from None
            missing = sorted(set(step.inputs) - set(declared))
            if missing:
                raise Invalid(
                    f"{path}: step {step_id!r}: its inputs {', '.join(missing)} are not in "
                    f"{notebook}'s parameters cell (it declares: "
                    f"{', '.join(sorted(declared)) or 'nothing'}): add them there"
                )
            snapshots[step_id] = core.store.snapshots.put(notebook_bytes)
        return pipeline, hashlib.sha256(data).hexdigest(), snapshots, profiles

    def _check_followers(self, caller: Caller, pipeline: Pipeline, path: str) -> None:
        """An ``after_pipeline`` trigger names one of the owner's pipelines, and closes no loop."""
        follows = {
            p.name: {t["pipeline"] for t in p.triggers if t.get("kind") == "after_pipeline"}
            for p in self.core.store.pipelines.list_pipelines(caller.name)
        }
        mine = {t.pipeline for t in pipeline.triggers if t.kind == "after_pipeline"}
        for upstream in sorted(mine):
            if upstream == pipeline.name:
                raise Invalid(f"{path}: pipeline {pipeline.name!r} cannot run after itself")
            if upstream not in follows:
                raise Invalid(
                    f"{path}: an after_pipeline trigger names {upstream!r}, which is not one of "
                    "your pipelines: create it first, or fix the name"
                )
        follows[pipeline.name] = mine
        # a loop through this pipeline: from each upstream, walking what it follows
        seen: set[str] = set()
        todo = list(mine)
        while todo:
            name = todo.pop()
            if name == pipeline.name:
                raise Invalid(
                    f"{path}: its after_pipeline triggers make a loop back to "
                    f"{pipeline.name!r}: remove one"
                )
            if name not in seen:
                seen.add(name)
                todo.extend(follows.get(name, ()))

    async def create(self, caller: Caller, request: CreatePipeline) -> DescribePipeline:
        pipeline, digest, snapshots, profiles = await self._call(self._read, caller, request.path)
        await self._call(self._check_followers, caller, pipeline, request.path)
        return await self._call(
            self.core.store.pipelines.create,
            caller.name,
            request.path,
            pipeline,
            digest,
            snapshots,
            profiles,
        )

    async def update(
        self, caller: Caller, pipeline_id: str, request: UpdatePipeline
    ) -> DescribePipeline:
        store = self.core.store.pipelines
        current = await self._call(store.get, pipeline_id, caller.name, caller.admin)
        path = request.path or current.source_path
        pipeline, digest, snapshots, profiles = await self._call(self._read, caller, path)
        await self._call(self._check_followers, caller, pipeline, path)
        return await self._call(
            store.update,
            pipeline_id,
            caller.name,
            caller.admin,
            path,
            pipeline,
            digest,
            snapshots,
            profiles,
        )

    async def pause(
        self, caller: Caller, pipeline_id: str, request: PausePipeline
    ) -> DescribePipeline:
        return await self._call(
            self.core.store.pipelines.set_paused,
            pipeline_id,
            caller.name,
            caller.admin,
            request.paused,
        )

    async def list(self, caller: Caller) -> ListPipelinesResponse:
        found = await self._call(
            self.core.store.pipelines.list_pipelines, caller.name, caller.admin
        )
        return ListPipelinesResponse(pipelines=found)

    async def get(self, caller: Caller, pipeline_id: str) -> DescribePipeline:
        return await self._call(
            self.core.store.pipelines.get, pipeline_id, caller.name, caller.admin
        )

    async def delete(self, caller: Caller, pipeline_id: str) -> None:
        await self._call(self.core.store.pipelines.delete, pipeline_id, caller.name, caller.admin)

    async def run(
        self, caller: Caller, pipeline_id: str, request: CreatePipelineRun
    ) -> DescribePipelineRun:
        started = await self._call(
            self.core.store.pipelines.start,
            pipeline_id,
            caller.name,
            caller.admin,
            request.parameters,
            str(self.workspaces),
            f"run by {caller.name}",
        )
        self.core.wake()
        return started

    async def runs(self, caller: Caller, pipeline_id: str) -> ListPipelineRunsResponse:
        found = await self._call(
            self.core.store.pipelines.list_runs, pipeline_id, caller.name, caller.admin
        )
        return ListPipelineRunsResponse(runs=found)

    async def get_run(self, caller: Caller, run_id: str) -> DescribePipelineRun:
        return await self._call(
            self.core.store.pipelines.get_run, run_id, caller.name, caller.admin
        )

    async def repair(self, caller: Caller, run_id: str) -> DescribePipelineRun:
        repaired = await self._call(
            self.core.store.pipelines.repair, run_id, caller.name, caller.admin
        )
        self.core.wake()
        return repaired

    async def cancel(self, caller: Caller, run_id: str) -> DescribePipelineRun:
        cancelled = await self._call(
            self.core.store.pipelines.cancel, run_id, caller.name, caller.admin
        )
        if self.core.cancel_local is not None:
            for step in cancelled.steps:
                if step.run_id and step.run_status and step.run_status.value == "running":
                    await self.core.cancel_local(step.run_id)
        return cancelled
