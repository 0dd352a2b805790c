"""A deployment version's lineage: the chain back to the run, the pipeline and the input files.

``GET api/deployments/{name}/versions/{version}/lineage`` answers one
:class:`~.models.DescribeLineage`. The deployer keeps only the version's lineage
document (what ``%deploy`` recorded: the MLflow run, the registered model version,
the notebook, and the scheduler's run, pipeline run and step when it ran in one,
:func:`server_ext.clients.deployer.publish.scheduled_lineage`); the rest is read
where it lives:

- the registered model version and the MLflow run from the tracking service's
  MLflow REST API (``model-versions/get``, ``runs/get``, ``get-artifact`` for the
  ``%%track`` cell);
- the scheduler run, the pipeline run, its steps' files and its trigger files from
  the scheduler's REST API (``api/runs/{id}``, ``api/pipeline-runs/{id}``).

Every read is made **as the caller**: the request's own ``Authorization`` header is
forwarded, so the answer holds only what the caller may read in those services
(another user's run is a link ``missing``, never shown), and the deployer's own
token, which may read more, is never used for it. A browser request authenticated
by the hub's cookie has no token to forward: those links are ``missing`` with what
to do. The header is never logged or put in an answer (SECURITY rule 8).

Each link that cannot be resolved is null and named in ``missing`` with the
reason, so a version deployed by hand (no run) still answers, saying what is not
known. Rejected: reading the other services' databases (a service never imports
another's internals), and the deployer's token (it would show the caller runs and
pipelines they may not see).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from .models import (
    DescribeLineage,
    DescribeVersion,
    LineageFile,
    LineageLink,
    LineageMissing,
    LineageModelVersion,
    LineageNotebook,
    LineagePipelineRun,
    LineageRun,
    LineageSchedulerRun,
    LineageStep,
    LineageVersion,
)

log = logging.getLogger("shipyard.deployer.lineage")

#: ``models:/NAME/VERSION`` and ``runs:/RUN_ID/...``: what a model URI says of its origin.
_REGISTERED = re.compile(r"^models:/([^/]+)/([0-9]+)$")
_RUN_URI = re.compile(r"^runs:/([0-9a-f]{32})(?:/|$)")
#: Ids the other services use; anything else in a lineage document is not looked up.
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_SCHEDULER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: The MLflow tags a lineage shows besides params and metrics.
_TAG_PREFIXES = ("mlflow.source.", "shipyard.", "mlflow.user")
#: The most of the ``%%track`` cell a lineage carries.
MAX_CELL_BYTES = 64 * 1024


class LinkError(Exception):
    """One link could not be read; the message is the ``missing`` reason."""


@dataclass
class Upstream:
    """One service's REST API, called with the caller's ``Authorization`` header."""

    base: str
    what: str
    authorization: str | None
    timeout: float = 10.0

    async def get(self, path: str, params: dict[str, str] | None = None, raw: bool = False) -> Any:
        if not self.base:
            raise LinkError(f"the deployer has no URL of the {self.what} service")
        if not self.authorization:
            raise LinkError(
                f"read as you from the {self.what} service, which needs your hub token: call "
                "this API with 'Authorization: token <hub API token>' (a browser's login "
                "cookie cannot be passed on)"
            )
        url = f"{self.base.rstrip('/')}/{path}" + (f"?{urlencode(params)}" if params else "")
        request = HTTPRequest(
            url,
            headers={"Authorization": self.authorization, "Accept": "application/json"},
            request_timeout=self.timeout,
            follow_redirects=False,
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as e:
            if e.code in (401, 403):
                raise LinkError(
                    f"the {self.what} service refused your token ({e.code}): it needs "
                    f"access:services!service={self.what}"
                ) from None
            if e.code == 404:
                raise LinkError(
                    f"not found in the {self.what} service, or not yours to read"
                ) from None
            raise LinkError(f"the {self.what} service answered {e.code}") from None
        except OSError as e:
            raise LinkError(
                f"the {self.what} service cannot be reached ({e.strerror or e})"
            ) from None
        if raw:
            return response.body
        try:
            return json.loads(response.body)
        except ValueError:
            raise LinkError(f"the {self.what} service did not answer JSON") from None


@dataclass
class LineageResolver:
    """Follows a version's lineage document through the tracking service and the scheduler."""

    tracking_url: str
    scheduler_url: str
    timeout: float = 10.0

    async def resolve(
        self, owner: str, name: str, v: DescribeVersion, authorization: str | None
    ) -> DescribeLineage:
        """The chain of ``v``, read as the caller whose header is ``authorization``."""
        if authorization and authorization.split(" ", 1)[0].lower() not in ("token", "bearer"):
            authorization = None
        return await _Walk(
            Upstream(self.tracking_url, "tracking", authorization, self.timeout),
            Upstream(self.scheduler_url, "scheduler", authorization, self.timeout),
            DescribeLineage(
                version=LineageVersion(
                    owner=owner,
                    name=name,
                    version=v.version,
                    model_uri=v.model_uri,
                    state=v.state,
                    created_at=v.created_at,
                ),
                recorded=dict(v.lineage or {}),
            ),
        ).run()


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


