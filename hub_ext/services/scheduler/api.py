"""The HTTP layer's own models: request bodies that carry a notebook, and small responses.

The job and run models live in :mod:`.models` (what the store takes and
returns); these wrap them for the REST API, so that the OpenAPI document
(:mod:`.openapi`) is generated from exactly what the handlers parse.

A job's notebook reaches the service one of two ways, never both:

- ``source_path``: a path relative to the owner's home, read by the service
  through the one path resolver (:mod:`.paths`); what ``%schedule`` and the
  panel send on one machine;
- ``notebook``: the ``.ipynb`` document itself, as JSON; what a client sends
  where the service cannot see the home (Kubernetes), and what scripts send.
"""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, model_validator
from pydantic_core import PydanticCustomError

from .models import CreateJob, CronTrigger, SourcePath, Whole
from .notebooks import NOTEBOOK_SCHEMA, notebook_problem
from .validation import MAX_PARAMETERS_BYTES, bounded


def _check_notebook(value: dict[str, Any]) -> dict[str, Any]:
    problem = notebook_problem(value)
    if problem is not None:
        raise PydanticCustomError("notebook", "not a Jupyter notebook that can run: " + problem)
    return value


#: An inline notebook: checked to be one that can run (:data:`.notebooks.NOTEBOOK_SCHEMA`,
#: also its schema in the OpenAPI document), kept as sent.
Notebook = Annotated[
    dict[str, Any],
    AfterValidator(_check_notebook),
    Field(json_schema_extra=lambda schema: schema.update(copy.deepcopy(NOTEBOOK_SCHEMA))),
]


class CreateJobRequest(CreateJob):
    """A new job: its settings, and the notebook by ``source_path`` or inline ``notebook``."""

    notebook: Notebook | None = Field(
        default=None, description="The .ipynb document (JSON); else read from source_path."
    )

    @model_validator(mode="after")
    def _one_notebook(self) -> CreateJobRequest:
        if self.notebook is None and self.source_path is None:
            raise ValueError(
                "send the notebook: 'source_path' (relative to your home, e.g. "
                "'reports/daily.ipynb') or 'notebook' (the .ipynb document)"
            )
        return self


class ReplaceNotebookRequest(BaseModel):
    """Update a job to the notebook as it is now: re-read ``source_path``, or take ``notebook``.

    With neither, the job's own ``source_path`` is read again.
    """

    model_config = ConfigDict(extra="forbid")

    source_path: SourcePath | None = None
    notebook: Notebook | None = None
    expected_version: Whole | None = None


class ReplaceNotebookResponse(BaseModel):
    """The job after the update, and what changed in the notebook's cells."""

    job: Any
    changed: list[str]
    notebook_changed: bool
    #: A unified diff of the cell sources, old to new (empty: only outputs or metadata changed).
    diff: str


class UpdateRunRequest(BaseModel):
    """The one change a user makes to a run: cancel it."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["cancelled"]


class LogChunk(BaseModel):
    """Part of a run's log from ``offset``; ask again from ``next_offset`` while not complete."""

    text: str
    offset: int
    next_offset: int
    #: True when the run has ended and nothing follows ``next_offset``.
    complete: bool
    status: str
    cells_done: int | None = None
    cells_total: int | None = None


class UpcomingResponse(BaseModel):
    """The next times the job's cron triggers fire, soonest first, in UTC."""

    times: list[datetime]


class ParameterInfo(BaseModel):
    """A parameter the notebook declares in its ``parameters`` cell."""

    name: str
    #: What values it takes: ``int``, ``float``, ``str``, ``bool``, ``list``, ``tuple``,
    #: ``dict``, or null for any (no annotation and a default that is an expression).
    type: str | None
    #: The default's source text, as papermill's inspector reports it.
    default: str | None
    #: The comment after the assignment.
    help: str
    text: str | None = Field(
        default=None,
        description="The default as an input shows it, and as typed reads back to it: a str "
        "parameter's string without quotes, any other default as written.",
    )


class ParametersResponse(BaseModel):
    """What the job's notebook snapshot declares; ``has_parameters_cell`` false: takes none."""

    has_parameters_cell: bool
    parameters: list[ParameterInfo]


#: Most next run times a cron preview lists (as a job's ``upcoming`` does).
MAX_PREVIEW_TIMES = 50
#: The years a preview may start in.
PREVIEW_YEARS = (1970, 2999)


