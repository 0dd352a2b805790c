"""Scheduled notebooks from a kernel, a terminal or the server: the one client of the scheduler.

The scheduler is a hub service at ``<hub>/services/scheduler/`` (see
:mod:`hub_ext.services.scheduler`). Everything user-facing calls it through
:class:`SchedulerClient`: the magics in :mod:`server_ext.magics` (``%schedule``, ``%jobs``,
``%run_now``), the REST handlers of :mod:`server_ext.scheduler_handlers` that forward the
JupyterLab panel's calls, and ``shipyard jobs`` in :mod:`hub_ext.jobs_cli`. So the service's
errors are translated in one place (:meth:`SchedulerClient._check`) into a
:class:`SchedulerError` whose ``str()`` is the service's own ``message``, and a service that
does not answer is reported the same way everywhere. The transport, that translation and the
URL rules below are the deployer's client's too: they live in :mod:`server_ext.service_client`.

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
:mod:`hub_ext.services.scheduler.models`); this module adds only the few helpers every
caller needs: the notebook a kernel runs (:func:`current_notebook`), ``-p NAME=VALUE``
parameters (:func:`parse_parameters`), default job names (:func:`default_job_name`), the
webhook secret file (:func:`save_webhook_secret`), and a text table of jobs
(:func:`jobs_text`).

Transport is ``requests`` (in every Shipyard environment and beside the hub) with a finite
timeout on every call; redirects are not followed, since a redirect here is a login page.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .service_client import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from .service_client import FORWARDED_HEADERS as FORWARDED_HEADERS
from .service_client import Forwarded as Forwarded
from .service_client import ServiceClient, ServiceError

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


class SchedulerError(ServiceError):
    """A refusal or failure of the scheduler the user can act on; ``str()`` is the message.

    As :class:`~server_ext.service_client.ServiceError`: ``message``, the HTTP ``status``
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

    Parameters as :class:`~server_ext.service_client.ServiceClient`'s, ``url`` being e.g.
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

    # ------------------------------------------------------- notifications

    def notifications(self, unread: bool = False) -> dict:
        """``GET api/notifications``: ``{"notifications": [...]}``, newest first."""
        return self._call("GET", "api/notifications", params=_query({"unread": unread}))

    def mark_read(self, notification_id: str) -> dict:
        """``PATCH api/notifications/{id}``: mark one read."""
        return self._call(
            "PATCH", f"api/notifications/{path_segment(notification_id)}", json={"read": True}
        )


# ----------------------------------------------------------------- helpers


def current_notebook(
    explicit: str | None = None,
    namespace: dict | None = None,
    home: Path | None = None,
) -> str:
    """The notebook to schedule, as a path relative to the home (what the service reads).

    ``explicit`` (``--notebook``) is relative to the home, as the file browser shows it, or
    to the current folder, or absolute. Without it: the kernel's notebook, from IPython's
    ``__session__`` (ipykernel sets it) or ``$JPY_SESSION_NAME`` (jupyter-server sets it when
    it starts the kernel; an absolute path, or one relative to the server's root, which in
    Shipyard is the home). Both name the notebook the kernel was started for: after a rename,
    pass ``--notebook``.

    Raises
    ------
    SchedulerError
        When the notebook is unknown, missing, not an ``.ipynb``, or outside the home.
    """
    home = (home or Path.home()).resolve()
    root = Path(os.environ.get("JUPYTERHUB_ROOT_DIR") or home).expanduser()
    if explicit:
        candidates, bases = [explicit], [home, Path.cwd()]
    else:
        candidates = [
            value
            for value in ((namespace or {}).get("__session__"), os.environ.get("JPY_SESSION_NAME"))
            if isinstance(value, str) and value
        ]
        bases = [root, home]
    for value in candidates:
        path = Path(value).expanduser()
        for option in [path] if path.is_absolute() else [base / path for base in bases]:
            if option.suffix != ".ipynb" or not option.is_file():
                continue
            resolved = option.resolve()
            try:
                return resolved.relative_to(home).as_posix()
            except ValueError:
                raise SchedulerError(
                    f"{resolved} is outside your home {home}: jobs run notebooks from your "
                    "home; move or copy it there."
                ) from None
    if explicit:
        raise SchedulerError(
            f"No notebook at {explicit!r}: give the path of an .ipynb file relative to your "
            "home (as the file browser shows it), e.g. --notebook reports/daily.ipynb."
        )
    raise SchedulerError(
        "Cannot tell which notebook this kernel runs (it was not started for a notebook, or "
        "the notebook was renamed since): pass --notebook PATH, e.g. --notebook "
        "reports/daily.ipynb."
    )


def default_job_name(source_path: str) -> str:
    """The notebook's file name, lowercased, as a job name (a slug, :mod:`hub_ext.slugs` style).

    A name that already is a plain slug (``daily-report``, ``Sales`` -> ``sales``) is kept; any
    other becomes JupyterHub's ``safe_slug``, with a short hash of the name
    (``Daily Report`` -> ``daily-report-<hash>``), so that two such names never share a job.
    Names that differ only in case do share one; ``%schedule`` refuses to move a job to
    another notebook unless ``--name`` says so.
    """
    from jupyterhub.slugs import safe_slug

    stem = PurePosixPath(source_path).stem.lower()
    if len(stem) <= MAX_JOB_NAME and PLAIN_SLUG.fullmatch(stem):
        return stem
    return safe_slug(stem, max_length=MAX_JOB_NAME)


