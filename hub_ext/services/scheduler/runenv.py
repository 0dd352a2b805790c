"""What a run gets in its environment from the service: its owner's tracking credentials.

A scheduled notebook that logs to MLflow must log as its owner, into the
owner's experiments, exactly as it would from the owner's server. The service
asks the hub for a token of the owner's (``POST /users/{owner}/tokens``, which
needs the service's ``tokens`` scope) that:

- grants nothing but ``access:services!service=tracking`` (SECURITY rule 8:
  the narrowest scope; the token cannot reach the hub's API, the owner's
  servers or other services);
- expires shortly after the run's timeout, so a token copied out of a
  notebook is soon worthless.

The run then has ``MLFLOW_TRACKING_URI``, ``MLFLOW_TRACKING_TOKEN`` and
``MLFLOW_EXPERIMENT_NAME`` (``<owner>/Default``) like a server's kernel, and
what it logs is recorded on the run through ``$SHIPYARD_JOB_RESULT_FILE``.
The service's own token never reaches the run.
"""

from __future__ import annotations

import json
import logging

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from .models import DescribeJob, DescribeRun

log = logging.getLogger("shipyard.scheduler.runenv")

#: Seconds a run's tracking token outlives the run's timeout.
TOKEN_MARGIN = 600


class RunEnvironment:
    """Builds ``extra_env`` for runs (see the module docstring)."""

    def __init__(self, api_url: str, token: str, tracking_url: str):
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.tracking_url = tracking_url.rstrip("/")

    async def __call__(self, job: DescribeJob, run: DescribeRun) -> dict[str, str]:
        if not self.tracking_url or not self.token:
            return {}
        env = {
            "MLFLOW_TRACKING_URI": self.tracking_url,
            "MLFLOW_EXPERIMENT_NAME": f"{job.owner}/Default",
        }
        body = {
            "note": f"scheduled run {run.id} of job {job.name}",
            "expires_in": run.timeout_seconds + TOKEN_MARGIN,
            "scopes": ["access:services!service=tracking"],
        }
        request = HTTPRequest(
            f"{self.api_url}/users/{job.owner}/tokens",
            method="POST",
            body=json.dumps(body),
            headers={"Authorization": f"token {self.token}"},
            request_timeout=10,
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
        except (HTTPClientError, OSError) as e:
            # the run goes on without tracking; what it logs fails with MLflow's message
            log.warning("No tracking token for run %s of %s: %s", run.id, job.owner, e)
            return env
        env["MLFLOW_TRACKING_TOKEN"] = json.loads(response.body)["token"]
        return env
