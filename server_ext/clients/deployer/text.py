"""What users see of their deployments: the table of versions, the endpoint and how to call it.

``%deployments`` (:mod:`server_ext.magics.deploy`, with the widget of
:mod:`server_ext.magics.widgets`), ``shipyard models`` (:mod:`hub_ext.cli.models`) and the
end of ``%deploy`` show the same rows and the same examples, from here. Apart from the wire
calls (:mod:`server_ext.clients.deployer.client`) so that a change of wording never touches
the client, and a change of the API never the wording.

Code examples printed for a deployed model never contain a token (SECURITY rule 8): they
read ``$JUPYTERHUB_API_TOKEN`` from the environment, which every Shipyard server and kernel
has and whose scopes include ``custom:models:invoke``.
"""

from __future__ import annotations

import contextlib
import json
import shlex
from dataclasses import dataclass, field
from typing import Any

from .client import DeployerClient, DeployerError
from .publish import is_frame


def endpoint_url(client: DeployerClient, deployment: dict) -> str:
    """The deployment's invocation URL (routed by its traffic split)."""
    return client.public_url(deployment["url"])


def example_payload(example: Any = None, signature: dict | None = None) -> dict:
    """A request body for the model: the first row of the input example when there is one.

    A DataFrame row is sent as ``dataframe_split`` (columns named, as MLflow's scoring
    protocol reads it), an array row as ``inputs``. Without an example, a row of zeros in the
    signature's columns; without a signature, a one-value row ``[[0.0]]``.
    """
    with contextlib.suppress(Exception):
        if is_frame(example):
            row = example.head(1).to_json(orient="split", index=False)
            return {"dataframe_split": json.loads(row)}
        if hasattr(example, "tolist"):
            rows = example[:1].tolist()
            return {"inputs": json.loads(json.dumps(rows, default=str).replace("NaN", "null"))}
    columns = [c.get("name") for c in _signature_columns(signature)]
    if columns and all(columns):
        data = [[0 for _ in columns]]
        return {"dataframe_split": {"columns": columns, "data": data}}
    return {"inputs": [[0.0]]}


def _signature_columns(signature: dict | None) -> list[dict]:
    inputs = (signature or {}).get("inputs")
    if isinstance(inputs, str):
        with contextlib.suppress(ValueError):
            inputs = json.loads(inputs)
    return [c for c in inputs or [] if isinstance(c, dict)]


def curl_example(url: str, payload: dict) -> str:
    """A ``curl`` command that calls the model with the token from the environment."""
    body = shlex.quote(json.dumps(payload, separators=(",", ":")))
    return (
        f'curl -X POST -H "Authorization: token $JUPYTERHUB_API_TOKEN" '
        f'-H "Content-Type: application/json" -d {body} {shlex.quote(url)}'
    )


def python_example(url: str, payload: dict) -> str:
    """Python that calls the model with the token from the environment."""
    return (
        "import os, requests\n"
        f"response = requests.post(\n"
        f"    {url!r},\n"
        '    headers={"Authorization": f"token {os.environ[\'JUPYTERHUB_API_TOKEN\']}"},\n'
        f"    json={json.dumps(payload)},\n"
        "    timeout=30,\n"
        ")\n"
        'print(response.json()["predictions"])'
    )


