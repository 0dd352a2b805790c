"""The pipelines' REST models (pydantic v2): what clients send and receive.

Like the jobs' models (:mod:`..models`), input models refuse unknown fields
and check every field with the scheduler's one rule for it (a ``pipeline.yaml``
path is a source path in the owner's home; run parameters are parameters).
The file's own content is checked by :func:`.load.load_pipeline`, whose errors
come back as one 400 listing each ``file:line:column`` and what to fix.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..models import Parameters, RunStatus, SourcePath
from .engine import RunState, StepState


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreatePipeline(_Input):
    """A pipeline from a ``pipeline.yaml`` in the owner's home."""

    path: SourcePath = Field(
        description="The pipeline file, relative to your home (e.g. churn/pipeline.yaml); "
        "its steps' notebooks are relative to its folder."
    )


class PausePipeline(_Input):
    """Pause or resume a pipeline's triggers."""

    paused: bool = Field(description="True: triggers start no run; false: they do again.")


class UpdatePipeline(_Input):
    """Read the pipeline's file again (its notebooks too): later runs run the new version."""

    path: SourcePath | None = Field(
        default=None, description="Another pipeline file; the same one when left out."
    )


class DescribeStepDefinition(BaseModel):
    """A step of a pipeline, as its file says."""

    id: str
    type: str
    notebook: str | None = None
    job_id: str | None = Field(
        default=None, description="The step's job: its runs are the step's runs."
    )
    needs: list[str]
    run_if: str
    profile: str | None = None
    outputs: dict[str, str] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict)


class DescribePipeline(BaseModel):
    """A pipeline: its file, its steps in run order, and its newest run."""

    id: str
    owner: str
    name: str
    description: str
    source_path: str
    digest: str = Field(description="sha256 of the pipeline file as it was last read.")
    parameters: dict[str, Any]
    steps: list[DescribeStepDefinition]
    triggers: list[dict[str, Any]] = Field(
        default_factory=list, description="What starts runs besides a call, as the file says."
    )
    paused: bool = Field(False, description="Triggers start no run (runs by hand still do).")
    next_fire_at: datetime | None = Field(
        default=None,
        description="When its cron triggers fire next (the earliest, UTC); null without a "
        "cron trigger. A time in the past that does not move is a tick not fired yet.",
    )
    webhook_url: str | None = Field(
        default=None,
        description="With a webhook trigger: POST here (under the service) with the secret in "
        "X-Shipyard-Webhook-Secret to start a run.",
    )
    webhook_secret: str | None = Field(
        default=None,
        description="The webhook's secret, only in the answer that made it: keep it.",
    )
    version: int
    created_at: datetime
    updated_at: datetime


class ListPipelinesResponse(BaseModel):
    pipelines: list[DescribePipeline]


class CreatePipelineRun(_Input):
    """Run a pipeline now, by hand."""

    parameters: Parameters = Field(
        default_factory=dict,
        description="Values for the pipeline's parameters (only those its file declares).",
    )


class DescribeStep(BaseModel):
    """One step of one pipeline run."""

    step: str
    status: StepState
    run_id: str | None = Field(description="The step's latest run (attempts are runs too).")
    run_status: RunStatus | None = None
    attempt: int | None = None
    reason: str
    outputs: dict[str, Any] = Field(description="The values the step recorded.")
    files: dict[str, Any] = Field(description="The files the step wrote: name -> {path, sha256}.")
    started_at: datetime | None
    ended_at: datetime | None
    duration_seconds: float | None


class DescribePipelineRun(BaseModel):
    """One run of a pipeline, with every step's state."""

    id: str
    pipeline_id: str
    pipeline_name: str
    owner: str
    status: RunState
    reason: str
    parameters: dict[str, Any]
    repair_of: str | None
    workspace: str
    created_at: datetime
    ended_at: datetime | None
    steps: list[DescribeStep] = Field(description="In the pipeline's run order.")


class ListPipelineRunsResponse(BaseModel):
    runs: list[DescribePipelineRun]
