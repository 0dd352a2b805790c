"""Sharing with hub groups: the tag ``shipyard.groups`` grants READ to a group's members.

MLflow's permissions are per user; hub teams are groups. An owner shares an
experiment or a registered model by setting its tag ``shipyard.groups`` to a
comma-separated list of hub groups (``%share``, the MLflow UI, or any MLflow
client: setting a tag needs EDIT, so only those who may change it can share
it). Before forwarding a user's request, the gateway makes sure the user has
READ on everything shared with one of their groups, through MLflow's own
grant API; what they already have (their own MANAGE, a grant of EDIT) is never
lowered. Members who join a group later get access on their next request.

Kept in MLflow itself, the share survives restarts with MLflow's store and is
visible where the experiment is. Removing a group from the tag stops new
grants; READ already granted stays until revoked
(``/api/3.0/mlflow/users/permissions/revoke``).
"""

from __future__ import annotations

import json
import re
import time
from urllib.parse import urlencode

from tornado import httpclient

from .mlflow_auth import ADMIN_HEADER, SECRET_HEADER, USER_HEADER
from .mlflow_process import BOOTSTRAP_ADMIN

TAG = "shipyard.groups"
_SAFE_GROUP = re.compile(r"[\w.@+-]+")
_API = "/api/2.0/mlflow"
_GRANTS = "/api/3.0/mlflow/users/permissions"


def shared_with(tag_value: str | None) -> set[str]:
    return {g.strip() for g in (tag_value or "").split(",") if g.strip()}


class ShareSync:
    """Grants READ on what is shared with a user's groups.

    What each group is shared is looked up at most once per ``ttl`` (and at
    once after a share changes through the gateway, :meth:`invalidate`); each
    (user, resource) pair is checked with MLflow once.
    """

    def __init__(self, mlflow_url: str, prefix: str, secret: str, ttl: float = 30.0):
        self.base = mlflow_url + prefix
        self.secret = secret
        self.ttl = ttl
        self._groups: dict[str, tuple[float, set[tuple[str, str]]]] = {}
        self._granted: set[tuple[str, str, str]] = set()  # (user, kind, resource) checked

    def invalidate(self) -> None:
        """A share changed: look groups up again on the next request."""
        self._groups.clear()

    async def _call(self, method: str, path: str, as_user: str, body=None, admin=False) -> dict:
        request = httpclient.HTTPRequest(
            self.base + path,
            method=method,
            headers={
                SECRET_HEADER: self.secret,
                USER_HEADER: as_user,
                ADMIN_HEADER: "1" if admin else "0",
                "Content-Type": "application/json",
            },
            body=json.dumps(body) if body is not None else None,
            request_timeout=60,
        )
        response = await httpclient.AsyncHTTPClient().fetch(request)
        return json.loads(response.body or b"{}")

    async def _admin(self, method: str, path: str, body=None) -> dict:
        return await self._call(method, path, BOOTSTRAP_ADMIN, body, admin=True)

    async def _shared(self, kind: str, group: str) -> list[str]:
        """Ids (experiments) or names (models) whose tag names ``group``."""
        like = f"tags.`{TAG}` LIKE '%{group}%'"
        found, token = [], None
        while True:
            if kind == "experiment":
                body = {"filter": like, "max_results": 1000, "view_type": "ALL"}
                if token:
                    body["page_token"] = token
                page = await self._admin("POST", f"{_API}/experiments/search", body)
                items = page.get("experiments", [])
                ident = "experiment_id"
            else:
                query = {
                    "filter": like,
                    "max_results": 1000,
                    **({"page_token": token} if token else {}),
                }
                page = await self._admin(
                    "GET", f"{_API}/registered-models/search?{urlencode(query)}"
                )
                items = page.get("registered_models", [])
                ident = "name"
            for item in items:
                tags = {t["key"]: t.get("value") for t in item.get("tags", [])}
                if group in shared_with(tags.get(TAG)):  # LIKE also matches 'team2' for 'team'
                    found.append(item[ident])
            token = page.get("next_page_token")
            if not token:
                return found

    async def _resources_of(self, group: str) -> set[tuple[str, str]]:
        cached = self._groups.get(group)
        if cached and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        found = {
            (kind, r)
            for kind in ("experiment", "registered_model")
            for r in await self._shared(kind, group)
        }
        self._groups[group] = (time.monotonic(), found)
        return found

    async def sync(self, user: dict) -> None:
        """Give ``user`` READ on everything shared with their groups."""
        name = user["name"]
        # a group name goes into MLflow's filter syntax: plain names only
        groups = sorted(g for g in user.get("groups") or [] if _SAFE_GROUP.fullmatch(g))
        wanted = set()
        for group in groups:
            wanted |= await self._resources_of(group)
        todo = sorted((kind, r) for kind, r in wanted if (name, kind, r) not in self._granted)
        if not todo:
            return
        # the user must exist in MLflow's store before a grant names them
        await self._call("GET", f"{_API}/users/current", name, admin=bool(user.get("admin")))
        for kind, resource in todo:
            query = urlencode({"username": name, "resource_type": kind, "resource_id": resource})
            current = await self._admin("GET", f"{_GRANTS}/get?{query}")
            if current.get("permission", "NO_PERMISSIONS") == "NO_PERMISSIONS":
                grant = {"username": name, "resource_type": kind, "resource_id": resource}
                await self._admin("POST", f"{_GRANTS}/grant", {**grant, "permission": "READ"})
            self._granted.add((name, kind, resource))