class PreviewCronRequest(CronTrigger):
    """A cron trigger as a job would hold it, and how many of its next runs to list.

    Checked by the very model a job's trigger is (:class:`.models.CronTrigger`): what
    the preview accepts, a job accepts, with the same message for what it refuses.
    """

    count: Annotated[
        Whole,
        bounded(1, MAX_PREVIEW_TIMES, "count"),
        Field(json_schema_extra={"minimum": 1, "maximum": MAX_PREVIEW_TIMES}),
    ] = 3
    after: datetime | None = Field(
        default=None,
        description="List the runs after this instant (with its UTC offset); now when left "
        "out. A preview of a daylight-saving change ahead, for instance.",
    )

    @model_validator(mode="after")
    def _aware(self) -> PreviewCronRequest:
        if self.after is None:
            return self
        if self.after.utcoffset() is None:
            raise ValueError(
                "after must carry its UTC offset (e.g. '2026-03-29T00:00:00Z'), or the "
                "instant it names depends on the machine's zone"
            )
        if not PREVIEW_YEARS[0] <= self.after.astimezone(timezone.utc).year <= PREVIEW_YEARS[1]:
            # the calendar arithmetic ends at the year 9999; a preview has no use for either end
            raise ValueError(
                f"after must be in the years {PREVIEW_YEARS[0]} to {PREVIEW_YEARS[1]}, "
                f"not {self.after.isoformat()}"
            )
        return self


class PreviewCronResponse(BaseModel):
    """When the trigger runs next, in UTC, as the scheduler will fire it (DST rule included)."""

    #: The expression as a job stores it (spaces normalised).
    expression: str
    timezone: str
    #: Whether the hour field is ``*``: such a job keeps firing by elapsed time in both
    #: copies of an hour that clocks go back over; any other runs a wall-clock time once.
    every_hour: bool
    times: list[datetime]


#: A value as typed: text, at most the parameters' own bound.
ParameterText = Annotated[str, Field(max_length=MAX_PARAMETERS_BYTES)]


class PreviewParametersRequest(BaseModel):
    """A notebook, and optionally the text a user typed for some of its parameters."""

    model_config = ConfigDict(extra="forbid")

    notebook: Notebook = Field(description="The .ipynb document (JSON).")
    values: dict[str, ParameterText] = Field(
        default_factory=dict,
        description="Text typed per parameter name (a panel input, '-p name=value'), read "
        "as the parameter's declared type. A name that is not one is answered with its "
        "error among the values, as a bad value is, not refused.",
    )


class ParameterValue(BaseModel):
    """The value a typed text stands for, or why it is not one the job would accept."""

    name: str
    text: str
    #: The value as JSON (what a job's ``parameters`` takes); null with an error.
    value: Any = None
    #: What is wrong with the text, for this parameter; null when it is a valid value.
    error: str | None = None


class PreviewParametersResponse(ParametersResponse):
    """The notebook's parameters as papermill's inspector sees them, and each typed value read.

    ``parameters`` lists the declared parameters; ``values`` answers each text sent, in
    the order sent, with its value or its error; ``valid`` is true when none has one.
    """

    values: list[ParameterValue]
    valid: bool


class ProfileInfo(BaseModel):
    """A profile open to the caller; ``available`` false: this machine cannot run it (why)."""

    slug: str
    display_name: str
    description: str
    environment: str
    default: bool
    available: bool = Field(
        default=True,
        description="False when this machine cannot run the profile (a GPU profile "
        "without a GPU): a job asking for it is refused with 409.",
    )
    unavailable_reason: str | None = Field(
        default=None,
        description="Why it is not available, e.g. 'no GPU on this machine'; null when it is.",
    )


class ProfilesResponse(BaseModel):
    """The profiles open to the caller's groups, each saying whether this machine can run it."""

    profiles: list[ProfileInfo]


class DescribeGroupQuota(BaseModel):
    """One group's quota on runs at once (``c.SchedulerService.group_quotas``), and its use."""

    group: str
    limit: int = Field(description="Most runs the group's members may have running at once.")
    running: int = Field(
        description="Runs of the group's members running now (a member in several groups "
        "counts in each)."
    )


class ListQuotasResponse(BaseModel):
    """Every group quota on runs, by group name; empty when none is configured."""

    quotas: list[DescribeGroupQuota]


class WebhookResponse(BaseModel):
    """What a webhook call queued (no more: the caller holds a secret, not a hub login)."""

    run_id: str
    status: str


class MarkNotification(BaseModel):
    """Mark a notification read."""

    model_config = ConfigDict(extra="forbid")

    read: Annotated[StrictBool, Field(json_schema_extra={"const": True})]

    @model_validator(mode="after")
    def _only_read(self) -> MarkNotification:
        if self.read is not True:
            raise ValueError("read must be true: a notification cannot be marked unread")
        return self
