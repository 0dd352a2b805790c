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

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from hub_ext.cgroups import describe_process

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
        "enforced": describe_process(os.getpid()),
    }


class ProfileHandler(ExtensionHandlerMixin, APIHandler):
    """GET /shipyard/api/profile: what this server runs with."""

    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    def get(self):
        self.finish(json.dumps(current_profile()))
