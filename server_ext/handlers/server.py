"""REST handlers of the server extension, all under /shipyard/api/.

Every handler is a jupyter-server ``APIHandler`` protected by ``@authorized``
(resource ``shipyard``), so it takes the same token, cookie and XSRF rules as
the rest of the server's API; tests/test_server_ext.py fails on any handler
that is not.
"""

from __future__ import annotations

import json
import os
import sys
from urllib.parse import urlsplit

import psutil
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import httpclient, web

from hub_ext.host.cgroups import describe_process

from ..clients.tracking.client import display_url

AUTH_RESOURCE = "shipyard"


def _float(name: str) -> float | None:
    value = os.environ.get(name)
    return float(value) if value else None


def _int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def current_profile() -> dict:
    """The profile, limits and environment this server was started with, and what is enforced.

    ``profile`` and ``limits`` are what the hub's spawner set; ``enforced`` is
    read from the kernel (the cgroup this very process runs in), so a user can
    see that the limits are real.
    """
    raw = os.environ.get("SHIPYARD_PROFILE_JSON")
    profile = json.loads(raw) if raw else None
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    enforced = describe_process(os.getpid())
    return {
        "user": os.environ.get("JUPYTERHUB_USER"),
        "server_name": os.environ.get("JUPYTERHUB_SERVER_NAME", ""),
        "profile": profile,
        "environment": {
            "name": os.environ.get("SHIPYARD_ENV"),
            "digest": os.environ.get("SHIPYARD_ENV_DIGEST"),
            "python": sys.executable,
            "python_version": sys.version.split()[0],
        },
        "limits": {
            "cpu_limit": _float("CPU_LIMIT"),
            "cpu_guarantee": _float("CPU_GUARANTEE"),
            "mem_limit": _int("MEM_LIMIT"),
            "mem_guarantee": _int("MEM_GUARANTEE"),
            "gpus": [g for g in gpus.split(",") if g] if gpus is not None else None,
        },
        "enforced": enforced,
        "usage": current_usage(enforced.get("mem_usage")),
        "services": services_here(),
    }


def services_here() -> dict[str, bool]:
    """The optional hub services this server was given the address of (the hub's config
    passes ``SHIPYARD_USAGE_URL`` and ``SHIPYARD_ALERTS_URL`` only when they run): the
    panel shows their sections only then."""
    return {
        "usage": bool(os.environ.get("SHIPYARD_USAGE_URL")),
        "alerts": bool(os.environ.get("SHIPYARD_ALERTS_URL")),
    }


#: The server's processes seen at the previous call, kept so that psutil's
#: ``cpu_percent`` measures the time since then (a new Process object starts at zero).
_SEEN: dict[int, psutil.Process] = {}


def current_usage(charged: int | None = None) -> dict:
    """CPU and memory in use by this server and its kernels (its process tree), right now.

    ``cpu_percent`` is the tree's CPU time since the previous call as a percentage of one
    core (0 on the first call); ``mem_bytes`` is ``charged`` (the memory charged to the
    server's cgroup, from :func:`describe_process`) where it runs in one, else the tree's
    resident memory.
    """
    try:
        me = psutil.Process()
        tree = [me, *me.children(recursive=True)]
    except psutil.Error:
        return {"cpu_percent": None, "mem_bytes": None}
    cpu, rss, alive = 0.0, 0, {}
    for proc in tree:
        known = _SEEN.get(proc.pid)
        proc = known if known is not None and known == proc else proc
        try:
            cpu += proc.cpu_percent(None)
            rss += proc.memory_info().rss
        except psutil.Error:
            continue
        alive[proc.pid] = proc
    _SEEN.clear()
    _SEEN.update(alive)
    return {"cpu_percent": round(cpu, 1), "mem_bytes": charged if charged else rss}


