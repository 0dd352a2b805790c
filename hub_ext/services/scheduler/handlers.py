"""REST handlers of the scheduler service: parse, call the core, serialise.

Every handler is thin (STYLE rule 16): it parses the request into a pydantic
model, calls :class:`~.core.SchedulerCore` (which runs store calls in a thread
pool: the event loop never blocks on the database) and writes the result.
Errors are translated in one place, the services' common handler base
(:class:`hub_ext.services.common.handlers.ServiceHandler`):

- :class:`~.errors.SchedulerError` subclasses carry their status (400, 403,
  404, 409, 413);
- pydantic's ``ValidationError`` is a 400 listing each bad field;
- anything else is a 500 with the traceback logged, never sent.

Authentication is the hub's (ARCHITECTURE: identity is the hub's): an API
token (``Authorization: token ...``) or the hub's OAuth cookie for browsers.
A request without either gets a JSON 401, not a login redirect, because every
route here is an API. The only routes without a hub login are the OpenAPI
document, the health check, and the webhook, which is authenticated by its
per-job secret sent in a header (never in the URL: SECURITY rule 8).
"""

from __future__ import annotations

import json

from tornado import web

from ..common.handlers import UserServiceHandler
from ..common.web import HealthRoute, MetricsRoute, NotFoundRoute, OpenAPIRoute
from .api import (
    CreateJobRequest,
    MarkNotification,
    PreviewCronRequest,
    PreviewParametersRequest,
    ReplaceNotebookRequest,
    UpdateRunRequest,
)
from .core import SchedulerCore
from .metrics import REQUESTS
from .models import (
    CreateRun,
    ListJobsQuery,
    ListNotificationsQuery,
    ListRunsQuery,
    LogQuery,
    OutputQuery,
    UpcomingQuery,
    UpdateJob,
)
from .pipelines.api import CreatePipeline, CreatePipelineRun, PausePipeline, UpdatePipeline

#: Header that carries a job's webhook secret.
WEBHOOK_SECRET_HEADER = "X-Shipyard-Webhook-Secret"


class BaseHandler(UserServiceHandler):
    """The services' JSON handler base for hub users, for the scheduler's core."""

    #: Named in 500 answers.
    service_name = "scheduler"
    #: Counts requests by route, method and status.
    request_counter = REQUESTS
    core_setting = "scheduler"
    non_user_message = "Jobs belong to hub users; services cannot own them."

    @property
    def core(self) -> SchedulerCore:
        return self.settings[self.core_setting]


def _job_patch_action(handler: BaseHandler) -> str:
    try:
        body = json.loads(handler.request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict) and body.get("paused") is not None:
        return "job.pause" if body["paused"] else "job.resume"
    return "job.update"


class JobsHandler(BaseHandler):
    route_name = "jobs"
    audit_actions = {"POST": "job.create"}
    audit_target = "job/{result[id]}"

    async def get(self) -> None:
        caller = await self.caller()
        self.send(await self.core.list_jobs(caller, self.query(ListJobsQuery)))

    async def post(self) -> None:
        caller = await self.caller()
        request = self.parse(CreateJobRequest)
        self.send(await self.core.create_job(caller, request), 201)


class JobHandler(BaseHandler):
    route_name = "job"
    audit_actions = {"PATCH": _job_patch_action, "DELETE": "job.delete"}
    audit_target = "job/{0}"

    async def get(self, job_id: str) -> None:
        caller = await self.caller()
        self.send(await self.core.get_job(caller, job_id))

    async def patch(self, job_id: str) -> None:
        caller = await self.caller()
        self.send(await self.core.update_job(caller, job_id, self.parse(UpdateJob)))

    async def delete(self, job_id: str) -> None:
        caller = await self.caller()
        await self.core.delete_job(caller, job_id)
        self.no_content()


class JobNotebookHandler(BaseHandler):
    route_name = "job_notebook"
    audit_actions = {"PUT": "job.update"}
    audit_target = "job/{0}"

    async def get(self, job_id: str) -> None:
        caller = await self.caller()
        name, data = await self.core.job_notebook(caller, job_id)
        self.set_header("Content-Type", "application/x-ipynb+json")
        self.set_header("Content-Disposition", f'attachment; filename="{name}"')
        self.finish(data)

    async def put(self, job_id: str) -> None:
        caller = await self.caller()
        request = self.parse(ReplaceNotebookRequest)
        self.send(await self.core.replace_notebook(caller, job_id, request))


class JobParametersHandler(BaseHandler):
    route_name = "job_parameters"

    async def get(self, job_id: str) -> None:
        caller = await self.caller()
        self.send(await self.core.job_parameters(caller, job_id))


class JobUpcomingHandler(BaseHandler):
    route_name = "job_upcoming"

    async def get(self, job_id: str) -> None:
        caller = await self.caller()
        query = self.query(UpcomingQuery)
        self.send(await self.core.upcoming(caller, job_id, query.count))