@dataclass
class _Walk:
    tracking: Upstream
    scheduler: Upstream
    out: DescribeLineage
    _seen: set[str] = field(default_factory=set)

    def miss(self, link: LineageLink, reason: str) -> None:
        if link not in self._seen:
            self._seen.add(link)
            self.out.missing.append(LineageMissing(link=link, reason=reason))

    async def run(self) -> DescribeLineage:
        recorded = self.out.recorded
        await self._model_version(recorded)
        await self._mlflow_run(recorded)
        await self._scheduled(recorded)
        self._notebook(recorded)
        self._inputs()
        return self.out

    # ---------------------------------------------------------------- tracking

    async def _model_version(self, recorded: dict[str, Any]) -> None:
        name, version = (
            _text(recorded.get("registered_model")),
            _text(recorded.get("model_version")),
        )
        if not (name and version):
            match = _REGISTERED.fullmatch(self.out.version.model_uri)
            if match is None:
                self.miss(
                    "model_version",
                    "the version's model URI is not a registered model version "
                    "(models:/NAME/VERSION) and its lineage names none",
                )
                return
            name, version = match.groups()
        self.out.model_version = LineageModelVersion(name=name, version=version, run_id=None)
        try:
            answer = await self.tracking.get(
                "api/2.0/mlflow/model-versions/get", {"name": name, "version": version}
            )
        except LinkError as e:
            self.miss("model_version", f"models:/{name}/{version}: {e}")
            return
        self.out.model_version.run_id = _text(answer.get("model_version", {}).get("run_id"))

    async def _mlflow_run(self, recorded: dict[str, Any]) -> None:
        run_id = _text(recorded.get("run_id"))
        if not run_id and self.out.model_version is not None:
            run_id = self.out.model_version.run_id
        if not run_id:
            match = _RUN_URI.match(self.out.version.model_uri)
            run_id = match.group(1) if match else None
        if not run_id or not _RUN_ID.fullmatch(run_id):
            self.miss(
                "mlflow_run",
                "no MLflow run: the lineage names none and the model URI does not lead to one "
                "(a model deployed from a path, or without a run: deploy from a run, or a "
                "model trained in a %%track cell)",
            )
            return
        try:
            run = (await self.tracking.get("api/2.0/mlflow/runs/get", {"run_id": run_id}))["run"]
        except (LinkError, KeyError, TypeError) as e:
            self.miss("mlflow_run", f"run {run_id}: {e}")
            return
        data, info = run.get("data") or {}, run.get("info") or {}
        tags = {t["key"]: str(t["value"]) for t in data.get("tags") or ()}
        self.out.mlflow_run = LineageRun(
            run_id=run_id,
            experiment_id=_text(info.get("experiment_id")),
            status=_text(info.get("status")),
            params={p["key"]: str(p["value"]) for p in data.get("params") or ()},
            metrics={m["key"]: float(m["value"]) for m in data.get("metrics") or ()},
            notebook=tags.get("mlflow.source.name"),
            git_commit=tags.get("mlflow.source.git.commit"),
            git_dirty=tags.get("shipyard.git.dirty"),
            env=tags.get("shipyard.env"),
            env_digest=tags.get("shipyard.env_digest"),
            cell_source=None,
            tags={k: v for k, v in tags.items() if k.startswith(_TAG_PREFIXES)},
        )
        try:
            cell = await self.tracking.get(
                "get-artifact", {"path": "cell.py", "run_uuid": run_id}, raw=True
            )
        except LinkError:
            return  # not a %%track run: no cell to show, nothing missing
        self.out.mlflow_run.cell_source = cell[:MAX_CELL_BYTES].decode("utf-8", "replace")

    # --------------------------------------------------------------- scheduler

    async def _scheduled(self, recorded: dict[str, Any]) -> None:
        pipeline_run_id = _text(recorded.get("pipeline_run_id"))
        run_id = _text(recorded.get("scheduler_run_id"))
        step = _text(recorded.get("pipeline_step"))
        if pipeline_run_id and _SCHEDULER_ID.fullmatch(pipeline_run_id):
            try:
                prun = await self.scheduler.get(f"api/pipeline-runs/{quote(pipeline_run_id)}")
            except LinkError as e:
                self.miss("pipeline_run", f"pipeline run {pipeline_run_id}: {e}")
            else:
                self.out.pipeline_run = _pipeline_run(prun, step)
                self.out.inputs.extend(_step_files(prun))
                if not run_id and self.out.pipeline_run.step is not None:
                    run_id = self.out.pipeline_run.step.run_id
        else:
            self.miss(
                "pipeline_run",
                "the lineage names no pipeline run: the model was not deployed from a "
                "pipeline step (deploy it from a step's notebook to record one)",
            )
        if run_id and _SCHEDULER_ID.fullmatch(run_id):
            try:
                run = await self.scheduler.get(f"api/runs/{quote(run_id)}")
            except LinkError as e:
                self.miss("scheduler_run", f"scheduler run {run_id}: {e}")
                return
            self.out.scheduler_run = LineageSchedulerRun.model_validate(
                {k: run.get(k) for k in LineageSchedulerRun.model_fields if k in run}
            )
        else:
            self.miss(
                "scheduler_run",
                "the lineage names no scheduler run: the model was deployed from a notebook "
                "of a server, not from a scheduled job or pipeline",
            )

    def _notebook(self, recorded: dict[str, Any]) -> None:
        run, sched = self.out.mlflow_run, self.out.scheduler_run
        path = _text(recorded.get("notebook")) or (run.notebook if run else None)
        if sched is None and path is None:
            self.miss("notebook", "neither the lineage nor the MLflow run names a notebook")
            return
        self.out.notebook = LineageNotebook(
            path=path,
            digest=sched.notebook_digest if sched else None,
            parameters=dict(sched.parameters) if sched else {},
        )
        if sched is None:
            self.miss(
                "notebook",
                "no snapshot digest: only a scheduler run records the notebook it ran",
            )

    def _inputs(self) -> None:
        prun = self.out.pipeline_run
        if prun is None:
            self.miss("inputs", "input files are known only for a pipeline run")
            return
        parameters = prun.parameters
        paths, digests = parameters.get("trigger_paths"), parameters.get("trigger_sha256s")
        if isinstance(paths, list):
            digests = digests if isinstance(digests, list) else []
            for i, path in enumerate(paths):
                digest = digests[i] if i < len(digests) else None
                self.out.inputs.append(
                    LineageFile(path=str(path), sha256=_text(digest), source="trigger")
                )