def owner_is_admin(user: object) -> bool:
    """Whether the hub says this server's owner is a hub admin, from the request's login.

    Inside JupyterHub the request's user carries the hub's model of the login
    (``hub_user``, which the hub gives every token, with ``admin``); it counts only when
    the login is the server's owner, since the server's forwarders call the services as
    the owner. Elsewhere (a server outside JupyterHub) there is no hub and no admin.

    Only a hint for the panel, which shows its Audit section to admins and keeps every
    other user's browser from asking: the audit service alone decides who reads the
    trail, and answers 403 to anyone else, whatever this says.
    """
    hub_user = getattr(user, "hub_user", None)
    if not isinstance(hub_user, dict):
        return False
    owner = os.environ.get("JUPYTERHUB_USER")
    return bool(owner) and hub_user.get("name") == owner and hub_user.get("admin") is True


class ProfileHandler(ExtensionHandlerMixin, APIHandler):
    """GET /shipyard/api/profile: what this server runs with, and whether its owner is an admin."""

    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    def get(self):
        self.finish(json.dumps({**current_profile(), "admin": owner_is_admin(self.current_user)}))


def _tracking_base() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if urlsplit(uri).scheme not in ("http", "https"):
        raise web.HTTPError(
            404,
            "Experiment tracking is not set up for this server: the hub's admin turns it on "
            "with SHIPYARD_TRACKING=1 (or MLFLOW_TRACKING_URI for a server of your own).",
        )
    return uri.rstrip("/")


class ExperimentsHandler(ExtensionHandlerMixin, APIHandler):
    """GET /shipyard/api/experiments: the user's most recent tracked runs, newest first.

    Asks the tracking service (MLflow's REST API) with the server's own token, so it sees
    exactly what the user may see there. ``max_results`` (1 to 100, default 20) caps the runs.
    """

    auth_resource = AUTH_RESOURCE

    async def _mlflow(self, base: str, path: str, body: dict) -> dict:
        token = os.environ.get("MLFLOW_TRACKING_TOKEN", "")
        request = httpclient.HTTPRequest(
            f"{base}/api/2.0/mlflow/{path}",
            method="POST",
            body=json.dumps(body),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            request_timeout=20,
        )
        try:
            response = await httpclient.AsyncHTTPClient().fetch(request)
        except httpclient.HTTPClientError as e:
            raise web.HTTPError(
                502, f"The tracking service answered {e.code} to {path}: try again later."
            ) from None
        except OSError as e:
            raise web.HTTPError(
                503, f"The tracking service at {display_url(base)} is not reachable ({e})."
            ) from None
        return json.loads(response.body or b"{}")

    @web.authenticated
    @authorized
    async def get(self):
        raw = self.get_argument("max_results", "20")
        if not raw.isdigit() or not 1 <= int(raw) <= 100:
            raise web.HTTPError(
                400, f"max_results must be a whole number from 1 to 100, not {raw!r}."
            )
        base = _tracking_base()
        ui = os.environ.get("SHIPYARD_TRACKING_UI_URL") or base
        ui = display_url(ui) if ui.startswith(("http://", "https://", "/")) else None
        found = await self._mlflow(base, "experiments/search", {"max_results": 1000})
        names = {e["experiment_id"]: e["name"] for e in found.get("experiments", [])}
        runs = []
        if names:
            body = {
                "experiment_ids": sorted(names),
                "max_results": int(raw),
                "order_by": ["attributes.start_time DESC"],
            }
            for run in (await self._mlflow(base, "runs/search", body)).get("runs", []):
                info, data = run["info"], run.get("data", {})
                experiment = info["experiment_id"]
                runs.append(
                    {
                        "run_id": info["run_id"],
                        "run_name": info.get("run_name") or info["run_id"][:8],
                        "experiment_id": experiment,
                        "experiment_name": names.get(experiment, experiment),
                        "status": info.get("status"),
                        "start_time": info.get("start_time"),
                        "end_time": info.get("end_time"),
                        "metrics": {m["key"]: m["value"] for m in data.get("metrics", [])},
                        "url": f"{ui}/#/experiments/{experiment}/runs/{info['run_id']}"
                        if ui
                        else None,
                    }
                )
        self.finish(json.dumps({"tracking_ui": ui, "runs": runs}))
