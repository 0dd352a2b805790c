"""What a run gets in its environment from the service: its owner's run token.

A scheduled notebook that logs to MLflow, or retrains and ``%deploy`` s a model,
must act as its owner, on the owner's experiments and models, exactly as it would
from the owner's server. Before each run the service asks the hub for a token of
the owner's (``POST /users/{owner}/tokens``, which needs the service's ``tokens``
scope) that:

- carries only what a run needs (SECURITY rule 8, the narrowest scopes):
  ``access:services!service=tracking`` when tracking is on and
  ``access:services!service=deployer`` when deployment is on. It cannot reach
  the hub's API, the owner's servers, the secrets service or any other service,
  and each service acts on it as the owner, so only the owner's experiments and
  models are within reach;
- expires with the run: its lifetime is the run's timeout plus a short margin,
  and it is revoked (``DELETE /users/{owner}/tokens/{id}``) as soon as the run
  ends, so a token copied out of a notebook is worthless once the run is over.
  The expiry still holds when the service dies before it could revoke.

The run then has ``MLFLOW_TRACKING_URI``, ``MLFLOW_TRACKING_TOKEN`` and
``MLFLOW_EXPERIMENT_NAME`` (``<owner>/Default``) like a server's kernel, and,
with deployment on, ``JUPYTERHUB_API_TOKEN``, ``JUPYTERHUB_USER`` and
``SHIPYARD_DEPLOYER_URL``, which ``%deploy`` reads. What the notebook logs is
recorded on the run through ``$SHIPYARD_JOB_RESULT_FILE``. The service's own
token never reaches the run.

Rejected: one long-lived token per owner, kept by the service (a leak would
outlive every run), and the service calling the other services on the run's
behalf (the run's code would then act with the service's rights).
"""

from __future__ import annotations

import logging

from tornado.httpclient import HTTPClientError

from ..common.hubapi import HubTokens
from ..common.secrets import SecretsResolver
from .models import DescribeJob, DescribeRun

log = logging.getLogger("shipyard.scheduler.runenv")

#: Seconds a run's token outlives the run's timeout: the run's last steps (saving the
#: output, the tracking client's final flush) happen after the deadline is checked.
TOKEN_MARGIN = 120


class RunEnvironment:
    """Builds ``extra_env`` for runs and revokes their tokens (see the module docstring).

    Parameters
    ----------
    api_url : str
        The hub's API URL (``JUPYTERHUB_API_URL``).
    token : str
        The service's own hub token; it needs the ``tokens`` scope and every scope it
        hands to runs.
    tracking_url : str
        The tracking service's URL as runs reach it; empty when tracking is off.
    deployer_url : str
        The deployer service's URL as runs reach it; empty when deployment is off.
    """

    def __init__(self, api_url: str, token: str, tracking_url: str, deployer_url: str = ""):
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.tokens = HubTokens(api_url, token)
        self.tracking_url = tracking_url.rstrip("/")
        self.deployer_url = deployer_url.rstrip("/")
        #: run id -> (owner, token id) of the tokens not yet revoked
        self._issued: dict[str, tuple[str, str]] = {}

    def scopes(self) -> list[str]:
        """The scopes of a run's token: the services the run may call, nothing else."""
        scopes = []
        if self.tracking_url:
            scopes.append("access:services!service=tracking")
        if self.deployer_url:
            scopes.append("access:services!service=deployer")
        return scopes

    async def __call__(self, job: DescribeJob, run: DescribeRun) -> dict[str, str]:
        scopes = self.scopes()
        if not scopes or not self.token:
            return {}
        env: dict[str, str] = {}
        if self.tracking_url:
            env["MLFLOW_TRACKING_URI"] = self.tracking_url
            env["MLFLOW_EXPERIMENT_NAME"] = f"{job.owner}/Default"
        try:
            answer = await self.tokens.issue(
                job.owner,
                note=f"scheduled run {run.id} of job {job.name}",
                expires_in=run.timeout_seconds + TOKEN_MARGIN,
                scopes=scopes,
            )
        except (HTTPClientError, OSError) as e:
            # the run goes on without a token; what it logs or deploys fails with the
            # services' message, which the run's output shows
            log.warning("No token for run %s of %s: %s", run.id, job.owner, e)
            return env
        self._issued[run.id] = (job.owner, answer["id"])
        if self.tracking_url:
            env["MLFLOW_TRACKING_TOKEN"] = answer["token"]
        if self.deployer_url:
            env["JUPYTERHUB_API_TOKEN"] = answer["token"]
            env["JUPYTERHUB_USER"] = job.owner
            env["SHIPYARD_DEPLOYER_URL"] = self.deployer_url
        return env

    async def release(self, run_id: str) -> None:
        """Revoke the token of ``run_id``, which has ended; nothing if it had none.

        A failure is logged, not raised: the token still expires on its own.
        """
        issued = self._issued.pop(run_id, None)
        if issued is None:
            return
        owner, token_id = issued
        await self.tokens.revoke(owner, token_id, f"run {run_id}")


class RunSecrets:
    """The owner's secrets a job names, resolved for one run (apart from the run's token).

    The values come from the secrets service (``POST api/resolve``, which
    records a ``secret.use`` for the run in the audit trail) at the start of
    each run and live only in the run's :class:`~.executors.base.RunSpec`:
    they are never stored by the scheduler, and the run's log and outputs are
    scrubbed of them (:mod:`hub_ext.services.common.scrub`). A job shared
    with a group runs with its owner's secrets; members of the group see the
    names, never the values.

    Parameters
    ----------
    resolver : hub_ext.services.common.secrets.SecretsResolver
        The client of the secrets service, with the scheduler's token.
    """

    def __init__(self, resolver: SecretsResolver):
        self.resolver = resolver

    async def __call__(self, job: DescribeJob, run: DescribeRun) -> dict[str, str]:
        """The values of ``job.secrets``; raises ``SecretsUnavailable`` naming what is missing."""
        if not job.secrets:
            return {}
        return await self.resolver(
            job.owner,
            job.secrets,
            f"job {job.id} run {run.id}",
            {"job": job.id, "job_name": job.name, "run": run.id},
        )