def _step_files(prun: dict[str, Any]) -> list[LineageFile]:
    """The files the pipeline run's steps left, each with its SHA-256, in run order."""
    files = []
    for step in prun.get("steps") or ():
        for name, entry in sorted((step.get("files") or {}).items()):
            if isinstance(entry, dict) and entry.get("path"):
                files.append(
                    LineageFile(
                        path=str(entry["path"]),
                        sha256=_text(entry.get("sha256")),
                        source=f"step:{step.get('step')}/{name}",
                    )
                )
    return files


def _pipeline_run(prun: dict[str, Any], step_name: str | None) -> LineagePipelineRun:
    steps = prun.get("steps") or []
    step = next((s for s in steps if s.get("step") == step_name), None)
    run = LineagePipelineRun(
        id=prun["id"],
        pipeline_id=prun["pipeline_id"],
        pipeline_name=prun.get("pipeline_name") or "",
        status=prun.get("status") or "",
        parameters=prun.get("parameters") or {},
        created_at=prun.get("created_at"),
        ended_at=prun.get("ended_at"),
        step=(
            LineageStep(
                step=step["step"],
                status=step.get("status") or "",
                run_id=step.get("run_id"),
                outputs=step.get("outputs") or {},
            )
            if step
            else None
        ),
    )
    return run