class JobRunsHandler(BaseHandler):
    route_name = "job_runs"
    audit_actions = {"POST": "job.run"}
    audit_target = "job/{0}"

    async def get(self, job_id: str) -> None:
        caller = await self.caller()
        self.send(await self.core.list_runs(caller, self.query(ListRunsQuery, job_id=job_id)))

    async def post(self, job_id: str) -> None:
        caller = await self.caller()
        run = await self.core.run_now(caller, job_id, self.parse(CreateRun))
        self.audit_owner = (await self.core.get_job(caller, job_id)).owner  # a run names no owner
        self.send(run, 201)


class RunsHandler(BaseHandler):
    route_name = "runs"

    async def get(self) -> None:
        caller = await self.caller()
        self.send(await self.core.list_runs(caller, self.query(ListRunsQuery)))


class RunHandler(BaseHandler):
    route_name = "run"
    audit_actions = {"PATCH": "run.cancel"}
    audit_target = "run/{0}"

    async def get(self, run_id: str) -> None:
        caller = await self.caller()
        self.send(await self.core.get_run(caller, run_id))

    async def patch(self, run_id: str) -> None:
        caller = await self.caller()
        self.parse(UpdateRunRequest)
        self.send(await self.core.cancel_run(caller, run_id))


class RunLogHandler(BaseHandler):
    route_name = "run_log"

    async def get(self, run_id: str) -> None:
        caller = await self.caller()
        self.send(await self.core.run_log(caller, run_id, self.query(LogQuery).offset))


class RunOutputHandler(BaseHandler):
    route_name = "run_output"
    audit_actions = {"GET": "run.output_download"}
    audit_target = "run/{0}"

    async def get(self, run_id: str) -> None:
        caller = await self.caller()
        fmt = self.query(OutputQuery).format
        name, content_type, data = await self.core.run_output(caller, run_id, fmt)
        self.set_header("Content-Type", content_type)
        self.set_header("Content-Disposition", f'attachment; filename="{name}"')
        # an HTML output is the user's notebook rendered: never run it on the hub's origin
        self.set_header("Content-Security-Policy", "sandbox; frame-ancestors 'none'")
        self.finish(data)


class NotificationsHandler(BaseHandler):
    route_name = "notifications"

    async def get(self) -> None:
        caller = await self.caller()
        query = self.query(ListNotificationsQuery)
        self.send(await self.core.list_notifications(caller, query.unread))


class NotificationHandler(BaseHandler):
    route_name = "notification"

    async def patch(self, notification_id: str) -> None:
        caller = await self.caller()
        self.parse(MarkNotification)
        self.send(await self.core.mark_notification_read(caller, notification_id))


class ProfilesHandler(BaseHandler):
    route_name = "profiles"

    async def get(self) -> None:
        caller = await self.caller()
        self.send(self.core.profiles_for(caller))


class QuotasHandler(BaseHandler):
    route_name = "quotas"

    async def get(self) -> None:
        caller = await self.caller()
        self.send(await self.core.quotas(caller))


class CronPreviewHandler(BaseHandler):
    """The next runs of a cron expression in a time zone, as the scheduler would fire them.

    A POST that saves nothing: the body is a trigger as a job holds it, too structured
    for a query string, and its answer is what a job made now would do. Any hub user
    with access to the service may ask; no job is needed.
    """

    route_name = "preview_cron"

    async def post(self) -> None:
        await self.caller()
        self.send(await self.core.preview_cron(self.parse(PreviewCronRequest)))


class ParametersPreviewHandler(BaseHandler):
    """A notebook's parameters as papermill sees them, and typed values read as a job would."""

    route_name = "preview_parameters"

    async def post(self) -> None:
        caller = await self.caller()
        self.send(await self.core.preview_parameters(caller, self.parse(PreviewParametersRequest)))


class WebhookHandler(BaseHandler):
    """POST with the job's secret in ``X-Shipyard-Webhook-Secret``: no hub login."""

    route_name = "webhook"

    def get_current_user(self):  # the secret authenticates, not the hub
        return None

    async def post(self, job_id: str) -> None:
        secret = self.request.headers.get(WEBHOOK_SECRET_HEADER, "")
        self.send(await self.core.fire_webhook(job_id, secret), 202)


