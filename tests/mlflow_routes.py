"""Print, as JSON, every route an MLflow server with the basic-auth app exposes.

Run in a subprocess by tests/test_tracking_policies.py (building MLflow's app
changes process-wide state): Flask's URL map and the FastAPI routes beside it,
included routers followed, as ``[method, path]`` pairs with the path
templates made concrete (``<run_id>`` and ``{name}`` become ``x``).
"""

import json
import os
import re
import sys
import tempfile

d = tempfile.mkdtemp()
with open(f"{d}/auth.ini", "w") as f:
    f.write(
        "[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{d}/auth.db\nadmin_username = a\nadmin_password = {'x' * 40}\n"
    )
os.environ.update(
    MLFLOW_AUTH_CONFIG_PATH=f"{d}/auth.ini",
    MLFLOW_FLASK_SERVER_SECRET_KEY="k",
    _MLFLOW_SERVER_FILE_STORE=f"sqlite:///{d}/m.db",
    _MLFLOW_SERVER_ARTIFACT_ROOT=f"{d}/a",
)

from mlflow.server.auth import create_app  # noqa: E402
from mlflow.server.fastapi_app import create_fastapi_app  # noqa: E402

SKIP = {"HEAD", "OPTIONS"}


def concrete(template: str) -> str:
    path = re.sub(r"<path:[^>]+>", "x/y", template)
    path = re.sub(r"<[^>]+>", "x", path)
    path = re.sub(r"\{[^}:]+:path\}", "x/y", path)
    return re.sub(r"\{[^}]+\}", "x", path)


flask_app = create_app()
routes = set()
for rule in flask_app.url_map.iter_rules():
    for method in rule.methods - SKIP:
        routes.add((method, concrete(rule.rule), rule.rule))


def walk(items, prefix=""):
    for route in items:
        kind = type(route).__name__
        if kind == "Mount":
            continue  # the Flask app, listed above
        if hasattr(route, "original_router"):
            walk(route.original_router.routes, prefix + (route.include_context.prefix or ""))
            continue
        for method in (getattr(route, "methods", None) or {"GET"}) - SKIP:
            routes.add((method, concrete(prefix + route.path), prefix + route.path))


walk(create_fastapi_app(flask_app).routes)
json.dump(sorted(routes), sys.stdout)
