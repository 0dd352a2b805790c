"""Which MLflow routes the tracking gateway forwards, and to whom: default deny.

Every request through ``/services/tracking/`` is already authenticated by the
hub. Then the first rule here whose pattern matches the path (the service
prefix removed) and whose methods include the request's decides:

- ``MLFLOW``: forwarded; MLflow's own permission checks (basic-auth app,
  ``default_permission = NO_PERMISSIONS``) decide per experiment, run and model;
- ``ADMIN``: forwarded for hub admins only (server-wide settings, secrets, users);
- ``DENY``: never forwarded; the reason is the answer's message.

A path that matches no rule is refused (403). ``tests/test_tracking_policies.py``
lists every route the MLflow server exposes (Flask and FastAPI, REST, ajax-api,
artifact upload, download and multipart, GraphQL) and fails if one has no rule,
so an MLflow upgrade that adds routes cannot slip past unreviewed.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class Access(enum.Enum):
    MLFLOW = "mlflow"
    ADMIN = "admin"
    DENY = "deny"


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern
    methods: frozenset[str] | None  # None: every method
    access: Access
    why: str

    def matches(self, method: str, path: str) -> bool:
        return (self.methods is None or method in self.methods) and bool(
            self.pattern.fullmatch(path)
        )


_API = r"/(?:ajax-)?api/[23]\.0/mlflow"


def _rule(pattern: str, access: Access, why: str, methods: str | None = None) -> Rule:
    return Rule(
        re.compile(pattern.replace("{API}", _API)),
        frozenset(methods.split()) if methods else None,
        access,
        why,
    )


M, A, D = Access.MLFLOW, Access.ADMIN, Access.DENY

RULES: tuple[Rule, ...] = (
    # --- the UI and what it loads
    _rule(r"/?", M, "the MLflow UI", "GET"),
    _rule(r"/(?:static-files|build)/.+", M, "the MLflow UI's files", "GET"),
    _rule(r"/(?:health|version)", M, "server health and version", "GET"),
    _rule(r"/signup", D, "accounts come from the hub: there is no MLflow sign-up"),
    # --- identity is the hub's: MLflow accounts are made by Shipyard, never by users
    _rule(
        r"{API}/users/(?:create|create-ui|update-password|delete)",
        D,
        "MLflow accounts follow hub accounts; manage users on the hub",
    ),
    _rule(r"{API}/users/update-admin", D, "admins are the hub's admins; change them on the hub"),
    _rule(r"{API}/users/(?:current|current/permissions)", M, "who you are", "GET"),
    _rule(r"{API}/users/(?:get|list)", A, "user directory"),
    # sharing: MLflow lets whoever has MANAGE on an experiment or model grant and
    # revoke it, and lets users see their own grants (admins see all)
    _rule(
        r"{API}/users/(?:permissions/(?:grant|revoke|get|list)|roles/list)",
        M,
        "grants (MLflow checks MANAGE on the resource)",
    ),
    _rule(r"{API}/roles(?:/.*)?", A, "server-wide roles"),
    # --- what scientists work with; MLflow checks each object's permission
    _rule(r"{API}/experiments(?:/.*)?", M, "experiments (owner: MANAGE)"),
    _rule(r"/(?:ajax-)?api/2\.0mlflow/experiments/search-datasets", M, "datasets of experiments"),
    _rule(r"{API}/runs(?:/.*)?", M, "runs (by their experiment's permission)"),
    _rule(r"{API}/metrics(?:/.*)?", M, "metrics (by their run)"),
    _rule(r"{API}/artifacts(?:/.*)?", M, "artifact listings (by their run)"),
    _rule(r"{API}/upload-artifact", M, "artifact upload (by its run)"),
    _rule(r"{API}/get-trace-artifact", M, "trace data (by its experiment)"),
    _rule(
        r"/(?:ajax-)?api/2\.0/mlflow-artifacts/(?:artifacts|mpu|presigned)(?:/.*)?",
        M,
        "proxied artifacts: MLflow checks the experiment the path names",
    ),
    _rule(r"/(?:get-artifact|model-versions/get-artifact)", M, "artifact download", "GET"),
    _rule(r"{API}/registered-models(?:/.*)?", M, "registered models (owner: MANAGE)"),
    _rule(r"{API}/model-versions(?:/.*)?", M, "model versions (by their model)"),
    _rule(r"{API}/logged-models(?:/.*)?", M, "logged models (by their experiment)"),
    _rule(r"{API}/(?:traces|unified-traces|get-online-trace-details)(?:/.*)?", M, "traces"),
    _rule(r"{API}/datasets(?:/.*)?", M, "evaluation datasets (by their experiment)"),
    _rule(r"{API}/(?:scorer|scorers)(?:/.*)?", M, "scorers (by their experiment)"),
    _rule(r"{API}/(?:label-schemas|issues|review-queues)(?:/.*)?", M, "trace review"),
    # agent skills: a new version's content is fetched by the server from a git, OCI or
    # zip URL (or uploaded), so registering is for admins; the rest is checked per skill
    _rule(
        r"{API}/skills/(?:bulk-register|(?:@[^/]+/)?[^/@][^/]*/versions)",
        A,
        "registering a skill version makes the server fetch its content from a URL",
        "POST",
    ),
    _rule(r"{API}/skills(?:/.*)?", M, "agent skills (MLflow checks each skill's permission)"),
    _rule(r"{API}/prompt-optimization(?:/.*)?", M, "prompt optimization jobs"),
    _rule(r"{API}/jobs(?:/.*)?", M, "background jobs (MLflow checks their owner)"),
    _rule(r"/graphql", M, "the UI's GraphQL (MLflow's GraphQL authorization is on)"),
    _rule(r"{API}/(?:server-info|ui-telemetry)", M, "server capabilities for the UI"),
    # --- server-wide: secrets, outbound calls, tenancy
    _rule(r"{API}/gateway(?:/.*)?", A, "the AI gateway holds provider secrets"),
    _rule(r"/(?:ajax-)?api/2\.0/mlflow/gateway-proxy", A, "outbound calls to model providers"),
    _rule(r"{API}/genai(?:/.*)?", A, "GenAI judges call external providers"),
    _rule(r"{API}/webhooks(?:/.*)?", A, "webhooks call URLs from the server"),
    _rule(r"{API}/workspaces(?:/.*)?", A, "workspaces are server-wide"),
    _rule(r"{API}/mcp-servers(?:/.*)?", A, "MCP servers connect the server to outside tools"),
    _rule(r"/gateway/.+", A, "AI gateway calls use the providers' stored keys"),
    _rule(r"{API}/demo(?:/.*)?", D, "demo data is not offered"),
    _rule(r"{API}/assistant(?:/.*)?", D, "MLflow's assistant runs an AI agent on the server"),
    _rule(r"/(?:ajax-)?api/3\.0/jobs(?:/.*)?", D, "MLflow's background jobs are turned off"),
    _rule(r"/v1/traces", D, "OpenTelemetry ingestion is not offered; log traces with mlflow"),
)


@dataclass(frozen=True)
class Decision:
    access: Access
    why: str


NO_RULE = Decision(Access.DENY, "this MLflow route has no policy in Shipyard, so it is refused")


def decide(method: str, path: str) -> Decision:
    """The policy for ``method`` on ``path`` (the service prefix already removed)."""
    for rule in RULES:
        if rule.matches(method, path):
            return Decision(rule.access, rule.why)
    return NO_RULE
