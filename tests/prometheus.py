"""A real Prometheus (Debian's ``prometheus``) for the metrics tests, and the shipped config.

:class:`PrometheusServer` runs ``prometheus`` with a config of its own and its own TSDB
folder, on a free loopback port, never the package's :9090 (Debian's unit, if the system
runs one, is left alone). :func:`config_for_hub` derives its config from the shipped
``config/prometheus/prometheus.yml``: the same jobs and paths, the targets pointed at a
test hub, the token file at the hub's ``prometheus-token``, a scrape every second.
:func:`metric_names` lists the metric names a PromQL expression reads (the dashboards'
test), and :func:`exported_names` those Shipyard and JupyterHub export.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

import requests
import yaml

from .hubtools import REPO, free_port, wait_for

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
SHIPPED = REPO / "config" / "prometheus"
DASHBOARDS = REPO / "config" / "grafana"


def missing() -> str | None:
    """None when Prometheus and promtool can run here, else why not (a skip message)."""
    for tool in (PROMETHEUS, PROMTOOL):
        if not Path(tool).exists():
            return f"{tool} is missing: apt-get install prometheus (make test installs it)"
    return None


def shipped_config() -> dict:
    return yaml.safe_load((SHIPPED / "prometheus.yml").read_text())


def config_for_hub(hub_url: str, token_file: Path, interval: str = "1s") -> dict:
    """The shipped config with its targets at ``hub_url`` and the token in ``token_file``."""
    config = shipped_config()
    parts = urlsplit(hub_url)
    config["global"].update(scrape_interval=interval, evaluation_interval=interval)
    config["rule_files"] = [str(SHIPPED / "rules" / "*.yml")]
    for job in config["scrape_configs"]:
        job["scheme"] = parts.scheme
        job["authorization"]["credentials_file"] = str(token_file)
        job["static_configs"] = [{"targets": [parts.netloc]}]
        job["scrape_timeout"] = interval
    return config


class PrometheusServer:
    """``prometheus`` on a free loopback port with ``config`` and a TSDB in ``directory``."""

    def __init__(self, directory: Path, config: dict):
        self.directory = Path(directory)
        self.config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> PrometheusServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        config_file = self.directory / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(self.config))
        self.log_path = self.directory / "prometheus.log"
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed in __exit__
        self._log = log
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config_file}",
             f"--storage.tsdb.path={self.directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             "--web.console.templates=/dev/null", "--web.console.libraries=/dev/null"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

        def ready() -> bool:
            assert self.proc.poll() is None, self.log_path.read_text()[-4000:]
            try:
                return requests.get(self.url + "/-/ready", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for(ready, 60, 0.2, "prometheus to be ready")
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        shutil.rmtree(self.directory / "data", ignore_errors=True)

    def api(self, path: str, **params) -> dict:
        """``GET /api/v1/<path>``: its ``data``; fails on an error answer."""
        r = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=30)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", (path, params, r.text)
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """An instant query's result vector."""
        return self.api("query", query=expr)["result"]

    def targets(self) -> dict[str, dict]:
        """The active targets by job."""
        return {t["labels"]["job"]: t for t in self.api("targets")["activeTargets"]}


# ------------------------------------------------------------------ names

#: Prometheus's own series a dashboard or rule may read besides the exported ones.
BUILTIN = {"up", "ALERTS", "ALERTS_FOR_STATE"}
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (with Grafana's ``$variables``) reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings: label values, regexes
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", text):
        name = match.group(1)
        if name.lower() not in _KEYWORDS and not re.fullmatch(r"\d+[smhdwy]", name):
            names.add(name)
    return names


def dashboard_queries() -> dict[str, list[str]]:
    """Every PromQL expression of each shipped dashboard (panels and variables)."""
    found: dict[str, list[str]] = {}
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        exprs = []
        for panel in board["panels"]:
            exprs += [t["expr"] for t in panel.get("targets", ())]
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                call = re.fullmatch(r"label_values\((.*),\s*\w+\)", variable["definition"])
                assert call, f"{path.name}: variable {variable['name']} is not label_values()"
                exprs.append(call.group(1))
        found[path.name] = exprs
    return found


def exposed(families: Iterable) -> set[str]:
    """The sample names metric families (``describe()``/``collect()``) are exported as."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "gauge": ("",),
        "info": ("_info",),
    }
    names = set()
    for family in families:
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def exported_names() -> set[str]:
    """What the hub, every Shipyard service and a model replica export, from their registries.

    Importing the modules registers their series in this process's default registry, as
    in each service's process; the collectors that read state at scrape time
    (the scheduler's job schedule, the hub's data directory) are described.
    """
    import jupyterhub.metrics  # noqa: F401 - JupyterHub's /hub/metrics
    from prometheus_client import REGISTRY

    import hub_ext.services.alerts.metrics  # noqa: F401
    import hub_ext.services.audit.metrics  # noqa: F401
    import hub_ext.services.deployer.metrics  # noqa: F401
    import hub_ext.services.deployer.replica_metrics  # noqa: F401
    import hub_ext.services.scheduler.metrics  # noqa: F401
    import hub_ext.services.secrets.metrics  # noqa: F401
    import hub_ext.services.tracking.gateway  # noqa: F401
    import hub_ext.services.usage.metrics  # noqa: F401
    from hub_ext.hub.metrics import DataDirDisk
    from hub_ext.runtime.modelserver.stats import Metrics
    from hub_ext.services.scheduler.metrics import JobSchedule

    families = [*REGISTRY.collect(), *Metrics().registry.collect()]
    families += [*JobSchedule(list).describe(), *DataDirDisk("/").describe()]
    return exposed(families)
