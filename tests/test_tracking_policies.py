"""Default deny: every route MLflow exposes has an explicit policy in the tracking gateway."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hub_ext.services.tracking.policies import NO_RULE, RULES, Access, decide


@pytest.fixture(scope="module")
def mlflow_routes() -> list[tuple[str, str, str]]:
    """[method, concrete path, template] of the MLflow server with its basic-auth app."""
    out = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("mlflow_routes.py"))],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return [tuple(r) for r in json.loads(out.stdout)]


def test_every_mlflow_route_has_a_policy(mlflow_routes):
    assert len(mlflow_routes) > 300, "the route listing found too little: is MLflow's app built?"
    unruled = [f"{m} {t}" for m, p, t in mlflow_routes if decide(m, p) is NO_RULE]
    assert not unruled, (
        "MLflow routes without a policy (add them to policies.RULES):\n" + "\n".join(unruled)
    )


def test_the_routes_that_matter_are_listed(mlflow_routes):
    """The listing covers REST, ajax-api, artifact upload/download/multipart and GraphQL."""
    paths = {(m, t) for m, _, t in mlflow_routes}
    for method, template in [
        ("POST", "/api/2.0/mlflow/runs/log-batch"),
        ("POST", "/ajax-api/2.0/mlflow/runs/search"),
        ("GET", "/api/2.0/mlflow-artifacts/artifacts/<path:artifact_path>"),
        ("PUT", "/api/2.0/mlflow-artifacts/artifacts/<path:artifact_path>"),
        ("POST", "/api/2.0/mlflow-artifacts/mpu/create/<path:artifact_path>"),
        ("POST", "/graphql"),
        ("POST", "/api/2.0/mlflow/users/create"),
    ]:
        assert (method, template) in paths, f"{method} {template} is not in the listing"


@pytest.mark.parametrize(
    "method, path, access",
    [
        ("POST", "/api/2.0/mlflow/runs/log-batch", Access.MLFLOW),
        ("GET", "/ajax-api/2.0/mlflow/experiments/get", Access.MLFLOW),
        ("PUT", "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/m.pkl", Access.MLFLOW),
        ("POST", "/api/2.0/mlflow/users/create", Access.DENY),
        ("PATCH", "/ajax-api/2.0/mlflow/users/update-admin", Access.DENY),
        ("PATCH", "/api/2.0/mlflow/users/update-password", Access.DENY),
        ("GET", "/api/2.0/mlflow/users/list", Access.ADMIN),
        ("POST", "/api/3.0/mlflow/users/permissions/grant", Access.MLFLOW),
        ("GET", "/api/3.0/mlflow/gateway/secrets/list", Access.ADMIN),
        ("POST", "/gateway/openai/v1/chat/completions", Access.ADMIN),
        ("POST", "/api/2.0/mlflow/webhooks", Access.ADMIN),
        ("GET", "/api/3.0/mlflow/skills/reviewer/versions/2", Access.MLFLOW),
        ("POST", "/ajax-api/3.0/mlflow/skills/reviewer/aliases", Access.MLFLOW),
        ("DELETE", "/api/3.0/mlflow/skills/@team/reviewer", Access.MLFLOW),
        ("POST", "/api/3.0/mlflow/skills/reviewer/versions", Access.ADMIN),
        ("POST", "/api/3.0/mlflow/skills/@team/reviewer/versions", Access.ADMIN),
        ("POST", "/ajax-api/3.0/mlflow/skills/bulk-register", Access.ADMIN),
        ("GET", "/signup", Access.DENY),
        ("GET", "/api/2.0/mlflow/never-heard-of-it", Access.DENY),
        ("DELETE", "/", Access.DENY),
        ("GET", "/../etc/passwd", Access.DENY),
    ],
)
def test_decisions(method, path, access):
    assert decide(method, path).access is access


def test_unknown_routes_are_refused_with_a_reason():
    assert decide("GET", "/api/9.9/mlflow/new-thing") is NO_RULE
    assert NO_RULE.access is Access.DENY and "no policy" in NO_RULE.why


def test_every_rule_says_why():
    # reasons are shown to users after "Not offered by Shipyard: " and end with a period there
    assert all(rule.why.strip() and not rule.why.endswith(".") for rule in RULES)
    assert len({rule.pattern.pattern + str(rule.methods) for rule in RULES}) == len(RULES)
