"""The scheduler's OpenAPI 3.1 document, generated from the pydantic models the handlers parse.

One source for the REST schema (STYLE rule 18): request and response bodies
come from the same models as the handlers and the store use, so the document
cannot drift from the code; a test checks that every route of
:func:`.handlers.routes` and every method it implements is described here,
and that the document validates as OpenAPI.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from ..common.models import ErrorResponse
from ..common.openapi import ERROR_CODES, build_document
from .api import (
    CreateJobRequest,
    ListQuotasResponse,
    LogChunk,
    MarkNotification,
    ParametersResponse,
    PreviewCronRequest,
    PreviewCronResponse,
    PreviewParametersRequest,
    PreviewParametersResponse,
    ProfilesResponse,
    ReplaceNotebookRequest,
    ReplaceNotebookResponse,
    UpcomingResponse,
    UpdateRunRequest,
    WebhookResponse,
)
from .models import (
    CreateRun,
    DescribeJob,
    DescribeNotification,
    DescribeRun,
    ListJobsQuery,
    ListJobsResponse,
    ListNotificationsQuery,
    ListNotificationsResponse,
    ListRunsQuery,
    ListRunsResponse,
    LogQuery,
    OutputQuery,
    UpcomingQuery,
    UpdateJob,
    UpdateJobResponse,
)
from .pipelines.api import (
    CreatePipeline,
    CreatePipelineRun,
    DescribePipeline,
    DescribePipelineRun,
    ListPipelineRunsResponse,
    ListPipelinesResponse,
    PausePipeline,
    UpdatePipeline,
)
from .validation import ID_PATTERN


def _id(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": ID_PATTERN},
    }


JOB_ID = _id("job_id")
PIPELINE_ID = _id("pipeline_id")
PIPELINE_RUN_ID = _id("pipeline_run_id")
RUN_ID = _id("run_id")
NOTE_ID = _id("notification_id")


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """``node`` with pydantic's local ``#/$defs/X`` references replaced by their schemas.

    A query parameter's schema stands alone in the document: a ``$defs`` reference
    there would point at nothing.
    """
    if isinstance(node, dict):
        ref = node.get("$ref", "")
        if ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {key: _inline(value, defs) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(value, defs) for value in node]
    return node


def _query(model: type[BaseModel], skip: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    return [
        {"name": name, "in": "query", "required": False, "schema": _inline(prop, defs)}
        for name, prop in schema["properties"].items()
        if name not in skip
    ]


#: (path, method) -> operation; None bodies are empty. ``auth`` False: no hub login.
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("openapi.json", "get"): {"summary": "This document.", "auth": False, "raw": "object"},
    ("health", "get"): {"summary": "Whether the service is up.", "auth": False, "raw": "object"},
    ("metrics", "get"): {
        "summary": "Prometheus metrics (hub admins, tokens with read:metrics).",
        "raw": "text/plain",
    },
    ("api/profiles", "get"): {
        "summary": "The profiles you may run jobs in.",
        "response": ProfilesResponse,
    },
    ("api/quotas", "get"): {
        "summary": "Each group quota on runs at once (c.SchedulerService.group_quotas) and its "
        "members' runs running now; hub admins and the monitors only (403 otherwise).",
        "response": ListQuotasResponse,
    },
    ("api/previews/cron", "post"): {
        "summary": "The next runs of a cron expression in a time zone, as the scheduler would "
        "fire them (its daylight-saving rule included); 400 for an expression or zone a job "
        "would not take. Saves nothing.",
        "request": PreviewCronRequest,
        "response": PreviewCronResponse,
    },
    ("api/previews/parameters", "post"): {
        "summary": "A notebook's parameters as papermill's inspector sees them, and the "
        "values typed for them read as a job would take them (a value or an error each). "
        "Saves nothing.",
        "request": PreviewParametersRequest,
        "response": PreviewParametersResponse,
    },
    ("api/jobs", "get"): {
        "summary": "Your jobs, and jobs shared with your groups.",
        "query": _query(ListJobsQuery),
        "response": ListJobsResponse,
    },
    ("api/jobs", "post"): {
        "summary": "Create a job from a snapshot of a notebook.",
        "request": CreateJobRequest,
        "response": DescribeJob,
        "status": 201,
    },
    ("api/jobs/{job_id}", "get"): {
        "summary": "One job.",
        "params": [JOB_ID],
        "response": DescribeJob,
    },
    ("api/jobs/{job_id}", "patch"): {
        "summary": "Change a job; only the fields sent change.",
        "params": [JOB_ID],
        "request": UpdateJob,
        "response": UpdateJobResponse,
    },
    ("api/jobs/{job_id}", "delete"): {
        "summary": "Delete a job and its run records.",
        "params": [JOB_ID],
        "status": 204,
    },
    ("api/jobs/{job_id}/notebook", "get"): {
        "summary": "Download the job's notebook snapshot.",
        "params": [JOB_ID],
        "raw": "application/x-ipynb+json",
    },
    ("api/jobs/{job_id}/notebook", "put"): {
        "summary": "Update the job to the notebook as it is now, and see what changed.",
        "params": [JOB_ID],
        "request": ReplaceNotebookRequest,
        "response": ReplaceNotebookResponse,
    },
    ("api/jobs/{job_id}/parameters", "get"): {
        "summary": "The parameters the job's notebook declares.",
        "params": [JOB_ID],
        "response": ParametersResponse,
    },
    ("api/jobs/{job_id}/upcoming", "get"): {
        "summary": "The next times the job's cron triggers fire.",
        "params": [JOB_ID, *_query(UpcomingQuery)],
        "response": UpcomingResponse,
    },
    ("api/jobs/{job_id}/runs", "get"): {
        "summary": "The job's runs, newest first.",
        "params": [JOB_ID, *_query(ListRunsQuery, skip=("job_id",))],
        "response": ListRunsResponse,
    },
    ("api/jobs/{job_id}/runs", "post"): {
        "summary": "Run the job now, with parameters over the job's.",
        "params": [JOB_ID],
        "request": CreateRun,
        "response": DescribeRun,
        "status": 201,
    },
    ("api/runs", "get"): {
        "summary": "Your runs, newest first.",
        "query": _query(ListRunsQuery),
        "response": ListRunsResponse,
    },
    ("api/runs/{run_id}", "get"): {
        "summary": "One run.",
        "params": [RUN_ID],
        "response": DescribeRun,
    },
    ("api/runs/{run_id}", "patch"): {
        "summary": "Cancel a run (status: cancelled).",
        "params": [RUN_ID],
        "request": UpdateRunRequest,
        "response": DescribeRun,
    },
    ("api/runs/{run_id}/log", "get"): {
        "summary": "The run's log from a byte offset, and its cell progress (poll for live logs).",
        "params": [RUN_ID, *_query(LogQuery)],
        "response": LogChunk,
    },
    ("api/runs/{run_id}/output", "get"): {
        "summary": "Download the run's output notebook (format=ipynb) or its HTML (format=html).",
        "params": [RUN_ID, *_query(OutputQuery)],
        "raw": ("application/x-ipynb+json", "text/html"),
    },
    ("api/notifications", "get"): {
        "summary": "Your notifications about your jobs' runs, newest first.",
        "query": _query(ListNotificationsQuery),
        "response": ListNotificationsResponse,
    },
    ("api/notifications/{notification_id}", "patch"): {
        "summary": "Mark a notification read.",
        "params": [NOTE_ID],
        "request": MarkNotification,
        "response": DescribeNotification,
    },
    ("api/webhooks/{job_id}", "post"): {
        "summary": "Run a job with a webhook trigger; the secret goes in X-Shipyard-Webhook-Secret.",
        "params": [
            JOB_ID,
            {
                "name": "X-Shipyard-Webhook-Secret",
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
            },
        ],
        "auth": False,
        "response": WebhookResponse,
        "status": 202,
    },
    ("api/pipelines", "get"): {
        "summary": "Your pipelines (an admin's: everyone's).",
        "response": ListPipelinesResponse,
    },
    ("api/pipelines", "post"): {
        "summary": "Create a pipeline from a pipeline.yaml in your home; 400 lists every error "
        "of the file as file:line:column.",
        "request": CreatePipeline,
        "response": DescribePipeline,
        "status": 201,
    },
    ("api/pipelines/{pipeline_id}", "get"): {
        "summary": "One pipeline, its steps in run order.",
        "params": [PIPELINE_ID],
        "response": DescribePipeline,
    },
    ("api/pipelines/{pipeline_id}", "put"): {
        "summary": "Read the pipeline's file (and notebooks) again; later runs run the new one.",
        "params": [PIPELINE_ID],
        "request": UpdatePipeline,
        "response": DescribePipeline,
    },
    ("api/pipelines/{pipeline_id}", "patch"): {
        "summary": "Pause (triggers start no run; runs by hand still do) or resume a pipeline.",
        "params": [PIPELINE_ID],
        "request": PausePipeline,
        "response": DescribePipeline,
    },
    ("api/pipelines/{pipeline_id}", "delete"): {
        "summary": "Delete a pipeline, its steps' jobs and its runs' records.",
        "params": [PIPELINE_ID],
        "status": 204,
    },
    ("api/pipelines/{pipeline_id}/runs", "get"): {
        "summary": "The pipeline's runs, newest first, each with its steps' states.",
        "params": [PIPELINE_ID],
        "response": ListPipelineRunsResponse,
    },
    ("api/pipelines/{pipeline_id}/runs", "post"): {
        "summary": "Run the pipeline now, with values for its parameters.",
        "params": [PIPELINE_ID],
        "request": CreatePipelineRun,
        "response": DescribePipelineRun,
        "status": 201,
    },
    ("api/pipeline-runs/{pipeline_run_id}", "get"): {
        "summary": "One pipeline run: every step's state, run, outputs and files.",
        "params": [PIPELINE_RUN_ID],
        "response": DescribePipelineRun,
    },
    ("api/pipeline-runs/{pipeline_run_id}", "patch"): {
        "summary": "Cancel a pipeline run (status: cancelled): pending steps are cancelled, "
        "running ones stopped.",
        "params": [PIPELINE_RUN_ID],
        "request": UpdateRunRequest,
        "response": DescribePipelineRun,
    },
    ("api/pipeline-runs/{pipeline_run_id}/repair", "post"): {
        "summary": "Repair an ended run: a new run that reruns its failed steps and what "
        "follows them, reusing what the others recorded.",
        "params": [PIPELINE_RUN_ID],
        "response": DescribePipelineRun,
        "status": 201,
    },
}


def _body_required(method: str, op: dict[str, Any]) -> bool:
    # a body whose every field may be left out may be left out itself (a run without
    # parameters, an update that changes nothing): the handlers read no body as {}
    return any(field.is_required() for field in op["request"].model_fields.values())


def build_openapi(prefix: str = "/services/scheduler/") -> dict[str, Any]:
    """Return the OpenAPI 3.1 document for a service served under ``prefix``."""
    return build_document(
        OPERATIONS,
        error_model=ErrorResponse,
        title="Shipyard scheduler",
        description=(
            "Notebook jobs run by papermill on cron, file arrival, webhooks and other jobs, "
            "as a JupyterHub service. Authenticate with a hub API token."
        ),
        prefix=prefix,
        error_codes=(*ERROR_CODES, "413"),
        body_required=_body_required,
    )