def parse_value(text: str) -> Any:
    """``text`` as a JSON literal when it is one (``3``, ``true``, ``"3"``), else the string."""

    def refuse(constant: str) -> Any:  # NaN and Infinity are not JSON: keep them as strings
        raise ValueError(constant)

    try:
        return json.loads(text, parse_constant=refuse)
    except ValueError:
        return text


def parse_parameters(items: list[str], option: str = "-p") -> dict[str, Any]:
    """``["n=3", "name=abc"]`` as ``{"n": 3, "name": "abc"}``; see :func:`parse_value`.

    Raises
    ------
    SchedulerError
        For an item without ``=``, a name that is not an identifier, or a name given twice
        with different values.
    """
    params: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise SchedulerError(
                f"{option} {item!r} has no '=': write NAME=VALUE, e.g. {option} n=3 or "
                f"{option} city=Berlin."
            )
        if not name.isidentifier():
            raise SchedulerError(
                f"{option} {item!r}: {name!r} is not a parameter name. Use a Python identifier "
                f"(letters, digits, _; not starting with a digit), e.g. {option} learning_rate=0.1."
            )
        value = parse_value(text)
        if name in params and params[name] != value:
            raise SchedulerError(
                f"{option} {name} is given twice with different values: give it once."
            )
        params[name] = value
    return params


def save_webhook_secret(job_name: str, secret: str, home: Path | None = None) -> Path:
    """Keep a webhook secret in ``~/.shipyard/webhooks/<job>.secret``, readable by the user only.

    The secret is shown once, by the service, when the webhook is made. Printed in a
    notebook it would be saved with the notebook's outputs, committed and shared; in this
    file (mode 0600 in a 0700 folder) it is not, and ``$(cat FILE)`` puts it in a request.
    """
    folder = (home or Path.home()) / ".shipyard" / "webhooks"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    path = folder / f"{job_name}.secret"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, secret.encode() + b"\n")
    finally:
        os.close(fd)
    return path


def parse_time(value: str | None) -> datetime | None:
    """An ISO 8601 time of the service (UTC, maybe with ``Z``) as an aware datetime."""
    if not value:
        return None
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def format_time(value: str | None, tz: str | None = None) -> str:
    """``2026-01-02 06:00 CET``: a service time in ``tz`` (default: this machine's zone)."""
    when = parse_time(value)
    if when is None:
        return ""
    try:
        zone = ZoneInfo(tz) if tz else None
    except (ZoneInfoNotFoundError, ValueError):
        zone = None
    return when.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z").strip()


def describe_triggers(job: dict) -> str:
    """``cron 0 6 * * * (Europe/Berlin); file data/*.csv; webhook`` for a job's triggers."""
    parts = []
    for described in job.get("triggers", []):
        trigger = described["trigger"]
        kind = trigger["kind"]
        if kind == "cron":
            parts.append(f"cron {trigger['expression']} ({trigger.get('timezone', 'UTC')})")
        elif kind == "file":
            parts.append(f"file {trigger['glob']}")
        elif kind == "after_job":
            parts.append(f"after job {trigger['upstream_job_id'][:8]}")
        else:
            parts.append(kind)
    return "; ".join(parts) or "manual only"


def cron_timezone(job: dict) -> str | None:
    """The time zone of the job's first cron trigger, to show its times in."""
    for described in job.get("triggers", []):
        if described["trigger"]["kind"] == "cron":
            return described["trigger"].get("timezone")
    return None


def next_run(job: dict) -> str | None:
    """The soonest ``next_fire_at`` of the job's triggers; None when paused or none is due."""
    if job.get("paused"):
        return None
    times = [t["next_fire_at"] for t in job.get("triggers", []) if t.get("next_fire_at")]
    return min(times, key=parse_time) if times else None


@dataclass(frozen=True)
class JobSummary:
    """What ``%jobs`` and ``shipyard jobs list`` show of a job."""

    job: dict
    last_run: dict | None

    @property
    def next_run(self) -> str | None:
        return next_run(self.job)


def job_summaries(client: SchedulerClient) -> list[JobSummary]:
    """Every job the user sees, each with its newest run."""
    return [JobSummary(job, client.last_run(job["id"])) for job in client.all_jobs()]


def jobs_text(summaries: list[JobSummary], user: str | None = None) -> str:
    """A plain-text table of jobs: name, triggers, next run, last run (its state, time and
    id: what ``shipyard jobs logs`` takes), the job's id.

    Others' jobs are named ``OWNER/NAME``, as ``find_job`` takes them.
    """
    if not summaries:
        return "No jobs yet: schedule a notebook with %schedule in it."
    rows = [("NAME", "TRIGGERS", "NEXT RUN", "LAST RUN", "LAST RUN ID", "JOB ID")]
    for item in summaries:
        job, run = item.job, item.last_run
        name = job["name"] if job["owner"] == user else f"{job['owner']}/{job['name']}"
        tz = cron_timezone(job)
        when = "paused" if job.get("paused") else format_time(item.next_run, tz)
        last, run_id = "", ""
        if run:
            last = f"{run['status']} {format_time(run['ended_at'] or run['queued_at'], tz)}"
            run_id = run["id"]
        rows.append((name, describe_triggers(job), when, last, run_id, job["id"]))
    # the ids are never cut: they are what other commands take
    widths = [min(max(len(row[i]) for row in rows), 48) for i in range(4)]
    widths.append(max(len(row[4]) for row in rows))
    return "\n".join(
        "  ".join(cell[:width].ljust(width) for cell, width in zip(row[:5], widths, strict=True))
        + "  "
        + row[5]
        for row in rows
    )