@dataclass(frozen=True)
class VersionRow:
    """One version of a deployment as ``%deployments`` shows it."""

    deployment: dict
    version: dict
    stats: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.deployment["name"]

    @property
    def traffic(self) -> int:
        return int(self.deployment.get("traffic", {}).get(str(self.version["version"]), 0))

    @property
    def state(self) -> str:
        return self.version["state"]

    @property
    def health(self) -> str:
        """``2/2 ready`` replicas of a running version; empty for others."""
        if self.state not in ("ready", "starting"):
            return ""
        ready = self.stats.get("replicas_ready")
        if ready is None:
            return ""
        return f"{ready}/{self.deployment.get('replicas', 1)} ready"

    @property
    def rate(self) -> float | None:
        return self.stats.get("rate")

    @property
    def error_rate(self) -> float | None:
        return self.stats.get("error_rate")

    def latency(self, which: str) -> float | None:
        return (self.stats.get("latency_ms") or {}).get(which)

    @property
    def drift(self) -> tuple[str, float] | None:
        """The feature with the largest population stability index, and the index."""
        scores = {k: v for k, v in (self.stats.get("drift") or {}).items() if v is not None}
        if not scores:
            return None
        feature = max(scores, key=lambda k: scores[k])
        return feature, float(scores[feature])

    @property
    def input_issues(self) -> tuple[int, str, str] | None:
        """Input values with a data-quality issue: the total, and the most frequent kind and
        feature; None before any row was checked."""
        if not self.stats.get("rows_checked"):
            return None
        counts = [
            (count, kind, feature)
            for kind, by_feature in (self.stats.get("input_issues") or {}).items()
            for feature, count in by_feature.items()
        ]
        if not counts:
            return 0, "", ""
        count, kind, feature = max(counts)
        return sum(c[0] for c in counts), kind, feature

    @property
    def breaker(self) -> dict:
        return self.stats.get("breaker") or self.version.get("breaker") or {}


def version_rows(client: DeployerClient, deployments: list[dict] | None = None) -> list[VersionRow]:
    """Every version of the user's deployments, newest first per deployment, with its metrics."""
    rows = []
    for deployment in client.list_deployments() if deployments is None else deployments:
        try:
            stats = client.metrics(deployment["name"], deployment.get("owner")).get("versions", {})
        except DeployerError:  # deleted meanwhile, or metrics unavailable: show the rest
            stats = {}
        for version in sorted(deployment["versions"], key=lambda v: -v["version"]):
            rows.append(VersionRow(deployment, version, stats.get(str(version["version"]), {})))
    return rows


def rollback_target(deployment: dict) -> int:
    """The version a rollback sends the traffic to: the one taking (or about to take) it all."""
    for version in deployment["versions"]:
        if version.get("pending_percent") == 100:
            return version["version"]
    return int(max(deployment["traffic"].items(), key=lambda item: item[1])[0])


def number(value: float | None, digits: int = 3) -> str:
    """``value`` shortly, or empty."""
    return "" if value is None else f"{value:.{digits}g}"


def percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def breaker_text(breaker: dict) -> str:
    if not breaker.get("open"):
        return "closed"
    reason = f": {breaker['reason']}" if breaker.get("reason") else ""
    return f"open{' (still serving)' if breaker.get('serving') else ''}{reason}"


def drift_text(row: VersionRow) -> str:
    drift = row.drift
    return f"{drift[1]:.2f} ({drift[0]})" if drift else ""


def input_issues_text(row: VersionRow) -> str:
    """``12 (out_of_range x)``: issues counted and the most frequent; ``0`` when none."""
    issues = row.input_issues
    if issues is None:
        return ""
    total, kind, feature = issues
    return f"{total} ({kind} {feature})" if total else "0"


def deployments_text(rows: list[VersionRow]) -> str:
    """A plain-text table of the versions: the ``%deployments`` fallback without ipywidgets."""
    if not rows:
        return "No deployments yet: deploy a model with %deploy MODEL --name NAME."
    table = [
        ("NAME", "V", "TRAFFIC", "STATE", "HEALTH", "REQ/S", "P50 MS", "P99 MS", "ERRORS",
         "DRIFT", "INPUT ISSUES", "BREAKER"),
    ]  # fmt: skip
    for row in rows:
        state = row.state
        if row.version.get("reason") and state in ("failed", "stopped"):
            state += f": {row.version['reason']}"
        table.append(
            (
                row.name,
                str(row.version["version"]),
                f"{row.traffic}%",
                state[:60],
                row.health,
                number(row.rate),
                number(row.latency("p50")),
                number(row.latency("p99")),
                percent(row.error_rate),
                drift_text(row),
                input_issues_text(row),
                breaker_text(row.breaker)[:60],
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in table
    )
