"""What the alerts service reads: the hub's users and their servers, the scheduler's jobs,
pipelines and group quotas, the deployer's models, the usage service's idle servers.

Through the services' own REST APIs with the alerts service's hub token,
which they accept for reading as a *monitor* (``c.SchedulerService.monitors``,
``c.DeployerService.monitors``, ``c.UsageService.monitors``): the same answers a user's panel gets, so the
rules never depend on another service's tables or internals.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPRequest


class SourceError(Exception):
    """A source did not answer; the rules that need it are not evaluated this time."""


class Sources:
    """REST reads with the service's token; each method raises :class:`SourceError`."""

    def __init__(
        self,
        hub_api_url: str,
        token: str,
        scheduler_url: str = "",
        deployer_url: str = "",
        usage_url: str = "",
        timeout: float = 20.0,
    ):
        self.hub_api_url = hub_api_url.rstrip("/")
        self.token = token
        self.scheduler_url = scheduler_url.rstrip("/")
        self.deployer_url = deployer_url.rstrip("/")
        self.usage_url = usage_url.rstrip("/")
        self.timeout = timeout

    async def _get(self, url: str, params: dict[str, Any] | None = None) -> Any:
        if params:
            url += "?" + urlencode({k: v for k, v in params.items() if v is not None})
        request = HTTPRequest(
            url,
            headers={"Authorization": f"token {self.token}"},
            request_timeout=self.timeout,
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
            return json.loads(response.body)
        except Exception as e:
            raise SourceError(f"GET {url.split('?')[0]}: {e}") from None

    async def users(self) -> list[str]:
        """Every hub user's name (``list:users``), page by page."""
        names: list[str] = []
        offset = 0
        while True:
            page = await self._get(
                f"{self.hub_api_url}/users", {"offset": offset, "limit": 200, "state": ""}
            )
            names += [u["name"] for u in page]
            if len(page) < 200:
                return names
            offset += len(page)

    async def active_users(self) -> list[dict]:
        """The hub's users with a server running or starting (``read:servers``), page by page.

        Each with its ``groups`` and ``servers`` (name -> server model with its
        ``user_options``): what the profiles' quotas count.
        """
        users: list[dict] = []
        offset = 0
        while True:
            page = await self._get(
                f"{self.hub_api_url}/users", {"offset": offset, "limit": 200, "state": "active"}
            )
            users += page
            if len(page) < 200:
                return users
            offset += len(page)

    async def group_quotas(self) -> list[dict]:
        """The scheduler's group quotas on runs and their use (``DescribeGroupQuota``)."""
        answer = await self._get(f"{self.scheduler_url}/api/quotas")
        return answer["quotas"]

    async def deployments(self, owner: str) -> list[dict]:
        answer = await self._get(f"{self.deployer_url}/api/deployments", {"owner": owner})
        return answer["deployments"]

    async def deployment_metrics(self, owner: str, name: str) -> dict:
        return await self._get(
            f"{self.deployer_url}/api/deployments/{quote(name)}/metrics", {"owner": owner}
        )

    async def jobs(self, owner: str) -> list[dict]:
        jobs: list[dict] = []
        token = None
        while True:
            answer = await self._get(
                f"{self.scheduler_url}/api/jobs",
                {"owner": owner, "include_shared": "false", "limit": 200, "next_token": token},
            )
            jobs += answer["jobs"]
            token = answer.get("next_token")
            if not token:
                return jobs

    async def runs(self, job_id: str, limit: int = 5) -> list[dict]:
        answer = await self._get(
            f"{self.scheduler_url}/api/runs", {"job_id": job_id, "limit": limit}
        )
        return answer["runs"]

    async def pipelines(self) -> list[dict]:
        """Every user's pipelines (the scheduler lists all of them to an admin or a monitor)."""
        answer = await self._get(f"{self.scheduler_url}/api/pipelines")
        return answer["pipelines"]

    async def pipeline_runs(self, pipeline_id: str) -> list[dict]:
        answer = await self._get(f"{self.scheduler_url}/api/pipelines/{quote(pipeline_id)}/runs")
        return answer["runs"]

    async def idle_servers(self) -> list[dict]:
        """Every user's idle live servers (``IdleServer``: owner, object, gpus, idle_hours).

        The usage service lists a server once it has been idle for its own
        ``c.UsageService.idle_after``; ``days=1`` keeps its right-sizing part,
        which the rules do not read, small.
        """
        answer = await self._get(f"{self.usage_url}/api/usage/waste", {"days": 1})
        return answer["idle"]