def _pipeline_patch_action(handler: BaseHandler) -> str:
    try:
        body = json.loads(handler.request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        body = None
    paused = isinstance(body, dict) and body.get("paused") is True
    return "pipeline.pause" if paused else "pipeline.resume"


class PipelinesHandler(BaseHandler):
    route_name = "pipelines"
    audit_actions = {"POST": "pipeline.create"}
    audit_target = "pipeline/{result[id]}"

    async def get(self) -> None:
        caller = await self.caller()
        self.send(await self.core.pipelines.list(caller))

    async def post(self) -> None:
        caller = await self.caller()
        self.send(await self.core.pipelines.create(caller, self.parse(CreatePipeline)), 201)


class PipelineHandler(BaseHandler):
    route_name = "pipeline"
    audit_actions = {
        "PUT": "pipeline.update",
        "PATCH": _pipeline_patch_action,
        "DELETE": "pipeline.delete",
    }
    audit_target = "pipeline/{0}"

    async def patch(self, pipeline_id: str) -> None:
        caller = await self.caller()
        request = self.parse(PausePipeline)
        self.send(await self.core.pipelines.pause(caller, pipeline_id, request))

    async def get(self, pipeline_id: str) -> None:
        caller = await self.caller()
        self.send(await self.core.pipelines.get(caller, pipeline_id))

    async def put(self, pipeline_id: str) -> None:
        caller = await self.caller()
        request = self.parse(UpdatePipeline)
        self.send(await self.core.pipelines.update(caller, pipeline_id, request))

    async def delete(self, pipeline_id: str) -> None:
        caller = await self.caller()
        await self.core.pipelines.delete(caller, pipeline_id)
        self.no_content()


class PipelineRunsHandler(BaseHandler):
    route_name = "pipeline_runs"
    audit_actions = {"POST": "pipeline.run"}
    audit_target = "pipeline/{0}"

    async def get(self, pipeline_id: str) -> None:
        caller = await self.caller()
        self.send(await self.core.pipelines.runs(caller, pipeline_id))

    async def post(self, pipeline_id: str) -> None:
        caller = await self.caller()
        request = self.parse(CreatePipelineRun)
        self.send(await self.core.pipelines.run(caller, pipeline_id, request), 201)


class PipelineRunHandler(BaseHandler):
    route_name = "pipeline_run"
    audit_actions = {"PATCH": "pipeline.cancel"}
    audit_target = "pipeline-run/{0}"

    async def get(self, run_id: str) -> None:
        caller = await self.caller()
        self.send(await self.core.pipelines.get_run(caller, run_id))

    async def patch(self, run_id: str) -> None:
        caller = await self.caller()
        self.parse(UpdateRunRequest)
        self.send(await self.core.pipelines.cancel(caller, run_id))


class PipelineRepairHandler(BaseHandler):
    route_name = "pipeline_repair"
    audit_actions = {"POST": "pipeline.repair"}
    audit_target = "pipeline-run/{0}"

    async def post(self, run_id: str) -> None:
        caller = await self.caller()
        self.send(await self.core.pipelines.repair(caller, run_id), 201)


class OpenAPIHandler(OpenAPIRoute, BaseHandler):
    """This service's OpenAPI document."""


class HealthHandler(HealthRoute, BaseHandler):
    """Whether the service is up."""


class MetricsHandler(MetricsRoute, BaseHandler):
    """Prometheus metrics, for hub admins (and services with a token of an admin)."""


class NotFoundHandler(NotFoundRoute, BaseHandler):
    """Unknown paths under the prefix: a JSON 404 like every other error."""


def routes(prefix: str) -> list[tuple[str, type[web.RequestHandler]]]:
    """The route table under the service prefix (``/services/scheduler/``)."""
    hex32 = r"([^/]+)"
    table = [
        ("openapi.json", OpenAPIHandler),
        ("health", HealthHandler),
        ("metrics", MetricsHandler),
        ("api/profiles", ProfilesHandler),
        ("api/quotas", QuotasHandler),
        ("api/previews/cron", CronPreviewHandler),
        ("api/previews/parameters", ParametersPreviewHandler),
        ("api/jobs", JobsHandler),
        (f"api/jobs/{hex32}", JobHandler),
        (f"api/jobs/{hex32}/notebook", JobNotebookHandler),
        (f"api/jobs/{hex32}/parameters", JobParametersHandler),
        (f"api/jobs/{hex32}/upcoming", JobUpcomingHandler),
        (f"api/jobs/{hex32}/runs", JobRunsHandler),
        ("api/runs", RunsHandler),
        (f"api/runs/{hex32}", RunHandler),
        (f"api/runs/{hex32}/log", RunLogHandler),
        (f"api/runs/{hex32}/output", RunOutputHandler),
        ("api/notifications", NotificationsHandler),
        (f"api/notifications/{hex32}", NotificationHandler),
        (f"api/webhooks/{hex32}", WebhookHandler),
        ("api/pipelines", PipelinesHandler),
        (f"api/pipelines/{hex32}", PipelineHandler),
        (f"api/pipelines/{hex32}/runs", PipelineRunsHandler),
        (f"api/pipeline-runs/{hex32}", PipelineRunHandler),
        (f"api/pipeline-runs/{hex32}/repair", PipelineRepairHandler),
    ]
    return [(prefix + path, handler) for path, handler in table]
