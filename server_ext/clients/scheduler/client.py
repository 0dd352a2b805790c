"""Scheduled notebooks from a kernel, a terminal or the server: the one client of the scheduler.

The scheduler is a hub service at ``<hub>/services/scheduler/`` (see
:mod:`hub_ext.services.scheduler`). Everything user-facing calls it through
:class:`SchedulerClient`: the magics in :mod:`server_ext.magics.jobs` (``%schedule``, ``%jobs``,
``%run_now``) and :mod:`server_ext.magics.pipelines` (``%pipeline``), the REST handlers of
:mod:`server_ext.handlers.scheduler` that forward the JupyterLab panel's calls, and
``shipyard jobs`` and ``shipyard pipeline`` in :mod:`hub_ext.cli`. So the service's errors
are translated in one place (:meth:`SchedulerClient._check`) into a
:class:`SchedulerError` whose ``str()`` is the service's own ``message``, and a service that
does not answer is reported the same way everywhere. The transport, that translation and the
URL rules below are the deployer's client's too: they live in :mod:`server_ext.clients.base`.

Where and as whom:

* the URL is ``$SHIPYARD_SCHEDULER_URL``, which the spawner sets in every server
  (``LocalProfileSpawner.scheduler_url``), else ``$JUPYTERHUB_PUBLIC_HUB_URL`` with
  ``/services/scheduler``. A URL without a path gets ``/services/scheduler`` (the prefix the
  service always serves under), so the hub-side ``SHIPYARD_SCHEDULER_URL`` (where the service
  listens, ``http://127.0.0.1:8003``) works too. Rejected alternative: deriving it from
  ``$JUPYTERHUB_API_URL``, the hub's internal address, which does not proxy services;
* the token is ``$JUPYTERHUB_API_TOKEN``, the server's own token, which the hub scopes to the
  user and to ``access:services!service=scheduler``. It travels only in the
  ``Authorization`` header: a URL with a user, password or ``token=`` in it is refused
  (SECURITY rule 8: URLs end up in logs and shell history).

Responses are returned as the service sends them, as plain dicts (its schema is
:mod:`hub_ext.services.scheduler.models`). What callers do with them lives beside this
module: the steps of ``%schedule`` and the helpers every caller needs (the notebook a kernel
runs, ``-p NAME=VALUE`` parameters, default job names, the webhook secret file) in
:mod:`server_ext.clients.scheduler.jobs`, and the text users read (times, triggers, the
table of jobs) in :mod:`server_ext.clients.scheduler.text`.

Transport is ``requests`` (in every Shipyard environment and beside the hub) with a finite
timeout on every call; redirects are not followed, since a redirect here is a login page.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, urlsplit

from ..base import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from ..base import FORWARDED_HEADERS as FORWARDED_HEADERS
from ..base import Forwarded as Forwarded
from ..base import ServiceClient, ServiceError

#: The prefix the scheduler serves under, behind the hub's proxy and on its own port alike.
SERVICE_PATH = "/services/scheduler"
#: The header that carries a job's webhook secret (the service's ``WEBHOOK_SECRET_HEADER``).
WEBHOOK_SECRET_HEADER = "X-Shipyard-Webhook-Secret"
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
#: Job names are slugs (the service's ``JobName``): at most this long.
MAX_JOB_NAME = 63
#: A name kept as it is for a job: a letter, then letters and digits in dash-separated words.
PLAIN_SLUG = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
ENDED = ("succeeded", "failed", "cancelled", "timed_out", "orphaned", "skipped")
#: A pipeline run's states once it has ended (``running`` is the only other one).
PIPELINE_ENDED = ("succeeded", "failed", "cancelled")


class SchedulerError(ServiceError):
    """A refusal or failure of the scheduler the user can act on; ``str()`` is the message.

    As :class:`~server_ext.clients.base.ServiceError`: ``message``, the HTTP ``status``
    (None when the scheduler was not reached) and the service's per-field ``errors``.
    """


def normalise_url(url: str) -> str:
    """``url`` without a trailing slash, with the service prefix when it has no path.

    Raises
    ------
    SchedulerError
        For a URL that is not http(s), or that carries a credential (a user, a password or a
        ``token=`` query): tokens go in a header, never in a URL.
    """
    return SchedulerClient.normalise_url(url)


def scheduler_url(environ: dict[str, str] | None = None) -> str:
    """Where this server reaches the scheduler; see the module docstring for the order."""
    return SchedulerClient.service_url(environ)


def path_segment(value: str) -> str:
    """An id as one quoted path segment: never a way into another route (``/``, ``..``)."""
    return SchedulerClient.path_segment(value)


def _query(params: dict[str, Any]) -> dict[str, str]:
    """Query arguments as the service parses them: no None, booleans as true/false."""
    return {
        k: ("true" if v else "false") if isinstance(v, bool) else str(v)
        for k, v in params.items()
        if v is not None
    }


class SchedulerClient(ServiceClient):
    """The scheduler's REST API, one method per call, each returning the service's JSON.

    Parameters as :class:`~server_ext.clients.base.ServiceClient`'s, ``url`` being e.g.
    ``https://hub.example.org/services/scheduler``.

    Examples
    --------
    >>> client = SchedulerClient.from_environment()  # doctest: +SKIP
    >>> [job["name"] for job in client.all_jobs()]  # doctest: +SKIP
    ['daily-report']
    """

    service = "scheduler"
    service_path = SERVICE_PATH
    url_variable = "SHIPYARD_SCHEDULER_URL"
    error = SchedulerError
    token_advice = "with --token or JUPYTERHUB_API_TOKEN"
    refused_token_advice = (
        "Restart your server from the hub to get a fresh one, or give another token."
    )
    segment_noun = "an id"

    def browser_path(self, path: str) -> str:
        """``path`` under the service as a link on the hub's origin (which the browser reaches).

        The kernel may reach the proxy at another address than the browser, so links in
        notebooks are paths, as the tracking links are.
        """
        return f"{urlsplit(self.url).path}/{path}"

    def output_link(self, run_id: str, fmt: str = "ipynb") -> str:
        """The browser's link to a run's output (it opens through the hub login)."""
        suffix = "" if fmt == "ipynb" else f"?format={quote(fmt)}"
        return self.browser_path(f"api/runs/{path_segment(run_id)}/output{suffix}")

    def output_url(self, run_id: str, fmt: str = "ipynb") -> str:
        """The full URL of a run's output, for text (a terminal, a printed line)."""
        suffix = "" if fmt == "ipynb" else f"?format={quote(fmt)}"
        return f"{self.url}/api/runs/{path_segment(run_id)}/output{suffix}"

    def webhook_url(self, job_id: str) -> str:
        """The URL that runs the job when POSTed with its secret."""
        return f"{self.url}/api/webhooks/{path_segment(job_id)}"

    # ------------------------------------------------------------ profiles

    def profiles(self) -> dict:
        """``GET api/profiles``: ``{"profiles": [{slug, display_name, ..., default}]}``."""
        return self._call("GET", "api/profiles")

    def default_profile(self, preferred: str | None = None) -> str:
        """``preferred`` when the user may use it, else the default profile, else the first."""
        profiles = self.profiles()["profiles"]
        if not profiles:
            raise SchedulerError(
                "No profile is open to you for jobs: ask your admin to add you to a group "
                "that has one."
            )
        slugs = [p["slug"] for p in profiles]
        if preferred in slugs:
            return preferred
        return next((p["slug"] for p in profiles if p["default"]), slugs[0])

    # ---------------------------------------------------------------- jobs

    def list_jobs(
        self,
        owner: str | None = None,
        name_prefix: str | None = None,
        paused: bool | None = None,
        include_shared: bool | None = None,
        limit: int | None = None,
        next_token: str | None = None,
    ) -> dict:
        """``GET api/jobs``: one page, ``{"jobs": [...], "next_token"}``."""
        params = _query(
            {
                "owner": owner,
                "name_prefix": name_prefix,
                "paused": paused,
                "include_shared": include_shared,
                "limit": limit,
                "next_token": next_token,
            }
        )
        return self._call("GET", "api/jobs", params=params)

    def all_jobs(self, **filters: Any) -> list[dict]:
        """Every job :meth:`list_jobs` finds, all pages."""
        jobs, token = [], None
        while True:
            page = self.list_jobs(**filters, limit=200, next_token=token)
            jobs.extend(page["jobs"])
            token = page.get("next_token")
            if not token:
                return jobs

    def create_job(self, body: dict) -> dict:
        """``POST api/jobs`` with a ``CreateJobRequest``; the new job (with ``webhook_secret``)."""
        return self._call("POST", "api/jobs", json=body)

    def get_job(self, job_id: str) -> dict:
        """``GET api/jobs/{id}``."""
        return self._call("GET", f"api/jobs/{path_segment(job_id)}")

    def update_job(self, job_id: str, changes: dict) -> dict:
        """``PATCH api/jobs/{id}``: only the fields in ``changes`` change.

        Returns ``{"job", "changed", "notebook_changed"}``.
        """
        return self._call("PATCH", f"api/jobs/{path_segment(job_id)}", json=changes)

    def delete_job(self, job_id: str) -> None:
        """``DELETE api/jobs/{id}``."""
        self._call("DELETE", f"api/jobs/{path_segment(job_id)}")

    def upcoming(self, job_id: str, count: int = 3) -> dict:
        """``GET api/jobs/{id}/upcoming``: ``{"times": [ISO 8601 in UTC, ...]}``."""
        return self._call(
            "GET", f"api/jobs/{path_segment(job_id)}/upcoming", params={"count": count}
        )

    def replace_notebook(
        self, job_id: str, source_path: str | None = None, notebook: dict | None = None
    ) -> dict:
        """``PUT api/jobs/{id}/notebook``: the job runs the notebook as it is now.

        With neither argument the job's own ``source_path`` is read again. Returns
        ``{"job", "changed", "notebook_changed", "diff"}``.
        """
        body: dict[str, Any] = {}
        if source_path is not None:
            body["source_path"] = source_path
        if notebook is not None:
            body["notebook"] = notebook
        return self._call("PUT", f"api/jobs/{path_segment(job_id)}/notebook", json=body)

    def job_parameters(self, job_id: str) -> dict:
        """``GET api/jobs/{id}/parameters``: ``{"has_parameters_cell", "parameters"}``."""
        return self._call("GET", f"api/jobs/{path_segment(job_id)}/parameters")

    def job_notebook(self, job_id: str) -> dict:
        """``GET api/jobs/{id}/notebook``: the job's notebook snapshot, as JSON."""
        return self._call("GET", f"api/jobs/{path_segment(job_id)}/notebook")

    # ------------------------------------------------------------ previews

    def preview_cron(
        self, expression: str, timezone: str = "UTC", count: int = 3, after: str | None = None
    ) -> dict:
        """``POST api/previews/cron``: the next runs as the scheduler would fire them.

        Returns ``{"expression", "timezone", "every_hour", "times"}`` (UTC, ISO 8601); a bad
        expression or zone raises :class:`SchedulerError` with the service's message.
        """
        body: dict[str, Any] = {"expression": expression, "timezone": timezone, "count": count}
        if after is not None:
            body["after"] = after
        return self._call("POST", "api/previews/cron", json=body)

    def preview_parameters(self, notebook: dict, values: dict[str, str] | None = None) -> dict:
        """``POST api/previews/parameters``: the notebook's parameters and each text read.

        Returns ``{"has_parameters_cell", "parameters", "values", "valid"}``; ``values``
        holds, per text sent, its JSON ``value`` or its ``error``.
        """
        return self._call(
            "POST", "api/previews/parameters", json={"notebook": notebook, "values": values or {}}
        )

    def job_named(self, name: str, owner: str | None = None) -> dict | None:
        """The job called ``name`` of ``owner`` (default: the user of the token), or None."""
        owner = owner or os.environ.get("JUPYTERHUB_USER")
        found = [
            job
            for job in self.all_jobs(name_prefix=name, include_shared=False)
            if job["name"] == name and (owner is None or job["owner"] == owner)
        ]
        return found[0] if found else None

    def find_job(self, ref: str, user: str | None = None) -> dict:
        """The job with id ``ref``, else the one called ``ref`` (yours before shared ones).

        ``OWNER/NAME`` names someone else's job, as :func:`jobs_text` shows it. ``user`` is
        whose jobs come first (default ``$JUPYTERHUB_USER``). None found is a
        :class:`SchedulerError` with status 404, as a missing id is.
        """
        if JOB_ID.fullmatch(ref):
            return self.get_job(ref)
        user = user or os.environ.get("JUPYTERHUB_USER")
        owner, _, name = ref.rpartition("/")  # job names are slugs: never a "/" in them
        named = [
            j
            for j in self.all_jobs(name_prefix=name[:MAX_JOB_NAME])
            if j["name"] == name and (not owner or j["owner"] == owner)
        ]
        mine = [j for j in named if j["owner"] == user]
        if len(mine) == 1 or len(named) == 1:
            return (mine or named)[0]
        if not named:
            raise SchedulerError(
                f"No job named {ref!r} that you can see: check the name (%jobs or "
                "`shipyard jobs list` lists them), or give the job's id.",
                404,
            )
        owners = ", ".join(sorted(j["owner"] for j in named))
        raise SchedulerError(
            f"Several jobs are named {ref!r} (owners: {owners}): give the job's id instead."
        )

    # ---------------------------------------------------------------- runs

    def run_now(self, job_id: str, parameters: dict | None = None) -> dict:
        """``POST api/jobs/{id}/runs``: queue a run; ``parameters`` override the job's."""
        body = {"parameters": parameters or {}}
        return self._call("POST", f"api/jobs/{path_segment(job_id)}/runs", json=body)

    def list_runs(
        self,
        job_id: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        next_token: str | None = None,
    ) -> dict:
        """``GET api/runs``: one page of runs, newest first, ``{"runs", "next_token"}``."""
        params = _query(
            {"job_id": job_id, "status": status, "limit": limit, "next_token": next_token}
        )
        return self._call("GET", "api/runs", params=params)

    def last_run(self, job_id: str) -> dict | None:
        """The job's newest run, or None."""
        runs = self.list_runs(job_id=job_id, limit=1)["runs"]
        return runs[0] if runs else None

    def get_run(self, run_id: str) -> dict:
        """``GET api/runs/{id}``."""
        return self._call("GET", f"api/runs/{path_segment(run_id)}")

    def cancel_run(self, run_id: str) -> dict:
        """``PATCH api/runs/{id}`` to ``cancelled``."""
        return self._call("PATCH", f"api/runs/{path_segment(run_id)}", json={"status": "cancelled"})

    def run_log(self, run_id: str, offset: int = 0) -> dict:
        """``GET api/runs/{id}/log``: the log from byte ``offset`` (a ``LogChunk``)."""
        return self._call("GET", f"api/runs/{path_segment(run_id)}/log", params={"offset": offset})

    def follow_log(
        self,
        run_id: str,
        offset: int = 0,
        interval: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Iterator[dict]:
        """Every chunk of the run's log until it has ended and all of it was read.

        Asks again at once while there is more text, else every ``interval`` seconds. Each
        chunk carries the run's ``status``, ``cells_done`` and ``cells_total`` too.
        """
        while True:
            chunk = self.run_log(run_id, offset)
            yield chunk
            if chunk["complete"]:
                return
            if chunk["next_offset"] == offset:
                sleep(interval)
            offset = chunk["next_offset"]

    def run_output(self, run_id: str, fmt: str = "ipynb") -> tuple[str, bytes]:
        """``GET api/runs/{id}/output``: the file name the service gives it, and its bytes."""
        path = f"api/runs/{path_segment(run_id)}/output"
        response = self._check(self._send("GET", path, params={"format": fmt}))
        disposition = response.headers.get("Content-Disposition", "")
        match = re.search(r'filename="([^"/\\]+)"', disposition)
        return (match.group(1) if match else f"{run_id}.{fmt}"), response.content

    # ----------------------------------------------------------- pipelines

    def list_pipelines(self) -> dict:
        """``GET api/pipelines``: ``{"pipelines": [...]}``, each a ``DescribePipeline``."""
        return self._call("GET", "api/pipelines")

    def create_pipeline(self, path: str) -> dict:
        """``POST api/pipelines``: the pipeline of the ``pipeline.yaml`` at ``path``.

        ``path`` is relative to the home. A file with errors is a 400 whose message lists
        each one as ``file:line:column: what to fix``, one per line; a name the user already
        has is a 409.
        """
        return self._call("POST", "api/pipelines", json={"path": path})

    def get_pipeline(self, pipeline_id: str) -> dict:
        """``GET api/pipelines/{id}``."""
        return self._call("GET", f"api/pipelines/{path_segment(pipeline_id)}")

    def update_pipeline(self, pipeline_id: str, path: str | None = None) -> dict:
        """``PUT api/pipelines/{id}``: read its file (or the file at ``path``) again.

        Its notebooks are read again too: later runs run them as they are now.
        """
        body = {} if path is None else {"path": path}
        return self._call("PUT", f"api/pipelines/{path_segment(pipeline_id)}", json=body)

    def delete_pipeline(self, pipeline_id: str) -> None:
        """``DELETE api/pipelines/{id}`` (a 409 while one of its runs is running)."""
        self._call("DELETE", f"api/pipelines/{path_segment(pipeline_id)}")

    def find_pipeline(self, ref: str) -> dict:
        """The pipeline with id ``ref``, else the caller's pipeline called ``ref``.

        None found is a :class:`SchedulerError` with status 404, as a missing id is.
        """
        if JOB_ID.fullmatch(ref):
            return self.get_pipeline(ref)
        named = [p for p in self.list_pipelines()["pipelines"] if p["name"] == ref]
        if len(named) == 1:
            return named[0]
        if not named:
            raise SchedulerError(
                f"No pipeline named {ref!r} that you can see: check the name (%pipeline list "
                "or `shipyard pipeline list` lists them), or give the pipeline's id.",
                404,
            )
        owners = ", ".join(sorted(p["owner"] for p in named))
        raise SchedulerError(
            f"Several pipelines are named {ref!r} (owners: {owners}): give the pipeline's id."
        )

    def run_pipeline(self, pipeline_id: str, parameters: dict | None = None) -> dict:
        """``POST api/pipelines/{id}/runs``: start a run; ``parameters`` override the file's."""
        body = {"parameters": parameters or {}}
        return self._call("POST", f"api/pipelines/{path_segment(pipeline_id)}/runs", json=body)

    def pipeline_runs(self, pipeline_id: str) -> dict:
        """``GET api/pipelines/{id}/runs``: ``{"runs": [...]}``, newest first."""
        return self._call("GET", f"api/pipelines/{path_segment(pipeline_id)}/runs")

    def get_pipeline_run(self, run_id: str) -> dict:
        """``GET api/pipeline-runs/{id}``: the run and each step's state, in run order."""
        return self._call("GET", f"api/pipeline-runs/{path_segment(run_id)}")

    def cancel_pipeline_run(self, run_id: str) -> dict:
        """``PATCH api/pipeline-runs/{id}`` to ``cancelled``: its running steps are stopped."""
        return self._call(
            "PATCH", f"api/pipeline-runs/{path_segment(run_id)}", json={"status": "cancelled"}
        )

    def repair_pipeline_run(self, run_id: str) -> dict:
        """``POST api/pipeline-runs/{id}/repair``: a new run of the failed steps and what follows.

        The steps that succeeded are reused with what they recorded; a 409 when there is
        nothing to repair (the run succeeded, or is still running).
        """
        return self._call("POST", f"api/pipeline-runs/{path_segment(run_id)}/repair")

    def follow_pipeline_run(
        self,
        run_id: str,
        interval: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Iterator[dict]:
        """The pipeline run as it is now, then again every ``interval`` seconds, to its end.

        The last one yielded has ended (its ``status`` is in :data:`PIPELINE_ENDED`).
        """
        while True:
            run = self.get_pipeline_run(run_id)
            yield run
            if run["status"] in PIPELINE_ENDED:
                return
            sleep(interval)

    # ------------------------------------------------------- notifications

    def notifications(self, unread: bool = False) -> dict:
        """``GET api/notifications``: ``{"notifications": [...]}``, newest first."""
        return self._call("GET", "api/notifications", params=_query({"unread": unread}))

    def mark_read(self, notification_id: str) -> dict:
        """``PATCH api/notifications/{id}``: mark one read."""
        return self._call(
            "PATCH", f"api/notifications/{path_segment(notification_id)}", json={"read": True}
        )
